//! Health checks and self-repair settings (`PORTICO_HEALTH_*`,
//! `PORTICO_REPAIR_*`, `PORTICO_INFRA*`), documented in
//! `docs/configuration.md` and `docs/health.md`.

use super::{Raw, SettingsError, err, positive};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// How often the fan-out looks for edges and domains whose check is due.
    pub tick: Duration,
    /// Each edge is checked this often.
    pub edge_interval: Duration,
    /// Each active domain is checked this often (spread over the interval).
    pub host_interval: Duration,
    /// Consecutive failed checks before a check counts as failing (and a
    /// repair run opens).
    pub fail_threshold: u32,
    /// Consecutive passed checks before a failing check counts as passing.
    pub pass_threshold: u32,
    /// The traffic a check looks back over.
    pub traffic_window: Duration,
    /// Fewer requests than this in the window: the ratio says nothing and the
    /// upstream is probed directly instead.
    pub min_requests: u32,
    /// (5xx + upstream connect failures) / requests at or above this fails.
    pub upstream_error_ratio: f64,
    /// TLS handshake failures / (requests + failures) at or above this fails
    /// (with at least `min_requests` handshakes).
    pub tls_failure_ratio: f64,
    /// A certificate expiring sooner than this fails the certificate check.
    pub certificate_expiry: Duration,
    /// One probe (edge admin, upstream connect) waits this long.
    pub probe_timeout: Duration,
    /// Ladder waits are multiplied by this (tests run ladders fast).
    pub repair_time_scale: f64,
    /// Repair actions never run (the rung is recorded as skipped), e.g.
    /// `restart,replace` to page at once instead.
    pub disabled_actions: Vec<String>,
    /// A step in flight longer than this belongs to a worker that died: it
    /// is recorded as interrupted and the rung runs again.
    pub step_lease: Duration,
    /// The DNS ladder marks a domain whose DNS moved away stale after this.
    pub dns_stale_after: Duration,
    /// Which machines repairs may restart and replace.
    pub infra: InfraSetting,
}

/// `PORTICO_INFRA`: the infra adapter the ladders use in `serve`/`worker`.
/// Dev mode passes its own `LocalProcesses` instead.
#[derive(Clone, Debug, PartialEq)]
pub enum InfraSetting {
    /// No adapter: restart and replace are skipped.
    None,
    /// `local`: this process spawns and supervises `count` edges.
    Local {
        count: u32,
        dir: Option<PathBuf>,
        /// Where the edges reach the control plane; default `http://{listen}`.
        control_plane_url: Option<String>,
        /// Environment passed to each edge (`PORTICO_LOCAL_EDGE_ENV`,
        /// `K=V` pairs separated by commas).
        env: Vec<(String, String)>,
    },
    /// `fly`: the Fly Machines adapter (`PORTICO_FLY_*`).
    Fly,
}

impl HealthSettings {
    /// `wait` scaled by [`HealthSettings::repair_time_scale`].
    pub fn scaled(&self, wait: Duration) -> Duration {
        wait.mul_f64(self.repair_time_scale)
    }

    pub fn action_enabled(&self, action: &str) -> bool {
        !self.disabled_actions.iter().any(|a| a == action)
    }
}

pub(super) fn health_settings(raw: &Raw) -> Result<HealthSettings, SettingsError> {
    let ms = |name: &str, default: u32| -> Result<Duration, SettingsError> {
        Ok(Duration::from_millis(u64::from(positive(
            raw, name, default,
        )?)))
    };
    let secs = |name: &str, default: u32| -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(u64::from(positive(
            raw, name, default,
        )?)))
    };
    let ratio = |name: &str, default: f64| -> Result<f64, SettingsError> {
        let r: f64 = raw.parse_or(name, Some(default))?;
        if r > 0.0 && r <= 1.0 {
            Ok(r)
        } else {
            Err(err(name, "must be a ratio in (0, 1]"))
        }
    };
    let scale: f64 = raw.parse_or("PORTICO_REPAIR_TIME_SCALE", Some(1.0))?;
    if !(scale > 0.0 && scale <= 100.0) {
        return Err(err("PORTICO_REPAIR_TIME_SCALE", "must be in (0, 100]"));
    }
    let disabled_actions = raw.list("PORTICO_REPAIR_DISABLED_ACTIONS", |s| {
        if crate::health::ladder::ACTIONS.contains(&s) {
            Ok(s.to_string())
        } else {
            Err(format!(
                "{s:?} is not a repair action (one of {})",
                crate::health::ladder::ACTIONS.join(", ")
            ))
        }
    })?;
    Ok(HealthSettings {
        tick: ms("PORTICO_HEALTH_TICK_MS", 5_000)?,
        edge_interval: ms("PORTICO_HEALTH_EDGE_INTERVAL_MS", 15_000)?,
        host_interval: ms("PORTICO_HEALTH_HOST_INTERVAL_MS", 60_000)?,
        fail_threshold: positive(raw, "PORTICO_HEALTH_FAIL_THRESHOLD", 3)?,
        pass_threshold: positive(raw, "PORTICO_HEALTH_PASS_THRESHOLD", 2)?,
        traffic_window: secs("PORTICO_HEALTH_TRAFFIC_WINDOW_SECS", 300)?,
        min_requests: positive(raw, "PORTICO_HEALTH_MIN_REQUESTS", 20)?,
        upstream_error_ratio: ratio("PORTICO_HEALTH_UPSTREAM_ERROR_RATIO", 0.5)?,
        tls_failure_ratio: ratio("PORTICO_HEALTH_TLS_FAILURE_RATIO", 0.5)?,
        certificate_expiry: secs("PORTICO_HEALTH_CERTIFICATE_EXPIRY_SECS", 7 * 86_400)?,
        probe_timeout: ms("PORTICO_HEALTH_PROBE_TIMEOUT_MS", 3_000)?,
        repair_time_scale: scale,
        disabled_actions,
        step_lease: secs("PORTICO_REPAIR_STEP_LEASE_SECS", 300)?,
        dns_stale_after: secs("PORTICO_REPAIR_DNS_STALE_AFTER_SECS", 7 * 86_400)?,
        infra: infra_setting(raw)?,
    })
}

fn infra_setting(raw: &Raw) -> Result<InfraSetting, SettingsError> {
    match raw.get("PORTICO_INFRA").unwrap_or("none") {
        "none" => Ok(InfraSetting::None),
        "fly" => {
            if raw.get("PORTICO_FLY_APP").is_none() {
                return Err(err(
                    "PORTICO_INFRA",
                    "`fly` needs the Fly settings (PORTICO_FLY_APP, PORTICO_FLY_API_TOKEN)",
                ));
            }
            Ok(InfraSetting::Fly)
        }
        "local" => {
            let count = positive(raw, "PORTICO_LOCAL_EDGES", 1)?;
            if count > 16 {
                return Err(err("PORTICO_LOCAL_EDGES", "at most 16 local edges"));
            }
            let env = raw.list("PORTICO_LOCAL_EDGE_ENV", |pair| {
                pair.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))
            })?;
            Ok(InfraSetting::Local {
                count,
                dir: raw.get("PORTICO_LOCAL_EDGE_DIR").map(PathBuf::from),
                control_plane_url: raw
                    .get("PORTICO_LOCAL_EDGE_CONTROL_PLANE")
                    .map(str::to_string),
                env,
            })
        }
        _ => Err(err("PORTICO_INFRA", "must be `none`, `local` or `fly`")),
    }
}
