//! The domains API over HTTP against real Postgres: create, read, list,
//! change, delete, batch, conflicts, quotas and plan rules.

use portico_e2e::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn a_domain_goes_through_its_whole_lifecycle() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("free").await?;

    let (status, d) = app
        .call(
            Method::POST,
            "/v1/domains",
            &key,
            Some(json!({
                "hostname": "Shop.Example.COM.", "target": "https://app.example.net",
                "redirect": ["to_https"], "custom_metadata": {"customer": 42}
            })),
        )
        .await?;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["hostname"], "shop.example.com");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["tls"]["status"], "none");
    assert_eq!(d["tls"]["on_demand"], true);
    assert_eq!(d["targets"], json!(["app.example.net:443"]));
    assert_eq!(d["target_tls"], true);
    assert_eq!(d["custom_metadata"]["customer"], 42);
    let records = d["verification"]["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["type"] == "CNAME"
        && r["name"] == "shop.example.com"
        && r["value"] == "edge.portico.test"));
    let txt = records.iter().find(|r| r["type"] == "TXT").unwrap();
    assert_eq!(txt["name"], "_portico-challenge.shop.example.com");
    assert!(
        txt["value"]
            .as_str()
            .unwrap()
            .starts_with("portico-verify=")
    );
    let id = d["id"].as_str().unwrap().to_string();

    let (status, got) = app
        .call(Method::GET, &format!("/v1/domains/{id}"), &key, None)
        .await?;
    assert_eq!(
        (status, &got["hostname"]),
        (200, &json!("shop.example.com"))
    );

    let (status, patched) = app
        .call(Method::PATCH, &format!("/v1/domains/{id}"), &key, Some(json!({"target": ["10.0.0.1:8080", "10.0.0.2:8080"], "target_tls": false, "keep_host": true})))
        .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["targets"],
        json!(["10.0.0.1:8080", "10.0.0.2:8080"])
    );
    assert_eq!(
        (patched["keep_host"].clone(), patched["target_tls"].clone()),
        (json!(true), json!(false))
    );

    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/domains/{id}"),
            &key,
            Some(json!({"hostname": "other.example.com"})),
        )
        .await?;
    assert_eq!(
        (status, &body["errors"][0]["code"]),
        (422, &json!("immutable"))
    );

    let (status, dns) = app
        .call(Method::GET, &format!("/v1/domains/{id}/dns"), &key, None)
        .await?;
    assert_eq!((status, &dns["diagnosis"]), (200, &Value::Null));

    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/domains/{id}"), &key, None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(Method::GET, &format!("/v1/domains/{id}"), &key, None)
        .await?;
    assert_eq!(status, 404);
    assert_eq!(
        app.event_types(&key).await?,
        vec!["domain.created", "domain.deleted"]
    );
    app.stop().await
}

#[tokio::test]
async fn a_hostname_belongs_to_one_tenant_and_the_owner_is_never_revealed() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, a) = app.tenant("free").await?;
    let (_, b) = app.tenant("free").await?;
    let body = json!({"hostname": "taken.example.com", "target": "app.example.net:80"});
    assert_eq!(
        app.call(Method::POST, "/v1/domains", &a, Some(body.clone()))
            .await?
            .0,
        201
    );
    let (status, problem) = app
        .call(Method::POST, "/v1/domains", &b, Some(body.clone()))
        .await?;
    assert_eq!(status, 409);
    assert_eq!(problem["type"], "https://portico.dev/problems/conflict");
    assert!(!problem.to_string().contains("Acme"), "{problem}");
    // The same answer for the owner itself, so the two cases cannot be told apart.
    let (status, again) = app
        .call(Method::POST, "/v1/domains", &a, Some(body))
        .await?;
    assert_eq!((status, &again["detail"]), (409, &problem["detail"]));
    assert_eq!(app.count("domains").await?, 1);
    app.stop().await
}

