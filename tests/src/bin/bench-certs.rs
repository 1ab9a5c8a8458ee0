//! On-demand certificate benchmarks against a real Pebble (build with
//! `--release`; the control plane and edge binaries are taken from the same
//! target dir). Needs `DATABASE_URL` (an admin URL; a fresh database is made
//! per run) and `pebble` + `pebble-challtestsrv` on `PATH`. Pebble runs with
//! `PEBBLE_VA_NOSLEEP=1` and no nonce rejection; challenges are HTTP-01,
//! answered by the edge. Each host is under its own registered domain and
//! the new-order budget is raised, so Let's Encrypt's limits (which the
//! control plane enforces by default) do not pace the run.
//!
//!   bench-certs first-request [--hosts 100] [--later-hosts 10] [--later 20]
//!       Per host, one after another: create, mark verified and publish,
//!       wait until the edge applied it, then time one HTTPS GET on a new
//!       connection (start → response headers). Then `--later` GETs to
//!       each of the first `--later-hosts` hosts, each on a new connection
//!       with a full handshake. p50/p99/max of both.
//!   bench-certs throughput [--hosts 500] [--clients 50] [--issue-concurrency N]
//!       N hosts verified at once, then N first requests, `--clients` in
//!       flight, each retried until it gets a 200; wall time until all N
//!       certificates are stored, certificates per minute, orders at the CA.
//!       `--issue-concurrency` sets `PORTICO_ISSUE_CONCURRENCY` (default:
//!       the control plane's own, 8).

use anyhow::Context;
use futures::StreamExt;
use portico_e2e::edge::echo_upstream;
use portico_e2e::pebble::{Challenge, IssuingCluster};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Pebble has no rate limits; the control plane's budget defaults to Let's
/// Encrypt's 300 new orders per 3 hours, which a throughput run would hit.
const ENV: &[(&str, &str)] = &[("PORTICO_ACME_ORDERS_PER_3H", "1000000")];

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
        Some("first-request") => {
            first_request(
                num("--hosts", 100),
                num("--later-hosts", 10),
                num("--later", 20),
            )
            .await
        }
        Some("throughput") => {
            let issue = num("--issue-concurrency", 0);
            throughput(num("--hosts", 500), num("--clients", 50), issue).await
        }
        _ => anyhow::bail!("usage: bench-certs first-request|throughput [options]"),
    }
}

/// `www.bench-{i}.com`: one registered domain per host, so the
/// per-registered-domain budget (50 a week) never defers an order.
fn hostname(i: usize) -> String {
    format!("www.bench-{i}.com")
}

async fn first_request(n: usize, later_hosts: usize, later: usize) -> anyhow::Result<()> {
    let c = IssuingCluster::start(Challenge::Http01, ENV).await?;
    let upstream = echo_upstream("up").await?;
    let root = c.issuing_root().await?;
    let mut first = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let host = hostname(i);
        c.add_domain(&host, upstream, true).await?;
        c.activate(&host).await?;
        match timed_get(&c, &root, &host).await {
            Ok((200, t)) => first.push(t),
            outcome => {
                failed += 1;
                eprintln!("first request to {host}: {outcome:?}");
            }
        }
        eprint!("\rfirst requests: {} / {n}", i + 1);
    }
    eprintln!();
    let mut after = Vec::with_capacity(later_hosts * later);
    for i in 0..later_hosts.min(n) {
        let host = hostname(i);
        for _ in 0..later {
            let (status, t) = timed_get(&c, &root, &host).await?;
            anyhow::ensure!(status == 200, "later request to {host}: {status}");
            after.push(t);
        }
    }
    println!(
        "first-request: {n} hosts, one after another, HTTP-01 against Pebble (VA no sleep); {failed} failed"
    );
    println!(
        "  first HTTPS request (issues on demand): {}",
        summary(&mut first)
    );
    println!(
        "  later requests, new connection + full handshake ({} × {later}): {}",
        later_hosts.min(n),
        summary(&mut after)
    );
    print_breakdown(&c.pool).await?;
    let orders = count(
        &c.pool,
        "SELECT count(*) FROM acme_events WHERE kind = 'order'",
    )
    .await?;
    println!("  orders at the CA: {orders}");
    Ok(())
}

/// One GET on a client of its own (a new connection, no session to
/// resume): (status, start → response headers). Building the client,
/// which parses the root, is not timed.
async fn timed_get(c: &IssuingCluster, root: &str, host: &str) -> anyhow::Result<(u16, Duration)> {
    let client = c.https_client(root, host)?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let t0 = Instant::now();
    let resp = client.get(&url).send().await?;
    let took = t0.elapsed();
    let status = resp.status().as_u16();
    resp.bytes().await?;
    Ok((status, took))
}

