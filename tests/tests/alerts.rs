//! Ops alerts against a real SMTP conversation: the control plane pages
//! through lettre into a local SMTP sink, and the tests assert on the
//! messages the sink received and on the alert rows.

use portico_control_plane::alerts::{Alerts, Delivery, Subject};
use portico_control_plane::db;
use portico_control_plane::ids::{DomainId, EdgeId};
use portico_e2e::smtp_sink::{Mode, SmtpSink};
use portico_e2e::{OPERATOR_TOKEN, TestApp, eventually};
use serde_json::Value;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

const PASSWORD: &str = "smtp-pw-0f9a8b7c6d5e4f3a";
const TO: [&str; 2] = ["ops@example.test", "oncall@example.test"];

async fn app_with_sink(sink: &SmtpSink) -> anyhow::Result<TestApp> {
    let port = sink.addr.port().to_string();
    let emails = TO.join(",");
    // Retries every 100 ms, long enough for any test to fix the sink first.
    let schedule = ["100ms"; 50].join(",");
    TestApp::spawn(&[
        ("PORTICO_ALERT_EMAILS", &emails),
        ("PORTICO_ALERT_FROM", "Portico <portico@example.test>"),
        ("PORTICO_SMTP_HOST", "127.0.0.1"),
        ("PORTICO_SMTP_PORT", &port),
        ("PORTICO_SMTP_MODE", "plain"),
        ("PORTICO_SMTP_USERNAME", "portico"),
        ("PORTICO_SMTP_PASSWORD", PASSWORD),
        ("PORTICO_SMTP_TIMEOUT_MS", "3000"),
        ("PORTICO_PUBLIC_URL", "https://cp.example.test/"),
        ("PORTICO_ALERT_TICK_MS", "50"),
        ("PORTICO_ALERT_RETRY_SCHEDULE", &schedule),
    ])
    .await
}

fn alerts(app: &TestApp) -> &Alerts {
    &app.running().state.alerts
}

#[tokio::test]
async fn alert_page_and_resolve_send_one_email_each() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let app = app_with_sink(&sink).await?;
    let edge = EdgeId::generate();
    let paged = alerts(&app)
        .page(
            "repair-run-1",
            Subject::Edge(edge),
            "edge fra-1 is unreachable",
            "Restart and replace both failed.",
        )
        .await?;
    assert!(paged.changed);
    assert_eq!(paged.email, Delivery::Sent, "{paged:?}");
    assert!(paged.alert.page_sent_at.is_some() && paged.alert.next_email_at.is_none());
    let got = sink.wait_for(1, 10).await?;
    let page = &got[0];
    assert_eq!(page.from, "portico@example.test");
    assert_eq!(page.to, TO);
    assert_eq!(page.subject(), "[Portico] PAGE: edge fra-1 is unreachable");
    let body = page.body();
    assert!(body.contains("Restart and replace both failed."), "{body}");
    assert!(body.contains(&format!("edge {edge}")), "{body}");
    assert!(
        body.contains(&format!(
            "https://cp.example.test/ops/alerts/{}",
            paged.alert.id
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("https://cp.example.test/ops/edges/{edge}")),
        "{body}"
    );
    assert!(body.contains(" UTC"), "says when: {body}");
    assert_eq!(page.auth, Some(("portico".into(), PASSWORD.into())));

    // Paging again while open: same alert, no second email, even after a sender pass.
    let again = alerts(&app)
        .page(
            "repair-run-1",
            Subject::Edge(edge),
            "edge fra-1 is unreachable",
            "still",
        )
        .await?;
    assert!(!again.changed);
    assert_eq!(again.email, Delivery::Nothing);
    assert_eq!(again.alert.id, paged.alert.id);
    assert_eq!(alerts(&app).deliver_due().await?, 0);
    assert_eq!(sink.attempts(), 1);

    let resolved = alerts(&app)
        .resolve("repair-run-1", "Replaced by fra-2.")
        .await?
        .unwrap();
    assert_eq!(resolved.email, Delivery::Sent);
    let got = sink.wait_for(2, 10).await?;
    assert_eq!(
        got[1].subject(),
        "[Portico] RESOLVED: edge fra-1 is unreachable"
    );
    assert!(got[1].body().contains("Replaced by fra-2."));
    assert_eq!(got[1].to, TO);
    // Resolving again sends nothing; a new page with the key opens a new alert.
    assert!(
        alerts(&app)
            .resolve("repair-run-1", "again")
            .await?
            .is_none()
    );
    assert_eq!(alerts(&app).deliver_due().await?, 0);
    assert_eq!(sink.received().len(), 2);
    let row = db::alerts::get(&app.running().state.pool, paged.alert.id)
        .await?
        .unwrap();
    assert_eq!(
        (
            row.status.as_str(),
            row.page_attempts,
            row.resolution_attempts
        ),
        ("resolved", 1, 1)
    );
    assert!(row.resolution_sent_at.is_some() && row.last_email_error.is_none());
    app.stop().await
}

