//! The real binary: `migrate`, `tenant create`, configuration errors, and
//! `dev` printing curls that work: HTTP and verified HTTPS through its edge.

// Test code: a failed unwrap is a failed test (helpers here are not #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portico-control-plane");

async fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("Postgres at DATABASE_URL");
    let name = format!("portico_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin
        .split_once('?')
        .map_or((admin.as_str(), ""), |(b, q)| (b, q));
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

fn run(db: &str, args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test]
async fn migrate_then_create_a_tenant() {
    let db = fresh_database().await;
    let out = run(&db, &["migrate"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &db,
        &["tenant", "create", "--name", "Bob's Shop", "--plan", "pro"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tenant"]["name"], "Bob's Shop");
    assert_eq!(json["tenant"]["plan"], "pro");
    assert!(json["api_key"]["key"].as_str().unwrap().starts_with("ptk_"));

    let out = run(
        &db,
        &["tenant", "create", "--name", "X", "--plan", "gold"],
        &[],
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn configuration_errors_name_the_variable_and_hide_secrets() {
    let out = run(
        "postgres://u:sekrit-pw@127.0.0.1:1/x",
        &["serve"],
        &[("PORTICO_LISTEN", "not-an-address")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PORTICO_LISTEN"), "{stderr}");
    assert!(!stderr.contains("sekrit-pw"), "{stderr}");

    let out = Command::new(BIN)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A printed `curl -sS [--cacert PATH] --resolve HOST:PORT:IP URL`.
struct PrintedCurl {
    host: String,
    addr: std::net::SocketAddr,
    cacert: Option<std::path::PathBuf>,
    url: String,
}

impl PrintedCurl {
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.strip_prefix("curl -sS ")?.split_whitespace();
        let (mut resolve, mut cacert, mut url) = (None, None, None);
        while let Some(word) = words.next() {
            match word {
                "--resolve" => resolve = words.next(),
                "--cacert" => cacert = words.next().map(std::path::PathBuf::from),
                w if w.starts_with("http") => url = Some(w.to_string()),
                _ => return None,
            }
        }
        let mut parts = resolve?.splitn(3, ':');
        let (host, port, ip) = (parts.next()?, parts.next()?, parts.next()?);
        Some(PrintedCurl {
            host: host.to_string(),
            addr: format!("{ip}:{port}").parse().ok()?,
            cacert,
            url: url?,
        })
    }

    /// GETs the URL until it answers 200 (or the deadline passes); the body.
    async fn poll_until_ok(&self, deadline: Instant) -> String {
        let mut client = reqwest::Client::builder()
            .resolve(&self.host, self.addr)
            .timeout(Duration::from_secs(20));
        if let Some(path) = &self.cacert {
            let pem = std::fs::read(path).unwrap();
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let client = client.build().unwrap();
        loop {
            let last = match client.get(&self.url).send().await {
                Ok(r) if r.status() == 200 => return r.text().await.unwrap(),
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "{} never answered 200; last: {last}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await; // allow-sleep: polling with a deadline
        }
    }
}

#[tokio::test]
async fn dev_serves_the_printed_curls_and_restarts_a_killed_edge() {
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!(
        "portico-dev-test-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let edge_bin = std::path::Path::new(BIN).with_file_name("portico-edge");
    // What dev mode defaults itself: its DNS server, the dev CA in the dev
    // dir and an encryption key there.
    let mut command = Command::new(BIN);
    for var in [
        "PORTICO_CONFIG",
        "PORTICO_DNS_NAMESERVERS",
        "PORTICO_ISSUER",
        "PORTICO_DEV_CA_DIR",
        "PORTICO_ENCRYPTION_KEYS",
    ] {
        command.env_remove(var);
    }
    let mut child = command
        .arg("dev")
        .env("DATABASE_URL", &db)
        .env("PORTICO_LISTEN", "127.0.0.1:0")
        .env("PORTICO_DEV_DIR", &dir)
        .env("PORTICO_DEV_EDGE_HTTP", "127.0.0.1:0")
        .env("PORTICO_DEV_EDGE_HTTPS", "127.0.0.1:0")
        .env("PORTICO_DEV_EDGE_ADMIN", "127.0.0.1:0")
        .env("PORTICO_DEV_UPSTREAM", "127.0.0.1:0")
        .env("PORTICO_EDGE_BIN", &edge_bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut url, mut key, mut body) = (None, None, None);
    let (mut http, mut https) = (None, None);
    let (mut edge_pid, mut repairs) = (None::<u32>, None::<(String, String)>);
    while http.is_none() || https.is_none() || edge_pid.is_none() || repairs.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev printed its instructions in time");
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("curl -sS -X POST ") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("-H 'Authorization: Bearer ") {
            key = rest.split('\'').next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("-d '") {
            body = rest.strip_suffix('\'').map(str::to_string);
        }
        if let Some(pid) = line.strip_prefix("kill -9 ") {
            edge_pid = pid.parse().ok();
        }
        if line.contains("/v1/ops/repairs -H 'Authorization: Bearer ") {
            let url = line
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string();
            let token = line.rsplit("Bearer ").next().unwrap_or_default();
            repairs = Some((url, token.trim_end_matches('\'').to_string()));
        }
        match PrintedCurl::parse(line) {
            Some(c) if c.url.starts_with("https://") => https = Some(c),
            Some(c) => http = Some(c),
            None => {}
        }
    }
    let (http, https) = (http.unwrap(), https.unwrap());
    let key_file = dir.join("encryption-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .starts_with("dev:")
    );
    assert_eq!(
        https.cacert.as_deref(),
        Some(dir.join("ca").join("dev-ca.pem").as_path()),
        "the HTTPS curl trusts the dev CA's root"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The printed POST adds the domain...
    let body: serde_json::Value = serde_json::from_str(&body.expect("a -d body")).unwrap();
    let resp = reqwest::Client::new()
        .post(url.unwrap())
        .bearer_auth(key.unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // ...the printed curl through the edge reaches the demo upstream...
    let answer = http.poll_until_ok(deadline).await;
    assert!(answer.contains("Hello from the demo upstream"), "{answer}");
    // ...and so does the HTTPS one, once the dev DNS has had the domain
    // verified and the dev CA has issued its certificate.
    let answer = https
        .poll_until_ok(Instant::now() + Duration::from_secs(60))
        .await;
    assert!(answer.contains("Hello from the demo upstream"), "{answer}");
    assert!(answer.contains("x-forwarded-proto: https"), "{answer}");

    // The printed self-repair demo: kill the edge; the ladder restarts it
    // (same addresses) and the run closes as recovered.
    let pid = edge_pid.unwrap();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (repairs_url, op) = repairs.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let run = loop {
        let body: serde_json::Value = reqwest::Client::new()
            .get(&repairs_url)
            .bearer_auth(&op)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let closed = body["items"].as_array().and_then(|runs| {
            runs.iter()
                .find(|r| r["kind"] == "edge_unreachable" && r["outcome"] == "recovered")
                .cloned()
        });
        if let Some(run) = closed {
            break run;
        }
        assert!(Instant::now() < deadline, "no recovered edge run: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await; // allow-sleep: polling with a deadline
    };
    let actions: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["action"].as_str())
        .collect();
    assert!(actions.contains(&"restart"), "{run}");
    let answer = http
        .poll_until_ok(Instant::now() + Duration::from_secs(30))
        .await;
    assert!(answer.contains("Hello from the demo upstream"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}
