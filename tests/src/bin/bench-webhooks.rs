//! Webhook delivery benchmarks against a real control-plane process (build
//! with `--release`; the control plane is taken from the same target dir)
//! and a receiver in this process on 127.0.0.1. Needs `DATABASE_URL` (an
//! admin URL; a fresh database is made).
//!
//!   bench-webhooks throughput [--messages 5000]
//!       Domains created in batches of 1,000 (one `domain.created` each);
//!       time from the first batch to the last message at the receiver:
//!       messages/s through outbox → dispatcher → deliver_webhook → HTTP.
//!   bench-webhooks latency [--changes 300]
//!       Sequential `POST /v1/domains`; from the 201 to the signed
//!       `domain.created` at the receiver: p50/p99/max.

use portico_e2e::cluster::ControlPlane;
use portico_e2e::webhook_receiver::Receiver;
use serde_json::json;
use std::time::{Duration, Instant};

const SETTINGS: &[(&str, &str)] = &[
    ("PORTICO_WORKER_IN_SERVE", "true"),
    ("PORTICO_WEBHOOK_ALLOW_HTTP", "true"),
    ("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("PORTICO_DB_MAX_CONNECTIONS", "30"),
    ("PORTICO_QUOTA_FREE", "0"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_e2e::edge::install_crypto();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(num("--messages", 5000)).await,
        Some("latency") => latency(num("--changes", 300)).await,
        _ => anyhow::bail!("usage: bench-webhooks throughput|latency [options]"),
    }
}

/// A control plane with one endpoint pointing at a fresh receiver.
async fn setup() -> anyhow::Result<(ControlPlane, String, Receiver)> {
    let db = portico_e2e::fresh_database().await?;
    let cp = ControlPlane::start(&db, SETTINGS).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    let receiver = Receiver::start().await?;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhook-endpoints", cp.base()))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("/bench"), "event_types": ["domain.created"]}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "endpoint: {}", resp.status());
    Ok((cp, key, receiver))
}

async fn throughput(n: usize) -> anyhow::Result<()> {
    let (cp, key, receiver) = setup().await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    for batch in (0..n).step_by(1000) {
        let items: Vec<_> = (batch..(batch + 1000).min(n))
            .map(
                |i| json!({"hostname": format!("t{i}.bench.example.com"), "target": "10.0.0.1:80"}),
            )
            .collect();
        let resp = client
            .post(format!("{}/v1/domains:batch", cp.base()))
            .bearer_auth(&key)
            .json(&json!({ "items": items }))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "batch: {}", resp.status());
    }
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.count() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // allow-sleep: polling
    }
    let total = started.elapsed();
    println!(
        "throughput: {n} messages (domains created in {:.1} s) all delivered in {:.1} s: {:.0} messages/s ({} requests, duplicates {})",
        created.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        receiver.count(),
        receiver.count() - n
    );
    Ok(())
}

async fn latency(changes: usize) -> anyhow::Result<()> {
    let (cp, key, receiver) = setup().await?;
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(changes);
    for i in 0..changes {
        let host = format!("l{i}.bench.example.com");
        let resp = client
            .post(format!("{}/v1/domains", cp.base()))
            .bearer_auth(&key)
            .json(&json!({"hostname": host, "target": "10.0.0.1:80"}))
            .send()
            .await?;
        let t0 = Instant::now();
        anyhow::ensure!(resp.status() == 201, "create: {}", resp.status());
        let needle = format!("\"hostname\":\"{host}\"");
        let deadline = t0 + Duration::from_secs(30);
        while !receiver.has_body_containing(&needle) {
            anyhow::ensure!(Instant::now() < deadline, "{host} never arrived");
            tokio::time::sleep(Duration::from_millis(1)).await; // allow-sleep: polling
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "latency: {changes} sequential creates; 201 → signed domain.created at the receiver: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
