//! Settings: read raw from environment variables (and an optional TOML file
//! named by `PORTICO_CONFIG`), then validated into typed values. Every error
//! names the variable that was wrong. Environment variables win over the file;
//! file keys are the variable names without the `PORTICO_` prefix, lower-cased
//! (`listen`, `dns_nameservers`, ...), or `database_url`.
//!
//! The full list lives in `docs/configuration.md`.

use crate::dns::DnsSettings;
use crate::hostname::{Hostname, HostnamePolicy};
use crate::secret::Secret;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

mod alerts;
mod certificates;
mod fly;
mod health;
mod ops;
mod traffic;
mod webhooks;
pub use alerts::{AlertEmail, AlertSettings, SmtpMode, SmtpSettings};
pub use certificates::{AcmeFallback, CertificateSettings, IssuerSetting};
pub use fly::FlySettings;
pub use health::{HealthSettings, InfraSetting};
pub use ops::OpsSettings;
pub use traffic::TrafficSettings;
pub use webhooks::{WebhookSettings, parse_schedule};

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingsError {
    pub variable: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: Secret<String>,
    pub db_max_connections: u32,
    pub operator_token: Option<Secret<String>>,
    pub log_format: LogFormat,
    pub run_migrations: bool,
    pub worker_in_serve: bool,
    pub platform: PlatformSettings,
    pub dns: DnsSettings,
    pub checks: CheckSettings,
    pub limits: LimitSettings,
    pub config: ConfigSettings,
    pub certificates: CertificateSettings,
    pub webhooks: WebhookSettings,
    /// Traffic reports from edges: retention, pruning, ingestion.
    pub traffic: TrafficSettings,
    /// The Fly Machines infra adapter; `None` without `PORTICO_FLY_APP`.
    pub fly: Option<FlySettings>,
    pub alerts: AlertSettings,
    pub health: HealthSettings,
    /// The ops dashboard (`/ops`).
    pub ops: OpsSettings,
    /// Seals private keys at rest; empty means certificates cannot be stored.
    pub encryption_keys: crate::crypto::Keyring,
}

/// Config distribution to edges.
#[derive(Clone, Debug)]
pub struct ConfigSettings {
    /// Change-log rows kept at least this many versions back.
    pub retain_versions: u64,
    /// ... and at least this long.
    pub retain_for: Duration,
    /// How often the change log is compacted and pruned.
    pub compact_every: Duration,
    /// Keep-alive frames on an idle config stream.
    pub keepalive: Duration,
    /// An edge whose heartbeat is older than this is shown as `stale`.
    pub edge_stale_after: Duration,
}

/// Where customers point their DNS, and which names are ours.
#[derive(Clone, Debug)]
pub struct PlatformSettings {
    pub cname_target: Hostname,
    pub edge_ipv4: Vec<Ipv4Addr>,
    pub edge_ipv6: Vec<Ipv6Addr>,
    pub reserved_suffixes: Vec<String>,
    pub ca_identities: Vec<String>,
    /// Allow upstream targets on loopback / link-local addresses (dev and tests).
    pub allow_local_targets: bool,
}

#[derive(Clone, Debug)]
pub struct CheckSettings {
    pub misconfigured_after: u32,
    pub active_interval: Duration,
    pub stale_after: Duration,
    pub scheduler_tick: Duration,
}

#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub quota_free: u64,
    pub quota_pro: u64,
    pub quota_enterprise: u64,
}

impl LimitSettings {
    /// The domain quota of a plan; 0 means unlimited.
    pub fn quota_for(&self, plan: crate::db::tenants::Plan) -> u64 {
        use crate::db::tenants::Plan;
        match plan {
            Plan::Free => self.quota_free,
            Plan::Pro => self.quota_pro,
            Plan::Enterprise => self.quota_enterprise,
        }
    }
}

impl PlatformSettings {
    pub fn hostname_policy(&self, allow_wildcard: bool) -> HostnamePolicy {
        HostnamePolicy {
            reserved_suffixes: self.reserved_suffixes.clone(),
            allow_wildcard,
        }
    }
}

