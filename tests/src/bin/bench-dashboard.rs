//! Benchmark (not a test): how long the ops dashboard's overview takes to
//! render with N domains (default 200,000) in the database, and each of its
//! sections on its own (what a live update re-fetches).
//!
//!   cargo run -p portico-e2e --bin bench-dashboard -- [N] [REQUESTS]
//!
//! Seeds one tenant and N domains with one `INSERT ... SELECT
//! generate_series` (statuses spread over active / pending / misconfigured,
//! a certificate for every active one, 1 % of them expiring within 14 days),
//! 20 edges with a minute of traffic, 50 open repair runs with 3 steps each,
//! then logs in and GETs `/ops` REQUESTS (default 50) times one after another.
//! Prints the database URL so that the queries can be EXPLAINed afterwards.

use portico_e2e::ops::{self, OpsClient};
use portico_e2e::{OPERATOR_TOKEN, TestApp};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200_000) as i64;
    let requests = args.get(1).copied().unwrap_or(50);
    let app = TestApp::spawn(&[]).await?;
    let pool = &app.running().state.pool;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await?;
    println!("database: {db}");

    let started = Instant::now();
    let tenant = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (id, name, plan) VALUES ($1, 'Bench', 'enterprise')")
        .bind(tenant)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, hostname, targets, status, tls_status, verification_token)
         SELECT gen_random_uuid(), $1, 'd' || i || '.bench.example.com', '{app.example.net}',
                (ARRAY['active', 'active', 'active', 'pending', 'misconfigured'])[1 + i % 5],
                CASE WHEN i % 5 < 3 THEN 'active' ELSE 'none' END, 'tok'
         FROM generate_series(1, $2) AS i",
    )
    .bind(tenant)
    .bind(n)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after)
         SELECT id, ARRAY[hostname], 'chain', 'k1', '\\x00',
                now() + CASE WHEN random() < 0.01 THEN interval '5 days' ELSE interval '60 days' END
         FROM domains WHERE status = 'active'",
    )
    .execute(pool)
    .await?;
    let mut edges = Vec::new();
    for i in 0..20 {
        let edge = ops::register_edge(&app.base, &format!("edge-{i}")).await?;
        ops::heartbeat(pool, edge, 0).await?;
        edges.push(edge);
    }
    // A minute of 10 s windows for 100 hosts on every edge.
    sqlx::query(
        "INSERT INTO traffic_windows (host, window_start, edge_id, secs, requests, status_2xx, status_5xx)
         SELECT 'd' || h || '.bench.example.com', date_trunc('minute', now()) - make_interval(secs => w * 10),
                e, 10, 100, 99, 1
         FROM unnest($1::uuid[]) AS e, generate_series(1, 100) AS h, generate_series(0, 6) AS w",
    )
    .bind(&edges)
    .execute(pool)
    .await?;
    for (i, edge) in edges.iter().cycle().take(50).enumerate() {
        if i < 20 {
            ops::edge_failing(pool, *edge, "no heartbeat").await?;
        }
        let run = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO repair_runs (id, subject_kind, subject_id, subject_name, kind, reason)
             SELECT $1, 'domain', id, hostname, 'upstream', 'upstream refused' FROM domains
             WHERE hostname = 'd' || $2 || '.bench.example.com'",
        )
        .bind(run)
        .bind(i as i64 + 1)
        .execute(pool)
        .await?;
        for rung in 0..3 {
            ops::step(pool, run, rung, "reprobe_upstream", "probed").await?;
        }
    }
    // What autovacuum does after a bulk insert (sets the visibility map the
    // index-only count relies on).
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    println!(
        "seeded {n} domains, 20 edges, 50 runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await?;
    let overview = measure(&c, "/ops", requests).await?;
    report("GET /ops (whole overview)", &overview);
    for s in [
        "edges",
        "domains",
        "certificates",
        "queues",
        "runs",
        "alerts",
    ] {
        let path = format!("/ops/fragments/{s}");
        let t = measure(&c, &path, requests).await?;
        report(&format!("GET {path}"), &t);
    }
    app.stop().await?;
    Ok(())
}

async fn measure(c: &OpsClient, path: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    // One warm-up request (connection, plan cache).
    let (status, _) = c.get(path).await?;
    anyhow::ensure!(status == 200, "{path}: {status}");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = c.get(path).await?;
        times.push(t.elapsed());
        anyhow::ensure!(status == 200 && !body.is_empty(), "{path}: {status}");
    }
    times.sort();
    Ok(times)
}

fn report(what: &str, sorted: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what:<40} n={} p50 {:.1} ms  p95 {:.1} ms  max {:.1} ms",
        sorted.len(),
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0))
    );
}
