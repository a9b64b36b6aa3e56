//! What ingest produces: [`Frame`]s with their [`VideoParams`], and [`IngestItem`], the unit of
//! the per-channel queue.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use retina::codec::{VideoParameters, VideoParametersCodec};

/// Video codecs this recorder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC (RTP payload format RFC 6184).
    H264,
    /// H.265 / HEVC (RTP payload format RFC 7798).
    H265,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Codec parameters of a run of frames, ready for an MP4 writer.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoParams {
    pub codec: Codec,
    /// RFC 6381 codec string, e.g. `avc1.64001F`.
    pub rfc6381: String,
    /// Display (cropped) width in pixels.
    pub width: u16,
    /// Display (cropped) height in pixels.
    pub height: u16,
    /// A whole `avc1`/`hvc1` `VisualSampleEntry` box (ISO/IEC 14496-12 section 12.1.3, with the
    /// `avcC`/`hvcC` configuration record of ISO/IEC 14496-15), ready to go into an `stsd`.
    pub sample_entry: Bytes,
    /// The sequence parameter set NAL unit (header included), for the reorder depth.
    pub sps: Option<Bytes>,
    /// Frame duration the SPS declares (VUI timing), 90 kHz.
    pub frame_90k: Option<i64>,
}

impl fmt::Debug for VideoParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoParams")
            .field("codec", &self.codec)
            .field("rfc6381", &self.rfc6381)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("sample_entry_len", &self.sample_entry.len())
            .finish()
    }
}

/// Why retina's parameters could not become [`VideoParams`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("unsupported video codec {0}; only H.264 and H.265 are recorded")]
    UnsupportedCodec(String),
    #[error("video dimensions {0}x{1} do not fit an MP4 sample entry")]
    Dimensions(u32, u32),
    #[error("cannot build the MP4 sample entry: {0}")]
    SampleEntry(String),
}

impl VideoParams {
    /// Converts retina's parameters (for a stream set up with `FrameFormat::MP4`).
    pub fn from_retina(p: &VideoParameters) -> Result<Self, ParamsError> {
        let (codec, sps) = match p.codec_params() {
            VideoParametersCodec::H264 { sps, .. } => (Codec::H264, sps.clone()),
            VideoParametersCodec::H265 { sps, .. } => (Codec::H265, sps.clone()),
            _ => return Err(ParamsError::UnsupportedCodec(p.rfc6381_codec().to_owned())),
        };
        let (w, h) = p.pixel_dimensions();
        let (Ok(width), Ok(height)) = (u16::try_from(w), u16::try_from(h)) else {
            return Err(ParamsError::Dimensions(w, h));
        };
        let mut entry = p.mp4_sample_entry();
        // Anamorphic sub streams (e.g. 704x480 shown as 16:9) need a `pasp` box
        // (ISO/IEC 14496-12 section 12.1.4); square pixels need none.
        if let Some((hs, vs)) = p.pixel_aspect_ratio() {
            if let (Ok(hs), Ok(vs)) = (u16::try_from(hs), u16::try_from(vs)) {
                if hs != vs && hs != 0 && vs != 0 {
                    entry = entry.with_aspect_ratio((hs, vs));
                }
            }
        }
        let sample_entry = entry
            .build()
            .map_err(|e| ParamsError::SampleEntry(e.to_string()))?;
        Ok(VideoParams {
            codec,
            rfc6381: p.rfc6381_codec().to_owned(),
            width,
            height,
            sample_entry: Bytes::from(sample_entry),
            sps: Some(sps),
            // `frame_rate` is a frame's duration in seconds as (numerator, denominator).
            frame_90k: p
                .frame_rate()
                .filter(|&(n, d)| n > 0 && d > 0)
                .map(|(n, d)| i64::from(n) * 90_000 / i64::from(d))
                .filter(|&f| (90..=900_000).contains(&f)),
        })
    }
}