impl Settings {
    /// Reads the process environment, plus `PORTICO_CONFIG` if it names a file.
    pub fn from_env() -> Result<Self, SettingsError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_sources(env)
    }

    /// Settings from an explicit map of variables (tests use this).
    pub fn from_sources(mut env: HashMap<String, String>) -> Result<Self, SettingsError> {
        if let Some(path) = env.get("PORTICO_CONFIG").cloned() {
            for (k, v) in read_toml(&path)? {
                env.entry(k).or_insert(v);
            }
        }
        Self::from_map(&Raw(env))
    }

    fn from_map(raw: &Raw) -> Result<Self, SettingsError> {
        let database_url = raw.required("DATABASE_URL")?;
        let operator_token = match raw.get("PORTICO_OPERATOR_TOKEN") {
            Some(t) if t.len() < 32 => {
                return Err(err(
                    "PORTICO_OPERATOR_TOKEN",
                    "must be at least 32 characters (use `openssl rand -hex 32`)",
                ));
            }
            Some(t) => Some(Secret::new(t.to_string())),
            None => None,
        };
        let listen = raw.parse_or("PORTICO_LISTEN", "127.0.0.1:8080".parse().ok())?;
        Ok(Settings {
            listen,
            database_url: Secret::new(database_url),
            db_max_connections: raw.parse_or("PORTICO_DB_MAX_CONNECTIONS", Some(20))?,
            operator_token,
            log_format: match raw.get("PORTICO_LOG_FORMAT").unwrap_or("pretty") {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => return Err(err("PORTICO_LOG_FORMAT", "must be `pretty` or `json`")),
            },
            run_migrations: raw.bool_or("PORTICO_MIGRATE", true)?,
            worker_in_serve: raw.bool_or("PORTICO_WORKER_IN_SERVE", false)?,
            platform: platform_settings(raw)?,
            dns: DnsSettings {
                nameservers: raw.list("PORTICO_DNS_NAMESERVERS", parse_nameserver)?,
                timeout: Duration::from_millis(raw.parse_or("PORTICO_DNS_TIMEOUT_MS", Some(2000))?),
                attempts: raw.parse_or("PORTICO_DNS_ATTEMPTS", Some(2))?,
            },
            checks: CheckSettings {
                misconfigured_after: raw.parse_or("PORTICO_MISCONFIGURED_AFTER", Some(3))?,
                active_interval: secs(raw.parse_or("PORTICO_ACTIVE_CHECK_SECS", Some(300))?),
                stale_after: secs(raw.parse_or("PORTICO_STALE_AFTER_SECS", Some(7 * 86_400))?),
                scheduler_tick: secs(raw.parse_or("PORTICO_SCHEDULER_TICK_SECS", Some(15))?),
            },
            limits: LimitSettings {
                rate_per_second: positive(raw, "PORTICO_RATE_LIMIT_PER_SECOND", 20)?,
                rate_burst: positive(raw, "PORTICO_RATE_LIMIT_BURST", 40)?,
                quota_free: raw.parse_or("PORTICO_QUOTA_FREE", Some(100))?,
                quota_pro: raw.parse_or("PORTICO_QUOTA_PRO", Some(10_000))?,
                quota_enterprise: raw.parse_or("PORTICO_QUOTA_ENTERPRISE", Some(0))?,
            },
            config: ConfigSettings {
                retain_versions: raw.parse_or("PORTICO_CONFIG_RETAIN_VERSIONS", Some(100_000))?,
                retain_for: secs(raw.parse_or("PORTICO_CONFIG_RETAIN_SECS", Some(86_400))?),
                compact_every: secs(u64::from(positive(raw, "PORTICO_CONFIG_COMPACT_SECS", 60)?)),
                keepalive: Duration::from_millis(u64::from(positive(
                    raw,
                    "PORTICO_CONFIG_KEEPALIVE_MS",
                    15_000,
                )?)),
                edge_stale_after: secs(u64::from(positive(
                    raw,
                    "PORTICO_EDGE_STALE_AFTER_SECS",
                    60,
                )?)),
            },
            certificates: certificates::certificate_settings(raw)?,
            webhooks: webhooks::webhook_settings(raw)?,
            traffic: traffic::traffic_settings(raw)?,
            fly: fly::fly_settings(raw)?,
            alerts: alerts::alert_settings(raw, listen)?,
            health: health::health_settings(raw)?,
            ops: ops::ops_settings(raw)?,
            encryption_keys: crate::crypto::Keyring::parse(
                raw.get("PORTICO_ENCRYPTION_KEYS").unwrap_or(""),
            )
            .map_err(|e| err("PORTICO_ENCRYPTION_KEYS", &e))?,
        })
    }
}

