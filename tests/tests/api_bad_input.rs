//! Hostile and broken input: every case is a clear problem+json and stores nothing.

use portico_e2e::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

async fn raw(
    app: &TestApp,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String, Value)> {
    let mut req = app.http.post(app.url("/v1/domains")).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_str(&resp.text().await?).unwrap_or(Value::Null);
    Ok((status, ct, body))
}

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://portico.dev/problems/")
}

#[tokio::test]
async fn invalid_hostnames_are_rejected_with_the_reason() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[("PORTICO_RESERVED_SUFFIXES", "portico.dev")]).await?;
    let (_, key) = app.tenant("free").await?;
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}example.com", "abcdefghi.".repeat(26));
    let cases = [
        ("", "empty"),
        ("com", "single_label"),
        ("co.uk", "public_suffix"),
        ("192.0.2.1", "ip_literal"),
        ("[2001:db8::1]", "ip_literal"),
        ("bad_name.example.com", "invalid_character"),
        ("-bad.example.com", "label_hyphen"),
        ("a..example.com", "empty_label"),
        (long_label.as_str(), "label_too_long"),
        (long_name.as_str(), "too_long"),
        ("shop.portico.dev", "reserved"),
        ("x.edge.portico.test", "reserved"),
        ("*.example.com", "wildcard_not_allowed"),
        ("has space.example.com", "invalid_character"),
    ];
    for (hostname, code) in cases {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/domains",
                &key,
                Some(json!({"hostname": hostname, "target": "a.example.net:80"})),
            )
            .await?;
        assert_eq!(status, 422, "{hostname}: {body}");
        assert_eq!(problem_type(&body), "validation_failed");
        assert_eq!(body["errors"][0]["field"], "hostname", "{hostname}");
        assert_eq!(body["errors"][0]["code"], code, "{hostname}: {body}");
    }
    assert_eq!(app.count("domains").await?, 0);
    app.stop().await
}

#[tokio::test]
async fn broken_bodies_get_clear_problems_and_store_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let json_ct = Some("application/json");
    let valid = br#"{"hostname":"ok.example.com","target":"a.example.net:80"}"#.to_vec();

    let (s, ct, b) = raw(&app, Some(&key), json_ct, b"{\"hostname\": ".to_vec()).await?;
    assert_eq!(
        (s, ct.as_str(), problem_type(&b)),
        (400, "application/problem+json", "malformed_json")
    );

    let (s, _, b) = raw(&app, Some(&key), Some("text/plain"), valid.clone()).await?;
    assert_eq!((s, problem_type(&b)), (415, "unsupported_media_type"));
    let (s, _, b) = raw(&app, Some(&key), None, valid.clone()).await?;
    assert_eq!((s, problem_type(&b)), (415, "unsupported_media_type"));

    let (s, _, b) = raw(
        &app,
        Some(&key),
        json_ct,
        br#"{"hostname":"ok.example.com","target":"a.example.net:80","colour":"red"}"#.to_vec(),
    )
    .await?;
    assert_eq!((s, problem_type(&b)), (422, "validation_failed"));
    assert_eq!(b["errors"][0]["code"], "unknown_field");
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{b}"
    );

    let (s, _, b) = raw(
        &app,
        Some(&key),
        json_ct,
        br#"{"target":"a.example.net:80"}"#.to_vec(),
    )
    .await?;
    assert_eq!(
        (s, &b["errors"][0]["field"], &b["errors"][0]["code"]),
        (422, &json!("hostname"), &json!("missing_field"))
    );

    let (s, _, b) = raw(
        &app,
        Some(&key),
        json_ct,
        br#"{"hostname":7,"target":"a.example.net:80"}"#.to_vec(),
    )
    .await?;
    assert_eq!((s, &b["errors"][0]["field"]), (422, &json!("hostname")));

    let big_meta = json!({"hostname": "ok.example.com", "target": "a.example.net:80", "custom_metadata": {"blob": "x".repeat(5000)}});
    let (s, _, b) = raw(&app, Some(&key), json_ct, serde_json::to_vec(&big_meta)?).await?;
    assert_eq!(
        (s, &b["errors"][0]["field"], &b["errors"][0]["code"]),
        (422, &json!("custom_metadata"), &json!("too_large"))
    );

    let meta_not_object =
        json!({"hostname": "ok.example.com", "target": "a.example.net:80", "custom_metadata": [1]});
    let (s, _, b) = raw(
        &app,
        Some(&key),
        json_ct,
        serde_json::to_vec(&meta_not_object)?,
    )
    .await?;
    assert_eq!((s, &b["errors"][0]["code"]), (422, &json!("invalid_type")));

    let several =
        json!({"hostname": "co.uk", "target": ["ftp://x", "127.0.0.1:80"], "redirect": "sideways"});
    let (s, _, b) = raw(&app, Some(&key), json_ct, serde_json::to_vec(&several)?).await?;
    assert_eq!(s, 422);
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["hostname", "target[0]", "target[1]", "redirect"],
        "{b}"
    );

    let huge = serde_json::to_vec(
        &json!({"hostname": "ok.example.com", "target": "a.example.net:80", "pad": "x".repeat(70 * 1024)}),
    )?;
    let (s, _, b) = raw(&app, Some(&key), json_ct, huge).await?;
    assert_eq!((s, problem_type(&b)), (413, "payload_too_large"));

    let (s, _, b) = raw(&app, None, json_ct, valid.clone()).await?;
    assert_eq!((s, problem_type(&b)), (401, "unauthorized"));
    let (s, _, b) = raw(
        &app,
        Some("ptk_aaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        json_ct,
        valid.clone(),
    )
    .await?;
    assert_eq!((s, problem_type(&b)), (401, "unauthorized"));
    let (s, _, _) = raw(&app, Some("not-a-key"), json_ct, valid).await?;
    assert_eq!(s, 401);

    assert_eq!(app.count("domains").await?, 0);
    assert_eq!(app.count("events").await?, 0);

    let resp = app.http.get(app.url("/v1/nowhere")).send().await?;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    app.stop().await
}

#[tokio::test]
async fn bad_targets_and_redirects_name_the_field() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let cases = [
        (json!("169.254.169.254:80"), "target"),
        (json!([]), "target"),
        (json!(["a.example.net:80", 5]), "target[1]"),
        (json!("https://a.example.net/path"), "target"),
        (
            json!(["http://a.example.net", "https://b.example.net"]),
            "target",
        ),
    ];
    for (target, field) in cases {
        let (s, b) = app
            .call(
                Method::POST,
                "/v1/domains",
                &key,
                Some(json!({"hostname": "ok.example.com", "target": target})),
            )
            .await?;
        assert_eq!(
            (s, &b["errors"][0]["field"]),
            (422, &json!(field)),
            "{target}: {b}"
        );
    }
    let (s, b) = app
        .call(Method::POST, "/v1/domains", &key, Some(json!({"hostname": "ok.example.com", "target": "a.example.net:80", "redirect": ["www_to_apex", "apex_to_www"]})))
        .await?;
    assert_eq!((s, &b["errors"][0]["code"]), (422, &json!("conflict")));
    let (s, b) = app
        .call(Method::POST, "/v1/domains", &key, Some(json!({"hostname": "ok.example.com", "target": "https://a.example.net", "target_tls": false})))
        .await?;
    assert_eq!((s, &b["errors"][0]["field"]), (422, &json!("target_tls")));
    assert_eq!(app.count("domains").await?, 0);
    app.stop().await
}
