//! Certificates when parts of the system misbehave, end to end against a
//! real Pebble, a real edge and a real `portico-control-plane serve`:
//! - an edge whose config stream lags still answers the CA, by fetching
//!   the one challenge answer it lacks from the control plane (HTTP-01 and
//!   TLS-ALPN-01);
//! - a primary CA that cannot even be reached does not keep the fallback
//!   CA from issuing, after the configured number of failures;
//! - a CA that moves a certificate's renewal window (ARI) into the past
//!   gets the certificate renewed, by an order that names the one it
//!   replaces.
//!
//! What is real and what is shortened is said in each test.

use chrono::{Duration as Days, Utc};
use portico_acme::test_util::verify_chain;
use portico_e2e::edge::echo_upstream;
use portico_e2e::pebble::{Challenge, IssuingCluster, Setup, stored_chain};
use portico_e2e::pebble::{eventually, leaf_der};
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

/// Real: Pebble issuing through the edge, the control plane's ARI poller,
/// renewal and `replaces`. Played by the fault proxy in front of Pebble
/// (Pebble 2.4 has no ARI): the CA's renewal information, as RFC 9773
/// describes it. Shortened: the poller's period (60 s -> 200 ms,
/// `PORTICO_ARI_CHECK_MS`), the floor on the CA's `Retry-After` (5 min ->
/// 1 s) and the renewal tick (60 s -> 500 ms).
#[tokio::test]
async fn a_renewal_window_moved_by_the_ca_renews_the_certificate_early() -> anyhow::Result<()> {
    moved_window_renews(true).await
}

/// The same with a CA that advertises ARI but does not reflect `replaces`
/// in the orders it creates: the renewal orders again without it.
#[tokio::test]
async fn a_ca_ignoring_replaces_still_gets_the_renewal() -> anyhow::Result<()> {
    moved_window_renews(false).await
}

