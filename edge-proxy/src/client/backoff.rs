//! How long the config client waits before reconnecting: exponential
//! backoff with full jitter (a uniformly random delay between zero and a
//! ceiling that doubles per failed attempt, from `initial` up to `max`), so
//! a fleet of edges does not reconnect in lock step after a control plane
//! restart. A refused token waits longer ([`BackoffPolicy::unauthorized`]).
//! The delay math is the pure [`delay`]; [`Backoff`] adds the attempt count
//! and the random number.

use rand::Rng;
use std::time::Duration;

/// The backoff's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Ceiling after a 401: the token is wrong and will stay wrong until an
    /// operator fixes it. The delay is between half of it and all of it.
    pub unauthorized: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            unauthorized: Duration::from_secs(60),
        }
    }
}

/// The ceiling for the `attempt`-th consecutive failure (0-based):
/// `initial · 2^attempt`, at most `max`.
pub fn ceiling(policy: &BackoffPolicy, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    policy
        .initial
        .checked_mul(factor)
        .unwrap_or(policy.max)
        .min(policy.max)
}

/// The delay for the `attempt`-th failure given `unit`, a random number in
/// `[0, 1)`: full jitter over `[0, ceiling]`.
pub fn delay(policy: &BackoffPolicy, attempt: u32, unit: f64) -> Duration {
    ceiling(policy, attempt).mul_f64(clamp_unit(unit))
}

/// The delay after a 401 given `unit` in `[0, 1)`: between half of
/// `policy.unauthorized` and all of it.
pub fn unauthorized_delay(policy: &BackoffPolicy, unit: f64) -> Duration {
    policy.unauthorized.mul_f64(0.5 + 0.5 * clamp_unit(unit))
}

/// `unit` within `[0, 1]`; NaN (which `Duration::mul_f64` panics on) is 0.
fn clamp_unit(unit: f64) -> f64 {
    if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    }
}

/// Consecutive failures so far, and the policy.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    /// After a connection that delivered frames: start again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(&self.policy, self.attempt, rand::rng().random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The delay after a 401; counts one more failure.
    pub fn next_unauthorized_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        unauthorized_delay(&self.policy, rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_ceiling_doubles_from_initial_up_to_max() {
        let p = BackoffPolicy::default();
        let ceilings: Vec<Duration> = (0..10).map(|a| ceiling(&p, a)).collect();
        assert_eq!(
            ceilings,
            [
                MS(250),
                MS(500),
                MS(1_000),
                MS(2_000),
                MS(4_000),
                MS(8_000),
                MS(16_000),
                MS(30_000),
                MS(30_000),
                MS(30_000)
            ]
        );
        // No overflow however many attempts.
        assert_eq!(ceiling(&p, 40), MS(30_000));
        assert_eq!(ceiling(&p, u32::MAX), MS(30_000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = BackoffPolicy::default();
        assert_eq!(delay(&p, 0, 0.0), Duration::ZERO);
        assert_eq!(delay(&p, 0, 0.5), MS(125));
        assert_eq!(delay(&p, 3, 0.5), MS(1_000));
        assert_eq!(delay(&p, 20, 0.999_999), MS(30_000).mul_f64(0.999_999));
        // Out-of-range randomness is clamped, never a panic.
        assert_eq!(delay(&p, 1, 7.0), MS(500));
        assert_eq!(delay(&p, 1, -1.0), Duration::ZERO);
        assert_eq!(delay(&p, 1, f64::NAN), Duration::ZERO);
        assert_eq!(unauthorized_delay(&p, f64::INFINITY), MS(60_000));
    }

    #[test]
    fn a_refused_token_waits_long() {
        let p = BackoffPolicy::default();
        assert_eq!(unauthorized_delay(&p, 0.0), MS(30_000));
        assert_eq!(unauthorized_delay(&p, 1.0), MS(60_000));
    }

    #[test]
    fn failures_count_up_and_reset() {
        let p = BackoffPolicy {
            initial: MS(10),
            max: MS(40),
            unauthorized: MS(100),
        };
        let mut b = Backoff::new(p);
        for expected_ceiling in [10, 20, 40, 40] {
            assert!(b.next_delay() <= MS(expected_ceiling));
        }
        assert!(b.next_unauthorized_delay() >= MS(50));
        b.reset();
        assert!(b.next_delay() <= MS(10));
    }
}
