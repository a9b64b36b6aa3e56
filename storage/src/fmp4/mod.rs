//! Fragmented MP4 (ISO/IEC 14496-12) as Understudy writes and reads it: one video track,
//! timescale 90 kHz, and optionally one audio track at its sample rate; `ftyp` + `moov` (with
//! `mvex`/`trex`), then `moof`+`mdat` pairs (a video `traf`, then the audio `traf` if any).
//!
//! Writing uses `mp4-atom` for the init segment and hand-written fragment headers; scanning
//! walks top-level boxes itself so that a torn file (what a crash or power loss leaves) is
//! measured, never trusted. `FragmentMuxer` turns frames into fragments; `export` lays out
//! a range of segments as one virtual file read straight from them.

use crate::track::TrackParams;

/// One sample's entry in a fragment's `trun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleMeta {
    /// Duration in 90 kHz units.
    pub duration: u32,
    /// Size of the sample's data in bytes.
    pub size: u32,
    /// Random access point (sync sample).
    pub key: bool,
    /// Composition time offset in 90 kHz units: presentation time minus decode time (non-zero
    /// for reordered streams, e.g. B-frames). Never negative in the files we write.
    pub cts_offset: i32,
}

/// What `scan` found about one complete `moof`+`mdat` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Byte offset of the `moof` in the file.
    pub offset: u64,
    /// Length of `moof` + `mdat` together.
    pub len: u64,
    /// `tfdt` base media decode time, 90 kHz units from the segment's start.
    pub base_time: u64,
    /// Sum of the sample durations.
    pub duration: u64,
    pub samples: u32,
    /// The first sample is a key frame.
    pub starts_with_key: bool,
}

/// The result of scanning a segment file.
#[derive(Clone, Debug)]
pub struct ScanResult {
    /// Codec parameters recovered from `moov` (None if the init segment is incomplete).
    pub params: Option<TrackParams>,
    /// Length of `ftyp`+`moov`.
    pub init_len: u64,
    /// Complete fragments in order.
    pub fragments: Vec<FragmentInfo>,
    /// Bytes from the start that form a clean file (end of the last complete fragment,
    /// or `init_len` if there is none; 0 if the init segment itself is torn).
    pub valid_len: u64,
    /// Actual file length.
    pub file_len: u64,
}

pub mod audio;
pub(crate) mod boxes;
mod codec;
pub mod export;
mod init;
mod moof;
pub(crate) mod patch;
pub mod mux;
pub mod read;
pub mod scan;
pub mod write;

pub use export::{write_export, ExportPiece, ExportSummary, VirtualFragment, VirtualMp4};
pub use audio::{AudioMeta, AudioRun};
pub use mux::{Fragment, FragmentMuxer};
pub use read::{read_fragment, read_fragment_samples, FragmentSamples};
pub use scan::{repair, scan, RepairOutcome};
pub use write::{encode_fragment, encode_init, EncodeError};
