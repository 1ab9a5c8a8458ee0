//! Cross-cutting API behaviour: Idempotency-Key, rate limits, health, the
//! OpenAPI document and operator authentication.

use portico_e2e::{OPERATOR_TOKEN, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn idempotency_key_replays_and_detects_reuse() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let post = |body: Value, ikey: &'static str| {
        app.http
            .post(app.url("/v1/domains"))
            .bearer_auth(&key)
            .header("idempotency-key", ikey)
            .json(&body)
            .send()
    };
    let body = json!({"hostname": "idem.example.com", "target": "a.example.net:80"});
    let first = post(body.clone(), "k-1").await?;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await?;
    let second = post(body.clone(), "k-1").await?;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await?;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(app.count("domains").await?, 1);

    let other = post(
        json!({"hostname": "other.example.com", "target": "a.example.net:80"}),
        "k-1",
    )
    .await?;
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await?;
    assert_eq!(
        other["type"],
        "https://portico.dev/problems/idempotency_key_reused"
    );

    // A validation failure is a final answer too and is replayed as such.
    let bad = json!({"hostname": "co.uk", "target": "a.example.net:80"});
    assert_eq!(post(bad.clone(), "k-2").await?.status(), 422);
    assert_eq!(post(bad, "k-2").await?.status(), 422);
    assert_eq!(app.count("domains").await?, 1);

    // Without a key, the same body is a second attempt, which conflicts.
    let (status, _) = app
        .call(Method::POST, "/v1/domains", &key, Some(body))
        .await?;
    assert_eq!(status, 409);
    app.stop().await
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[
        ("PORTICO_RATE_LIMIT_PER_SECOND", "1"),
        ("PORTICO_RATE_LIMIT_BURST", "3"),
    ])
    .await?;
    let (_, a) = app.tenant("free").await?;
    let (_, b) = app.tenant("free").await?;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = app
            .http
            .get(app.url("/v1/domains"))
            .bearer_auth(&a)
            .send()
            .await?;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"].to_str()?.parse()?;
            assert!(retry >= 1);
            let body: Value = resp.json().await?;
            assert_eq!(body["type"], "https://portico.dev/problems/rate_limited");
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    // Another key has its own budget.
    let resp = app
        .http
        .get(app.url("/v1/domains"))
        .bearer_auth(&b)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    app.stop().await
}

#[tokio::test]
async fn health_readiness_and_request_ids() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let resp = app.http.get(app.url("/healthz")).send().await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await?;
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let commit = option_env!("PORTICO_GIT_COMMIT").unwrap_or("unknown");
    assert_eq!(body["commit"], commit, "the build's commit");
    let resp = app
        .http
        .get(app.url("/readyz"))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let body: Value = resp.json().await?;
    assert_eq!(body["status"], "ready");
    app.stop().await
}

#[tokio::test]
async fn operator_endpoints_need_the_operator_token() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let body = json!({"name": "X"});
    let resp = app
        .http
        .post(app.url("/v1/tenants"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let resp = app
        .http
        .post(app.url("/v1/tenants"))
        .bearer_auth("wrong-token-wrong-token-wrong-token")
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let (id, _) = app.tenant("enterprise").await?;
    let resp = app
        .http
        .get(app.url(&format!("/v1/tenants/{id}")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await?;
    assert_eq!(t["plan"], "enterprise");
    let resp = app
        .http
        .get(app.url("/v1/tenants/00000000-0000-0000-0000-000000000000"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    let resp = app
        .http
        .post(app.url("/v1/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "  "}))
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    app.stop().await
}

#[tokio::test]
async fn openapi_lists_every_route_with_its_errors() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let doc: Value = app
        .http
        .get(app.url("/v1/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let expected = [
        ("/v1/domains", "post"),
        ("/v1/domains", "get"),
        ("/v1/domains:batch", "post"),
        ("/v1/domains/{id}", "get"),
        ("/v1/domains/{id}", "patch"),
        ("/v1/domains/{id}", "delete"),
        ("/v1/domains/{id}/verify", "post"),
        ("/v1/domains/{id}/dns", "get"),
        ("/v1/tenants", "post"),
        ("/v1/tenants/{id}", "get"),
        ("/v1/tenants/{id}", "patch"),
        ("/v1/ops/edges", "post"),
        ("/v1/domains/{id}/certificate", "get"),
        ("/v1/domains/{id}/certificate/renew", "post"),
        ("/v1/ops/acme", "get"),
        ("/v1/ops/edges", "get"),
        ("/v1/ops/alerts", "get"),
        ("/v1/ops/repairs", "get"),
        ("/v1/ops/repairs/{id}", "get"),
        ("/v1/ops/repairs/{id}/pause", "post"),
        ("/v1/ops/repairs/{id}/resume", "post"),
        ("/v1/ops/repairs/{id}/retry", "post"),
        ("/v1/ops/repairs/{id}/close", "post"),
        ("/v1/domains/{id}/repairs", "get"),
        ("/internal/v1/edge/config", "get"),
        ("/internal/v1/edge/heartbeat", "post"),
        ("/internal/v1/edge/reports", "post"),
        ("/internal/v1/edge/certificates/request", "post"),
        ("/internal/v1/edge/challenges/{kind}/{key}", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys/{id}", "delete"),
        ("/v1/events", "get"),
        ("/v1/webhook-endpoints", "post"),
        ("/v1/webhook-endpoints", "get"),
        ("/v1/webhook-endpoints/{id}", "get"),
        ("/v1/webhook-endpoints/{id}", "patch"),
        ("/v1/webhook-endpoints/{id}", "delete"),
        ("/v1/webhook-endpoints/{id}/rotate-secret", "post"),
        ("/v1/webhook-endpoints/{id}/messages", "get"),
        ("/v1/webhook-endpoints/{id}/messages/{msg}/attempts", "get"),
        ("/v1/webhook-endpoints/{id}/messages/{msg}/retry", "post"),
        ("/v1/webhook-endpoints/{id}/replay", "post"),
        ("/v1/webhook-endpoints/{id}/test", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/openapi.json", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        listed,
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    for schema in [
        "Problem",
        "DomainView",
        "Diagnosis",
        "Reason",
        "CreateDomain",
        "BatchResponse",
        "WebhookPayload",
        "DomainEventPayload",
        "CertificateEventPayload",
        "EndpointDisabledEventPayload",
        "WebhookTestEventPayload",
        "HealthEventPayload",
        "EndpointView",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    assert!(doc["paths"]["/v1/domains"]["post"]["responses"]["409"].is_object());
    app.stop().await
}
