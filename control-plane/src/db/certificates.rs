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
    /// The ARI identifier, when the issuer can be asked about it.
    pub ari_id: Option<&'a str>,
    /// The CA's suggested renewal window at issuance, if it gave one.
    pub ari_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
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
    let (window_start, window_end) = c.ari_window.unzip();
    sqlx::query!(
        "INSERT INTO certificates (domain_id, names, chain_pem, key_id, key_sealed, not_after,
                                   issuer, not_before, renew_at, ari_id, ari_window_start,
                                   ari_window_end, ari_explanation_url, ari_checked_at,
                                   ari_next_check_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL,
                 CASE WHEN $11::timestamptz IS NULL THEN NULL ELSE now() END,
                 CASE WHEN $10::text IS NULL THEN NULL ELSE now() END)
         ON CONFLICT (domain_id) DO UPDATE SET names = $2, chain_pem = $3, key_id = $4,
             key_sealed = $5, not_after = $6, issuer = $7, not_before = $8, renew_at = $9,
             ari_id = $10, ari_window_start = $11, ari_window_end = $12,
             ari_explanation_url = NULL, ari_checked_at = EXCLUDED.ari_checked_at,
             ari_next_check_at = EXCLUDED.ari_next_check_at, created_at = now()",
        c.domain_id,
        &[c.hostname.to_string()],
        c.chain_pem,
        sealed.key_id,
        sealed.bytes,
        c.not_after,
        c.issuer,
        c.not_before,
        c.renew_at,
        c.ari_id,
        window_start,
        window_end
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
    pub ari_id: Option<String>,
    pub ari_window_start: Option<DateTime<Utc>>,
    pub ari_window_end: Option<DateTime<Utc>>,
    pub ari_explanation_url: Option<String>,
    pub ari_checked_at: Option<DateTime<Utc>>,
}

pub async fn info(
    db: impl sqlx::PgExecutor<'_>,
    domain_id: Uuid,
) -> Result<Option<CertificateInfo>, sqlx::Error> {
    sqlx::query_as!(
        CertificateInfo,
        "SELECT names, issuer, not_before, not_after, renew_at, created_at, chain_pem, ari_id,
                ari_window_start, ari_window_end, ari_explanation_url, ari_checked_at
         FROM certificates WHERE domain_id = $1",
        domain_id
    )
    .fetch_optional(db)
    .await
}

/// A certificate whose renewal information is due to be asked for.
#[derive(Clone, Debug)]
pub struct AriDue {
    pub domain_id: Uuid,
    pub hostname: String,
    pub issuer: String,
    pub ari_id: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: DateTime<Utc>,
    pub ari_window_start: Option<DateTime<Utc>>,
    pub ari_window_end: Option<DateTime<Utc>>,
}

/// Claims up to `limit` certificates whose ARI check is due, pushing their
/// next check `lease` ahead so that another worker does not ask too.
pub async fn claim_ari_due(
    db: impl sqlx::PgExecutor<'_>,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<AriDue>, sqlx::Error> {
    sqlx::query_as!(
        AriDue,
        r#"WITH due AS (
               SELECT domain_id FROM certificates
               WHERE ari_id IS NOT NULL AND ari_next_check_at <= now()
               ORDER BY ari_next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           UPDATE certificates c SET ari_next_check_at = now() + make_interval(secs => $2)
           FROM due WHERE c.domain_id = due.domain_id
           RETURNING c.domain_id, c.names[1] AS "hostname!", c.issuer, c.ari_id AS "ari_id!",
                     c.not_before, c.not_after, c.ari_window_start, c.ari_window_end"#,
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// What one ARI check found, for [`record_ari`].
pub struct AriCheck<'a> {
    /// The CA's window; `None` when it has no ARI (the window is kept).
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub explanation_url: Option<&'a str>,
    pub next_check_at: DateTime<Utc>,
    /// A new renewal time (the window moved); `None` keeps the current one.
    pub renew_at: Option<DateTime<Utc>>,
}

/// Records an ARI check for the certificate `ari_id` (nothing happens if
/// it was replaced meanwhile).
pub async fn record_ari(
    db: impl sqlx::PgExecutor<'_>,
    domain_id: Uuid,
    ari_id: &str,
    check: &AriCheck<'_>,
) -> Result<(), sqlx::Error> {
    let (start, end) = check.window.unzip();
    sqlx::query!(
        "UPDATE certificates SET
             ari_window_start = COALESCE($3, ari_window_start),
             ari_window_end = COALESCE($4, ari_window_end),
             ari_explanation_url = CASE WHEN $3::timestamptz IS NULL THEN ari_explanation_url ELSE $5 END,
             ari_checked_at = now(), ari_next_check_at = $6, renew_at = COALESCE($7, renew_at)
         WHERE domain_id = $1 AND ari_id = $2",
        domain_id,
        ari_id,
        start,
        end,
        check.explanation_url,
        check.next_check_at,
        check.renew_at
    )
    .execute(db)
    .await?;
    Ok(())
}
