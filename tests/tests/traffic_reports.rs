//! Traffic reports end to end, with real processes: a `portico-control-plane
//! serve` process running the job worker, a registered `portico-edge`
//! following it, an upstream that answers the status it is asked for, and a
//! host whose upstream port is dead. What the edge counted reaches
//! `traffic_windows` exactly; windows counted while the control plane is
//! down are shipped when it returns; bad reports get problems; ingesting a
//! report again overwrites its windows and pruning deletes in batches.

use portico_control_plane::db::traffic::{self, TrafficTotals};
use portico_e2e::cluster::{ControlPlane, register_edge};
use portico_e2e::edge::{TestEdge, free_port};
use portico_e2e::{eventually, fresh_database, tenant_key};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;

/// An upstream answering `GET /status/{code}` with that status.
async fn status_upstream() -> anyhow::Result<SocketAddr> {
    use axum::extract::Path;
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/status/{code}",
        axum::routing::get(|Path(code): Path<u16>| async move {
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

struct Setup {
    cp: ControlPlane,
    pool: PgPool,
    key: String,
    token: String,
}

async fn setup() -> anyhow::Result<Setup> {
    setup_with(&[]).await
}

async fn setup_with(extra: &[(&str, &str)]) -> anyhow::Result<Setup> {
    let db = fresh_database().await?;
    let mut env = vec![("PORTICO_WORKER_IN_SERVE", "true")];
    env.extend_from_slice(extra);
    let cp = ControlPlane::start(&db, &env).await?;
    let key = tenant_key(&cp.base()).await?;
    let token = register_edge(&cp.base(), "edge-r").await?;
    let pool = PgPool::connect(&db).await?;
    Ok(Setup {
        cp,
        pool,
        key,
        token,
    })
}

async fn add_domain(
    base: &str,
    key: &str,
    host: &str,
    target: SocketAddr,
) -> anyhow::Result<uuid::Uuid> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/domains"))
        .bearer_auth(key)
        .json(&json!({"hostname": host, "target": target.to_string()}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "create {host}: {}", resp.status());
    let body: Value = resp.json().await?;
    Ok(body["id"].as_str().unwrap_or_default().parse()?)
}

/// An edge named `edge-r` following the control plane, reporting every 200 ms,
/// once it serves `hosts` hosts.
async fn edge(s: &Setup, hosts: u64) -> anyhow::Result<TestEdge> {
    let dir =
        std::env::temp_dir().join(format!("portico-edge-r-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let base = s.cp.base();
    let args = [
        "--control-plane",
        &base,
        "--token",
        &s.token,
        "--name",
        "edge-r",
        "--report-interval-ms",
        "200",
    ]
    .map(String::from);
    let edge = TestEdge::start_in(&dir, &args).await?;
    eventually(30, "the edge to serve its hosts", || async {
        let n = edge.metric("portico_edge_hosts").await.ok()?;
        (n as u64 == hosts).then_some(())
    })
    .await?;
    Ok(edge)
}

/// Sends `n` GETs for `path` on `host` through the edge; returns their statuses.
async fn send(edge: &TestEdge, host: &str, path: &str, n: usize) -> anyhow::Result<Vec<u16>> {
    // The edge closes the connection after an error page: no pooled reuse.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = client
            .get(format!("http://{}{path}", edge.http))
            .header("Host", host)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        statuses.push(resp.status().as_u16());
    }
    Ok(statuses)
}

/// Sums of the stored windows of `host`:
/// (requests, 2xx, 3xx, 4xx, 5xx, connect failures, tls failures).
async fn stored(pool: &PgPool, host: &str) -> anyhow::Result<[i64; 7]> {
    let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(requests), 0)::bigint, COALESCE(sum(status_2xx), 0)::bigint,
                COALESCE(sum(status_3xx), 0)::bigint, COALESCE(sum(status_4xx), 0)::bigint,
                COALESCE(sum(status_5xx), 0)::bigint,
                COALESCE(sum(upstream_connect_failures), 0)::bigint,
                COALESCE(sum(tls_handshake_failures), 0)::bigint
         FROM traffic_windows WHERE host = $1",
    )
    .bind(host)
    .fetch_one(pool)
    .await?;
    Ok([row.0, row.1, row.2, row.3, row.4, row.5, row.6])
}

async fn wait_stored(pool: &PgPool, host: &str, want: [i64; 7]) -> anyhow::Result<()> {
    let what = format!("the windows of {host} to sum to {want:?}");
    let reached = eventually(60, &what, || async {
        (stored(pool, host).await.ok()? == want).then_some(())
    })
    .await;
    match reached {
        Ok(()) => Ok(()),
        Err(e) => anyhow::bail!("{e}; the sums are {:?}", stored(pool, host).await?),
    }
}

#[tokio::test]
async fn what_the_edge_counts_reaches_the_windows_exactly() -> anyhow::Result<()> {
    let s = setup().await?;
    let base = s.cp.base();
    let upstream = status_upstream().await?;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let shop = add_domain(&base, &s.key, "shop.example.com", upstream).await?;
    let down = add_domain(&base, &s.key, "down.example.com", dead).await?;
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let edge = edge(&s, 2).await?;

    assert_eq!(
        send(&edge, "shop.example.com", "/status/200", 40).await?,
        [200; 40]
    );
    assert_eq!(
        send(&edge, "shop.example.com", "/status/404", 7).await?,
        [404; 7]
    );
    assert_eq!(
        send(&edge, "shop.example.com", "/status/502", 5).await?,
        [502; 5]
    );
    assert_eq!(send(&edge, "down.example.com", "/", 3).await?, [502; 3]);
    // Not a configured host: answered, not counted in any window.
    assert_eq!(send(&edge, "nobody.example.com", "/", 2).await?, [404; 2]);

    wait_stored(&s.pool, "shop.example.com", [52, 40, 0, 7, 5, 0, 0]).await?;
    wait_stored(&s.pool, "down.example.com", [3, 0, 0, 0, 3, 3, 0]).await?;
    let hosts: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT host FROM traffic_windows ORDER BY host")
            .fetch_all(&s.pool)
            .await?;
    assert_eq!(
        hosts,
        [
            ("down.example.com".to_string(),),
            ("shop.example.com".to_string(),)
        ]
    );

    // The queries the health checks and the dashboard use agree.
    let totals = traffic::domain_totals(&s.pool, shop, since).await?;
    assert_eq!(
        (
            totals.requests,
            totals.status_2xx,
            totals.status_4xx,
            totals.status_5xx
        ),
        (52, 40, 7, 5)
    );
    assert!(totals.windows >= 1);
    let down_totals = traffic::domain_totals(&s.pool, down, since).await?;
    assert_eq!(
        (down_totals.requests, down_totals.upstream_connect_failures),
        (3, 3)
    );
    let per_edge = traffic::edges_recent(&s.pool, since).await?;
    assert_eq!(per_edge.len(), 1);
    let TrafficTotals {
        requests,
        status_5xx,
        upstream_connect_failures,
        ..
    } = per_edge[0].1;
    assert_eq!(
        (requests, status_5xx, upstream_connect_failures),
        (55, 8, 3)
    );
    assert_eq!(
        traffic::edge_totals(&s.pool, per_edge[0].0, since)
            .await?
            .requests,
        55
    );
    let series = traffic::domain_series(&s.pool, shop, since, 3600).await?;
    assert_eq!(series.iter().map(|p| p.requests).sum::<i64>(), 52);
    assert_eq!(series.iter().map(|p| p.errors_5xx).sum::<i64>(), 5);
    // Loopback answers fast: the 95th percentile is in a bounded bucket.
    assert!(
        series.iter().all(|p| p.p95_ms_estimate.is_some()),
        "{series:?}"
    );
    Ok(())
}

#[tokio::test]
async fn windows_counted_while_the_control_plane_is_down_arrive_when_it_returns()
-> anyhow::Result<()> {
    let mut s = setup().await?;
    let base = s.cp.base();
    let upstream = status_upstream().await?;
    add_domain(&base, &s.key, "shop.example.com", upstream).await?;
    let edge = edge(&s, 1).await?;

    assert_eq!(
        send(&edge, "shop.example.com", "/status/200", 10).await?,
        [200; 10]
    );
    wait_stored(&s.pool, "shop.example.com", [10, 10, 0, 0, 0, 0, 0]).await?;

    s.cp.kill();
    // The edge keeps serving from its table.
    assert_eq!(
        send(&edge, "shop.example.com", "/status/200", 20).await?,
        [200; 20]
    );
    assert_eq!(
        send(&edge, "shop.example.com", "/status/404", 4).await?,
        [404; 4]
    );
    // Wait until the edge has tried to ship them and failed at least once.
    eventually(
        60,
        "a failed report while the control plane is down",
        || async {
            let failures = edge
                .metric("portico_edge_report_failures_total")
                .await
                .ok()?;
            (failures >= 1.0).then_some(())
        },
    )
    .await?;
    s.cp.restart().await?;
    wait_stored(&s.pool, "shop.example.com", [34, 30, 0, 4, 0, 0, 0]).await?;
    assert_eq!(
        edge.metric("portico_edge_dropped_reports_total").await?,
        0.0
    );
    assert_eq!(
        edge.metric("portico_edge_report_events_dropped_total")
            .await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn a_gracefully_stopped_edge_flushes_its_open_windows() -> anyhow::Result<()> {
    let s = setup().await?;
    let upstream = status_upstream().await?;
    add_domain(&s.cp.base(), &s.key, "shop.example.com", upstream).await?;
    let edge = edge(&s, 1).await?;
    assert_eq!(
        send(&edge, "shop.example.com", "/status/200", 6).await?,
        [200; 6]
    );
    // Stopped before the window can close: only the shutdown flush ships it.
    edge.signal("TERM")?;
    wait_stored(&s.pool, "shop.example.com", [6, 6, 0, 0, 0, 0, 0]).await?;
    Ok(())
}

/// The status code a report declaring a 5 MiB body gets (the body is never sent).
async fn oversized_status(addr: SocketAddr, token: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /internal/v1/edge/reports HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        5 * 1024 * 1024
    );
    conn.write_all(head.as_bytes()).await?;
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    Ok(text.split(' ').nth(1).unwrap_or_default().to_string())
}

fn window(host: &str, start_unix: i64) -> Value {
    json!({"host": host, "start_unix": start_unix, "secs": 10, "requests": 1, "status_2xx": 1,
           "latency_buckets_ms": [[5, 1]]})
}

#[tokio::test]
async fn bad_reports_get_a_problem_naming_the_field() -> anyhow::Result<()> {
    let s = setup().await?;
    let url = format!("{}/internal/v1/edge/reports", s.cp.base());
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let post = |body: Value| http.post(&url).bearer_auth(&s.token).json(&body).send();

    let ok = json!({"v": 1, "edge_id": "edge-r", "windows": [window("a.example.com", now - 20)], "dropped": 2});
    assert_eq!(post(ok).await?.status(), 202);
    let cases = [
        (json!({"v": 9, "edge_id": "edge-r", "windows": []}), "v"),
        (
            json!({"v": 1, "edge_id": "someone-else", "windows": []}),
            "edge_id",
        ),
        (
            json!({"v": 1, "edge_id": "edge-r", "windows": (0..5001).map(|i| window(&format!("h{i}.example.com"), now)).collect::<Vec<_>>()}),
            "windows",
        ),
        (
            json!({"v": 1, "edge_id": "edge-r", "windows": [window("a.example.com", now + 7200)]}),
            "windows[0].start_unix",
        ),
        (
            json!({"v": 1, "edge_id": "edge-r", "windows": [window("a.example.com", now - 30 * 86_400)]}),
            "windows[0].start_unix",
        ),
        (
            json!({"v": 1, "edge_id": "edge-r", "windows": [{"host": "a.example.com", "start_unix": now, "secs": 0}]}),
            "windows[0].secs",
        ),
    ];
    for (body, field) in cases {
        let resp = post(body).await?;
        assert_eq!(resp.status(), 422, "{field}");
        let problem: Value = resp.json().await?;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let resp = http
        .post(&url)
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    // Over 4 MiB: refused from the declared length, before the body is read
    // (a client still writing it would see the connection close).
    assert_eq!(oversized_status(s.cp.addr, &s.token).await?, "413");
    let resp = http
        .post(&url)
        .json(&json!({"v": 1, "edge_id": "edge-r"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);

    // The accepted one is stored by the worker, with the edge's drop count.
    wait_stored(&s.pool, "a.example.com", [1, 1, 0, 0, 0, 0, 0]).await?;
    let dropped: (Option<i64>,) = sqlx::query_as(
        "SELECT (counters->>'report_windows_dropped')::bigint FROM edges WHERE name = 'edge-r'",
    )
    .fetch_one(&s.pool)
    .await?;
    assert_eq!(dropped.0, Some(2));
    Ok(())
}

#[tokio::test]
async fn ingesting_again_overwrites_and_pruning_goes_in_batches() -> anyhow::Result<()> {
    use portico_control_plane::jobs::ingest::{IngestReport, ingest};
    // The scheduler's own pruning (first tick at start-up) stays out of the way.
    let s = setup_with(&[("PORTICO_SCHEDULER_TICK_SECS", "3600")]).await?;
    let edge_id: (uuid::Uuid,) = sqlx::query_as("SELECT id FROM edges WHERE name = 'edge-r'")
        .fetch_one(&s.pool)
        .await?;
    let now = chrono::Utc::now().timestamp();
    let old = now - 10 * 86_400;
    let report = |requests: u64| -> anyhow::Result<IngestReport> {
        let windows = [now - 20, old, old - 10, old - 20, old - 30, old - 40]
            .iter()
            .map(|start| {
                let mut w = window("a.example.com", *start);
                w["requests"] = json!(requests);
                w
            })
            .collect::<Vec<_>>();
        let report = json!({"v": 1, "edge_id": "edge-r", "windows": windows, "dropped": 0});
        Ok(IngestReport {
            edge_id: edge_id.0,
            report: serde_json::from_value(report)?,
        })
    };
    assert_eq!(ingest(&s.pool, &report(5)?).await?, 6);
    assert_eq!(ingest(&s.pool, &report(7)?).await?, 6);
    let (rows, requests): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(requests)::bigint FROM traffic_windows")
            .fetch_one(&s.pool)
            .await?;
    assert_eq!((rows, requests), (6, 42));

    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let mut pruned = Vec::new();
    loop {
        let n = traffic::prune(&s.pool, week_ago, 2).await?;
        pruned.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(pruned, [2, 2, 1]);
    let left: (i64,) = sqlx::query_as("SELECT count(*) FROM traffic_windows")
        .fetch_one(&s.pool)
        .await?;
    assert_eq!(left.0, 1);
    Ok(())
}
