//! Webhook delivery end to end: a real control plane with its workers, a
//! local receiver on 127.0.0.1, signatures checked in Rust and by the
//! reference Standard Webhooks library (python3 `standardwebhooks`).

use chrono::{DateTime, Utc};
use portico_control_plane::app::Options;
use portico_e2e::webhook_receiver::{
    FAST_DELIVERY, Mode, Receiver, attempts, create_endpoint, messages, verify_with_reference,
};
use portico_e2e::{TestApp, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

async fn app_with(extra: &[(&str, &str)]) -> anyhow::Result<TestApp> {
    let mut vars: Vec<(&str, &str)> = FAST_DELIVERY.to_vec();
    vars.extend_from_slice(extra);
    TestApp::spawn_with(&vars, Options::new(true, true)).await
}

async fn add_domain(app: &TestApp, key: &str, host: &str) -> anyhow::Result<String> {
    let (status, d) = app
        .call(
            Method::POST,
            "/v1/domains",
            key,
            Some(json!({"hostname": host, "target": "https://app.example.net"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "domain create: {status} {d}");
    Ok(d["id"].as_str().unwrap_or_default().to_string())
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| s.parse().ok()).unwrap()
}

#[tokio::test]
async fn webhook_domain_created_is_signed_and_verified_by_the_reference_library()
-> anyhow::Result<()> {
    let app = app_with(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let receiver = Receiver::start().await?;
    let (endpoint, secret) = create_endpoint(
        &app,
        &key,
        json!({"url": receiver.url("/hooks"), "description": "ops"}),
    )
    .await?;
    assert!(secret.starts_with("whsec_"));
    add_domain(&app, &key, "shop.example.com").await?;

    let got = eventually(20, "domain.created at the receiver", || async {
        receiver
            .accepted()
            .into_iter()
            .find(|r| r.event_type() == "domain.created")
    })
    .await?;
    assert!(got.id.starts_with("msg_"), "{}", got.id);
    assert!(got.verify(&secret), "Rust verification");
    assert_eq!(
        verify_with_reference(&secret, std::slice::from_ref(&got))?,
        [true],
        "reference library"
    );
    assert_eq!(
        verify_with_reference(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            std::slice::from_ref(&got)
        )?,
        [false],
        "a wrong secret must not verify"
    );
    let body = got.json();
    assert_eq!(body["data"]["hostname"], "shop.example.com");
    assert_eq!(body["data"]["status"], "pending");
    assert!(body["id"].is_string() && body["timestamp"].is_string());

    let msgs = eventually(10, "the message to be recorded as succeeded", || async {
        let m = messages(&app, &key, &endpoint).await.ok()?;
        m.iter().all(|m| m["status"] == "succeeded").then_some(m)
    })
    .await?;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["webhook_id"], json!(got.id));
    let tries = attempts(&app, &key, &endpoint, msgs[0]["id"].as_str().unwrap()).await?;
    assert_eq!(tries.len(), 1);
    assert_eq!(
        (
            tries[0]["status"].clone(),
            tries[0]["response_status"].clone()
        ),
        (json!("succeeded"), json!(200))
    );
    assert_eq!(
        tries[0]["response_body"].as_str().unwrap().len(),
        1024,
        "bodies are stored truncated to 1 KiB"
    );
    assert!(tries[0]["latency_ms"].as_i64().is_some());
    assert!(tries[0]["next_attempt_at"].is_null());
    app.stop().await
}

#[tokio::test]
async fn webhook_receiver_down_then_back_gets_every_event_with_stable_ids() -> anyhow::Result<()> {
    let app = app_with(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let mut receiver = Receiver::start().await?;
    receiver.stop(); // connections refused from here on
    let (endpoint, secret) = create_endpoint(&app, &key, json!({"url": receiver.url("/")})).await?;
    for host in ["a.example.com", "b.example.com", "c.example.com"] {
        add_domain(&app, &key, host).await?;
    }
    eventually(30, "every message to fail at least twice", || async {
        let m = messages(&app, &key, &endpoint).await.ok()?;
        (m.len() == 3 && m.iter().all(|m| m["attempts"].as_i64() >= Some(2))).then_some(())
    })
    .await?;
    receiver.restart().await?;
    let msgs = eventually(30, "every message delivered", || async {
        let m = messages(&app, &key, &endpoint).await.ok()?;
        m.iter().all(|m| m["status"] == "succeeded").then_some(m)
    })
    .await?;

    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m["webhook_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    let accepted = receiver.accepted();
    let per_id: HashMap<&str, usize> = accepted.iter().fold(HashMap::new(), |mut acc, r| {
        *acc.entry(r.id.as_str()).or_default() += 1;
        acc
    });
    assert_eq!(
        per_id.keys().map(|k| k.to_string()).collect::<HashSet<_>>(),
        ids,
        "every event arrived, under its message's id"
    );
    let hosts: HashSet<String> = accepted
        .iter()
        .map(|r| {
            r.json()["data"]["hostname"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(hosts.len(), 3);
    assert!(
        verify_with_reference(&secret, &accepted)?
            .iter()
            .all(|ok| *ok)
    );

    let schedule = std::time::Duration::from_millis(200);
    for m in &msgs {
        let tries = attempts(&app, &key, &endpoint, m["id"].as_str().unwrap()).await?;
        let (last, failed) = tries.split_last().unwrap();
        assert!(failed.len() >= 2);
        assert_eq!(last["status"], "succeeded");
        for (i, t) in tries.iter().enumerate() {
            assert_eq!(t["attempt"], json!(i + 1));
        }
        for pair in failed.iter().zip(tries.iter().skip(1)) {
            let (f, next) = pair;
            assert_eq!(f["status"], "failed");
            assert!(
                f["response_status"].is_null()
                    && f["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{f}"
            );
            let due = time(&f["next_attempt_at"]);
            assert!(
                due - time(&f["started_at"]) >= chrono::Duration::from_std(schedule)?,
                "the schedule's delay is kept: {f}"
            );
            assert!(
                time(&next["started_at"]) >= due,
                "no attempt before it is due"
            );
        }
    }
    app.stop().await
}

#[tokio::test]
async fn webhook_410_gone_disables_the_endpoint_at_once() -> anyhow::Result<()> {
    let app = app_with(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let gone = Receiver::start().await?;
    gone.set_mode(Mode::Status(410));
    let watcher = Receiver::start().await?;
    let (endpoint, _) = create_endpoint(&app, &key, json!({"url": gone.url("/")})).await?;
    let (_, watcher_secret) = create_endpoint(
        &app,
        &key,
        json!({"url": watcher.url("/"), "event_types": ["webhook_endpoint.disabled"]}),
    )
    .await?;
    add_domain(&app, &key, "gone.example.com").await?;

    let notice = eventually(20, "webhook_endpoint.disabled at the watcher", || async {
        watcher
            .accepted()
            .into_iter()
            .find(|r| r.event_type() == "webhook_endpoint.disabled")
    })
    .await?;
    assert!(notice.verify(&watcher_secret));
    assert_eq!(notice.json()["data"]["id"], json!(endpoint));
    assert_eq!(notice.json()["data"]["disabled_reason"], "gone");
    let (_, e) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(
        (e["enabled"].clone(), e["disabled_reason"].clone()),
        (json!(false), json!("gone"))
    );
    assert_eq!(gone.received().len(), 1, "no retry after 410");
    let m = messages(&app, &key, &endpoint).await?;
    assert_eq!(
        (m[0]["status"].clone(), m[0]["attempts"].clone()),
        (json!("failed"), json!(1))
    );
    assert!(
        app.event_types(&key)
            .await?
            .contains(&"webhook_endpoint.disabled".to_string())
    );
    app.stop().await
}

#[tokio::test]
async fn webhook_endpoint_failing_continuously_is_disabled_with_a_notice() -> anyhow::Result<()> {
    // The 5-day limit, compressed to one second.
    let app = app_with(&[("PORTICO_WEBHOOK_DISABLE_AFTER_SECS", "1")]).await?;
    let (_, key) = app.tenant("free").await?;
    let failing = Receiver::start().await?;
    failing.set_mode(Mode::Status(500));
    let watcher = Receiver::start().await?;
    let (endpoint, _) = create_endpoint(&app, &key, json!({"url": failing.url("/")})).await?;
    create_endpoint(
        &app,
        &key,
        json!({"url": watcher.url("/"), "event_types": ["webhook_endpoint.disabled"]}),
    )
    .await?;
    add_domain(&app, &key, "flaky.example.com").await?;

    let notice = eventually(30, "webhook_endpoint.disabled", || async {
        watcher
            .accepted()
            .into_iter()
            .find(|r| r.event_type() == "webhook_endpoint.disabled")
    })
    .await?;
    assert_eq!(notice.json()["data"]["id"], json!(endpoint));
    assert_eq!(notice.json()["data"]["disabled_reason"], "failing");
    let (_, e) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            &key,
            None,
        )
        .await?;
    assert_eq!(e["enabled"], false);
    let m = messages(&app, &key, &endpoint).await?;
    assert!(
        m.iter()
            .all(|m| m["status"] == "cancelled" || m["status"] == "failed"),
        "{m:?}"
    );
    let tries = attempts(&app, &key, &endpoint, m[0]["id"].as_str().unwrap()).await?;
    assert!(tries.len() >= 2 && tries.iter().all(|t| t["response_status"] == 500));

    // Re-enabling starts over, and a replay sends the event again.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            &key,
            Some(json!({"enabled": true})),
        )
        .await?;
    assert_eq!(status, 200);
    failing.set_mode(Mode::Status(204));
    let (status, r) = replay_last_minutes(&app, &key, &endpoint, 5).await?;
    // Its domain.created, and the notice of its own disabling (no filter).
    assert_eq!((status, r["queued"].clone()), (202, json!(2)), "{r}");
    eventually(20, "the replayed event to be accepted", || async {
        failing
            .accepted()
            .into_iter()
            .find(|r| r.event_type() == "domain.created")
    })
    .await?;
    app.stop().await
}

/// `POST .../replay?since=` the last `minutes` for `endpoint`.
async fn replay_last_minutes(
    app: &TestApp,
    key: &str,
    endpoint: &str,
    minutes: i64,
) -> anyhow::Result<(u16, Value)> {
    let since = (Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339();
    let path = format!(
        "/v1/webhook-endpoints/{endpoint}/replay?since={}",
        urlencode(&since)
    );
    app.call(Method::POST, &path, key, None).await
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn webhook_secret_rotation_signs_with_both_secrets_during_the_overlap() -> anyhow::Result<()>
{
    let app = app_with(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let receiver = Receiver::start().await?;
    let (endpoint, old) = create_endpoint(&app, &key, json!({"url": receiver.url("/")})).await?;
    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(rotated["endpoint"]["previous_secret_expires_at"].is_string());
    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            &key,
            None,
        )
        .await?;
    assert!(
        shown.get("secret").is_none() && !shown.to_string().contains("whsec_"),
        "the secret is shown only once"
    );

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{endpoint}/test"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 202);
    let got = eventually(20, "webhook.test at the receiver", || async {
        receiver
            .accepted()
            .into_iter()
            .find(|r| r.event_type() == "webhook.test")
    })
    .await?;
    assert_eq!(got.signature.split(' ').count(), 2, "{}", got.signature);
    assert!(got.verify(&old) && got.verify(&new));
    assert_eq!(
        verify_with_reference(&old, std::slice::from_ref(&got))?,
        [true]
    );
    assert_eq!(verify_with_reference(&new, &[got])?, [true]);
    app.stop().await?;

    // With no overlap, only the new secret signs.
    let app = app_with(&[("PORTICO_WEBHOOK_SECRET_OVERLAP_SECS", "0")]).await?;
    let (_, key) = app.tenant("free").await?;
    let receiver = Receiver::start().await?;
    let (endpoint, old) = create_endpoint(&app, &key, json!({"url": receiver.url("/")})).await?;
    let (_, rotated) = app
        .call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
            &key,
            None,
        )
        .await?;
    let new = rotated["secret"].as_str().unwrap().to_string();
    app.call(
        Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/test"),
        &key,
        None,
    )
    .await?;
    let got = eventually(20, "webhook.test", || async {
        receiver.accepted().into_iter().next()
    })
    .await?;
    assert_eq!(
        verify_with_reference(&new, std::slice::from_ref(&got))?,
        [true]
    );
    assert_eq!(verify_with_reference(&old, &[got])?, [false]);
    app.stop().await
}

#[tokio::test]
async fn webhook_filter_retry_and_replay_keep_the_webhook_id() -> anyhow::Result<()> {
    let app = app_with(&[]).await?;
    let (_, key) = app.tenant("free").await?;
    let receiver = Receiver::start().await?;
    let (endpoint, _) = create_endpoint(
        &app,
        &key,
        json!({"url": receiver.url("/"), "event_types": ["domain.deleted"]}),
    )
    .await?;
    let domain = add_domain(&app, &key, "filter.example.com").await?;
    app.call(Method::DELETE, &format!("/v1/domains/{domain}"), &key, None)
        .await?;
    let first = eventually(20, "domain.deleted", || async {
        receiver.accepted().into_iter().next()
    })
    .await?;
    assert_eq!(first.event_type(), "domain.deleted");
    let m = messages(&app, &key, &endpoint).await?;
    assert_eq!(
        m.len(),
        1,
        "the filter let only domain.deleted through: {m:?}"
    );
    let msg = m[0]["id"].as_str().unwrap().to_string();

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{endpoint}/messages/{msg}/retry"),
            &key,
            None,
        )
        .await?;
    assert_eq!(status, 202);
    eventually(20, "the retried message", || async {
        (receiver.accepted().len() == 2).then_some(())
    })
    .await?;
    let (status, r) = replay_last_minutes(&app, &key, &endpoint, 5).await?;
    assert_eq!((status, r["queued"].clone()), (202, json!(1)), "{r}");
    eventually(20, "the replayed message", || async {
        (receiver.accepted().len() == 3).then_some(())
    })
    .await?;
    let ids: HashSet<String> = receiver.accepted().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "retry and replay resend the same message id");
    let event_ids: HashSet<Value> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["id"].clone())
        .collect();
    assert_eq!(event_ids.len(), 1, "and the same event id");
    assert_eq!(attempts(&app, &key, &endpoint, &msg).await?.len(), 3);
    app.stop().await
}

#[tokio::test]
async fn webhook_timeouts_and_redirects_are_failures_and_redirects_are_not_followed()
-> anyhow::Result<()> {
    let app = app_with(&[
        ("PORTICO_WEBHOOK_TIMEOUT_MS", "300"),
        ("PORTICO_WEBHOOK_LEASE_MS", "5000"),
        ("PORTICO_WEBHOOK_RETRY_SCHEDULE", "0s"),
    ])
    .await?;
    let (_, key) = app.tenant("free").await?;
    let slow = Receiver::start().await?;
    slow.set_mode(Mode::Hold);
    let target = Receiver::start().await?;
    let redirecting = Receiver::start().await?;
    redirecting.set_mode(Mode::Redirect(target.addr));
    let (slow_id, _) = create_endpoint(&app, &key, json!({"url": slow.url("/")})).await?;
    let (redirect_id, _) =
        create_endpoint(&app, &key, json!({"url": redirecting.url("/")})).await?;
    for id in [&slow_id, &redirect_id] {
        app.call(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/test"),
            &key,
            None,
        )
        .await?;
    }
    for (id, what) in [(&slow_id, "the timeout"), (&redirect_id, "the redirect")] {
        let m = eventually(20, what, || async {
            messages(&app, &key, id)
                .await
                .ok()?
                .into_iter()
                .find(|m| m["status"] == "failed")
        })
        .await?;
        let tries = attempts(&app, &key, id, m["id"].as_str().unwrap()).await?;
        assert_eq!(tries.len(), 1, "the one-entry schedule allows one attempt");
        if id == &slow_id {
            assert_eq!(tries[0]["error"], "timed out after 300 ms", "{}", tries[0]);
        } else {
            assert_eq!(tries[0]["response_status"], 307, "{}", tries[0]);
        }
    }
    assert!(
        target.received().is_empty(),
        "the redirect was not followed"
    );
    app.stop().await
}

/// A backlog behind a slow endpoint stays in the table: each dispatcher
/// leases at most 4 × concurrency messages at a time.
#[tokio::test]
async fn webhook_dispatcher_caps_what_it_has_in_flight() -> anyhow::Result<()> {
    use portico_control_plane::jobs::webhooks::{Pass, tick_once};
    let mut vars: Vec<(&str, &str)> = FAST_DELIVERY.to_vec();
    vars.push(("PORTICO_WEBHOOK_CONCURRENCY", "1"));
    let app = TestApp::spawn(&vars).await?; // no workers: the test drives the passes
    let (_, key) = app.tenant("free").await?;
    let (endpoint, _) = create_endpoint(&app, &key, json!({"url": "http://127.0.0.1:9/"})).await?;
    for _ in 0..10 {
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/v1/webhook-endpoints/{endpoint}/test"),
                &key,
                None,
            )
            .await?;
        assert_eq!(status, 202);
    }
    let ctx = portico_control_plane::app::job_context(&app.running().state);
    let (one, two) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert_eq!(
        tick_once(&ctx, one).await?,
        Pass {
            enqueued: 4,
            full: true
        }
    );
    assert_eq!(
        tick_once(&ctx, one).await?,
        Pass {
            enqueued: 0,
            full: true
        }
    );
    assert_eq!(
        tick_once(&ctx, two).await?,
        Pass {
            enqueued: 4,
            full: true
        }
    );
    assert_eq!(
        tick_once(&ctx, two).await?,
        Pass {
            enqueued: 0,
            full: true
        }
    );
    let three = uuid::Uuid::now_v7();
    assert_eq!(
        tick_once(&ctx, three).await?,
        Pass {
            enqueued: 2,
            full: false
        }
    );
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'deliver_webhook'")
            .fetch_one(&app.running().state.pool)
            .await?;
    assert_eq!(queued, 10, "one job per leased message");
    app.stop().await
}

/// Dispatchers racing over the same outbox create one message per event
/// and endpoint; retention forgets finished messages only.
#[tokio::test]
async fn webhook_dispatch_is_idempotent_and_retention_keeps_pending_messages() -> anyhow::Result<()>
{
    use portico_control_plane::db::webhook_messages::prune;
    use portico_control_plane::webhooks::dispatch::dispatch;
    let app = TestApp::spawn(FAST_DELIVERY).await?; // no workers
    let (_, key) = app.tenant("pro").await?;
    for _ in 0..2 {
        create_endpoint(&app, &key, json!({"url": "http://127.0.0.1:9/"})).await?;
    }
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"hostname": format!("d{i}.example.com"), "target": "10.0.0.1:80"}))
        .collect();
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/domains:batch",
            &key,
            Some(json!({"items": items})),
        )
        .await?;
    assert_eq!(status, 200);
    let pool = app.running().state.pool.clone();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn({
                let pool = pool.clone();
                async move { dispatch(&pool).await }
            })
        })
        .collect();
    let mut created = 0;
    for r in racers {
        created += r.await??;
    }
    assert_eq!(created, 600, "300 events × 2 endpoints, each once");
    assert_eq!(dispatch(&pool).await?, 0);
    assert_eq!(app.count("webhook_messages").await?, 600);

    sqlx::query(
        "UPDATE webhook_messages SET status = 'succeeded', updated_at = now() - interval '2 days'",
    )
    .execute(&pool)
    .await?;
    let (endpoint, _) = create_endpoint(&app, &key, json!({"url": "http://127.0.0.1:9/"})).await?;
    app.call(
        Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/test"),
        &key,
        None,
    )
    .await?;
    sqlx::query("UPDATE webhook_messages SET updated_at = now() - interval '2 days' WHERE status = 'pending'")
        .execute(&pool)
        .await?;
    assert_eq!(
        prune(&pool, std::time::Duration::from_secs(86_400)).await?,
        600
    );
    assert_eq!(
        app.count("webhook_messages").await?,
        1,
        "the pending message stays"
    );
    app.stop().await
}
