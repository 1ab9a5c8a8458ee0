//! The local config cache: the last applied snapshot in the data dir,
//! written atomically (temp file, fsync, rename, fsync of the directory) and
//! read at start-up so the edge serves immediately, even with nothing else
//! running. Saves are serialised within the process, and each process writes
//! its own temp file, so two edges sharing the data dir during a graceful
//! upgrade never mix their bytes.

use portico_protocol::{Frame, Snapshot, decode_frame};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const FILE: &str = "snapshot.json";

pub struct SnapshotStore {
    dir: PathBuf,
    /// Held for a whole save.
    writing: Mutex<()>,
}

impl SnapshotStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("data dir {}: {e}", dir.display()))?;
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            writing: Mutex::new(()),
        })
    }

    /// The stored snapshot, if there is one. A corrupt file is an error, not
    /// an empty config: the operator must see it.
    pub fn load(&self) -> anyhow::Result<Option<Snapshot>> {
        let path = self.dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => read_snapshot(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes `snapshot` as a `{"type":"snapshot",...}` frame, streamed to
    /// the file (no second copy of a large snapshot in memory).
    pub fn save(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.write(snapshot)
    }

    /// Saves the snapshot `latest` returns, taken while holding the write
    /// lock: of two concurrent saves, the later-taken snapshot lands last.
    pub fn save_latest(&self, latest: impl FnOnce() -> Snapshot) -> anyhow::Result<Snapshot> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = latest();
        self.write(&snapshot)?;
        Ok(snapshot)
    }

    fn write(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(
            &mut out,
            &SnapshotFrame {
                kind: "snapshot",
                snapshot,
            },
        )?;
        out.write_all(b"\n")?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// What `encode_frame(&Frame::Snapshot(..))` writes, from a borrow.
#[derive(Serialize)]
struct SnapshotFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

/// A snapshot file holds either a bare `Snapshot` or a `{"type": "snapshot", ...}` frame.
pub fn read_snapshot(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    if let Ok(Frame::Snapshot(s)) = decode_frame(bytes) {
        return Ok(s);
    }
    serde_json::from_slice::<Snapshot>(bytes).map_err(|e| anyhow::anyhow!("not a snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_protocol::{ConfigVersion, EdgeSettings, HostConfig, PROTOCOL_VERSION};

    #[test]
    fn a_saved_snapshot_is_a_frame_and_loads_back() {
        let dir = std::env::temp_dir().join(format!("portico-store-{}", std::process::id()));
        let store = SnapshotStore::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        let snapshot = Snapshot {
            v: PROTOCOL_VERSION,
            version: ConfigVersion(9),
            hosts: vec![HostConfig::new("a.example.com")],
            certificates: Vec::new(),
            challenges: Vec::new(),
            settings: EdgeSettings::default(),
        };
        store.save(&snapshot).unwrap();
        let bytes = std::fs::read(dir.join(FILE)).unwrap();
        assert_eq!(
            decode_frame(&bytes).unwrap(),
            Frame::Snapshot(snapshot.clone())
        );
        assert_eq!(store.load().unwrap(), Some(snapshot));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
