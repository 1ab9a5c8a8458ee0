//! Stored certificates: one per domain, chain in PEM, private key sealed
//! (see [`crate::crypto`]). Writing one publishes its config key, so edges
//! pick it up in the same transaction's version.

use crate::crypto::{CryptoError, Keyring};
use crate::db::config::{self, ConfigKey};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A certificate about to be stored. Callers validate it first (the ACME
/// issuer produces it; edges re-validate everything they receive).
pub struct NewCertificate<'a> {
    pub domain_id: Uuid,
    pub hostname: &'a str,
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    pub not_after: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Stores (or replaces) the domain's certificate and publishes it; returns
/// the config version that carries it.
pub async fn upsert(
    tx: &mut PgConnection,
    keys: &Keyring,
    c: &NewCertificate<'_>,
) -> Result<Option<u64>, StoreError> {
    let sealed = keys.seal(c.key_pem.as_bytes(), c.domain_id.as_bytes())?;
    sqlx::query!(
        "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (domain_id) DO UPDATE SET names = $2, chain_pem = $3, key_id = $4,
             key_sealed = $5, not_after = $6, created_at = now()",
        c.domain_id,
        &[c.hostname.to_string()],
        c.chain_pem,
        sealed.key_id,
        sealed.bytes,
        c.not_after
    )
    .execute(&mut *tx)
    .await?;
    Ok(config::publish(tx, &[ConfigKey::Certificate(c.hostname.to_string())]).await?)
}
