//! A worker killed (SIGKILL) while the receiver holds its request: the
//! message is not lost. When the dead worker's lease ends another process
//! sends it again, with the same `webhook-id`, and it verifies.

use portico_e2e::cluster::ControlPlane;
use portico_e2e::webhook_receiver::{Mode, Receiver, verify_with_reference};
use portico_e2e::{eventually, fresh_database, tenant_key};
use serde_json::{Value, json};

const SETTINGS: &[(&str, &str)] = &[
    ("PORTICO_WORKER_IN_SERVE", "true"),
    ("PORTICO_WEBHOOK_ALLOW_HTTP", "true"),
    ("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("PORTICO_WEBHOOK_TICK_MS", "50"),
    // The receiver holds the first request; the kill comes long before
    // this timeout. A message whose worker died is due again when its
    // lease ends (a few seconds here, timeout + 30 s by default).
    ("PORTICO_WEBHOOK_TIMEOUT_MS", "5000"),
    ("PORTICO_WEBHOOK_LEASE_MS", "6000"),
];

#[tokio::test]
async fn webhook_worker_killed_mid_delivery_is_redelivered_with_the_same_id() -> anyhow::Result<()>
{
    let db = fresh_database().await?;
    let mut first = ControlPlane::start(&db, SETTINGS).await?;
    let base = first.base();
    let key = tenant_key(&base).await?;
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await?;
    receiver.set_mode(Mode::Hold);
    let created: Value = http
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("/"), "event_types": ["domain.created"]}))
        .send()
        .await?
        .json()
        .await?;
    let secret = created["secret"].as_str().unwrap().to_string();
    let endpoint = created["endpoint"]["id"].as_str().unwrap().to_string();
    let resp = http
        .post(format!("{base}/v1/domains"))
        .bearer_auth(&key)
        .json(&json!({"hostname": "kill.example.com", "target": "https://app.example.net"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);

    let held = eventually(30, "the held request", || async {
        receiver.received().into_iter().next()
    })
    .await?;
    first.kill();
    receiver.set_mode(Mode::Status(200));
    let pool = sqlx::PgPool::connect(&db).await?;
    let (stranded, recorded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_messages WHERE status = 'pending' AND lease_token IS NOT NULL),
                (SELECT count(*) FROM webhook_attempts)",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        (stranded, recorded),
        (1, 0),
        "the killed worker left its message leased, its attempt unrecorded"
    );

    let second = ControlPlane::start(&db, SETTINGS).await?;
    let delivered = eventually(30, "redelivery by the second worker", || async {
        receiver.accepted().into_iter().next()
    })
    .await?;
    assert_eq!(delivered.id, held.id, "the same webhook-id");
    assert_eq!(delivered.body, held.body, "the same body");
    assert_eq!(
        verify_with_reference(&secret, &[held, delivered])?,
        [true, true]
    );
    let page: Value = http
        .get(format!(
            "{}/v1/webhook-endpoints/{endpoint}/messages",
            second.base()
        ))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "succeeded");
    pool.close().await;
    Ok(())
}
