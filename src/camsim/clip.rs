//! A clip loaded once and pre-packetized into RTP payloads shared (as `Bytes`) by every session
//! of every camera that loops it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::CamSimError;
use super::mp4::{self, ParamSets, VideoCodec};
use super::packetize::packetize_nal;

/// RTP clock rate of H.264 and H.265 video (RFC 6184 §8.2.1, RFC 7798 §7.2).
pub(crate) const CLOCK_RATE: u64 = 90_000;

/// One access unit of a clip.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// Indexes into [`Clip::payloads`].
    pub packets: Range<usize>,
    /// How many of the first packets carry in-band parameter sets (sent before the SEI tag).
    pub param_packets: usize,
    /// Duration until the next frame (the last frame: until the clip's end), 90 kHz.
    pub duration_90k: u64,
    /// Composition offset (presentation − decode time), 90 kHz; 0 without B-frames.
    pub cts_offset_90k: i64,
    /// This frame's place in presentation (capture) order minus its place in decode order
    /// within the clip; 0 without B-frames. The SEI tag carries capture numbers.
    pub capture_shift: i64,
    pub is_key: bool,
}

/// A pre-packetized clip.
#[derive(Debug)]
pub(crate) struct Clip {
    pub path: PathBuf,
    pub codec: VideoCodec,
    pub width: u16,
    pub height: u16,
    pub params: ParamSets,
    pub frames: Vec<Frame>,
    /// RTP payloads of all frames, slices of one shared buffer.
    pub payloads: Vec<Bytes>,
    /// Length of one loop, 90 kHz.
    pub duration_90k: u64,
}

impl Clip {
    /// Reads `path` and packetizes every frame. CPU-bound: call from a blocking thread.
    pub(crate) fn load(path: &Path) -> Result<Clip, CamSimError> {
        let data = std::fs::read(path).map_err(|e| CamSimError::clip(path, e.to_string()))?;
        let track = mp4::read_video_track(path, &data)?;
        let to_90k = |t: u64| scale(t, track.timescale);

        let mut store = Vec::with_capacity(data.len() + data.len() / 64);
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut frames = Vec::with_capacity(track.samples.len());
        let total: u64 = track.samples.iter().map(|s| u64::from(s.duration)).sum();
        let duration_90k = to_90k(total);
        if duration_90k == 0 {
            return Err(CamSimError::clip(path, "clip has zero duration"));
        }
        let param_nals: Vec<&[u8]> = track
            .params
            .vps
            .iter()
            .map(Vec::as_slice)
            .chain([track.params.sps.as_slice(), track.params.pps.as_slice()])
            .collect();

        for (i, sample) in track.samples.iter().enumerate() {
            let bytes = &data[sample.range.clone()];
            let mut in_band_params = Vec::new();
            let mut others = Vec::new();
            for nal in mp4::split_nals(bytes, track.length_size) {
                let nal = nal.map_err(|e| CamSimError::clip(path, format!("sample {i}: {e}")))?;
                if nal.len() < header_len(track.codec) {
                    return Err(CamSimError::clip(path, format!("sample {i}: short NAL")));
                }
                match classify(track.codec, nal) {
                    NalKind::Delimiter => {} // must be first in an AU; dropped (we add an SEI)
                    NalKind::ParamSet => in_band_params.push(nal),
                    NalKind::Other => others.push(nal),
                }
            }
            if others.is_empty() {
                return Err(CamSimError::clip(path, format!("sample {i} has no slices")));
            }
            // Real cameras repeat the parameter sets before every key frame; so do we, which
            // also lets a client see new parameters when a camera switches clips.
            if sample.is_sync && in_band_params.is_empty() {
                in_band_params = param_nals.clone();
            }
            let first = ranges.len();
            for nal in &in_band_params {
                packetize_nal(track.codec, nal, &mut store, &mut ranges);
            }
            let param_packets = ranges.len() - first;
            for nal in &others {
                packetize_nal(track.codec, nal, &mut store, &mut ranges);
            }
            let start_90k = to_90k(sample.dts);
            let end_90k = to_90k(sample.dts + u64::from(sample.duration));
            frames.push(Frame {
                packets: first..ranges.len(),
                param_packets,
                duration_90k: end_90k - start_90k,
                cts_offset_90k: scale_signed(sample.cts_offset, track.timescale),
                capture_shift: 0,
                is_key: sample.is_sync,
            });
        }
        let mut by_pts: Vec<usize> = (0..frames.len()).collect();
        by_pts.sort_by_key(|&i| {
            let s = &track.samples[i];
            (i128::from(s.dts) + i128::from(s.cts_offset), i)
        });
        for (rank, &i) in by_pts.iter().enumerate() {
            frames[i].capture_shift = rank as i64 - i as i64;
        }

        let store = Bytes::from(store);
        let payloads = ranges.into_iter().map(|r| store.slice(r)).collect();
        Ok(Clip {
            path: path.to_path_buf(),
            codec: track.codec,
            width: track.width,
            height: track.height,
            params: track.params,
            frames,
            payloads,
            duration_90k,
        })
    }

