//! Prometheus metrics of the edge, in a registry of its own, rendered by the
//! admin endpoint. Counters are cheap atomics; the request path only
//! increments them.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Requests by host class (`exact`, `wildcard`, `unknown`) and status class (`2xx`...).
    pub requests: IntCounterVec,
    /// TLS handshakes reaching the gate, by outcome of the gate.
    pub handshakes: IntCounterVec,
    /// On-demand certificate waits by outcome (`issued`, `refused`, `error`, `timeout`, `shared`).
    pub on_demand: IntCounterVec,
    /// Challenge answers asked of the control plane by outcome (`found`,
    /// `missing`, `cached`, `cached_miss`, `limited`, `no_source`).
    pub challenge_fetches: IntCounterVec,
    /// PROXY protocol headers by outcome: accepted (`proxied`, `local`,
    /// `unspecified`) or refused, closing the connection (`missing`,
    /// `malformed`, `oversized`, `timeout`, `closed`).
    pub proxy_headers: IntCounterVec,
    pub snapshot_version: IntGauge,
    pub snapshot_loaded_unix: IntGauge,
    pub hosts: IntGauge,
    pub certificates: IntGauge,
    pub rejected_configs: IntCounter,
    pub upstream_connect_failures: IntCounter,
    /// Closed traffic windows dropped because the outbound buffer was full
    /// (or the control plane refused them as invalid).
    pub dropped_reports: IntCounter,
    /// Traffic events dropped because the event queue was full.
    pub report_events_dropped: IntCounter,
    /// Report POSTs the control plane accepted, and the windows in them.
    pub reports_sent: IntCounter,
    pub report_windows_sent: IntCounter,
    /// Report POSTs that failed or got a non-2xx answer.
    pub report_failures: IntCounter,
    /// 1 while the config stream is connected (answered 200), else 0.
    pub stream_connected: IntGauge,
    /// Config stream connections that ended and were retried.
    pub stream_reconnects: IntCounter,
    /// Snapshots from the config stream that were installed.
    pub snapshots_applied: IntCounter,
    /// Deltas from the config stream that were applied.
    pub deltas_applied: IntCounter,
    /// Config stream frames of a type this edge does not know, skipped.
    pub unknown_frames: IntCounter,
    /// Heartbeats that failed or got a non-2xx answer.
    pub heartbeat_failures: IntCounter,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("portico_edge".into()), None)?;
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            requests: counter_vec(
                "requests_total",
                "Requests by host class and status class",
                &["host", "status"],
            )?,
            handshakes: counter_vec(
                "handshakes_total",
                "TLS handshakes by pre-TLS gate outcome",
                &["outcome"],
            )?,
            on_demand: counter_vec(
                "on_demand_total",
                "On-demand certificate waits by outcome",
                &["outcome"],
            )?,
            challenge_fetches: counter_vec(
                "challenge_fetches_total",
                "Challenge answers the table lacked, asked of the control plane, by outcome",
                &["outcome"],
            )?,
            proxy_headers: counter_vec(
                "proxy_protocol_headers_total",
                "PROXY protocol headers by outcome (refused ones close the connection)",
                &["outcome"],
            )?,
            snapshot_version: gauge("snapshot_version", "Config version of the routing table")?,
            snapshot_loaded_unix: gauge(
                "snapshot_loaded_unix",
                "When the current table was installed (unix seconds)",
            )?,
            hosts: gauge("hosts", "Configured hostnames")?,
            certificates: gauge("certificates", "Distinct certificates loaded")?,
            rejected_configs: counter(
                "rejected_configs_total",
                "Snapshots or deltas that failed to apply",
            )?,
            upstream_connect_failures: counter(
                "upstream_connect_failures_total",
                "Failed connects to upstream targets",
            )?,
            dropped_reports: counter(
                "dropped_reports_total",
                "Traffic windows dropped because the report buffer was full or the control plane refused them",
            )?,
            report_events_dropped: counter(
                "report_events_dropped_total",
                "Traffic events dropped because the event queue was full",
            )?,
            reports_sent: counter(
                "reports_sent_total",
                "Traffic reports the control plane accepted",
            )?,
            report_windows_sent: counter(
                "report_windows_sent_total",
                "Traffic windows in reports the control plane accepted",
            )?,
            report_failures: counter(
                "report_failures_total",
                "Traffic report POSTs that failed or got a non-2xx answer",
            )?,
            stream_connected: gauge(
                "config_stream_connected",
                "1 while the config stream from the control plane is connected",
            )?,
            stream_reconnects: counter(
                "config_stream_reconnects_total",
                "Config stream connections that ended and were retried",
            )?,
            snapshots_applied: counter(
                "config_snapshots_applied_total",
                "Snapshots from the config stream that were installed",
            )?,
            deltas_applied: counter(
                "config_deltas_applied_total",
                "Deltas from the config stream that were applied",
            )?,
            unknown_frames: counter(
                "config_unknown_frames_total",
                "Config stream frames of an unknown type, skipped",
            )?,
            heartbeat_failures: counter(
                "heartbeat_failures_total",
                "Heartbeats to the control plane that failed",
            )?,
            registry,
        })
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
