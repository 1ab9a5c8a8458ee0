//! Config publication against real Postgres, read over HTTP the way an edge
//! reads it: the snapshot, deltas that follow every kind of change, resuming,
//! the log floor, edge authentication, heartbeats and on-demand requests.

use portico_e2e::TestApp;
use portico_e2e::cluster::register_edge;
use portico_e2e::config_stream::{ConfigReader, store_certificate};
use portico_e2e::edge::TestCa;
use portico_protocol::{Change, Frame, Redirect};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn app() -> anyhow::Result<TestApp> {
    TestApp::spawn(&[("PORTICO_ALLOW_LOCAL_TARGETS", "true")]).await
}

async fn add(app: &TestApp, key: &str, body: Value) -> anyhow::Result<Value> {
    let (status, d) = app
        .call(Method::POST, "/v1/domains", key, Some(body))
        .await?;
    anyhow::ensure!(status == 201, "create: {status} {d}");
    Ok(d)
}

fn database_url(app: &TestApp) -> String {
    app.running().state.settings.database_url.expose().clone()
}

async fn next_delta(reader: &mut ConfigReader) -> anyhow::Result<portico_protocol::Delta> {
    match reader.next_change(WAIT).await? {
        Frame::Delta(d) => Ok(d),
        other => anyhow::bail!("expected a delta, got {other:?}"),
    }
}

#[tokio::test]
async fn a_snapshot_then_a_delta_for_every_kind_of_change() -> anyhow::Result<()> {
    let app = app().await?;
    let (tenant, key) = app.tenant("pro").await?;
    let shop = add(
        &app,
        &key,
        json!({"hostname": "shop.example.com", "target": "10.0.0.1:8080", "redirect": "to_https"}),
    )
    .await?;
    let blog = add(
        &app,
        &key,
        json!({"hostname": "blog.example.com", "target": "10.0.0.2:80"}),
    )
    .await?;
    let token = register_edge(&app.base, "fra-1").await?;

    let mut reader = ConfigReader::open(&app.base, &token, None).await?;
    let snapshot = reader.snapshot(WAIT).await?;
    let mut names: Vec<&str> = snapshot.hosts.iter().map(|h| h.hostname.as_str()).collect();
    names.sort();
    assert_eq!(names, ["blog.example.com", "shop.example.com"]);
    let s = snapshot
        .hosts
        .iter()
        .find(|h| h.hostname == "shop.example.com")
        .unwrap();
    assert_eq!(s.targets, ["10.0.0.1:8080"]);
    assert_eq!(s.redirects, [Redirect::ToHttps]);
    assert!(
        !s.on_demand_tls,
        "a pending domain may not get certificates on demand"
    );

    // An update moves the host.
    let id = shop["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/domains/{id}"),
            &key,
            Some(json!({"target": "10.0.0.9:9090"})),
        )
        .await?;
    assert_eq!(status, 200);
    let d = next_delta(&mut reader).await?;
    assert_eq!(d.from, snapshot.version);
    assert!(
        matches!(&d.changes[..], [Change::UpsertHost { host }] if host.targets == ["10.0.0.9:9090"])
    );

    // Metadata alone concerns no edge: nothing is published.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/domains/{id}"),
            &key,
            Some(json!({"custom_metadata": {"a": 1}})),
        )
        .await?;
    assert_eq!(status, 200);

    // A delete removes the host and its certificate.
    let blog_id = blog["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/domains/{blog_id}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let d2 = next_delta(&mut reader).await?;
    assert_eq!(d2.from, d.to, "deltas chain");
    assert_eq!(
        d2.changes,
        [
            Change::RemoveHost {
                hostname: "blog.example.com".into()
            },
            Change::RemoveCertificate {
                names: vec!["blog.example.com".into()]
            }
        ]
    );

    // A batch is one version.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/domains:batch",
            &key,
            Some(json!({"items": [
            {"hostname": "a.example.com", "target": "10.0.0.3:80"},
            {"hostname": "b.example.com", "target": "10.0.0.3:80"}]})),
        )
        .await?;
    assert_eq!(status, 200);
    let d3 = next_delta(&mut reader).await?;
    assert_eq!(d3.to.0, d2.to.0 + 1);
    assert_eq!(d3.changes.len(), 2);

    // Suspending the tenant takes every host off the edges; reinstating brings them back.
    let suspend = |status: &'static str| {
        app.http
            .patch(app.url(&format!("/v1/tenants/{tenant}")))
            .bearer_auth(portico_e2e::OPERATOR_TOKEN)
            .json(&json!({"status": status}))
            .send()
    };
    assert_eq!(suspend("suspended").await?.status(), 200);
    let d4 = next_delta(&mut reader).await?;
    let removed = d4
        .changes
        .iter()
        .filter(|c| matches!(c, Change::RemoveHost { .. }))
        .count();
    assert_eq!(removed, 3, "{:?}", d4.changes);
    assert!(
        !d4.changes
            .iter()
            .any(|c| matches!(c, Change::UpsertHost { .. }))
    );
    assert_eq!(suspend("active").await?.status(), 200);
    let d5 = next_delta(&mut reader).await?;
    let upserted = d5
        .changes
        .iter()
        .filter(|c| matches!(c, Change::UpsertHost { .. }))
        .count();
    assert_eq!(upserted, 3);

    // A domain that passes verification may now get certificates on demand.
    sqlx::query("UPDATE domains SET status = 'active' WHERE hostname = 'a.example.com'")
        .execute(&app.running().state.pool)
        .await?;
    let mut tx = app.running().state.pool.begin().await?;
    portico_control_plane::db::config::publish(
        &mut tx,
        &[portico_control_plane::db::config::ConfigKey::Host(
            "a.example.com".into(),
        )],
    )
    .await?;
    tx.commit().await?;
    let d6 = next_delta(&mut reader).await?;
    assert!(matches!(&d6.changes[..], [Change::UpsertHost { host }] if host.on_demand_tls));
    app.stop().await
}

