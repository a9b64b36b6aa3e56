//! Writing real H.264 and H.265 frames as fragmented MP4, checked with ffprobe/ffmpeg, then
//! read back with `scan` and `read_fragment_samples`.

mod fmp4_support;

use std::fs::File;

use fmp4_support::{assert_decodes_clean, load_clip, probe, probe_stream_field, write_segment};
use understudy_storage::fmp4::{read_fragment_samples, scan};

fn check_roundtrip(clip_name: &str, expect_frames: usize) -> understudy_storage::fmp4::ScanResult {
    let clip = load_clip(clip_name);
    assert_eq!(clip.frames.len(), expect_frames);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.mp4");
    let frags = write_segment(&path, &clip.params, &clip.frames);

    // ffmpeg/ffprobe accept it, every frame decodes, the duration is the clip's.
    let (frames, duration) = probe(&path);
    assert_eq!(frames, expect_frames as u64);
    let expect_secs = expect_frames as f64 / 25.0;
    assert!(
        (duration - expect_secs).abs() < 0.001,
        "duration {duration}, expected {expect_secs}"
    );
    assert_decodes_clean(&path);

    // Fragments: cut before every key frame and never longer than 1 s (at 25 fps exactly 1 s
    // or up to the next key frame).
    for f in &frags {
        assert!(f.duration <= 90_000, "fragment of {}", f.duration);
    }
    let keys: Vec<usize> = clip
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.1)
        .map(|(i, _)| i)
        .collect();
    assert!(keys.len() > 1);
    let mut first_sample = 0usize;
    for f in &frags {
        assert_eq!(f.starts_with_key, keys.contains(&first_sample));
        assert!(
            f.samples[1..].iter().all(|s| !s.key),
            "key frame inside a fragment"
        );
        first_sample += f.samples.len();
    }

    // scan finds exactly what was written.
    let s = scan(&path).unwrap();
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert_eq!((s.valid_len, s.file_len), (file_len, file_len));
    assert_eq!(s.fragments.len(), frags.len());
    let params = s.params.clone().unwrap();
    assert_eq!(params.sample_entry, clip.params.sample_entry);
    assert_eq!(
        (params.width, params.height),
        (clip.params.width, clip.params.height)
    );
    let mut offset = s.init_len;
    for (info, f) in s.fragments.iter().zip(&frags) {
        assert_eq!(info.offset, offset);
        assert_eq!(info.len, f.len());
        assert_eq!(info.base_time, f.base_time);
        assert_eq!(info.duration, f.duration);
        assert_eq!(info.samples as usize, f.samples.len());
        assert_eq!(info.starts_with_key, f.starts_with_key);
        offset += info.len;
    }

    // Every sample reads back byte for byte.
    let file = File::open(&path).unwrap();
    let mut i = 0;
    for info in &s.fragments {
        for (meta, data) in read_fragment_samples(&file, info).unwrap() {
            let (t, key, orig) = &clip.frames[i];
            assert_eq!(&data, orig, "sample {i}");
            assert_eq!(meta.key, *key);
            let next = clip.frames.get(i + 1).map_or(t + 3600, |n| n.0);
            assert_eq!(i64::from(meta.duration), next - t);
            i += 1;
        }
    }
    assert_eq!(i, expect_frames);
    s
}

#[test]
fn h264_segment_plays_and_scans() {
    let s = check_roundtrip("h264-360p25-small.mp4", 150);
    let params = s.params.unwrap();
    // RFC 6381: avc1 + profile_idc 0x4D (Main) + constraints + level_idc (ffprobe's `level`).
    let level: u8 = probe_stream_field(&fmp4_support::fixture("h264-360p25-small.mp4"), "level")
        .parse()
        .unwrap();
    assert!(params.codec.starts_with("avc1.4D"), "{}", params.codec);
    assert!(
        params.codec.ends_with(&format!("{level:02X}")),
        "{} vs level {level}",
        params.codec
    );
    assert_eq!(params.codec.len(), "avc1.4D401E".len());
}

#[test]
fn h265_segment_plays_and_scans() {
    let s = check_roundtrip("h265-360p25-small.mp4", 100);
    let params = s.params.unwrap();
    let level: u8 = probe_stream_field(&fmp4_support::fixture("h265-360p25-small.mp4"), "level")
        .parse()
        .unwrap();
    // Main profile (1), compatibility flags 1 and 2 (reversed: 6), main tier.
    assert!(
        params.codec.starts_with(&format!("hvc1.1.6.L{level}")),
        "{} vs level {level}",
        params.codec
    );
}

#[test]
fn init_segment_alone_is_a_valid_empty_file() {
    for name in ["h264-360p25-small.mp4", "h265-360p25-small.mp4"] {
        let clip = load_clip(name);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.mp4");
        let init = understudy_storage::fmp4::encode_init(&clip.params).unwrap();
        std::fs::write(&path, &init).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let codec = if name.starts_with("h264") {
            "h264"
        } else {
            "hevc"
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{codec},640,360")
        );
        let s = scan(&path).unwrap();
        assert_eq!(
            (s.init_len, s.valid_len, s.fragments.len()),
            (init.len() as u64, init.len() as u64, 0)
        );
    }
}
