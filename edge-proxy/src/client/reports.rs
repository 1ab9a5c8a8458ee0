//! Traffic reports: the aggregator folds the request path's events into
//! 10-second windows ([`crate::traffic`]) and moves closed ones to the
//! outbound buffer; the shipper POSTs them every `report_interval` to
//! `{control_plane}/internal/v1/edge/reports` as a [`Report`] of at most
//! [`MAX_WINDOWS_PER_POST`] windows (more batches follow at once while the
//! buffer holds more). A failed POST puts its windows back (the buffer's
//! bound still holds: the oldest are dropped and counted) and waits with
//! backoff; a refused one (400, 413, 422: it would be refused again) is
//! dropped and counted. Requests never wait on any of this. At shutdown the
//! open windows are closed and one last POST is tried, bounded by
//! [`FLUSH_TIMEOUT`].

use super::ClientSettings;
use super::backoff::Backoff;
use crate::state::Edge;
use crate::traffic::{self, Event, Windows};
use pingora::server::ShutdownWatch;
use portico_protocol::{PROTOCOL_VERSION, Report, StatsWindow};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most windows one POST carries.
pub const MAX_WINDOWS_PER_POST: usize = 2_000;
/// The most a report POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The last POST at shutdown gets this long.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often open windows are checked for closing.
const CLOSE_TICK: Duration = Duration::from_secs(1);

/// Why a POST did not deliver its windows.
#[derive(Debug)]
enum Failure {
    /// Transport error, 5xx, 401, 429...: keep the windows and retry.
    Retry(String),
    /// The control plane refused the report itself; sending it again
    /// would be refused again.
    Refused(String),
}

/// Runs the aggregator and the shipper until shutdown, then flushes.
pub(super) async fn run(
    edge: &Arc<Edge>,
    http: &reqwest::Client,
    settings: &ClientSettings,
    shutdown: ShutdownWatch,
) {
    let Some(rx) = edge.traffic.take_receiver() else {
        return;
    };
    if settings.name.is_empty() {
        tracing::warn!(
            "no edge name configured (--name): the control plane will refuse this edge's \
             traffic reports, whose edge_id must be the edge's registered name"
        );
    }
    let (flushed_tx, flushed_rx) = oneshot::channel();
    let shipper = Shipper {
        edge,
        http,
        settings,
        url: format!("{}/internal/v1/edge/reports", settings.url),
    };
    tokio::join!(
        aggregate(edge, rx, shutdown.clone(), flushed_tx),
        shipper.run(shutdown, flushed_rx),
    );
}

/// Folds events into windows and closes them into the outbox; at shutdown
/// closes everything and says so.
async fn aggregate(
    edge: &Edge,
    mut rx: mpsc::Receiver<Event>,
    mut shutdown: ShutdownWatch,
    flushed: oneshot::Sender<()>,
) {
    let mut windows = Windows::default();
    let mut tick = tokio::time::interval(CLOSE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => windows.fold(&event),
                None => break,
            },
            _ = tick.tick() => {
                let closed = windows.close(traffic::unix_now(), false);
                to_outbox(edge, closed);
            }
            _ = shutdown.changed() => break,
        }
    }
    while let Ok(event) = rx.try_recv() {
        windows.fold(&event);
    }
    to_outbox(edge, windows.close(traffic::unix_now(), true));
    let _ = flushed.send(());
}

fn to_outbox(edge: &Edge, closed: Vec<StatsWindow>) {
    if closed.is_empty() {
        return;
    }
    let dropped = edge.traffic.outbox.push(closed);
    note_dropped(edge, dropped);
}

fn note_dropped(edge: &Edge, dropped: u64) {
    if dropped > 0 {
        edge.metrics.dropped_reports.inc_by(dropped);
        tracing::warn!(
            dropped,
            "traffic report buffer full: the oldest windows were dropped"
        );
    }
}

