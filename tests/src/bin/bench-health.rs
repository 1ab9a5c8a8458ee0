//! Host health check throughput against a real control-plane process
//! (build with `--release`; the control plane is taken from the same target
//! dir). Needs `DATABASE_URL` (an admin URL; a fresh database is made).
//!
//!   bench-health [--domains 100000] [--interval-secs 60]
//!       Inserts N active domains whose upstream is a TCP listener in this
//!       process, all due at once; starts the control plane with its
//!       worker; reports how long until every domain has been checked once
//!       (`host_health` jobs: snapshot query, upstream connect probe,
//!       results recorded with hysteresis), and the rate. Then, with every
//!       domain due again (the first round took longer than the interval,
//!       or the interval is short), the steady rate over `--steady-secs`
//!       (default 30) from finished `host_health` jobs: later rounds
//!       confirm passing states, which are not rewritten.

use portico_e2e::cluster::ControlPlane;
use sqlx::PgPool;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_e2e::edge::install_crypto();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = num("--domains", 100_000);
    let interval = num("--interval-secs", 60);
    let steady = num("--steady-secs", 30);

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = upstream.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = upstream.accept().await {
            drop(s);
        }
    });

    let db = portico_e2e::fresh_database().await?;
    // Migrate and create the tenant with the worker off, then seed, then
    // start the worker: every domain is due at the same moment.
    let interval_ms = (interval * 1000).to_string();
    let env = [
        ("PORTICO_DB_MAX_CONNECTIONS", "40"),
        ("PORTICO_HEALTH_HOST_INTERVAL_MS", interval_ms.as_str()),
        ("PORTICO_HEALTH_TICK_MS", "500"),
        ("PORTICO_LOG_FORMAT", "json"),
        ("RUST_LOG", "warn"),
    ];
    let mut cp = ControlPlane::start(&db, &env).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    drop(key);
    let pool = PgPool::connect(&db).await?;
    let seeded = Instant::now();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, hostname, targets, status, verification_token, next_health_at)
         SELECT gen_random_uuid(), (SELECT id FROM tenants LIMIT 1), 'h' || g || '.bench.test',
                ARRAY[$2], 'active', 'x', now()
         FROM generate_series(1, $1) g",
    )
    .bind(i64::try_from(n)?)
    .bind(&target)
    .execute(&pool)
    .await?;
    eprintln!(
        "seeded {n} domains in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    cp.kill();
    cp.set_env("PORTICO_WORKER_IN_SERVE", "true");
    let started = Instant::now();
    cp.restart().await?;

    let mut last = 0i64;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM health_states WHERE kind = 'upstream' AND last_passed",
        )
        .fetch_one(&pool)
        .await?;
        if done != last {
            eprintln!(
                "{:>6.1} s: {done} domains checked",
                started.elapsed().as_secs_f64()
            );
            last = done;
        }
        if done >= i64::try_from(n)? {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not done after 30 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // allow-sleep: progress polling
    }
    let secs = started.elapsed().as_secs_f64();
    let failing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM health_states WHERE NOT last_passed")
            .fetch_one(&pool)
            .await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!(
        "{n} domains checked once in {secs:.1} s (control plane start included): {rate:.0} checks/s; {failing} failing results"
    );

    let done = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = 'host_health' AND status = 'Done'",
        )
        .fetch_one(&pool)
        .await
    };
    let (c0, t0) = (done().await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(steady)).await; // allow-sleep: the measurement window
    let (c1, dt) = (done().await?, t0.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let steady_rate = (c1 - c0) as f64 / dt;
    println!(
        "steady state: {} host_health jobs finished in {dt:.1} s: {steady_rate:.0} checks/s ({:.0} s for {n} domains)",
        c1 - c0,
        {
            #[allow(clippy::cast_precision_loss)]
            let n = n as f64;
            n / steady_rate.max(1.0)
        }
    );
    Ok(())
}
