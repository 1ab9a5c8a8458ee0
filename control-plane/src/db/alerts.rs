//! Ops alerts: one row per incident, unique while open per dedup key, and
//! the state of its two emails (page, resolution). A sender leases a row
//! whose email is due, sends, then records the outcome; the lease keeps two
//! senders from sending the same email at once.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct AlertRecord {
    pub id: Uuid,
    pub subject_kind: String,
    pub subject_id: Option<Uuid>,
    pub dedup_key: String,
    pub severity: String,
    pub title: String,
    pub body: String,
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_note: Option<String>,
    pub page_sent_at: Option<DateTime<Utc>>,
    pub page_attempts: i32,
    pub resolution_sent_at: Option<DateTime<Utc>>,
    pub resolution_attempts: i32,
    pub next_email_at: Option<DateTime<Utc>>,
    pub last_email_error: Option<String>,
    pub last_email_error_at: Option<DateTime<Utc>>,
    pub email_gave_up_at: Option<DateTime<Utc>>,
    pub leased_until: Option<DateTime<Utc>>,
    pub lease_token: Option<Uuid>,
}

pub struct NewAlert<'a> {
    pub subject_kind: &'a str,
    pub subject_id: Option<Uuid>,
    pub dedup_key: &'a str,
    pub severity: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    /// Whether the page email is due now (email alerting is configured).
    pub email: bool,
}

/// A sender's hold on the rows it sends for.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub token: Uuid,
    pub length: Duration,
}

/// Opens an alert, leased to the caller when its email is due; `None` when
/// one is already open for the dedup key.
pub async fn open(
    db: impl PgExecutor<'_>,
    a: &NewAlert<'_>,
    lease: Lease,
) -> Result<Option<AlertRecord>, sqlx::Error> {
    sqlx::query_as!(
        AlertRecord,
        "INSERT INTO alerts (id, subject_kind, subject_id, dedup_key, severity, title, body, next_email_at,
             leased_until, lease_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END,
             CASE WHEN $8 THEN now() + make_interval(secs => $9) END, CASE WHEN $8 THEN $10::uuid END)
         ON CONFLICT (dedup_key) WHERE status = 'open' DO NOTHING
         RETURNING *",
        Uuid::now_v7(),
        a.subject_kind,
        a.subject_id,
        a.dedup_key,
        a.severity,
        a.title,
        a.body,
        a.email,
        lease.length.as_secs_f64(),
        lease.token
    )
    .fetch_optional(db)
    .await
}

pub async fn find_open(
    db: impl PgExecutor<'_>,
    dedup_key: &str,
) -> Result<Option<AlertRecord>, sqlx::Error> {
    sqlx::query_as!(
        AlertRecord,
        "SELECT * FROM alerts WHERE dedup_key = $1 AND status = 'open'",
        dedup_key
    )
    .fetch_optional(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<AlertRecord>, sqlx::Error> {
    sqlx::query_as!(AlertRecord, "SELECT * FROM alerts WHERE id = $1", id)
        .fetch_optional(db)
        .await
}

/// Resolves the open alert of a dedup key; `None` when none is open. With
/// `email`, the resolution email becomes due (a page still unsent is then
/// not sent: the resolution email tells the whole story) and the row is
/// leased to the caller unless another sender holds it.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    dedup_key: &str,
    note: &str,
    email: bool,
    lease: Lease,
) -> Result<Option<AlertRecord>, sqlx::Error> {
    sqlx::query_as!(
        AlertRecord,
        "UPDATE alerts SET status = 'resolved', resolved_at = now(), resolution_note = $2,
             next_email_at = CASE WHEN $3 THEN now() END, email_gave_up_at = NULL,
             lease_token = CASE WHEN $3 AND (leased_until IS NULL OR leased_until < now())
                 THEN $5::uuid ELSE lease_token END,
             leased_until = CASE WHEN $3 AND (leased_until IS NULL OR leased_until < now())
                 THEN now() + make_interval(secs => $4) ELSE leased_until END
         WHERE dedup_key = $1 AND status = 'open'
         RETURNING *",
        dedup_key,
        note,
        email,
        lease.length.as_secs_f64(),
        lease.token
    )
    .fetch_optional(db)
    .await
}

/// Leases up to `limit` alerts whose email is due.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Lease,
) -> Result<Vec<AlertRecord>, sqlx::Error> {
    sqlx::query_as!(
        AlertRecord,
        "UPDATE alerts SET leased_until = now() + make_interval(secs => $2), lease_token = $3
         WHERE id IN (
             SELECT id FROM alerts
             WHERE next_email_at <= now() AND (leased_until IS NULL OR leased_until < now())
             ORDER BY next_email_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
        limit,
        lease.length.as_secs_f64(),
        lease.token
    )
    .fetch_all(db)
    .await
}

/// The page email went out. If the alert was resolved meanwhile, the
/// resolution email is due next.
pub async fn page_sent(db: impl PgExecutor<'_>, id: Uuid, token: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE alerts SET page_sent_at = now(), page_attempts = page_attempts + 1, leased_until = NULL,
             lease_token = NULL,
             next_email_at = CASE WHEN status = 'resolved' AND resolution_sent_at IS NULL THEN now() END
         WHERE id = $1 AND lease_token = $2",
        id,
        token
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn resolution_sent(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE alerts SET resolution_sent_at = now(), resolution_attempts = resolution_attempts + 1,
             leased_until = NULL, lease_token = NULL, next_email_at = NULL
         WHERE id = $1 AND lease_token = $2",
        id,
        token
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A send failed: the error is kept, the email is due again after
/// `retry_in`, or given up when there is none. A page given up on an
/// alert resolved meanwhile still leaves the resolution email due.
pub async fn send_failed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    resolution: bool,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE alerts SET leased_until = NULL, lease_token = NULL, last_email_error = $3, last_email_error_at = now(),
             page_attempts = page_attempts + CASE WHEN $2 THEN 0 ELSE 1 END,
             resolution_attempts = resolution_attempts + CASE WHEN $2 THEN 1 ELSE 0 END,
             next_email_at = CASE
                 WHEN $4::float8 IS NOT NULL THEN now() + make_interval(secs => $4)
                 WHEN NOT $2 AND status = 'resolved' AND resolution_sent_at IS NULL THEN now()
             END,
             email_gave_up_at = CASE WHEN $4::float8 IS NULL THEN now() END
         WHERE id = $1 AND lease_token = $5",
        id,
        resolution,
        error,
        retry_in.map(|d| d.as_secs_f64()),
        token
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A page of alerts, open ones first, newest first within each group,
/// after the cursor `(open, id)` of the previous page's last row.
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<(bool, Uuid)>,
    limit: i64,
) -> Result<Vec<AlertRecord>, sqlx::Error> {
    let (after_open, after_id) = (after.map(|a| a.0), after.map(|a| a.1));
    sqlx::query_as!(
        AlertRecord,
        "SELECT * FROM alerts
         WHERE $1::boolean IS NULL OR ((status = 'open'), id) < ($1, $2::uuid)
         ORDER BY (status = 'open') DESC, id DESC LIMIT $3",
        after_open,
        after_id,
        limit
    )
    .fetch_all(db)
    .await
}