struct Shipper<'a> {
    edge: &'a Arc<Edge>,
    http: &'a reqwest::Client,
    settings: &'a ClientSettings,
    url: String,
}

impl Shipper<'_> {
    async fn run(&self, mut shutdown: ShutdownWatch, flushed: oneshot::Receiver<()>) {
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut failing = false;
        let mut last_dropped = (0, 0);
        loop {
            let delay = match self.ship_all(&mut last_dropped, TIMEOUT).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("traffic reports reach the control plane again");
                        failing = false;
                    }
                    backoff.reset();
                    self.settings.report_interval
                }
                Err(e) => {
                    self.edge.metrics.report_failures.inc();
                    let waiting = self.edge.traffic.outbox.len();
                    if failing {
                        tracing::debug!(error = %e, waiting, "traffic report failed");
                    } else {
                        tracing::warn!(error = %e, waiting, "traffic report failed; the windows are kept and retried (further failures are logged at debug)");
                    }
                    failing = true;
                    backoff.next_delay().max(Duration::from_millis(100))
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
        }
        // One bounded last try with what the aggregator flushed.
        let flush = async {
            let _ = flushed.await;
            self.ship_all(&mut last_dropped, FLUSH_TIMEOUT).await
        };
        match tokio::time::timeout(FLUSH_TIMEOUT * 2, flush).await {
            Ok(Ok(())) => tracing::info!("traffic windows flushed at shutdown"),
            Ok(Err(e)) => tracing::warn!(error = %e, "traffic windows not flushed at shutdown"),
            Err(_) => tracing::warn!("traffic windows not flushed at shutdown: timed out"),
        }
    }

    /// Sends the outbox in batches until it is empty; stops at the first
    /// failure that deserves a retry (its windows are back in the outbox).
    /// `last_dropped` is the drop counts the control plane was last told,
    /// so an empty report is sent only when they changed.
    async fn ship_all(
        &self,
        last_dropped: &mut (u64, u64),
        timeout: Duration,
    ) -> Result<(), String> {
        let traffic = &self.edge.traffic;
        loop {
            let batch = traffic.outbox.take(MAX_WINDOWS_PER_POST);
            let dropped = (traffic.outbox.dropped(), traffic.events_dropped());
            if batch.is_empty() && dropped == *last_dropped {
                return Ok(());
            }
            let full = batch.len() == MAX_WINDOWS_PER_POST;
            let report = Report {
                v: PROTOCOL_VERSION,
                edge_id: self.settings.name.clone(),
                windows: batch,
                dropped: dropped.0,
                events_dropped: dropped.1,
            };
            match self.send(&report, timeout).await {
                Ok(()) => {
                    let m = &self.edge.metrics;
                    m.reports_sent.inc();
                    m.report_windows_sent
                        .inc_by(u64::try_from(report.windows.len()).unwrap_or(u64::MAX));
                    *last_dropped = dropped;
                }
                Err(Failure::Refused(e)) => {
                    let n = u64::try_from(report.windows.len()).unwrap_or(u64::MAX);
                    self.edge.metrics.report_failures.inc();
                    self.edge.metrics.dropped_reports.inc_by(n);
                    tracing::error!(error = %e, windows = n, "the control plane refused a traffic report; its windows are dropped");
                    *last_dropped = dropped;
                }
                Err(Failure::Retry(e)) => {
                    let lost = traffic.outbox.put_back(report.windows);
                    note_dropped(self.edge, lost);
                    return Err(e);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&self, report: &Report, timeout: Duration) -> Result<(), Failure> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.settings.token.expose())
            .json(report)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Failure::Retry(crate::outbound::describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect();
        Err(match status.as_u16() {
            400 | 413 | 422 => Failure::Refused(format!("{} answered {status}: {body}", self.url)),
            401 => Failure::Retry(
                "the control plane refused the edge's token (401); check token".to_owned(),
            ),
            _ => Failure::Retry(format!("{} answered {status}", self.url)),
        })
    }
}
