//! Which mains are failed, kept on disk so a restart resumes their takeover at once.
//!
//! A small JSON file in the state directory, replaced atomically: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory (so the rename itself survives
//! power loss).

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FailedSet {
    path: PathBuf,
}

impl FailedSet {
    pub fn new(state_dir: &Path) -> FailedSet {
        FailedSet { path: state_dir.join("failover-state.json") }
    }

    /// The mains that were failed; an unreadable file counts as none (and is logged).
    pub fn load(&self) -> Vec<String> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice::<Vec<String>>(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable failover state");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    pub fn save(&self, failed: &[String]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(failed)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let s = FailedSet::new(d.path());
        assert!(s.load().is_empty());
        s.save(&["nvr-a".into(), "nvr-b".into()]).unwrap();
        assert_eq!(s.load(), vec!["nvr-a".to_string(), "nvr-b".to_string()]);
        std::fs::write(d.path().join("failover-state.json"), b"{garbage").unwrap();
        assert!(s.load().is_empty());
    }
}
