//! `SIGHUP` re-reads the `--snapshot` file: a valid snapshot replaces the
//! table (and is persisted); an invalid one leaves the last good table in
//! place, counts `rejected_configs_total` and is logged once per reload.

use crate::state::Edge;
use crate::store::read_snapshot;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;

pub struct SnapshotReloader {
    pub edge: Arc<Edge>,
    pub path: Option<PathBuf>,
}

#[async_trait]
impl BackgroundService for SnapshotReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; snapshot reload disabled");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl SnapshotReloader {
    fn reload(&self) {
        let Some(path) = &self.path else {
            tracing::info!("SIGHUP without --snapshot: nothing to reload");
            return;
        };
        let result = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| read_snapshot(&bytes))
            .and_then(|snapshot| {
                self.edge
                    .install_snapshot(&snapshot, true)
                    .map(|()| snapshot.version)
            });
        match result {
            Ok(version) => tracing::info!(%version, "snapshot reloaded"),
            Err(e) => {
                self.edge.metrics.rejected_configs.inc();
                tracing::warn!(error = %e, "snapshot reload failed; keeping the current table");
            }
        }
    }
}
