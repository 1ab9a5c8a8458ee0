//! Ops dashboard settings (`PORTICO_OPS_*`), documented in
//! `docs/configuration.md` and `docs/dashboard.md`. The dashboard itself is on
//! exactly when `PORTICO_OPERATOR_TOKEN` is set; the cookie is `Secure` when
//! `PORTICO_PUBLIC_URL` is https.

use super::{Raw, SettingsError, positive};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct OpsSettings {
    /// How long a dashboard login lasts.
    pub session_ttl: Duration,
    /// Live-update (SSE) connections one process serves at once.
    pub max_event_clients: u32,
    /// Login attempts one process accepts per minute (all clients together).
    pub login_per_minute: u32,
}

pub(super) fn ops_settings(raw: &Raw) -> Result<OpsSettings, SettingsError> {
    Ok(OpsSettings {
        session_ttl: Duration::from_secs(u64::from(positive(
            raw,
            "PORTICO_OPS_SESSION_SECS",
            12 * 3600,
        )?)),
        max_event_clients: positive(raw, "PORTICO_OPS_MAX_EVENT_CLIENTS", 64)?,
        login_per_minute: positive(raw, "PORTICO_OPS_LOGIN_PER_MINUTE", 10)?,
    })
}
