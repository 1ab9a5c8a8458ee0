//! The checks themselves, as pure functions of what was read: an edge's
//! registry row (and an infra probe), a domain's row with its certificate,
//! the edges' heartbeats and its recent traffic (and an upstream probe).
//! Each returns a [`Check`]: passed or not, and why in words a person can
//! act on. I/O happens in `jobs::health` and `health::repair`.

use super::ladder::Kind;
use crate::db::health::{DomainSnapshot, EdgeSnapshot};
use crate::infra::Probe;
use crate::settings::HealthSettings;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub passed: bool,
    pub detail: String,
    pub data: serde_json::Value,
}

impl Check {
    fn from_problems(ok: &str, problems: Vec<String>, data: serde_json::Value) -> Check {
        Check {
            passed: problems.is_empty(),
            detail: if problems.is_empty() {
                ok.to_string()
            } else {
                problems.join("; ")
            },
            data,
        }
    }
}

/// The result of connecting to a domain's upstream from the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamProbe {
    Connected {
        target: String,
        ms: u64,
    },
    Failed {
        target: String,
        error: String,
    },
    /// The domain has no target the control plane can connect to.
    NoTarget,
}

/// Is this edge alive, serving, up to date, and not failing requests that
/// other edges serve? (A high error ratio on every edge is the upstreams'
/// business, not this edge's: it fails only at `s.upstream_error_ratio`
/// and three times the other edges' ratio.)
pub fn edge(
    e: &EdgeSnapshot,
    current_version: i64,
    probe: Option<&Probe>,
    s: &HealthSettings,
    stale_after: Duration,
    now: DateTime<Utc>,
) -> Check {
    let mut problems = Vec::new();
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    match e.last_seen_at {
        None if now - e.created_at > stale => problems.push(format!(
            "registered {} ago and never sent a heartbeat",
            ago(now - e.created_at)
        )),
        None => {}
        Some(seen) if now - seen > stale => {
            problems.push(format!("no heartbeat for {}", ago(now - seen)));
        }
        Some(_) => {}
    }
    match probe {
        None | Some(Probe::Ready) => {}
        Some(p) => problems.push(format!("probe: {p}")),
    }
    let fresh = e.last_seen_at.is_some_and(|s| now - s <= stale);
    let applied = e.applied_version.unwrap_or(0);
    if fresh && applied < current_version {
        problems.push(format!(
            "serves config v{applied}, current is v{current_version}"
        ));
    }
    if let Some(r) = &e.rejection {
        let reason = r.get("reason").and_then(|v| v.as_str()).unwrap_or("?");
        let version = r.get("version").and_then(|v| v.as_i64()).unwrap_or(0);
        problems.push(format!("refused config v{version}: {reason}"));
    }
    let mine = ratio(e.failures, e.requests);
    let others = ratio(e.others_failures, e.others_requests);
    if e.requests >= i64::from(s.min_requests)
        && mine >= s.upstream_error_ratio
        && (e.others_requests < i64::from(s.min_requests) || mine >= 3.0 * others)
    {
        problems.push(format!(
            "{} of {} requests failed through it in the last {} s ({:.0} % through the other edges)",
            e.failures,
            e.requests,
            s.traffic_window.as_secs(),
            others * 100.0
        ));
    }
    Check::from_problems(
        "heartbeat fresh, serving the current config",
        problems,
        json!({
            "last_seen_at": e.last_seen_at,
            "applied_version": e.applied_version,
            "current_version": current_version,
            "probe": probe.map(ToString::to_string),
            "requests": e.requests,
            "failures": e.failures,
        }),
    )
}

/// The checks that apply to a domain right now, by kind. A domain whose DNS
/// is wrong is checked for DNS only (its certificate and upstream are not
/// reachable through us anyway).
pub fn domain(
    d: &DomainSnapshot,
    upstream: Option<&UpstreamProbe>,
    s: &HealthSettings,
    now: DateTime<Utc>,
) -> Vec<(Kind, Check)> {
    let mut out = vec![(Kind::Dns, dns(d))];
    if d.status != "active" {
        return out;
    }
    if let Some(c) = certificate(d, s, now) {
        out.push((Kind::Certificate, c));
    }
    out.push((Kind::Upstream, upstream_check(d, upstream, s)));
    out
}

