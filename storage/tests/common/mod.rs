//! Shared by the storage integration tests: a real H.264 clip made with ffmpeg, turned into
//! length-prefixed access units and an `avc1` sample entry; store configuration in tempdirs;
//! and ffprobe/ffmpeg checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use understudy_storage::{ChannelWriter, InputFrame, StoreConfig, TrackParams, VolumeConfig};

/// 25 fps in 90 kHz ticks.
pub const FRAME_90K: i64 = 3600;

/// A clip: parameters and frames (time from 0 in 90 kHz, key, length-prefixed data).
pub struct Clip {
    pub params: Arc<TrackParams>,
    pub frames: Vec<(i64, bool, Bytes)>,
}

/// Encodes `seconds` of `testsrc2` at 320x240, 25 fps, one IDR a second, no B-frames, with
/// access unit delimiters, and turns it into MP4-ready frames.
pub fn h264_clip(seconds: u32, size: &str) -> Clip {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.h264");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-bf",
            "0",
            "-g",
            "25",
        ])
        .args(["-x264-params", "aud=1", "-f", "h264"])
        .arg(&out)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "ffmpeg failed to encode the test clip");
    let annexb = std::fs::read(&out).unwrap();
    clip_from_annexb(&annexb)
}

/// Splits an Annex B stream (ITU-T H.264 §B.1) into NAL units.
pub fn split_nals(b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(b.len(), |&n| n - 3);
        while e > s && b[e - 1] == 0 {
            e -= 1; // the zero_byte of a 4-byte start code, or trailing_zero_8bits
        }
        if e > s {
            nals.push(&b[s..e]);
        }
    }
    nals
}

/// Groups NAL units into access units at each AUD (type 9), drops the AUDs, and prefixes
/// each NAL with its 4-byte length (ISO/IEC 14496-15 §5.3.2, lengthSizeMinusOne = 3).
pub fn clip_from_annexb(b: &[u8]) -> Clip {
    let nals = split_nals(b);
    let sps = nals
        .iter()
        .find(|n| n[0] & 0x1f == 7)
        .expect("no SPS")
        .to_vec();
    let pps = nals
        .iter()
        .find(|n| n[0] & 0x1f == 8)
        .expect("no PPS")
        .to_vec();
    let mut aus: Vec<(bool, Vec<u8>)> = Vec::new();
    for n in nals {
        let t = n[0] & 0x1f;
        if t == 9 {
            aus.push((false, Vec::new()));
            continue;
        }
        if aus.is_empty() {
            aus.push((false, Vec::new()));
        }
        let au = aus.last_mut().unwrap();
        au.0 |= t == 5;
        au.1.extend_from_slice(&(n.len() as u32).to_be_bytes());
        au.1.extend_from_slice(n);
    }
    aus.retain(|(_, d)| !d.is_empty());
    let (width, height) = sps_size(&sps);
    let params = TrackParams {
        codec: format!("avc1.{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]),
        width,
        height,
        sample_entry: Bytes::from(avc1_sample_entry(&sps, &pps, width, height)),
        audio: None,
    };
    Clip {
        params: Arc::new(params),
        frames: aus
            .into_iter()
            .enumerate()
            .map(|(i, (key, d))| (i as i64 * FRAME_90K, key, Bytes::from(d)))
            .collect(),
    }
}

/// Exp-Golomb reader over an RBSP (emulation prevention bytes removed).
struct Bits {
    rbsp: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal: &[u8]) -> Bits {
        let mut rbsp = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &x in &nal[1..] {
            if zeros >= 2 && x == 3 {
                zeros = 0;
                continue;
            }
            zeros = if x == 0 { zeros + 1 } else { 0 };
            rbsp.push(x);
        }
        Bits { rbsp, pos: 0 }
    }
    fn bit(&mut self) -> u32 {
        let b = (self.rbsp[self.pos / 8] >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        u32::from(b)
    }
    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |a, _| (a << 1) | self.bit())
    }
    fn ue(&mut self) -> u32 {
        let mut z = 0;
        while self.bit() == 0 {
            z += 1;
        }
        (1 << z) - 1 + self.bits(z)
    }
    fn se(&mut self) -> i32 {
        let k = self.ue();
        if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        }
    }
}

/// Chroma format and bit depths from a High-profile SPS (H.264 §7.3.2.1.1), defaults otherwise.
fn sps_high_fields(sps: &[u8]) -> (u32, u32, u32) {
    let mut r = Bits::new(sps);
    let profile = r.bits(8);
    r.bits(16);
    r.ue();
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        let chroma = r.ue();
        if chroma == 3 {
            r.bit();
        }
        (chroma, r.ue(), r.ue())
    } else {
        (1, 0, 0)
    }
}

/// Coded size from the SPS (H.264 §7.3.2.1.1, §7.4.2.1.1), frame cropping applied.
fn sps_size(sps: &[u8]) -> (u16, u16) {
    let mut r = Bits::new(sps);
    let profile = r.bits(8);
    r.bits(16);
    r.ue();
    let mut chroma = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma = r.ue();
        if chroma == 3 {
            r.bit();
        }
        r.ue();
        r.ue();
        r.bit();
        assert_eq!(
            r.bit(),
            0,
            "scaling matrices not supported by this test helper"
        );
    }
    r.ue(); // log2_max_frame_num_minus4
    let poc_type = r.ue();
    if poc_type == 0 {
        r.ue();
    } else if poc_type == 1 {
        r.bit();
        r.se();
        r.se();
        for _ in 0..r.ue() {
            r.se();
        }
    }
    r.ue(); // max_num_ref_frames
    r.bit();
    let w_mbs = r.ue() + 1;
    let h_map = r.ue() + 1;
    let frame_mbs_only = r.bit();
    if frame_mbs_only == 0 {
        r.bit();
    }
    r.bit(); // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit() == 1 {
        cl = r.ue();
        cr = r.ue();
        ct = r.ue();
        cb = r.ue();
    }
    let (sub_w, sub_h) = match chroma {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_unit_y = sub_h * (2 - frame_mbs_only);
    let w = w_mbs * 16 - sub_w * (cl + cr);
    let h = (2 - frame_mbs_only) * h_map * 16 - crop_unit_y * (ct + cb);
    (w as u16, h as u16)
}

