//! The local config cache: the last applied snapshot in the data dir,
//! written atomically (temp file, fsync, rename, fsync of the directory) and
//! read at start-up so the edge serves immediately, even with nothing else
//! running.

use portico_protocol::{Frame, Snapshot, decode_frame, encode_frame};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "snapshot.json";

pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("data dir {}: {e}", dir.display()))?;
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
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

    pub fn save(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let bytes =
            encode_frame(&Frame::Snapshot(snapshot.clone())).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// A snapshot file holds either a bare `Snapshot` or a `{"type": "snapshot", ...}` frame.
pub fn read_snapshot(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    if let Ok(Frame::Snapshot(s)) = decode_frame(bytes) {
        return Ok(s);
    }
    serde_json::from_slice::<Snapshot>(bytes).map_err(|e| anyhow::anyhow!("not a snapshot: {e}"))
}
