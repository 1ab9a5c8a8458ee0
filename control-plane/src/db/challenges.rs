//! ACME challenge answers the edges serve while an order is pending. Adding
//! or removing one publishes it (config kind `challenge`), so every edge
//! learns it through the config stream.

use crate::crypto::{CryptoError, Keyring};
use crate::db::config::{self, ConfigKey};
use sqlx::PgConnection;

/// An answer to store.
pub enum NewChallenge<'a> {
    Http01 {
        token: &'a str,
        key_authorization: &'a str,
    },
    TlsAlpn01 {
        hostname: &'a str,
        certificate_pem: &'a str,
        key_pem: &'a str,
    },
}

impl NewChallenge<'_> {
    /// The row id, which is also the config key.
    pub fn id(&self) -> String {
        match self {
            NewChallenge::Http01 { token, .. } => format!("http01:{token}"),
            NewChallenge::TlsAlpn01 { hostname, .. } => format!("tls_alpn01:{hostname}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Stores (or replaces) an answer and publishes it; returns the version.
pub async fn put(
    tx: &mut PgConnection,
    keys: &Keyring,
    c: &NewChallenge<'_>,
) -> Result<Option<u64>, ChallengeError> {
    let id = c.id();
    match c {
        NewChallenge::Http01 {
            token,
            key_authorization,
        } => {
            sqlx::query!(
                "INSERT INTO challenges (id, kind, token, key_authorization) VALUES ($1, 'http01', $2, $3)
                 ON CONFLICT (id) DO UPDATE SET key_authorization = $3, created_at = now()",
                id,
                token,
                key_authorization
            )
            .execute(&mut *tx)
            .await?;
        }
        NewChallenge::TlsAlpn01 {
            hostname,
            certificate_pem,
            key_pem,
        } => {
            let sealed = keys.seal(key_pem.as_bytes(), id.as_bytes())?;
            sqlx::query!(
                "INSERT INTO challenges (id, kind, hostname, certificate_pem, key_id, key_sealed)
                 VALUES ($1, 'tls_alpn01', $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET certificate_pem = $3, key_id = $4, key_sealed = $5,
                     created_at = now()",
                id,
                hostname,
                certificate_pem,
                sealed.key_id,
                sealed.bytes
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(config::publish(tx, &[ConfigKey::Challenge(id)]).await?)
}

/// Removes an answer (absent is fine) and publishes the removal.
pub async fn remove(tx: &mut PgConnection, id: &str) -> Result<Option<u64>, sqlx::Error> {
    let gone = sqlx::query!("DELETE FROM challenges WHERE id = $1", id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if gone == 0 {
        return Ok(None);
    }
    config::publish(tx, &[ConfigKey::Challenge(id.to_string())]).await
}
