//! What the edge sends back: a [`Heartbeat`] saying what it runs and has
//! applied, and a [`Report`] of per-host traffic in fixed time windows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigVersion;

/// Liveness and applied config of one edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Protocol version of the edge.
    pub v: u32,
    /// Stable id of the edge.
    pub edge_id: String,
    /// Build string of the edge binary.
    pub build: String,
    /// Config version the edge serves right now.
    pub applied_version: ConfigVersion,
    /// Seconds since the edge process started.
    #[serde(default)]
    pub uptime_secs: u64,
    /// Free-form monotonic counters (e.g. `unknown_changes_skipped`).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Hosts in the table the edge serves.
    #[serde(default)]
    pub hosts: u64,
    /// Certificates in that table.
    #[serde(default)]
    pub certificates: u64,
    /// The last config the edge refused to apply, if it has not applied a
    /// later one since.
    #[serde(default)]
    pub rejection: Option<Rejection>,
    /// Configured hosts no certificate in the table covers, sorted, at most
    /// [`MAX_HOSTS_MISSING_CERTIFICATE`] (the count of all of them is the
    /// `hosts_missing_certificate` counter).
    #[serde(default)]
    pub hosts_missing_certificate: Vec<String>,
}

/// The most hosts a [`Heartbeat`] lists as missing a certificate.
pub const MAX_HOSTS_MISSING_CERTIFICATE: usize = 100;

/// A snapshot or delta the edge validated and refused; it kept its table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The version the refused config would have moved the edge to.
    pub version: ConfigVersion,
    /// Why, in words (e.g. `certificate for a.example.com: private key does
    /// not match the certificate`).
    pub reason: String,
    /// When, unix seconds.
    pub at_unix: i64,
}

/// The edge's on-demand ask: `POST /internal/v1/edge/certificates/request`.
///
/// Answers: 200 with a [`crate::CertificateBundle`]; 403 when the host may
/// not have one (unknown, not verified, on-demand off); 503 when no issuer
/// is configured or the issuer failed. The edge fails that one handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The SNI of the handshake, lowercase.
    pub hostname: String,
}

/// Per-host traffic counts since the last report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Protocol version of the edge.
    pub v: u32,
    /// Stable id of the edge.
    pub edge_id: String,
    /// Closed windows, oldest first.
    #[serde(default)]
    pub windows: Vec<StatsWindow>,
    /// Windows dropped because the edge's buffer was full, since the edge
    /// process started (monotonic).
    #[serde(default)]
    pub dropped: u64,
    /// Request events dropped before they reached a window (the edge's
    /// event queue was full), since the edge process started (monotonic).
    #[serde(default)]
    pub events_dropped: u64,
}

/// The upper bound, in milliseconds, of a latency histogram's last bucket
/// ("+inf"): `i32::MAX`, so that every bound fits a Postgres `integer`.
pub const LATENCY_BOUND_INF_MS: u32 = 2_147_483_647;

/// Traffic of one host during one window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsWindow {
    /// Hostname as configured (exact or wildcard).
    pub host: String,
    /// Start of the window, unix seconds.
    pub start_unix: i64,
    /// Length of the window, seconds.
    pub secs: u32,
    /// Requests seen.
    #[serde(default)]
    pub requests: u64,
    /// Responses with a 2xx status.
    #[serde(default)]
    pub status_2xx: u64,
    /// Responses with a 3xx status.
    #[serde(default)]
    pub status_3xx: u64,
    /// Responses with a 4xx status.
    #[serde(default)]
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    #[serde(default)]
    pub status_5xx: u64,
    /// Failed connections to an upstream.
    #[serde(default)]
    pub upstream_connect_failures: u64,
    /// Failed client TLS handshakes.
    #[serde(default)]
    pub tls_handshake_failures: u64,
    /// Latency histogram as `(upper bound ms, count)`, bounds ascending.
    #[serde(default)]
    pub latency_buckets_ms: Vec<(u32, u64)>,
}
