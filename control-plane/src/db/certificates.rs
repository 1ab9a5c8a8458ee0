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
    /// `dev-ca`, the ACME directory URL, or `unknown` (uploaded, tests).
    pub issuer: &'a str,
    pub not_before: Option<DateTime<Utc>>,
    /// When the renewal job should order its successor; `None`: never.
    pub renew_at: Option<DateTime<Utc>>,
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
        "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after,
                                   issuer, not_before, renew_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (domain_id) DO UPDATE SET names = $2, chain_pem = $3, key_id = $4,
             key_sealed = $5, not_after = $6, issuer = $7, not_before = $8, renew_at = $9,
             created_at = now()",
        c.domain_id,
        &[c.hostname.to_string()],
        c.chain_pem,
        sealed.key_id,
        sealed.bytes,
        c.not_after,
        c.issuer,
        c.not_before,
        c.renew_at
    )
    .execute(&mut *tx)
    .await?;
    Ok(config::publish(tx, &[ConfigKey::Certificate(c.hostname.to_string())]).await?)
}

/// What the API shows of a certificate: never the key.
#[derive(Clone, Debug)]
pub struct CertificateInfo {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: DateTime<Utc>,
    pub renew_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub chain_pem: String,
}

pub async fn info(
    db: impl sqlx::PgExecutor<'_>,
    domain_id: Uuid,
) -> Result<Option<CertificateInfo>, sqlx::Error> {
    sqlx::query_as!(
        CertificateInfo,
        "SELECT names, issuer, not_before, not_after, renew_at, created_at, chain_pem
         FROM certificates WHERE domain_id = $1",
        domain_id
    )
    .fetch_optional(db)
    .await
}
