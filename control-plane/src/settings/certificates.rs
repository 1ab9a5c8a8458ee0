//! Certificate settings: the issuer (none, the dev CA, an ACME directory
//! with an optional fallback), the CA rate budget and the timings around
//! orders, renewal and ARI. Documented in `docs/configuration.md`.

use super::{Raw, SettingsError, err, positive, secs};
use std::time::Duration;

/// Where certificates come from, and the policy around ordering them.
#[derive(Clone, Debug)]
pub struct CertificateSettings {
    pub issuer: IssuerSetting,
    /// `http-01` or `tls-alpn-01`.
    pub challenge: portico_acme::ChallengeKind,
    /// CA limits the budget enforces (defaults: Let's Encrypt's).
    pub orders_per_3h: i64,
    pub certs_per_domain_week: i64,
    pub failed_validations_per_host_hour: i64,
    /// Stop retrying a host after failing for this long.
    pub give_up_after: Duration,
    /// How long an on-demand request waits for issuance before answering 503.
    pub on_demand_wait: Duration,
    /// Concurrent orders per worker process.
    pub concurrency: usize,
    /// How often certificates due for renewal are queued.
    pub renew_check_every: Duration,
    /// Orders one tenant may cause on demand per hour (0 = unlimited).
    pub on_demand_per_tenant_hour: i64,
    /// The longest wait for every edge that is up to acknowledge a
    /// challenge answer before the CA is told to validate (lagging edges
    /// fetch the answer from the control plane).
    pub challenge_ack_wait: Duration,
    /// How often certificates whose ARI check is due are looked for.
    pub ari_check_every: Duration,
    /// The shortest gap between two ARI checks of one certificate, whatever
    /// the CA's `Retry-After` says.
    pub ari_min_interval: Duration,
}

#[derive(Clone, Debug)]
pub enum IssuerSetting {
    /// No issuer: on-demand requests get 503.
    None,
    /// The local development CA, root kept in this directory.
    DevCa { dir: std::path::PathBuf },
    /// An ACME directory.
    Acme {
        directory_url: String,
        contact: Vec<String>,
        /// PEM file of a root to trust for the CA's HTTPS (Pebble).
        ca_file: Option<std::path::PathBuf>,
        /// External account binding, for CAs that require one (ZeroSSL).
        eab: Option<portico_acme::ExternalAccountBinding>,
        /// A second directory to order from after repeated failures.
        fallback: Option<AcmeFallback>,
    },
}

/// The fallback ACME directory: used for an order once the primary has
/// failed it `after` times in a row (or at once when the primary refuses
/// for good), then alternating with the primary.
#[derive(Clone, Debug)]
pub struct AcmeFallback {
    pub directory_url: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub eab: Option<portico_acme::ExternalAccountBinding>,
    pub after: u32,
}

