//! Traffic report settings (`PORTICO_TRAFFIC_*`, `PORTICO_INGEST_*`),
//! documented in `docs/configuration.md` and `docs/health.md`.

use super::{Raw, SettingsError, err, positive};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TrafficSettings {
    /// Traffic windows are deleted this long after they started; reports
    /// with windows older than this are refused.
    pub retention: Duration,
    /// Rows one prune statement deletes at most.
    pub prune_batch: i64,
    /// `ingest_report` jobs run at once per worker process.
    pub ingest_concurrency: usize,
}

pub(super) fn traffic_settings(raw: &Raw) -> Result<TrafficSettings, SettingsError> {
    let hours = positive(raw, "PORTICO_TRAFFIC_RETENTION_HOURS", 168)?;
    if hours > 24 * 400 {
        return Err(err(
            "PORTICO_TRAFFIC_RETENTION_HOURS",
            "must be at most 9600 (400 days)",
        ));
    }
    Ok(TrafficSettings {
        retention: Duration::from_secs(u64::from(hours) * 3_600),
        prune_batch: i64::from(positive(raw, "PORTICO_TRAFFIC_PRUNE_BATCH", 10_000)?),
        ingest_concurrency: usize::try_from(positive(raw, "PORTICO_INGEST_CONCURRENCY", 4)?)
            .unwrap_or(4),
    })
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;
    use std::time::Duration;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, crate::settings::SettingsError> {
        let mut env: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("DATABASE_URL".into(), "postgres://u@h/db".into());
        Settings::from_sources(env)
    }

    #[test]
    fn traffic_defaults_and_bounds() {
        let t = settings(&[]).unwrap().traffic;
        assert_eq!(t.retention, Duration::from_secs(168 * 3_600));
        assert_eq!((t.prune_batch, t.ingest_concurrency), (10_000, 4));
        let t = settings(&[("PORTICO_TRAFFIC_RETENTION_HOURS", "24")])
            .unwrap()
            .traffic;
        assert_eq!(t.retention, Duration::from_secs(86_400));
        for bad in ["0", "9601", "x"] {
            let e = settings(&[("PORTICO_TRAFFIC_RETENTION_HOURS", bad)]).unwrap_err();
            assert_eq!(e.variable, "PORTICO_TRAFFIC_RETENTION_HOURS", "{bad}");
        }
    }
}
