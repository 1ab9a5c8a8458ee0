//! The webhook-endpoints API over HTTP: lifecycle, tenant isolation,
//! limits, hostile input, and the SSRF guard at creation and at send time.

use portico_control_plane::app::Options;
use portico_e2e::dns_server::{TestDns, TestRecord};
use portico_e2e::webhook_receiver::{FAST_DELIVERY, Receiver, attempts, create_endpoint, messages};
use portico_e2e::{TestApp, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, Ipv6Addr};

fn code(body: &Value) -> (String, String) {
    let e = &body["errors"][0];
    (
        e["field"].as_str().unwrap_or_default().to_string(),
        e["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn webhook_endpoint_lifecycle_and_tenant_isolation() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[
        ("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("PORTICO_WEBHOOK_MAX_ENDPOINTS", "3"),
    ])
    .await?;
    let (_, key) = app.tenant("free").await?;
    let (_, other) = app.tenant("free").await?;
    let body = json!({"url": "https://127.0.0.1:9/in", "description": "ops", "event_types": ["domain.created"]});
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/webhook-endpoints",
            &key,
            Some(body.clone()),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let id = created["endpoint"]["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 6 + 32,
        "{secret}"
    );
    assert_eq!(created["endpoint"]["enabled"], true);

    let (status, got) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{id}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(
        (status, got["url"].clone()),
        (200, json!("https://127.0.0.1:9/in"))
    );
    assert!(!got.to_string().contains(secret));
    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{id}"),
            &key,
            Some(json!({"enabled": false, "event_types": []})),
        )
        .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            patched["enabled"].clone(),
            patched["disabled_reason"].clone()
        ),
        (json!(false), json!("manual"))
    );
    assert_eq!(patched["event_types"], json!([]));
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/test"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 409, "a disabled endpoint gets no test message");

    // Another tenant sees nothing of it.
    for (method, path) in [
        (Method::GET, format!("/v1/webhook-endpoints/{id}")),
        (Method::PATCH, format!("/v1/webhook-endpoints/{id}")),
        (Method::DELETE, format!("/v1/webhook-endpoints/{id}")),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{id}/rotate-secret"),
        ),
        (Method::POST, format!("/v1/webhook-endpoints/{id}/test")),
        (Method::GET, format!("/v1/webhook-endpoints/{id}/messages")),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{id}/replay?since=2026-12-01T00:00:00Z"),
        ),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"description": "mine"}));
        let (status, _) = app.call(method.clone(), &path, &other, body).await?;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (_, list) = app
        .call(Method::GET, "/v1/webhook-endpoints", &other, None)
        .await?;
    assert_eq!(list["items"], json!([]));

    // The limit, pagination, idempotent creation.
    for _ in 0..2 {
        app.call(
            Method::POST,
            "/v1/webhook-endpoints",
            &key,
            Some(body.clone()),
        )
        .await?;
    }
    let (status, over) = app
        .call(
            Method::POST,
            "/v1/webhook-endpoints",
            &key,
            Some(body.clone()),
        )
        .await?;
    assert_eq!(
        (status, over["type"].clone()),
        (403, json!("https://portico.dev/problems/quota_exceeded"))
    );
    let (_, page) = app
        .call(Method::GET, "/v1/webhook-endpoints?limit=2", &key, None)
        .await?;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints?limit=2&cursor={cursor}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/webhook-endpoints/{id}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{id}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 404);
    let post = |k: &'static str| {
        app.http
            .post(app.url("/v1/webhook-endpoints"))
            .bearer_auth(&key)
            .header("idempotency-key", k)
            .json(&body)
            .send()
    };
    let first = post("same").await?;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await?;
    let again: Value = post("same").await?.json().await?;
    assert_eq!(
        first["endpoint"]["id"], again["endpoint"]["id"],
        "Idempotency-Key replays the creation"
    );
    assert_eq!(first["secret"], again["secret"]);
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE position('whsec_'::bytea IN body) > 0",
    )
    .fetch_one(&app.running().state.pool)
    .await?;
    assert_eq!(in_clear, 0, "the stored replay copy is sealed");
    assert_eq!(app.count("idempotency_keys").await?, 1);
    assert_eq!(app.count("webhook_endpoints").await?, 3);
    app.stop().await
}