pub(super) fn certificate_settings(raw: &Raw) -> Result<CertificateSettings, SettingsError> {
    let issuer = match raw.get("PORTICO_ISSUER").unwrap_or("none") {
        "none" => IssuerSetting::None,
        "dev" => IssuerSetting::DevCa {
            dir: raw.get("PORTICO_DEV_CA_DIR").unwrap_or(".dev/ca").into(),
        },
        "acme" => {
            let url = raw.get("PORTICO_ACME_DIRECTORY").ok_or_else(|| {
                err(
                    "PORTICO_ACME_DIRECTORY",
                    "required with PORTICO_ISSUER=acme",
                )
            })?;
            if !url.starts_with("https://") {
                return Err(err("PORTICO_ACME_DIRECTORY", "must be an https:// URL"));
            }
            IssuerSetting::Acme {
                directory_url: url.to_string(),
                contact: raw.list("PORTICO_ACME_CONTACT", |s| Ok(format!("mailto:{s}")))?,
                ca_file: raw.get("PORTICO_ACME_CA_FILE").map(Into::into),
                eab: eab(raw, "PORTICO_ACME_EAB")?,
                fallback: acme_fallback(raw, url)?,
            }
        }
        _ => return Err(err("PORTICO_ISSUER", "must be `none`, `dev` or `acme`")),
    };
    let challenge = match raw.get("PORTICO_ACME_CHALLENGE").unwrap_or("http-01") {
        "http-01" => portico_acme::ChallengeKind::Http01,
        "tls-alpn-01" => portico_acme::ChallengeKind::TlsAlpn01,
        _ => {
            return Err(err(
                "PORTICO_ACME_CHALLENGE",
                "must be `http-01` or `tls-alpn-01`",
            ));
        }
    };
    Ok(CertificateSettings {
        issuer,
        challenge,
        orders_per_3h: raw.parse_or("PORTICO_ACME_ORDERS_PER_3H", Some(300))?,
        certs_per_domain_week: raw.parse_or("PORTICO_ACME_CERTS_PER_DOMAIN_WEEK", Some(50))?,
        failed_validations_per_host_hour: raw
            .parse_or("PORTICO_ACME_FAILED_PER_HOST_HOUR", Some(5))?,
        give_up_after: secs(raw.parse_or("PORTICO_CERT_GIVE_UP_SECS", Some(30 * 86_400))?),
        on_demand_wait: Duration::from_millis(
            raw.parse_or("PORTICO_ON_DEMAND_WAIT_MS", Some(8_000))?,
        ),
        concurrency: usize::try_from(positive(raw, "PORTICO_ISSUE_CONCURRENCY", 8)?).unwrap_or(8),
        renew_check_every: Duration::from_millis(u64::from(positive(
            raw,
            "PORTICO_RENEW_CHECK_MS",
            60_000,
        )?)),
        on_demand_per_tenant_hour: raw.parse_or("PORTICO_ON_DEMAND_PER_TENANT_HOUR", Some(100))?,
        challenge_ack_wait: Duration::from_millis(
            raw.parse_or("PORTICO_CHALLENGE_ACK_WAIT_MS", Some(10_000))?,
        ),
        ari_check_every: Duration::from_millis(u64::from(positive(
            raw,
            "PORTICO_ARI_CHECK_MS",
            60_000,
        )?)),
        ari_min_interval: secs(raw.parse_or("PORTICO_ARI_MIN_INTERVAL_SECS", Some(300))?),
    })
}

/// `PORTICO_ACME_FALLBACK_*`: none unless a directory is given.
fn acme_fallback(raw: &Raw, primary: &str) -> Result<Option<AcmeFallback>, SettingsError> {
    let Some(url) = raw.get("PORTICO_ACME_FALLBACK_DIRECTORY") else {
        return Ok(None);
    };
    if !url.starts_with("https://") {
        return Err(err(
            "PORTICO_ACME_FALLBACK_DIRECTORY",
            "must be an https:// URL",
        ));
    }
    if url == primary {
        return Err(err(
            "PORTICO_ACME_FALLBACK_DIRECTORY",
            "must differ from PORTICO_ACME_DIRECTORY",
        ));
    }
    Ok(Some(AcmeFallback {
        directory_url: url.to_string(),
        ca_file: raw.get("PORTICO_ACME_FALLBACK_CA_FILE").map(Into::into),
        eab: eab(raw, "PORTICO_ACME_FALLBACK_EAB")?,
        after: positive(raw, "PORTICO_ACME_FALLBACK_AFTER", 3)?,
    }))
}

/// `{prefix}_KID` and `{prefix}_HMAC_KEY` (base64url), both or neither.
fn eab(
    raw: &Raw,
    prefix: &str,
) -> Result<Option<portico_acme::ExternalAccountBinding>, SettingsError> {
    let kid_var = format!("{prefix}_KID");
    let key_var = format!("{prefix}_HMAC_KEY");
    match (raw.get(&kid_var), raw.get(&key_var)) {
        (None, None) => Ok(None),
        (Some(kid), Some(key)) => portico_acme::ExternalAccountBinding::from_base64url(kid, key)
            .map(Some)
            .map_err(|e| err(&key_var, &e.to_string())),
        (Some(_), None) => Err(err(&key_var, &format!("required with {kid_var}"))),
        (None, Some(_)) => Err(err(&kid_var, &format!("required with {key_var}"))),
    }
}
