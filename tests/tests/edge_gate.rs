//! The pre-TLS gate: on-demand certificates with single flight, no issuance
//! for unknown names, and TLS-ALPN-01 challenge answers checked with a real
//! TLS client offering `acme-tls/1`.

use portico_e2e::edge::{
    TestCa, TestEdge, echo_upstream, host, https_client, snapshot, tls_connect,
};
use portico_protocol::{CertificateBundle, ChallengeAnswer};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A certificate source like the control plane's: counts requests, takes a
/// moment to "issue" (so concurrent handshakes overlap), then answers.
async fn certificate_source(
    ca: Arc<TestCa>,
    refuse: &'static [&'static str],
) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/issue",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (ca, counter) = (ca.clone(), counter.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await; // allow-sleep: simulated issuance time
                let name = body["hostname"].as_str().unwrap_or("").to_string();
                if refuse.contains(&name.as_str()) {
                    return Err(axum::http::StatusCode::FORBIDDEN);
                }
                let bundle: CertificateBundle = ca
                    .bundle(&[name.as_str()])
                    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
                Ok(axum::Json(bundle))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/issue", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, calls))
}

#[tokio::test]
async fn twenty_concurrent_handshakes_for_a_new_host_make_one_request() -> anyhow::Result<()> {
    let ca = Arc::new(TestCa::new()?);
    let (url, calls) = certificate_source(ca.clone(), &["refused.example.com"]).await?;
    let up = echo_upstream("fresh").await?;
    let mut fresh = host("fresh.example.com", &[up]);
    fresh.on_demand_tls = true;
    let mut refused = host("refused.example.com", &[up]);
    refused.on_demand_tls = true;
    let no_on_demand = host("manual.example.com", &[up]);
    let edge = TestEdge::start(
        &snapshot(1, vec![fresh, refused, no_on_demand], vec![]),
        &["--certificate-source", &url],
    )
    .await?;

    let root = ca.root_pem();
    let handshakes = (0..20).map(|_| {
        let root = root.clone();
        let addr = edge.https;
        tokio::spawn(async move {
            tls_connect(Some(&root), addr, "fresh.example.com", &[b"http/1.1"])
                .await
                .map(|_| ())
        })
    });
    for h in futures::future::join_all(handshakes).await {
        h??;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "single flight: one request for 20 handshakes"
    );

    // The certificate stays: requests now proxy, with no further requests.
    let client = https_client(&ca, &edge, &["fresh.example.com"])?;
    let resp = client
        .get(format!("https://fresh.example.com:{}/", edge.https.port()))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Refused by the source: the handshake fails cleanly, and is not retried at once.
    for _ in 0..3 {
        assert!(
            tls_connect(
                Some(&root),
                edge.https,
                "refused.example.com",
                &[b"http/1.1"]
            )
            .await
            .is_err()
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a refusal is remembered for a while"
    );

    // A known host without on-demand TLS never asks.
    assert!(
        tls_connect(
            Some(&root),
            edge.https,
            "manual.example.com",
            &[b"http/1.1"]
        )
        .await
        .is_err()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        edge.metric("portico_edge_on_demand_total{outcome=\"issued\"}")
            .await?
            >= 1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_thousand_handshakes_for_unknown_names_never_ask_for_a_certificate() -> anyhow::Result<()>
{
    let ca = Arc::new(TestCa::new()?);
    let (url, calls) = certificate_source(ca.clone(), &[]).await?;
    let up = echo_upstream("x").await?;
    let mut known = host("known.example.com", &[up]);
    known.on_demand_tls = true;
    let edge = TestEdge::start(
        &snapshot(1, vec![known], vec![]),
        &["--certificate-source", &url],
    )
    .await?;
    let root = ca.root_pem();
    let mut failures = 0;
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let batch = chunk.iter().map(|&i| {
            let (root, addr) = (root.clone(), edge.https);
            tokio::spawn(async move {
                tls_connect(
                    Some(&root),
                    addr,
                    &format!("scan-{i}.example.com"),
                    &[b"h2"],
                )
                .await
                .is_err()
            })
        });
        for r in futures::future::join_all(batch).await {
            failures += usize::from(r?);
        }
    }
    assert_eq!(failures, 1000, "no certificate for names we do not serve");
    // Garbage instead of a ClientHello, and a connection that sends nothing useful.
    let mut raw = tokio::net::TcpStream::connect(edge.https).await?;
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET / HTTP/1.1\r\nHost: known.example.com\r\n\r\n",
    )
    .await?;
    drop(raw);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "zero certificate requests");
    assert!(
        edge.metric("portico_edge_handshakes_total{outcome=\"unknown\"}")
            .await?
            >= 1000.0
    );
    Ok(())
}

#[tokio::test]
async fn tls_alpn_01_is_answered_with_the_challenge_certificate() -> anyhow::Result<()> {
    let key_authorization = "token-abc.thumbprint-xyz";
    let digest = Sha256::digest(key_authorization.as_bytes());
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["alpn.example.com".to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let challenge_cert = params.self_signed(&key)?;
    let mut snap = snapshot(1, vec![], vec![]);
    snap.challenges.push(ChallengeAnswer::TlsAlpn01 {
        hostname: "alpn.example.com".into(),
        certificate_pem: challenge_cert.pem(),
        key_pem: key.serialize_pem(),
    });
    let edge = TestEdge::start(&snap, &[]).await?;

    let tls = tls_connect(None, edge.https, "alpn.example.com", &[b"acme-tls/1"]).await?;
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    let cert = &conn.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())?;
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(ext.critical, "acmeIdentifier must be critical (RFC 8737)");
    assert_eq!(
        ext.value,
        [&[0x04, 0x20][..], &digest[..]].concat(),
        "OCTET STRING of SHA-256(key authorization)"
    );

    // acme-tls/1 for a name without a challenge: no certificate, the handshake fails.
    assert!(
        tls_connect(None, edge.https, "other.example.com", &[b"acme-tls/1"])
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn unknown_names_get_the_default_certificate_when_one_is_configured() -> anyhow::Result<()> {
    let ca = Arc::new(TestCa::new()?);
    let (url, calls) = certificate_source(ca.clone(), &[]).await?;
    let mut snap = snapshot(1, vec![], vec![ca.bundle(&["fallback.portico.example"])?]);
    snap.settings.default_certificate = Some("fallback.portico.example".into());
    let edge = TestEdge::start(&snap, &["--certificate-source", &url]).await?;
    // The client checks the name, so it refuses the fallback for another name...
    assert!(
        tls_connect(
            Some(&ca.root_pem()),
            edge.https,
            "stranger.example.com",
            &[b"http/1.1"]
        )
        .await
        .is_err()
    );
    // ...but the edge did present it: the handshake completes for its own name.
    let tls = tls_connect(
        Some(&ca.root_pem()),
        edge.https,
        "fallback.portico.example",
        &[b"http/1.1"],
    )
    .await?;
    assert!(tls.get_ref().1.peer_certificates().is_some());
    // And an unverifying client sees that certificate for any unknown SNI.
    let tls = tls_connect(None, edge.https, "stranger.example.com", &[b"http/1.1"]).await?;
    let cert = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())?;
    let san = parsed
        .subject_alternative_name()?
        .unwrap()
        .value
        .general_names[0]
        .to_string();
    assert_eq!(san, "DNSName(fallback.portico.example)");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "unknown names never ask for a certificate"
    );
    Ok(())
}
