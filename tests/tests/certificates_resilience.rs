//! Certificates when parts of the system misbehave, end to end against a
//! real Pebble, a real edge and a real `portico-control-plane serve`:
//! - an edge whose config stream lags still answers the CA, by fetching
//!   the one challenge answer it lacks from the control plane (HTTP-01 and
//!   TLS-ALPN-01);
//! - a primary CA that cannot even be reached does not keep the fallback
//!   CA from issuing, after the configured number of failures;
//!
//! What is real and what is shortened is said in each test.

use portico_acme::test_util::verify_chain;
use portico_e2e::edge::echo_upstream;
use portico_e2e::pebble::{Challenge, IssuingCluster, Setup, stored_chain};
use reqwest::Method;

#[tokio::test]
async fn http01_a_lagging_edge_fetches_the_answer_from_the_control_plane() -> anyhow::Result<()> {
    lagging_edge_gets_its_certificate(Challenge::Http01).await
}

#[tokio::test]
async fn tls_alpn01_a_lagging_edge_fetches_the_answer_from_the_control_plane() -> anyhow::Result<()>
{
    lagging_edge_gets_its_certificate(Challenge::TlsAlpn01).await
}

/// Real: Pebble validating against the edge, the control plane publishing
/// the answer and waiting for acknowledgements, the edge's fetch. The lag
/// is made by freezing the edge's open connections to the control plane
/// (its config stream delivers nothing more, but stays open) while new
/// connections pass. Shortened: the acknowledgement wait (10 s -> 1 s,
/// `PORTICO_CHALLENGE_ACK_WAIT_MS`).
async fn lagging_edge_gets_its_certificate(challenge: Challenge) -> anyhow::Result<()> {
    let setup = Setup {
        env: &[("PORTICO_CHALLENGE_ACK_WAIT_MS", "1000")],
        ..Setup::default()
    };
    let c = IssuingCluster::start_with(challenge, setup).await?;
    let host = "lagging.example.com";
    c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;
    let version = c.edge.metric("portico_edge_snapshot_version").await?;
    assert!(version > 0.0);

    c.relay.stall();
    let root = c.issuing_root().await?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let resp = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(resp.status(), 200);

    let chain = stored_chain(&c, host)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stored certificate"))?;
    verify_chain(&chain, &root, host)?;
    assert_eq!(c.orders_at_ca(host).await?, 1);
    // The edge's table never moved past the freeze: the answer (and the
    // certificate, through the on-demand reply) came by other requests.
    assert_eq!(
        c.edge.metric("portico_edge_snapshot_version").await?,
        version,
        "the config stream delivered nothing after the freeze"
    );
    let found = c
        .edge
        .metric("portico_edge_challenge_fetches_total{outcome=\"found\"}")
        .await?;
    assert!(found >= 1.0, "the answer was fetched ({found})");
    Ok(())
}

/// Real: the control plane's issuer loop against a primary directory on a
/// port nothing listens on (its account cannot be created) and Pebble as
/// the fallback, issuance and validation through the edge. Shortened: the
/// backoff between attempts (a minute and more -> made due at once, after
/// checking it was set), and the failures before the fallback (3 -> 2).
#[tokio::test]
async fn an_unreachable_primary_ca_falls_back_to_the_second_directory() -> anyhow::Result<()> {
    let setup = Setup {
        env: &[("PORTICO_ACME_FALLBACK_AFTER", "2")],
        unreachable_primary: true,
        ..Setup::default()
    };
    let c = IssuingCluster::start_with(Challenge::Http01, setup).await?;
    let host = "fallback.example.com";
    let domain = c
        .add_domain(host, echo_upstream("up").await?, false)
        .await?;
    c.activate(host).await?;
    let id: uuid::Uuid = domain["id"].as_str().unwrap_or_default().parse()?;
    let mut tx = c.pool.begin().await?;
    portico_control_plane::db::orders::request(&mut tx, id, "new").await?;
    tx.commit().await?;

    let deferrals = c.recover(1).await?;
    assert_eq!(
        deferrals.len(),
        2,
        "two failures before the fallback: {deferrals:?}"
    );
    for (_, error, backed_off) in &deferrals {
        assert!(
            error.contains("127.0.0.1") && error.contains("unavailable"),
            "{error}"
        );
        assert!(backed_off, "a failed attempt backs off: {error}");
    }
    let fallback = c.pebble.directory_url.clone();
    let by_kind: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT directory_url, kind, count(*) FROM acme_events WHERE hostname = $1
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(host)
    .fetch_all(&c.pool)
    .await?;
    let primary_errors = by_kind
        .iter()
        .filter(|(d, k, _)| *d != fallback && k == "error")
        .map(|(_, _, n)| n)
        .sum::<i64>();
    assert_eq!(primary_errors, 2, "{by_kind:?}");
    assert!(
        by_kind.contains(&(fallback.clone(), "order".into(), 1))
            && by_kind.contains(&(fallback.clone(), "issued".into(), 1)),
        "one order at the fallback: {by_kind:?}"
    );

    let root = c.issuing_root().await?;
    let chain = stored_chain(&c, host)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stored certificate"))?;
    verify_chain(&chain, &root, host)?;
    let (status, cert) = c
        .api(Method::GET, &format!("/v1/domains/{id}/certificate"), None)
        .await?;
    assert_eq!(status, 200, "{cert}");
    assert_eq!(cert["current"]["issuer"], fallback.as_str(), "{cert}");
    // The edge serves it.
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let resp = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}
