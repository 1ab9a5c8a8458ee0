//! Health checks and escalating self-repair, end to end with real
//! processes: a control plane whose worker runs the checks and ladders,
//! real edges (as its own `LocalProcesses` children, or started by the
//! test), a real SMTP sink for pages, and upstreams the test stops and
//! starts. Ladder waits are scaled down (`PORTICO_REPAIR_TIME_SCALE`); the
//! ladders, thresholds and actions are the production ones.

use portico_control_plane::db::config::{ConfigKey, publish};
use portico_e2e::cluster::{ControlPlane, register_edge};
use portico_e2e::edge::{TestEdge, echo_upstream};
use portico_e2e::smtp_sink::SmtpSink;
use portico_e2e::{OPERATOR_TOKEN, eventually, fresh_database};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

/// Fast checks: every 300 ms, opening after 3 failures, closing after 2 passes.
const FAST_CHECKS: [(&str, &str); 5] = [
    ("PORTICO_WORKER_IN_SERVE", "true"),
    ("PORTICO_HEALTH_TICK_MS", "200"),
    ("PORTICO_HEALTH_EDGE_INTERVAL_MS", "300"),
    ("PORTICO_HEALTH_HOST_INTERVAL_MS", "300"),
    ("PORTICO_HEALTH_PROBE_TIMEOUT_MS", "1000"),
];

fn with_fast_checks<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = FAST_CHECKS.to_vec();
    env.extend_from_slice(extra);
    env
}

fn temp_dir(what: &str) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("portico-{what}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.display().to_string())
}

/// SMTP settings paging the sink.
fn smtp_env(sink: &SmtpSink) -> Vec<(&'static str, String)> {
    vec![
        ("PORTICO_ALERT_EMAILS", "ops@example.test".into()),
        ("PORTICO_ALERT_FROM", "portico@example.test".into()),
        ("PORTICO_SMTP_HOST", "127.0.0.1".into()),
        ("PORTICO_SMTP_PORT", sink.addr.port().to_string()),
        ("PORTICO_SMTP_MODE", "plain".into()),
    ]
}

#[derive(Debug, sqlx::FromRow)]
struct Run {
    id: Uuid,
    status: String,
    outcome: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Step {
    rung: i32,
    action: String,
    result: String,
    did: String,
    checked: String,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn runs(pool: &PgPool, kind: &str) -> anyhow::Result<Vec<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, status, outcome FROM repair_runs WHERE kind = $1 ORDER BY opened_at",
    )
    .bind(kind)
    .fetch_all(pool)
    .await?)
}

async fn steps(pool: &PgPool, run: Uuid) -> anyhow::Result<Vec<Step>> {
    Ok(sqlx::query_as(
        "SELECT rung, action, result, did, checked, started_at, finished_at
         FROM repair_steps WHERE run_id = $1 ORDER BY started_at, id",
    )
    .bind(run)
    .fetch_all(pool)
    .await?)
}

/// Waits for a run of `kind` to exist and reach `status` (`closed` runs
/// also need `outcome`).
async fn run_reaching(
    pool: &PgPool,
    kind: &str,
    status: &str,
    outcome: Option<&str>,
    secs: u64,
) -> anyhow::Result<Run> {
    eventually(
        secs,
        &format!("a {kind} run {status} {outcome:?}"),
        || async {
            runs(pool, kind).await.ok()?.into_iter().find(|r| {
                r.status == status && (outcome.is_none() || r.outcome.as_deref() == outcome)
            })
        },
    )
    .await
}

fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "{}:{}:{} ({}; {})",
                s.rung, s.action, s.result, s.checked, s.did
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kill(pid: u32) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    anyhow::ensure!(ok.success(), "kill {pid}");
    Ok(())
}