fn platform_settings(raw: &Raw) -> Result<PlatformSettings, SettingsError> {
    let target = raw
        .get("PORTICO_CNAME_TARGET")
        .unwrap_or("edge.portico.localhost");
    let cname_target = Hostname::parse(target, &HostnamePolicy::default())
        .or_else(|_| localhost_target(target))
        .map_err(|e| err("PORTICO_CNAME_TARGET", &e))?;
    let edge_ipv4 = raw.list("PORTICO_EDGE_IPV4", |s| {
        Ipv4Addr::from_str(s).map_err(|e| e.to_string())
    })?;
    let edge_ipv6 = raw.list("PORTICO_EDGE_IPV6", |s| {
        Ipv6Addr::from_str(s).map_err(|e| e.to_string())
    })?;
    let mut reserved_suffixes =
        raw.list("PORTICO_RESERVED_SUFFIXES", |s| Ok(s.to_ascii_lowercase()))?;
    // The platform's own target is always reserved: a tenant must never claim it.
    reserved_suffixes.push(cname_target.registrable_domain().to_string());
    Ok(PlatformSettings {
        cname_target,
        edge_ipv4,
        edge_ipv6,
        reserved_suffixes,
        ca_identities: match raw.list("PORTICO_CA_IDENTITIES", |s| Ok(s.to_ascii_lowercase()))? {
            ids if ids.is_empty() => vec!["letsencrypt.org".into()],
            ids => ids,
        },
        allow_local_targets: raw.bool_or("PORTICO_ALLOW_LOCAL_TARGETS", false)?,
    })
}

/// The dev default lives under `.localhost`, which the public suffix list
/// treats as a suffix of its own; accept any multi-label name there.
fn localhost_target(target: &str) -> Result<Hostname, String> {
    let t = target.trim_end_matches('.').to_ascii_lowercase();
    let ok = t.ends_with(".localhost")
        && t.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(Hostname::from_stored(t))
    } else {
        Err(format!("{target:?} is not a valid hostname"))
    }
}

fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(s)
        .or_else(|_| IpAddr::from_str(s).map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:port"))
}

fn positive(raw: &Raw, name: &str, default: u32) -> Result<u32, SettingsError> {
    match raw.parse_or(name, Some(default))? {
        0 => Err(err(name, "must be greater than zero")),
        n => Ok(n),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn err(variable: &str, message: &str) -> SettingsError {
    SettingsError {
        variable: variable.to_string(),
        message: message.to_string(),
    }
}

fn read_toml(path: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("PORTICO_CONFIG", &format!("cannot read {path}: {e}")))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| err("PORTICO_CONFIG", &format!("{path}: {e}")))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let name = match key.as_str() {
            "database_url" => "DATABASE_URL".to_string(),
            k => format!("PORTICO_{}", k.to_ascii_uppercase()),
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        out.push((name, text));
    }
    Ok(out)
}

struct Raw(HashMap<String, String>);

impl Raw {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, SettingsError> {
        self.get(name)
            .map(str::to_string)
            .ok_or_else(|| err(name, "is required but not set"))
    }

