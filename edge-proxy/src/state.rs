//! The edge's shared state: the current routing table behind an `ArcSwap`
//! (readers take a snapshot pointer, writers build a whole new table and
//! store it in one atomic step), the metrics, the local snapshot store, and
//! what the config client reports back: whether the table changed since it
//! was last persisted, the last refused config, and a wake-up for the
//! heartbeat after every apply or rejection. It also holds the traffic
//! recorder ([`Traffic`]) the request path feeds.
//!
//! Writers (snapshot installs, deltas, on-demand certificates) take one
//! lock, so a delta and an on-demand certificate landing at the same moment
//! cannot overwrite each other; readers never take it.

use crate::metrics::Metrics;
use crate::store::SnapshotStore;
use crate::table::{RoutingTable, TableError};
use crate::traffic::Traffic;
use arc_swap::ArcSwap;
use portico_protocol::{CertificateBundle, ConfigVersion, Delta, Rejection, Snapshot};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub struct Edge {
    table: ArcSwap<RoutingTable>,
    ready: AtomicBool,
    pub metrics: Metrics,
    /// Per-host traffic windows for the control plane's reports.
    pub traffic: Traffic,
    store: SnapshotStore,
    /// Held while a writer reads the current table and stores the next.
    writer: Mutex<()>,
    /// The table changed since it was last persisted.
    dirty: AtomicBool,
    /// Notified after every apply and every rejection, for the heartbeat
    /// (one stored permit: notifications coalesce).
    news: Notify,
    rejection: Mutex<Option<Rejection>>,
    started: Instant,
}

/// What [`Edge::apply_delta`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// The table moved to the delta's `to`.
    Applied,
    /// The table is already at or past the delta's `to`; nothing changed.
    AlreadyApplied,
}

impl Edge {
    pub fn new(metrics: Metrics, store: SnapshotStore) -> Self {
        Edge {
            table: ArcSwap::from_pointee(RoutingTable::empty()),
            ready: AtomicBool::new(false),
            metrics,
            traffic: Traffic::default(),
            store,
            writer: Mutex::new(()),
            dirty: AtomicBool::new(false),
            news: Notify::new(),
            rejection: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// The current table. Cheap: one atomic load and a reference count.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Ready once a snapshot (from file, disk cache or control plane) is installed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Validates a snapshot, installs it and, if `persist`, saves it at
    /// once. An invalid snapshot leaves the current table in place.
    pub fn install_snapshot(&self, snapshot: &Snapshot, persist: bool) -> anyhow::Result<()> {
        let table = RoutingTable::from_snapshot(snapshot)
            .map_err(|e| anyhow::anyhow!("snapshot {} rejected: {e}", snapshot.version))?;
        {
            let _writer = self.lock_writer();
            self.swap(table);
        }
        self.ready.store(true, Ordering::Release);
        self.news.notify_one();
        if persist {
            self.store.save(snapshot)?;
        }
        Ok(())
    }

    /// Installs a table built (and so validated) from a snapshot the
    /// control plane sent; the persist loop will save it.
    pub fn install_table(&self, table: RoutingTable) {
        {
            let _writer = self.lock_writer();
            self.swap(table);
        }
        self.ready.store(true, Ordering::Release);
        self.metrics.snapshots_applied.inc();
        self.after_apply();
    }

    /// Applies a delta to the current table and installs the result. A
    /// delta whose `to` is not past the current version is skipped; an
    /// error leaves the table as it was.
    pub fn apply_delta(&self, delta: &Delta) -> Result<DeltaOutcome, TableError> {
        {
            let _writer = self.lock_writer();
            let current = self.table();
            if delta.to <= current.version() {
                return Ok(DeltaOutcome::AlreadyApplied);
            }
            self.swap(current.apply(delta)?);
        }
        // A chain of deltas from the empty version 0 is a config too.
        self.ready.store(true, Ordering::Release);
        self.metrics.deltas_applied.inc();
        self.after_apply();
        Ok(DeltaOutcome::Applied)
    }

    /// Adds a certificate obtained on demand to the current table.
    pub fn add_certificate(&self, bundle: &CertificateBundle) -> anyhow::Result<()> {
        let count = {
            let _writer = self.lock_writer();
            let next = self
                .table()
                .with_certificate(bundle)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let count = next.certificate_count();
            self.table.store(Arc::new(next));
            count
        };
        self.metrics.certificates.set(gauge(count));
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops the certificates for `names` from the current table (the admin
    /// test hook: a table that lost a certificate, for the health checks to
    /// notice). Wakes the heartbeat, which reports the host as missing one.
    pub fn forget_certificates(&self, names: &[String]) -> anyhow::Result<()> {
        let count = {
            let _writer = self.lock_writer();
            let next = self
                .table()
                .without_certificates(names)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let count = next.certificate_count();
            self.table.store(Arc::new(next));
            count
        };
        self.metrics.certificates.set(gauge(count));
        self.news.notify_one();
        Ok(())
    }

    /// Records a config the edge refused (the table was kept).
    pub fn reject(&self, version: ConfigVersion, reason: String) {
        self.metrics.rejected_configs.inc();
        let rejection = Rejection {
            version,
            reason,
            at_unix: i64::try_from(unix_now()).unwrap_or(i64::MAX),
        };
        *self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(rejection);
        self.news.notify_one();
    }

    /// The last refused config, if any.
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the table changed since the last call (and clears the mark).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Marks the table as not yet persisted (e.g. after a failed write).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Resolves after the next apply or rejection, or at once if one
    /// happened since the last wait. For the heartbeat, its one waiter.
    pub async fn news(&self) {
        self.news.notified().await;
    }

    /// How long this edge has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    fn after_apply(&self) {
        self.dirty.store(true, Ordering::Release);
        self.news.notify_one();
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `table` and updates the gauges; the caller holds the writer lock.
    fn swap(&self, table: RoutingTable) {
        let m = &self.metrics;
        m.snapshot_version.set(gauge(table.version().0));
        m.hosts.set(gauge(table.host_count()));
        m.certificates.set(gauge(table.certificate_count()));
        m.snapshot_loaded_unix.set(gauge(unix_now()));
        self.table.store(Arc::new(table));
    }
}

fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
