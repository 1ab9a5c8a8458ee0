//! The domain status machine, as pure functions: given the current status, the
//! count of consecutive failed checks and a new DNS diagnosis, what is the new
//! status, which event (if any) does the change emit, and when is the next
//! check due. No I/O: `jobs::dns_check` loads, calls this, and stores.
//!
//! - `pending → active` when ownership and routing are both `ok`;
//! - `active → misconfigured` after N consecutive checks whose routing is `wrong`;
//! - `misconfigured → active` as soon as routing is `ok` again;
//! - `stale` (a pending domain never verified within the stale window) behaves
//!   like `pending` when it finally verifies;
//! - an `unknown` verdict (SERVFAIL, timeout) changes nothing.

use crate::db::events::EventType;
use crate::dns::{Diagnosis, Verdict};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    Pending,
    Active,
    Misconfigured,
    Moved,
    Deleting,
    Stale,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainStatus::Pending => "pending",
            DomainStatus::Active => "active",
            DomainStatus::Misconfigured => "misconfigured",
            DomainStatus::Moved => "moved",
            DomainStatus::Deleting => "deleting",
            DomainStatus::Stale => "stale",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DomainStatus::Pending,
            "active" => DomainStatus::Active,
            "misconfigured" => DomainStatus::Misconfigured,
            "moved" => DomainStatus::Moved,
            "deleting" => DomainStatus::Deleting,
            "stale" => DomainStatus::Stale,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub status: DomainStatus,
    pub consecutive_wrong: u32,
    pub event: Option<EventType>,
}

/// The status after a check. `misconfigured_after` is N (≥ 1).
pub fn after_check(
    current: DomainStatus,
    consecutive_wrong: u32,
    diagnosis: &Diagnosis,
    misconfigured_after: u32,
) -> Transition {
    let unchanged = Transition {
        status: current,
        consecutive_wrong,
        event: None,
    };
    let to = |status, event| Transition {
        status,
        consecutive_wrong: 0,
        event: Some(event),
    };
    match current {
        DomainStatus::Pending | DomainStatus::Stale => match diagnosis.verdict {
            Verdict::Ok => to(DomainStatus::Active, EventType::DomainVerified),
            _ => unchanged,
        },
        DomainStatus::Active => match diagnosis.routing {
            Verdict::Ok => Transition {
                consecutive_wrong: 0,
                ..unchanged
            },
            Verdict::Unknown => unchanged,
            Verdict::Wrong if consecutive_wrong + 1 >= misconfigured_after.max(1) => {
                to(DomainStatus::Misconfigured, EventType::DomainMisconfigured)
            }
            Verdict::Wrong => Transition {
                consecutive_wrong: consecutive_wrong + 1,
                ..unchanged
            },
        },
        DomainStatus::Misconfigured => match diagnosis.routing {
            Verdict::Ok => to(DomainStatus::Active, EventType::DomainRecovered),
            _ => unchanged,
        },
        DomainStatus::Moved | DomainStatus::Deleting => unchanged,
    }
}