async fn moved_window_renews(reflects_replaces: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let usual = (now + Days::days(30), now + Days::days(31));
    let setup = Setup {
        env: &[
            ("PORTICO_ARI_CHECK_MS", "200"),
            ("PORTICO_ARI_MIN_INTERVAL_SECS", "1"),
            ("PORTICO_RENEW_CHECK_MS", "500"),
        ],
        fault_proxy: true,
        ari: Some(usual),
        ..Setup::default()
    };
    let c = IssuingCluster::start_with(Challenge::Http01, setup).await?;
    let proxy = c.fault_proxy.as_ref().expect("started with a fault proxy");
    let host = "ari.example.com";
    let domain = c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;
    let id = domain["id"].as_str().unwrap_or_default().to_string();
    let root = c.issuing_root().await?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    assert_eq!(
        c.https_client(&root, host)?
            .get(&url)
            .send()
            .await?
            .status(),
        200
    );

    // Issued with the CA's usual window, and renewal planned inside it.
    let (_, cert) = c
        .api(Method::GET, &format!("/v1/domains/{id}/certificate"), None)
        .await?;
    let info = &cert["current"]["renewal_info"];
    assert!(info["window_start"].is_string(), "{cert}");
    let renew_at: chrono::DateTime<Utc> = cert["current"]["renew_at"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    assert!(
        renew_at >= usual.0 - Days::seconds(1) && renew_at < usual.1,
        "{renew_at} {usual:?}"
    );
    let first = stored_chain(&c, host).await?.unwrap_or_default();
    let old_id: String = sqlx::query_scalar(
        "SELECT c.ari_id FROM certificates c JOIN domains d ON d.id = c.domain_id WHERE d.hostname = $1",
    )
    .bind(host)
    .fetch_one(&c.pool)
    .await?;

    // An incident: the CA wants this certificate replaced now.
    if !reflects_replaces {
        proxy.drop_replaces();
    }
    proxy.set_ari_window(&old_id, (now - Days::hours(2), now - Days::hours(1)));
    eventually(30, "the certificate to be renewed", || async {
        let chain = stored_chain(&c, host).await.ok()??;
        (chain != first).then_some(())
    })
    .await?;

    let asked = proxy.ari_asked();
    assert!(
        asked.iter().filter(|a| **a == old_id).count() >= 2,
        "asked at issuance and by the poller: {asked:?}"
    );
    let orders = proxy.new_orders();
    assert_eq!(orders[0].get("replaces"), None, "{orders:?}");
    assert_eq!(
        orders[1]["replaces"],
        old_id.as_str(),
        "the renewal names its predecessor"
    );
    if reflects_replaces {
        assert_eq!(orders.len(), 2, "{orders:?}");
    } else {
        assert_eq!(orders.len(), 3, "{orders:?}");
        assert_eq!(orders[2].get("replaces"), None, "ordered again without it");
    }
    let renewed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'certificate.renewed' AND subject_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&c.pool)
    .await?;
    assert_eq!(renewed, 1);
    // The successor has the usual window again: no renewal loop.
    let (_, cert) = c
        .api(Method::GET, &format!("/v1/domains/{id}/certificate"), None)
        .await?;
    let renew_at: chrono::DateTime<Utc> = cert["current"]["renew_at"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    assert!(renew_at > now + Days::days(29), "{cert}");
    // And the edge serves it.
    let chain = stored_chain(&c, host).await?.unwrap_or_default();
    verify_chain(&chain, &root, host)?;
    eventually(10, "the edge to serve the successor", || async {
        let resp = c
            .https_client(&root, host)
            .ok()?
            .get(&url)
            .send()
            .await
            .ok()?;
        let served = portico_e2e::pebble::peer_certificate(&resp).ok()?;
        (served == leaf_der(&chain).ok()?).then_some(())
    })
    .await?;
    Ok(())
}

/// A renewal that failed for good is not ordered again on every renewal
/// tick (it once was: a CA refusing a renewal got an order every tick),
/// but once a day until the certificate expires.
#[tokio::test]
async fn a_failed_renewal_is_retried_daily_not_every_tick() -> anyhow::Result<()> {
    use portico_control_plane::db::orders::due_renewals;
    let pool = sqlx::PgPool::connect(&portico_e2e::fresh_database().await?).await?;
    portico_control_plane::db::migrate(&pool).await?;
    let tenant = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (id, name, plan) VALUES ($1, 't', 'pro')")
        .bind(tenant)
        .execute(&pool)
        .await?;
    let mut domains = Vec::new();
    for (host, order) in [
        ("never.example.com", None),
        ("done.example.com", Some(("done", "0 seconds"))),
        ("failed-now.example.com", Some(("failed", "1 minute"))),
        ("failed-long-ago.example.com", Some(("failed", "25 hours"))),
        ("deferred.example.com", Some(("deferred", "1 minute"))),
    ] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO domains (id, tenant_id, hostname, targets, verification_token, status)
             VALUES ($1, $2, $3, '{127.0.0.1:1}', 'tok', 'active')",
        )
        .bind(id)
        .bind(tenant)
        .bind(host)
        .execute(&pool)
        .await?;
        sqlx::query(
            "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after, renew_at)
             VALUES ($1, ARRAY[$2], 'pem', 'k', '\\x00', now() + interval '5 days', now() - interval '1 hour')",
        )
        .bind(id)
        .bind(host)
        .execute(&pool)
        .await?;
        if let Some((status, ago)) = order {
            sqlx::query(
                "INSERT INTO certificate_orders (domain_id, status, reason, updated_at)
                 VALUES ($1, $2, 'renewal', now() - $3::interval)",
            )
            .bind(id)
            .bind(status)
            .bind(ago)
            .execute(&pool)
            .await?;
        }
        domains.push((host, id));
    }
    let due = due_renewals(&pool, 100).await?;
    let due: Vec<&str> = domains
        .iter()
        .filter(|(_, id)| due.contains(id))
        .map(|(host, _)| *host)
        .collect();
    assert_eq!(
        due,
        [
            "never.example.com",
            "done.example.com",
            "failed-long-ago.example.com"
        ]
    );
    Ok(())
}
