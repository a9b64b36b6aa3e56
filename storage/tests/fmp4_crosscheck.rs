//! Cross-check with an independent parser: the `mp4` crate (alfg/mp4-rust) reads our
//! fragmented files' structure back sample for sample (count and sizes, from tfhd/trun).
//! Its 0.14 reader gets data offsets (it ignores default-base-is-moof), durations (0 for every
//! fragmented sample) and sync flags (guessed from the sample number) wrong for any fMP4, so
//! those are checked by ffprobe, Chromium and our own reader instead. It is a dev-dependency only: its 0.14 writer cannot
//! write fMP4 (see /shared notes), but its reader walks `moof`/`trun` on its own code.

mod fmp4_support;

use std::io::BufReader;

use fmp4_support::{load_clip, write_segment};

#[test]
fn mp4_crate_reads_back_every_sample() {
    let clip = load_clip("h264-360p25-small.mp4");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.mp4");
    write_segment(&path, &clip.params, &clip.frames);

    let f = std::fs::File::open(&path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut r = mp4::Mp4Reader::read_header(BufReader::new(f), size).expect("mp4 crate parses the file");
    let (&track_id, track) = r.tracks().iter().next().expect("one track");
    assert_eq!(track.track_type().unwrap(), mp4::TrackType::Video);
    assert_eq!((track.width(), track.height()), (640, 360));
    assert_eq!(track.timescale(), 90_000);
    let n = r.sample_count(track_id).unwrap();
    assert_eq!(n as usize, clip.frames.len(), "sample count");
    for (i, (_, _key, data)) in clip.frames.iter().enumerate() {
        let s = r.read_sample(track_id, i as u32 + 1).unwrap().expect("sample exists");
        // Sizes, not bytes: mp4 0.14 ignores tfhd's default-base-is-moof (ISO/IEC 14496-12
        // §8.8.7) and reads data from the wrong offset; Chromium, ffmpeg and our own reader
        // (fmp4_write.rs) check the bytes.
        assert_eq!(s.bytes.len(), data.len(), "sample {i} size");
    }
}
