//! Certificate orders: one row per domain that needs a certificate. The row
//! is the per-host lock (claimed with `FOR UPDATE SKIP LOCKED` and a lease,
//! so one order per host runs at a time across workers and replicas; a
//! worker that dies mid-order loses its lease and the order runs again), the
//! retry state, and the reason (renewals go before new names). The ACME event
//! log beside it is what the CA rate budget counts.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use uuid::Uuid;

/// The Postgres channel that wakes issuers when an order is queued.
pub const CHANNEL: &str = "portico_issue";

/// A claimed order and what issuing it needs.
#[derive(Clone, Debug)]
pub struct ClaimedOrder {
    pub domain_id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub reason: String,
    pub attempts: i32,
    /// Consecutive failed attempts (decides the issuer).
    pub failures: i32,
    pub first_failed_at: Option<DateTime<Utc>>,
}

/// Queues an order for a domain unless one is already queued or running;
/// a queued one is made due now. Wakes the issuers.
pub async fn request(
    tx: &mut PgConnection,
    domain_id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO certificate_orders (domain_id, reason) VALUES ($1, $2)
         ON CONFLICT (domain_id) DO UPDATE SET
             status = CASE WHEN certificate_orders.status = 'issuing' THEN 'issuing' ELSE 'queued' END,
             reason = CASE WHEN certificate_orders.status = 'issuing' THEN certificate_orders.reason ELSE $2 END,
             next_attempt_at = CASE WHEN certificate_orders.status IN ('failed', 'done') OR $2 = 'on_demand'
                                    THEN now() ELSE certificate_orders.next_attempt_at END,
             attempts = CASE WHEN certificate_orders.status IN ('failed', 'done') THEN 0 ELSE certificate_orders.attempts END,
             failures = CASE WHEN certificate_orders.status IN ('failed', 'done') THEN 0 ELSE certificate_orders.failures END,
             updated_at = now()",
        domain_id,
        reason
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, domain_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Claims up to `limit` due orders (queued, deferred, or issuing with an
/// expired lease), renewals and on-demand first.
pub async fn claim(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedOrder>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedOrder,
        r#"WITH due AS (
               SELECT o.domain_id FROM certificate_orders o
               WHERE (o.status IN ('queued', 'deferred') AND o.next_attempt_at <= now())
                  OR (o.status = 'issuing' AND o.lease_until < now())
               ORDER BY CASE o.reason WHEN 'on_demand' THEN 0 WHEN 'renewal' THEN 1 WHEN 'forced' THEN 2 ELSE 3 END,
                        o.next_attempt_at
               LIMIT $1 FOR UPDATE SKIP LOCKED)
           UPDATE certificate_orders o SET status = 'issuing', attempts = o.attempts + 1,
               lease_until = now() + make_interval(secs => $2), updated_at = now()
           FROM due, domains d
           WHERE o.domain_id = due.domain_id AND d.id = o.domain_id
           RETURNING o.domain_id, d.tenant_id, d.hostname, o.reason, o.attempts, o.failures, o.first_failed_at"#,
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// Ends an order: `done`, or `deferred`/`failed` with the reason and the
/// next attempt.
pub async fn finish(
    db: impl PgExecutor<'_>,
    domain_id: Uuid,
    status: &str,
    error: Option<&str>,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let retry_secs = retry_in.map(|d| d.as_secs_f64());
    sqlx::query!(
        "UPDATE certificate_orders SET status = $2, last_error = $3, lease_until = NULL,
             next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                                    ELSE now() + make_interval(secs => $4::float8) END,
             first_failed_at = CASE WHEN $2 = 'done' THEN NULL
                                    WHEN $3::text IS NOT NULL THEN COALESCE(first_failed_at, now())
                                    ELSE first_failed_at END,
             attempts = CASE WHEN $2 = 'done' THEN 0 ELSE attempts END,
             failures = CASE WHEN $2 = 'done' THEN 0 ELSE failures END,
             updated_at = now()
         WHERE domain_id = $1",
        domain_id,
        status,
        error,
        retry_secs
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records how many times in a row the order has failed.
pub async fn set_failures(
    db: impl PgExecutor<'_>,
    domain_id: Uuid,
    failures: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE certificate_orders SET failures = $2 WHERE domain_id = $1",
        domain_id,
        failures
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An order as the API shows it.
#[derive(Clone, Debug)]
pub struct OrderState {
    pub status: String,
    pub reason: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

pub async fn get(
    db: impl PgExecutor<'_>,
    domain_id: Uuid,
) -> Result<Option<OrderState>, sqlx::Error> {
    sqlx::query_as!(
        OrderState,
        "SELECT status, reason, attempts, next_attempt_at, last_error
         FROM certificate_orders WHERE domain_id = $1",
        domain_id
    )
    .fetch_optional(db)
    .await
}

/// Records one ACME event for the rate budget.
pub async fn log_event(
    db: impl PgExecutor<'_>,
    directory: &str,
    hostname: &str,
    registered_domain: &str,
    kind: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO acme_events (directory_url, hostname, registered_domain, kind) VALUES ($1, $2, $3, $4)",
        directory,
        hostname,
        registered_domain,
        kind
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What the budget counts, in its windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetCounts {
    /// New orders on this directory in the last 3 hours.
    pub orders_3h: i64,
    /// Certificates issued for the registered domain in the last 7 days.
    pub issued_domain_7d: i64,
    /// Failed validations for the host in the last hour.
    pub failed_host_1h: i64,
}

pub async fn budget_counts(
    db: impl PgExecutor<'_>,
    directory: &str,
    hostname: &str,
    registered_domain: &str,
) -> Result<BudgetCounts, sqlx::Error> {
    let r = sqlx::query!(
        r#"SELECT
             count(*) FILTER (WHERE directory_url = $1 AND kind = 'order' AND created_at > now() - interval '3 hours') AS "orders!",
             count(*) FILTER (WHERE registered_domain = $3 AND kind = 'issued' AND created_at > now() - interval '7 days') AS "issued!",
             count(*) FILTER (WHERE hostname = $2 AND kind = 'validation_failed' AND created_at > now() - interval '1 hour') AS "failed!"
           FROM acme_events
           WHERE created_at > now() - interval '7 days'"#,
        directory,
        hostname,
        registered_domain
    )
    .fetch_one(db)
    .await?;
    Ok(BudgetCounts {
        orders_3h: r.orders,
        issued_domain_7d: r.issued,
        failed_host_1h: r.failed,
    })
}

/// Stored ACME account credentials for a directory (sealed JSON).
pub async fn account(
    db: impl PgExecutor<'_>,
    directory: &str,
) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT key_id, credentials_sealed FROM acme_accounts WHERE directory_url = $1",
        directory
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.key_id, r.credentials_sealed)))
}

/// Stores the account unless another process stored one first; returns
/// whether ours was stored.
pub async fn put_account(
    db: impl PgExecutor<'_>,
    directory: &str,
    key_id: &str,
    sealed: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO acme_accounts (directory_url, key_id, credentials_sealed) VALUES ($1, $2, $3)
         ON CONFLICT (directory_url) DO NOTHING",
        directory,
        key_id,
        sealed
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Certificates whose renewal time has come and that have no order running.
/// A renewal that failed for good is tried again once a day (until the
/// certificate expires), never on every tick.
pub async fn due_renewals(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT c.domain_id FROM certificates c
         LEFT JOIN certificate_orders o ON o.domain_id = c.domain_id
         WHERE c.renew_at <= now()
           AND (o.domain_id IS NULL OR o.status = 'done'
                OR (o.status = 'failed' AND o.updated_at < now() - interval '1 day'))
         ORDER BY c.renew_at LIMIT $1",
        limit
    )
    .fetch_all(db)
    .await
}

/// Orders by status, and recent ACME activity by directory, as JSON objects.
pub async fn overview(
    db: &sqlx::PgPool,
) -> Result<(serde_json::Value, serde_json::Value), sqlx::Error> {
    let orders = sqlx::query_scalar!(
        r#"SELECT COALESCE(jsonb_object_agg(status, n), '{}') AS "o!"
           FROM (SELECT status, count(*) AS n FROM certificate_orders GROUP BY status) s"#
    )
    .fetch_one(db)
    .await?;
    let directories = sqlx::query_scalar!(
        r#"SELECT COALESCE(jsonb_object_agg(directory_url, jsonb_build_object(
               'orders_3h', orders, 'issued_24h', issued, 'validation_failed_24h', failed)), '{}') AS "d!"
           FROM (SELECT directory_url,
                   count(*) FILTER (WHERE kind = 'order' AND created_at > now() - interval '3 hours') AS orders,
                   count(*) FILTER (WHERE kind = 'issued') AS issued,
                   count(*) FILTER (WHERE kind = 'validation_failed') AS failed
                 FROM acme_events WHERE created_at > now() - interval '1 day'
                 GROUP BY directory_url) s"#
    )
    .fetch_one(db)
    .await?;
    Ok((orders, directories))
}

/// Orders placed in the last hour for a tenant's domains.
pub async fn tenant_orders_last_hour(db: &sqlx::PgPool, tenant: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM acme_events e JOIN domains d ON d.hostname = e.hostname
           WHERE d.tenant_id = $1 AND e.kind = 'order' AND e.created_at > now() - interval '1 hour'"#,
        tenant
    )
    .fetch_one(db)
    .await
}