#[tokio::test]
async fn webhook_endpoint_api_rejects_hostile_input_clearly() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true")]).await?;
    let (_, key) = app.tenant("free").await?;
    let ok = "https://127.0.0.1:9/";
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({}), 422, "url", "missing_field"),
        (json!({"url": 5}), 422, "url", "invalid_type"),
        (json!({"url": null}), 422, "url", "invalid_type"),
        (
            json!({"url": "javascript:alert(1)"}),
            422,
            "url",
            "unsupported_scheme",
        ),
        (
            json!({"url": "http://127.0.0.1:9/"}),
            422,
            "url",
            "https_required",
        ),
        (
            json!({"url": format!("https://h.example.com/{}", "a".repeat(3000))}),
            422,
            "url",
            "too_long",
        ),
        (
            json!({"url": "https://user:pw@127.0.0.1/"}),
            422,
            "url",
            "credentials_in_url",
        ),
        (
            json!({"url": "https://127.0.0.1/#frag"}),
            422,
            "url",
            "fragment",
        ),
        (
            json!({"url": "https://exa mple.com/"}),
            422,
            "url",
            "invalid_url",
        ),
        (json!({"url": "https://"}), 422, "url", "invalid_url"),
        (
            json!({"url": "https://127.0.0.1/\u{0}"}),
            422,
            "url",
            "invalid_url",
        ),
        (
            json!({"url": ok, "description": "d".repeat(501)}),
            422,
            "description",
            "too_long",
        ),
        (
            json!({"url": ok, "description": "bell\u{7}"}),
            422,
            "description",
            "control_characters",
        ),
        (
            json!({"url": ok, "description": 7}),
            422,
            "description",
            "invalid_type",
        ),
        (
            json!({"url": ok, "event_types": "domain.created"}),
            422,
            "event_types",
            "invalid_type",
        ),
        (
            json!({"url": ok, "event_types": ["domain.created", "domain.exploded"]}),
            422,
            "event_types[1]",
            "unknown_event_type",
        ),
        (
            json!({"url": ok, "event_types": ["domain.created", "domain.created"]}),
            422,
            "event_types[1]",
            "duplicate",
        ),
        (
            json!({"url": ok, "event_types": vec!["domain.created"; 40]}),
            422,
            "event_types",
            "too_many",
        ),
        (
            json!({"url": ok, "event_types": [1]}),
            422,
            "event_types[0]",
            "invalid_type",
        ),
        (
            json!({"url": ok, "enabled": "yes"}),
            422,
            "enabled",
            "invalid_type",
        ),
        (
            json!({"url": ok, "secret": "whsec_mine"}),
            422,
            "",
            "unknown_field",
        ),
        (json!([ok]), 422, "", "invalid_type"),
    ];
    for (body, status, field, expected) in cases {
        let (got, problem) = app
            .call(
                Method::POST,
                "/v1/webhook-endpoints",
                &key,
                Some(body.clone()),
            )
            .await?;
        assert_eq!(got, status, "{body} → {problem}");
        let (f, c) = code(&problem);
        assert_eq!(c, expected, "{body} → {problem}");
        if !field.is_empty() {
            assert_eq!(f, field, "{body} → {problem}");
        }
    }
    let raw = |ct: &'static str, body: &'static str| {
        app.http
            .post(app.url("/v1/webhook-endpoints"))
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_eq!(raw("application/json", "{\"url\": ").await?.status(), 400);
    assert_eq!(raw("text/plain", "{}").await?.status(), 415);
    assert_eq!(
        app.count("webhook_endpoints").await?,
        0,
        "nothing bad was stored"
    );

    let (id, _) = create_endpoint(&app, &key, json!({"url": ok})).await?;
    for (body, field, expected) in [
        (json!({"url": "ftp://x"}), "url", "unsupported_scheme"),
        (
            json!({"event_types": ["nope"]}),
            "event_types[0]",
            "unknown_event_type",
        ),
        (json!({"enabled": 1}), "enabled", "invalid_type"),
        (json!({"id": "x"}), "", "unknown_field"),
    ] {
        let (status, problem) = app
            .call(
                Method::PATCH,
                &format!("/v1/webhook-endpoints/{id}"),
                &key,
                Some(body.clone()),
            )
            .await?;
        assert_eq!(
            (status, code(&problem).1.as_str()),
            (422, expected),
            "{body} → {problem}"
        );
        if !field.is_empty() {
            assert_eq!(code(&problem).0, field);
        }
    }
    for path in [
        "/v1/webhook-endpoints/not-a-uuid",
        "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000",
    ] {
        assert_eq!(
            app.call(Method::GET, path, &key, None).await?.0,
            404,
            "{path}"
        );
    }
    for (query, status) in [
        ("", 400),
        ("?since=yesterday", 422),
        ("?since=2020-01-01T00:00:00Z", 422),
        (
            "?since=2026-12-01T00:00:00Z&until=2026-11-01T00:00:00Z",
            422,
        ),
        ("?since=2026-12-01T00:00:00Z&evil=1", 400),
    ] {
        let (got, problem) = app
            .call(
                Method::POST,
                &format!("/v1/webhook-endpoints/{id}/replay{query}"),
                &key,
                None,
            )
            .await?;
        assert_eq!(got, status, "{query} → {problem}");
    }
    for path in [
        "messages/nope/attempts",
        "messages/msg_00000000000000000000000000000000/attempts",
    ] {
        assert_eq!(
            app.call(
                Method::GET,
                &format!("/v1/webhook-endpoints/{id}/{path}"),
                &key,
                None
            )
            .await?
            .0,
            404
        );
    }
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{id}/messages?limit=0"),
            &key,
            None
        )
        .await?
        .0,
        422
    );
    app.stop().await
}

