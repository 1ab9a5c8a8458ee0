//! One connection of the config stream: `GET {control_plane}/internal/v1/edge/config[?since=V]`,
//! then NDJSON frames until the body ends, goes idle, or a frame cannot be
//! applied. Every way it ends is an [`End`]; the caller decides how long to
//! wait before the next connection.
//!
//! Per frame: a snapshot (whole or in parts) is built into a table on the
//! blocking pool and swapped in; a delta is applied to the current table
//! (one already applied is skipped); a refused snapshot or delta is recorded
//! as a rejection and ends the connection, keeping the table; keep-alives
//! only reset the idle timer; unknown frame types are counted and skipped.

use super::ClientSettings;
use super::assemble::{AssembleError, Assembler};
use super::lines::LineBuffer;
use crate::state::{DeltaOutcome, Edge};
use crate::table::{RoutingTable, TableError};
use bytes::Bytes;
use portico_protocol::{ConfigVersion, Delta, Frame, Snapshot, decode_frame};
use std::sync::Arc;
use std::time::Duration;

/// How long the control plane may take to answer the request's head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The control plane ended the body.
    Closed,
    /// No bytes arrived for the idle timeout.
    Idle,
    /// 401: the token is wrong.
    Unauthorized,
    /// Another non-200 answer.
    Status(u16),
    /// Connecting, the request or reading the body failed.
    Transport(String),
    /// A line or frame that breaks the protocol.
    Protocol(String),
    /// A snapshot or delta was refused; the table was kept.
    Rejected(ConfigVersion, String),
    /// A delta was made for another version than the table's.
    Resync {
        current: ConfigVersion,
        from: ConfigVersion,
    },
}

impl End {
    /// Whether the connection ended the way long-lived streams do (so one
    /// that delivered frames resets the backoff), not through a fault of
    /// what was sent.
    pub(super) fn is_benign(&self) -> bool {
        matches!(self, End::Closed | End::Idle | End::Transport(_))
    }
}

/// What a connection did.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Frames received and handled without error.
    pub(super) delivered: u64,
    pub(super) end: End,
}

/// Connects with `since` and follows the stream until it ends.
pub(super) async fn follow(
    edge: &Arc<Edge>,
    http: &reqwest::Client,
    settings: &ClientSettings,
    since: Option<ConfigVersion>,
) -> Outcome {
    let mut response = match open(http, settings, since).await {
        Ok(response) => response,
        Err(end) => return Outcome { delivered: 0, end },
    };
    edge.metrics.stream_connected.set(1);
    tracing::info!(since = ?since.map(|v| v.0), "config stream connected");
    let mut reader = Reader {
        edge,
        lines: LineBuffer::new(settings.max_line),
        assembler: Assembler::new(settings.limits),
        delivered: 0,
    };
    let end = reader.read(&mut response, settings.idle_timeout).await;
    edge.metrics.stream_connected.set(0);
    Outcome {
        delivered: reader.delivered,
        end,
    }
}

/// Sends the request; `Ok` only for a 200.
async fn open(
    http: &reqwest::Client,
    settings: &ClientSettings,
    since: Option<ConfigVersion>,
) -> Result<reqwest::Response, End> {
    let mut url = format!("{}/internal/v1/edge/config", settings.url);
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let request = http
        .get(url)
        .bearer_auth(settings.token.expose())
        .header(http::header::ACCEPT, "application/x-ndjson")
        .send();
    let response = tokio::time::timeout(RESPONSE_TIMEOUT, request)
        .await
        .map_err(|_| End::Transport(format!("no answer within {RESPONSE_TIMEOUT:?}")))?
        .map_err(|e| End::Transport(crate::outbound::describe(&e)))?;
    match response.status().as_u16() {
        200 => Ok(response),
        401 => Err(End::Unauthorized),
        other => Err(End::Status(other)),
    }
}

/// The state of one connection's reading.
struct Reader<'a> {
    edge: &'a Arc<Edge>,
    lines: LineBuffer,
    assembler: Assembler,
    delivered: u64,
}

