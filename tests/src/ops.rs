//! Support for the ops dashboard tests and benchmark: an HTTP client that
//! logs in through the form and keeps the session cookie and CSRF token, and
//! seeding helpers that write the rows the health checks, ladders and
//! report ingestion would write (their producers are other modules).

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

/// A logged-in dashboard session driven over plain HTTP (no redirects followed).
pub struct OpsClient {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

/// `application/x-www-form-urlencoded` bodies (reqwest's own `form` is a
/// feature this workspace does not build).
pub trait FormExt {
    fn form<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

impl FormExt for reqwest::RequestBuilder {
    fn form<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k.as_ref()), encode(v.as_ref())))
            .collect::<Vec<_>>()
            .join("&");
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl OpsClient {
    /// Logs in with `token`; fails unless the form answers 303 with a cookie.
    pub async fn login(base: &str, token: &str) -> anyhow::Result<OpsClient> {
        let http = no_redirects();
        let resp = http
            .post(format!("{base}/ops/login"))
            .header("origin", base)
            .form(&[("token", token)])
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 303, "login: {}", resp.status());
        let set = resp
            .headers()
            .get("set-cookie")
            .context("login set no cookie")?
            .to_str()?
            .to_string();
        let cookie = set.split(';').next().unwrap_or_default().to_string();
        let mut c = OpsClient {
            base: base.to_string(),
            http,
            cookie,
            csrf: String::new(),
        };
        let (status, page) = c.get("/ops").await?;
        anyhow::ensure!(status == 200, "overview after login: {status}");
        c.csrf = csrf_of(&page).context("no CSRF token on the overview")?;
        Ok(c)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// A form POST from this origin (what a browser sends).
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
            .form(form)
            .send()
            .await?)
    }
}

/// The value of the first `name="csrf"` hidden field in a page.
pub fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_string())
}

/// Rows for one edge, one domain and what the health machinery writes about them.
pub struct Seeded {
    pub edge: Uuid,
    pub domain: Uuid,
    pub run: Uuid,
}

/// Registers edge `name` through the operator API; returns its id.
pub async fn register_edge(base: &str, name: &str) -> anyhow::Result<Uuid> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/ops/edges"))
        .bearer_auth(crate::OPERATOR_TOKEN)
        .json(&serde_json::json!({"name": name, "region": "fra"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "edge create: {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    Ok(body["edge"]["id"].as_str().context("edge id")?.parse()?)
}

/// A heartbeat's worth of edge state, written directly.
pub async fn heartbeat(pool: &PgPool, edge: Uuid, applied: i64) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE edges SET last_seen_at = now(), applied_version = $2, build = 'portico-edge 0.1.0 (test)',
                uptime_secs = 3600, hosts = 1, certificates = 1, counters = '{\"requests\": 42}'
         WHERE id = $1",
    )
    .bind(edge)
    .bind(applied)
    .execute(pool)
    .await?;
    Ok(())
}

/// A tenant and an active domain with a certificate expiring in 5 days,
/// a DNS diagnosis and an hour of traffic on `edge`.
pub async fn domain(pool: &PgPool, hostname: &str, edge: Uuid) -> anyhow::Result<Uuid> {
    let tenant = Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (id, name, plan) VALUES ($1, 'Acme', 'pro')")
        .bind(tenant)
        .execute(pool)
        .await?;
    let domain = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, hostname, targets, status, tls_status, verification_token,
                              dns_diagnosis, dns_checked_at)
         VALUES ($1, $2, $3, '{https://app.example.net}', 'active', 'active', 'tok',
                 '{\"verdict\": \"ok\", \"reasons\": [\"cname_matches\"]}', now())",
    )
    .bind(domain)
    .bind(tenant)
    .bind(hostname)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after)
         VALUES ($1, ARRAY[$2], 'CHAIN-PEM-SENTINEL', 'test1', '\\x5345414c45442d4b4559', now() + interval '5 days')",
    )
    .bind(domain)
    .bind(hostname)
    .execute(pool)
    .await?;
    // 30 windows of 10 s, the last five with 5xx.
    sqlx::query(
        "INSERT INTO traffic_windows (host, window_start, edge_id, domain_id, secs, requests, status_2xx, status_5xx)
         SELECT $1, date_trunc('minute', now()) - make_interval(secs => i * 10), $2, $3, 10, 100,
                CASE WHEN i < 5 THEN 80 ELSE 100 END, CASE WHEN i < 5 THEN 20 ELSE 0 END
         FROM generate_series(0, 29) AS i",
    )
    .bind(hostname)
    .bind(edge)
    .bind(domain)
    .execute(pool)
    .await?;
    Ok(domain)
}