/// An `avc1` VisualSampleEntry (ISO/IEC 14496-12 §12.1.3) holding an `avcC`
/// (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3.1).
pub fn avc1_sample_entry(sps: &[u8], pps: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    if ![66, 77, 88].contains(&sps[1]) {
        let (chroma, luma8, chroma8) = sps_high_fields(sps);
        avcc.extend_from_slice(&[
            0xFC | chroma as u8,
            0xF8 | luma8 as u8,
            0xF8 | chroma8 as u8,
            0,
        ]);
    }
    let mut e = Vec::new();
    e.extend_from_slice(&[0; 6]);
    e.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    e.extend_from_slice(&[0; 16]); // pre_defined, reserved
    e.extend_from_slice(&width.to_be_bytes());
    e.extend_from_slice(&height.to_be_bytes());
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    e.extend_from_slice(&0u32.to_be_bytes());
    e.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    e.extend_from_slice(&[0; 32]); // compressorname
    e.extend_from_slice(&0x0018u16.to_be_bytes());
    e.extend_from_slice(&(-1i16).to_be_bytes());
    e.extend_from_slice(&((avcc.len() + 8) as u32).to_be_bytes());
    e.extend_from_slice(b"avcC");
    e.extend_from_slice(&avcc);
    let mut entry = ((e.len() + 8) as u32).to_be_bytes().to_vec();
    entry.extend_from_slice(b"avc1");
    entry.extend_from_slice(&e);
    entry
}

/// A wall-clock base time on a whole second (so segment starts are exact in 90 kHz).
pub fn base_time_90k() -> i64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    s * 90_000
}

/// One volume per name under `root`, with an optional byte budget.
pub fn config(root: &Path, volumes: &[(&str, Option<u64>)], segment: Duration) -> StoreConfig {
    let mut cfg = StoreConfig::new(
        "test-server",
        root.join("state"),
        volumes
            .iter()
            .map(|(n, max)| VolumeConfig {
                path: root.join(n),
                max_bytes: *max,
                reserve: None,
            })
            .collect(),
    );
    cfg.segment_duration = segment;
    cfg.sync_interval = Duration::from_millis(200);
    cfg
}

/// Pushes the clip's frames at `base + offset`, `loops` times back to back.
pub fn feed(
    w: &mut ChannelWriter,
    clip: &Clip,
    base_90k: i64,
    loops: u32,
    pace: Option<Duration>,
) -> i64 {
    let clip_len = clip.frames.len() as i64 * FRAME_90K;
    let mut t = base_90k;
    for l in 0..loops {
        for (rel, key, data) in &clip.frames {
            t = base_90k + i64::from(l) * clip_len + rel;
            w.push(
                &clip.params,
                InputFrame {
                    cts_offset: 0,
                    time_90k: t,
                    key: *key,
                    data: data.clone(),
                },
            )
            .unwrap();
            if let Some(p) = pace {
                std::thread::sleep(p);
            }
        }
    }
    t + FRAME_90K
}

/// Polls `f` until true or `timeout`; generous timeouts, no tight timing.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// `ffprobe -v error` prints nothing and succeeds.
pub fn assert_ffprobe_clean(path: &Path) {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ffmpeg -v error -xerror -i F -f null -` succeeds silently.
pub fn assert_decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frames ffprobe counts by decoding.
pub fn ffprobe_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe -count_frames {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

/// Container duration in seconds, per ffprobe.
pub fn ffprobe_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe duration {}", path.display());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Every `.mp4` under `dir`, sorted.
pub fn mp4_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A tmpfs mounted for a test (needs root); unmounted (lazily) on drop.
pub struct Mount(pub PathBuf);

impl Mount {
    /// None when mounting is not possible here (no CAP_SYS_ADMIN): the caller skips, saying so.
    pub fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Mount(dir.to_path_buf()))
    }

    /// Unmounts now (lazily, like a disk pulled while files are open).
    pub fn unmount(&self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Pushes `seconds` of the clip (looped) on each writer, one frame per writer in turn, from
/// `start_90k`; returns the time after the last frame. `each_second` runs after every second
/// of media.
pub fn feed_round_robin(
    writers: &mut [&mut ChannelWriter],
    clip: &Clip,
    start_90k: i64,
    seconds: u32,
    mut each_second: impl FnMut(u32),
) -> i64 {
    let n = clip.frames.len();
    let total = seconds as usize * 25;
    let clip_len = n as i64 * FRAME_90K;
    let mut t = start_90k;
    for i in 0..total {
        let (rel, key, data) = &clip.frames[i % n];
        t = start_90k + (i / n) as i64 * clip_len + rel;
        for w in writers.iter_mut() {
            w.push(&clip.params, InputFrame { time_90k: t, cts_offset: 0, key: *key, data: data.clone() })
                .unwrap();
        }
        if (i + 1) % 25 == 0 {
            each_second(((i + 1) / 25) as u32);
        }
    }
    t + FRAME_90K
}
