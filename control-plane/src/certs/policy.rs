//! Pure policy decisions: when to retry a failed order, whether the CA rate
//! budget allows an order now, and when to give up. No I/O; unit-tested.

use crate::db::orders::BudgetCounts;
use crate::settings::CertificateSettings;
use std::time::Duration;

/// Backoff between attempts for one host: 1 min, doubling, capped at 6 h,
/// or the CA's own advice when it is longer.
pub fn retry_in(attempts: i32, ca_advice: Option<Duration>) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    let ours = Duration::from_secs(60)
        .saturating_mul(2u32.saturating_pow(exp))
        .min(Duration::from_secs(6 * 3600));
    ca_advice.map_or(ours, |a| a.max(ours).min(Duration::from_secs(24 * 3600)))
}

/// What the budget says about one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Budget {
    Allow,
    /// Over a limit: try again after this long, for this reason.
    Defer(Duration, String),
}

/// Checks an order against the CA's limits. Renewals are exempt from the
/// per-registered-domain limit (CAs exempt them too), so they are never
/// starved by new names.
pub fn budget(counts: BudgetCounts, s: &CertificateSettings, renewal: bool) -> Budget {
    if counts.failed_host_1h >= s.failed_validations_per_host_hour {
        return Budget::Defer(
            Duration::from_secs(3600),
            format!(
                "{} failed validations for this host in the last hour",
                counts.failed_host_1h
            ),
        );
    }
    if counts.orders_3h >= s.orders_per_3h {
        return Budget::Defer(
            Duration::from_secs(15 * 60),
            format!(
                "{} new orders in the last 3 hours (limit {})",
                counts.orders_3h, s.orders_per_3h
            ),
        );
    }
    if !renewal && counts.issued_domain_7d >= s.certs_per_domain_week {
        return Budget::Defer(
            Duration::from_secs(6 * 3600),
            format!(
                "{} certificates for this registered domain in 7 days (limit {})",
                counts.issued_domain_7d, s.certs_per_domain_week
            ),
        );
    }
    Budget::Allow
}

/// Whether an order that failed `failures` times in a row goes to the
/// fallback CA: from the `after`-th failure on, every other attempt (the
/// fallback first), so a primary that recovered is used again.
pub fn use_fallback(failures: i32, after: i32) -> bool {
    failures >= after && (failures - after) % 2 == 0
}

/// Whether a host that has been failing since `failing_for` should stop.
pub fn give_up(failing_for: Duration, s: &CertificateSettings) -> bool {
    failing_for >= s.give_up_after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::IssuerSetting;

    fn settings() -> CertificateSettings {
        CertificateSettings {
            issuer: IssuerSetting::None,
            challenge: portico_acme::ChallengeKind::Http01,
            orders_per_3h: 300,
            certs_per_domain_week: 50,
            failed_validations_per_host_hour: 5,
            give_up_after: Duration::from_secs(30 * 86_400),
            on_demand_wait: Duration::from_secs(8),
            concurrency: 8,
            renew_check_every: Duration::from_secs(60),
            on_demand_per_tenant_hour: 100,
            challenge_ack_wait: Duration::from_secs(10),
            ari_check_every: Duration::from_secs(60),
            ari_min_interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn the_fallback_comes_after_repeated_failures_then_alternates() {
        let picks: Vec<bool> = (0..8).map(|f| use_fallback(f, 3)).collect();
        assert_eq!(picks, [false, false, false, true, false, true, false, true]);
        assert!(use_fallback(0, 0), "after 0: the fallback from the start");
        assert!(!use_fallback(i32::MAX - 1, i32::MAX));
    }

    #[test]
    fn backoff_doubles_from_a_minute_to_six_hours_and_respects_the_ca() {
        let mins = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(retry_in(1, None), mins(1));
        assert_eq!(retry_in(2, None), mins(2));
        assert_eq!(retry_in(5, None), mins(16));
        assert_eq!(retry_in(40, None), mins(360));
        assert_eq!(retry_in(0, None), mins(1));
        assert_eq!(
            retry_in(1, Some(mins(30))),
            mins(30),
            "the CA asked for longer"
        );
        assert_eq!(retry_in(9, Some(mins(1))), mins(256), "ours is longer");
        assert_eq!(
            retry_in(1, Some(Duration::from_secs(10 * 86_400))),
            mins(24 * 60),
            "capped"
        );
    }

    #[test]
    fn the_budget_defers_over_each_limit_and_spares_renewals() {
        let s = settings();
        let ok = BudgetCounts {
            orders_3h: 299,
            issued_domain_7d: 49,
            failed_host_1h: 4,
        };
        assert_eq!(budget(ok, &s, false), Budget::Allow);
        let orders = BudgetCounts {
            orders_3h: 300,
            ..ok
        };
        assert!(
            matches!(budget(orders, &s, true), Budget::Defer(_, why) if why.contains("3 hours"))
        );
        let domain = BudgetCounts {
            issued_domain_7d: 50,
            ..ok
        };
        assert!(
            matches!(budget(domain, &s, false), Budget::Defer(_, why) if why.contains("registered domain"))
        );
        assert_eq!(
            budget(domain, &s, true),
            Budget::Allow,
            "renewals are exempt"
        );
        let failed = BudgetCounts {
            failed_host_1h: 5,
            ..ok
        };
        assert!(
            matches!(budget(failed, &s, true), Budget::Defer(d, _) if d == Duration::from_secs(3600))
        );
    }

    #[test]
    fn gives_up_after_the_configured_time() {
        let s = settings();
        assert!(!give_up(Duration::from_secs(29 * 86_400), &s));
        assert!(give_up(Duration::from_secs(30 * 86_400), &s));
    }
}
