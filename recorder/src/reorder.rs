//! Decode times for a run of frames that arrive in decode order carrying presentation times:
//! strictly increasing, never after a frame's presentation time, `depth` frames behind (the
//! stream's reorder depth, read from its SPS by [`reorder_depth`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroUsize;

use h264_reader::rbsp::{BitRead, BitReader, ByteReader};
use tracing::warn;

use crate::frame::Codec;

/// Depth assumed when the SPS says nothing (H.264 without VUI bitstream restrictions, in a
/// profile that allows B-frames): enough for the usual one or two B-frames; a deeper stream
/// shows itself and the depth grows (see [`DecodeTimes::place`]).
pub(crate) const DEFAULT_DEPTH: usize = 2;
/// Deepest reorder accepted from an SPS (H.264/H.265 allow at most 16 pictures).
const MAX_DEPTH: usize = 16;

/// A frame's place on the decode and presentation timelines, 90 kHz.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub dts: i64,
    pub pts: i64,
}

/// Derives decode times; one per run (a new run starts at a key frame with a fresh one).
#[derive(Debug)]
pub(crate) struct DecodeTimes {
    depth: usize,
    /// Nominal frame duration, for the first `depth` frames and for repeated timestamps.
    frame_90k: i64,
    /// Presentation times not yet used as a decode time (a min-heap).
    waiting: BinaryHeap<Reverse<i64>>,
    first_pts: Option<i64>,
    frames: usize,
    last_dts: Option<i64>,
    warned: bool,
}

impl DecodeTimes {
    pub(crate) fn new(depth: usize, frame_90k: i64) -> Self {
        DecodeTimes {
            depth: depth.min(MAX_DEPTH),
            frame_90k: frame_90k.max(1),
            waiting: BinaryHeap::with_capacity(depth + 2),
            first_pts: None,
            frames: 0,
            last_dts: None,
            warned: false,
        }
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Places the next frame (in decode order), presented at `pts`.
    ///
    /// A decoder with `depth` pictures of reorder delay outputs, once it holds more than that,
    /// the earliest one it has: that presentation time is this frame's decode time. The first
    /// `depth` frames of a run are spaced one frame duration apart, ending one frame before the
    /// first presentation time. If the stream reorders deeper than said (or repeats a
    /// timestamp), the decode time is kept strictly increasing, the depth grows by one, and a
    /// presentation time that would come before its decode time is moved to it.
    pub(crate) fn place(&mut self, pts: i64) -> Placed {
        let first = *self.first_pts.get_or_insert(pts);
        self.waiting.push(Reverse(pts));
        self.frames += 1;
        let candidate = if self.frames <= self.depth {
            first - (self.depth + 1 - self.frames) as i64 * self.frame_90k
        } else if self.waiting.len() > self.depth {
            self.waiting.pop().map_or(pts, |Reverse(p)| p)
        } else {
            // The depth just grew: no picture is due; step halfway to the earliest waiting one.
            let last = self.last_dts.unwrap_or(pts);
            let next = self.waiting.peek().map_or(pts, |Reverse(p)| *p);
            last + (next - last) / 2
        };
        let Some(last) = self.last_dts else {
            self.last_dts = Some(candidate);
            return Placed {
                dts: candidate,
                pts,
            };
        };
        if candidate > last && candidate <= pts {
            self.last_dts = Some(candidate);
            return Placed {
                dts: candidate,
                pts,
            };
        }
        // Not strictly after the previous decode time: reordered deeper than `depth`, or a
        // repeated or backward timestamp.
        let dts = if self.depth == 0 {
            // No reordering: a repeated timestamp (a camera bug) gets one frame's duration.
            last + self.frame_90k
        } else {
            last + 1.max((candidate - last).min(self.frame_90k / 2))
        };
        if self.depth > 0 && self.depth < MAX_DEPTH {
            self.depth += 1;
        }
        if !self.warned {
            self.warned = true;
            warn!(
                pts,
                last_dts = last,
                depth = self.depth,
                "frame timestamps do not fit the stream's reorder depth; adjusted"
            );
        }
        self.last_dts = Some(dts);
        Placed {
            dts,
            pts: pts.max(dts),
        }
    }
}

/// The reorder depth an SPS declares, if it does: H.264 VUI `max_num_reorder_frames`
/// (ITU-T H.264 E.2.1; 0 for profiles without B slices), H.265 `sps_max_num_reorder_pics`
/// of the highest sub-layer (ITU-T H.265 7.4.3.2.1). `sps` is the NAL unit, header included.
pub(crate) fn reorder_depth(codec: Codec, sps: &[u8]) -> Option<usize> {
    let depth = match codec {
        Codec::H264 => h264_depth(sps)?,
        Codec::H265 => h265_depth(sps)?,
    };
    Some(depth.min(MAX_DEPTH))
}

fn h264_depth(sps: &[u8]) -> Option<usize> {
    let reader = BitReader::new(ByteReader::skipping_h264_header(sps));
    let sps = h264_reader::nal::sps::SeqParameterSet::from_bits(reader).ok()?;
    if let Some(r) = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.bitstream_restrictions.as_ref())
    {
        return usize::try_from(r.max_num_reorder_frames).ok();
    }
    // Baseline and Constrained Baseline (A.2.1, A.2.1.1) have no B slices.
    matches!(sps.profile(), h264_reader::nal::sps::Profile::Baseline).then_some(0)
}

