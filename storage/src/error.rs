//! The crate's error type: every variant names the volume, file or channel it concerns.

use std::path::PathBuf;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("catalog {path}: {context}: {source}")]
    Catalog {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "catalog {path}: schema version {found} is newer than this build understands ({supported})"
    )]
    CatalogVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("catalog {path} is in use by another process (lock held on {lock})")]
    CatalogLocked { path: PathBuf, lock: PathBuf },

    #[error("volume {path} has no marker: not mounted or swapped? (the catalog knows {segments} segments on it)")]
    VolumeMarkerMissing { path: PathBuf, segments: u64 },

    #[error(
        "volume {path}: marker uuid {found} differs from the catalog's {expected}: swapped disk?"
    )]
    VolumeMarkerMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error("volume {path}: marker {marker} is unreadable: {reason}")]
    VolumeMarkerInvalid {
        path: PathBuf,
        marker: PathBuf,
        reason: String,
    },

    #[error("volume {path} is in use by another process (lock held on {marker})")]
    VolumeLocked { path: PathBuf, marker: PathBuf },

    #[error("volume {path} is configured twice (as {other})")]
    VolumeDuplicate { path: PathBuf, other: PathBuf },

    #[error("no volumes configured")]
    NoVolumes,

    #[error("channel {channel}: no volume can take a new segment: {reason}")]
    NoVolumeAvailable { channel: u32, reason: String },

    #[error("channel {channel}: a writer for this channel is already open")]
    ChannelBusy { channel: u32 },

    #[error("channel {channel}: nothing recorded between {} and {}", fmt_90k(*.from_90k), fmt_90k(*.to_90k))]
    NothingRecorded {
        channel: u32,
        from_90k: i64,
        to_90k: i64,
    },

    #[error("channel {channel}: invalid range {} .. {}", fmt_90k(*.from_90k), fmt_90k(*.to_90k))]
    InvalidRange {
        channel: u32,
        from_90k: i64,
        to_90k: i64,
    },

    #[error("channel {channel}: export: {source}")]
    Export {
        channel: u32,
        #[source]
        source: std::io::Error,
    },

    #[error("encoding MP4 for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: crate::fmp4::write::EncodeError,
    },

    #[error("channel {channel}: timed out after {waited_ms} ms waiting for {pending} segment(s) to become durable")]
    CloseTimeout {
        channel: u32,
        pending: usize,
        waited_ms: u64,
    },

    #[error("the store is open read-only")]
    ReadOnly,

    #[error("the store has been shut down")]
    ShutDown,

    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A 90 kHz wall-clock time as RFC 3339 (UTC, milliseconds), for messages people read.
pub(crate) fn fmt_90k(t: i64) -> String {
    match jiff::Timestamp::from_millisecond(t.div_euclid(90)) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("{t} (90 kHz)"),
    }
}
