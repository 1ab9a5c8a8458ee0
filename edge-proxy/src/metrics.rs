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
    pub snapshot_version: IntGauge,
    pub snapshot_loaded_unix: IntGauge,
    pub hosts: IntGauge,
    pub certificates: IntGauge,
    pub rejected_configs: IntCounter,
    pub upstream_connect_failures: IntCounter,
    pub dropped_reports: IntCounter,
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
                "Report items dropped because the queue was full",
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
