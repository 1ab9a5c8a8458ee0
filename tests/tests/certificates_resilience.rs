//! Certificates when parts of the system misbehave, end to end against a
//! real Pebble, a real edge and a real `portico-control-plane serve`:
//! - an edge whose config stream lags still answers the CA, by fetching
//!   the one challenge answer it lacks from the control plane (HTTP-01 and
//!   TLS-ALPN-01);
//!
//! What is real and what is shortened is said in each test.

use portico_acme::test_util::verify_chain;
use portico_e2e::edge::echo_upstream;
use portico_e2e::pebble::{Challenge, IssuingCluster, Setup, stored_chain};

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