    /// Reads only enough of `path` to tell its codec and dimensions.
    pub(crate) fn probe(path: &Path) -> Result<(VideoCodec, u16, u16), CamSimError> {
        let data = std::fs::read(path).map_err(|e| CamSimError::clip(path, e.to_string()))?;
        let t = mp4::read_video_track(path, &data)?;
        Ok((t.codec, t.width, t.height))
    }

    /// Average frame rate, for SDP `a=framerate`.
    pub(crate) fn frame_rate(&self) -> f64 {
        self.frames.len() as f64 * CLOCK_RATE as f64 / self.duration_90k as f64
    }
}

fn scale(t: u64, timescale: u32) -> u64 {
    let ts = u128::from(timescale);
    ((u128::from(t) * u128::from(CLOCK_RATE) + ts / 2) / ts) as u64
}

fn scale_signed(t: i64, timescale: u32) -> i64 {
    let s = scale(t.unsigned_abs(), timescale) as i64;
    if t < 0 {
        -s
    } else {
        s
    }
}

enum NalKind {
    Delimiter,
    ParamSet,
    Other,
}

fn header_len(codec: VideoCodec) -> usize {
    match codec {
        VideoCodec::H264 => 1,
        VideoCodec::H265 => 2,
    }
}

/// NAL unit types: H.264 Table 7-1 (7 SPS, 8 PPS, 9 AUD), H.265 Table 7-1 (32 VPS, 33 SPS,
/// 34 PPS, 35 AUD).
fn classify(codec: VideoCodec, nal: &[u8]) -> NalKind {
    match codec {
        VideoCodec::H264 => match nal[0] & 0x1F {
            7 | 8 => NalKind::ParamSet,
            9 => NalKind::Delimiter,
            _ => NalKind::Other,
        },
        VideoCodec::H265 => match (nal[0] >> 1) & 0x3F {
            32..=34 => NalKind::ParamSet,
            35 => NalKind::Delimiter,
            _ => NalKind::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::packetize::depacketize;
    use super::*;

    #[test]
    fn loads_and_packetizes_fixture() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/h264-720p25.mp4");
        let clip = Clip::load(&path).unwrap();
        assert_eq!(clip.frames.len(), 250);
        assert_eq!(clip.duration_90k, 10 * CLOCK_RATE);
        assert!((clip.frame_rate() - 25.0).abs() < 1e-9);
        let first = &clip.frames[0];
        assert!(first.is_key && first.param_packets == 2);
        assert!(clip.frames[1..50]
            .iter()
            .all(|f| !f.is_key && f.param_packets == 0));
        assert!(clip.frames[50].is_key);
        assert!(clip.frames.iter().all(|f| f.duration_90k == 3600));
        // The payloads of frame 0 reassemble to SPS, PPS, then slices.
        let p: Vec<&[u8]> = clip.payloads[first.packets.clone()]
            .iter()
            .map(|b| &b[..])
            .collect();
        let nals = depacketize(clip.codec, &p);
        assert_eq!(nals[0], clip.params.sps);
        assert_eq!(nals[1], clip.params.pps);
        assert!(nals.iter().any(|n| n[0] & 0x1F == 5), "IDR slice present");
    }
}