/// A control plane running one edge of its own (`PORTICO_INFRA=local`),
/// serving and heart-beating.
async fn with_local_edge(extra: &[(&str, &str)]) -> anyhow::Result<(ControlPlane, PgPool, u32)> {
    let db = fresh_database().await?;
    let dir = temp_dir("local-edges")?;
    let mut env = with_fast_checks(&[
        ("PORTICO_INFRA", "local"),
        ("PORTICO_LOCAL_EDGES", "1"),
        ("PORTICO_LOCAL_EDGE_DIR", &dir),
        ("PORTICO_REPAIR_TIME_SCALE", "0.05"),
    ]);
    env.extend_from_slice(extra);
    let cp = ControlPlane::start(&db, &env).await?;
    let pool = PgPool::connect(&db).await?;
    let pid = eventually(30, "the local edge to run and heartbeat", || async {
        let seen: Option<bool> =
            sqlx::query_scalar("SELECT last_seen_at IS NOT NULL FROM edges WHERE name = 'local-1'")
                .fetch_optional(&pool)
                .await
                .ok()?;
        let pids = cp.edge_pids().ok()?;
        (seen == Some(true) && pids.len() == 1).then(|| pids[0])
    })
    .await?;
    Ok((cp, pool, pid))
}

#[tokio::test]
async fn a_killed_edge_is_restarted_by_the_ladder_and_nobody_is_paged() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let smtp = smtp_env(&sink);
    let smtp: Vec<(&str, &str)> = smtp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (cp, pool, pid) = with_local_edge(&smtp).await?;
    // Healthy first: the edge's check passes.
    eventually(20, "the edge's check to pass", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_passed FROM health_states WHERE kind = 'edge_unreachable'",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .filter(|p| *p)
    })
    .await?;
    kill(pid)?;

    let run = run_reaching(&pool, "edge_unreachable", "closed", Some("recovered"), 90).await?;
    // The run may close (two passing checks) a moment before the restart
    // step records its end.
    let steps = eventually(30, "the restart step to finish", || async {
        let got = steps(&pool, run.id).await.ok()?;
        got.iter()
            .any(|s| s.action == "restart" && s.finished_at.is_some())
            .then_some(got)
    })
    .await?;
    let actions: Vec<&str> = steps.iter().map(|s| s.action.as_str()).collect();
    let restart = steps
        .iter()
        .find(|s| s.action == "restart")
        .ok_or_else(|| anyhow::anyhow!("no restart step:\n{}", describe(&steps)))?;
    assert_eq!(restart.result, "done", "{}", describe(&steps));
    assert!(
        restart.checked.contains("probe: down"),
        "{}",
        describe(&steps)
    );
    assert!(
        !actions.contains(&"page"),
        "the restart repaired it: {}",
        describe(&steps)
    );
    // A resync cannot reach a process that does not run: skipped, not done.
    let resync = steps.iter().find(|s| s.action == "resync");
    assert_eq!(
        resync.map(|s| s.result.as_str()),
        Some("skipped"),
        "{}",
        describe(&steps)
    );

    let pids = cp.edge_pids()?;
    assert_eq!(pids.len(), 1, "one edge runs again");
    assert_ne!(pids[0], pid, "a new process");
    // Nobody was paged: no alert row, no email.
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(alerts, 0);
    assert_eq!(sink.attempts(), 0, "no email was even attempted");
    Ok(())
}

