//! Config publication: how the control plane feeds edges.
//!
//! Writes call [`crate::db::config::publish`] in their own transaction, which
//! bumps the global version, logs the touched keys and `NOTIFY`s every
//! replica. Here, each replica runs one [`notifier`] (a `LISTEN` connection,
//! plus a slow poll in case a notification was lost while reconnecting) that
//! keeps a `watch` of the newest version. Each connected edge has a
//! [`stream`] task: full snapshot when the edge has nothing or is older than
//! the log's floor ([`frames::snapshot`], streamed in chunks from a
//! repeatable-read transaction), then one delta per wake-up: every key
//! changed since what the edge has, resolved against the current state
//! ([`frames::delta`]). Edges at the same version share one computed delta.

pub mod frames;
pub mod notifier;
pub mod stream;

use crate::settings::Settings;
use bytes::Bytes;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::{Mutex, broadcast, watch};

/// Per-replica publication state, shared by every edge stream.
#[derive(Clone)]
pub struct Publisher {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Newest config version this replica knows of.
    pub latest: watch::Receiver<u64>,
    /// Names of edges asked to take a full snapshot (a repair's resync).
    pub resync: broadcast::Sender<String>,
    /// The last delta computed, reused by edges asking for the same range.
    cache: Arc<Mutex<Option<CachedDelta>>>,
}

struct CachedDelta {
    from: u64,
    to: u64,
    frame: Bytes,
}

impl Publisher {
    pub fn new(
        pool: PgPool,
        settings: Arc<Settings>,
        latest: watch::Receiver<u64>,
        resync: broadcast::Sender<String>,
    ) -> Self {
        Publisher {
            pool,
            settings,
            latest,
            resync,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The delta frame from `since` to the current version, computed once
    /// per range for all edges of this replica.
    pub async fn delta_since(
        &self,
        since: u64,
    ) -> Result<frames::DeltaOutcome, frames::FrameError> {
        let mut cache = self.cache.lock().await;
        let latest = *self.latest.borrow();
        if let Some(c) = cache.as_ref()
            && c.from == since
            && c.to >= latest
        {
            return Ok(frames::DeltaOutcome::Delta {
                to: c.to,
                frame: c.frame.clone(),
            });
        }
        let outcome = frames::delta(&self.pool, &self.settings, since).await?;
        if let frames::DeltaOutcome::Delta { to, frame } = &outcome {
            *cache = Some(CachedDelta {
                from: since,
                to: *to,
                frame: frame.clone(),
            });
        }
        Ok(outcome)
    }
}
