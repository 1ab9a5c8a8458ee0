//! What was sent to an endpoint and what came back: messages, their
//! attempts, a manual retry, a replay of a time range and a test message.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::TenantAuth;
use super::pagination::{Page, PageParams};
use super::webhooks::find;
use crate::db;
use crate::db::events::EventType;
use crate::db::webhook_messages::{AttemptRecord, MessageRecord, NewMessage};
use crate::webhooks::webhook_id;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Replays reach back at most this far.
pub const REPLAY_MAX_AGE_DAYS: i64 = 30;
/// Events one replay call queues at most; `more` says when there are others.
pub const REPLAY_MAX_EVENTS: i64 = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt of this message.
    pub webhook_id: String,
    #[schema(value_type = String, format = Uuid)]
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `succeeded`, `failed` (the schedule ran out) or
    /// `cancelled` (the endpoint was disabled).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_response_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MessageView {
    fn new(m: &MessageRecord) -> MessageView {
        MessageView {
            id: m.id,
            webhook_id: webhook_id(m.id),
            event_id: m.event_id,
            event_type: m.event_type.clone(),
            status: m.status.clone(),
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            last_response_status: m.last_response_status,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// 1 for the first attempt of the message.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// `succeeded` (a 2xx answer) or `failed`.
    pub status: String,
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    /// The first 1 KiB of the answer.
    pub response_body: Option<String>,
    /// Why nothing usable came back: refused, connect error, timeout...
    pub error: Option<String>,
    /// When the next attempt is due, if there is one.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl AttemptView {
    fn new(a: &AttemptRecord) -> AttemptView {
        AttemptView {
            id: a.id,
            attempt: a.attempt,
            started_at: a.started_at,
            status: a.outcome.clone(),
            response_status: a.response_status,
            latency_ms: a.latency_ms,
            response_body: a.response_body.clone(),
            error: a.error.clone(),
            next_attempt_at: a.next_attempt_at,
        }
    }
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/messages", tag = "webhooks", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<MessageView>), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<MessageView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (after, limit) = params.parse()?;
    let e = find(&state, &auth, &id).await?;
    let rows =
        db::webhook_messages::list(&state.pool, auth.tenant.id, e.id, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |m| m.id,
        MessageView::new,
    )))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/messages/{msg}/attempts", tag = "webhooks",
    params(("id" = String, Path), ("msg" = String, Path, description = "message id or webhook-id"), PageParams),
    responses((status = 200, body = Page<AttemptView>), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path((id, msg)): Path<(String, String)>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<AttemptView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (after, limit) = params.parse()?;
    let m = find_message(&state, &auth, &id, &msg).await?;
    let rows = db::webhook_messages::attempts(&state.pool, m.id, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |a| a.id,
        AttemptView::new,
    )))
}