#[tokio::test]
async fn with_restart_disabled_the_ladder_pages_once_and_an_operator_closes_it()
-> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let smtp = smtp_env(&sink);
    let mut extra: Vec<(&str, &str)> = smtp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("PORTICO_REPAIR_DISABLED_ACTIONS", "restart,replace"));
    extra.push(("PORTICO_ALERT_TICK_MS", "100"));
    let (cp, pool, pid) = with_local_edge(&extra).await?;
    kill(pid)?;

    let run = eventually(90, "the run to page", || async {
        sqlx::query_as::<_, Run>(
            "SELECT id, status, outcome FROM repair_runs WHERE kind = 'edge_unreachable' AND alert_id IS NOT NULL",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await?;
    let page = sink.wait_for(1, 20).await?;
    assert!(page[0].subject().contains("PAGE"), "{}", page[0].subject());
    assert!(
        page[0].subject().contains("local-1"),
        "{}",
        page[0].subject()
    );
    let body = page[0].body();
    assert!(
        body.contains("restart is disabled"),
        "the page says what was tried: {body}"
    );
    let got = steps(&pool, run.id).await?;
    let skipped: Vec<&str> = got
        .iter()
        .filter(|s| s.result == "skipped")
        .map(|s| s.action.as_str())
        .collect();
    assert!(
        skipped.contains(&"restart") && skipped.contains(&"replace"),
        "{}",
        describe(&got)
    );
    assert!(cp.edge_pids()?.is_empty(), "nothing restarted the edge");

    // The run keeps re-checking at the top; paging stays at one email.
    tokio::time::sleep(Duration::from_millis(1500)).await; // allow-sleep: give a second page the chance to (wrongly) happen
    assert_eq!(sink.received().len(), 1, "one page per run");

    // An operator closes it through the API: the alert resolves with an email.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/ops/repairs/{}/close", cp.base(), run.id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"note": "decommissioned local-1"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let closed: Value = resp.json().await?;
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["outcome"], "closed_by_operator");
    assert!(closed["steps"].as_array().is_some_and(|s| !s.is_empty()));
    let mail = sink.wait_for(2, 20).await?;
    assert!(
        mail[1].subject().contains("RESOLVED"),
        "{}",
        mail[1].subject()
    );
    // Closing twice is a conflict, not a second email.
    let again = http
        .post(format!("{}/v1/ops/repairs/{}/close", cp.base(), run.id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(again.status(), 409);
    Ok(())
}

/// Creates a domain for `target`, marks it verified and publishes it.
async fn active_domain(
    pool: &PgPool,
    base: &str,
    key: &str,
    host: &str,
    target: SocketAddr,
) -> anyhow::Result<Uuid> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/domains"))
        .bearer_auth(key)
        .json(&json!({"hostname": host, "target": target.to_string()}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "create {host}: {}", resp.status());
    let body: Value = resp.json().await?;
    let id: Uuid = body["id"].as_str().unwrap_or_default().parse()?;
    sqlx::query("UPDATE domains SET status = 'active', dns_checked_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    let mut tx = pool.begin().await?;
    publish(&mut tx, &[ConfigKey::Host(host.to_string())]).await?;
    tx.commit().await?;
    Ok(id)
}

async fn event_types(pool: &PgPool, subject: Uuid) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT type FROM events WHERE subject_id = $1 AND type LIKE 'health.%' ORDER BY created_at, id",
    )
    .bind(subject)
    .fetch_all(pool)
    .await?)
}

/// A TCP upstream the test can stop and start again on the same port.
struct Upstream {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    async fn start() -> anyhow::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Upstream {
            addr,
            task: Some(tokio::spawn(accept(listener))),
        })
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = eventually(10, "the upstream port to bind again", || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await?;
        self.task = Some(tokio::spawn(accept(listener)));
        Ok(())
    }
}

async fn accept(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        drop(stream);
    }
}

