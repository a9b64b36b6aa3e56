//! Encoding the init segment and fragments.

use bytes::Bytes;

use super::SampleMeta;
use crate::track::TrackParams;

/// `ftyp` + `moov` for one video track at 90 kHz, with `mvex`/`trex` so players treat it as fragmented.
pub fn encode_init(params: &TrackParams) -> Result<Vec<u8>, crate::fmp4::write::EncodeError> {
    todo!()
}

/// A `moof` and the 8-byte `mdat` header for `samples`; the caller writes the sample data
/// (in order, concatenated) right after the returned bytes. `sequence` starts at 1 per file;
/// `base_time` is the `tfdt` in 90 kHz units from the segment's start.
pub fn encode_fragment(sequence: u32, base_time: u64, samples: &[SampleMeta]) -> Result<Vec<u8>, EncodeError> {
    todo!()
}

#[derive(Debug, thiserror::Error)]
#[error("encoding MP4: {0}")]
pub struct EncodeError(pub String);
