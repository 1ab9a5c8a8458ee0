//! The edge's shared state: the current routing table behind an `ArcSwap`
//! (readers take a snapshot pointer, writers build a whole new table and
//! store it in one atomic step), the metrics and the local snapshot store.

use crate::metrics::Metrics;
use crate::store::SnapshotStore;
use crate::table::RoutingTable;
use arc_swap::ArcSwap;
use portico_protocol::{CertificateBundle, Snapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Edge {
    table: ArcSwap<RoutingTable>,
    ready: AtomicBool,
    pub metrics: Metrics,
    store: SnapshotStore,
}

impl Edge {
    pub fn new(metrics: Metrics, store: SnapshotStore) -> Self {
        Edge {
            table: ArcSwap::from_pointee(RoutingTable::empty()),
            ready: AtomicBool::new(false),
            metrics,
            store,
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

    /// Validates a snapshot, installs it and persists it. An invalid snapshot
    /// leaves the current table in place.
    pub fn install_snapshot(&self, snapshot: &Snapshot, persist: bool) -> anyhow::Result<()> {
        let table = RoutingTable::from_snapshot(snapshot)
            .map_err(|e| anyhow::anyhow!("snapshot {} rejected: {e}", snapshot.version))?;
        self.swap(table);
        self.ready.store(true, Ordering::Release);
        if persist {
            self.store.save(snapshot)?;
        }
        Ok(())
    }

    /// Adds a certificate obtained on demand to the current table.
    /// Concurrent additions for different hosts all land (read-copy-update).
    pub fn add_certificate(&self, bundle: &CertificateBundle) -> anyhow::Result<()> {
        // Validate once up front so the RCU closure cannot fail.
        self.table()
            .with_certificate(bundle)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.table
            .rcu(|current| match current.with_certificate(bundle) {
                Ok(next) => Arc::new(next),
                Err(_) => Arc::clone(current),
            });
        let t = self.table();
        self.metrics
            .certificates
            .set(i64::try_from(t.certificate_count()).unwrap_or(i64::MAX));
        Ok(())
    }

    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    fn swap(&self, table: RoutingTable) {
        let m = &self.metrics;
        m.snapshot_version
            .set(i64::try_from(table.version().0).unwrap_or(i64::MAX));
        m.hosts
            .set(i64::try_from(table.host_count()).unwrap_or(i64::MAX));
        m.certificates
            .set(i64::try_from(table.certificate_count()).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        m.snapshot_loaded_unix.set(i64::try_from(now).unwrap_or(0));
        self.table.store(Arc::new(table));
    }
}
