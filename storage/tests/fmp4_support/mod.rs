//! Shared by the `fmp4_*` integration tests: real frames from the repository's fixture clips
//! (plain MP4 written by ffmpeg), segment writing, and ffprobe/ffmpeg checks.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use mp4_atom::{Decode, Encode, StszSamples};
use understudy_storage::fmp4::{encode_init, Fragment, FragmentMuxer};
use understudy_storage::TrackParams;

/// A clip's track parameters and its frames: (time in 90 kHz from 0, key, length-prefixed data).
pub struct Clip {
    pub params: TrackParams,
    pub frames: Vec<(i64, bool, Bytes)>,
    /// Each frame's composition offset (`ctts`), 90 kHz; all 0 without B-frames.
    pub cts: Vec<u32>,
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

/// Loads a fixture clip's video samples through its sample tables (ISO/IEC 14496-12 §8.6–8.7).
pub fn load_clip(name: &str) -> Clip {
    let path = fixture(name);
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pos = 0usize;
    let moov = loop {
        let size = u32::from_be_bytes(file[pos..pos + 4].try_into().unwrap()) as usize;
        if &file[pos + 4..pos + 8] == b"moov" {
            break mp4_atom::Moov::decode(&mut &file[pos..pos + size]).unwrap();
        }
        pos += size;
    };
    let trak = &moov.trak[0];
    let timescale = i64::from(trak.mdia.mdhd.timescale);
    let stbl = &trak.mdia.minf.stbl;
    let mut entry = Vec::new();
    stbl.stsd.codecs[0].encode(&mut entry).unwrap();
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Different { sizes } => sizes.clone(),
        &StszSamples::Identical { count, size } => vec![size; count as usize],
    };
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (_, Some(co64)) => co64.entries.clone(),
        _ => panic!("no chunk offsets"),
    };
    // Sample offsets from stsc runs.
    let mut offsets = Vec::with_capacity(sizes.len());
    let stsc = &stbl.stsc.entries;
    for (ci, &chunk_off) in chunks.iter().enumerate() {
        let chunk_no = ci as u32 + 1;
        let run = stsc
            .iter()
            .rev()
            .find(|e| e.first_chunk <= chunk_no)
            .unwrap();
        let mut off = chunk_off;
        for _ in 0..run.samples_per_chunk {
            if offsets.len() == sizes.len() {
                break;
            }
            offsets.push(off);
            off += u64::from(sizes[offsets.len() - 1]);
        }
    }
    assert_eq!(offsets.len(), sizes.len());
    let mut times = Vec::with_capacity(sizes.len());
    let mut t = 0i64;
    for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            times.push(t * 90_000 / timescale);
            t += i64::from(e.sample_delta);
        }
    }
    let mut cts = Vec::with_capacity(sizes.len());
    for e in stbl.ctts.iter().flat_map(|c| &c.entries) {
        for _ in 0..e.sample_count {
            cts.push(u32::try_from(e.sample_offset * 90_000 / timescale).unwrap());
        }
    }
    cts.resize(sizes.len(), 0);
    let sync: Option<Vec<u32>> = stbl.stss.as_ref().map(|s| s.entries.clone());
    let frames = (0..sizes.len())
        .map(|i| {
            let start = offsets[i] as usize;
            let data = Bytes::copy_from_slice(&file[start..start + sizes[i] as usize]);
            let key = sync.as_ref().is_none_or(|s| s.contains(&(i as u32 + 1)));
            (times[i], key, data)
        })
        .collect();
    let visual = stbl.stsd.codecs[0].visual().unwrap();
    let codec = understudy_codec_hint(&entry);
    Clip {
        params: TrackParams {
            codec,
            width: visual.width,
            height: visual.height,
            sample_entry: Bytes::from(entry),
            audio: None,
        },
        frames,
        cts,
    }
}

/// The params' codec string is not used by the writer; tests that check `scan` recompute it.
fn understudy_codec_hint(entry: &[u8]) -> String {
    String::from_utf8_lossy(&entry[4..8]).into_owned()
}

/// Writes `frames` as one segment file (times relative to the first frame); returns the fragments.
pub fn write_segment(
    path: &Path,
    params: &TrackParams,
    frames: &[(i64, bool, Bytes)],
) -> Vec<Fragment> {
    write_segment_with_cts(path, params, frames, &vec![0; frames.len()])
}

/// As [`write_segment`], with each frame's composition offset.
pub fn write_segment_with_cts(
    path: &Path,
    params: &TrackParams,
    frames: &[(i64, bool, Bytes)],
    cts: &[u32],
) -> Vec<Fragment> {
    let mut out = std::fs::File::create(path).unwrap();
    out.write_all(&encode_init(params).unwrap()).unwrap();
    let t0 = frames[0].0;
    let mut muxer = FragmentMuxer::default();
    let mut frags = Vec::new();
    for ((t, key, data), c) in frames.iter().zip(cts) {
        frags.extend(muxer.push_sample(t - t0, *c, *key, data.clone()));
    }
    frags.extend(muxer.flush());
    for f in &frags {
        out.write_all(&f.header).unwrap();
        for d in &f.data {
            out.write_all(d).unwrap();
        }
    }
    out.sync_all().unwrap();
    frags
}

/// `ffmpeg -v error -xerror` decodes the whole file without a message.
pub fn assert_decodes_clean(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg on {}: {stderr}",
        path.display()
    );
}

/// What ffprobe says: (decoded frame count, container duration in seconds), with no errors.
pub fn probe(path: &Path) -> (u64, f64) {
    let (frames, duration) = probe_raw(path);
    (frames.parse().unwrap(), duration.parse().unwrap())
}

/// ffprobe's `nb_read_frames` and `duration` as printed (`N/A` for a file with no samples).
pub fn probe_raw(path: &Path) -> (String, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames:format=duration",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe on {}: {stderr}",
        path.display()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    (field("nb_read_frames="), field("duration="))
}

/// Packet (presentation, decode) times in seconds, in file order.
pub fn packet_pts_dts(path: &Path) -> Vec<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,dts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.trim().trim_end_matches(',').split(',');
            let pts = it.next().unwrap().parse().unwrap();
            let dts = it.next().unwrap().parse().unwrap();
            (pts, dts)
        })
        .collect()
}

/// Packet presentation times in seconds, in file order.
pub fn packet_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_end_matches(',').parse().unwrap())
        .collect()
}

/// A codec-level field from ffprobe (e.g. `profile`, `level`).
pub fn probe_stream_field(path: &Path, field: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg(format!("stream={field}"))
        .args(["-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
