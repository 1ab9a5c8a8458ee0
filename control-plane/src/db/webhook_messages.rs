//! Webhook messages (one per event and endpoint, unique, so dispatching
//! twice creates nothing new) and their delivery attempts. A message is
//! `pending` until an attempt succeeds (`succeeded`), the schedule runs out
//! (`failed`) or its endpoint is disabled (`cancelled`). Claiming gives a
//! message a lease and a token; a job whose lease ended records its attempt
//! but no longer moves the message.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct MessageRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    pub data: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub leased_until: Option<DateTime<Utc>>,
    pub lease_token: Option<Uuid>,
    pub leased_by: Option<Uuid>,
    pub last_response_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub id: Uuid,
    pub message_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: String,
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// An outbox event not yet turned into messages.
#[derive(Clone, Debug)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A message to create: `id` is fresh, the rest comes from the event.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// What one attempt found out.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub succeeded: bool,
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// Delay before the next attempt; `None` when there is none (success,
    /// schedule exhausted, endpoint gone).
    pub retry_in: Option<Duration>,
}

/// Locks up to `limit` undispatched outbox events (oldest first).
pub async fn claim_undispatched(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    sqlx::query_as!(
        OutboxEvent,
        r#"SELECT id, tenant_id, type AS event_type, data, created_at FROM events
           WHERE webhooks_dispatched_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn mark_dispatched(conn: &mut PgConnection, events: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE events SET webhooks_dispatched_at = now() WHERE id = ANY($1)",
        events
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts messages, due now. With `reset`, a message that already exists
/// for the (event, endpoint) is made pending and due again (replay);
/// without, it is left alone (dispatch is idempotent). Returns rows touched.
pub async fn insert(
    conn: &mut PgConnection,
    msgs: &[NewMessage],
    reset: bool,
) -> Result<u64, sqlx::Error> {
    let col = |f: fn(&NewMessage) -> Uuid| msgs.iter().map(f).collect::<Vec<_>>();
    let (ids, tenants, endpoints, events) = (
        col(|m| m.id),
        col(|m| m.tenant_id),
        col(|m| m.endpoint_id),
        col(|m| m.event_id),
    );
    let types: Vec<String> = msgs.iter().map(|m| m.event_type.clone()).collect();
    let times: Vec<DateTime<Utc>> = msgs.iter().map(|m| m.event_created_at).collect();
    let data: Vec<serde_json::Value> = msgs.iter().map(|m| m.data.clone()).collect();
    let done = sqlx::query!(
        "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, event_type, event_created_at, data, next_attempt_at)
         SELECT *, now() FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::jsonb[])
         ON CONFLICT (event_id, endpoint_id) DO UPDATE
             SET status = 'pending', next_attempt_at = now(), updated_at = now()
             WHERE $8",
        &ids,
        &tenants,
        &endpoints,
        &events,
        &types,
        &times,
        &data,
        reset
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Leases up to `limit` due messages of enabled endpoints for `owner`;
/// returns (message, token).
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease: Duration,
    owner: Uuid,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"UPDATE webhook_messages SET leased_until = now() + make_interval(secs => $2),
               lease_token = gen_random_uuid(), leased_by = $3
           WHERE id IN (
               SELECT m.id FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
               WHERE m.status = 'pending' AND m.next_attempt_at <= now()
                 AND (m.leased_until IS NULL OR m.leased_until < now()) AND e.enabled
               ORDER BY m.next_attempt_at LIMIT $1 FOR UPDATE OF m SKIP LOCKED)
           RETURNING id, lease_token AS "lease_token!""#,
        limit,
        lease.as_secs_f64(),
        owner
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.lease_token)).collect())
}

/// Messages `owner` has leased and not finished (lease still running).
pub async fn in_flight(db: &PgPool, owner: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_messages
           WHERE status = 'pending' AND leased_by = $1 AND leased_until > now()"#,
        owner
    )
    .fetch_one(db)
    .await
}

/// A pending message still held by `token`.
pub async fn leased(
    db: &PgPool,
    id: Uuid,
    token: Uuid,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        "SELECT * FROM webhook_messages WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
        id,
        token
    )
    .fetch_optional(db)
    .await
}

/// Stores the attempt and moves the message on, if the lease is still ours.
pub async fn record_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    o: &AttemptOutcome,
) -> Result<(), sqlx::Error> {
    let retry_secs = o.retry_in.map(|d| d.as_secs_f64());
    let next: Option<DateTime<Utc>> = sqlx::query_scalar!(
        "SELECT CASE WHEN $1::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $1) END",
        retry_secs
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO webhook_attempts (id, message_id, attempt, started_at, outcome, response_status,
             latency_ms, response_body, error, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        Uuid::now_v7(),
        id,
        o.attempt,
        o.started_at,
        if o.succeeded { "succeeded" } else { "failed" },
        o.response_status,
        o.latency_ms,
        o.response_body,
        o.error,
        next
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE webhook_messages SET attempts = attempts + 1,
             status = CASE WHEN $3 THEN 'succeeded' WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
             next_attempt_at = $4, last_response_status = $5,
             leased_until = NULL, lease_token = NULL, leased_by = NULL, updated_at = now()
         WHERE id = $1 AND lease_token = $2",
        id,
        token,
        o.succeeded,
        next,
        o.response_status
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A message whose endpoint is gone or disabled will not be sent.
pub async fn cancel(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_messages SET status = 'cancelled', leased_until = NULL, lease_token = NULL, leased_by = NULL, updated_at = now()
         WHERE id = $1 AND status = 'pending'",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Every pending message of a (just disabled) endpoint.
pub async fn cancel_pending(db: impl PgExecutor<'_>, endpoint: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE webhook_messages SET status = 'cancelled', leased_until = NULL, lease_token = NULL, leased_by = NULL, updated_at = now()
         WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    endpoint: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        "SELECT * FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2
             AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        tenant.as_uuid(),
        endpoint,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn get(
    db: &PgPool,
    tenant: TenantId,
    endpoint: Uuid,
    id: Uuid,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        "SELECT * FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3",
        tenant.as_uuid(),
        endpoint,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn attempts(
    db: &PgPool,
    message: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AttemptRecord>, sqlx::Error> {
    sqlx::query_as!(
        AttemptRecord,
        "SELECT * FROM webhook_attempts WHERE message_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        message,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Makes a message pending and due now (one more attempt, whatever its state).
pub async fn retry_now(
    db: &PgPool,
    tenant: TenantId,
    endpoint: Uuid,
    id: Uuid,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        "UPDATE webhook_messages SET status = 'pending', next_attempt_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3 RETURNING *",
        tenant.as_uuid(),
        endpoint,
        id
    )
    .fetch_optional(db)
    .await
}

/// A tenant's outbox events created in [since, until), oldest first, at most `limit`.
pub async fn events_between(
    db: &PgPool,
    tenant: TenantId,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    sqlx::query_as!(
        OutboxEvent,
        r#"SELECT id, tenant_id, type AS event_type, data, created_at FROM events
           WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 ORDER BY id LIMIT $4"#,
        tenant.as_uuid(),
        since,
        until,
        limit
    )
    .fetch_all(db)
    .await
}

/// Forgets finished messages (and their attempts) last touched before
/// `older_than` ago. Pending ones stay; replay re-creates any from the outbox.
pub async fn prune(db: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM webhook_messages
         WHERE status <> 'pending' AND updated_at < now() - make_interval(secs => $1)",
        older_than.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
