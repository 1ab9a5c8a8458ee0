//! Certificate policy: who may have a certificate, when, from which CA and
//! within which rate budget. The mechanism (ACME, the dev CA) is in
//! `portico-acme`; this module decides and records.
//!
//! Orders live in `certificate_orders` (see [`crate::db::orders`]): queued
//! ahead of time when a domain is verified, on demand by an edge's request,
//! by the renewal fan-out when a certificate's renewal time comes, or by
//! `POST /v1/domains/{id}/certificate/renew`. The issuer loop in
//! [`crate::jobs::issuance`] claims due orders and runs each through
//! [`issue::Issuance::run`].

pub mod issue;
pub mod policy;
pub mod publisher;

use crate::db;
use crate::settings::{IssuerSetting, Settings};
use issue::Issuance;
use portico_acme::{AccountCredentials, AcmeConfig, AcmeIssuer, DevCa, Issuer};
use publisher::EdgePublisher;
use sqlx::PgPool;
use std::sync::Arc;

/// The configured issuer, ready to run orders; `None` when there is none.
pub async fn issuance(
    pool: &PgPool,
    settings: &Arc<Settings>,
) -> anyhow::Result<Option<Arc<Issuance>>> {
    let (issuer, name): (Arc<dyn Issuer>, String) = match &settings.certificates.issuer {
        IssuerSetting::None => return Ok(None),
        IssuerSetting::DevCa { dir } => {
            let ca = DevCa::open(dir)
                .map_err(|e| anyhow::anyhow!("PORTICO_DEV_CA_DIR {}: {e}", dir.display()))?;
            (Arc::new(ca), "dev-ca".to_string())
        }
        IssuerSetting::Acme {
            directory_url,
            contact,
            ca_file,
        } => {
            let mut config = AcmeConfig::new(directory_url.clone());
            config.contact = contact.clone();
            if let Some(path) = ca_file {
                config.extra_root_pem = Some(std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("PORTICO_ACME_CA_FILE {}: {e}", path.display())
                })?);
            }
            (
                Arc::new(acme_account(pool, settings, &config).await?),
                directory_url.clone(),
            )
        }
    };
    Ok(Some(Arc::new(Issuance {
        pool: pool.clone(),
        settings: settings.clone(),
        issuer,
        issuer_name: name,
        publisher: EdgePublisher {
            pool: pool.clone(),
            keys: settings.encryption_keys.clone(),
            edge_fresh: settings.config.edge_stale_after,
            ack_wait: settings.certificates.challenge_ack_wait,
        },
    })))
}

/// The stored account for the directory, or a new one (stored sealed; if
/// another process stored one first, that one is used).
async fn acme_account(
    pool: &PgPool,
    settings: &Settings,
    config: &AcmeConfig,
) -> anyhow::Result<AcmeIssuer> {
    let keys = &settings.encryption_keys;
    let url = config.directory_url.as_str();
    for _ in 0..2 {
        if let Some((key_id, sealed)) = db::orders::account(pool, url).await? {
            let json = keys.open(&key_id, &sealed, url.as_bytes())?;
            let creds = AccountCredentials::from_json(&String::from_utf8_lossy(json.expose()))?;
            return Ok(AcmeIssuer::from_credentials(config, creds).await?);
        }
        let (issuer, creds) = AcmeIssuer::create_account(config).await?;
        let sealed = keys.seal(creds.to_json()?.as_bytes(), url.as_bytes())?;
        if db::orders::put_account(pool, url, &sealed.key_id, &sealed.bytes).await? {
            tracing::info!(
                directory = url,
                account = issuer.account_id(),
                "ACME account created"
            );
            return Ok(issuer);
        }
    }
    anyhow::bail!("could not create or load the ACME account for {url}")
}
