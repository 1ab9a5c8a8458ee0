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

pub mod account;
pub mod ari;
pub mod issue;
pub mod policy;
pub mod publisher;

use crate::settings::{IssuerSetting, Settings};
use account::LazyAcme;
use issue::{Issuance, NamedIssuer};
use portico_acme::{AcmeConfig, DevCa, ExternalAccountBinding};
use publisher::EdgePublisher;
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;

/// The configured issuers (the primary, then the fallback if any), ready
/// to run orders; `None` when there is none. ACME accounts are loaded on
/// first use, so an unreachable CA does not fail this.
pub async fn issuance(
    pool: &PgPool,
    settings: &Arc<Settings>,
) -> anyhow::Result<Option<Arc<Issuance>>> {
    let (primary, fallback, fallback_after) = match &settings.certificates.issuer {
        IssuerSetting::None => return Ok(None),
        IssuerSetting::DevCa { dir } => {
            let ca = DevCa::open(dir)
                .map_err(|e| anyhow::anyhow!("PORTICO_DEV_CA_DIR {}: {e}", dir.display()))?;
            (NamedIssuer::new("dev-ca", Arc::new(ca)), None, 0)
        }
        IssuerSetting::Acme {
            directory_url,
            contact,
            ca_file,
            eab,
            fallback,
        } => {
            let acme = |url: &str, ca: Option<&Path>, eab: &Option<ExternalAccountBinding>, var| {
                let mut config = AcmeConfig::new(url);
                config.contact = contact.clone();
                config.external_account = eab.clone();
                if let Some(path) = ca {
                    config.extra_root_pem = Some(
                        std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("{var} {}: {e}", path.display()))?,
                    );
                }
                let issuer = LazyAcme::new(pool.clone(), settings.encryption_keys.clone(), config);
                anyhow::Ok(NamedIssuer::new(url, Arc::new(issuer)))
            };
            let primary = acme(
                directory_url,
                ca_file.as_deref(),
                eab,
                "PORTICO_ACME_CA_FILE",
            )?;
            let second = match fallback {
                Some(f) => Some(acme(
                    &f.directory_url,
                    f.ca_file.as_deref(),
                    &f.eab,
                    "PORTICO_ACME_FALLBACK_CA_FILE",
                )?),
                None => None,
            };
            (primary, second, fallback.as_ref().map_or(0, |f| f.after))
        }
    };
    Ok(Some(Arc::new(Issuance {
        pool: pool.clone(),
        settings: settings.clone(),
        primary,
        fallback,
        fallback_after: i32::try_from(fallback_after).unwrap_or(i32::MAX),
        publisher: EdgePublisher {
            pool: pool.clone(),
            keys: settings.encryption_keys.clone(),
            edge_fresh: settings.config.edge_stale_after,
            ack_wait: settings.certificates.challenge_ack_wait,
        },
    })))
}
