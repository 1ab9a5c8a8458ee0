//! Putting a snapshot sent in parts back together: a `SnapshotBegin`, any
//! number of `SnapshotChunk`s, a `SnapshotEnd` → one [`Snapshot`]. Pure; the
//! stream reader feeds it frames and installs what [`Assembler::end`] returns.
//!
//! Checks: a chunk or an end without a begin, and a second begin, are
//! errors; the end must repeat the begin's version and count exactly what
//! the chunks carried; the totals are capped ([`Limits`]) so a broken or
//! hostile stream cannot grow the edge's memory without bound.

use portico_protocol::{
    ConfigVersion, PROTOCOL_VERSION, Snapshot, SnapshotBegin, SnapshotChunk, SnapshotEnd,
};

/// The most hosts, certificates and challenges one snapshot may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub hosts: usize,
    pub certificates: usize,
    pub challenges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hosts: 2_000_000,
            certificates: 2_000_000,
            challenges: 2_000_000,
        }
    }
}

/// Why a snapshot in parts could not be put together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("snapshot chunk without a snapshot begin")]
    ChunkWithoutBegin,
    #[error("snapshot end without a snapshot begin")]
    EndWithoutBegin,
    #[error("snapshot {new} begun while snapshot {pending} was still being received")]
    SecondBegin {
        pending: ConfigVersion,
        new: ConfigVersion,
    },
    #[error("snapshot {begun} ended as version {ended}")]
    VersionChanged {
        begun: ConfigVersion,
        ended: ConfigVersion,
    },
    #[error("snapshot {version}: the end counts {expected} {what}, the chunks carried {received}")]
    CountMismatch {
        version: ConfigVersion,
        what: &'static str,
        expected: u64,
        received: u64,
    },
    #[error("snapshot {version}: more than {limit} {what}")]
    TooMany {
        version: ConfigVersion,
        what: &'static str,
        limit: usize,
    },
}

impl AssembleError {
    /// The version of the snapshot that failed, when a begin was seen: such
    /// a failure is reported to the control plane as a rejection.
    pub fn version(&self) -> Option<ConfigVersion> {
        match self {
            AssembleError::ChunkWithoutBegin | AssembleError::EndWithoutBegin => None,
            AssembleError::SecondBegin { pending, .. } => Some(*pending),
            AssembleError::VersionChanged { begun, .. } => Some(*begun),
            AssembleError::CountMismatch { version, .. }
            | AssembleError::TooMany { version, .. } => Some(*version),
        }
    }
}

/// Collects the parts of at most one snapshot at a time.
#[derive(Debug, Default)]
pub struct Assembler {
    limits: Limits,
    pending: Option<Snapshot>,
}

impl Assembler {
    pub fn new(limits: Limits) -> Self {
        Assembler {
            limits,
            pending: None,
        }
    }

    /// Whether a begin has been seen and its end not yet.
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Starts a snapshot. An error drops whatever was pending.
    pub fn begin(&mut self, begin: SnapshotBegin) -> Result<(), AssembleError> {
        if let Some(pending) = self.pending.take() {
            return Err(AssembleError::SecondBegin {
                pending: pending.version,
                new: begin.version,
            });
        }
        self.pending = Some(Snapshot {
            v: PROTOCOL_VERSION,
            version: begin.version,
            hosts: Vec::new(),
            certificates: Vec::new(),
            challenges: Vec::new(),
            settings: begin.settings,
        });
        Ok(())
    }

    /// Adds a chunk to the pending snapshot. An error drops it.
    pub fn chunk(&mut self, chunk: SnapshotChunk) -> Result<(), AssembleError> {
        let mut pending = self
            .pending
            .take()
            .ok_or(AssembleError::ChunkWithoutBegin)?;
        let version = pending.version;
        let too_many = |what, limit| AssembleError::TooMany {
            version,
            what,
            limit,
        };
        let l = self.limits;
        if pending.hosts.len().saturating_add(chunk.hosts.len()) > l.hosts {
            return Err(too_many("hosts", l.hosts));
        }
        if pending
            .certificates
            .len()
            .saturating_add(chunk.certificates.len())
            > l.certificates
        {
            return Err(too_many("certificates", l.certificates));
        }
        if pending
            .challenges
            .len()
            .saturating_add(chunk.challenges.len())
            > l.challenges
        {
            return Err(too_many("challenges", l.challenges));
        }
        pending.hosts.extend(chunk.hosts);
        pending.certificates.extend(chunk.certificates);
        pending.challenges.extend(chunk.challenges);
        self.pending = Some(pending);
        Ok(())
    }

