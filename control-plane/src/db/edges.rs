//! Registered edge proxies: their hashed tokens and what their last
//! heartbeat said.

use crate::ids::EdgeId;
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

#[derive(Clone, Debug)]
pub struct EdgeRecord {
    pub id: uuid::Uuid,
    pub name: String,
    pub region: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub applied_version: Option<i64>,
    pub build: Option<String>,
    pub uptime_secs: Option<i64>,
    pub hosts: Option<i64>,
    pub certificates: Option<i64>,
    pub counters: serde_json::Value,
    pub rejection: Option<serde_json::Value>,
}

/// What a heartbeat stores.
pub struct HeartbeatRecord<'a> {
    pub applied_version: i64,
    pub build: &'a str,
    pub uptime_secs: i64,
    pub hosts: i64,
    pub certificates: i64,
    pub counters: serde_json::Value,
    pub rejection: Option<serde_json::Value>,
    /// Hosts the edge serves without a certificate (at most 100).
    pub hosts_missing_certificate: Vec<String>,
}

pub struct EdgeForAuth {
    pub id: EdgeId,
    pub name: String,
    pub hash: Vec<u8>,
}

/// Inserts an edge; `None` when the name is taken.
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    region: &str,
    token_prefix: &str,
    token_hash: &[u8],
) -> Result<Option<EdgeRecord>, sqlx::Error> {
    sqlx::query_as!(
        EdgeRecord,
        "INSERT INTO edges (id, name, region, token_prefix, token_hash) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO NOTHING
         RETURNING id, name, region, created_at, last_seen_at, applied_version, build,
                   uptime_secs, hosts, certificates, counters, rejection",
        EdgeId::generate().as_uuid(),
        name,
        region,
        token_prefix,
        token_hash
    )
    .fetch_optional(db)
    .await
}

pub async fn list(db: &PgPool) -> Result<Vec<EdgeRecord>, sqlx::Error> {
    sqlx::query_as!(
        EdgeRecord,
        "SELECT id, name, region, created_at, last_seen_at, applied_version, build,
                uptime_secs, hosts, certificates, counters, rejection
         FROM edges WHERE revoked_at IS NULL ORDER BY name"
    )
    .fetch_all(db)
    .await
}

pub async fn find_for_auth(db: &PgPool, prefix: &str) -> Result<Option<EdgeForAuth>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT id, name, token_hash FROM edges WHERE token_prefix = $1 AND revoked_at IS NULL",
        prefix
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| EdgeForAuth {
        id: EdgeId::from_uuid(r.id),
        name: r.name,
        hash: r.token_hash,
    }))
}

pub async fn record_heartbeat(
    db: &PgPool,
    id: EdgeId,
    h: &HeartbeatRecord<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE edges SET last_seen_at = now(), applied_version = $2, build = $3,
                uptime_secs = $4, hosts = $5, certificates = $6, counters = $7, rejection = $8,
                hosts_missing_certificate = $9
         WHERE id = $1",
        id.as_uuid(),
        h.applied_version,
        h.build,
        h.uptime_secs,
        h.hosts,
        h.certificates,
        h.counters,
        h.rejection,
        &h.hosts_missing_certificate
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Edges seen within `fresh_secs` that have not applied `version` yet.
pub async fn behind(db: &PgPool, version: i64, fresh_secs: f64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM edges
           WHERE revoked_at IS NULL AND last_seen_at > now() - make_interval(secs => $2)
             AND COALESCE(applied_version, 0) < $1"#,
        version,
        fresh_secs
    )
    .fetch_one(db)
    .await
}

/// Records the drop counts an edge's last traffic report carried in its
/// `counters` (`report_windows_dropped`, `report_events_dropped`; the
/// edge's heartbeats carry them too, so a heartbeat keeps them). Unchanged
/// counts (the usual case) write nothing, so a report does not wake the
/// dashboards through the `edges` trigger.
pub async fn record_report_drops(
    db: impl PgExecutor<'_>,
    id: uuid::Uuid,
    windows_dropped: i64,
    events_dropped: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE edges SET counters = counters || jsonb_build_object(
             'report_windows_dropped', $2::bigint, 'report_events_dropped', $3::bigint)
         WHERE id = $1
           AND (counters->'report_windows_dropped' IS DISTINCT FROM to_jsonb($2::bigint)
                OR counters->'report_events_dropped' IS DISTINCT FROM to_jsonb($3::bigint))",
        id,
        windows_dropped,
        events_dropped
    )
    .execute(db)
    .await?;
    Ok(())
}