#[tokio::test]
async fn webhook_ssrf_guard_refuses_every_forbidden_range_at_creation() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.add("loopback.test", TestRecord::A(Ipv4Addr::LOCALHOST));
    dns.add(
        "metadata.test",
        TestRecord::A(Ipv4Addr::new(169, 254, 169, 254)),
    );
    dns.add("v6.test", TestRecord::Aaaa(Ipv6Addr::LOCALHOST));
    dns.add("mixed.test", TestRecord::A(Ipv4Addr::new(192, 0, 2, 10)));
    dns.add("mixed.test", TestRecord::A(Ipv4Addr::new(10, 1, 2, 3)));
    dns.add("public.test", TestRecord::A(Ipv4Addr::new(192, 0, 2, 10)));
    let ns = dns.addr().to_string();
    let app = TestApp::spawn(&[("PORTICO_WEBHOOK_NAMESERVERS", ns.as_str())]).await?;
    let (_, key) = app.tenant("free").await?;
    let forbidden = [
        "https://127.0.0.1/",
        "https://127.1.2.3:8443/x",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://169.254.10.10/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://[::1]/",
        "https://[::]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[fc00::1]/",
        "https://[fd00:ec2::254]/",
        "https://[fe80::1]/",
        "https://[ff02::1]/",
        "https://[64:ff9b::a00:1]/",
        "https://loopback.test/",
        "https://metadata.test/",
        "https://v6.test/",
        "https://mixed.test/",
    ];
    for url in forbidden {
        let (status, problem) = app
            .call(
                Method::POST,
                "/v1/webhook-endpoints",
                &key,
                Some(json!({"url": url})),
            )
            .await?;
        assert_eq!(status, 422, "{url} → {problem}");
        assert_eq!(
            code(&problem),
            ("url".into(), "forbidden_address".into()),
            "{url} → {problem}"
        );
    }
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/webhook-endpoints",
            &key,
            Some(json!({"url": "https://nowhere.test/"})),
        )
        .await?;
    assert_eq!(
        (status, code(&problem).1.as_str()),
        (422, "unresolvable"),
        "{problem}"
    );
    let (id, _) = create_endpoint(&app, &key, json!({"url": "https://public.test/hook"})).await?;
    let (status, problem) = app
        .call(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{id}"),
            &key,
            Some(json!({"url": "https://loopback.test/"})),
        )
        .await?;
    assert_eq!(
        (status, code(&problem).1.as_str()),
        (422, "forbidden_address"),
        "a PATCH is checked too"
    );
    assert_eq!(app.count("webhook_endpoints").await?, 1);
    app.stop().await
}

/// DNS rebinding: the name was public at creation and points at loopback
/// when the message is sent; a literal address changed behind the API's back.
#[tokio::test]
async fn webhook_ssrf_guard_checks_again_at_send_time() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.add("rebind.test", TestRecord::A(Ipv4Addr::new(192, 0, 2, 10)));
    let ns = dns.addr().to_string();
    let mut vars: Vec<(&str, &str)> = FAST_DELIVERY.to_vec();
    vars.retain(|(k, _)| *k != "PORTICO_WEBHOOK_ALLOW_PRIVATE");
    vars.push(("PORTICO_WEBHOOK_NAMESERVERS", ns.as_str()));
    vars.push(("PORTICO_WEBHOOK_RETRY_SCHEDULE", "0s"));
    let app = TestApp::spawn_with(&vars, Options::new(true, true)).await?;
    let (_, key) = app.tenant("free").await?;
    let receiver = Receiver::start().await?;
    let url = format!("http://rebind.test:{}/", receiver.addr.port());
    let (endpoint, _) = create_endpoint(&app, &key, json!({"url": url})).await?;
    dns.clear("rebind.test");
    dns.add("rebind.test", TestRecord::A(Ipv4Addr::LOCALHOST));
    app.call(
        Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/test"),
        &key,
        None,
    )
    .await?;
    let m = eventually(20, "the attempt to be refused", || async {
        let m = messages(&app, &key, &endpoint).await.ok()?;
        m.into_iter().find(|m| m["status"] == "failed")
    })
    .await?;
    let tries = attempts(&app, &key, &endpoint, m["id"].as_str().unwrap()).await?;
    let error = tries[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("loopback") && error.contains("127.0.0.1"),
        "{error}"
    );

    // A literal private address written behind the API's back is refused too.
    sqlx::query("UPDATE webhook_endpoints SET url = $1")
        .bind(receiver.url("/"))
        .execute(&app.running().state.pool)
        .await?;
    app.call(
        Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/test"),
        &key,
        None,
    )
    .await?;
    eventually(20, "the second refusal", || async {
        let m = messages(&app, &key, &endpoint).await.ok()?;
        (m.iter().filter(|m| m["status"] == "failed").count() == 2).then_some(())
    })
    .await?;
    assert!(
        receiver.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    app.stop().await
}