    /// Finishes the pending snapshot, checking the end against it.
    pub fn end(&mut self, end: SnapshotEnd) -> Result<Snapshot, AssembleError> {
        let snapshot = self.pending.take().ok_or(AssembleError::EndWithoutBegin)?;
        if end.version != snapshot.version {
            return Err(AssembleError::VersionChanged {
                begun: snapshot.version,
                ended: end.version,
            });
        }
        let counts = [
            ("hosts", end.hosts, snapshot.hosts.len()),
            (
                "certificates",
                end.certificates,
                snapshot.certificates.len(),
            ),
            ("challenges", end.challenges, snapshot.challenges.len()),
        ];
        for (what, expected, received) in counts {
            let received = u64::try_from(received).unwrap_or(u64::MAX);
            if expected != received {
                return Err(AssembleError::CountMismatch {
                    version: snapshot.version,
                    what,
                    expected,
                    received,
                });
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_protocol::{ChallengeAnswer, EdgeSettings, HostConfig};

    fn begin(version: u64) -> SnapshotBegin {
        SnapshotBegin {
            v: PROTOCOL_VERSION,
            version: ConfigVersion(version),
            settings: EdgeSettings {
                on_demand_wait_ms: 42,
                ..EdgeSettings::default()
            },
        }
    }

    fn chunk(hosts: &[&str], challenges: usize) -> SnapshotChunk {
        SnapshotChunk {
            v: PROTOCOL_VERSION,
            hosts: hosts.iter().map(|h| HostConfig::new(*h)).collect(),
            certificates: Vec::new(),
            challenges: (0..challenges)
                .map(|i| ChallengeAnswer::Http01 {
                    token: format!("t{i}"),
                    key_authorization: "k".into(),
                })
                .collect(),
        }
    }

    fn end(version: u64, hosts: u64, challenges: u64) -> SnapshotEnd {
        SnapshotEnd {
            v: PROTOCOL_VERSION,
            version: ConfigVersion(version),
            hosts,
            certificates: 0,
            challenges,
        }
    }

    #[test]
    fn parts_make_one_snapshot_in_order() {
        let mut a = Assembler::default();
        assert!(!a.in_progress());
        a.begin(begin(7)).unwrap();
        assert!(a.in_progress());
        a.chunk(chunk(&["a.example.com", "b.example.com"], 1))
            .unwrap();
        a.chunk(chunk(&[], 0)).unwrap();
        a.chunk(chunk(&["c.example.com"], 0)).unwrap();
        let s = a.end(end(7, 3, 1)).unwrap();
        assert!(!a.in_progress());
        assert_eq!(s.version, ConfigVersion(7));
        assert_eq!(s.settings.on_demand_wait_ms, 42);
        let names: Vec<&str> = s.hosts.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(names, ["a.example.com", "b.example.com", "c.example.com"]);
        assert_eq!(s.challenges.len(), 1);
        // The assembler is reusable for the next snapshot.
        a.begin(begin(9)).unwrap();
        assert_eq!(a.end(end(9, 0, 0)).unwrap().hosts.len(), 0);
    }

    #[test]
    fn parts_out_of_order_are_errors() {
        let mut a = Assembler::default();
        assert_eq!(
            a.chunk(chunk(&["a.example.com"], 0)),
            Err(AssembleError::ChunkWithoutBegin)
        );
        assert_eq!(a.end(end(1, 0, 0)), Err(AssembleError::EndWithoutBegin));
        a.begin(begin(1)).unwrap();
        let err = a.begin(begin(2)).unwrap_err();
        assert_eq!(
            err,
            AssembleError::SecondBegin {
                pending: ConfigVersion(1),
                new: ConfigVersion(2)
            }
        );
        assert_eq!(err.version(), Some(ConfigVersion(1)));
        // The second begin dropped everything: a chunk now has no begin.
        assert!(!a.in_progress());
        assert_eq!(
            a.chunk(chunk(&[], 0)),
            Err(AssembleError::ChunkWithoutBegin)
        );
        assert_eq!(AssembleError::ChunkWithoutBegin.version(), None);
    }

    #[test]
    fn the_end_must_match_the_begin_and_the_chunks() {
        let mut a = Assembler::default();
        a.begin(begin(3)).unwrap();
        assert_eq!(
            a.end(end(4, 0, 0)),
            Err(AssembleError::VersionChanged {
                begun: ConfigVersion(3),
                ended: ConfigVersion(4)
            })
        );
        a.begin(begin(3)).unwrap();
        a.chunk(chunk(&["a.example.com"], 2)).unwrap();
        let err = a.end(end(3, 2, 2)).unwrap_err();
        assert_eq!(
            err,
            AssembleError::CountMismatch {
                version: ConfigVersion(3),
                what: "hosts",
                expected: 2,
                received: 1
            }
        );
        assert!(err.to_string().contains("snapshot 3"), "{err}");
        a.begin(begin(3)).unwrap();
        a.chunk(chunk(&["a.example.com"], 2)).unwrap();
        assert!(matches!(
            a.end(end(3, 1, 3)),
            Err(AssembleError::CountMismatch {
                what: "challenges",
                ..
            })
        ));
        assert!(!a.in_progress());
    }

    #[test]
    fn totals_are_capped() {
        let limits = Limits {
            hosts: 2,
            certificates: 2,
            challenges: 1,
        };
        let mut a = Assembler::new(limits);
        a.begin(begin(5)).unwrap();
        a.chunk(chunk(&["a.example.com", "b.example.com"], 1))
            .unwrap();
        let err = a.chunk(chunk(&["c.example.com"], 0)).unwrap_err();
        assert_eq!(
            err,
            AssembleError::TooMany {
                version: ConfigVersion(5),
                what: "hosts",
                limit: 2
            }
        );
        assert_eq!(err.version(), Some(ConfigVersion(5)));
        assert!(!a.in_progress());
        a.begin(begin(6)).unwrap();
        assert!(matches!(
            a.chunk(chunk(&[], 2)),
            Err(AssembleError::TooMany {
                what: "challenges",
                ..
            })
        ));
        assert_eq!(Limits::default().hosts, 2_000_000);
    }
}