/// Reads an H.265 SPS (7.3.2.2.1) up to the sub-layer ordering info.
fn h265_depth(sps: &[u8]) -> Option<usize> {
    let skip = NonZeroUsize::new(2)?;
    let mut r = BitReader::new(ByteReader::skipping_bytes(sps, skip));
    r.skip(4, "sps_video_parameter_set_id").ok()?;
    let max_sub_layers_minus1: u8 = r.read(3, "sps_max_sub_layers_minus1").ok()?;
    r.skip(1, "sps_temporal_id_nesting_flag").ok()?;
    // profile_tier_level(1, sps_max_sub_layers_minus1) (7.3.3).
    r.skip(88, "general_profile").ok()?;
    r.skip(8, "general_level_idc").ok()?;
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        sub_profile[i] = r.read_bool("sub_layer_profile_present_flag").ok()?;
        sub_level[i] = r.read_bool("sub_layer_level_present_flag").ok()?;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2, "reserved_zero_2bits").ok()?;
        }
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if sub_profile[i] {
            r.skip(88, "sub_layer_profile").ok()?;
        }
        if sub_level[i] {
            r.skip(8, "sub_layer_level_idc").ok()?;
        }
    }
    r.read_ue("sps_seq_parameter_set_id").ok()?;
    if r.read_ue("chroma_format_idc").ok()? == 3 {
        r.skip(1, "separate_colour_plane_flag").ok()?;
    }
    r.read_ue("pic_width_in_luma_samples").ok()?;
    r.read_ue("pic_height_in_luma_samples").ok()?;
    if r.read_bool("conformance_window_flag").ok()? {
        for _ in 0..4 {
            r.read_ue("conf_win_offset").ok()?;
        }
    }
    r.read_ue("bit_depth_luma_minus8").ok()?;
    r.read_ue("bit_depth_chroma_minus8").ok()?;
    r.read_ue("log2_max_pic_order_cnt_lsb_minus4").ok()?;
    let all_layers = r.read_bool("sps_sub_layer_ordering_info_present_flag").ok()?;
    let first = if all_layers { 0 } else { max_sub_layers_minus1 };
    let mut depth = 0;
    for _ in first..=max_sub_layers_minus1 {
        r.read_ue("sps_max_dec_pic_buffering_minus1").ok()?;
        depth = r.read_ue("sps_max_num_reorder_pics").ok()?;
        r.read_ue("sps_max_latency_increase_plus1").ok()?;
    }
    usize::try_from(depth).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places `pts` (in frames of 3600) and returns (dts, pts) in frames, rounded down.
    fn run(depth: usize, pts: &[i64]) -> Vec<(i64, i64)> {
        let mut d = DecodeTimes::new(depth, 3600);
        pts.iter()
            .map(|p| {
                let x = d.place(p * 3600);
                (x.dts.div_euclid(3600), x.pts.div_euclid(3600))
            })
            .collect()
    }

    fn check(placed: &[(i64, i64)]) {
        for w in placed.windows(2) {
            assert!(w[1].0 > w[0].0 || w[1] == w[0], "{placed:?}");
        }
        assert!(placed.iter().all(|(d, p)| d <= p), "{placed:?}");
    }

    #[test]
    fn no_reordering_keeps_times() {
        let placed = run(0, &[10, 11, 12, 13]);
        assert_eq!(placed, [(10, 10), (11, 11), (12, 12), (13, 13)]);
    }

    #[test]
    fn b_frames_get_decode_times_one_frame_behind() {
        // I0 P3 B1 B2 P6 B4 B5 (depth 1).
        let placed = run(1, &[0, 3, 1, 2, 6, 4, 5, 9, 7, 8]);
        check(&placed);
        assert_eq!(
            placed.iter().map(|x| x.0).collect::<Vec<_>>(),
            [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            placed.iter().map(|x| x.1).collect::<Vec<_>>(),
            [0, 3, 1, 2, 6, 4, 5, 9, 7, 8],
            "presentation times untouched"
        );
        // Pyramid (depth 2): I0 P4 B2 b1 b3.
        let placed = run(2, &[0, 4, 2, 1, 3, 8, 6, 5, 7]);
        check(&placed);
        assert_eq!(placed[0], (-2, 0));
        assert!(placed.iter().zip([0, 4, 2, 1, 3, 8, 6, 5, 7]).all(|(x, p)| x.1 == p));
    }

    #[test]
    fn deeper_than_declared_grows_and_stays_monotonic() {
        // Declared depth 1, stream shows depth 2 (pyramid).
        let pts = [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11];
        let mut d = DecodeTimes::new(1, 3600);
        let placed: Vec<Placed> = pts.iter().map(|p| d.place(p * 3600)).collect();
        for w in placed.windows(2) {
            assert!(w[1].dts > w[0].dts, "{placed:?}");
        }
        assert!(placed.iter().all(|x| x.dts <= x.pts));
        assert_eq!(d.depth(), 2);
        // After growing, presentation times are kept.
        assert!(placed[5..].iter().zip(&pts[5..]).all(|(x, p)| x.pts == p * 3600));
    }

    #[test]
    fn repeated_timestamps_get_a_frame_duration() {
        let mut d = DecodeTimes::new(0, 3600);
        let placed: Vec<Placed> = [0, 3600, 3600, 10_800].iter().map(|&p| d.place(p)).collect();
        assert_eq!(placed[2], Placed { dts: 7200, pts: 7200 });
        assert_eq!(placed[3].dts, 10_800);
    }

    #[test]
    fn depth_from_sps() {
        // x264 High profile SPS with bitstream_restriction (max_num_reorder_frames = 2).
        let clip = |name: &str| std::fs::read(format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let h264 = sps_from_mp4(&clip("h264-bframes-360p25.mp4"), b"avcC");
        assert_eq!(reorder_depth(Codec::H264, &h264), Some(1));
        let h264 = sps_from_mp4(&clip("h264-360p25-small.mp4"), b"avcC");
        assert_eq!(reorder_depth(Codec::H264, &h264), Some(0));
        let h265 = sps_from_mp4(&clip("h265-bframes-360p25.mp4"), b"hvcC");
        assert_eq!(reorder_depth(Codec::H265, &h265), Some(1));
        let h265 = sps_from_mp4(&clip("h265-360p25-small.mp4"), b"hvcC");
        assert_eq!(reorder_depth(Codec::H265, &h265), Some(0));
        assert_eq!(reorder_depth(Codec::H265, &[0x42, 0x01]), None);
        assert_eq!(reorder_depth(Codec::H264, &[0x67]), None);
    }

    /// The SPS NAL from a fixture's `avcC`/`hvcC` (ISO/IEC 14496-15 5.3.3.1, 8.3.3.1).
    fn sps_from_mp4(file: &[u8], kind: &[u8; 4]) -> Vec<u8> {
        let at = file.windows(4).position(|w| w == kind).unwrap() + 4;
        let rec = &file[at..];
        if kind == b"avcC" {
            let len = usize::from(u16::from_be_bytes([rec[6], rec[7]]));
            return rec[8..8 + len].to_vec();
        }
        let mut p = 23;
        for _ in 0..rec[22] {
            let nal_type = rec[p] & 0x3F;
            let n = u16::from_be_bytes([rec[p + 1], rec[p + 2]]);
            p += 3;
            for _ in 0..n {
                let len = usize::from(u16::from_be_bytes([rec[p], rec[p + 1]]));
                if nal_type == 33 {
                    return rec[p + 2..p + 2 + len].to_vec();
                }
                p += 2 + len;
            }
        }
        panic!("no SPS");
    }
}
