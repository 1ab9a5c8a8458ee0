//! API keys: stored as prefix + SHA-256 hash, never in the clear.

use crate::db::tenants::{Plan, Tenant};
use crate::ids::{ApiKeyId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

/// What listing shows: never the secret, never the hash.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    #[schema(value_type = String, format = Uuid)]
    pub id: ApiKeyId,
    pub name: String,
    /// The public part of the key (`ptk_<prefix>_...`), for telling keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The key row found by prefix during authentication, with its tenant.
pub struct KeyForAuth {
    pub key_id: ApiKeyId,
    pub hash: Vec<u8>,
    pub tenant: Tenant,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    name: &str,
    prefix: &str,
    hash: &[u8],
) -> Result<ApiKeyInfo, sqlx::Error> {
    let row = sqlx::query!(
        "INSERT INTO api_keys (id, tenant_id, prefix, hash, name) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, prefix, created_at, last_used_at",
        ApiKeyId::generate().as_uuid(),
        tenant.as_uuid(),
        prefix,
        hash,
        name
    )
    .fetch_one(db)
    .await?;
    Ok(ApiKeyInfo {
        id: ApiKeyId::from_uuid(row.id),
        name: row.name,
        prefix: row.prefix,
        created_at: row.created_at,
        last_used_at: row.last_used_at,
    })
}

pub async fn list(db: &PgPool, tenant: TenantId) -> Result<Vec<ApiKeyInfo>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys
         WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id",
        tenant.as_uuid()
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ApiKeyInfo {
            id: ApiKeyId::from_uuid(row.id),
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        })
        .collect())
}

/// Revokes one of the tenant's keys; false when no such live key is theirs.
pub async fn revoke(db: &PgPool, tenant: TenantId, id: ApiKeyId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
        id.as_uuid(),
        tenant.as_uuid()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find_for_auth(db: &PgPool, prefix: &str) -> Result<Option<KeyForAuth>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT k.id, k.hash, t.id AS tenant_id, t.name, t.plan, t.status, t.created_at
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1 AND k.revoked_at IS NULL",
        prefix
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| KeyForAuth {
        key_id: ApiKeyId::from_uuid(r.id),
        hash: r.hash,
        tenant: Tenant {
            id: TenantId::from_uuid(r.tenant_id),
            name: r.name,
            plan: Plan::parse(&r.plan).unwrap_or(Plan::Free),
            status: r.status,
            created_at: r.created_at,
        },
    }))
}

/// Records use, at most once a minute per key, so that authentication does
/// not turn every request into a write.
pub async fn touch(db: &PgPool, id: ApiKeyId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        id.as_uuid()
    )
    .execute(db)
    .await?;
    Ok(())
}
