//! Domains (custom hostnames): their routing settings, status and the last
//! DNS diagnosis. Writes that change status go through [`record_check`] or
//! [`mark_stale`], called by the verification code together with its event.

use crate::ids::{DomainId, TenantId};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// One row of `domains`, as stored.
#[derive(Clone, Debug)]
pub struct DomainRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub targets: Vec<String>,
    pub target_tls: bool,
    pub keep_host: bool,
    pub redirects: Vec<String>,
    pub tls_on_demand: bool,
    pub custom_metadata: serde_json::Value,
    pub status: String,
    pub tls_status: String,
    pub verification_token: String,
    pub dns_diagnosis: Option<serde_json::Value>,
    pub dns_checked_at: Option<DateTime<Utc>>,
    pub consecutive_wrong: i32,
    pub check_attempts: i32,
    pub next_check_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the health fan-out checks it next (`db::health`).
    pub next_health_at: DateTime<Utc>,
}

/// A validated domain about to be inserted.
pub struct NewDomain {
    pub id: DomainId,
    pub hostname: String,
    pub targets: Vec<String>,
    pub target_tls: bool,
    pub keep_host: bool,
    pub redirects: Vec<String>,
    pub tls_on_demand: bool,
    pub custom_metadata: serde_json::Value,
    pub verification_token: String,
}

/// Changes from `PATCH`; `None` keeps the stored value.
#[derive(Default)]
pub struct DomainChanges {
    pub targets: Option<Vec<String>>,
    pub target_tls: Option<bool>,
    pub keep_host: Option<bool>,
    pub redirects: Option<Vec<String>>,
    pub tls_on_demand: Option<bool>,
    pub custom_metadata: Option<serde_json::Value>,
}

impl DomainChanges {
    /// Whether edges route the domain differently afterwards (metadata
    /// alone does not concern them).
    pub fn affects_routing(&self) -> bool {
        self.targets.is_some()
            || self.target_tls.is_some()
            || self.keep_host.is_some()
            || self.redirects.is_some()
            || self.tls_on_demand.is_some()
    }
}

/// The outcome of a DNS check, to be stored in one update.
pub struct CheckOutcome {
    pub status: String,
    pub diagnosis: serde_json::Value,
    pub consecutive_wrong: i32,
    pub check_attempts: i32,
    pub next_check_in: Duration,
    pub verified: bool,
}

#[derive(Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub hostname_prefix: Option<String>,
}

/// Inserts many domains in one statement. Hostnames that are already claimed
/// (by anyone) are skipped; the returned rows are the ones inserted.
pub async fn insert_many(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    items: &[NewDomain],
) -> Result<Vec<DomainRecord>, sqlx::Error> {
    let ids: Vec<Uuid> = items.iter().map(|d| d.id.as_uuid()).collect();
    let hostnames: Vec<String> = items.iter().map(|d| d.hostname.clone()).collect();
    let targets: Vec<serde_json::Value> =
        items.iter().map(|d| serde_json::json!(d.targets)).collect();
    let target_tls: Vec<bool> = items.iter().map(|d| d.target_tls).collect();
    let keep_host: Vec<bool> = items.iter().map(|d| d.keep_host).collect();
    let redirects: Vec<serde_json::Value> = items
        .iter()
        .map(|d| serde_json::json!(d.redirects))
        .collect();
    let on_demand: Vec<bool> = items.iter().map(|d| d.tls_on_demand).collect();
    let metadata: Vec<serde_json::Value> =
        items.iter().map(|d| d.custom_metadata.clone()).collect();
    let tokens: Vec<String> = items.iter().map(|d| d.verification_token.clone()).collect();
    sqlx::query_as!(
        DomainRecord,
        r#"INSERT INTO domains (id, tenant_id, hostname, targets, target_tls, keep_host, redirects,
                               tls_on_demand, custom_metadata, verification_token)
           SELECT u.id, $2, u.hostname,
                  ARRAY(SELECT jsonb_array_elements_text(u.targets)), u.target_tls, u.keep_host,
                  ARRAY(SELECT jsonb_array_elements_text(u.redirects)), u.on_demand, u.metadata, u.token
           FROM UNNEST($1::uuid[], $3::text[], $4::jsonb[], $5::bool[], $6::bool[], $7::jsonb[],
                       $8::bool[], $9::jsonb[], $10::text[])
                AS u(id, hostname, targets, target_tls, keep_host, redirects, on_demand, metadata, token)
           ON CONFLICT (hostname) DO NOTHING
           RETURNING *"#,
        &ids,
        tenant.as_uuid(),
        &hostnames,
        &targets,
        &target_tls,
        &keep_host,
        &redirects,
        &on_demand,
        &metadata,
        &tokens
    )
    .fetch_all(db)
    .await
}

pub async fn count_for_tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<i64, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM domains WHERE tenant_id = $1"#,
        tenant.as_uuid()
    )
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// One of the tenant's domains. Another tenant's domain is simply not found.
pub async fn get(
    db: &PgPool,
    tenant: TenantId,
    id: DomainId,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "SELECT * FROM domains WHERE id = $1 AND tenant_id = $2",
        id.as_uuid(),
        tenant.as_uuid()
    )
    .fetch_optional(db)
    .await
}

