//! Persisting what the edge serves: after an apply marks the table dirty,
//! the table is written back as a snapshot ([`crate::table::RoutingTable::to_snapshot`])
//! through [`crate::store::SnapshotStore::save`] at most once per interval,
//! on the blocking pool, and once more at shutdown. A failed write keeps the
//! mark, so the next round tries again.

use crate::state::Edge;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// Writes the table whenever it is dirty, every `interval`, until shutdown;
/// then once more.
pub(super) async fn run(edge: &Arc<Edge>, interval: Duration, mut shutdown: ShutdownWatch) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        failing = persist(edge, failing).await;
    }
    persist(edge, false).await;
}

/// Writes the table if it is dirty. Returns whether the write failed; the
/// first of a run of failures is a warning, later ones are debug.
pub async fn persist(edge: &Arc<Edge>, was_failing: bool) -> bool {
    if !edge.take_dirty() {
        return was_failing;
    }
    let writer = Arc::clone(edge);
    let written = tokio::task::spawn_blocking(move || {
        writer
            .store()
            .save_latest(|| writer.table().to_snapshot())
            .map(|saved| saved.version)
    })
    .await;
    let error = match written {
        Ok(Ok(version)) => {
            tracing::debug!(%version, "snapshot persisted to the data dir");
            if was_failing {
                tracing::info!(%version, "persisting the snapshot works again");
            }
            return false;
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("the writer task failed: {e}"),
    };
    edge.mark_dirty();
    if was_failing {
        tracing::debug!(error, "persisting the snapshot failed");
    } else {
        tracing::warn!(
            error,
            "persisting the snapshot failed; serving on, will retry"
        );
    }
    true
}
