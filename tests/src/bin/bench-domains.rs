//! Benchmark (not a test): bulk-create domains through the API against real
//! Postgres, in batches of 1,000 and one by one, and print domains/s.
//!
//!   cargo run --release -p portico-e2e --bin bench-domains -- [N] [CONCURRENCY] [BATCH_TOTAL]
//!
//! N (default 10000) domains one by one with CONCURRENCY (default 32)
//! requests in flight, and BATCH_TOTAL (default N) domains through
//! `POST /v1/domains:batch`. Each phase uses its own enterprise tenant (no
//! quota) in one fresh database.

use futures::StreamExt;
use portico_e2e::TestApp;
use serde_json::json;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(32);
    let batch_total = args.get(2).copied().unwrap_or(n);
    let app = TestApp::spawn(&[
        ("PORTICO_RATE_LIMIT_PER_SECOND", "1000000"),
        ("PORTICO_RATE_LIMIT_BURST", "1000000"),
        ("PORTICO_DB_MAX_CONNECTIONS", "40"),
    ])
    .await?;

    let (_, key) = app.tenant("enterprise").await?;
    let started = Instant::now();
    let mut done = 0;
    for chunk in (0..batch_total).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<_> = chunk
            .iter()
            .map(|i| json!({"hostname": format!("b{i}.bench-batch.example.com"), "target": "app.example.net:443"}))
            .collect();
        let (status, body) = app
            .call(
                reqwest::Method::POST,
                "/v1/domains:batch",
                &key,
                Some(json!({"items": items})),
            )
            .await?;
        anyhow::ensure!(
            status == 200 && body["failed"] == 0,
            "batch failed: {status} {body}"
        );
        done += chunk.len();
    }
    let batch_secs = started.elapsed().as_secs_f64();
    println!(
        "batch:      {done} domains in {batch_secs:.2} s = {:.0} domains/s",
        done as f64 / batch_secs
    );

    let (_, key) = app.tenant("enterprise").await?;
    let started = Instant::now();
    let results: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let (app, key) = (&app, &key);
            async move {
                let body = json!({"hostname": format!("s{i}.bench-single.example.com"), "target": "app.example.net:443"});
                app.call(reqwest::Method::POST, "/v1/domains", key, Some(body)).await.map(|(s, _)| s).unwrap_or(0)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let single_secs = started.elapsed().as_secs_f64();
    let created = results.iter().filter(|s| **s == 201).count();
    anyhow::ensure!(created == n, "only {created} of {n} created");
    println!(
        "one by one: {created} domains in {single_secs:.2} s = {:.0} domains/s ({concurrency} in flight)",
        created as f64 / single_secs
    );
    app.stop().await
}
