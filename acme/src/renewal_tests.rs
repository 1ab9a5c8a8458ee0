//! Renewal timing against an injected clock, and its properties.

use proptest::prelude::*;

use super::*;

const DAY: i64 = 86_400;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// A clock the test moves by hand.
struct Clock(DateTime<Utc>);

impl Clock {
    fn advance(&mut self, secs: i64) -> DateTime<Utc> {
        self.0 += TimeDelta::seconds(secs);
        self.0
    }
}

/// Issued at t0 with `days` of lifetime: the first instant `is_due` is true,
/// found by walking the clock hour by hour.
fn first_due_hour(days: i64, jitter: f64, ari: Option<RenewalWindow>) -> i64 {
    let t0 = 1_750_000_000;
    let (nb, na) = (at(t0), at(t0 + days * DAY));
    let mut clock = Clock(nb);
    let mut hours = 0;
    while !is_due(clock.0, nb, na, ari, jitter) {
        clock.advance(3600);
        hours += 1;
        assert!(clock.0 < na, "never due before expiry");
    }
    hours
}

#[test]
fn ninety_days_renew_between_day_57_and_60() {
    assert_eq!(first_due_hour(90, 0.0, None), 57 * 24);
    assert_eq!(first_due_hour(90, 0.5, None), 58 * 24 + 12);
    assert_eq!(first_due_hour(90, 0.999_999, None), 60 * 24);
}

#[test]
fn forty_five_days_renew_between_day_28_5_and_30() {
    assert_eq!(first_due_hour(45, 0.0, None), 28 * 24 + 12);
    assert_eq!(first_due_hour(45, 0.999_999, None), 30 * 24);
}

#[test]
fn six_days_renew_between_3_8_and_4_days() {
    // 6 days = 144 h; one third left at 96 h; spread 4.8 h before that.
    assert_eq!(first_due_hour(6, 0.0, None), 92); // 91.2 h, rounded up to the hour
    assert_eq!(first_due_hour(6, 0.999_999, None), 96);
}

#[test]
fn an_early_ari_window_is_honoured() {
    let t0 = 1_750_000_000;
    let window = RenewalWindow {
        start: at(t0 + 10 * DAY),
        end: at(t0 + 12 * DAY),
    };
    assert_eq!(first_due_hour(90, 0.0, Some(window)), 10 * 24);
    assert_eq!(first_due_hour(90, 0.5, Some(window)), 11 * 24);
}

#[test]
fn a_window_in_the_past_means_now() {
    let t0 = 1_750_000_000;
    let (nb, na) = (at(t0), at(t0 + 90 * DAY));
    let revoked = RenewalWindow {
        start: at(t0 - DAY),
        end: at(t0 - DAY / 2),
    };
    assert_eq!(renew_at(nb, na, Some(revoked), 0.3), nb);
    assert!(is_due(at(t0 + 60), nb, na, Some(revoked), 0.3));
}

#[test]
fn a_late_ari_window_does_not_delay_past_our_point() {
    let t0 = 1_750_000_000;
    let late = RenewalWindow {
        start: at(t0 + 80 * DAY),
        end: at(t0 + 85 * DAY),
    };
    assert_eq!(first_due_hour(90, 0.0, Some(late)), 57 * 24);
}

#[test]
fn odd_inputs_are_handled() {
    let t0 = 1_750_000_000;
    let (nb, na) = (at(t0), at(t0 + 90 * DAY));
    let backwards = RenewalWindow {
        start: at(t0 + 20 * DAY),
        end: at(t0 + 10 * DAY),
    };
    assert_eq!(
        renew_at(nb, na, Some(backwards), 0.0),
        renew_at(nb, na, None, 0.0)
    );
    assert_eq!(
        renew_at(nb, na, None, f64::NAN),
        renew_at(nb, na, None, 0.0)
    );
    assert_eq!(
        renew_at(na, nb, None, 0.5),
        nb,
        "expired-before-issued is due now"
    );
    assert!(renew_at(nb, na, None, 7.0) < na);
}

fn window_strategy() -> impl Strategy<Value = Option<(i64, i64)>> {
    proptest::option::of((-200 * DAY..400 * DAY, 0..30 * DAY))
}

proptest! {
    #[test]
    fn renewal_is_inside_the_validity(
        nb in 0i64..4_000_000_000,
        life_ms in 1i64..(400 * DAY * 1000),
        window in window_strategy(),
        jitter in 0.0f64..1.0,
    ) {
        let not_before = at(nb);
        let not_after = not_before + TimeDelta::milliseconds(life_ms);
        let ari = window.map(|(offset, width)| RenewalWindow {
            start: at(nb + offset),
            end: at(nb + offset + width),
        });
        let when = renew_at(not_before, not_after, ari, jitter);
        prop_assert!(when >= not_before);
        prop_assert!(when < not_after);
    }

    #[test]
    fn renewal_is_monotone_in_jitter(
        nb in 0i64..4_000_000_000,
        life_s in 60i64..(400 * DAY),
        window in window_strategy(),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let not_before = at(nb);
        let not_after = at(nb + life_s);
        let ari = window.map(|(offset, width)| RenewalWindow {
            start: at(nb + offset),
            end: at(nb + offset + width),
        });
        prop_assert!(
            renew_at(not_before, not_after, ari, low) <= renew_at(not_before, not_after, ari, high)
        );
    }

    #[test]
    fn without_ari_one_third_remains(
        nb in 0i64..4_000_000_000,
        life_s in 3600i64..(400 * DAY),
        jitter in 0.0f64..1.0,
    ) {
        let not_before = at(nb);
        let not_after = at(nb + life_s);
        let when = renew_at(not_before, not_after, None, jitter);
        let remaining = (not_after - when).num_milliseconds();
        prop_assert!(remaining * 3 >= life_s * 1000);
        prop_assert!(remaining * 30 <= life_s * 1000 * 11);
    }
}
