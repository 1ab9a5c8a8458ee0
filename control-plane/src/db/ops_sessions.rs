//! Ops dashboard sessions: the SHA-256 of the cookie's random id, the CSRF
//! token forms must echo, and when the session ends. Shared by every
//! control-plane replica.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

pub struct SessionRecord {
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session (and forgets expired ones, through the index).
pub async fn create(
    db: &sqlx::PgPool,
    id_hash: &[u8],
    csrf_token: &str,
    ttl_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM ops_sessions WHERE expires_at < now()")
        .execute(db)
        .await?;
    sqlx::query!(
        "INSERT INTO ops_sessions (id_hash, csrf_token, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
        id_hash,
        csrf_token,
        ttl_secs
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The live session with this id hash, if it has not expired.
pub async fn find(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
) -> Result<Option<SessionRecord>, sqlx::Error> {
    sqlx::query_as!(
        SessionRecord,
        "SELECT csrf_token, expires_at FROM ops_sessions WHERE id_hash = $1 AND expires_at > now()",
        id_hash
    )
    .fetch_optional(db)
    .await
}

pub async fn delete(db: impl PgExecutor<'_>, id_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM ops_sessions WHERE id_hash = $1", id_hash)
        .execute(db)
        .await?;
    Ok(())
}