/// Any tenant's domain by id (jobs).
pub async fn find(db: &PgPool, id: DomainId) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "SELECT * FROM domains WHERE id = $1",
        id.as_uuid()
    )
    .fetch_optional(db)
    .await
}

/// Loads and locks a domain for a status update (used by DNS checks).
pub async fn lock_for_check(
    db: impl PgExecutor<'_>,
    id: DomainId,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "SELECT * FROM domains WHERE id = $1 FOR UPDATE",
        id.as_uuid()
    )
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DomainRecord>, sqlx::Error> {
    let prefix = filter.hostname_prefix.as_ref().map(|p| {
        format!(
            "{}%",
            p.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    sqlx::query_as!(
        DomainRecord,
        "SELECT * FROM domains
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::text IS NULL OR hostname LIKE $4)
         ORDER BY id LIMIT $5",
        tenant.as_uuid(),
        after,
        filter.status,
        prefix,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: DomainId,
    c: &DomainChanges,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "UPDATE domains SET
            targets = COALESCE($3, targets),
            target_tls = COALESCE($4, target_tls),
            keep_host = COALESCE($5, keep_host),
            redirects = COALESCE($6, redirects),
            tls_on_demand = COALESCE($7, tls_on_demand),
            custom_metadata = COALESCE($8, custom_metadata),
            updated_at = now()
         WHERE id = $1 AND tenant_id = $2
         RETURNING *",
        id.as_uuid(),
        tenant.as_uuid(),
        c.targets.as_deref(),
        c.target_tls,
        c.keep_host,
        c.redirects.as_deref(),
        c.tls_on_demand,
        c.custom_metadata
    )
    .fetch_optional(db)
    .await
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: DomainId,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "DELETE FROM domains WHERE id = $1 AND tenant_id = $2 RETURNING *",
        id.as_uuid(),
        tenant.as_uuid()
    )
    .fetch_optional(db)
    .await
}

pub async fn record_check(
    db: impl PgExecutor<'_>,
    id: DomainId,
    o: &CheckOutcome,
) -> Result<DomainRecord, sqlx::Error> {
    let next_ms = i64::try_from(o.next_check_in.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as!(
        DomainRecord,
        "UPDATE domains SET
            status = $2,
            dns_diagnosis = $3,
            dns_checked_at = now(),
            consecutive_wrong = $4,
            check_attempts = $5,
            next_check_at = now() + make_interval(secs => $6::bigint / 1000.0),
            verified_at = CASE WHEN $7 THEN COALESCE(verified_at, now()) ELSE verified_at END,
            updated_at = CASE WHEN status <> $2 THEN now() ELSE updated_at END
         WHERE id = $1
         RETURNING *",
        id.as_uuid(),
        o.status,
        o.diagnosis,
        o.consecutive_wrong,
        o.check_attempts,
        next_ms,
        o.verified
    )
    .fetch_one(db)
    .await
}

/// Claims up to `limit` domains whose check is due, pushing their next check
/// out by `lease` so that another scheduler tick does not claim them again
/// while their job waits in the queue. The job sets the real next time.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let lease_secs = lease.as_secs_f64();
    sqlx::query_scalar!(
        "UPDATE domains SET next_check_at = now() + make_interval(secs => $2)
         WHERE id IN (
            SELECT id FROM domains
            WHERE next_check_at <= now() AND status IN ('pending', 'active', 'misconfigured', 'stale')
            ORDER BY next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id",
        limit,
        lease_secs
    )
    .fetch_all(db)
    .await
}

/// Marks pending domains created before `older_than` ago as stale.
pub async fn mark_stale(
    db: impl PgExecutor<'_>,
    older_than: Duration,
) -> Result<Vec<DomainRecord>, sqlx::Error> {
    let secs = older_than.as_secs_f64();
    sqlx::query_as!(
        DomainRecord,
        "UPDATE domains SET status = 'stale', updated_at = now()
         WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
         RETURNING *",
        secs
    )
    .fetch_all(db)
    .await
}

/// Sets the domain's TLS status (`issuing`, `active`, `failed`, ...).
pub async fn set_tls_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tls_status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE domains SET tls_status = $2, updated_at = now() WHERE id = $1 AND tls_status <> $2",
        id,
        tls_status
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_by_hostname(
    db: &PgPool,
    hostname: &str,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "SELECT * FROM domains WHERE hostname = $1",
        hostname
    )
    .fetch_optional(db)
    .await
}

/// Marks one domain whose DNS stayed wrong stale (the DNS repair ladder's
/// last word); `None` when it is no longer misconfigured or moved.
pub async fn mark_one_stale(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<DomainRecord>, sqlx::Error> {
    sqlx::query_as!(
        DomainRecord,
        "UPDATE domains SET status = 'stale', updated_at = now()
         WHERE id = $1 AND status IN ('misconfigured', 'moved')
         RETURNING *",
        id
    )
    .fetch_optional(db)
    .await
}
