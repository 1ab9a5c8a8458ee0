//! Certificates from the local development CA, end to end through a real
//! edge and a real control-plane process: the first HTTPS request to a new
//! verified host gets a certificate on demand; twenty concurrent first
//! handshakes make one order; unknown hosts make none; a host that may not
//! have one is refused fast.

use futures::StreamExt;
use portico_control_plane::db::config::{ConfigKey, publish};
use portico_e2e::cluster::{ControlPlane, register_edge};
use portico_e2e::edge::{TestEdge, echo_upstream, tls_connect};
use portico_e2e::{OPERATOR_TOKEN, eventually, fresh_database};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// Creates a domain and marks it verified (DNS is the verification tests'
/// subject), publishing the change as the verification job does.
async fn verified(
    pool: &sqlx::PgPool,
    base: &str,
    key: &str,
    host: &str,
    up: SocketAddr,
) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/domains"))
        .bearer_auth(key)
        .json(&json!({"hostname": host, "target": up.to_string()}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "create {host}: {}", resp.status());
    sqlx::query("UPDATE domains SET status = 'active', dns_checked_at = now() WHERE hostname = $1")
        .bind(host)
        .execute(pool)
        .await?;
    let mut tx = pool.begin().await?;
    publish(&mut tx, &[ConfigKey::Host(host.to_string())]).await?;
    tx.commit().await?;
    Ok(())
}

struct Setup {
    _cp: ControlPlane,
    edge: TestEdge,
    pool: sqlx::PgPool,
    base: String,
    key: String,
    root_pem: String,
    up: SocketAddr,
}

async fn setup() -> anyhow::Result<Setup> {
    setup_with(&[]).await
}

async fn setup_with(extra: &[(&str, &str)]) -> anyhow::Result<Setup> {
    let db = fresh_database().await?;
    let ca_dir =
        std::env::temp_dir().join(format!("portico-dev-ca-{}", uuid::Uuid::now_v7().simple()));
    let ca_dir_s = ca_dir.display().to_string();
    let mut env = vec![
        ("PORTICO_ISSUER", "dev"),
        ("PORTICO_DEV_CA_DIR", ca_dir_s.as_str()),
        ("PORTICO_WORKER_IN_SERVE", "true"),
    ];
    env.extend_from_slice(extra);
    let cp = ControlPlane::start(&db, &env).await?;
    let base = cp.base();
    let key = portico_e2e::tenant_key(&base).await?;
    let token = register_edge(&base, "tls-1").await?;
    let dir = std::env::temp_dir().join(format!(
        "portico-edge-tls-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let args = [
        "--control-plane",
        &base,
        "--token",
        &token,
        "--name",
        "tls-1",
    ]
    .map(String::from);
    let edge = TestEdge::start_in(&dir, &args).await?;
    let pool = sqlx::PgPool::connect(&db).await?;
    let root_pem = std::fs::read_to_string(ca_dir.join("dev-ca.pem"))?;
    Ok(Setup {
        _cp: cp,
        edge,
        pool,
        base,
        key,
        root_pem,
        up: echo_upstream("up").await?,
    })
}

fn client(s: &Setup, host: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.root_pem.as_bytes())?)
        .resolve(host, s.edge.https)
        .timeout(Duration::from_secs(20))
        .build()?)
}

