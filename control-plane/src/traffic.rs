//! Traffic reports from edges: the checks a [`Report`] must pass before it
//! is queued (`POST /internal/v1/edge/reports`), and its windows turned
//! into the rows the `ingest_report` job stores ([`rows`]). Pure: the clock
//! and the retention are parameters.

use crate::api::error::FieldError;
use crate::db::traffic::WindowRow;
use chrono::{DateTime, Utc};
use portico_protocol::{PROTOCOL_VERSION, Report, StatsWindow};
use std::collections::HashSet;
use std::time::Duration;

/// The most windows one report may carry (edges send at most 2,000).
pub const MAX_WINDOWS: usize = 5_000;
/// The most latency buckets one window may carry (edges send 12).
pub const MAX_BUCKETS: usize = 64;
/// How far in the future a window may start (edge clocks drift).
pub const MAX_FUTURE_SECS: i64 = 3_600;
/// The longest hostname.
pub const MAX_HOST_LEN: usize = 253;
/// Field errors reported at most; checking stops there.
const MAX_ERRORS: usize = 20;

/// Checks `report` from the edge registered as `edge_name`; returns every
/// problem (up to [`MAX_ERRORS`]) as field errors naming the field.
pub fn validate(
    report: &Report,
    edge_name: &str,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: String, code: &str, message: String| {
        errors.push(FieldError {
            field,
            code: code.to_owned(),
            message,
        });
    };
    let mut header_ok = true;
    if report.v == 0 || report.v > PROTOCOL_VERSION {
        header_ok = false;
        fail(
            "v".into(),
            "unsupported_version",
            format!(
                "protocol version {} is not 1..={PROTOCOL_VERSION}",
                report.v
            ),
        );
    }
    if report.edge_id != edge_name {
        header_ok = false;
        fail(
            "edge_id".into(),
            "wrong_edge",
            format!("must be this edge's registered name {edge_name:?} (the edge's --name)"),
        );
    }
    if report.windows.len() > MAX_WINDOWS {
        header_ok = false;
        fail(
            "windows".into(),
            "too_many",
            format!(
                "at most {MAX_WINDOWS} windows per report, got {}",
                report.windows.len()
            ),
        );
    }
    if header_ok {
        check_windows(&report.windows, now, retention, &mut fail);
    }
    errors.truncate(MAX_ERRORS);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_windows(
    windows: &[StatsWindow],
    now: DateTime<Utc>,
    retention: Duration,
    fail: &mut impl FnMut(String, &str, String),
) {
    let newest = now.timestamp() + MAX_FUTURE_SECS;
    let oldest = now.timestamp() - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut seen = HashSet::new();
    let mut failed = 0;
    for (i, w) in windows.iter().enumerate() {
        if failed >= MAX_ERRORS {
            return;
        }
        let mut bad = |field: &str, code: &str, message: String| {
            failed += 1;
            fail(format!("windows[{i}].{field}"), code, message);
        };
        if w.host.is_empty()
            || w.host.len() > MAX_HOST_LEN
            || !w.host.bytes().all(|b| b.is_ascii_graphic())
        {
            bad(
                "host",
                "invalid_host",
                format!("1-{MAX_HOST_LEN} printable ASCII characters"),
            );
        }
        if !(1..=3_600).contains(&w.secs) {
            bad(
                "secs",
                "out_of_range",
                format!("must be 1..=3600, got {}", w.secs),
            );
        }
        if w.start_unix > newest {
            bad(
                "start_unix",
                "in_the_future",
                format!(
                    "{} is more than an hour ahead of the control plane's clock",
                    w.start_unix
                ),
            );
        } else if w.start_unix < oldest {
            bad(
                "start_unix",
                "too_old",
                format!("{} is older than the traffic retention", w.start_unix),
            );
        }
        let counts = [
            ("requests", w.requests),
            ("status_2xx", w.status_2xx),
            ("status_3xx", w.status_3xx),
            ("status_4xx", w.status_4xx),
            ("status_5xx", w.status_5xx),
            ("upstream_connect_failures", w.upstream_connect_failures),
            ("tls_handshake_failures", w.tls_handshake_failures),
        ];
        for (field, n) in counts {
            if i64::try_from(n).is_err() {
                bad(
                    field,
                    "too_large",
                    format!("{n} does not fit a 64-bit signed count"),
                );
            }
        }
        if let Err(why) = check_histogram(&w.latency_buckets_ms) {
            bad("latency_buckets_ms", "invalid_histogram", why);
        }
        if !seen.insert((w.host.as_str(), w.start_unix)) {
            bad(
                "start_unix",
                "duplicate",
                format!("a second window for {:?} at {}", w.host, w.start_unix),
            );
        }
    }
}

fn check_histogram(buckets: &[(u32, u64)]) -> Result<(), String> {
    if buckets.len() > MAX_BUCKETS {
        return Err(format!("at most {MAX_BUCKETS} buckets"));
    }
    let max_bound = u32::try_from(i32::MAX).unwrap_or(u32::MAX);
    if buckets
        .iter()
        .any(|(b, n)| *b > max_bound || i64::try_from(*n).is_err())
    {
        return Err(format!(
            "bounds must be at most {max_bound} and counts fit 64-bit signed"
        ));
    }
    if buckets.windows(2).any(|p| p[0].0 >= p[1].0) {
        return Err("bounds must be strictly ascending".into());
    }
    Ok(())
}

/// The rows for a report's windows (validated by [`validate`]); a window
/// that would not convert is left out.
pub fn rows(report: &Report) -> Vec<WindowRow> {
    report.windows.iter().filter_map(row).collect()
}

fn row(w: &StatsWindow) -> Option<WindowRow> {
    let n = |v: u64| i64::try_from(v).ok();
    let latency_bounds_ms = w
        .latency_buckets_ms
        .iter()
        .map(|(b, _)| i32::try_from(*b).ok())
        .collect::<Option<Vec<i32>>>()?;
    let latency_counts = w
        .latency_buckets_ms
        .iter()
        .map(|(_, c)| n(*c))
        .collect::<Option<Vec<i64>>>()?;
    Some(WindowRow {
        host: w.host.clone(),
        window_start: DateTime::from_timestamp(w.start_unix, 0)?,
        secs: i32::try_from(w.secs).ok()?,
        requests: n(w.requests)?,
        status_2xx: n(w.status_2xx)?,
        status_3xx: n(w.status_3xx)?,
        status_4xx: n(w.status_4xx)?,
        status_5xx: n(w.status_5xx)?,
        upstream_connect_failures: n(w.upstream_connect_failures)?,
        tls_handshake_failures: n(w.tls_handshake_failures)?,
        latency_bounds_ms,
        latency_counts,
    })
}

#[cfg(test)]
#[path = "traffic_tests.rs"]
mod tests;
