//! Traffic report ingestion against a real control-plane process with its
//! workers (build with `--release`; the control plane is taken from the same
//! target dir). Needs `DATABASE_URL` (an admin URL; a fresh database is made).
//!
//!   bench-ingest [--edges 4] [--hosts 1000] [--reports 200] [--concurrency 8]
//!       Registers `edges` edges and `hosts` domains, then POSTs `reports`
//!       reports to `/internal/v1/edge/reports` (each: one window for every
//!       host, edges taking turns, windows 10 s apart), `concurrency` in
//!       flight. Prints the POST rate (202s/s), then the time until every
//!       window is in `traffic_windows` (the `ingest_report` jobs done):
//!       reports/s and rows/s end to end.

use portico_e2e::cluster::{ControlPlane, register_edge};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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
    let (edges, hosts) = (num("--edges", 4).max(1), num("--hosts", 1000).max(1));
    let (reports, concurrency) = (num("--reports", 200), num("--concurrency", 8).max(1));

    let db = portico_e2e::fresh_database().await?;
    let cp = ControlPlane::start(
        &db,
        &[
            ("PORTICO_WORKER_IN_SERVE", "true"),
            ("PORTICO_DB_MAX_CONNECTIONS", "30"),
            ("PORTICO_QUOTA_FREE", "0"),
        ],
    )
    .await?;
    let base = cp.base();
    let key = portico_e2e::tenant_key(&base).await?;
    let mut tokens = Vec::new();
    for e in 0..edges {
        tokens.push((
            format!("bench-{e}"),
            register_edge(&base, &format!("bench-{e}")).await?,
        ));
    }
    let client = reqwest::Client::new();
    let host = |i: usize| format!("h{i}.bench.example.com");
    for batch in (0..hosts).step_by(1000) {
        let items: Vec<Value> = (batch..(batch + 1000).min(hosts))
            .map(|i| json!({"hostname": host(i), "target": "10.0.0.1:80"}))
            .collect();
        let resp = client
            .post(format!("{base}/v1/domains:batch"))
            .bearer_auth(&key)
            .json(&json!({ "items": items }))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "batch: {}", resp.status());
    }

    // Report r: edge r % edges, window start going back 10 s per round.
    let now = chrono::Utc::now().timestamp();
    let now = now - now % 10;
    let bodies: Vec<(String, Vec<u8>)> = (0..reports)
        .map(|r| {
            let (name, token) = &tokens[r % edges];
            let start = now - 10 * i64::try_from(r / edges).unwrap_or(0);
            let windows: Vec<Value> = (0..hosts)
                .map(|i| {
                    json!({"host": host(i), "start_unix": start, "secs": 10, "requests": 100,
                           "status_2xx": 97, "status_5xx": 3, "upstream_connect_failures": 1,
                           "latency_buckets_ms": [[5, 60], [10, 30], [25, 9], [2147483647, 1]]})
                })
                .collect();
            let body = json!({"v": 1, "edge_id": name, "windows": windows, "dropped": 0});
            Ok((token.clone(), serde_json::to_vec(&body)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let bytes: usize = bodies.iter().map(|(_, b)| b.len()).sum();

    let started = Instant::now();
    let url = format!("{base}/internal/v1/edge/reports");
    let results: Vec<anyhow::Result<()>> = {
        use futures::StreamExt;
        futures::stream::iter(bodies)
            .map(|(token, body)| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let resp = client
                        .post(&url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status() == 202, "report: {}", resp.status());
                    Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    };
    for r in results {
        r?;
    }
    let posted = started.elapsed();

    let pool = sqlx::PgPool::connect(&db).await?;
    let want = i64::try_from(reports * hosts)?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let stored = loop {
        let n: (i64,) = sqlx::query_as("SELECT count(*) FROM traffic_windows")
            .fetch_one(&pool)
            .await?;
        if n.0 >= want {
            break started.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {want} rows after 30 min",
            n.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // allow-sleep: polling with a deadline
    };
    let resolved: (i64,) =
        sqlx::query_as("SELECT count(*) FROM traffic_windows WHERE domain_id IS NOT NULL")
            .fetch_one(&pool)
            .await?;
    anyhow::ensure!(
        resolved.0 == want,
        "{} of {want} rows have their domain",
        resolved.0
    );
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "{reports} reports × {hosts} windows ({edges} edges, {:.1} MiB of JSON, {concurrency} in flight)",
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "POST (checked + queued, 202): {:.2} s, {:.1} reports/s, {:.0} windows/s",
        secs(posted),
        reports as f64 / secs(posted),
        (reports * hosts) as f64 / secs(posted)
    );
    println!(
        "stored (jobs done, rows in traffic_windows): {:.2} s after the first POST, {:.1} reports/s, {:.0} rows/s",
        secs(stored),
        reports as f64 / secs(stored),
        (reports * hosts) as f64 / secs(stored)
    );
    drop(cp);
    Ok(())
}