#[tokio::test]
async fn resuming_uses_deltas_until_the_log_floor_then_snapshots() -> anyhow::Result<()> {
    let app = app().await?;
    let (_, key) = app.tenant("pro").await?;
    let token = register_edge(&app.base, "ams-1").await?;
    for i in 0..3 {
        add(
            &app,
            &key,
            json!({"hostname": format!("h{i}.example.com"), "target": "10.0.0.1:80"}),
        )
        .await?;
    }
    // From version 1 (after the first create): the two later hosts.
    let mut r = ConfigReader::open(&app.base, &token, Some(1)).await?;
    let d = next_delta(&mut r).await?;
    assert_eq!((d.from.0, d.to.0, d.changes.len()), (1, 3, 2));

    // Up to date: only keep-alives.
    let mut r = ConfigReader::open(&app.base, &token, Some(3)).await?;
    assert_eq!(r.next(WAIT).await?, Frame::KeepAlive { v: 1 });

    // An edge ahead of the database (restored backup) gets a snapshot.
    let mut r = ConfigReader::open(&app.base, &token, Some(99)).await?;
    assert_eq!(r.snapshot(WAIT).await?.version.0, 3);

    // Superseded rows go first; with no retention everything goes and the
    // floor rises: an edge behind it gets a snapshot, one at it a delta.
    let pool = &app.running().state.pool;
    let id = {
        let (_, page) = app
            .call(Method::GET, "/v1/domains?limit=1", &key, None)
            .await?;
        page["items"][0]["id"].as_str().unwrap().to_string()
    };
    app.call(
        Method::PATCH,
        &format!("/v1/domains/{id}"),
        &key,
        Some(json!({"target": "10.0.0.2:80"})),
    )
    .await?;
    let done = portico_control_plane::db::config::compact(pool, 0, 0.0).await?;
    assert_eq!(done.superseded, 1, "{done:?}");
    assert_eq!(done.log_floor, 4);
    let mut r = ConfigReader::open(&app.base, &token, Some(2)).await?;
    let s = r.snapshot(WAIT).await?;
    assert_eq!((s.version.0, s.hosts.len()), (4, 3));
    add(
        &app,
        &key,
        json!({"hostname": "late.example.com", "target": "10.0.0.1:80"}),
    )
    .await?;
    let d = next_delta(&mut r).await?;
    assert_eq!((d.from.0, d.to.0), (4, 5));
    app.stop().await
}