/// One encoded picture (access unit).
#[derive(Clone)]
pub struct Frame {
    /// Decode time: wall-clock time in 90 kHz units since the Unix epoch. Strictly increasing
    /// within a run, and never after the presentation time.
    pub time_90k: i64,
    /// Presentation time minus decode time, 90 kHz units (0 unless pictures are reordered, as
    /// with B-frames). The presentation time is the RTP timestamp placed on the wall clock.
    pub cts_offset: u32,
    /// An IDR / IRAP picture: decoding can start here.
    pub key: bool,
    /// NAL units, each prefixed by a 4-byte big-endian length (ISO/IEC 14496-15 sample format).
    pub data: Bytes,
    /// Parameters; the same `Arc` until they change.
    pub params: Arc<VideoParams>,
    /// RTP packets lost before this frame.
    pub loss: u64,
    /// The session's recorded audio track, if any; the same `Arc` for the whole session.
    pub audio: Option<Arc<crate::audio::AudioParams>>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("time_90k", &self.time_90k)
            .field("key", &self.key)
            .field("len", &self.data.len())
            .field("codec", &self.params.codec)
            .field("loss", &self.loss)
            .finish()
    }
}

/// An item of a channel's ingest queue.
#[derive(Debug, Clone)]
pub enum IngestItem {
    Frame(Frame),
    /// An audio frame of the current run (see `Frame::audio` for its parameters). Audio never
    /// starts a run; it is dropped, never queued, while video is being dropped.
    Audio(crate::audio::AudioFrame),
    /// The run of frames ended (error, stall, stop, or frames dropped on overflow): the consumer
    /// should close its segment. The next frame, if any, is a key frame.
    SessionEnded,
    /// The camera's RTP time and the wall clock disagreed by `error_ms` (wall minus RTP-derived
    /// time; negative: the camera ran ahead), so the run is ended and the next one re-anchored
    /// to wall time. Precedes that run's `SessionEnded`; for the consumer's event log.
    Reanchored { error_ms: i64 },
}

#[cfg(test)]
impl Frame {
    /// A small H.264 frame at `time_90k`, for unit tests (fresh parameters each time).
    pub(crate) fn for_test(time_90k: i64, key: bool) -> Frame {
        Frame {
            time_90k,
            cts_offset: 0,
            key,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            params: Arc::new(VideoParams {
                codec: Codec::H264,
                rfc6381: "avc1.640016".into(),
                width: 320,
                height: 240,
                sample_entry: Bytes::new(),
                sps: None,
                frame_90k: None,
            }),
            loss: 0,
            audio: None,
        }
    }
}

/// Whether an H.265 access unit (4-byte length-prefixed NAL units) is an IRAP picture: every
/// VCL NAL unit of type 16–23 (BLA, IDR, CRA; H.265 section 7.4.2.2, table 7-1). retina marks
/// only IDR pictures as random access points; a camera (or x265's default) encoding open GOPs
/// sends a CRA picture at every GOP and an IDR only at the start, so without this its run
/// would never reach a key frame to cut a segment at. The RASL pictures that follow a CRA
/// refer to the GOP before it: played from the CRA they are skipped by the decoder (H.265
/// section 8.1.3, NoRaslOutputFlag), played across segments they decode.
pub(crate) fn h265_is_irap(data: &[u8]) -> bool {
    let mut rest = data;
    let mut vcl = false;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else {
            return false;
        };
        if let Some(&first) = nal.first() {
            let nal_type = (first >> 1) & 0x3f;
            if nal_type < 32 {
                if !(16..=23).contains(&nal_type) {
                    return false;
                }
                vcl = true;
            }
        }
        rest = &rest[4 + len..];
    }
    vcl
}

#[cfg(test)]
mod irap_tests {
    use super::h265_is_irap;

    fn au(types: &[u8]) -> Vec<u8> {
        types
            .iter()
            .flat_map(|t| {
                let nal = [t << 1, 1, 0xaf, 0x00];
                let mut v = (nal.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(&nal);
                v
            })
            .collect()
    }

    #[test]
    fn cra_bla_and_idr_are_irap_others_not() {
        // AUD (35), VPS/SPS/PPS (32–34), SEI (39) around the slices.
        assert!(h265_is_irap(&au(&[35, 32, 33, 34, 21, 21]))); // CRA, two slices
        assert!(h265_is_irap(&au(&[19]))); // IDR_W_RADL
        assert!(h265_is_irap(&au(&[16, 39]))); // BLA_W_LP
        assert!(!h265_is_irap(&au(&[1]))); // TRAIL_R
        assert!(!h265_is_irap(&au(&[8]))); // RASL_N
        assert!(!h265_is_irap(&au(&[21, 1]))); // mixed: not an IRAP picture
        assert!(!h265_is_irap(&au(&[35, 39]))); // no slice
        assert!(!h265_is_irap(&[0, 0, 0, 9, 42])); // truncated
    }
}

