//! Config-distribution benchmarks against real processes (build with
//! `--release`; the control plane and edge binaries are taken from the same
//! target dir). Needs `DATABASE_URL` (an admin URL; a fresh database is made).
//!
//!   bench-config propagation [--edges 20] [--changes 1000]
//!       API 201 → applied on every edge (edge heartbeats, recorded by the
//!       control plane), per change, p50/p99/max.
//!   bench-config snapshot [--hosts 200000]
//!       Full snapshot of N hosts with certificates: control-plane build
//!       time, bytes on the wire, edge apply time and RSS.
//!   bench-config idle [--connections 100] [--secs 30]
//!       Control-plane RSS and CPU per connected (idle) edge stream.

use anyhow::Context;
use futures::StreamExt;
use portico_e2e::cluster::{ControlPlane, ENCRYPTION_KEYS, register_edge};
use portico_e2e::edge::{TestCa, TestEdge};
use serde_json::json;
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
    match args.first().map(String::as_str) {
        Some("propagation") => propagation(num("--edges", 20), num("--changes", 1000)).await,
        Some("snapshot") => snapshot(num("--hosts", 200_000)).await,
        Some("idle") => idle(num("--connections", 100), num("--secs", 30)).await,
        _ => anyhow::bail!("usage: bench-config propagation|snapshot|idle [options]"),
    }
}

