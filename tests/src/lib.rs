//! End-to-end test support for Portico: real Postgres (a fresh database per
//! test), the control plane started in-process on port 0 and driven over
//! HTTP only, and a controllable DNS server ([`dns_server`]).
//!
//! Later issues add edges, Pebble and upstream servers here.

pub mod cluster;
pub mod config_stream;
pub mod dns_server;
pub mod edge;
pub mod fault_proxy;
pub mod ops;
pub mod pebble;
pub mod relay;
pub mod smtp_sink;
pub mod webdriver;
pub mod webhook_receiver;

use anyhow::Context;
use portico_control_plane::app::{self, Options, Running};
use portico_control_plane::settings::Settings;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;

/// The admin connection string: `DATABASE_URL`, else the local trust default.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let admin = admin_database_url();
    let mut conn = PgConnection::connect(&admin)
        .await
        .with_context(|| "cannot reach Postgres at DATABASE_URL (scripts/test starts one)")?;
    let name = format!("portico_test_{}", uuid::Uuid::now_v7().simple());
    // `name` is generated above from a UUID: no outside input reaches this SQL.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let (base, _) = admin
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    let params = admin
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(format!("{base}/{name}{params}"))
}

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

/// A control plane on port 0 against its own database.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub running: Option<Running>,
}

impl TestApp {
    /// Starts the API (no workers) with test defaults overridden by `vars`.
    pub async fn spawn(vars: &[(&str, &str)]) -> anyhow::Result<TestApp> {
        Self::spawn_with(vars, Options::new(true, false)).await
    }

    pub async fn spawn_with(vars: &[(&str, &str)], options: Options) -> anyhow::Result<TestApp> {
        edge::install_crypto();
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", fresh_database().await?),
            ("PORTICO_LISTEN", "127.0.0.1:0".into()),
            ("PORTICO_OPERATOR_TOKEN", OPERATOR_TOKEN.into()),
            ("PORTICO_CNAME_TARGET", "edge.portico.test".into()),
            ("PORTICO_EDGE_IPV4", "203.0.113.10".into()),
            ("PORTICO_DB_MAX_CONNECTIONS", "20".into()),
            ("PORTICO_RATE_LIMIT_PER_SECOND", "1000".into()),
            ("PORTICO_RATE_LIMIT_BURST", "1000".into()),
            // Tests that check DNS start their own server and override this.
            ("PORTICO_DNS_NAMESERVERS", "127.0.0.1:9".into()),
            ("PORTICO_DNS_TIMEOUT_MS", "300".into()),
            ("PORTICO_DNS_ATTEMPTS", "1".into()),
            ("PORTICO_ENCRYPTION_KEYS", cluster::ENCRYPTION_KEYS.into()),
            ("PORTICO_CONFIG_KEEPALIVE_MS", "500".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::from_sources(env)?;
        let running = app::start(settings, options).await?;
        Ok(TestApp {
            base: format!("http://{}", running.addr),
            http: reqwest::Client::new(),
            running: Some(running),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn running(&self) -> &Running {
        // Invariant: `running` is only taken by `stop`, which consumes self.
        #[allow(clippy::expect_used)]
        self.running.as_ref().expect("app is running")
    }

    /// Creates a tenant through the operator API; returns (tenant id, API key).
    pub async fn tenant(&self, plan: &str) -> anyhow::Result<(String, String)> {
        let resp = self
            .http
            .post(self.url("/v1/tenants"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&serde_json::json!({"name": "Acme", "plan": plan}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 201,
            "tenant create: {} {}",
            resp.status(),
            resp.text().await?
        );
        let body: Value = resp.json().await?;
        Ok((
            body["tenant"]["id"]
                .as_str()
                .context("tenant id")?
                .to_string(),
            body["api_key"]["key"]
                .as_str()
                .context("api key")?
                .to_string(),
        ))
    }

    /// Sends a request with an API key and returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json))
    }

    /// The types of the tenant's events, oldest first (up to 200).
    pub async fn event_types(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let (_, body) = self
            .call(reqwest::Method::GET, "/v1/events?limit=200", key, None)
            .await?;
        let items = body["items"]
            .as_array()
            .context("events page has no items")?;
        Ok(items
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_string))
            .collect())
    }

    /// Row count of a table in this app's database (to prove nothing was stored).
    pub async fn count(&self, table: &'static str) -> anyhow::Result<i64> {
        // `table` is a literal from the test source.
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.running().state.pool)
                .await?;
        Ok(n)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(r) = self.running.take() {
            r.stop().await?;
        }
        Ok(())
    }
}

/// Polls `check` until it returns `Some`, or fails after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
    }
}

/// Creates an enterprise tenant through a control plane's operator API at
/// `base`; returns its first API key.
pub async fn tenant_key(base: &str) -> anyhow::Result<String> {
    edge::install_crypto();
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({"name": "Acme", "plan": "enterprise"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "tenant create: {}", resp.status());
    let body: Value = resp.json().await?;
    Ok(body["api_key"]["key"]
        .as_str()
        .context("api key")?
        .to_string())
}
