//! Heartbeats: `POST {control_plane}/internal/v1/edge/heartbeat` with a JSON
//! [`Heartbeat`] every interval and promptly after every apply or rejection
//! (those that land while one is in flight are coalesced into the next
//! one), so the control plane learns the applied version within
//! milliseconds. [`build`] is the pure part.

use super::ClientSettings;
use crate::state::Edge;
use crate::table::RoutingTable;
use pingora::server::ShutdownWatch;
use portico_protocol::{Heartbeat, MAX_HOSTS_MISSING_CERTIFICATE, PROTOCOL_VERSION, Rejection};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The most a heartbeat POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat for `table`. The rejection is left out once the edge
/// serves its version or a later one (the refused config was superseded).
pub fn build(
    edge_id: &str,
    table: &RoutingTable,
    uptime: Duration,
    counters: BTreeMap<String, u64>,
    rejection: Option<Rejection>,
) -> Heartbeat {
    let applied_version = table.version();
    let (hosts_missing_certificate, _) =
        table.hosts_without_certificate(MAX_HOSTS_MISSING_CERTIFICATE);
    Heartbeat {
        v: PROTOCOL_VERSION,
        edge_id: edge_id.to_owned(),
        build: env!("CARGO_PKG_VERSION").to_owned(),
        applied_version,
        uptime_secs: uptime.as_secs(),
        counters,
        hosts: u64::try_from(table.host_count()).unwrap_or(u64::MAX),
        certificates: u64::try_from(table.certificate_count()).unwrap_or(u64::MAX),
        rejection: rejection.filter(|r| r.version > applied_version),
        hosts_missing_certificate,
    }
}

/// The counters a heartbeat carries, read from the edge and its table.
pub fn counters(edge: &Edge, table: &RoutingTable) -> BTreeMap<String, u64> {
    let m = &edge.metrics;
    BTreeMap::from([
        (
            "unknown_changes_skipped".to_owned(),
            table.unknown_changes_skipped(),
        ),
        ("unknown_frames_skipped".to_owned(), m.unknown_frames.get()),
        (
            "rejected_configs_total".to_owned(),
            m.rejected_configs.get(),
        ),
        (
            "stream_reconnects_total".to_owned(),
            m.stream_reconnects.get(),
        ),
        (
            "snapshots_applied_total".to_owned(),
            m.snapshots_applied.get(),
        ),
        ("deltas_applied_total".to_owned(), m.deltas_applied.get()),
        (
            "hosts_missing_certificate".to_owned(),
            u64::try_from(table.hosts_without_certificate(0).1).unwrap_or(u64::MAX),
        ),
        (
            "report_windows_dropped".to_owned(),
            edge.traffic.outbox.dropped(),
        ),
        (
            "report_events_dropped".to_owned(),
            edge.traffic.events_dropped(),
        ),
    ])
}

/// Sends heartbeats until shutdown.
pub(super) async fn run(
    edge: &Arc<Edge>,
    http: &reqwest::Client,
    settings: &ClientSettings,
    mut shutdown: ShutdownWatch,
) {
    let url = format!("{}/internal/v1/edge/heartbeat", settings.url);
    let mut failing = false;
    loop {
        let table = edge.table();
        let heartbeat = build(
            &settings.name,
            &table,
            edge.uptime(),
            counters(edge, &table),
            edge.rejection(),
        );
        drop(table);
        match send(http, &url, settings, &heartbeat).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats reach the control plane again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                edge.metrics.heartbeat_failures.inc();
                if failing {
                    tracing::debug!(error = %e, "heartbeat failed");
                } else {
                    tracing::warn!(error = %e, "heartbeat failed (further failures are logged at debug)");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.heartbeat_interval) => {}
            () = edge.news() => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    settings: &ClientSettings,
    heartbeat: &Heartbeat,
) -> Result<(), String> {
    let resp = http
        .post(url)
        .bearer_auth(settings.token.expose())
        .json(heartbeat)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| crate::outbound::describe(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    Err(match status.as_u16() {
        401 => "the control plane refused the edge's token (401); check token".to_owned(),
        _ => format!("{url} answered {status}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_protocol::{ConfigVersion, EdgeSettings, HostConfig, Snapshot};

    fn table(version: u64) -> RoutingTable {
        RoutingTable::from_snapshot(&Snapshot {
            v: PROTOCOL_VERSION,
            version: ConfigVersion(version),
            hosts: vec![
                HostConfig::new("a.example.com"),
                HostConfig::new("*.b.example"),
            ],
            certificates: Vec::new(),
            challenges: Vec::new(),
            settings: EdgeSettings::default(),
        })
        .unwrap()
    }

    fn rejection(version: u64) -> Rejection {
        Rejection {
            version: ConfigVersion(version),
            reason: "certificate for a.example.com: private key does not match".into(),
            at_unix: 1_800_000_000,
        }
    }

    #[test]
    fn a_heartbeat_says_what_the_edge_serves() {
        let counters = BTreeMap::from([("rejected_configs_total".to_owned(), 1)]);
        let hb = build(
            "edge-fra-1",
            &table(4),
            Duration::from_millis(61_900),
            counters.clone(),
            Some(rejection(5)),
        );
        assert_eq!(hb.v, PROTOCOL_VERSION);
        assert_eq!(hb.edge_id, "edge-fra-1");
        assert_eq!(hb.build, env!("CARGO_PKG_VERSION"));
        assert_eq!(hb.applied_version, ConfigVersion(4));
        assert_eq!(hb.uptime_secs, 61);
        assert_eq!((hb.hosts, hb.certificates), (2, 0));
        assert_eq!(hb.counters, counters);
        assert_eq!(hb.rejection, Some(rejection(5)));
    }

    #[test]
    fn a_superseded_rejection_is_left_out() {
        let at = |applied, rejected| {
            build(
                "",
                &table(applied),
                Duration::ZERO,
                BTreeMap::new(),
                Some(rejection(rejected)),
            )
            .rejection
        };
        assert_eq!(at(5, 5), None);
        assert_eq!(at(6, 5), None);
        assert_eq!(at(4, 5), Some(rejection(5)));
        assert_eq!(
            build("", &table(1), Duration::ZERO, BTreeMap::new(), None).rejection,
            None
        );
    }
}