impl Reader<'_> {
    async fn read(&mut self, response: &mut reqwest::Response, idle: Duration) -> End {
        loop {
            let chunk = match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => return End::Idle,
                Ok(Err(e)) => return End::Transport(crate::outbound::describe(&e)),
                Ok(Ok(None)) => return End::Closed,
                Ok(Ok(Some(chunk))) => chunk,
            };
            self.lines.push(&chunk);
            loop {
                let line = match self.lines.next_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => return End::Protocol(e.to_string()),
                };
                if let Err(end) = self.frame(line).await {
                    return end;
                }
            }
        }
    }

    async fn frame(&mut self, line: Bytes) -> Result<(), End> {
        let frame = decode_frame(&line).map_err(|e| End::Protocol(e.to_string()))?;
        drop(line);
        match frame {
            Frame::Snapshot(snapshot) => {
                self.not_assembling("snapshot")?;
                self.snapshot(snapshot).await?;
            }
            Frame::SnapshotBegin(begin) => {
                self.assembler.begin(begin).map_err(|e| self.parts(e))?
            }
            Frame::SnapshotChunk(chunk) => {
                self.assembler.chunk(chunk).map_err(|e| self.parts(e))?
            }
            Frame::SnapshotEnd(end) => {
                let snapshot = self.assembler.end(end).map_err(|e| self.parts(e))?;
                self.snapshot(snapshot).await?;
            }
            Frame::Delta(delta) => {
                self.not_assembling("delta")?;
                self.delta(delta).await?;
            }
            Frame::KeepAlive { .. } => {}
            Frame::Unknown => {
                self.edge.metrics.unknown_frames.inc();
                tracing::debug!("skipped a config frame of an unknown type");
            }
        }
        self.delivered += 1;
        Ok(())
    }

    /// A whole snapshot or a delta may not arrive inside a snapshot in parts.
    fn not_assembling(&self, what: &str) -> Result<(), End> {
        match self.assembler.in_progress() {
            true => Err(End::Protocol(format!(
                "a {what} arrived inside a snapshot sent in parts"
            ))),
            false => Ok(()),
        }
    }

    /// A snapshot in parts that could not be put together: a rejection of
    /// its version if a begin was seen, else a protocol error.
    fn parts(&self, e: AssembleError) -> End {
        match e.version() {
            Some(version) => self.reject(version, e.to_string()),
            None => End::Protocol(e.to_string()),
        }
    }

    async fn snapshot(&self, snapshot: Snapshot) -> Result<(), End> {
        let version = snapshot.version;
        let hosts = snapshot.hosts.len();
        let current = self.edge.table().version();
        if self.edge.is_ready() && version < current {
            tracing::warn!(%version, %current, "the control plane sent an older snapshot; installing it");
        }
        let built =
            tokio::task::spawn_blocking(move || RoutingTable::from_owned_snapshot(snapshot)).await;
        match built {
            Ok(Ok(table)) => {
                self.edge.install_table(table);
                tracing::info!(%version, hosts, "snapshot from the control plane installed");
                Ok(())
            }
            Ok(Err(e)) => Err(self.reject(version, e.to_string())),
            Err(e) => Err(self.reject(version, format!("building the table failed: {e}"))),
        }
    }

    async fn delta(&self, delta: Delta) -> Result<(), End> {
        let (from, to) = (delta.from, delta.to);
        let edge = Arc::clone(self.edge);
        let applied = tokio::task::spawn_blocking(move || edge.apply_delta(&delta)).await;
        match applied {
            Ok(Ok(DeltaOutcome::Applied)) => {
                tracing::debug!(%from, %to, "delta applied");
                Ok(())
            }
            Ok(Ok(DeltaOutcome::AlreadyApplied)) => {
                tracing::debug!(%from, %to, "delta already applied; skipped");
                Ok(())
            }
            Ok(Err(TableError::VersionMismatch { current, from })) => {
                Err(End::Resync { current, from })
            }
            Ok(Err(e)) => Err(self.reject(to, e.to_string())),
            Err(e) => Err(self.reject(to, format!("applying the delta failed: {e}"))),
        }
    }

    fn reject(&self, version: ConfigVersion, reason: String) -> End {
        tracing::warn!(%version, reason, "config refused; keeping the current table");
        self.edge.reject(version, reason.clone());
        End::Rejected(version, reason)
    }
}
