//! Webhook endpoints: where a tenant's events are sent, with the sealed
//! signing secret (and the previous one during a rotation) and the health
//! bookkeeping that disables an endpoint. Messages and attempts live in
//! [`super::webhook_messages`].

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// One row of `webhook_endpoints`.
#[derive(Clone, Debug)]
pub struct EndpointRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_key_id: String,
    pub secret_sealed: Vec<u8>,
    pub previous_secret_key_id: Option<String>,
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRecord {
    /// Whether an event of `event_type` goes to this endpoint.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// A sealed secret and the key that sealed it.
pub struct SealedSecret {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

pub struct NewEndpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub secret: SealedSecret,
}

/// A PATCH: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

pub async fn count_for_tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<i64, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_endpoints WHERE tenant_id = $1"#,
        tenant.as_uuid()
    )
    .fetch_one(db)
    .await?;
    Ok(n)
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    e: &NewEndpoint,
) -> Result<EndpointRecord, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, enabled,
             disabled_reason, secret_key_id, secret_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 THEN NULL ELSE 'manual' END, $7, $8)
         RETURNING *",
        e.id,
        tenant.as_uuid(),
        e.url,
        e.description,
        &e.event_types,
        e.enabled,
        e.secret.key_id,
        e.secret.bytes
    )
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
        tenant.as_uuid(),
        id
    )
    .fetch_optional(db)
    .await
}

/// A tenant's endpoints, oldest first, after an optional cursor.
pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        tenant.as_uuid(),
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Applies a PATCH. Enabling clears the reason and the failure run;
/// disabling by hand records `manual`.
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    c: &EndpointChanges,
) -> Result<Option<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "UPDATE webhook_endpoints SET
             url = COALESCE($3, url),
             description = COALESCE($4, description),
             event_types = COALESCE($5, event_types),
             enabled = COALESCE($6, enabled),
             disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason
                                    WHEN $6 THEN NULL
                                    WHEN enabled THEN 'manual'
                                    ELSE disabled_reason END,
             failing_since = CASE WHEN $6 AND NOT enabled THEN NULL ELSE failing_since END,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING *",
        tenant.as_uuid(),
        id,
        c.url,
        c.description,
        c.event_types.as_deref(),
        c.enabled
    )
    .fetch_optional(db)
    .await
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
        tenant.as_uuid(),
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The current secret becomes the previous one (signing on for `overlap`);
/// `new` becomes current.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    new: &SealedSecret,
    overlap: Duration,
) -> Result<Option<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "UPDATE webhook_endpoints SET
             previous_secret_key_id = secret_key_id,
             previous_secret_sealed = secret_sealed,
             previous_secret_expires_at = now() + make_interval(secs => $5),
             secret_key_id = $3, secret_sealed = $4, updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING *",
        tenant.as_uuid(),
        id,
        new.key_id,
        new.bytes,
        overlap.as_secs_f64()
    )
    .fetch_optional(db)
    .await
}

/// A delivery succeeded: the failure run ends.
pub async fn record_success(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A delivery failed: starts (or continues) the failure run. True when
/// the run has lasted `disable_after`.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    id: Uuid,
    disable_after: Duration,
) -> Result<bool, sqlx::Error> {
    let expired = sqlx::query_scalar!(
        r#"UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now())
           WHERE id = $1
           RETURNING now() - failing_since >= make_interval(secs => $2) AS "expired!""#,
        id,
        disable_after.as_secs_f64()
    )
    .fetch_optional(db)
    .await?;
    Ok(expired.unwrap_or(false))
}

/// Disables an enabled endpoint; `None` if it was already disabled (so
/// only one caller emits the `webhook_endpoint.disabled` event).
pub async fn disable(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reason: &str,
) -> Result<Option<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND enabled RETURNING *",
        id,
        reason
    )
    .fetch_optional(db)
    .await
}

/// The enabled endpoints of these tenants (the dispatcher's fan-out).
pub async fn enabled_for_tenants(
    db: impl PgExecutor<'_>,
    tenants: &[Uuid],
) -> Result<Vec<EndpointRecord>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRecord,
        "SELECT * FROM webhook_endpoints WHERE enabled AND tenant_id = ANY($1)",
        tenants
    )
    .fetch_all(db)
    .await
}
