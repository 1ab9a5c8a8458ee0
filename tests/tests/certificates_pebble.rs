//! Certificates from a real ACME CA (Pebble), end to end through a real edge
//! and a real `portico-control-plane serve` process: the first HTTPS
//! request to a verified host gets a certificate on demand, by HTTP-01 and
//! by TLS-ALPN-01, both answered by the edge itself; a domain that DNS
//! verification turns active gets its certificate before anyone asks;
//! twenty concurrent first handshakes cost the CA one order; a thousand
//! handshakes for unknown names cost it nothing.

use futures::StreamExt;
use portico_acme::test_util::verify_chain;
use portico_e2e::dns_server::{TestDns, TestRecord};
use portico_e2e::edge::{echo_upstream, tls_connect};
use portico_e2e::pebble::{
    Challenge, IssuingCluster, eventually, leaf_der, peer_certificate, stored_chain,
};
use reqwest::Method;
use serde_json::Value;

async fn event_types(c: &IssuingCluster) -> anyhow::Result<Vec<String>> {
    let (status, page) = c.api(Method::GET, "/v1/events?limit=200", None).await?;
    anyhow::ensure!(status == 200, "GET /v1/events: {status} {page}");
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect())
}

/// The first HTTPS request to `host`, then a second on a new connection:
/// both answered by the upstream with Pebble's certificate, the same one,
/// which is the stored one. Returns Pebble's root.
async fn first_request_gets_a_certificate(
    c: &IssuingCluster,
    host: &str,
) -> anyhow::Result<String> {
    let root = c.issuing_root().await?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let first = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(first.status(), 200);
    let served = peer_certificate(&first)?;
    let body: Value = first.json().await?;
    assert_eq!(body["upstream"], "up");

    let second = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(second.status(), 200);
    assert_eq!(peer_certificate(&second)?, served, "the second reuses it");

    let chain = stored_chain(c, host).await?.expect("a stored certificate");
    verify_chain(&chain, &root, host)?;
    assert_eq!(leaf_der(&chain)?, served, "the edge serves the stored one");
    assert_eq!(c.orders_at_ca(host).await?, 1);
    Ok(root)
}