/// The check on `edge` starts failing, as the edge health check records it.
pub async fn edge_failing(pool: &PgPool, edge: Uuid, detail: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO health_states (subject_kind, subject_id, kind, failing, consecutive_failures,
                                    last_passed, last_detail, changed_at)
         VALUES ('edge', $1, 'edge_unreachable', true, 3, false, $2, now())
         ON CONFLICT (subject_kind, subject_id, kind) DO UPDATE
         SET failing = true, consecutive_failures = 3, last_passed = false, last_detail = $2",
    )
    .bind(edge)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// An open `edge_unreachable` run on `edge`, as the ladder opens it.
pub async fn open_run(pool: &PgPool, edge: Uuid, edge_name: &str) -> anyhow::Result<Uuid> {
    let run = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO repair_runs (id, subject_kind, subject_id, subject_name, kind, reason, next_step_at)
         VALUES ($1, 'edge', $2, $3, 'edge_unreachable', 'no heartbeat for 90 s', now() + interval '30 s')",
    )
    .bind(run)
    .bind(edge)
    .bind(edge_name)
    .execute(pool)
    .await?;
    Ok(run)
}

/// A finished rung of `run`.
pub async fn step(
    pool: &PgPool,
    run: Uuid,
    rung: i32,
    action: &str,
    did: &str,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO repair_steps (id, run_id, rung, action, checked, check_passed, did, result, finished_at)
         VALUES ($1, $2, $3, $4, 'GET /healthz on the edge: connection refused', false, $5, 'failed', now())",
    )
    .bind(id)
    .bind(run)
    .bind(rung)
    .bind(action)
    .bind(did)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Everything the overview shows, for one edge named `edge_name`.
pub async fn seed(
    pool: &PgPool,
    base: &str,
    edge_name: &str,
    hostname: &str,
) -> anyhow::Result<Seeded> {
    let edge = register_edge(base, edge_name).await?;
    heartbeat(pool, edge, 0).await?;
    reject(pool, edge).await?;
    let domain = domain(pool, hostname, edge).await?;
    edge_failing(pool, edge, "no heartbeat for 90 s").await?;
    let run = open_run(pool, edge, edge_name).await?;
    step(pool, run, 0, "probe", "probed the machine: stopped").await?;
    alert(pool, edge, run).await?;
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, run_at)
         VALUES (convert_to('{}', 'UTF8'), $1, 'check_domain_dns', 'Pending', now() - interval '90 s')",
    )
    .bind(Uuid::now_v7().to_string())
    .execute(pool)
    .await?;
    Ok(Seeded { edge, domain, run })
}

/// The edge refused config version 7, as its heartbeat reports it.
pub async fn reject(pool: &PgPool, edge: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE edges SET rejection = '{\"version\": 7, \"reason\": \"certificate for shop.example.com does not parse\"}'
         WHERE id = $1",
    )
    .bind(edge)
    .execute(pool)
    .await?;
    Ok(())
}

/// The page the top of `run`'s ladder raises.
pub async fn alert(pool: &PgPool, edge: Uuid, run: Uuid) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO alerts (id, subject_kind, subject_id, dedup_key, title, body)
         VALUES ($1, 'edge', $2, $3, 'Edge unreachable: restart did not help', 'see the run')",
    )
    .bind(id)
    .bind(edge)
    .bind(format!("run:{run}"))
    .execute(pool)
    .await?;
    Ok(id)
}