#[tokio::test]
async fn edge_endpoints_refuse_anything_but_an_edge_token() -> anyhow::Result<()> {
    let app = app().await?;
    let (_, api_key) = app.tenant("pro").await?;
    let token = register_edge(&app.base, "lhr-1").await?;
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let client = reqwest::Client::new();
    for (what, bearer) in [
        ("none", None),
        ("api key", Some(api_key.as_str())),
        ("forged", Some(forged.as_str())),
        ("garbage", Some("pte_x")),
    ] {
        for (method, path) in [
            (Method::GET, "/internal/v1/edge/config"),
            (Method::POST, "/internal/v1/edge/heartbeat"),
            (Method::POST, "/internal/v1/edge/certificates/request"),
            (Method::GET, "/internal/v1/edge/challenges/http-01/tok"),
        ] {
            let mut req = client
                .request(method.clone(), app.url(path))
                .json(&json!({}));
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let resp = req.send().await?;
            assert_eq!(resp.status(), 401, "{what} {path}");
            let body: Value = resp.json().await?;
            assert_eq!(
                body["type"].as_str().unwrap().rsplit('/').next(),
                Some("unauthorized")
            );
        }
    }
    // Names are validated and unique.
    let create = |name: &str| {
        client
            .post(app.url("/v1/ops/edges"))
            .bearer_auth(portico_e2e::OPERATOR_TOKEN)
            .json(&json!({"name": name, "region": "lhr"}))
            .send()
    };
    assert_eq!(create("lhr-1").await?.status(), 409);
    assert_eq!(create("Bad Name").await?.status(), 422);
    app.stop().await
}

