//! What the binary tells the store: the server's name, where the catalog lives, the volumes and timings.

use std::path::PathBuf;
use std::time::Duration;

/// One allocated disk (or directory on one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Directory holding the recordings; created if missing.
    pub path: PathBuf,
    /// Most bytes of segment files to keep here; retention deletes the oldest beyond it.
    pub max_bytes: Option<u64>,
    /// Free space to leave on the filesystem; retention deletes the oldest to keep it.
    /// None = the default floor (see [`default_reserve`]), so retention always has room to act.
    pub reserve: Option<u64>,
}

/// The free-space floor of a volume with no `reserve`: 0.5 % of the filesystem, at least 1 GiB
/// and at most 20 GiB, but never more than 5 % of the filesystem.
///
/// 1 GiB holds ~30 s of 100 channels at 4 Mbit/s, enough for retention (which runs every sync
/// round) to keep ahead of the writers; 0.5 % grows it with the array (a 4 TB disk keeps 20 GB,
/// over a minute of 1,000 channels); the 20 GiB cap stops a 100 TB array from idling 500 GB;
/// the 5 % ceiling keeps small filesystems (a 64 MiB tmpfs, a test image) mostly usable.
///
/// Not 2 %: a volume that is a directory on a shared disk (the root filesystem of a small box,
/// a CI runner) can sit below 2 % free because of other files, and the floor would then delete
/// every closed segment as soon as it was written (seen on a 252 GB CI disk with 6 GB free).
pub fn default_reserve(fs_bytes: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    (fs_bytes / 200).clamp(GIB, 20 * GIB).min(fs_bytes / 20)
}

/// Everything `Store::open` needs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Written into each volume marker, so a disk moved between servers is recognisable.
    pub server_name: String,
    /// Directory of the SQLite catalog (`catalog.db`); created if missing.
    pub state_dir: PathBuf,
    pub volumes: Vec<VolumeConfig>,
    /// How often each volume's syncer makes written data durable and catalogs it (default 1 s).
    pub sync_interval: Duration,
    /// Longest media time per `moof`+`mdat` fragment (default 1 s).
    pub fragment_duration: Duration,
    /// Target media time per segment file; rotation waits for the next key frame (default 60 s).
    pub segment_duration: Duration,
    /// Takeover footage younger than this is deleted only when nothing else is left (default
    /// 7 days; zero disables the protection).
    pub protect_takeover: Duration,
}

impl StoreConfig {
    pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_FRAGMENT_DURATION: Duration = Duration::from_secs(1);
    pub const DEFAULT_SEGMENT_DURATION: Duration = Duration::from_secs(60);
    pub const DEFAULT_PROTECT_TAKEOVER: Duration = Duration::from_secs(7 * 24 * 3600);

    /// A configuration with the default durations.
    pub fn new(
        server_name: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        volumes: Vec<VolumeConfig>,
    ) -> Self {
        StoreConfig {
            server_name: server_name.into(),
            state_dir: state_dir.into(),
            volumes,
            sync_interval: Self::DEFAULT_SYNC_INTERVAL,
            fragment_duration: Self::DEFAULT_FRAGMENT_DURATION,
            segment_duration: Self::DEFAULT_SEGMENT_DURATION,
            protect_takeover: Self::DEFAULT_PROTECT_TAKEOVER,
        }
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        if self.volumes.is_empty() {
            return Err(Error::NoVolumes);
        }
        if self.sync_interval.is_zero() {
            return Err(Error::Config("sync_interval must be positive".into()));
        }
        if self.fragment_duration < Duration::from_millis(10) {
            return Err(Error::Config(
                "fragment_duration must be at least 10 ms".into(),
            ));
        }
        if self.segment_duration < Duration::from_millis(100) {
            return Err(Error::Config(
                "segment_duration must be at least 100 ms".into(),
            ));
        }
        if self.segment_duration > Duration::from_secs(24 * 3600) {
            return Err(Error::Config(
                "segment_duration must be at most 24 h".into(),
            ));
        }
        for v in &self.volumes {
            if !v.path.is_absolute() {
                return Err(Error::Config(format!(
                    "volume path {} must be absolute",
                    v.path.display()
                )));
            }
            if v.max_bytes == Some(0) {
                return Err(Error::Config(format!(
                    "volume {}: max_bytes must be positive",
                    v.path.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::default_reserve;

    #[test]
    fn default_floor() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        assert_eq!(default_reserve(64 * MIB), 64 * MIB / 20);
        assert_eq!(default_reserve(40 * GIB), GIB);
        assert_eq!(default_reserve(252 * GIB), 252 * GIB / 200);
        assert_eq!(default_reserve(2000 * GIB), 10 * GIB);
        assert_eq!(default_reserve(100_000 * GIB), 20 * GIB);
    }
}