async fn orders(pool: &sqlx::PgPool, host: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM acme_events WHERE hostname = $1 AND kind = 'order'",
    )
    .bind(host)
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn the_first_https_request_to_a_verified_host_gets_a_certificate_on_demand()
-> anyhow::Result<()> {
    let s = setup().await?;
    let host = "shop.example.com";
    verified(&s.pool, &s.base, &s.key, host, s.up).await?;
    let url = format!("https://{host}:{}/", s.edge.https.port());
    // The edge may take a moment to learn that the host is verified.
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = client(&s, host)?.get(&url).send().await {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
    }
    let resp = answer.expect("the first HTTPS request succeeded");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["upstream"], "up");
    // Later requests reuse it: still one order.
    for _ in 0..3 {
        assert_eq!(client(&s, host)?.get(&url).send().await?.status(), 200);
    }
    assert_eq!(orders(&s.pool, host).await?, 1);
    let events: Value = reqwest::Client::new()
        .get(format!("{}/v1/events", s.base))
        .bearer_auth(&s.key)
        .send()
        .await?
        .json()
        .await?;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"certificate.issued"), "{types:?}");
    let (_, tls) = sqlx::query_as::<_, (String, String)>(
        "SELECT hostname, tls_status FROM domains WHERE hostname = $1",
    )
    .bind(host)
    .fetch_one(&s.pool)
    .await?;
    assert_eq!(tls, "active");

    // The API shows the certificate, never its key; a forced renewal of a
    // fresh certificate is refused; operators see the order counts.
    let api = reqwest::Client::new();
    let page: Value = api
        .get(format!("{}/v1/domains", s.base))
        .bearer_auth(&s.key)
        .send()
        .await?
        .json()
        .await?;
    let id = page["items"][0]["id"].as_str().unwrap().to_string();
    let cert: Value = api
        .get(format!("{}/v1/domains/{id}/certificate", s.base))
        .bearer_auth(&s.key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (cert["status"].as_str(), cert["current"]["issuer"].as_str()),
        (Some("active"), Some("dev-ca"))
    );
    assert_eq!(cert["current"]["names"], json!([host]));
    assert_eq!(cert["order"]["status"], "done");
    assert!(!cert.to_string().contains("PRIVATE KEY"));
    let resp = api
        .post(format!("{}/v1/domains/{id}/certificate/renew", s.base))
        .bearer_auth(&s.key)
        .send()
        .await?;
    assert_eq!(resp.status(), 409);
    let ops: Value = api
        .get(format!("{}/v1/ops/acme", s.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(ops["orders"]["done"], 1, "{ops}");
    assert_eq!(ops["directories"]["dev-ca"]["orders_3h"], 1, "{ops}");
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_first_handshakes_make_one_order_and_unknown_hosts_none()
-> anyhow::Result<()> {
    let s = setup().await?;
    let host = "burst.example.com";
    verified(&s.pool, &s.base, &s.key, host, s.up).await?;
    // Wait until the edge knows the host may get a certificate on demand.
    eventually(20, "the edge to get the host", || async {
        (s.edge.metric("portico_edge_hosts").await.ok()? >= 1.0).then_some(())
    })
    .await?;
    let url = format!("https://{host}:{}/", s.edge.https.port());
    let results = futures::stream::iter(0..20)
        .map(|_| {
            let (c, url) = (client(&s, host), url.clone());
            async move {
                c?.get(&url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    assert_eq!(ok, 20, "{results:?}");
    assert_eq!(
        orders(&s.pool, host).await?,
        1,
        "one order for twenty first handshakes"
    );

    // Unknown names: the gate refuses them without asking anyone.
    let failed = futures::stream::iter(0..1000)
        .map(|i| {
            let addr = s.edge.https;
            async move {
                tls_connect(None, addr, &format!("scan-{i}.unknown-{i}.example"), &[])
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(50)
        .filter(|refused| std::future::ready(*refused))
        .count()
        .await;
    assert_eq!(failed, 1000, "every unknown-host handshake is refused");
    let (events, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM acme_events WHERE hostname LIKE 'scan-%'),
                (SELECT count(*) FROM certificate_orders o JOIN domains d ON d.id = o.domain_id WHERE d.hostname LIKE 'scan-%')",
    )
    .fetch_one(&s.pool)
    .await?;
    assert_eq!((events, rows), (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_host_that_is_not_verified_is_refused_fast() -> anyhow::Result<()> {
    let s = setup().await?;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/domains", s.base))
        .bearer_auth(&s.key)
        .json(&json!({"hostname": "pending.example.com", "target": s.up.to_string()}))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    eventually(20, "the edge to get the host", || async {
        (s.edge.metric("portico_edge_hosts").await.ok()? >= 1.0).then_some(())
    })
    .await?;
    let url = format!("https://pending.example.com:{}/", s.edge.https.port());
    assert!(
        client(&s, "pending.example.com")?
            .get(&url)
            .send()
            .await
            .is_err()
    );
    assert_eq!(orders(&s.pool, "pending.example.com").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_tenant_over_its_on_demand_quota_is_refused_without_an_order() -> anyhow::Result<()> {
    let s = setup_with(&[("PORTICO_ON_DEMAND_PER_TENANT_HOUR", "1")]).await?;
    for host in ["one.example.com", "two.example.com"] {
        verified(&s.pool, &s.base, &s.key, host, s.up).await?;
    }
    eventually(20, "the edge to get both hosts", || async {
        (s.edge.metric("portico_edge_hosts").await.ok()? >= 2.0).then_some(())
    })
    .await?;
    let get = |host: &'static str| {
        let url = format!("https://{host}:{}/", s.edge.https.port());
        let c = client(&s, host);
        async move { c?.get(&url).send().await.map_err(anyhow::Error::from) }
    };
    let first = eventually(20, "the first host's certificate", || async {
        get("one.example.com").await.ok()
    })
    .await?;
    assert_eq!(first.status(), 200);
    assert!(
        get("two.example.com").await.is_err(),
        "over the quota: the handshake fails"
    );
    assert_eq!(orders(&s.pool, "two.example.com").await?, 0);
    Ok(())
}
