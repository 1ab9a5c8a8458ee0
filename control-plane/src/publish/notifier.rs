//! One `LISTEN` connection per replica turns `NOTIFY portico_config` into a
//! `watch` of the newest config version. It re-reads the version after every
//! (re)connect and every few seconds anyway, so a notification lost while
//! Postgres was away is never a lost change, only a later one.
//!
//! The same connection hears resync requests (`portico_edge_resync`, the
//! edge's name) and broadcasts them to this replica's config streams. A lost
//! one is not lost either: the request stays on the edge's row and its next
//! stream honours it.

use crate::db::config;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Safety-net poll of `config_state`, in case a notification was missed.
const POLL: Duration = Duration::from_secs(5);

pub fn spawn(
    pool: PgPool,
    stop: CancellationToken,
    resync: broadcast::Sender<String>,
) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                result = listen(&pool, &tx, &resync) => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "config notifications lost; reconnecting");
                    }
                }
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    rx
}

async fn listen(
    pool: &PgPool,
    tx: &watch::Sender<u64>,
    resync: &broadcast::Sender<String>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([config::CHANNEL, crate::db::health::RESYNC_CHANNEL])
        .await?;
    bump(tx, config::state(pool).await?.version);
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            n = listener.try_recv() => match n? {
                Some(n) if n.channel() == crate::db::health::RESYNC_CHANNEL => {
                    // No receiver (no stream open here) is fine.
                    let _ = resync.send(n.payload().to_owned());
                }
                Some(n) => {
                    if let Ok(v) = n.payload().parse::<u64>() {
                        bump(tx, v);
                    }
                }
                // The connection dropped; sqlx reconnects on the next call,
                // and notifications in between are lost: re-read.
                None => bump(tx, config::state(pool).await?.version),
            },
            _ = poll.tick() => bump(tx, config::state(pool).await?.version),
        }
    }
}

fn bump(tx: &watch::Sender<u64>, version: u64) {
    tx.send_if_modified(|current| {
        if version > *current {
            *current = version;
            true
        } else {
            false
        }
    });
}
