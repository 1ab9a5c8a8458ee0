//! Per-host traffic counts in fixed 10-second windows, for the control
//! plane's reports (`POST /internal/v1/edge/reports`, shipped by
//! [`crate::client::reports`]).
//!
//! The request path only calls [`Traffic::record`]: one `try_send` of a
//! small [`Event`] (the route is an `Arc` clone, no string is copied) into a
//! bounded queue. A full queue drops the event and counts it
//! (`portico_edge_report_events_dropped_total`); it never waits. The
//! aggregator ([`Windows`], driven by the report loop) folds events into
//! open windows keyed by (configured host, window start) and closes a
//! window [`CLOSE_GRACE_SECS`] after its end. Closed windows wait in a
//! bounded outbound buffer ([`Outbox`]); when it is full the oldest window
//! is dropped and counted (`portico_edge_dropped_reports_total`).
//!
//! What is counted, per configured host (the routing table's name, exact or
//! `*.` wildcard): every request whose Host matched it (proxied, redirected,
//! refused), its status class and latency (from the request header to the
//! end of the response), every failed upstream connect attempt, and TLS
//! handshakes for its SNI that the edge cannot complete because it has no
//! certificate (none configured, on-demand issuance did not deliver one in
//! time, and no default certificate). Requests for hosts the table does not
//! know are not counted here (the `requests_total{host="unknown"}` metric
//! counts them). An event that arrives after its window was closed (the
//! queue lagged by more than the grace) is counted in the oldest open
//! window instead, so nothing is counted twice or lost.

use crate::metrics::Metrics;
use crate::table::Route;
use portico_protocol::{LATENCY_BOUND_INF_MS, StatsWindow};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Length of a window.
pub const WINDOW_SECS: u32 = 10;
/// A window is closed this long after its end, for events still queued.
pub const CLOSE_GRACE_SECS: i64 = 2;
/// Upper bounds of the latency buckets, ms; the last is "+inf".
pub const LATENCY_BOUNDS_MS: [u32; 12] = [
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    LATENCY_BOUND_INF_MS,
];
/// Events queued between the request path and the aggregator.
pub const EVENT_QUEUE: usize = 65_536;
/// Closed windows kept for the shipper (e.g. 1,000 hosts for 8 minutes).
pub const OUTBOX_WINDOWS: usize = 50_000;

/// One thing that happened to a configured host.
#[derive(Clone, Debug)]
pub struct Event {
    pub route: Arc<Route>,
    /// When, unix seconds.
    pub at_unix: i64,
    pub kind: EventKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A finished request: its status (0: no response was written), its
    /// latency and the upstream connect attempts that failed for it.
    Request {
        status: u16,
        latency_ms: u32,
        connect_failures: u32,
    },
    /// A TLS handshake for the host the edge could not complete.
    TlsHandshakeFailure,
}

/// The edge's traffic recorder: the request path's side of the queue, the
/// aggregator's receiver (taken once), and the outbound buffer.
pub struct Traffic {
    tx: mpsc::Sender<Event>,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Set while an aggregator runs; events are not even queued before.
    enabled: AtomicBool,
    events_dropped: AtomicU64,
    pub outbox: Outbox,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new(EVENT_QUEUE, OUTBOX_WINDOWS)
    }
}

impl Traffic {
    pub fn new(queue: usize, outbox: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Traffic {
            tx,
            rx: Mutex::new(Some(rx)),
            enabled: AtomicBool::new(false),
            events_dropped: AtomicU64::new(0),
            outbox: Outbox::new(outbox),
        }
    }

    /// Queues `event` without waiting; a full queue drops it and counts.
    pub fn record(&self, event: Event, metrics: &Metrics) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        if self.tx.try_send(event).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
            metrics.report_events_dropped.inc();
        }
    }

    /// The aggregator's end of the queue; `None` after the first call.
    /// Recording starts with this call.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Event>> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if rx.is_some() {
            self.enabled.store(true, Ordering::Relaxed);
        }
        rx
    }

    /// Events dropped because the queue was full, since start.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }
}

/// Now, unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The start of the window holding `at_unix`.
pub fn window_start(at_unix: i64) -> i64 {
    at_unix - at_unix.rem_euclid(i64::from(WINDOW_SECS))
}

/// The index of the latency bucket for `latency_ms`.
pub fn bucket(latency_ms: u32) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| latency_ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len() - 1)
}

