//! Exporting a time range across two real segment files into one fragmented MP4.

mod fmp4_support;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use fmp4_support::{
    assert_decodes_clean, load_clip, packet_pts_dts, packet_times, probe, write_segment,
    write_segment_with_cts, Clip,
};
use understudy_storage::fmp4::{
    read_fragment_samples, scan, write_export, ExportPiece, ExportSummary,
};

/// An arbitrary wall-clock start (90 kHz since the epoch).
const T0: i64 = 1_790_000_000 * 90_000;
const FRAME: i64 = 3600;

/// The 150-frame H.264 clip (key frames at 0, 50, 100) as two segments: frames [0, 100) from
/// `T0`, and [100, 150) from `T0 + 100 frames + gap`.
fn two_segments(dir: &Path, gap: i64) -> (Clip, Vec<ExportPiece>) {
    let clip = load_clip("h264-360p25-small.mp4");
    let mut pieces = Vec::new();
    for (name, range, start) in [
        ("a.mp4", 0..100, T0),
        ("b.mp4", 100..150, T0 + 100 * FRAME + gap),
    ] {
        let path = dir.join(name);
        write_segment(&path, &clip.params, &clip.frames[range]);
        let fragments = scan(&path).unwrap().fragments;
        pieces.push(ExportPiece {
            path,
            start_90k: start,
            fragments,

        });
    }
    (clip, pieces)
}

fn export(
    dir: &Path,
    _clip: &Clip,
    pieces: &[ExportPiece],
    from: i64,
    to: i64,
) -> (std::path::PathBuf, ExportSummary) {
    let path = dir.join("export.mp4");
    let mut out = BufWriter::new(File::create(&path).unwrap());
    let mut last = (0, 0);
    let summary = write_export(
        &mut out,
        pieces,
        from,
        to,
        &mut |done, total| {
            assert!(done <= total && done > last.0);
            last = (done, total);
        },
    )
    .unwrap();
    drop(out);
    assert_eq!(last.0, last.1, "progress reaches its total");
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    (path, summary)
}

/// The exported file's samples equal the clip's frames `first..first + n`, fragments cut at 1 s.
fn assert_samples(path: &Path, clip: &Clip, first: usize, n: usize) {
    let s = scan(path).unwrap();
    assert_eq!(s.valid_len, s.file_len);
    assert_eq!(s.fragments[0].base_time, 0);
    assert!(s.fragments[0].starts_with_key);
    // Cut as soon as 1 s is pending (a frame before a gap may itself be long).
    let file = File::open(path).unwrap();
    for f in &s.fragments {
        let samples = read_fragment_samples(&file, f).unwrap();
        let last = samples.last().unwrap().0.duration;
        assert!(f.duration - u64::from(last) < 90_000, "{f:?}");
    }
    let data: Vec<_> = s
        .fragments
        .iter()
        .flat_map(|f| read_fragment_samples(&file, f).unwrap())
        .collect();
    assert_eq!(data.len(), n);
    for (i, (meta, bytes)) in data.iter().enumerate() {
        assert_eq!(bytes, &clip.frames[first + i].2, "sample {i}");
        assert_eq!(meta.key, clip.frames[first + i].1);
    }
}

#[test]
fn export_across_a_boundary_starts_at_the_preceding_key_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (clip, pieces) = two_segments(dir.path(), 0);
    // From frame 75 (mid-GOP; its key frame is 50) to frame 125 (in the second file).
    let (path, summary) = export(
        dir.path(),
        &clip,
        &pieces,
        T0 + 75 * FRAME,
        T0 + 125 * FRAME,
    );
    assert_eq!(summary.start_90k, T0 + 50 * FRAME);
    assert_eq!(summary.end_90k, T0 + 125 * FRAME);
    assert_eq!(summary.frames, 75);

    let (frames, duration) = probe(&path);
    assert_eq!(frames, 75);
    assert!((duration - 3.0).abs() < 0.001, "{duration}");
    assert_decodes_clean(&path);
    let times = packet_times(&path);
    assert_eq!(times.len(), 75);
    for (i, t) in times.iter().enumerate() {
        assert!((t - i as f64 * 0.04).abs() < 1e-6, "packet {i} at {t}");
    }
    assert_samples(&path, &clip, 50, 75);
}

#[test]
fn export_keeps_a_gap_between_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (clip, pieces) = two_segments(dir.path(), 90_000);
    let (path, summary) = export(dir.path(), &clip, &pieces, T0 + 90 * FRAME, i64::MAX);
    assert_eq!(summary.start_90k, T0 + 50 * FRAME);
    assert_eq!(summary.end_90k, T0 + 150 * FRAME + 90_000);
    assert_eq!(summary.frames, 100);

    let (frames, duration) = probe(&path);
    assert_eq!(frames, 100);
    assert!((duration - 5.0).abs() < 0.001, "{duration}");
    assert_decodes_clean(&path);
    let times = packet_times(&path);
    assert!((times[49] - 1.96).abs() < 1e-6, "{}", times[49]);
    assert!((times[50] - 3.0).abs() < 1e-6, "{}", times[50]);
    assert!((times[99] - 4.96).abs() < 1e-6, "{}", times[99]);
    assert_samples(&path, &clip, 50, 100);
}

