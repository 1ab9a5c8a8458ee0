//! The edge binary as a real process, driven with real TLS clients: routing
//! by SNI and Host, forwarded headers, redirects, 421, H2, retries, ACME
//! challenge answers and restart from its data dir.

use portico_e2e::edge::{
    TestCa, TestEdge, echo_upstream, free_port, host, http_client, https_client, snapshot,
    tls_connect,
};
use portico_protocol::{ChallengeAnswer, Redirect};
use serde_json::Value;
use std::net::SocketAddr;

async fn json(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

#[tokio::test]
async fn routes_by_host_with_forwarded_headers_h2_and_sni() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up_a = echo_upstream("a").await?;
    let up_b = echo_upstream("b").await?;
    let mut keep = host("keep.example.com", &[up_b]);
    keep.keep_host = true;
    let snap = snapshot(
        7,
        vec![
            host("shop.example.com", &[up_a]),
            host("*.tenants.example.net", &[up_b]),
            keep,
        ],
        vec![
            ca.bundle(&["shop.example.com"])?,
            ca.bundle(&["*.tenants.example.net"])?,
            ca.bundle(&["keep.example.com"])?,
        ],
    );
    let edge = TestEdge::start(&snap, &[]).await?;
    let names = [
        "shop.example.com",
        "x.tenants.example.net",
        "keep.example.com",
        "a.b.tenants.example.net",
    ];
    let client = https_client(&ca, &edge, &names)?;
    let port = edge.https.port();

    let resp = client
        .get(format!("https://shop.example.com:{port}/cart?x=1"))
        .send()
        .await?;
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "h2 negotiated by ALPN"
    );
    let body = json(resp).await;
    assert_eq!(body["upstream"], "a");
    assert_eq!(body["path"], "/cart?x=1");
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["portico-incoming-host"], "shop.example.com");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["host"], up_a.to_string(), "Host rewritten to the target");

    let body = json(
        client
            .get(format!("https://x.tenants.example.net:{port}/"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(
        body["upstream"], "b",
        "wildcard route and wildcard certificate"
    );

    let body = json(
        client
            .get(format!("https://keep.example.com:{port}/"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(
        body["headers"]["host"],
        format!("keep.example.com:{port}"),
        "keep_host forwards the client's Host"
    );

    // Two labels under a wildcard match nothing: no certificate, the handshake fails.
    assert!(
        client
            .get(format!("https://a.b.tenants.example.net:{port}/"))
            .send()
            .await
            .is_err()
    );

    // HTTP/1.1 works too.
    let h1 = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.root_pem().as_bytes())?)
        .resolve("shop.example.com", edge.https)
        .build()?;
    let resp = h1
        .get(format!("https://shop.example.com:{port}/"))
        .send()
        .await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(json(resp).await["upstream"], "a");

    // Host header for another configured name on this connection: 421.
    let resp = h1
        .get(format!("https://shop.example.com:{port}/"))
        .header("host", "keep.example.com")
        .send()
        .await?;
    assert_eq!(resp.status(), 421);
    assert!(resp.text().await?.contains("Misdirected"));

    let (status, ready) = edge.admin_get("/readyz").await?;
    assert_eq!((status, ready.trim()), (200, "ready 7"));
    assert!(
        edge.metric("portico_edge_requests_total{host=\"exact\",status=\"2xx\"}")
            .await?
            >= 3.0
    );
    Ok(())
}

#[tokio::test]
async fn unknown_hosts_redirects_and_challenges_over_http() -> anyhow::Result<()> {
    let up = echo_upstream("u").await?;
    let mut https_only = host("secure.example.com", &[up]);
    https_only.redirects = vec![Redirect::ToHttps];
    let mut www = host("www.example.org", &[up]);
    www.redirects = vec![Redirect::WwwToApex];
    // A different apex: the same pair with both rules would loop (refused).
    let mut apex = host("example.net", &[up]);
    apex.redirects = vec![Redirect::ApexToWww];
    let mut snap = snapshot(
        1,
        vec![https_only, www, host("plain.example.com", &[up]), apex],
        vec![],
    );
    snap.challenges.push(ChallengeAnswer::Http01 {
        token: "tok_123-abc".into(),
        key_authorization: "tok_123-abc.thumbprint".into(),
    });
    let edge = TestEdge::start(&snap, &[]).await?;
    let names = [
        "secure.example.com",
        "www.example.org",
        "plain.example.com",
        "nobody.example.com",
        "example.net",
    ];
    let client = http_client(&edge, &names)?;
    let port = edge.http.port();

    let resp = client
        .get(format!("http://nobody.example.com:{port}/"))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()?
            .starts_with("text/html")
    );
    assert!(resp.text().await?.contains("Domain not configured"));

    let resp = client
        .get(format!("http://secure.example.com:{port}/a?b=c"))
        .send()
        .await?;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://secure.example.com/a?b=c"
    );

    let resp = client
        .get(format!("http://www.example.org:{port}/p"))
        .send()
        .await?;
    assert_eq!(
        (resp.status().as_u16(), resp.headers()["location"].to_str()?),
        (308, "http://example.org/p")
    );
    let resp = client
        .get(format!("http://example.net:{port}/p"))
        .send()
        .await?;
    assert_eq!(
        (resp.status().as_u16(), resp.headers()["location"].to_str()?),
        (308, "http://www.example.net/p")
    );

    let body = json(
        client
            .get(format!("http://plain.example.com:{port}/x"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");

    // HTTP-01 is answered for any host, even one without a route (and before redirects).
    for name in ["secure.example.com", "nobody.example.com"] {
        let resp = client
            .get(format!(
                "http://{name}:{port}/.well-known/acme-challenge/tok_123-abc"
            ))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await?, "tok_123-abc.thumbprint");
    }
    let resp = client
        .get(format!(
            "http://plain.example.com:{port}/.well-known/acme-challenge/nope"
        ))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    Ok(())
}

#[tokio::test]
async fn a_dead_target_is_retried_on_the_next_one() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let live = echo_upstream("live").await?;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let snap = snapshot(
        1,
        vec![host("two.example.com", &[dead, live])],
        vec![ca.bundle(&["two.example.com"])?],
    );
    let edge = TestEdge::start(&snap, &[]).await?;
    let client = https_client(&ca, &edge, &["two.example.com"])?;
    for _ in 0..6 {
        let resp = client
            .get(format!("https://two.example.com:{}/", edge.https.port()))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(json(resp).await["upstream"], "live");
    }
    assert!(
        edge.metric("portico_edge_upstream_connect_failures_total")
            .await?
            >= 1.0
    );

    // With no live target at all: the branded 502 page.
    let snap = snapshot(
        1,
        vec![host("down.example.com", &[dead])],
        vec![ca.bundle(&["down.example.com"])?],
    );
    let edge = TestEdge::start(&snap, &[]).await?;
    let client = https_client(&ca, &edge, &["down.example.com"])?;
    let resp = client
        .get(format!("https://down.example.com:{}/", edge.https.port()))
        .send()
        .await?;
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await?.contains("Bad gateway"));
    Ok(())
}

#[tokio::test]
async fn sni_selects_among_a_thousand_hosts() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("many").await?;
    let names: Vec<String> = (0..1000)
        .map(|i| format!("h{i}.many.example.com"))
        .collect();
    let hosts = names.iter().map(|n| host(n, &[up])).collect();
    let certs = names
        .iter()
        .map(|n| ca.bundle(&[n.as_str()]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let edge = TestEdge::start(&snapshot(3, hosts, certs), &[]).await?;
    for i in [0usize, 1, 499, 998, 999] {
        let name = &names[i];
        let tls = tls_connect(Some(&ca.root_pem()), edge.https, name, &[b"http/1.1"]).await?;
        let (_, conn) = tls.get_ref();
        let cert = &conn.peer_certificates().unwrap()[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())?;
        let sans: Vec<String> = parsed
            .subject_alternative_name()?
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(sans, vec![format!("DNSName({name})")]);
    }
    assert_eq!(edge.metric("portico_edge_hosts").await?, 1000.0);
    Ok(())
}

#[tokio::test]
async fn restarts_from_its_data_dir_with_nothing_else_running() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("persisted").await?;
    let snap = snapshot(
        42,
        vec![host("keep.example.com", &[up])],
        vec![ca.bundle(&["keep.example.com"])?],
    );
    let mut first = TestEdge::start(&snap, &[]).await?;
    let dir = first.data_dir.clone();
    first.kill();
    std::fs::remove_file(dir.join("input-snapshot.json"))?;

    // No --snapshot, no control plane: the data dir's copy is all there is.
    let second = TestEdge::start_in(&dir, &[]).await?;
    let (status, ready) = second.admin_get("/readyz").await?;
    assert_eq!((status, ready.trim()), (200, "ready 42"));
    let client = https_client(&ca, &second, &["keep.example.com"])?;
    let resp = client
        .get(format!("https://keep.example.com:{}/", second.https.port()))
        .send()
        .await?;
    assert_eq!(json(resp).await["upstream"], "persisted");

    // An empty data dir: up but not ready.
    let empty = std::env::temp_dir().join(format!(
        "portico-edge-empty-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let third = TestEdge::start_in(&empty, &[]).await?;
    assert_eq!(third.admin_get("/readyz").await?.0, 503);
    assert_eq!(third.admin_get("/healthz").await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn a_broken_snapshot_file_is_refused_at_start() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "portico-edge-bad-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        br#"{"v":1,"version":1,"hosts":[{"hostname":"Bad Host!","targets":["x:1"]}]}"#,
    )?;
    let out = std::process::Command::new(portico_e2e::edge::edge_binary()?)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--snapshot",
            file.to_str().unwrap(),
        ])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rejected"), "{stderr}");
    assert!(!dir.join("snapshot.json").exists(), "nothing persisted");
    Ok(())
}

#[tokio::test]
async fn graceful_upgrade_hands_the_sockets_over_without_refusing_anyone() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let up = echo_upstream("up").await?;
    let snap = snapshot(
        5,
        vec![host("up.example.com", &[up])],
        vec![ca.bundle(&["up.example.com"])?],
    );
    let mut old = TestEdge::start(&snap, &[]).await?;
    let client = https_client(&ca, &old, &["up.example.com"])?;
    let url = format!("https://up.example.com:{}/", old.https.port());
    let old_pid = old.pid();

    // Keep requesting (new connections each time) until the upgrade is over;
    // every request must succeed.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, done) = (url.clone(), done.clone());
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.root_pem().as_bytes())?)
            .resolve("up.example.com", old.https)
            .pool_max_idle_per_host(0)
            .build()?;
        tokio::spawn(async move {
            let mut ok = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let resp = client.get(&url).send().await?;
                anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                ok += 1;
            }
            Ok::<_, anyhow::Error>(ok)
        })
    };
    let new = old.upgrade(&[]).await?;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_ne!(new.pid(), old_pid);
    let served = load.await??;
    assert!(
        served > 10,
        "requests kept flowing during the upgrade: {served}"
    );
    // The new process serves from the persisted snapshot on the same sockets.
    assert_eq!(new.admin_get("/readyz").await?.1.trim(), "ready 5");
    assert_eq!(client.get(&url).send().await?.status(), 200);
    Ok(())
}
