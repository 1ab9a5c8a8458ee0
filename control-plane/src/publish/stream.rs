//! One edge's config stream: bring it up to date (snapshot or delta), then
//! wait for the next version or send a keep-alive, until it disconnects.
//! Frames go into a bounded channel that is the HTTP response body, so a
//! slow edge slows only its own task.

use super::Publisher;
use super::frames::{self, DeltaOutcome, FrameError};
use bytes::Bytes;
use portico_protocol::{Frame, PROTOCOL_VERSION};
use tokio::sync::mpsc;

/// Frames buffered per edge before the task waits for the edge to read.
pub const BUFFER: usize = 16;

/// Serves one edge until it disconnects or the database fails (the edge
/// then reconnects with backoff and keeps serving what it has).
pub async fn run(p: Publisher, edge: String, since: Option<u64>, out: mpsc::Sender<Bytes>) {
    match serve(&p, &edge, since, &out).await {
        Ok(()) | Err(FrameError::Closed) => tracing::debug!(%edge, "config stream closed"),
        Err(e) => tracing::warn!(%edge, error = %e, "config stream ended"),
    }
}

async fn serve(
    p: &Publisher,
    edge: &str,
    since: Option<u64>,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), FrameError> {
    let mut latest = p.latest.clone();
    latest.borrow_and_update();
    let mut resync = p.resync.subscribe();
    // A resync asked for while the edge was away: honour it now.
    let since = match crate::db::health::take_resync(&p.pool, edge).await {
        Ok(true) => {
            tracing::info!(%edge, "resync requested: sending a full snapshot");
            None
        }
        Ok(false) => since,
        Err(e) => return Err(e.into()),
    };
    let mut have = match since {
        Some(v) => v,
        None => frames::snapshot(&p.pool, &p.settings, out).await?,
    };
    let keepalive = frames::encode(&Frame::KeepAlive {
        v: PROTOCOL_VERSION,
    })?;
    loop {
        latest.borrow_and_update();
        have = catch_up(p, have, out).await?;
        tokio::select! {
            changed = latest.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(p.settings.config.keepalive) => {
                out.send(keepalive.clone()).await.map_err(|_| FrameError::Closed)?;
            }
            name = resync.recv() => {
                let wanted = match name {
                    Ok(name) => name == edge,
                    // Missed some: check this edge's row.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                };
                if wanted && crate::db::health::take_resync(&p.pool, edge).await? {
                    tracing::info!(%edge, "resync requested: sending a full snapshot");
                    have = frames::snapshot(&p.pool, &p.settings, out).await?;
                }
            }
            _ = out.closed() => return Err(FrameError::Closed),
        }
    }
}

/// Sends whatever moves the edge from `have` to the current version.
async fn catch_up(p: &Publisher, have: u64, out: &mpsc::Sender<Bytes>) -> Result<u64, FrameError> {
    match p.delta_since(have).await? {
        DeltaOutcome::UpToDate => Ok(have),
        DeltaOutcome::NeedSnapshot => frames::snapshot(&p.pool, &p.settings, out).await,
        DeltaOutcome::Delta { to, frame } => {
            out.send(frame).await.map_err(|_| FrameError::Closed)?;
            Ok(to)
        }
    }
}