/// Sends the message again now, whatever its state (one more attempt; if
/// it fails, the schedule goes on from where it was).
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/messages/{msg}/retry", tag = "webhooks",
    params(("id" = String, Path), ("msg" = String, Path)),
    responses((status = 202, body = MessageView), (status = 404, body = Problem), (status = 409, body = Problem, description = "the endpoint is disabled")),
    security(("api_key" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path((id, msg)): Path<(String, String)>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let m = find_message(&state, &auth, &id, &msg).await?;
    enabled(&find(&state, &auth, &id).await?)?;
    let m = db::webhook_messages::retry_now(&state.pool, auth.tenant.id, m.endpoint_id, m.id)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    Ok((StatusCode::ACCEPTED, Json(MessageView::new(&m))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {
    /// RFC 3339 time; events created at or after it are sent again (at most 30 days back).
    pub since: String,
    /// RFC 3339 time, default now; events created before it.
    pub until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayResult {
    /// Messages created or made pending again.
    pub queued: u64,
    /// More events than one call replays (10,000) are in the range: call
    /// again with `since` = `next_since`.
    pub more: bool,
    pub next_since: Option<DateTime<Utc>>,
}

/// Sends the endpoint's matching events of a time range again (same
/// `webhook-id` for events it already had a message for).
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/replay", tag = "webhooks", params(("id" = String, Path), ReplayParams),
    responses((status = 202, body = ReplayResult), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    params: Result<Query<ReplayParams>, QueryRejection>,
) -> Result<(StatusCode, Json<ReplayResult>), ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (since, until) = replay_range(&params, Utc::now())?;
    let e = find(&state, &auth, &id).await?;
    enabled(&e)?;
    let events = db::webhook_messages::events_between(
        &state.pool,
        auth.tenant.id,
        since,
        until,
        REPLAY_MAX_EVENTS,
    )
    .await?;
    let more = events.len() as i64 == REPLAY_MAX_EVENTS;
    let next_since = events.last().filter(|_| more).map(|ev| ev.created_at);
    let msgs: Vec<NewMessage> = events
        .into_iter()
        .filter(|ev| e.wants(&ev.event_type))
        .map(|ev| NewMessage {
            id: Uuid::now_v7(),
            tenant_id: ev.tenant_id,
            endpoint_id: e.id,
            event_id: ev.id,
            event_type: ev.event_type,
            event_created_at: ev.created_at,
            data: ev.data,
        })
        .collect();
    let mut conn = state.pool.acquire().await?;
    let queued = db::webhook_messages::insert(&mut conn, &msgs, true).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResult {
            queued,
            more,
            next_since,
        }),
    ))
}

fn replay_range(
    p: &ReplayParams,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let time = |field: &str, v: &str| {
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::field(
                    field,
                    "invalid_time",
                    "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
                )
            })
    };
    let since = time("since", &p.since)?;
    let until = match &p.until {
        Some(u) => time("until", u)?,
        None => now,
    };
    if since < now - chrono::Duration::days(REPLAY_MAX_AGE_DAYS) {
        return Err(ApiError::field(
            "since",
            "too_old",
            format!("at most {REPLAY_MAX_AGE_DAYS} days back"),
        ));
    }
    if since >= until {
        return Err(ApiError::field(
            "until",
            "empty_range",
            "must be after `since`",
        ));
    }
    Ok((since, until))
}

/// Sends a `webhook.test` message to this endpoint only, whatever its filter.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 202, body = MessageView), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn test(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let e = find(&state, &auth, &id).await?;
    enabled(&e)?;
    let msg = NewMessage {
        id: Uuid::now_v7(),
        tenant_id: e.tenant_id,
        endpoint_id: e.id,
        event_id: Uuid::now_v7(),
        event_type: EventType::WebhookTest.as_str().into(),
        event_created_at: Utc::now(),
        data: serde_json::json!({"endpoint_id": e.id, "message": "This is a test event from Portico."}),
    };
    let mut conn = state.pool.acquire().await?;
    db::webhook_messages::insert(&mut conn, std::slice::from_ref(&msg), false).await?;
    drop(conn);
    let m = db::webhook_messages::get(&state.pool, auth.tenant.id, e.id, msg.id)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    Ok((StatusCode::ACCEPTED, Json(MessageView::new(&m))))
}

fn enabled(e: &db::webhooks::EndpointRecord) -> Result<(), ApiError> {
    if e.enabled {
        Ok(())
    } else {
        Err(ApiError::Conflict(
            "the endpoint is disabled; enable it first (PATCH {\"enabled\": true})".into(),
        ))
    }
}

async fn find_message(
    state: &AppState,
    auth: &TenantAuth,
    id: &str,
    msg: &str,
) -> Result<MessageRecord, ApiError> {
    let e = find(state, auth, id).await?;
    let msg_id = Uuid::parse_str(msg.strip_prefix("msg_").unwrap_or(msg))
        .map_err(|_| ApiError::NotFound("message"))?;
    db::webhook_messages::get(&state.pool, auth.tenant.id, e.id, msg_id)
        .await?
        .ok_or(ApiError::NotFound("message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ranges_are_bounded() {
        let now = Utc::now();
        let p = |since: &str, until: Option<&str>| ReplayParams {
            since: since.into(),
            until: until.map(str::to_string),
        };
        let hour_ago = (now - chrono::Duration::hours(1)).to_rfc3339();
        assert!(replay_range(&p(&hour_ago, None), now).is_ok());
        let code = |r: Result<_, ApiError>| match r {
            Err(ApiError::Validation { errors, .. }) => errors[0].code.clone(),
            _ => "ok".into(),
        };
        assert_eq!(
            code(replay_range(&p("yesterday", None), now)),
            "invalid_time"
        );
        assert_eq!(
            code(replay_range(&p("2020-01-01T00:00:00Z", None), now)),
            "too_old"
        );
        assert_eq!(
            code(replay_range(&p(&hour_ago, Some(&hour_ago)), now)),
            "empty_range"
        );
    }
}
