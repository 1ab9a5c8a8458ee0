//! Webhook settings (`PORTICO_WEBHOOK_*`), documented in
//! `docs/configuration.md` and `docs/webhooks.md`.

use super::{Raw, SettingsError, err, parse_nameserver, positive};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Accept `http://` endpoint URLs (development only).
    pub allow_http: bool,
    /// Accept endpoints on loopback, private and other special addresses.
    pub allow_private: bool,
    /// Resolvers for endpoint hostnames; empty means the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Delay before each attempt: the first entry is the first attempt.
    pub retry_schedule: Vec<Duration>,
    /// Whole-request timeout of one attempt.
    pub timeout: Duration,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub secret_overlap: Duration,
    /// How often the dispatcher polls (it also wakes on NOTIFY).
    pub tick: Duration,
    /// How long a claimed message belongs to one delivery job.
    pub lease: Duration,
    pub max_endpoints_per_tenant: i64,
    /// Finished messages and their attempts are kept this long.
    pub retain: Duration,
    /// Deliveries in flight per worker process.
    pub concurrency: usize,
}

pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

pub(super) fn webhook_settings(raw: &Raw) -> Result<WebhookSettings, SettingsError> {
    let timeout = Duration::from_millis(u64::from(positive(
        raw,
        "PORTICO_WEBHOOK_TIMEOUT_MS",
        15_000,
    )?));
    let lease_default =
        u32::try_from((timeout + Duration::from_secs(30)).as_millis()).unwrap_or(45_000);
    let lease = Duration::from_millis(u64::from(positive(
        raw,
        "PORTICO_WEBHOOK_LEASE_MS",
        lease_default,
    )?));
    if lease <= timeout {
        return Err(err(
            "PORTICO_WEBHOOK_LEASE_MS",
            "must be longer than PORTICO_WEBHOOK_TIMEOUT_MS, or a slow send would be sent twice",
        ));
    }
    let schedule = raw
        .get("PORTICO_WEBHOOK_RETRY_SCHEDULE")
        .unwrap_or(DEFAULT_SCHEDULE);
    Ok(WebhookSettings {
        allow_http: raw.bool_or("PORTICO_WEBHOOK_ALLOW_HTTP", false)?,
        allow_private: raw.bool_or("PORTICO_WEBHOOK_ALLOW_PRIVATE", false)?,
        nameservers: raw.list("PORTICO_WEBHOOK_NAMESERVERS", parse_nameserver)?,
        retry_schedule: parse_schedule(schedule)
            .map_err(|e| err("PORTICO_WEBHOOK_RETRY_SCHEDULE", &e))?,
        timeout,
        disable_after: Duration::from_secs(
            raw.parse_or("PORTICO_WEBHOOK_DISABLE_AFTER_SECS", Some(5 * 86_400))?,
        ),
        secret_overlap: Duration::from_secs(
            raw.parse_or("PORTICO_WEBHOOK_SECRET_OVERLAP_SECS", Some(86_400))?,
        ),
        tick: Duration::from_millis(u64::from(positive(raw, "PORTICO_WEBHOOK_TICK_MS", 1_000)?)),
        lease,
        max_endpoints_per_tenant: i64::from(positive(raw, "PORTICO_WEBHOOK_MAX_ENDPOINTS", 20)?),
        retain: Duration::from_secs(
            raw.parse_or("PORTICO_WEBHOOK_RETAIN_SECS", Some(30 * 86_400))?,
        ),
        concurrency: usize::try_from(positive(raw, "PORTICO_WEBHOOK_CONCURRENCY", 32)?)
            .unwrap_or(32),
    })
}

/// `0s,5s,5m,30m,2h` → durations; units `ms`, `s`, `m`, `h`; 1 to 50 entries.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let entries: Vec<&str> = s.split(',').map(str::trim).collect();
    if entries.is_empty() || entries.len() > 50 {
        return Err("give 1 to 50 delays, e.g. 0s,5s,5m,30m,2h".into());
    }
    entries.into_iter().map(parse_delay).collect()
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a delay like 5s, 5m or 2h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    n.checked_mul(ms)
        .filter(|ms| *ms <= 7 * 86_400_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is longer than a week"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_documented_one() {
        let s = parse_schedule(DEFAULT_SCHEDULE).unwrap();
        let secs: Vec<u64> = s.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000]);
        assert_eq!(
            parse_schedule("0,50ms,1s").unwrap()[1],
            Duration::from_millis(50)
        );
        for bad in ["", "5x", "s", "-1s", "1000000h", "5s,,5s"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
