//! The real binary: `migrate`, `tenant create`, configuration errors, and
//! `dev` printing a curl command that works.

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

#[tokio::test]
async fn dev_runs_an_edge_and_its_printed_curls_serve_a_domain_through_it() {
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!(
        "portico-dev-test-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let edge_bin = std::path::Path::new(BIN).with_file_name("portico-edge");
    let mut child = Command::new(BIN)
        .arg("dev")
        .env("DATABASE_URL", &db)
        .env("PORTICO_LISTEN", "127.0.0.1:0")
        .env("PORTICO_DNS_NAMESERVERS", "127.0.0.1:9")
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
    let (mut url, mut key, mut body, mut through) = (None, None, None, None);
    while through.is_none() {
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
        if let Some(rest) = line.strip_prefix("curl -sS --resolve ") {
            through = Some(rest.to_string());
        }
    }
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
    // ...and the printed curl through the edge reaches the demo upstream.
    let (resolve, target) = through
        .unwrap()
        .split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let mut parts = resolve.splitn(3, ':');
    let (host, port, ip) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let client = reqwest::Client::builder()
        .resolve(host, addr)
        .build()
        .unwrap();
    let answer = loop {
        if let Ok(r) = client.get(&target).send().await
            && r.status() == 200
        {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the edge never served {host}");
        tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
    };
    assert!(answer.contains("Hello from the demo upstream"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}
