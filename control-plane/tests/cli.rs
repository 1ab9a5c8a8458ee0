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
async fn dev_prints_a_curl_that_adds_a_domain() {
    let db = fresh_database().await;
    let mut child = Command::new(BIN)
        .arg("dev")
        .env("DATABASE_URL", &db)
        .env("PORTICO_LISTEN", "127.0.0.1:0")
        .env("PORTICO_DNS_NAMESERVERS", "127.0.0.1:9")
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
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev printed its curl in time");
        if let Some(rest) = line.trim().strip_prefix("curl -sS -X POST ") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.trim().strip_prefix("-H 'Authorization: Bearer ") {
            key = rest.split('\'').next().map(str::to_string);
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(url.unwrap())
        .bearer_auth(key.unwrap())
        .json(&serde_json::json!({"hostname": "shop.example.com", "target": "127.0.0.1:3000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}