#[test]
fn export_before_the_first_key_frame_starts_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let (clip, pieces) = two_segments(dir.path(), 0);
    let (path, summary) = export(dir.path(), &clip, &pieces, T0 - 900_000, T0 + 10 * FRAME);
    assert_eq!((summary.start_90k, summary.frames), (T0, 10));
    assert_eq!(probe(&path).0, 10);
    assert_decodes_clean(&path);
    assert_samples(&path, &clip, 0, 10);

    // Starting past the last key frame still finds it; an empty range or no frames is an error.
    let (_, summary) = export(
        dir.path(),
        &clip,
        &pieces,
        T0 + 140 * FRAME,
        T0 + 145 * FRAME,
    );
    assert_eq!((summary.start_90k, summary.frames), (T0 + 100 * FRAME, 45));
    let mut sink = Vec::new();
    let empty = write_export(&mut sink, &pieces, T0, T0, &mut |_, _| {});
    assert_eq!(empty.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    let after = write_export(&mut sink, &[], T0, T0 + 1, &mut |_, _| {});
    assert_eq!(after.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert!(sink.is_empty());
}

#[test]
fn composition_offsets_survive_segments_and_export() {
    // 100 frames with B-frames (key frames at 0 and 50), as two segment files.
    let dir = tempfile::tempdir().unwrap();
    let clip = load_clip("h264-bframes-360p25.mp4");
    assert!(clip.cts.iter().any(|&c| c != clip.cts[0]), "clip reorders");
    let mut pieces = Vec::new();
    for (name, range) in [("a.mp4", 0..50), ("b.mp4", 50..100)] {
        let path = dir.path().join(name);
        write_segment_with_cts(
            &path,
            &clip.params,
            &clip.frames[range.clone()],
            &clip.cts[range.clone()],
        );
        let fragments = scan(&path).unwrap().fragments;
        // Read back: the offsets written are the clip's.
        let file = File::open(&path).unwrap();
        let got: Vec<u32> = fragments
            .iter()
            .flat_map(|f| read_fragment_samples(&file, f).unwrap())
            .map(|(m, _)| m.cts_offset as u32)
            .collect();
        assert_eq!(got, clip.cts[range.clone()]);
        pieces.push(ExportPiece {
            path,
            start_90k: T0 + clip.frames[range.start].0,
            fragments,

        });
    }
    let end = T0 + 100 * FRAME;
    let (path, summary) = export(dir.path(), &clip, &pieces, T0, end);
    assert_eq!(summary.frames, 100);
    assert_decodes_clean(&path);
    let packets = packet_pts_dts(&path);
    assert_eq!(packets.len(), 100);
    for w in packets.windows(2) {
        assert!(w[1].1 > w[0].1, "decode times increase: {w:?}");
    }
    assert!(packets.iter().all(|(pts, dts)| pts >= dts), "{packets:?}");
    // Presentation times are the clip's, frame by frame (no edit list: decode time 0 is 0).
    for (i, (pts, _)) in packets.iter().enumerate() {
        let want = (clip.frames[i].0 as f64 + f64::from(clip.cts[i])) / 90_000.0;
        assert!((pts - want).abs() < 0.001, "frame {i}: {pts} vs {want}");
    }
}

/// The virtual file reads the same whatever ranges it is read in, and its layout is known
/// before any media byte is read.
#[test]
fn virtual_file_is_the_same_for_any_split() {
    use understudy_storage::fmp4::VirtualMp4;
    let dir = tempfile::tempdir().unwrap();
    let (_, pieces) = two_segments(dir.path(), 0);
    let v = VirtualMp4::build(&pieces, T0 + 75 * FRAME, T0 + 125 * FRAME).unwrap();
    let mut whole = Vec::new();
    v.write_all(&mut whole, &mut |_, _| {}).unwrap();
    assert_eq!(whole.len() as u64, v.len());
    assert_eq!(v.fragments().first().unwrap().offset, v.init_len());
    let len = v.len();
    for splits in [vec![1u64], vec![7, 8, 9], vec![v.init_len(), v.init_len() + 1, len - 1], (1..40).map(|i| i * len / 40 + i).collect()] {
        let mut got = Vec::new();
        let mut at = 0;
        for &s in splits.iter().chain(std::iter::once(&len)) {
            let s = s.min(len);
            v.read_range(at, s, 4096, &mut |b| {
                got.extend_from_slice(&b);
                Ok(())
            })
            .unwrap();
            at = s;
        }
        assert_eq!(got, whole, "splits {splits:?}");
    }
}