#[tokio::test]
async fn heartbeats_show_applied_version_lag_and_rejections() -> anyhow::Result<()> {
    let app = app().await?;
    let (_, key) = app.tenant("pro").await?;
    let token = register_edge(&app.base, "sin-1").await?;
    add(
        &app,
        &key,
        json!({"hostname": "x.example.com", "target": "10.0.0.1:80"}),
    )
    .await?;
    add(
        &app,
        &key,
        json!({"hostname": "y.example.com", "target": "10.0.0.1:80"}),
    )
    .await?;
    let beat = json!({"v": 1, "edge_id": "sin-1", "build": "0.1.0", "applied_version": 1,
        "uptime_secs": 12, "hosts": 1, "certificates": 0, "counters": {"rejected_configs_total": 1},
        "rejection": {"version": 2, "reason": "certificate for y.example.com: private key does not match", "at_unix": 1767225600},
        "future_field": true});
    let resp = reqwest::Client::new()
        .post(app.url("/internal/v1/edge/heartbeat"))
        .bearer_auth(&token)
        .json(&beat)
        .send()
        .await?;
    assert_eq!(resp.status(), 204);
    let edges: Value = reqwest::Client::new()
        .get(app.url("/v1/ops/edges"))
        .bearer_auth(portico_e2e::OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(edges["config_version"], 2);
    let e = &edges["edges"][0];
    assert_eq!(
        (e["name"].as_str(), e["status"].as_str()),
        (Some("sin-1"), Some("up"))
    );
    assert_eq!(
        (e["applied_version"].as_u64(), e["lag"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        e["rejection"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    // A malformed heartbeat is a clear 422 and changes nothing.
    let resp = reqwest::Client::new()
        .post(app.url("/internal/v1/edge/heartbeat"))
        .bearer_auth(&token)
        .json(&json!({"v": 1, "edge_id": "x", "build": "b", "applied_version": "seven"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    app.stop().await
}

#[tokio::test]
async fn certificates_are_sealed_published_and_served_on_request() -> anyhow::Result<()> {
    let app = app().await?;
    let (_, key) = app.tenant("pro").await?;
    let token = register_edge(&app.base, "nrt-1").await?;
    add(
        &app,
        &key,
        json!({"hostname": "tls.example.com", "target": "10.0.0.1:80"}),
    )
    .await?;
    let ask = |host: &str| {
        reqwest::Client::new()
            .post(app.url("/internal/v1/edge/certificates/request"))
            .bearer_auth(&token)
            .json(&json!({"hostname": host}))
            .send()
    };
    assert_eq!(ask("unknown.example.com").await?.status(), 403);
    assert_eq!(
        ask("tls.example.com").await?.status(),
        403,
        "pending: not yet verified"
    );
    sqlx::query("UPDATE domains SET status = 'active'")
        .execute(&app.running().state.pool)
        .await?;
    let resp = ask("tls.example.com").await?;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no certificate issuer")
    );

    let mut r = ConfigReader::open(&app.base, &token, Some(1)).await?;
    let bundle = TestCa::new()?.bundle(&["tls.example.com"])?;
    store_certificate(&database_url(&app), "tls.example.com", &bundle).await?;
    let d = next_delta(&mut r).await?;
    match &d.changes[..] {
        [Change::UpsertCertificate { certificate }] => {
            assert_eq!(certificate.key_pem, bundle.key_pem);
            assert_eq!(certificate.names, ["tls.example.com"]);
        }
        other => panic!("{other:?}"),
    }
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT key_sealed FROM certificates")
        .fetch_one(&app.running().state.pool)
        .await?;
    let needle = &bundle.key_pem.as_bytes()[30..60];
    assert!(
        !sealed.windows(needle.len()).any(|w| w == needle),
        "key stored in clear"
    );
    let resp = ask("TLS.example.com.").await?;
    assert_eq!(resp.status(), 200);
    let got: portico_protocol::CertificateBundle = resp.json().await?;
    assert_eq!(got.chain_pem, bundle.chain_pem);
    app.stop().await
}

#[tokio::test]
async fn challenge_answers_reach_edges_and_are_withdrawn() -> anyhow::Result<()> {
    use portico_control_plane::db::challenges::{self, NewChallenge};
    use portico_protocol::{ChallengeAnswer, ChallengeId};
    let app = app().await?;
    let token = register_edge(&app.base, "cdg-1").await?;
    let keys = app.running().state.settings.encryption_keys.clone();
    let pool = app.running().state.pool.clone();
    let mut r = ConfigReader::open(&app.base, &token, Some(0)).await?;
    let alpn_key = rcgen::KeyPair::generate()?;
    let alpn_cert = rcgen::CertificateParams::new(vec!["new.example.com".to_string()])?
        .self_signed(&alpn_key)?;
    let mut tx = pool.begin().await?;
    challenges::put(
        &mut tx,
        &keys,
        &NewChallenge::Http01 {
            token: "tok-1",
            key_authorization: "tok-1.thumb",
        },
    )
    .await?;
    challenges::put(
        &mut tx,
        &keys,
        &NewChallenge::TlsAlpn01 {
            hostname: "new.example.com",
            certificate_pem: &alpn_cert.pem(),
            key_pem: &alpn_key.serialize_pem(),
        },
    )
    .await?;
    tx.commit().await?;
    let d = next_delta(&mut r).await?;
    assert_eq!(d.changes.len(), 2, "{:?}", d.changes);
    assert!(d.changes.contains(&Change::AddChallenge {
        challenge: ChallengeAnswer::Http01 {
            token: "tok-1".into(),
            key_authorization: "tok-1.thumb".into()
        }
    }));
    assert!(d.changes.iter().any(|c| matches!(c, Change::AddChallenge { challenge: ChallengeAnswer::TlsAlpn01 { key_pem, .. } } if *key_pem == alpn_key.serialize_pem())));
    // A snapshot carries them too.
    let mut fresh = ConfigReader::open(&app.base, &token, None).await?;
    assert_eq!(fresh.snapshot(WAIT).await?.challenges.len(), 2);

    // An edge whose stream lags asks for one answer at a time.
    let fetch = |path: String| {
        reqwest::Client::new()
            .get(app.url(&format!("/internal/v1/edge/challenges/{path}")))
            .bearer_auth(&token)
            .send()
    };
    let http01: ChallengeAnswer = fetch("http-01/tok-1".into()).await?.json().await?;
    assert_eq!(
        http01,
        ChallengeAnswer::Http01 {
            token: "tok-1".into(),
            key_authorization: "tok-1.thumb".into()
        }
    );
    let alpn = fetch("tls-alpn-01/NEW.example.com".into()).await?;
    assert_eq!(alpn.status(), 200);
    assert!(matches!(alpn.json().await?,
        ChallengeAnswer::TlsAlpn01 { hostname, key_pem, .. }
            if hostname == "new.example.com" && key_pem == alpn_key.serialize_pem()));
    for missing in [
        "http-01/tok-2".to_string(),
        "http-01/new.example.com".into(),
        "tls-alpn-01/tok-1".into(),
        "dns-01/tok-1".into(),
        format!("http-01/{}", "a".repeat(300)),
        "http-01/..%2Fhttp01:tok-1".into(),
    ] {
        let resp = fetch(missing.clone()).await?;
        assert_eq!(resp.status(), 404, "{missing}");
        let body: Value = resp.json().await?;
        assert_eq!(
            body["type"].as_str().unwrap().rsplit('/').next(),
            Some("not_found")
        );
    }

    let mut tx = pool.begin().await?;
    challenges::remove(&mut tx, "http01:tok-1").await?;
    assert_eq!(challenges::remove(&mut tx, "http01:absent").await?, None);
    tx.commit().await?;
    let d = next_delta(&mut r).await?;
    assert_eq!(
        d.changes,
        [Change::RemoveChallenge {
            id: ChallengeId::Http01 {
                token: "tok-1".into()
            }
        }]
    );
    let withdrawn = fetch("http-01/tok-1".into()).await?;
    assert_eq!(withdrawn.status(), 404, "a withdrawn answer is gone");
    app.stop().await
}
