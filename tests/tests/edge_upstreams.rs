//! The edge towards upstreams and operators: TLS to the upstream with SNI
//! and verification, WebSocket upgrades, the request body limit, and
//! snapshot reload on SIGHUP that keeps the last good table when the new
//! one is broken.

use portico_e2e::edge::{
    TestCa, TestEdge, echo_upstream, host, http_client, https_client, snapshot,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS upstream whose certificate the test CA issued for `name`; it
/// answers every request with the SNI it saw.
async fn tls_upstream(ca: &TestCa, name: &str) -> anyhow::Result<SocketAddr> {
    portico_e2e::edge::install_crypto();
    let bundle = ca.bundle(&[name])?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(bundle.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = serde_json::json!({"sni": sni}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(addr)
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn upstream_tls_uses_sni_and_verifies_against_the_configured_ca() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let other_ca = TestCa::new()?;
    let good = tls_upstream(&ca, "origin.example.net").await?;
    let untrusted = tls_upstream(&other_ca, "origin.example.net").await?;
    let mk = |name: &str, target: SocketAddr, verify: bool| {
        let mut h = host(name, &[target]);
        h.target_tls = true;
        h.target_sni = Some("origin.example.net".into());
        h.verify_target_tls = verify;
        h
    };
    let snap = snapshot(
        1,
        vec![
            mk("good.example.com", good, true),
            mk("bad.example.com", untrusted, true),
            mk("lax.example.com", untrusted, false),
        ],
        vec![],
    );
    let dir =
        std::env::temp_dir().join(format!("portico-edge-ca-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, ca.root_pem())?;
    let edge = TestEdge::start(&snap, &["--upstream-ca-file", ca_file.to_str().unwrap()]).await?;
    let client = http_client(
        &edge,
        &["good.example.com", "bad.example.com", "lax.example.com"],
    )?;
    let port = edge.http.port();

    let resp = client
        .get(format!("http://good.example.com:{port}/"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(
        body["sni"], "origin.example.net",
        "target_sni is sent upstream"
    );

    let resp = client
        .get(format!("http://bad.example.com:{port}/"))
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        502,
        "an upstream certificate from an unknown CA is refused"
    );

    let resp = client
        .get(format!("http://lax.example.com:{port}/"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "verification off for this host");
    Ok(())
}

#[tokio::test]
async fn websockets_are_proxied() -> anyhow::Result<()> {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures::{SinkExt, StreamExt};
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(|ws: WebSocketUpgrade| async {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(Message::Text(t))) = socket.recv().await {
                    if socket
                        .send(Message::Text(format!("echo: {t}").into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let edge = TestEdge::start(
        &snapshot(1, vec![host("ws.example.com", &[up])], vec![]),
        &[],
    )
    .await?;
    let tcp = tokio::net::TcpStream::connect(edge.http).await?;
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.example.com/ws", tcp).await?;
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            format!("hi {i}").into(),
        ))
        .await?;
        let reply = ws.next().await.expect("a reply")?;
        assert_eq!(reply.into_text()?.as_str(), format!("echo: hi {i}"));
    }
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_413() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("body").await?;
    let mut snap = snapshot(
        1,
        vec![host("body.example.com", &[up])],
        vec![ca.bundle(&["body.example.com"])?],
    );
    snap.settings.max_request_body_bytes = 1024;
    let edge = TestEdge::start(&snap, &[]).await?;
    let client = https_client(&ca, &edge, &["body.example.com"])?;
    let url = format!("https://body.example.com:{}/upload", edge.https.port());
    let resp = client.post(&url).body(vec![b'x'; 1024]).send().await?;
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await?;
    assert_eq!(
        echoed["body_len"], 1024,
        "a body at the limit reaches the upstream whole"
    );
    let resp = client.post(&url).body(vec![b'x'; 1025]).send().await?;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await?.contains("too large"));

    // Without Content-Length (chunked), the limit applies as the body streams.
    let mut tcp = tokio::net::TcpStream::connect(edge.http).await?;
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nHost: body.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await?;
    for _ in 0..8 {
        // The edge may answer and close before the whole body is sent.
        if tcp
            .write_all(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut head = vec![0u8; 12];
    tcp.read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.1 413");
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_the_snapshot_and_a_broken_one_keeps_the_last_good_table()
-> anyhow::Result<()> {
    let first = echo_upstream("first").await?;
    let second = echo_upstream("second").await?;
    let edge = TestEdge::start(
        &snapshot(1, vec![host("r.example.com", &[first])], vec![]),
        &[],
    )
    .await?;
    let client = http_client(&edge, &["r.example.com", "new.example.com"])?;
    let url = |h: &str| format!("http://{h}:{}/", edge.http.port());
    let upstream_of = |body: serde_json::Value| body["upstream"].as_str().unwrap_or("").to_string();
    assert_eq!(
        upstream_of(
            client
                .get(url("r.example.com"))
                .send()
                .await?
                .json()
                .await?
        ),
        "first"
    );

    let file = edge.data_dir.join("input-snapshot.json");
    let next = snapshot(
        2,
        vec![
            host("r.example.com", &[second]),
            host("new.example.com", &[second]),
        ],
        vec![],
    );
    std::fs::write(&file, serde_json::to_vec(&next)?)?;
    edge.signal("HUP")?;
    wait_for(|| async {
        edge.admin_get("/readyz")
            .await
            .map(|(_, b)| b.trim() == "ready 2")
            .unwrap_or(false)
    })
    .await?;
    assert_eq!(
        upstream_of(
            client
                .get(url("new.example.com"))
                .send()
                .await?
                .json()
                .await?
        ),
        "second"
    );

    // A broken file: the table stays at version 2, and the rejection is counted.
    std::fs::write(
        &file,
        br#"{"v":1,"version":3,"hosts":[{"hostname":"UPPER CASE!"}]}"#,
    )?;
    edge.signal("HUP")?;
    wait_for(|| async {
        edge.metric("portico_edge_rejected_configs_total")
            .await
            .map(|v| v >= 1.0)
            .unwrap_or(false)
    })
    .await?;
    assert_eq!(edge.admin_get("/readyz").await?.1.trim(), "ready 2");
    assert_eq!(
        upstream_of(
            client
                .get(url("r.example.com"))
                .send()
                .await?
                .json()
                .await?
        ),
        "second"
    );
    let persisted = std::fs::read_to_string(edge.data_dir.join("snapshot.json"))?;
    assert!(
        persisted.contains("\"version\":2"),
        "the data dir still holds the last good snapshot"
    );
    Ok(())
}

async fn wait_for<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
    }
    Ok(())
}
