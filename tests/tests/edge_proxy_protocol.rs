//! The edge with `--proxy-protocol v2`, as it runs behind Fly's proxy: a
//! relay in front of it prepends PROXY v2 headers (IPv4 and IPv6 sources,
//! the LOCAL command) over HTTP and HTTPS, and the upstream must see the
//! header's source in X-Forwarded-For; connections without a valid header
//! are closed and counted.

use portico_e2e::edge::{TestCa, TestEdge, echo_upstream, host, install_crypto, snapshot};
use portico_e2e::relay::Relay;
use ppp::v2::{Addresses, Builder, Command, IPv4, IPv6, Protocol, Version};
use serde_json::Value;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "pp.example.com";

fn header(command: Command, addresses: impl Into<Addresses>) -> Vec<u8> {
    Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
        .build()
        .unwrap()
}

fn ipv4_client() -> Vec<u8> {
    header(
        Command::Proxy,
        IPv4::new([203, 0, 113, 7], [10, 0, 0, 1], 40_000, 443),
    )
}

fn ipv6_client() -> Vec<u8> {
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    header(Command::Proxy, IPv6::new(src, dst, 51_000, 443))
}

/// A relay that sends `prefix` then forwards to `target`.
async fn proxy(prefix: Vec<u8>, target: SocketAddr) -> Relay {
    let relay = Relay::with_prefix(prefix).await.unwrap();
    relay.forward_to(target);
    relay
}

fn client(ca: &TestCa, via: SocketAddr) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).unwrap())
        .resolve(HOST, via)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn forwarded_for(client: &reqwest::Client, url: String) -> String {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
    body["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Sends `bytes` on a raw connection and returns what came back before the
/// edge closed it (bounded wait).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the edge kept a refused connection open");
    got
}

async fn outcome(edge: &TestEdge, outcome: &str) -> f64 {
    edge.metric(&format!(
        "portico_edge_proxy_protocol_headers_total{{outcome=\"{outcome}\"}}"
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn the_header_source_is_the_client_over_http_and_https() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("pp").await?;
    let snap = snapshot(1, vec![host(HOST, &[up])], vec![ca.bundle(&[HOST])?]);
    let edge = TestEdge::start(&snap, &["--proxy-protocol", "v2"]).await?;

    // HTTP, IPv4 source; the second request reuses the connection (one
    // header per connection, not per request).
    let relay = proxy(ipv4_client(), edge.http).await;
    let c = client(&ca, relay.addr);
    let url = format!("http://{HOST}:{}/", relay.addr.port());
    assert_eq!(forwarded_for(&c, url.clone()).await, "203.0.113.7");
    assert_eq!(forwarded_for(&c, url).await, "203.0.113.7");
    assert_eq!(outcome(&edge, "proxied").await, 1.0, "one connection");

    // HTTPS (h2 by ALPN), IPv6 source: the header comes before the ClientHello.
    let relay = proxy(ipv6_client(), edge.https).await;
    let c = client(&ca, relay.addr);
    let url = format!("https://{HOST}:{}/", relay.addr.port());
    assert_eq!(forwarded_for(&c, url).await, "2001:db8::7");

    // HTTPS, IPv4 source.
    let relay = proxy(ipv4_client(), edge.https).await;
    let c = client(&ca, relay.addr);
    let url = format!("https://{HOST}:{}/", relay.addr.port());
    assert_eq!(forwarded_for(&c, url).await, "203.0.113.7");

    // LOCAL (the proxy's own check): the socket's address stays the client.
    let local = header(Command::Local, Addresses::Unspecified);
    for target in [edge.http, edge.https] {
        let relay = proxy(local.clone(), target).await;
        let c = client(&ca, relay.addr);
        let scheme = if target == edge.http { "http" } else { "https" };
        let url = format!("{scheme}://{HOST}:{}/", relay.addr.port());
        assert_eq!(forwarded_for(&c, url).await, "127.0.0.1");
    }
    assert_eq!(outcome(&edge, "proxied").await, 3.0);
    assert_eq!(outcome(&edge, "local").await, 2.0);
    Ok(())
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_and_counted() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("pp").await?;
    let snap = snapshot(1, vec![host(HOST, &[up])], vec![ca.bundle(&[HOST])?]);
    let edge = TestEdge::start(&snap, &["--proxy-protocol", "v2"]).await?;

    // A direct client (no header) gets nothing over HTTP and no handshake over HTTPS.
    let plain = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert!(raw_exchange(edge.http, plain.as_bytes()).await.is_empty());
    let direct = client(&ca, edge.https);
    let url = format!("https://{HOST}:{}/", edge.https.port());
    assert!(direct.get(url).send().await.is_err());
    assert_eq!(outcome(&edge, "missing").await, 2.0);

    // Garbled: a v2 signature with a bad version/command byte, then a request.
    let mut garbled = ipv4_client();
    garbled[12] = 0x2F;
    garbled.extend_from_slice(plain.as_bytes());
    assert!(raw_exchange(edge.http, &garbled).await.is_empty());
    assert!(raw_exchange(edge.https, &garbled).await.is_empty());
    assert_eq!(outcome(&edge, "malformed").await, 2.0);

    // Oversized: announces 65535 bytes of addresses and TLVs.
    let mut huge = ipv4_client()[..16].to_vec();
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    huge.extend_from_slice(&[0u8; 512]);
    assert!(raw_exchange(edge.http, &huge).await.is_empty());
    assert_eq!(outcome(&edge, "oversized").await, 1.0);

    // Stalled inside the header: closed after the edge's read timeout, not held.
    let started = Instant::now();
    assert!(
        raw_exchange(edge.https, &ipv4_client()[..10])
            .await
            .is_empty()
    );
    assert_eq!(outcome(&edge, "timeout").await, 1.0);
    eprintln!("stalled header closed after {:?}", started.elapsed());

    // The edge still serves a well-behaved proxy afterwards.
    let relay = proxy(ipv4_client(), edge.https).await;
    let c = client(&ca, relay.addr);
    let url = format!("https://{HOST}:{}/", relay.addr.port());
    assert_eq!(forwarded_for(&c, url).await, "203.0.113.7");
    Ok(())
}
