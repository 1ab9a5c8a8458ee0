//! One delivery attempt of one leased message: sign, send, record, decide.
//! Success ends the endpoint's failure run; a failure schedules the next
//! attempt from the retry schedule; `410 Gone` or a failure run longer
//! than the configured limit disables the endpoint, cancels its pending
//! messages and tells the tenant with a `webhook_endpoint.disabled` event.

use super::{Payload, Webhooks, signature, ssrf, webhook_id};
use crate::api::webhooks::EndpointView;
use crate::db;
use crate::db::events::EventType;
use crate::db::webhook_messages::{AttemptOutcome, MessageRecord};
use crate::db::webhooks::EndpointRecord;
use crate::ids::TenantId;
use chrono::Utc;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Response bodies are stored up to this many bytes.
pub const MAX_STORED_BODY: usize = 1024;

/// What the receiver did (or why nothing was received).
#[derive(Debug, Default)]
pub struct Sent {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub error: Option<String>,
}

impl Sent {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The delay before attempt `done + 1` after `done` failed attempts, or
/// `None` when the schedule is exhausted.
pub fn next_delay(schedule: &[Duration], done: usize) -> Option<Duration> {
    schedule.get(done).copied()
}

/// Delivers message `id` if `token` still holds its lease.
pub async fn deliver(w: &Webhooks, pool: &PgPool, id: Uuid, token: Uuid) -> anyhow::Result<()> {
    let Some(msg) = db::webhook_messages::leased(pool, id, token).await? else {
        return Ok(()); // Already delivered, or the lease passed to another job.
    };
    let tenant = TenantId::from_uuid(msg.tenant_id);
    let endpoint = match db::webhooks::get(pool, tenant, msg.endpoint_id).await? {
        Some(e) if e.enabled => e,
        _ => return Ok(db::webhook_messages::cancel(pool, id).await?),
    };
    let started_at = Utc::now();
    let clock = Instant::now();
    let sent = send(w, &endpoint, &msg).await;
    let latency_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
    let gone = sent.status == Some(410);
    let attempt = msg.attempts.saturating_add(1);
    let outcome = AttemptOutcome {
        attempt,
        started_at,
        succeeded: sent.succeeded(),
        response_status: sent.status.map(i32::from),
        latency_ms,
        retry_in: match (sent.succeeded(), gone) {
            (false, false) => next_delay(
                &w.settings.webhooks.retry_schedule,
                usize::try_from(attempt).unwrap_or(usize::MAX),
            ),
            _ => None,
        },
        response_body: sent.body,
        error: sent.error,
    };
    tracing::debug!(job = "deliver_webhook", message = %id, attempt, status = ?outcome.response_status, "webhook attempt");
    record(w, pool, &endpoint, id, token, &outcome, gone).await
}

async fn record(
    w: &Webhooks,
    pool: &PgPool,
    endpoint: &EndpointRecord,
    id: Uuid,
    token: Uuid,
    outcome: &AttemptOutcome,
    gone: bool,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    db::webhook_messages::record_attempt(&mut tx, id, token, outcome).await?;
    let disable = if outcome.succeeded {
        db::webhooks::record_success(&mut *tx, endpoint.id).await?;
        None
    } else if gone {
        Some("gone")
    } else if db::webhooks::record_failure(&mut *tx, endpoint.id, w.settings.webhooks.disable_after)
        .await?
    {
        Some("failing")
    } else {
        None
    };
    if let Some(reason) = disable
        && let Some(disabled) = db::webhooks::disable(&mut *tx, endpoint.id, reason).await?
    {
        db::webhook_messages::cancel_pending(&mut *tx, endpoint.id).await?;
        let data = EndpointView::new(&disabled).to_json();
        db::events::append(
            &mut *tx,
            TenantId::from_uuid(endpoint.tenant_id),
            EventType::WebhookEndpointDisabled,
            endpoint.id,
            &data,
        )
        .await?;
        tracing::info!(endpoint = %endpoint.id, reason, "webhook endpoint disabled");
    }
    tx.commit().await?;
    Ok(())
}

/// Signs and sends; never fails, every problem becomes `Sent::error`.
async fn send(w: &Webhooks, endpoint: &EndpointRecord, msg: &MessageRecord) -> Sent {
    match try_send(w, endpoint, msg).await {
        Ok(sent) => sent,
        Err(error) => Sent {
            error: Some(error),
            ..Sent::default()
        },
    }
}

async fn try_send(
    w: &Webhooks,
    endpoint: &EndpointRecord,
    msg: &MessageRecord,
) -> Result<Sent, String> {
    let url = ssrf::parse_url(&endpoint.url, w.settings.webhooks.allow_http)
        .map_err(|e| format!("refused: {e}"))?;
    if !matches!(url.host(), Some(url::Host::Domain(_))) {
        // Names are checked by the client's resolver; literal addresses here.
        w.guard
            .check(&url)
            .await
            .map_err(|e| format!("refused: {e}"))?;
    }
    let secrets = w
        .signing_secrets(endpoint, Utc::now())
        .map_err(|e| format!("cannot open the signing secret: {e}"))?;
    let body = serde_json::to_vec(&Payload {
        id: msg.event_id,
        event_type: &msg.event_type,
        timestamp: msg.event_created_at,
        data: &msg.data,
    })
    .map_err(|e| e.to_string())?;
    let msg_id = webhook_id(msg.id);
    let timestamp = Utc::now().timestamp();
    let resp = w
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature::signature_header(&secrets, &msg_id, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e, w.settings.webhooks.timeout))?;
    let status = resp.status().as_u16();
    let body = read_capped(resp).await;
    Ok(Sent {
        status: Some(status),
        body: Some(body),
        error: None,
    })
}

/// The first [`MAX_STORED_BODY`] bytes of the body (lossy UTF-8); a body
/// that breaks off early is kept as far as it came.
async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_STORED_BODY {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_STORED_BODY);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The error and its causes, one line (connect refused, TLS, refusal...).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_followed_then_ends() {
        let s = crate::settings::parse_schedule("0s,5s,5m").unwrap();
        assert_eq!(next_delay(&s, 1), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&s, 2), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&s, 3), None);
    }
}