async fn edge(base: &str, name: &str) -> anyhow::Result<TestEdge> {
    let token = register_edge(base, name).await?;
    let dir = std::env::temp_dir().join(format!(
        "bench-edge-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let args = ["--control-plane", base, "--token", &token, "--name", name].map(String::from);
    TestEdge::start_in(&dir, &args).await
}

async fn propagation(n_edges: usize, changes: usize) -> anyhow::Result<()> {
    let db = portico_e2e::fresh_database().await?;
    let cp = ControlPlane::start(&db, &[("PORTICO_DB_MAX_CONNECTIONS", "30")]).await?;
    let base = cp.base();
    let key = portico_e2e::tenant_key(&base).await?;
    let mut edges = Vec::new();
    for i in 0..n_edges {
        edges.push(edge(&base, &format!("bench-{i}")).await?);
    }
    let pool = sqlx::PgPool::connect(&db).await?;
    let wait_all = |v: i64| {
        let pool = pool.clone();
        async move {
            loop {
                let min: Option<i64> = sqlx::query_scalar("SELECT min(applied_version) FROM edges")
                    .fetch_one(&pool)
                    .await?;
                if min.unwrap_or(0) >= v {
                    return anyhow::Ok(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(1)).await; // allow-sleep: polling
            }
        }
    };
    wait_all(0).await?;
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(changes);
    let started = Instant::now();
    for i in 0..changes {
        let resp = client
            .post(format!("{base}/v1/domains"))
            .bearer_auth(&key)
            .json(&json!({"hostname": format!("p{i}.bench.example.com"), "target": "10.0.0.1:80"}))
            .send()
            .await?;
        let t0 = Instant::now();
        anyhow::ensure!(resp.status() == 201, "create: {}", resp.status());
        let v: i64 = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&pool)
            .await?;
        let t1 = tokio::time::timeout(Duration::from_secs(30), wait_all(v)).await??;
        lat.push(t1 - t0);
    }
    let total = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "propagation: {n_edges} edges, {changes} sequential creates in {:.1} s; 201 → applied on all edges: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

/// Inserts `n` domains with certificates straight into the database (the
/// API path is measured by bench-domains); 1,000 distinct certificates are
/// reused round-robin.
async fn seed(db: &str, n: usize) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(db).await?;
    let tenant: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (id, name, plan) VALUES ($1, 'Seed', 'enterprise') RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .fetch_one(&pool)
    .await?;
    let ca = TestCa::new()?;
    let keys = portico_control_plane::crypto::Keyring::parse(ENCRYPTION_KEYS)
        .map_err(anyhow::Error::msg)?;
    let bundles: Vec<_> = (0..1000)
        .map(|i| ca.bundle(&[&format!("c{i}.seed.example.com")]))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for chunk_start in (0..n).step_by(10_000) {
        let range = chunk_start..(chunk_start + 10_000).min(n);
        let ids: Vec<uuid::Uuid> = range.clone().map(|_| uuid::Uuid::now_v7()).collect();
        let hosts: Vec<String> = range
            .clone()
            .map(|i| format!("h{i}.seed.example.com"))
            .collect();
        sqlx::query("INSERT INTO domains (id, tenant_id, hostname, targets, verification_token, status)
                     SELECT u.id, $2, u.h, ARRAY['10.0.0.1:80'], 'tok', 'active' FROM UNNEST($1::uuid[], $3::text[]) AS u(id, h)")
            .bind(&ids).bind(tenant).bind(&hosts).execute(&pool).await?;
        let mut chains = Vec::new();
        let mut sealed = Vec::new();
        for (j, id) in ids.iter().enumerate() {
            let b = &bundles[(chunk_start + j) % bundles.len()];
            chains.push(b.chain_pem.clone());
            sealed.push(keys.seal(b.key_pem.as_bytes(), id.as_bytes())?.bytes);
        }
        let names: Vec<String> = hosts.clone();
        sqlx::query("INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after)
                     SELECT u.id, ARRAY[u.h], u.c, 'test1', u.k, now() + interval '60 days'
                     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bytea[]) AS u(id, h, c, k)")
            .bind(&ids).bind(&names).bind(&chains).bind(&sealed).execute(&pool).await?;
        eprint!("\rseeded {} / {n}", range.end);
    }
    eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    sqlx::query("UPDATE config_state SET version = 1")
        .execute(&pool)
        .await?;
    Ok(())
}

async fn snapshot(n: usize) -> anyhow::Result<()> {
    let db = portico_e2e::fresh_database().await?;
    let cp = ControlPlane::start(&db, &[]).await?;
    seed(&db, n).await?;
    let base = cp.base();
    let token = register_edge(&base, "reader").await?;
    // The control plane's side: build and send, read as fast as we can.
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{base}/internal/v1/edge/config"))
        .bearer_auth(&token)
        .send()
        .await?;
    let mut body = resp.bytes_stream();
    let (mut bytes, mut tail) = (0usize, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
        if tail.windows(14).any(|w| w == b"\"snapshot_end\"") {
            break;
        }
    }
    let built = started.elapsed();
    println!(
        "snapshot: {n} hosts with certificates: control plane built and sent it in {:.2} s, {:.1} MB on the wire",
        built.as_secs_f64(),
        bytes as f64 / 1e6
    );
    drop(body);
    // The edge's side: from start to serving version 1, then RSS.
    let started = Instant::now();
    let e = edge(&base, "applier").await?;
    loop {
        if e.metric("portico_edge_snapshot_version").await? >= 1.0
            && e.metric("portico_edge_hosts").await? >= n as f64
        {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "edge did not apply in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // allow-sleep: polling
    }
    let applied = started.elapsed();
    let rss = rss_kib(e.pid())?;
    println!(
        "snapshot: edge start → {n} hosts applied in {:.2} s; edge RSS {:.0} MiB ({:.1} KiB per host with its certificate)",
        applied.as_secs_f64(),
        rss as f64 / 1024.0,
        rss as f64 / n as f64
    );
    Ok(())
}

async fn idle(connections: usize, secs: usize) -> anyhow::Result<()> {
    let db = portico_e2e::fresh_database().await?;
    let cp = ControlPlane::start(&db, &[("PORTICO_CONFIG_KEEPALIVE_MS", "15000")]).await?;
    let base = cp.base();
    let key = portico_e2e::tenant_key(&base).await?;
    for i in 0..100 {
        reqwest::Client::new()
            .post(format!("{base}/v1/domains"))
            .bearer_auth(&key)
            .json(&json!({"hostname": format!("i{i}.idle.example.com"), "target": "10.0.0.1:80"}))
            .send()
            .await?;
    }
    let pid = cp.pid().context("control plane pid")?;
    let settle = Duration::from_secs(2);
    tokio::time::sleep(settle).await; // allow-sleep: let start-up allocations settle before measuring
    let (rss0, cpu0) = (rss_kib(pid)?, cpu_ticks(pid)?);
    let mut readers = Vec::new();
    for i in 0..connections {
        let token = register_edge(&base, &format!("sim-{i}")).await?;
        let mut r = portico_e2e::config_stream::ConfigReader::open(&base, &token, None).await?;
        r.snapshot(Duration::from_secs(10)).await?;
        readers.push(r);
    }
    tokio::time::sleep(settle).await; // allow-sleep: as above
    let (rss1, cpu1) = (rss_kib(pid)?, cpu_ticks(pid)?);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs as u64)).await; // allow-sleep: the idle window being measured
    let cpu2 = cpu_ticks(pid)?;
    let idle_cpu = (cpu2 - cpu1) as f64 / 100.0 / t.elapsed().as_secs_f64();
    println!(
        "idle: {connections} edge streams: control-plane RSS {:.1} → {:.1} MiB ({:.1} KiB per edge); connect+snapshot CPU {:.2} s; idle CPU {:.3} % of a core over {secs} s",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / connections as f64,
        (cpu1 - cpu0) as f64 / 100.0,
        idle_cpu * 100.0
    );
    drop(readers);
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// utime + stime in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}
