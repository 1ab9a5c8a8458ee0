//! When to renew a certificate. Pure functions of the certificate's validity,
//! the CA's ARI window and a jitter in `[0, 1)` that the caller draws once per
//! certificate (so that certificates issued together do not renew together).
//!
//! The rule:
//! 1. Our own point: renew when one third of the lifetime remains, spread
//!    over a window of 1/30 of the lifetime just before that point —
//!    `not_before + 2/3·L − L/30 + jitter·L/30`. For 90 days that is between
//!    day 57 and day 60; for 45 days, days 28.5–30; for 6 days, 3.8–4 days.
//! 2. With an ARI window, take the point `start + jitter·(end − start)`, as
//!    RFC 9773 suggests, but never later than our own point: a CA may ask for
//!    an early renewal (a revocation ahead), and then it is honoured even if
//!    that time has passed; a window that ends later than ours is not, because
//!    the last third of the lifetime is what leaves room for failed attempts.
//! 3. Never before `not_before`. A window with `end < start` is ignored.
//!
//! The result is always in `[not_before, not_after)` and never decreases as
//! the jitter grows. A certificate with `not_after <= not_before` is due at once.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// A suggested renewal window (ARI `suggestedWindow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The instant at which to renew; see the module documentation for the rule.
pub fn renew_at(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    ari_window: Option<RenewalWindow>,
    jitter: f64,
) -> DateTime<Utc> {
    let lifetime = (not_after - not_before).num_milliseconds();
    if lifetime <= 0 {
        return not_before.min(not_after);
    }
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let spread = lifetime / 30;
    let target = (lifetime - lifetime / 3).min(lifetime - 1);
    let own = add_ms(not_before, target - spread + scale(spread, jitter));
    let chosen = match ari_window {
        Some(window) if window.start <= window.end => {
            let width = (window.end - window.start).num_milliseconds();
            own.min(add_ms(window.start, scale(width, jitter)))
        }
        _ => own,
    };
    chosen.max(not_before)
}

/// Whether the certificate should be renewed at `now`.
pub fn is_due(
    now: DateTime<Utc>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    ari_window: Option<RenewalWindow>,
    jitter: f64,
) -> bool {
    now >= renew_at(not_before, not_after, ari_window, jitter)
}

/// `ms · jitter`, rounded down, never reaching `ms` (jitter < 1 keeps us
/// strictly inside the window; a jitter of exactly 1 is treated as just below).
fn scale(ms: i64, jitter: f64) -> i64 {
    let scaled = (ms as f64 * jitter) as i64;
    scaled.min(ms.saturating_sub(1)).max(0)
}

fn add_ms(at: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    TimeDelta::try_milliseconds(ms)
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(at)
}

#[cfg(test)]
#[path = "renewal_tests.rs"]
mod tests;
