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