#[tokio::test]
async fn http01_the_first_request_to_a_verified_host_gets_a_certificate_on_demand()
-> anyhow::Result<()> {
    let c = IssuingCluster::start(Challenge::Http01, &[]).await?;
    let host = "shop.example.com";
    let domain = c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;

    first_request_gets_a_certificate(&c, host).await?;

    assert!(
        event_types(&c)
            .await?
            .contains(&"certificate.issued".to_string())
    );
    let id = domain["id"].as_str().expect("domain id");
    let (status, view) = c
        .api(Method::GET, &format!("/v1/domains/{id}"), None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(view["tls"]["status"], "active", "{view}");
    let asked = c
        .edge
        .metric("portico_edge_on_demand_total{outcome=\"issued\"}")
        .await?;
    assert_eq!(
        asked, 1.0,
        "one on-demand request; the second handshake knew"
    );
    Ok(())
}

#[tokio::test]
async fn tls_alpn01_the_first_request_to_a_verified_host_gets_a_certificate_on_demand()
-> anyhow::Result<()> {
    let c = IssuingCluster::start(Challenge::TlsAlpn01, &[]).await?;
    let host = "alpn.example.com";
    c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;

    first_request_gets_a_certificate(&c, host).await?;

    let answered = c
        .edge
        .metric("portico_edge_handshakes_total{outcome=\"acme_tls_alpn\"}")
        .await?;
    assert!(
        answered >= 1.0,
        "Pebble validated through the edge's TLS-ALPN-01 answer"
    );
    Ok(())
}

#[tokio::test]
async fn a_domain_verified_by_dns_gets_its_certificate_before_any_request() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    let ns = dns.addr().to_string();
    let c = IssuingCluster::start(
        Challenge::Http01,
        &[
            ("PORTICO_DNS_NAMESERVERS", &ns),
            ("PORTICO_DNS_TIMEOUT_MS", "400"),
        ],
    )
    .await?;
    let host = "early.example.com";
    // On-demand off: the certificate can only come ahead of time.
    let domain = c
        .add_domain(host, echo_upstream("up").await?, false)
        .await?;
    let id = domain["id"].as_str().expect("domain id");
    let txt = domain["verification"]["records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["type"] == "TXT")
        .expect("a TXT record to add");
    dns.add(
        txt["name"].as_str().expect("name"),
        TestRecord::Txt(txt["value"].as_str().expect("value").into()),
    );
    dns.add(host, TestRecord::Cname("edge.portico.test".into()));
    dns.add("edge.portico.test", TestRecord::A("127.0.0.1".parse()?));

    let (status, checked) = c
        .api(Method::POST, &format!("/v1/domains/{id}/verify"), None)
        .await?;
    assert_eq!(
        (status, checked["status"].as_str()),
        (200, Some("active")),
        "{checked}"
    );

    let chain = eventually(30, "the certificate to be stored", || async {
        stored_chain(&c, host).await.ok().flatten()
    })
    .await?;
    c.wait_edge_current().await?;
    let root = c.issuing_root().await?;
    verify_chain(&chain, &root, host)?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let resp = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(peer_certificate(&resp)?, leaf_der(&chain)?);
    assert_eq!(c.orders_at_ca(host).await?, 1);
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM certificate_orders WHERE domain_id = $1::uuid")
            .bind(id)
            .fetch_one(&c.pool)
            .await?;
    assert_eq!(reason, "new", "ordered by verification, not by a request");
    let known = c
        .edge
        .metric("portico_edge_handshakes_total{outcome=\"known\"}")
        .await?;
    assert_eq!(known, 1.0, "the edge had it from the config stream");
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_first_handshakes_make_one_order() -> anyhow::Result<()> {
    let c = IssuingCluster::start(Challenge::Http01, &[]).await?;
    let host = "burst.example.com";
    c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;
    let root = c.issuing_root().await?;
    let addr = c.edge.https;
    let handshake = || async {
        tls_connect(Some(&root), addr, host, &[b"http/1.1"])
            .await
            .map(|_| ())
    };

    // A handshake that gave up waiting for the certificate is retried once.
    let outcomes = futures::future::join_all((0..20).map(|_| async {
        match handshake().await {
            Ok(()) => Ok(false),
            Err(_) => handshake().await.map(|()| true),
        }
    }))
    .await;
    let mut retried = 0;
    for outcome in outcomes {
        retried += usize::from(outcome?);
    }

    assert_eq!(
        c.orders_at_ca(host).await?,
        1,
        "{retried} handshakes were retried"
    );
    let issued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM acme_events WHERE hostname = $1 AND kind = 'issued'",
    )
    .bind(host)
    .fetch_one(&c.pool)
    .await?;
    assert_eq!(issued, 1);
    Ok(())
}

#[tokio::test]
async fn a_thousand_handshakes_for_unknown_names_order_nothing() -> anyhow::Result<()> {
    let c = IssuingCluster::start(Challenge::Http01, &[]).await?;
    // Known but not verified: no certificate either.
    c.add_domain("pending.example.com", echo_upstream("up").await?, true)
        .await?;
    c.wait_edge_current().await?;
    let root = c.issuing_root().await?;
    let addr = c.edge.https;
    let names = (0..1000)
        .map(|i| format!("h{i}-{}.example.net", uuid::Uuid::new_v4().simple()))
        .chain((0..20).map(|_| "pending.example.com".to_string()));

    let succeeded = futures::stream::iter(names)
        .map(|name| {
            let root = root.clone();
            async move {
                tls_connect(Some(&root), addr, &name, &[b"http/1.1"])
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(50)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;

    assert_eq!(succeeded, 0, "no name got a certificate");
    let pool = &c.pool;
    let count =
        |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await };
    assert_eq!(count("SELECT count(*) FROM acme_events").await?, 0);
    assert_eq!(count("SELECT count(*) FROM certificate_orders").await?, 0);
    let unknown = c
        .edge
        .metric("portico_edge_handshakes_total{outcome=\"unknown\"}")
        .await?;
    assert_eq!(unknown, 1000.0);
    Ok(())
}
