//! The input this crate records: a video track's parameters and frames, and optionally one
//! audio track's parameters and frames.

use bytes::Bytes;

/// Time base of every video timestamp in this crate: 90 kHz, the RTP video clock.
pub const TIMESCALE: u32 = 90_000;

/// Codec parameters of a segment's tracks, as the source describes them.
///
/// A change of parameters (a new `Arc<TrackParams>` whose value differs) starts a new segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackParams {
    /// RFC 6381 codec string, e.g. `avc1.64001F` or `hvc1.1.6.L93.B0`.
    pub codec: String,
    pub width: u16,
    pub height: u16,
    /// The whole ISO BMFF sample entry box (`avc1`/`hvc1`, header included), ready for `stsd`.
    pub sample_entry: Bytes,
    /// The audio track recorded beside the video, if any.
    pub audio: Option<AudioParams>,
}

/// Codec parameters of an audio track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    /// Short codec name for listings: `aac` or `flac` (what the sample entry holds).
    pub codec: String,
    /// Samples per second; also the track's timescale.
    pub sample_rate: u32,
    /// The whole `AudioSampleEntry` box (`mp4a` with `esds`, or `fLaC` with `dfLa`).
    pub sample_entry: Bytes,
}

/// One video frame (access unit) to record.
#[derive(Clone, Debug)]
pub struct InputFrame {
    /// Decode time in 90 kHz units since the Unix epoch (wall clock anchored at session start);
    /// increasing from frame to frame. Equal to the presentation time unless the stream
    /// reorders pictures (B-frames).
    pub time_90k: i64,
    /// Presentation time minus decode time, 90 kHz units (0 without reordering).
    pub cts_offset: u32,
    /// True for a random access point (IDR / IRAP).
    pub key: bool,
    /// The access unit as MP4 wants it: NAL units each preceded by a 4-byte big-endian length.
    pub data: Bytes,
}

/// One audio frame (an AAC access unit or a FLAC frame) to record.
#[derive(Clone, Debug)]
pub struct InputAudio {
    /// Time of its first sample, 90 kHz units since the Unix epoch, on the same wall-clock
    /// anchor as the video frames.
    pub time_90k: i64,
    /// Duration in samples (of `AudioParams::sample_rate`).
    pub samples: u32,
    pub data: Bytes,
}