#[tokio::test]
async fn listing_paginates_and_filters() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("pro").await?;
    for i in 0..7 {
        let name = if i < 4 {
            format!("a{i}.example.com")
        } else {
            format!("b{i}.example.com")
        };
        let (s, _) = app
            .call(
                Method::POST,
                "/v1/domains",
                &key,
                Some(json!({"hostname": name, "target": "app.example.net:80"})),
            )
            .await?;
        assert_eq!(s, 201);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/domains?limit=3".to_string();
    loop {
        let (status, page) = app.call(Method::GET, &path, &key, None).await?;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["hostname"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/domains?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "no duplicates across pages");

    let (_, page) = app
        .call(Method::GET, "/v1/domains?hostname_prefix=a", &key, None)
        .await?;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let (_, page) = app
        .call(Method::GET, "/v1/domains?status=active", &key, None)
        .await?;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let (status, _) = app
        .call(Method::GET, "/v1/domains?status=bogus", &key, None)
        .await?;
    assert_eq!(status, 400);
    let (status, p) = app
        .call(Method::GET, "/v1/domains?cursor=not-ours", &key, None)
        .await?;
    assert_eq!((status, &p["errors"][0]["field"]), (422, &json!("cursor")));
    let (status, _) = app
        .call(Method::GET, "/v1/domains?limit=1000", &key, None)
        .await?;
    assert_eq!(status, 422);
    app.stop().await
}

#[tokio::test]
async fn batch_creation_reports_each_item() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[("PORTICO_QUOTA_FREE", "4")]).await?;
    let (_, key) = app.tenant("free").await?;
    let items = json!({"items": [
        {"hostname": "one.example.com", "target": "app.example.net:80"},
        {"hostname": "co.uk", "target": "app.example.net:80"},
        {"hostname": "one.example.com", "target": "app.example.net:80"},
        {"hostname": "two.example.com", "target": "app.example.net:80", "bogus": 1},
        {"hostname": "three.example.com", "target": "app.example.net:80"},
        {"hostname": "four.example.com", "target": "app.example.net:80"},
        {"hostname": "five.example.com", "target": "app.example.net:80"},
        {"hostname": "six.example.com", "target": "app.example.net:80"},
    ]});
    let (status, body) = app
        .call(Method::POST, "/v1/domains:batch", &key, Some(items))
        .await?;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 422, 409, 422, 201, 201, 201, 403]);
    assert_eq!(
        body["results"][1]["error"]["errors"][0]["field"],
        "items[1].hostname"
    );
    assert_eq!(
        body["results"][1]["error"]["errors"][0]["code"],
        "public_suffix"
    );
    assert_eq!(
        body["results"][3]["error"]["errors"][0]["code"],
        "unknown_field"
    );
    assert_eq!(
        body["results"][7]["error"]["type"],
        "https://portico.dev/problems/quota_exceeded"
    );
    assert_eq!(
        (body["created"].as_u64(), body["failed"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(app.count("domains").await?, 4);
    assert_eq!(app.count("events").await?, 4);

    let (status, single) = app
        .call(
            Method::POST,
            "/v1/domains",
            &key,
            Some(json!({"hostname": "seven.example.com", "target": "app.example.net:80"})),
        )
        .await?;
    assert_eq!(status, 403, "{single}");
    assert!(
        single["detail"]
            .as_str()
            .unwrap()
            .contains("free plan allows 4")
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"hostname": format!("d{i}.example.com"), "target": "a.example.net:80"}))
        .collect();
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/domains:batch",
            &key,
            Some(json!({"items": too_many})),
        )
        .await?;
    assert_eq!(status, 422);
    app.stop().await
}

#[tokio::test]
async fn wildcards_follow_the_plan() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, free) = app.tenant("free").await?;
    let (_, pro) = app.tenant("pro").await?;
    let body = json!({"hostname": "*.shops.example.com", "target": "app.example.net:80"});
    let (status, p) = app
        .call(Method::POST, "/v1/domains", &free, Some(body.clone()))
        .await?;
    assert_eq!(
        (status, &p["errors"][0]["field"]),
        (422, &json!("hostname"))
    );
    let (status, d) = app
        .call(Method::POST, "/v1/domains", &pro, Some(body))
        .await?;
    assert_eq!(
        (status, &d["hostname"]),
        (201, &json!("*.shops.example.com"))
    );
    let txt = d["verification"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .cloned()
        .unwrap();
    assert_eq!(txt["name"], "_portico-challenge.shops.example.com");
    app.stop().await
}

#[tokio::test]
async fn api_keys_can_be_created_listed_and_revoked() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            &key,
            Some(json!({"name": "ci"})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let second = created["key"].as_str().unwrap().to_string();
    let (_, list) = app.call(Method::GET, "/v1/api-keys", &second, None).await?;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|k| k.get("key").is_none() && k.get("hash").is_none()),
        "secrets never listed"
    );
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", created["id"].as_str().unwrap()),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let (status, p) = app.call(Method::GET, "/v1/domains", &second, None).await?;
    assert_eq!(
        (status, &p["type"]),
        (401, &json!("https://portico.dev/problems/unauthorized"))
    );

    // With an Idempotency-Key the replay shows the same key, and the copy
    // kept for replays is sealed: no key or edge token in the clear.
    let post = |path: &'static str, bearer: String, body: serde_json::Value| {
        app.http
            .post(app.url(path))
            .bearer_auth(bearer)
            .header("idempotency-key", path)
            .json(&body)
            .send()
    };
    let first: serde_json::Value = post("/v1/api-keys", key.clone(), json!({"name": "x"}))
        .await?
        .json()
        .await?;
    let again: serde_json::Value = post("/v1/api-keys", key.clone(), json!({"name": "x"}))
        .await?
        .json()
        .await?;
    assert_eq!(first["key"], again["key"], "{first} {again}");
    let op = portico_e2e::OPERATOR_TOKEN.to_string();
    let edge = post(
        "/v1/ops/edges",
        op.clone(),
        json!({"name": "lhr-9", "region": "lhr"}),
    )
    .await?;
    assert_eq!(edge.status(), 201);
    let tenant = post("/v1/tenants", op, json!({"name": "t"})).await?;
    assert_eq!(tenant.status(), 201);
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys
         WHERE position('ptk_'::bytea IN body) > 0 OR position('pte_'::bytea IN body) > 0",
    )
    .fetch_one(&app.running().state.pool)
    .await?;
    assert_eq!(in_clear, 0, "the stored replay copies are sealed");
    assert_eq!(app.count("idempotency_keys").await?, 3);
    app.stop().await
}