fn dns(d: &DomainSnapshot) -> Check {
    let reasons = d
        .dns_diagnosis
        .as_ref()
        .and_then(|v| v.get("reasons"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    match d.status.as_str() {
        "active" => Check {
            passed: true,
            detail: "DNS points at the edges".into(),
            data: json!({ "status": d.status }),
        },
        other => Check {
            passed: false,
            detail: format!(
                "DNS no longer points at the edges (domain is {other}{}){}",
                summary(&reasons),
                d.dns_diagnosis
                    .as_ref()
                    .and_then(|v| v.get("hint"))
                    .and_then(|h| h.as_str())
                    .map(|h| format!(". {h}"))
                    .unwrap_or_default()
            ),
            data: json!({ "status": other, "reasons": reasons }),
        },
    }
}

/// `None` when the domain is not meant to have a certificate yet (issued on
/// demand at the first handshake, or its order is still running).
fn certificate(d: &DomainSnapshot, s: &HealthSettings, now: DateTime<Utc>) -> Option<Check> {
    let expected = matches!(d.tls_status.as_str(), "active" | "renewing");
    if !expected && d.cert_not_after.is_none() {
        return None;
    }
    let mut problems = Vec::new();
    match d.cert_not_after {
        None => problems.push(format!(
            "TLS is {} but no certificate is stored",
            d.tls_status
        )),
        Some(not_after) => {
            let soon =
                chrono::Duration::from_std(s.certificate_expiry).unwrap_or(chrono::Duration::MAX);
            if not_after <= now {
                problems.push(format!("the certificate expired at {not_after}"));
            } else if not_after - now < soon {
                problems.push(format!(
                    "the certificate expires in {}",
                    ago(not_after - now)
                ));
            }
        }
    }
    if d.cert_not_after.is_some() && !d.missing_on.is_empty() {
        problems.push(format!(
            "edge(s) {} serve no certificate for it",
            d.missing_on.join(", ")
        ));
    }
    let handshakes = d.traffic.requests + d.traffic.tls_handshake_failures;
    if handshakes >= i64::from(s.min_requests)
        && ratio(d.traffic.tls_handshake_failures, handshakes) >= s.tls_failure_ratio
    {
        problems.push(format!(
            "{} of {} TLS handshakes failed in the last {} s",
            d.traffic.tls_handshake_failures,
            handshakes,
            s.traffic_window.as_secs()
        ));
    }
    Some(Check::from_problems(
        "certificate stored, valid, served by every edge",
        problems,
        json!({
            "not_after": d.cert_not_after,
            "missing_on": d.missing_on,
            "tls_handshake_failures": d.traffic.tls_handshake_failures,
        }),
    ))
}

fn upstream_check(d: &DomainSnapshot, probe: Option<&UpstreamProbe>, s: &HealthSettings) -> Check {
    let t = &d.traffic;
    if t.requests >= i64::from(s.min_requests) {
        let errors = t.status_5xx + t.upstream_connect_failures;
        let r = ratio(errors, t.requests);
        let data = json!({
            "requests": t.requests, "status_5xx": t.status_5xx,
            "upstream_connect_failures": t.upstream_connect_failures, "ratio": r,
        });
        let window = s.traffic_window.as_secs();
        return if r >= s.upstream_error_ratio {
            Check {
                passed: false,
                detail: format!(
                    "{errors} of {} requests failed in the last {window} s ({} 5xx, {} connect failures)",
                    t.requests, t.status_5xx, t.upstream_connect_failures
                ),
                data,
            }
        } else {
            Check {
                passed: true,
                detail: format!(
                    "{errors} of {} requests failed in the last {window} s",
                    t.requests
                ),
                data,
            }
        };
    }
    match probe {
        Some(UpstreamProbe::Connected { target, ms }) => Check {
            passed: true,
            // The time is in the data, not the words: an unchanged pass is
            // not written again (`db::health::record`).
            detail: format!("little traffic; {target} accepts connections"),
            data: json!({ "probe": "connected", "target": target, "ms": ms }),
        },
        Some(UpstreamProbe::Failed { target, error }) => Check {
            passed: false,
            detail: format!("little traffic; connecting to {target} failed: {error}"),
            data: json!({ "probe": "failed", "target": target, "error": error }),
        },
        Some(UpstreamProbe::NoTarget) | None => Check {
            passed: true,
            detail: "little traffic and no probe: nothing says it fails".into(),
            data: json!({ "probe": null }),
        },
    }
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let r = part as f64 / whole as f64;
    r
}

fn summary(reasons: &serde_json::Value) -> String {
    let codes: Vec<&str> = reasons
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    r.get("code")
                        .and_then(|c| c.as_str())
                        .or_else(|| r.as_str())
                })
                .take(3)
                .collect()
        })
        .unwrap_or_default();
    if codes.is_empty() {
        String::new()
    } else {
        format!(": {}", codes.join(", "))
    }
}

/// `90 s`, `12 min`, `3 h`, `2 d`.
pub fn ago(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