/// The open windows: (window start → host → counts). Pure: the caller
/// supplies events and the clock.
#[derive(Debug, Default)]
pub struct Windows {
    open: BTreeMap<i64, HashMap<String, Counts>>,
    /// Every window starting before this was closed.
    closed_before: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    status: [u64; 4],
    connect_failures: u64,
    tls_failures: u64,
    latency: [u64; LATENCY_BOUNDS_MS.len()],
}

impl Windows {
    /// Counts `event` in its window (or in the oldest open one, if its own
    /// was already closed).
    pub fn fold(&mut self, event: &Event) {
        let start = window_start(event.at_unix).max(self.closed_before);
        let hosts = self.open.entry(start).or_default();
        let host = event.route.config.hostname.as_str();
        let counts = match hosts.get_mut(host) {
            Some(c) => c,
            None => hosts.entry(host.to_owned()).or_default(),
        };
        match event.kind {
            EventKind::Request {
                status,
                latency_ms,
                connect_failures,
            } => {
                counts.requests += 1;
                if (200..=599).contains(&status) {
                    counts.status[usize::from(status / 100 - 2)] += 1;
                }
                counts.connect_failures += u64::from(connect_failures);
                counts.latency[bucket(latency_ms)] += 1;
            }
            EventKind::TlsHandshakeFailure => counts.tls_failures += 1,
        }
    }

    /// Removes and returns the windows that ended at least
    /// [`CLOSE_GRACE_SECS`] before `now_unix` (all of them if `all`),
    /// oldest first.
    pub fn close(&mut self, now_unix: i64, all: bool) -> Vec<StatsWindow> {
        let cutoff = if all {
            i64::MAX
        } else {
            now_unix - CLOSE_GRACE_SECS - i64::from(WINDOW_SECS) + 1
        };
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() >= cutoff {
                break;
            }
            let (start, hosts) = entry.remove_entry();
            self.closed_before = self.closed_before.max(start + i64::from(WINDOW_SECS));
            let mut hosts: Vec<(String, Counts)> = hosts.into_iter().collect();
            hosts.sort_by(|a, b| a.0.cmp(&b.0));
            closed.extend(hosts.into_iter().map(|(host, c)| stats(host, start, c)));
        }
        if !all {
            // The first window start at or after the cutoff is still open.
            let first_open = window_start(cutoff + i64::from(WINDOW_SECS) - 1);
            self.closed_before = self.closed_before.max(first_open);
        }
        closed
    }
}

fn stats(host: String, start_unix: i64, c: Counts) -> StatsWindow {
    StatsWindow {
        host,
        start_unix,
        secs: WINDOW_SECS,
        requests: c.requests,
        status_2xx: c.status[0],
        status_3xx: c.status[1],
        status_4xx: c.status[2],
        status_5xx: c.status[3],
        upstream_connect_failures: c.connect_failures,
        tls_handshake_failures: c.tls_failures,
        latency_buckets_ms: LATENCY_BOUNDS_MS
            .iter()
            .zip(c.latency)
            .filter(|(_, n)| *n > 0)
            .map(|(b, n)| (*b, n))
            .collect(),
    }
}

/// Closed windows waiting to be shipped, oldest first, at most `cap`; a
/// full buffer drops its oldest window and counts it.
pub struct Outbox {
    windows: Mutex<VecDeque<StatsWindow>>,
    cap: usize,
    dropped: AtomicU64,
}

impl Outbox {
    pub fn new(cap: usize) -> Self {
        Outbox {
            windows: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends `windows`; returns how many old ones were dropped for them.
    pub fn push(&self, windows: Vec<StatsWindow>) -> u64 {
        let mut q = self.lock();
        q.extend(windows);
        self.trim(&mut q)
    }

    /// Takes up to `max` of the oldest windows.
    pub fn take(&self, max: usize) -> Vec<StatsWindow> {
        let mut q = self.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts back windows that could not be sent, ahead of the newer ones;
    /// returns how many (oldest first) were dropped to stay within the cap.
    pub fn put_back(&self, windows: Vec<StatsWindow>) -> u64 {
        let mut q = self.lock();
        for w in windows.into_iter().rev() {
            q.push_front(w);
        }
        self.trim(&mut q)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Windows dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn trim(&self, q: &mut VecDeque<StatsWindow>) -> u64 {
        let over = q.len().saturating_sub(self.cap);
        q.drain(..over);
        let over = u64::try_from(over).unwrap_or(u64::MAX);
        self.dropped.fetch_add(over, Ordering::Relaxed);
        over
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<StatsWindow>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "traffic_tests.rs"]
mod tests;
