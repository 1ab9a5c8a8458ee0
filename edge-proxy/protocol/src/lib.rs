//! The wire contract between the control plane and the edge proxies: versioned
//! serde types for the config snapshot, deltas, heartbeats, reports and ACME
//! challenge answers. The edge owns it (it says what the edge consumes); the
//! control plane produces it. Plain serde types, no I/O.
//!
//! How data flows:
//!
//! - The control plane produces a stream of [`Frame`]s, one JSON object per
//!   line. The first is the whole config at one [`ConfigVersion`]: either a
//!   single [`Frame::Snapshot`] (snapshot files, small configs) or, so that
//!   no line has to hold 200k hosts, a [`Frame::SnapshotBegin`], any number
//!   of [`Frame::SnapshotChunk`]s and a [`Frame::SnapshotEnd`] that repeats
//!   the version and counts what was sent. Later frames are
//!   [`Frame::Delta`]s that move the edge from one version to the next, and
//!   [`Frame::KeepAlive`]s while idle. The edge reads each line with
//!   [`decode_frame`].
//! - The edge produces a [`Heartbeat`] (what version it has applied, how long
//!   it has been up, a few counters, the last config it rejected) and a
//!   [`Report`] (per-host traffic windows) and sends them back to the control
//!   plane. It asks for an on-demand certificate with a
//!   [`CertificateRequest`].
//!
//! Compatibility rules, so that control planes and edges can be upgraded one
//! at a time:
//!
//! - Unknown fields are ignored everywhere, and new fields get serde defaults.
//!   Adding a field or a variant does not bump [`PROTOCOL_VERSION`].
//! - Every enum that may grow has an `Unknown` catch-all: an unknown frame
//!   `type`, change `op`, challenge `kind` or redirect decodes into it, and the
//!   edge skips it (and counts it) instead of failing the whole stream.
//! - [`PROTOCOL_VERSION`] is bumped only for a breaking change. An edge
//!   refuses frames whose `v` is newer than its own, see [`decode_frame`].

mod config;
mod delta;
mod telemetry;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use config::{
    BinCapture, CertificateBundle, ChallengeAnswer, ConfigVersion, EdgeSettings, HostConfig,
    Redirect, Snapshot, SnapshotBegin, SnapshotChunk, SnapshotEnd,
};
pub use delta::{ChallengeId, Change, Delta};
pub use telemetry::{
    CertificateRequest, Heartbeat, LATENCY_BOUND_INF_MS, MAX_HOSTS_MISSING_CERTIFICATE, Rejection,
    Report, StatsWindow,
};

/// The protocol version this crate speaks; carried as `v` in every frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line [`decode_frame`] accepts, in bytes (64 MiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Decodes one line of the config stream (a trailing newline is allowed).
///
/// Rejects lines over [`MAX_FRAME_BYTES`], malformed JSON, and frames whose
/// `v` is newer than [`PROTOCOL_VERSION`]. Never panics, whatever the input.
pub fn decode_frame(line: &[u8]) -> Result<Frame, ProtocolError> {
    if line.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge {
            len: line.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let frame: Frame = serde_json::from_slice(line).map_err(ProtocolError::Json)?;
    match frame.protocol_version() {
        Some(v) if v > PROTOCOL_VERSION => Err(ProtocolError::UnsupportedVersion {
            got: v,
            supported: PROTOCOL_VERSION,
        }),
        _ => Ok(frame),
    }
}

/// Encodes a frame as one JSON line, newline included: the inverse of
/// [`decode_frame`], for the control plane and for tests.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, ProtocolError> {
    let mut line = serde_json::to_vec(frame).map_err(ProtocolError::Json)?;
    line.push(b'\n');
    Ok(line)
}

/// One item of the control plane → edge stream, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// The whole config; replaces whatever the edge had.
    Snapshot(Snapshot),
    /// Starts a snapshot sent in parts; nothing is replaced until its end.
    SnapshotBegin(SnapshotBegin),
    /// Part of the snapshot begun last.
    SnapshotChunk(SnapshotChunk),
    /// Ends the snapshot begun last; the edge checks the counts, then
    /// replaces its config.
    SnapshotEnd(SnapshotEnd),
    /// Changes from one version to the next.
    Delta(Delta),
    /// Nothing changed; the stream is alive.
    KeepAlive {
        /// Protocol version of the sender.
        v: u32,
    },
    /// A frame type this edge does not know; skip it.
    #[serde(other)]
    Unknown,
}

impl Frame {
    /// The frame's `v`, or `None` for [`Frame::Unknown`].
    pub fn protocol_version(&self) -> Option<u32> {
        match self {
            Frame::Snapshot(s) => Some(s.v),
            Frame::SnapshotBegin(s) => Some(s.v),
            Frame::SnapshotChunk(s) => Some(s.v),
            Frame::SnapshotEnd(s) => Some(s.v),
            Frame::Delta(d) => Some(d.v),
            Frame::KeepAlive { v } => Some(*v),
            Frame::Unknown => None,
        }
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug)]
pub enum ProtocolError {
    /// The line is longer than [`MAX_FRAME_BYTES`].
    TooLarge {
        /// Length of the line, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The line is not valid JSON, or not a frame.
    Json(serde_json::Error),
    /// The frame was written for a newer protocol than this edge speaks.
    UnsupportedVersion {
        /// The frame's `v`.
        got: u32,
        /// This crate's [`PROTOCOL_VERSION`].
        supported: u32,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the {max}-byte limit")
            }
            ProtocolError::Json(e) => write!(f, "malformed frame: {e}"),
            ProtocolError::UnsupportedVersion { got, supported } => write!(
                f,
                "frame has protocol version {got}, this edge supports up to {supported}"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::Json(e) => Some(e),
            _ => None,
        }
    }
}
