//! Stored responses for `Idempotency-Key` requests. A key is first reserved
//! (no response yet), then completed with the response, or released when the
//! request failed in a way a retry might fix. A reservation abandoned for a
//! minute (the request died) is taken over by the next caller.

use sqlx::PgPool;

pub enum Reservation {
    /// This request owns the key and must complete or release it.
    Reserved,
    /// The key was used before: with this request hash, and maybe a response.
    Existing {
        request_hash: Vec<u8>,
        response: Option<StoredResponse>,
    },
}

pub struct StoredResponse {
    pub status_code: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

pub async fn reserve(
    db: &PgPool,
    scope: &[u8],
    key: &str,
    request_hash: &[u8],
) -> Result<Reservation, sqlx::Error> {
    // A reservation without a response after a minute belongs to a request
    // that died (client gone, process killed): the next caller takes it over.
    let inserted = sqlx::query!(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, created_at = now()
         WHERE idempotency_keys.status_code IS NULL AND idempotency_keys.created_at < now() - interval '1 minute'",
        scope,
        key,
        request_hash
    )
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Reservation::Reserved);
    }
    let row = sqlx::query!(
        "SELECT request_hash, status_code, content_type, body FROM idempotency_keys
         WHERE scope = $1 AND key = $2",
        scope,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        // Released between our insert and select: treat as in progress.
        None => Reservation::Existing {
            request_hash: request_hash.to_vec(),
            response: None,
        },
        Some(r) => Reservation::Existing {
            request_hash: r.request_hash,
            response: match (r.status_code, r.body) {
                (Some(code), Some(body)) => Some(StoredResponse {
                    status_code: u16::try_from(code).unwrap_or(500),
                    content_type: r.content_type,
                    body,
                }),
                _ => None,
            },
        },
    })
}

pub async fn complete(
    db: &PgPool,
    scope: &[u8],
    key: &str,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET status_code = $3, content_type = $4, body = $5
         WHERE scope = $1 AND key = $2",
        scope,
        key,
        i32::from(response.status_code),
        response.content_type,
        &response.body
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn release(db: &PgPool, scope: &[u8], key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2",
        scope,
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets keys older than a day (Stripe's window).
pub async fn prune(db: &PgPool) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}