#[tokio::test]
async fn alert_email_failure_is_recorded_and_retried_until_delivered_once() -> anyhow::Result<()> {
    let mut sink = SmtpSink::start().await?;
    let app = app_with_sink(&sink).await?;
    let pool = app.running().state.pool.clone();

    // The relay answers 451: the row keeps the error, the loop retries.
    sink.set_mode(Mode::Refuse(451));
    let paged = alerts(&app)
        .page(
            "run-smtp-down",
            Subject::Domain(DomainId::generate()),
            "shop.example.com certificate missing",
            "Re-issue failed.",
        )
        .await?;
    let Delivery::Failed(error) = &paged.email else {
        panic!("{:?}", paged.email)
    };
    assert!(error.contains("451"), "{error}");
    let row = db::alerts::get(&pool, paged.alert.id).await?.unwrap();
    assert!(
        row.last_email_error
            .as_deref()
            .unwrap_or_default()
            .contains("451")
    );
    assert!(row.page_sent_at.is_none() && row.next_email_at.is_some() && row.page_attempts >= 1);
    // A few more refused tries happen on their own.
    eventually(10, "retries", || async {
        (sink.attempts() >= 3).then_some(())
    })
    .await?;
    assert!(sink.received().is_empty());

    sink.set_mode(Mode::Accept);
    let got = sink.wait_for(1, 10).await?;
    assert_eq!(
        got[0].subject(),
        "[Portico] PAGE: shop.example.com certificate missing"
    );
    let row = eventually(10, "the row to record the send", || async {
        db::alerts::get(&pool, paged.alert.id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.page_sent_at.is_some())
    })
    .await?;
    assert!(row.next_email_at.is_none() && row.page_attempts >= 4);
    assert_eq!(alerts(&app).deliver_due().await?, 0);

    // Not listening at all: the resolution waits for the relay to come back.
    sink.stop();
    let resolved = alerts(&app)
        .resolve("run-smtp-down", "Issued by the fallback CA.")
        .await?
        .unwrap();
    assert!(
        matches!(resolved.email, Delivery::Failed(_)),
        "{:?}",
        resolved.email
    );
    let row = db::alerts::get(&pool, paged.alert.id).await?.unwrap();
    assert!(row.resolution_sent_at.is_none() && row.last_email_error.is_some());
    sink.restart().await?;
    let got = sink.wait_for(2, 15).await?;
    assert_eq!(
        got[1].subject(),
        "[Portico] RESOLVED: shop.example.com certificate missing"
    );
    eventually(10, "the row to record the resolution", || async {
        db::alerts::get(&pool, paged.alert.id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.resolution_sent_at.is_some())
    })
    .await?;
    // Exactly once each: nothing is due any more, a sender pass sends nothing.
    assert_eq!(alerts(&app).deliver_due().await?, 0);
    let subjects: Vec<String> = sink.received().iter().map(|m| m.subject()).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    app.stop().await
}

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            logs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    if LOGS.set(Mutex::new(Vec::new())).is_ok() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get().unwrap().lock().unwrap()).into_owned()
}

#[tokio::test]
async fn the_smtp_password_never_appears_in_debug_logs_or_errors() -> anyhow::Result<()> {
    capture_logs();
    let sink = SmtpSink::start().await?;
    sink.set_mode(Mode::RefuseAuth);
    let app = app_with_sink(&sink).await?;
    let paged = alerts(&app)
        .page(
            "run-auth",
            Subject::Platform,
            "job queue stalled",
            "No job finished in 10 minutes.",
        )
        .await?;
    let Delivery::Failed(error) = &paged.email else {
        panic!("{:?}", paged.email)
    };
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains(PASSWORD));
    sink.set_mode(Mode::Accept);
    let got = sink.wait_for(1, 10).await?;
    assert_eq!(
        got[0].auth,
        Some(("portico".into(), PASSWORD.into())),
        "the password was used"
    );
    let state = &app.running().state;
    let row = db::alerts::get(&state.pool, paged.alert.id).await?.unwrap();
    for (what, text) in [
        ("settings Debug", format!("{:?}", state.settings)),
        ("alerts Debug", format!("{:?}", state.alerts)),
        ("row", format!("{row:?}")),
        ("outcome", format!("{paged:?}")),
        ("logs", logs()),
    ] {
        assert!(!text.contains(PASSWORD), "{what} shows the password");
    }
    assert!(logs().contains("alert email failed"), "logs were captured");
    let (status, body) = app
        .call(reqwest::Method::GET, "/v1/ops/alerts", OPERATOR_TOKEN, None)
        .await?;
    assert_eq!(status, 200);
    assert!(!body.to_string().contains(PASSWORD));
    app.stop().await
}