/// When to check next. Pending domains are checked often at first (customers
/// usually fix DNS within minutes of adding a domain), then hourly; verified
/// domains every `active_interval`; stale ones daily. `spread` ∈ [0, 1) jitters
/// the steady-state intervals by up to ±20 % so checks do not bunch up.
pub fn next_check_in(
    status: DomainStatus,
    attempts: u32,
    active_interval: Duration,
    spread: f64,
) -> Duration {
    const PENDING_BACKOFF_SECS: [u64; 6] = [30, 60, 120, 300, 600, 1800];
    let jitter = |d: Duration| d.mul_f64(0.8 + 0.4 * spread.clamp(0.0, 1.0));
    match status {
        DomainStatus::Pending => match PENDING_BACKOFF_SECS.get(attempts as usize) {
            Some(&s) => Duration::from_secs(s),
            None => jitter(Duration::from_secs(3600)),
        },
        DomainStatus::Active | DomainStatus::Misconfigured => jitter(active_interval),
        DomainStatus::Stale => jitter(Duration::from_secs(86_400)),
        DomainStatus::Moved | DomainStatus::Deleting => Duration::from_secs(86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(verdict: Verdict, routing: Verdict) -> Diagnosis {
        Diagnosis {
            verdict,
            routing,
            ownership: verdict,
            reasons: vec![],
            found: vec![],
            expected: vec![],
            hint: String::new(),
        }
    }

    #[test]
    fn pending_becomes_active_only_on_an_ok_verdict() {
        let t = after_check(DomainStatus::Pending, 0, &diag(Verdict::Ok, Verdict::Ok), 3);
        assert_eq!(
            (t.status, t.event),
            (DomainStatus::Active, Some(EventType::DomainVerified))
        );
        for v in [Verdict::Wrong, Verdict::Unknown] {
            let t = after_check(DomainStatus::Pending, 0, &diag(v, Verdict::Ok), 3);
            assert_eq!((t.status, t.event), (DomainStatus::Pending, None));
        }
        let t = after_check(DomainStatus::Stale, 0, &diag(Verdict::Ok, Verdict::Ok), 3);
        assert_eq!(t.status, DomainStatus::Active);
    }

    #[test]
    fn active_turns_misconfigured_after_n_wrong_checks_and_unknown_never_counts() {
        let wrong = diag(Verdict::Wrong, Verdict::Wrong);
        let unknown = diag(Verdict::Unknown, Verdict::Unknown);
        let mut state = (DomainStatus::Active, 0);
        let mut events = vec![];
        for d in [&wrong, &unknown, &wrong, &unknown, &unknown] {
            let t = after_check(state.0, state.1, d, 3);
            state = (t.status, t.consecutive_wrong);
            events.extend(t.event);
        }
        assert_eq!(state, (DomainStatus::Active, 2));
        assert!(events.is_empty());
        let t = after_check(state.0, state.1, &wrong, 3);
        assert_eq!(
            (t.status, t.event),
            (
                DomainStatus::Misconfigured,
                Some(EventType::DomainMisconfigured)
            )
        );
    }

    #[test]
    fn one_good_check_resets_the_count() {
        let t = after_check(DomainStatus::Active, 2, &diag(Verdict::Ok, Verdict::Ok), 3);
        assert_eq!(
            (t.status, t.consecutive_wrong, t.event),
            (DomainStatus::Active, 0, None)
        );
        // Ownership is proven once; losing the TXT record later is not a routing problem.
        let t = after_check(
            DomainStatus::Active,
            2,
            &diag(Verdict::Wrong, Verdict::Ok),
            3,
        );
        assert_eq!(t.consecutive_wrong, 0);
    }

    #[test]
    fn misconfigured_recovers_when_routing_is_fixed() {
        let t = after_check(
            DomainStatus::Misconfigured,
            0,
            &diag(Verdict::Ok, Verdict::Ok),
            3,
        );
        assert_eq!(
            (t.status, t.event),
            (DomainStatus::Active, Some(EventType::DomainRecovered))
        );
        let t = after_check(
            DomainStatus::Misconfigured,
            0,
            &diag(Verdict::Unknown, Verdict::Unknown),
            3,
        );
        assert_eq!((t.status, t.event), (DomainStatus::Misconfigured, None));
    }

    #[test]
    fn threshold_of_one_flips_on_the_first_wrong_check() {
        let t = after_check(
            DomainStatus::Active,
            0,
            &diag(Verdict::Wrong, Verdict::Wrong),
            1,
        );
        assert_eq!(t.status, DomainStatus::Misconfigured);
    }

    #[test]
    fn schedule_backs_off_for_pending_and_spreads_active() {
        let five_min = Duration::from_secs(300);
        let firsts: Vec<_> = (0..7)
            .map(|a| next_check_in(DomainStatus::Pending, a, five_min, 0.5))
            .collect();
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
        assert_eq!(firsts[6], Duration::from_secs(3600));
        let lo = next_check_in(DomainStatus::Active, 0, five_min, 0.0);
        let hi = next_check_in(DomainStatus::Active, 0, five_min, 0.999);
        assert_eq!(lo, Duration::from_secs(240));
        assert!(hi > Duration::from_secs(359) && hi <= Duration::from_secs(360));
    }
}
