//! ACME Renewal Information (RFC 9773) for certificates already issued:
//! the CA may move a certificate's suggested renewal window at any time
//! (ahead of a mass revocation, say), so each certificate's window is asked
//! for again when the CA's `Retry-After` says (within bounds). A window that
//! moved gives a new renewal time inside it, never later than our own point
//! (see [`portico_acme::renew_at`]); one already passed queues the renewal at
//! once, and the renewal order names the certificate it `replaces`.
//!
//! [`next_check`] is the pure decision; [`poll_due`] runs it for the
//! certificates whose check is due.

use super::issue::Issuance;
use crate::db;
use crate::db::certificates::{AriCheck, AriDue};
use chrono::{DateTime, Utc};
use portico_acme::{AriAdvice, CertificateId, RenewalWindow};
use std::time::Duration;

/// The longest gap between two checks of one certificate, whatever the CA says.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// After a failed check.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(3600);
/// How long a claimed check stays ours.
const LEASE: Duration = Duration::from_secs(300);
/// Certificates checked per pass.
const BATCH: i64 = 100;

/// What to record after the CA answered `advice` (`None`: it has no ARI)
/// for `row` (whose stored window it is compared with): the window to
/// store, when to ask again, and a new renewal time if the window moved.
pub fn next_check(
    row: &AriDue,
    advice: Option<&AriAdvice>,
    now: DateTime<Utc>,
    min_interval: Duration,
    jitter: f64,
) -> (Option<RenewalWindow>, DateTime<Utc>, Option<DateTime<Utc>>) {
    let Some(advice) = advice else {
        return (None, later(now, MAX_INTERVAL), None);
    };
    let wait = advice
        .poll_after
        .clamp(min_interval, MAX_INTERVAL.max(min_interval));
    let stored = match (row.ari_window_start, row.ari_window_end) {
        (Some(start), Some(end)) => Some(RenewalWindow { start, end }),
        _ => None,
    };
    let renew_at = (stored != Some(advice.window)).then(|| {
        portico_acme::renew_at(
            row.not_before.unwrap_or(row.not_after),
            row.not_after,
            Some(advice.window),
            jitter,
        )
    });
    (Some(advice.window), later(now, wait), renew_at)
}

fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(24))
}

/// Checks every certificate whose ARI check is due; returns how many.
pub async fn poll_due(issuance: &Issuance) -> anyhow::Result<usize> {
    let due = db::certificates::claim_ari_due(&issuance.pool, BATCH, LEASE).await?;
    for row in &due {
        check_one(issuance, row).await?;
    }
    Ok(due.len())
}

async fn check_one(issuance: &Issuance, row: &AriDue) -> anyhow::Result<()> {
    let now = Utc::now();
    let min_interval = issuance.settings.certificates.ari_min_interval;
    let advice = match (
        issuance.named(&row.issuer),
        CertificateId::parse(&row.ari_id),
    ) {
        (Some(issuer), Ok(id)) => issuer.issuer.renewal_info(&id).await,
        // Not from a configured CA (any more), or an id we cannot use.
        _ => Ok(None),
    };
    let advice = match advice {
        Ok(advice) => advice,
        Err(e) => {
            tracing::warn!(host = %row.hostname, error = %e, "ARI check failed; will ask again");
            let check = AriCheck {
                window: None,
                explanation_url: None,
                next_check_at: later(now, RETRY_AFTER_ERROR.max(min_interval)),
                renew_at: None,
            };
            db::certificates::record_ari(&issuance.pool, row.domain_id, &row.ari_id, &check)
                .await?;
            return Ok(());
        }
    };
    let (window, next_check_at, renew_at) =
        next_check(row, advice.as_ref(), now, min_interval, rand::random());
    let check = AriCheck {
        window: window.map(|w| (w.start, w.end)),
        explanation_url: advice.as_ref().and_then(|a| a.explanation_url.as_deref()),
        next_check_at,
        renew_at,
    };
    let mut tx = issuance.pool.begin().await?;
    db::certificates::record_ari(&mut *tx, row.domain_id, &row.ari_id, &check).await?;
    if let Some(at) = renew_at {
        tracing::info!(host = %row.hostname, renew_at = %at,
            explanation = ?check.explanation_url, "the CA moved the renewal window");
        if at <= now {
            db::orders::request(&mut tx, row.domain_id, "renewal").await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0)
            .single()
            .unwrap()
    }

    fn row(window: Option<(u32, u32)>) -> AriDue {
        AriDue {
            domain_id: uuid::Uuid::nil(),
            hostname: "a.example.com".into(),
            issuer: "https://ca.test/dir".into(),
            ari_id: "aaa.bbb".into(),
            not_before: Some(at(0)),
            not_after: at(0) + chrono::Duration::days(90),
            ari_window_start: window.map(|(s, _)| at(s)),
            ari_window_end: window.map(|(_, e)| at(e)),
        }
    }

    fn advice(start: DateTime<Utc>, end: DateTime<Utc>, poll: u64) -> AriAdvice {
        AriAdvice {
            window: RenewalWindow { start, end },
            poll_after: Duration::from_secs(poll),
            explanation_url: None,
        }
    }

    #[test]
    fn a_moved_window_gives_a_new_renewal_time_inside_it() {
        let now = at(12);
        let a = advice(at(10), at(11), 6 * 3600);
        let (window, next, renew_at) = next_check(
            &row(Some((1, 2))),
            Some(&a),
            now,
            Duration::from_secs(60),
            0.5,
        );
        assert_eq!(window, Some(a.window));
        assert_eq!(next, now + chrono::Duration::hours(6));
        let renew_at = renew_at.unwrap();
        assert!(renew_at >= at(10) && renew_at < at(11), "{renew_at}");
    }

    #[test]
    fn an_unchanged_window_keeps_the_renewal_time() {
        let a = advice(at(1), at(2), 60);
        let (_, _, renew_at) = next_check(
            &row(Some((1, 2))),
            Some(&a),
            at(12),
            Duration::from_secs(60),
            0.5,
        );
        assert_eq!(renew_at, None);
        // The first window seen is a change.
        let (_, _, renew_at) =
            next_check(&row(None), Some(&a), at(12), Duration::from_secs(60), 0.5);
        assert!(renew_at.is_some());
    }

    #[test]
    fn the_ca_poll_interval_is_bounded_both_ways() {
        let now = at(12);
        let eager = advice(at(1), at(2), 0);
        let (_, next, _) = next_check(&row(None), Some(&eager), now, Duration::from_secs(60), 0.0);
        assert_eq!(next, now + chrono::Duration::seconds(60));
        let lazy = advice(at(1), at(2), 30 * 86_400);
        let (_, next, _) = next_check(&row(None), Some(&lazy), now, Duration::from_secs(60), 0.0);
        assert_eq!(next, now + chrono::Duration::hours(24));
        // A CA without ARI is asked again a day later; nothing changes.
        let (window, next, renew_at) =
            next_check(&row(Some((1, 2))), None, now, Duration::from_secs(60), 0.0);
        assert_eq!((window, renew_at), (None, None));
        assert_eq!(next, now + chrono::Duration::hours(24));
    }

    #[test]
    fn a_window_that_ends_after_our_own_point_does_not_delay_renewal() {
        let row = row(None);
        let far = advice(
            at(0) + chrono::Duration::days(80),
            at(0) + chrono::Duration::days(85),
            60,
        );
        let (_, _, renew_at) = next_check(&row, Some(&far), at(12), Duration::from_secs(60), 0.5);
        assert!(renew_at.unwrap() <= at(0) + chrono::Duration::days(60));
    }
}