#[tokio::test]
async fn alerts_without_smtp_are_stored_not_emailed() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let paged = alerts(&app)
        .page("run-quiet", Subject::Platform, "disk full", "")
        .await?;
    assert_eq!(paged.email, Delivery::NotConfigured);
    assert!(paged.alert.next_email_at.is_none());
    let resolved = alerts(&app)
        .resolve("run-quiet", "cleaned up")
        .await?
        .unwrap();
    assert_eq!(resolved.email, Delivery::NotConfigured);
    assert_eq!(resolved.alert.status, "resolved");
    assert_eq!(alerts(&app).deliver_due().await?, 0);
    assert_eq!(app.count("alerts").await?, 1);
    app.stop().await
}

#[tokio::test]
async fn ops_alerts_needs_the_operator_token_and_lists_open_first() -> anyhow::Result<()> {
    let app = TestApp::spawn(&[]).await?;
    let a = alerts(&app);
    a.page("run-a", Subject::Edge(EdgeId::generate()), "alert a", "")
        .await?;
    a.page("run-b", Subject::Platform, "alert b", "").await?;
    a.page(
        "run-c",
        Subject::Domain(DomainId::generate()),
        "alert c",
        "",
    )
    .await?;
    a.resolve("run-c", "fixed").await?;
    a.page("run-d", Subject::Platform, "alert d", "").await?;
    a.resolve("run-a", "fixed").await?;

    let (_, tenant_key) = app.tenant("free").await?;
    for key in [
        "",
        tenant_key.as_str(),
        "not-the-operator-token-0123456789abcdef",
    ] {
        let (status, body) = app
            .call(reqwest::Method::GET, "/v1/ops/alerts", key, None)
            .await?;
        assert_eq!(status, 401, "{key}: {body}");
    }
    let (status, body) = app
        .call(reqwest::Method::GET, "/v1/ops/alerts", OPERATOR_TOKEN, None)
        .await?;
    assert_eq!(status, 200, "{body}");
    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_string())
            .collect()
    };
    // Open first (newest first), then resolved (newest first).
    assert_eq!(titles(&body), ["alert d", "alert b", "alert c", "alert a"]);
    assert_eq!(body["items"][0]["status"], "open");
    assert_eq!(body["items"][3]["resolution_note"], "fixed");
    assert!(body["next_cursor"].is_null());

    // The same order a page at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/ops/alerts?limit=1&cursor={c}"),
            None => "/v1/ops/alerts?limit=1".to_string(),
        };
        let (status, page) = app
            .call(reqwest::Method::GET, &path, OPERATOR_TOKEN, None)
            .await?;
        assert_eq!(status, 200, "{page}");
        seen.extend(titles(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["alert d", "alert b", "alert c", "alert a"]);
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            "/v1/ops/alerts?cursor=nope",
            OPERATOR_TOKEN,
            None,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "cursor", "{body}");
    app.stop().await
}

#[tokio::test]
async fn an_alert_resolved_before_its_page_went_out_sends_only_the_resolution() -> anyhow::Result<()>
{
    let sink = SmtpSink::start().await?;
    let app = app_with_sink(&sink).await?;
    let pool = app.running().state.pool.clone();
    sink.set_mode(Mode::Refuse(451));
    let paged = alerts(&app)
        .page(
            "run-flap",
            Subject::Platform,
            "queue stalled",
            "No job finished.",
        )
        .await?;
    assert!(
        matches!(paged.email, Delivery::Failed(_)),
        "{:?}",
        paged.email
    );
    alerts(&app)
        .resolve("run-flap", "Jobs move again.")
        .await?
        .unwrap();
    // Once a resolution attempt is recorded, no page send is in flight (one
    // lease at a time) and every later send renders the resolution.
    eventually(10, "a refused resolution attempt", || async {
        db::alerts::get(&pool, paged.alert.id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.resolution_attempts >= 1)
    })
    .await?;
    sink.set_mode(Mode::Accept);
    let got = sink.wait_for(1, 10).await?;
    assert_eq!(got[0].subject(), "[Portico] RESOLVED: queue stalled");
    let body = got[0].body();
    assert!(
        body.contains("never delivered") && body.contains("No job finished."),
        "{body}"
    );
    let row = eventually(10, "the row to record the resolution", || async {
        db::alerts::get(&pool, paged.alert.id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.resolution_sent_at.is_some())
    })
    .await?;
    assert!(row.page_sent_at.is_none() && row.next_email_at.is_none());
    assert_eq!(alerts(&app).deliver_due().await?, 0);
    assert_eq!(sink.received().len(), 1);
    app.stop().await
}
