//! Tenant isolation: another tenant's resources are always 404, never 403.

use portico_e2e::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn tenant_b_sees_404_on_every_resource_of_tenant_a() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (a_id, a) = app.tenant("pro").await?;
    let (_, b) = app.tenant("pro").await?;
    let (_, d) = app
        .call(
            Method::POST,
            "/v1/domains",
            &a,
            Some(json!({"hostname": "a.example.com", "target": "app.example.net:80"})),
        )
        .await?;
    let domain = d["id"].as_str().unwrap().to_string();
    let (_, keys) = app.call(Method::GET, "/v1/api-keys", &a, None).await?;
    let a_key_id = keys[0]["id"].as_str().unwrap().to_string();

    let attempts = [
        (Method::GET, format!("/v1/domains/{domain}"), None),
        (
            Method::PATCH,
            format!("/v1/domains/{domain}"),
            Some(json!({"keep_host": true})),
        ),
        (Method::DELETE, format!("/v1/domains/{domain}"), None),
        (Method::POST, format!("/v1/domains/{domain}/verify"), None),
        (Method::GET, format!("/v1/domains/{domain}/dns"), None),
        (Method::DELETE, format!("/v1/api-keys/{a_key_id}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, problem) = app.call(method.clone(), &path, &b, body).await?;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "https://portico.dev/problems/not_found");
    }
    // B's listings do not include A's things.
    let (_, list) = app.call(Method::GET, "/v1/domains", &b, None).await?;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (_, events) = app.call(Method::GET, "/v1/events", &b, None).await?;
    assert!(events["items"].as_array().unwrap().is_empty());
    // Operator endpoints refuse tenant keys.
    let (status, _) = app
        .call(Method::GET, &format!("/v1/tenants/{a_id}"), &b, None)
        .await?;
    assert_eq!(status, 401);
    // And A's domain is untouched.
    let (status, still) = app
        .call(Method::GET, &format!("/v1/domains/{domain}"), &a, None)
        .await?;
    assert_eq!((status, &still["keep_host"]), (200, &json!(false)));
    app.stop().await
}
