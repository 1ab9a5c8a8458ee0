//! Domain status driven by real DNS answers from the test DNS server: through
//! `POST /verify`, and through the job queue (scheduler fan-out → apalis →
//! `check_domain_dns`).

use portico_control_plane::app::{Options, job_context};
use portico_control_plane::jobs::scheduler;
use portico_e2e::TestApp;
use portico_e2e::dns_server::{TestDns, TestRecord};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const EDGE: &str = "edge.portico.test";

async fn setup(
    extra: &[(&str, &str)],
    options: Options,
) -> anyhow::Result<(TestDns, TestApp, String)> {
    let dns = TestDns::start().await?;
    dns.add(EDGE, TestRecord::A("203.0.113.10".parse()?));
    let ns = dns.addr().to_string();
    let mut vars = vec![
        ("PORTICO_DNS_NAMESERVERS", ns.as_str()),
        ("PORTICO_DNS_TIMEOUT_MS", "400"),
    ];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn_with(&vars, options).await?;
    let (_, key) = app.tenant("free").await?;
    Ok((dns, app, key))
}

fn txt_of(domain: &Value) -> (String, String) {
    let r = domain["verification"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap();
    (
        r["name"].as_str().unwrap().to_string(),
        r["value"].as_str().unwrap().to_string(),
    )
}

async fn verify(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app
        .call(Method::POST, &format!("/v1/domains/{id}/verify"), key, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn verify_moves_a_domain_through_its_states() -> anyhow::Result<()> {
    let (dns, app, key) = setup(
        &[("PORTICO_MISCONFIGURED_AFTER", "2")],
        Options::new(true, false),
    )
    .await?;
    let (_, d) = app
        .call(
            Method::POST,
            "/v1/domains",
            &key,
            Some(json!({"hostname": "shop.bobs.io", "target": "a.example.net:80"})),
        )
        .await?;
    let id = d["id"].as_str().unwrap().to_string();
    let (txt_name, txt_value) = txt_of(&d);

    // Nothing in DNS yet: wrong, stays pending, with a hint naming what to add.
    let r = verify(&app, &key, &id).await;
    assert_eq!(r["status"], "pending");
    assert_eq!(r["diagnosis"]["verdict"], "wrong");
    assert!(
        r["diagnosis"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("nxdomain")),
        "{r}"
    );

    // A CNAME to someone else: wrong_cname_target, and the hint says so.
    dns.add("shop.bobs.io", TestRecord::Cname("x.herokudns.com".into()));
    dns.add("x.herokudns.com", TestRecord::A("198.51.100.7".parse()?));
    dns.add(&txt_name, TestRecord::Txt(txt_value.clone()));
    let r = verify(&app, &key, &id).await;
    assert_eq!(r["status"], "pending");
    assert!(
        r["diagnosis"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("wrong_cname_target")),
        "{r}"
    );
    assert!(
        r["diagnosis"]["hint"]
            .as_str()
            .unwrap()
            .contains("x.herokudns.com"),
        "{r}"
    );

    // Fixed: active, domain.verified.
    dns.clear("shop.bobs.io");
    dns.add("shop.bobs.io", TestRecord::Cname(EDGE.into()));
    let r = verify(&app, &key, &id).await;
    assert_eq!(
        (r["status"].clone(), r["diagnosis"]["verdict"].clone()),
        (json!("active"), json!("ok")),
        "{r}"
    );

    // SERVFAIL is unknown and never changes anything, however often.
    dns.servfail("shop.bobs.io");
    for _ in 0..3 {
        let r = verify(&app, &key, &id).await;
        assert_eq!(
            (r["status"].clone(), r["diagnosis"]["verdict"].clone()),
            (json!("active"), json!("unknown")),
            "{r}"
        );
    }

    // Broken routing twice (N = 2) → misconfigured.
    dns.clear("shop.bobs.io");
    dns.add("shop.bobs.io", TestRecord::A("198.51.100.9".parse()?));
    assert_eq!(verify(&app, &key, &id).await["status"], "active");
    let r = verify(&app, &key, &id).await;
    assert_eq!(r["status"], "misconfigured", "{r}");

    // Fixed again → recovered.
    dns.clear("shop.bobs.io");
    dns.add("shop.bobs.io", TestRecord::Cname(EDGE.into()));
    assert_eq!(verify(&app, &key, &id).await["status"], "active");

    let (_, stored) = app
        .call(Method::GET, &format!("/v1/domains/{id}/dns"), &key, None)
        .await?;
    assert_eq!(stored["diagnosis"]["verdict"], "ok");
    assert!(stored["checked_at"].is_string());
    assert_eq!(
        app.event_types(&key).await?,
        vec![
            "domain.created",
            "domain.verified",
            "domain.misconfigured",
            "domain.recovered"
        ]
    );
    let (_, events) = app.call(Method::GET, "/v1/events", &key, None).await?;
    assert_eq!(
        events["items"][1]["data"]["status"], "active",
        "events carry the domain as the API shows it"
    );
    app.stop().await
}

#[tokio::test]
async fn the_job_queue_verifies_domains_without_being_asked() -> anyhow::Result<()> {
    let (dns, app, key) = setup(
        &[("PORTICO_SCHEDULER_TICK_SECS", "1")],
        Options::new(true, true),
    )
    .await?;
    let (_, d) = app
        .call(
            Method::POST,
            "/v1/domains",
            &key,
            Some(json!({"hostname": "bobs.io", "target": "a.example.net:80"})),
        )
        .await?;
    let id = d["id"].as_str().unwrap().to_string();
    // An apex domain: A records to the edge, plus the TXT record.
    assert!(
        d["verification"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "A" && r["value"] == "203.0.113.10")
    );
    let (txt_name, txt_value) = txt_of(&d);
    dns.add("bobs.io", TestRecord::A("203.0.113.10".parse()?));
    dns.add(&txt_name, TestRecord::Txt(txt_value));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, got) = app
            .call(Method::GET, &format!("/v1/domains/{id}"), &key, None)
            .await?;
        if got["status"] == "active" {
            assert_eq!(got["dns"]["verdict"], "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "domain never became active through the job queue: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // allow-sleep: polling with a deadline
    }
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'check_domain_dns'")
            .fetch_one(&app.running().state.pool)
            .await?;
    assert!(jobs >= 1, "the check ran as an apalis job");
    assert!(
        app.event_types(&key)
            .await?
            .contains(&"domain.verified".to_string())
    );
    app.stop().await
}

#[tokio::test]
async fn fan_out_claims_due_domains_once_and_marks_old_pending_ones_stale() -> anyhow::Result<()> {
    let (_dns, app, key) = setup(
        &[("PORTICO_STALE_AFTER_SECS", "3600")],
        Options::new(true, false),
    )
    .await?;
    for name in ["a.bobs.io", "b.bobs.io", "c.bobs.io"] {
        let (s, _) = app
            .call(
                Method::POST,
                "/v1/domains",
                &key,
                Some(json!({"hostname": name, "target": "a.example.net:80"})),
            )
            .await?;
        assert_eq!(s, 201);
    }
    let pool = &app.running().state.pool;
    sqlx::query(
        "UPDATE domains SET created_at = now() - interval '2 hours' WHERE hostname = 'c.bobs.io'",
    )
    .execute(pool)
    .await?;
    let ctx = job_context(&app.running().state);
    assert_eq!(
        scheduler::fan_out(&ctx).await?,
        3,
        "all three are due on creation"
    );
    assert_eq!(
        scheduler::fan_out(&ctx).await?,
        0,
        "claimed domains are not enqueued twice"
    );
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'check_domain_dns'")
            .fetch_one(pool)
            .await?;
    assert_eq!(jobs, 3);
    let (_, page) = app
        .call(Method::GET, "/v1/domains?status=stale", &key, None)
        .await?;
    let stale: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(stale, vec!["c.bobs.io"]);
    assert!(
        app.event_types(&key)
            .await?
            .contains(&"domain.stale".to_string())
    );
    app.stop().await
}