/// Where a first request's time goes, from the control plane's own records:
/// the CA's part (the `order` event, written when the ACME order is about
/// to be sent, to the `issued` event) per host.
async fn print_breakdown(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let ms: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM i.created_at - o.created_at)::float8 * 1000
         FROM acme_events o JOIN acme_events i ON i.hostname = o.hostname AND i.kind = 'issued'
         WHERE o.kind = 'order'",
    )
    .fetch_all(pool)
    .await?;
    let mut ca: Vec<Duration> = ms
        .into_iter()
        .map(|m| Duration::from_secs_f64(m.max(0.0) / 1e3))
        .collect();
    println!(
        "  of which ACME order → certificate (control plane ↔ Pebble, validation through the edge): {}",
        summary(&mut ca)
    );
    Ok(())
}

async fn throughput(n: usize, clients: usize, issue: usize) -> anyhow::Result<()> {
    let concurrency = issue.to_string();
    let mut env = ENV.to_vec();
    if issue > 0 {
        env.push(("PORTICO_ISSUE_CONCURRENCY", &concurrency));
    }
    let c = IssuingCluster::start(Challenge::Http01, &env).await?;
    let upstream = echo_upstream("up").await?;
    let root = c.issuing_root().await?;
    let hosts: Vec<String> = (0..n).map(hostname).collect();
    verify_all(&c, &hosts, upstream).await?;

    let retries = AtomicUsize::new(0);
    let started = Instant::now();
    let requests = futures::stream::iter(&hosts)
        .map(|host| get_until_served(&c, &root, host, &retries))
        .buffer_unordered(clients)
        .collect::<Vec<anyhow::Result<()>>>();
    let stored = async {
        loop {
            if count(&c.pool, "SELECT count(*) FROM certificates").await? >= n as i64 {
                return anyhow::Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1800),
                "not all certificates stored in 30 min"
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // allow-sleep: polling
        }
    };
    let (outcomes, all_stored) = tokio::join!(requests, stored);
    let served = started.elapsed();
    for outcome in outcomes {
        outcome?;
    }
    let all_stored = all_stored?;
    let orders = count(
        &c.pool,
        "SELECT count(*) FROM acme_events WHERE kind = 'order'",
    )
    .await?;
    let failed = count(
        &c.pool,
        "SELECT count(*) FROM acme_events WHERE kind IN ('validation_failed', 'error')",
    )
    .await?;
    println!(
        "throughput: {n} hosts verified at once, {clients} clients, PORTICO_ISSUE_CONCURRENCY={}",
        if issue > 0 {
            concurrency
        } else {
            "default (8)".into()
        }
    );
    println!(
        "  all {n} certificates stored in {:.1} s = {:.0} certificates/minute; every host served 200 after {:.1} s",
        all_stored.as_secs_f64(),
        n as f64 * 60.0 / all_stored.as_secs_f64(),
        served.as_secs_f64()
    );
    println!(
        "  orders at the CA: {orders} (hosts: {n}); failed validations/errors: {failed}; client retries (503 or failed handshake): {}",
        retries.load(Ordering::Relaxed)
    );
    Ok(())
}

/// All hosts in one batch create, one SQL update and one publish, as a
/// DNS check that verified them all at once would; then waits for the edge.
async fn verify_all(
    c: &IssuingCluster,
    hosts: &[String],
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    for chunk in hosts.chunks(1000) {
        let items: Vec<_> = chunk
            .iter()
            .map(|h| json!({"hostname": h, "target": upstream.to_string(), "tls": {"on_demand": true}}))
            .collect();
        let (status, body) = c
            .api(
                reqwest::Method::POST,
                "/v1/domains:batch",
                Some(json!({"items": items})),
            )
            .await?;
        anyhow::ensure!(
            status == 200 && body["failed"] == 0,
            "batch create: {status} {body}"
        );
    }
    sqlx::query(
        "UPDATE domains SET status = 'active', dns_checked_at = now() WHERE hostname = ANY($1)",
    )
    .bind(hosts)
    .execute(&c.pool)
    .await?;
    let keys: Vec<_> = hosts
        .iter()
        .map(|h| portico_control_plane::db::config::ConfigKey::Host(h.as_str().into()))
        .collect();
    let mut tx = c.pool.begin().await?;
    portico_control_plane::db::config::publish(&mut tx, &keys).await?;
    tx.commit().await?;
    c.wait_edge_current().await
}

/// GETs `host` on new connections until one answers 200; every other
/// outcome (a 503, a handshake that failed while the order runs) counts as
/// a retry.
async fn get_until_served(
    c: &IssuingCluster,
    root: &str,
    host: &str,
    retries: &AtomicUsize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Ok((200, _)) = timed_get(c, root, host).await {
            return Ok(());
        }
        retries.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(Instant::now() < deadline, "{host} not served in 30 min");
        tokio::time::sleep(Duration::from_millis(250)).await; // allow-sleep: pacing retries
    }
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.context(sql)
}

/// p50/p99/max of `samples` (sorted in place).
fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}
