//! Config distribution with real processes: control-plane replicas
//! (`portico-control-plane serve`) and edges (`portico-edge`) against one
//! Postgres. Domains reach every edge whichever replica they were created
//! on, in order; edges keep serving through control-plane and Postgres
//! outages and across their own restarts; a poisoned change is refused by
//! every edge; a wrong token gets nothing.

use futures::StreamExt;
use portico_e2e::cluster::{ControlPlane, PrivatePostgres, create_database, register_edge};
use portico_e2e::config_stream::store_certificate;
use portico_e2e::edge::{TestCa, TestEdge, echo_upstream, https_client};
use portico_e2e::{OPERATOR_TOKEN, eventually, fresh_database};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Which upstream answered `host` through the edge's HTTP port, or `None`
/// (not configured, or the edge is down).
async fn served_by(edge: &TestEdge, host: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/", edge.http))
        .header("Host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    body["upstream"].as_str().map(str::to_string)
}

async fn wait_served(edges: &[&TestEdge], host: &str, upstream: &str) -> anyhow::Result<()> {
    for (i, e) in edges.iter().enumerate() {
        eventually(
            30,
            &format!("edge {i} to serve {host} from {upstream}"),
            || async { (served_by(e, host).await.as_deref() == Some(upstream)).then_some(()) },
        )
        .await?;
    }
    Ok(())
}

async fn api(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn add(base: &str, key: &str, host: &str, target: SocketAddr) -> anyhow::Result<String> {
    let (status, d) = api(
        base,
        key,
        reqwest::Method::POST,
        "/v1/domains",
        Some(json!({"hostname": host, "target": target.to_string()})),
    )
    .await?;
    anyhow::ensure!(status == 201, "create {host}: {status} {d}");
    Ok(d["id"].as_str().unwrap().to_string())
}

async fn ops_edges(base: &str) -> anyhow::Result<Value> {
    Ok(reqwest::Client::new()
        .get(format!("{base}/v1/ops/edges"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?)
}

/// Starts an edge that follows `base` with `token`.
async fn edge(base: &str, token: &str, name: &str) -> anyhow::Result<TestEdge> {
    let dir = std::env::temp_dir().join(format!(
        "portico-edge-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    TestEdge::start_in(&dir, &edge_args(base, token, name)).await
}

fn edge_args(base: &str, token: &str, name: &str) -> Vec<String> {
    ["--control-plane", base, "--token", token, "--name", name]
        .map(String::from)
        .to_vec()
}

/// The hosts (hostname → targets) an edge persisted, once it has `version`.
async fn persisted(dir: &Path, version: u64) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let path = dir.join("snapshot.json");
    eventually(
        30,
        &format!("{} to reach version {version}", path.display()),
        || async {
            let bytes = std::fs::read(&path).ok()?;
            let Ok(portico_protocol::Frame::Snapshot(s)) = portico_protocol::decode_frame(&bytes)
            else {
                return None;
            };
            (s.version.0 == version).then(|| {
                s.hosts
                    .into_iter()
                    .map(|h| (h.hostname, h.targets))
                    .collect()
            })
        },
    )
    .await
}

#[tokio::test]
async fn two_replicas_feed_three_edges_in_order_and_edges_outlive_the_control_plane()
-> anyhow::Result<()> {
    let db = fresh_database().await?;
    let mut cps = [
        ControlPlane::start(&db, &[]).await?,
        ControlPlane::start(&db, &[]).await?,
    ];
    let bases = [cps[0].base(), cps[1].base()];
    let key = portico_e2e::tenant_key(&bases[0]).await?;
    let (u1, u2) = (echo_upstream("u1").await?, echo_upstream("u2").await?);
    let mut edges = Vec::new();
    for i in 0..3 {
        let name = format!("edge-{i}");
        let token = register_edge(&bases[0], &name).await?;
        edges.push((edge(&bases[i % 2], &token, &name).await?, token, name));
    }

    // Created through replica 1, served by all three (two follow replica 2).
    add(&bases[0], &key, "shop.example.com", u1).await?;
    let all: Vec<&TestEdge> = edges.iter().map(|(e, _, _)| e).collect();
    wait_served(&all, "shop.example.com", "u1").await?;

    // 1,000 rapid changes spread over both replicas: 300 creates, 300
    // updates, 150 deletes, 250 creates.
    let ids: Vec<String> = futures::stream::iter(0..300)
        .map(|i| {
            let (b, k) = (bases[i % 2].clone(), key.clone());
            async move { add(&b, &k, &format!("h{i}.example.com"), u1).await }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let results = futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let (b, k) = (bases[(i + 1) % 2].clone(), key.clone());
            async move {
                api(
                    &b,
                    &k,
                    reqwest::Method::PATCH,
                    &format!("/v1/domains/{id}"),
                    Some(json!({"target": u2.to_string()})),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        anyhow::ensure!(r?.0 == 200);
    }
    let results = futures::stream::iter(ids[..150].iter().enumerate())
        .map(|(i, id)| {
            let (b, k) = (bases[i % 2].clone(), key.clone());
            async move {
                api(
                    &b,
                    &k,
                    reqwest::Method::DELETE,
                    &format!("/v1/domains/{id}"),
                    None,
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        anyhow::ensure!(r?.0 == 204);
    }
    let results = futures::stream::iter(300..550)
        .map(|i| {
            let (b, k) = (bases[i % 2].clone(), key.clone());
            async move { add(&b, &k, &format!("h{i}.example.com"), u1).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r?;
    }

    // Every edge ends at the database's version with the database's hosts.
    let pool = sqlx::PgPool::connect(&db).await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM config_state")
        .fetch_one(&pool)
        .await?;
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as("SELECT hostname, targets FROM domains")
        .fetch_all(&pool)
        .await?;
    let expected: BTreeMap<String, Vec<String>> = rows.into_iter().collect();
    assert_eq!(expected.len(), 1 + 300 - 150 + 250);
    for (e, _, name) in &edges {
        let got = persisted(&e.data_dir, version as u64).await?;
        assert_eq!(got, expected, "{name} differs from the database");
    }
    let ops = ops_edges(&bases[1]).await?;
    for e in ops["edges"].as_array().unwrap() {
        eventually(15, "lag 0 in /v1/ops/edges", || async {
            let ops = ops_edges(&bases[1]).await.ok()?;
            ops["edges"]
                .as_array()?
                .iter()
                .all(|e| e["lag"] == 0)
                .then_some(())
        })
        .await?;
        assert_eq!(e["status"], "up");
    }
    assert_eq!(
        served_by(all[2], "h200.example.com").await.as_deref(),
        Some("u2")
    );
    assert_eq!(
        served_by(all[1], "h500.example.com").await.as_deref(),
        Some("u1")
    );
    assert_eq!(served_by(all[0], "h10.example.com").await, None, "deleted");

    // Both control planes die: every edge keeps serving every host.
    for cp in &mut cps {
        cp.kill();
    }
    for e in &all {
        for host in ["shop.example.com", "h160.example.com", "h549.example.com"] {
            assert!(
                served_by(e, host).await.is_some(),
                "{host} not served after the control plane died"
            );
        }
    }
    // An edge restarted while the control plane is down serves from disk.
    let (mut e0, token0, name0) = edges.remove(0);
    let dir = e0.data_dir.clone();
    e0.kill();
    let e0 = TestEdge::start_in(&dir, &edge_args(&bases[0], &token0, &name0)).await?;
    assert_eq!(
        served_by(&e0, "h549.example.com").await.as_deref(),
        Some("u1")
    );
    assert_eq!(e0.admin_get("/readyz").await?.0, 200);

    // The control planes come back: edges reconnect and take new changes.
    for cp in &mut cps {
        cp.restart().await?;
    }
    add(&bases[1], &key, "after.example.com", u2).await?;
    let all: Vec<&TestEdge> = std::iter::once(&e0)
        .chain(edges.iter().map(|(e, _, _)| e))
        .collect();
    wait_served(&all, "after.example.com", "u2").await?;
    Ok(())
}

#[tokio::test]
async fn edges_serve_through_a_postgres_outage_and_resume_with_a_delta() -> anyhow::Result<()> {
    let pg = PrivatePostgres::start()?;
    create_database(&pg.url("postgres"), "portico").await?;
    let cp =
        ControlPlane::start(&pg.url("portico"), &[("PORTICO_DB_MAX_CONNECTIONS", "5")]).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    let up = echo_upstream("up").await?;
    add(&cp.base(), &key, "before.example.com", up).await?;
    let e1 = edge(
        &cp.base(),
        &register_edge(&cp.base(), "pg-1").await?,
        "pg-1",
    )
    .await?;
    let e2 = edge(
        &cp.base(),
        &register_edge(&cp.base(), "pg-2").await?,
        "pg-2",
    )
    .await?;
    wait_served(&[&e1, &e2], "before.example.com", "up").await?;
    let snapshots_before = e1
        .metric("portico_edge_config_snapshots_applied_total")
        .await?;
    assert!(snapshots_before >= 1.0, "the first config was a snapshot");

    pg.stop_server()?;
    let ready = || async {
        reqwest::get(format!("{}/readyz", cp.base()))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    eventually(60, "the control plane to report not ready", || async {
        (ready().await == Some(503)).then_some(())
    })
    .await?;
    for e in [&e1, &e2] {
        assert_eq!(
            served_by(e, "before.example.com").await.as_deref(),
            Some("up")
        );
    }

    pg.start_server()?;
    eventually(60, "the control plane to be ready again", || async {
        (ready().await == Some(200)).then_some(())
    })
    .await?;
    eventually(60, "a create to succeed after the outage", || async {
        let (s, _) = api(
            &cp.base(),
            &key,
            reqwest::Method::POST,
            "/v1/domains",
            Some(json!({"hostname": "after.example.com", "target": up.to_string()})),
        )
        .await
        .ok()?;
        (s == 201).then_some(())
    })
    .await?;
    wait_served(&[&e1, &e2], "after.example.com", "up").await?;
    assert_eq!(
        e1.metric("portico_edge_config_snapshots_applied_total")
            .await?,
        snapshots_before,
        "the edge resumed with a delta, not a full resync"
    );
    Ok(())
}

#[tokio::test]
async fn a_poisoned_certificate_is_refused_by_every_edge() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let cp = ControlPlane::start(&db, &[]).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    let up = echo_upstream("up").await?;
    add(&cp.base(), &key, "good.example.com", up).await?;
    add(&cp.base(), &key, "bad.example.com", up).await?;
    let ca = TestCa::new()?;
    store_certificate(&db, "good.example.com", &ca.bundle(&["good.example.com"])?).await?;
    let e1 = edge(&cp.base(), &register_edge(&cp.base(), "p-1").await?, "p-1").await?;
    let e2 = edge(&cp.base(), &register_edge(&cp.base(), "p-2").await?, "p-2").await?;
    for e in [&e1, &e2] {
        let client = https_client(&ca, e, &["good.example.com"])?;
        eventually(30, "HTTPS for good.example.com", || async {
            let r = client
                .get(format!("https://good.example.com:{}/", e.https.port()))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await?;
    }

    // A certificate whose key belongs to another certificate.
    let a = ca.bundle(&["bad.example.com"])?;
    let b = ca.bundle(&["bad.example.com"])?;
    let mut poisoned = a.clone();
    poisoned.key_pem = b.key_pem.clone();
    let poisoned_version = store_certificate(&db, "bad.example.com", &poisoned)
        .await?
        .unwrap();
    add(&cp.base(), &key, "later.example.com", up).await?;

    let rejected = eventually(30, "both edges to report the rejection", || async {
        let ops = ops_edges(&cp.base()).await.ok()?;
        let edges = ops["edges"].as_array()?.clone();
        edges
            .iter()
            .all(|e| {
                e["rejection"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("does not match"))
            })
            .then_some(edges)
    })
    .await?;
    for e in &rejected {
        assert!(
            e["applied_version"].as_u64().unwrap() < poisoned_version,
            "{e}"
        );
        assert!(e["lag"].as_u64().unwrap() > 0);
    }
    for e in [&e1, &e2] {
        let client = https_client(&ca, e, &["good.example.com"])?;
        let r = client
            .get(format!("https://good.example.com:{}/", e.https.port()))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "the last good table keeps serving");
        assert_eq!(
            served_by(e, "later.example.com").await,
            None,
            "nothing past the poison applies"
        );
    }

    // Fixing the record heals every edge with the next delta.
    store_certificate(&db, "bad.example.com", &b).await?;
    wait_served(&[&e1, &e2], "later.example.com", "up").await?;
    eventually(30, "the rejection to clear", || async {
        let ops = ops_edges(&cp.base()).await.ok()?;
        ops["edges"]
            .as_array()?
            .iter()
            .all(|e| e["rejection"].is_null() && e["lag"] == 0)
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_edge_with_a_wrong_token_gets_nothing() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let cp = ControlPlane::start(&db, &[]).await?;
    let key = portico_e2e::tenant_key(&cp.base()).await?;
    add(
        &cp.base(),
        &key,
        "secret.example.com",
        echo_upstream("up").await?,
    )
    .await?;
    let token = register_edge(&cp.base(), "real").await?;
    let wrong = format!(
        "{}{}",
        &token[..token.len() - 4],
        if token.ends_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        }
    );
    let e = edge(&cp.base(), &wrong, "impostor").await?;
    eventually(30, "the impostor to be refused", || async {
        (e.metric("portico_edge_config_stream_reconnects_total")
            .await
            .ok()?
            >= 1.0)
            .then_some(())
    })
    .await?;
    assert_eq!(e.metric("portico_edge_config_stream_connected").await?, 0.0);
    assert_eq!(
        e.admin_get("/readyz").await?.0,
        503,
        "no config ever arrived"
    );
    assert_eq!(served_by(&e, "secret.example.com").await, None);
    let ops = ops_edges(&cp.base()).await?;
    assert_eq!(
        ops["edges"][0]["status"], "never_seen",
        "the real edge never connected"
    );
    Ok(())
}