    fn parse_or<T: FromStr>(&self, name: &str, default: Option<T>) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            Some(v) => v
                .parse()
                .map_err(|e| err(name, &format!("cannot parse {v:?}: {e}"))),
            None => default.ok_or_else(|| err(name, "is required but not set")),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> Result<bool, SettingsError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(_) => Err(err(name, "must be true or false")),
        }
    }

    fn list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, SettingsError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| parse(s).map_err(|e| err(name, &e)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_only_a_database_url() {
        let s = Settings::from_sources(env(&[("DATABASE_URL", "postgres://u:pw@h/db")])).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.checks.misconfigured_after, 3);
        assert!(
            !format!("{s:?}").contains("pw@"),
            "secrets must not reach Debug output"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Settings::from_sources(env(&[])).unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        let e = Settings::from_sources(env(&[("DATABASE_URL", "x"), ("PORTICO_LISTEN", "nope")]))
            .unwrap_err();
        assert_eq!(e.variable, "PORTICO_LISTEN");
        let e = Settings::from_sources(env(&[
            ("DATABASE_URL", "x"),
            ("PORTICO_EDGE_IPV4", "1.2.3"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "PORTICO_EDGE_IPV4");
        let e = Settings::from_sources(env(&[
            ("DATABASE_URL", "x"),
            ("PORTICO_OPERATOR_TOKEN", "short"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "PORTICO_OPERATOR_TOKEN");
        let e = Settings::from_sources(env(&[
            ("DATABASE_URL", "x"),
            ("PORTICO_RATE_LIMIT_BURST", "0"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "PORTICO_RATE_LIMIT_BURST");
    }

    #[test]
    fn a_fallback_ca_is_checked_and_named() {
        let acme = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("DATABASE_URL", "x"),
                ("PORTICO_ISSUER", "acme"),
                ("PORTICO_ACME_DIRECTORY", "https://ca-1.test/dir"),
            ];
            pairs.extend_from_slice(extra);
            Settings::from_sources(env(&pairs))
        };
        let s = acme(&[
            ("PORTICO_ACME_FALLBACK_DIRECTORY", "https://ca-2.test/dir"),
            ("PORTICO_ACME_FALLBACK_EAB_KID", "kid"),
            ("PORTICO_ACME_FALLBACK_EAB_HMAC_KEY", "c2VjcmV0"),
        ])
        .unwrap();
        let IssuerSetting::Acme { fallback, eab, .. } = &s.certificates.issuer else {
            panic!("an ACME issuer")
        };
        let fallback = fallback.as_ref().unwrap();
        assert_eq!(fallback.directory_url, "https://ca-2.test/dir");
        assert_eq!(fallback.after, 3);
        assert!(fallback.eab.is_some() && eab.is_none());
        assert!(
            !format!("{s:?}").contains("c2VjcmV0"),
            "the HMAC key is not printed"
        );
        for (extra, variable) in [
            (
                &[("PORTICO_ACME_FALLBACK_DIRECTORY", "http://ca-2.test/dir")][..],
                "PORTICO_ACME_FALLBACK_DIRECTORY",
            ),
            (
                &[("PORTICO_ACME_FALLBACK_DIRECTORY", "https://ca-1.test/dir")][..],
                "PORTICO_ACME_FALLBACK_DIRECTORY",
            ),
            (
                &[
                    ("PORTICO_ACME_FALLBACK_DIRECTORY", "https://ca-2.test/dir"),
                    ("PORTICO_ACME_FALLBACK_AFTER", "0"),
                ][..],
                "PORTICO_ACME_FALLBACK_AFTER",
            ),
            (
                &[("PORTICO_ACME_EAB_KID", "kid")][..],
                "PORTICO_ACME_EAB_HMAC_KEY",
            ),
            (
                &[
                    ("PORTICO_ACME_EAB_KID", "kid"),
                    ("PORTICO_ACME_EAB_HMAC_KEY", "not base64!"),
                ][..],
                "PORTICO_ACME_EAB_HMAC_KEY",
            ),
        ] {
            assert_eq!(acme(extra).unwrap_err().variable, variable, "{extra:?}");
        }
    }

    #[test]
    fn toml_file_fills_in_and_env_wins() {
        let dir = std::env::temp_dir().join(format!("portico-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("portico.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\nedge_ipv4 = [\"192.0.2.1\", \"192.0.2.2\"]\nmisconfigured_after = 5\n").unwrap();
        let s = Settings::from_sources(env(&[
            ("DATABASE_URL", "x"),
            ("PORTICO_CONFIG", path.to_str().unwrap()),
            ("PORTICO_MISCONFIGURED_AFTER", "4"),
        ]))
        .unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.platform.edge_ipv4.len(), 2);
        assert_eq!(s.checks.misconfigured_after, 4);
    }

    #[test]
    fn the_platform_target_is_reserved() {
        let s = Settings::from_sources(env(&[
            ("DATABASE_URL", "x"),
            ("PORTICO_CNAME_TARGET", "edge.portico.test"),
        ]))
        .unwrap();
        assert!(
            s.platform
                .reserved_suffixes
                .contains(&"portico.test".to_string())
        );
    }
}