#[tokio::test]
async fn a_stopped_upstream_degrades_the_domain_for_its_tenant_then_it_recovers()
-> anyhow::Result<()> {
    let db = fresh_database().await?;
    // upstream ladder: reprobe (30 s) → mark_degraded (900 s) → page; scaled
    // by 0.02: 0.6 s, then 18 s during which the upstream comes back.
    let cp = ControlPlane::start(
        &db,
        &with_fast_checks(&[("PORTICO_REPAIR_TIME_SCALE", "0.02")]),
    )
    .await?;
    let pool = PgPool::connect(&db).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    let mut up = Upstream::start().await?;
    let domain = active_domain(&pool, &cp.base(), &key, "shop.health.test", up.addr).await?;
    eventually(20, "the upstream check to pass", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_passed FROM health_states WHERE subject_id = $1 AND kind = 'upstream'",
        )
        .bind(domain)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .filter(|p| *p)
    })
    .await?;

    up.stop();
    eventually(60, "health.degraded", || async {
        let types = event_types(&pool, domain).await.ok()?;
        (types == ["health.degraded"]).then_some(())
    })
    .await?;
    let run = run_reaching(&pool, "upstream", "open", None, 5).await?;
    let so_far = steps(&pool, run.id).await?;
    assert_eq!(
        so_far[0].action,
        "reprobe_upstream",
        "{}",
        describe(&so_far)
    );
    assert!(
        so_far[0].did.contains("cannot reach"),
        "{}",
        describe(&so_far)
    );
    assert!(
        so_far[0].checked.contains("connecting to"),
        "{}",
        describe(&so_far)
    );

    // The tenant sees the run about its own domain.
    let mine: Value = reqwest::Client::new()
        .get(format!("{}/v1/domains/{domain}/repairs", cp.base()))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(mine["items"][0]["kind"], "upstream", "{mine}");
    assert_eq!(mine["items"][0]["status"], "open", "{mine}");

    up.restart().await?;
    let closed = run_reaching(&pool, "upstream", "closed", Some("recovered"), 60).await?;
    assert_eq!(closed.id, run.id);
    eventually(10, "health.recovered", || async {
        let types = event_types(&pool, domain).await.ok()?;
        (types == ["health.degraded", "health.recovered"]).then_some(())
    })
    .await?;
    // Another tenant does not see it.
    let other = portico_e2e::tenant_key(&cp.base()).await?;
    let status = reqwest::Client::new()
        .get(format!("{}/v1/domains/{domain}/repairs", cp.base()))
        .bearer_auth(&other)
        .send()
        .await?
        .status();
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_certificate_lost_by_an_edge_is_pushed_to_it_again() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let ca_dir = temp_dir("dev-ca")?;
    let cp = ControlPlane::start(
        &db,
        &with_fast_checks(&[
            ("PORTICO_ISSUER", "dev"),
            ("PORTICO_DEV_CA_DIR", &ca_dir),
            ("PORTICO_REPAIR_TIME_SCALE", "0.05"),
        ]),
    )
    .await?;
    let base = cp.base();
    let pool = PgPool::connect(&db).await?;
    let key = portico_e2e::tenant_key(&base).await?;
    let token = register_edge(&base, "cert-1").await?;
    let dir = temp_dir("edge-cert")?;
    let args = [
        "--control-plane",
        &base,
        "--token",
        &token,
        "--name",
        "cert-1",
    ]
    .map(String::from);
    let edge = TestEdge::start_in(std::path::Path::new(&dir), &args).await?;
    let host = "www.lost-cert.test";
    let up = echo_upstream("up").await?;
    let domain = active_domain(&pool, &base, &key, host, up).await?;
    let root = std::fs::read_to_string(std::path::Path::new(&ca_dir).join("dev-ca.pem"))?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes())?)
        .resolve(host, edge.https)
        .timeout(Duration::from_secs(20))
        .build()?;
    // The first request gets the certificate on demand.
    let resp = client.get(format!("https://{host}/")).send().await?;
    assert_eq!(resp.status(), 200);
    eventually(20, "the certificate check to pass", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_passed FROM health_states WHERE subject_id = $1 AND kind = 'certificate'",
        )
        .bind(domain)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .filter(|p| *p)
    })
    .await?;

    let (status, body) = edge_post(&edge, &format!("/test/forget-certificate?host={host}")).await?;
    assert_eq!(status, 200, "{body}");
    let run = run_reaching(&pool, "certificate", "closed", Some("recovered"), 60).await?;
    let got = steps(&pool, run.id).await?;
    let repush = got
        .iter()
        .find(|s| s.action == "repush_certificate")
        .ok_or_else(|| anyhow::anyhow!("no re-push:\n{}", describe(&got)))?;
    assert_eq!(repush.result, "done", "{}", describe(&got));
    assert!(
        repush.checked.contains("cert-1 serve no certificate"),
        "{}",
        describe(&got)
    );
    assert!(
        !got.iter().any(|s| s.action == "reissue"),
        "the re-push was enough: {}",
        describe(&got)
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM repair_runs WHERE id = $1")
        .bind(run.id)
        .fetch_one(&pool)
        .await?;
    assert!(reason.contains("cert-1"), "{reason}");
    // The edge serves it again (from its table: no new order).
    let orders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM acme_events WHERE hostname = $1 AND kind = 'order'",
    )
    .bind(host)
    .fetch_one(&pool)
    .await?;
    let resp = client.get(format!("https://{host}/")).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(orders, 1, "one order, at the first request");
    // Nobody outside was told: the tenant never saw a degradation.
    assert!(event_types(&pool, domain).await?.is_empty());
    Ok(())
}

async fn edge_post(edge: &TestEdge, path: &str) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", edge.admin))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

/// A DNS server that never answers: every lookup waits for its timeout.
fn silent_dns() -> anyhow::Result<std::net::UdpSocket> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?)
}

#[tokio::test]
async fn a_worker_killed_mid_step_is_taken_over_without_running_a_repair_twice_at_once()
-> anyhow::Result<()> {
    let db = fresh_database().await?;
    let dns = silent_dns()?;
    let dns_addr = dns.local_addr()?.to_string();
    let env = with_fast_checks(&[
        ("PORTICO_DNS_NAMESERVERS", &dns_addr),
        ("PORTICO_DNS_TIMEOUT_MS", "4000"),
        ("PORTICO_DNS_ATTEMPTS", "2"),
        ("PORTICO_REPAIR_STEP_LEASE_SECS", "3"),
        ("PORTICO_REPAIR_TIME_SCALE", "0.02"),
    ]);
    let mut cp = ControlPlane::start(&db, &env).await?;
    let pool = PgPool::connect(&db).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    let up = echo_upstream("up").await?;
    let domain = active_domain(&pool, &cp.base(), &key, "moved.health.test", up).await?;
    // Its DNS moved away (as the DNS check would have concluded).
    sqlx::query("UPDATE domains SET status = 'misconfigured' WHERE id = $1")
        .bind(domain)
        .execute(&pool)
        .await?;

    // The DNS ladder's first repair re-checks DNS, which hangs on the
    // silent server: kill the worker while it does.
    let run = run_reaching(&pool, "dns", "open", None, 30).await?;
    eventually(20, "the recheck_dns step to be in flight", || async {
        let s = steps(&pool, run.id).await.ok()?;
        s.iter()
            .any(|s| s.action == "recheck_dns" && s.finished_at.is_none())
            .then_some(())
    })
    .await?;
    cp.kill();
    let in_flight = steps(&pool, run.id).await?;
    assert!(
        in_flight
            .last()
            .is_some_and(|s| s.finished_at.is_none() && s.result == "running"),
        "{}",
        describe(&in_flight)
    );
    cp.restart().await?;

    // The ladder goes on after the restart: the tenant is told.
    eventually(90, "health.degraded after the restart", || async {
        let types = event_types(&pool, domain).await.ok()?;
        types.contains(&"health.degraded".to_string()).then_some(())
    })
    .await?;
    // The event is committed just before its step is recorded as done.
    let got = eventually(10, "the mark_misconfigured step to finish", || async {
        let got = steps(&pool, run.id).await.ok()?;
        got.iter()
            .any(|s| s.action == "mark_misconfigured" && s.result == "done")
            .then_some(got)
    })
    .await?;
    let rung0: Vec<&Step> = got.iter().filter(|s| s.rung == 0).collect();
    assert_eq!(rung0[0].result, "interrupted", "{}", describe(&got));
    assert!(
        rung0[1..]
            .iter()
            .any(|s| s.result == "done" || s.result == "failed"),
        "the rung ran again to its end: {}",
        describe(&got)
    );
    // Never two steps of the run at once: each started after the previous ended.
    for pair in got.windows(2) {
        let ended = pair[0]
            .finished_at
            .ok_or_else(|| anyhow::anyhow!("unfinished step before another"))?;
        assert!(
            ended <= pair[1].started_at,
            "overlapping steps:\n{}",
            describe(&got)
        );
    }
    drop(dns);
    Ok(())
}
