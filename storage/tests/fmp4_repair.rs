//! Torn segment files (what a crash or power loss leaves) are measured by `scan` and made clean
//! by `repair`, checked with ffmpeg.

mod fmp4_support;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use fmp4_support::{assert_decodes_clean, load_clip, probe, probe_raw, write_segment};
use understudy_storage::fmp4::{repair, scan, FragmentInfo, ScanResult};

/// A 60-frame H.264 segment: fragments of frames [0, 25), [25, 50), [50, 60) (key frame at 50).
fn reference(dir: &Path) -> (Vec<u8>, ScanResult) {
    let clip = load_clip("h264-360p25-small.mp4");
    let path = dir.join("reference.mp4");
    write_segment(&path, &clip.params, &clip.frames[..60]);
    let s = scan(&path).unwrap();
    assert_eq!(
        s.fragments.iter().map(|f| f.samples).collect::<Vec<_>>(),
        [25, 25, 10]
    );
    assert_eq!(
        s.fragments
            .iter()
            .map(|f| f.starts_with_key)
            .collect::<Vec<_>>(),
        [true, false, true]
    );
    (std::fs::read(&path).unwrap(), s)
}

/// Complete fragments within the first `len` bytes.
fn expected_within(reference: &ScanResult, len: u64) -> (Vec<FragmentInfo>, u64) {
    if len < reference.init_len {
        return (Vec::new(), 0);
    }
    let frags: Vec<_> = reference
        .fragments
        .iter()
        .filter(|f| f.offset + f.len <= len)
        .cloned()
        .collect();
    let valid = frags
        .last()
        .map_or(reference.init_len, |f| f.offset + f.len);
    (frags, valid)
}

#[test]
fn scan_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, reference) = reference(dir.path());
    let path = dir.path().join("cut.mp4");
    std::fs::write(&path, &bytes).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // Every byte offset in the init segment and around every box boundary; every 97th byte
    // elsewhere (inside sample data). Descending, so each cut is one `set_len`.
    let near_boundary = |c: u64| {
        c < reference.init_len + 16
            || reference.fragments.iter().any(|f| {
                // The moof (388 bytes at most here) and mdat header, and the fragment's end.
                (f.offset..f.offset + 600).contains(&c)
                    || (f.offset + f.len - 16..=f.offset + f.len).contains(&c)
            })
    };
    let mut checked = 0;
    for cut in (0..bytes.len() as u64).rev() {
        if !near_boundary(cut) && cut % 97 != 0 {
            continue;
        }
        file.set_len(cut).unwrap();
        let s = scan(&path).unwrap();
        let (frags, valid) = expected_within(&reference, cut);
        assert_eq!(s.file_len, cut);
        assert_eq!(s.valid_len, valid, "cut at {cut}");
        assert_eq!(s.fragments, frags, "cut at {cut}");
        assert_eq!(
            s.params.is_some(),
            cut >= reference.init_len,
            "cut at {cut}"
        );
        checked += 1;
    }
    assert!(checked > 3000, "{checked}");
}

/// Applies `damage` to a fresh copy of the reference, repairs it and checks the result with
/// ffmpeg. `keep` is how many fragments must survive.
fn damage_and_repair(name: &str, keep: usize, damage: impl FnOnce(&std::fs::File, &ScanResult)) {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, reference) = reference(dir.path());
    let path = dir.path().join(format!("{name}.mp4"));
    std::fs::write(&path, &bytes).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    damage(&file, &reference);
    drop(file);
    let damaged_len = std::fs::metadata(&path).unwrap().len();

    let outcome = repair(&path).unwrap();
    let expect_len = reference.fragments[..keep]
        .last()
        .map_or(reference.init_len, |f| f.offset + f.len);
    assert_eq!(
        outcome.scan.fragments,
        reference.fragments[..keep],
        "{name}"
    );
    assert_eq!(outcome.truncated, damaged_len - expect_len, "{name}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        expect_len,
        "{name}"
    );
    assert_eq!(outcome.scan.file_len, expect_len);

    // Now clean: a second scan agrees, a second repair cuts nothing, and ffmpeg plays it all.
    let again = scan(&path).unwrap();
    assert_eq!((again.valid_len, again.file_len), (expect_len, expect_len));
    assert_eq!(repair(&path).unwrap().truncated, 0);
    if keep == 0 {
        // An init segment alone: ffprobe opens it without complaint and finds no frames.
        assert_eq!(probe_raw(&path).0, "N/A", "{name}");
        return;
    }
    let frames: u32 = reference.fragments[..keep].iter().map(|f| f.samples).sum();
    assert_eq!(probe(&path).0, u64::from(frames), "{name}");
    assert_decodes_clean(&path);
}

fn cut_at(file: &std::fs::File, len: u64) {
    file.set_len(len).unwrap();
}

#[test]
fn repair_clean_file_cuts_nothing() {
    damage_and_repair("clean", 3, |_, _| {});
}

#[test]
fn repair_cut_inside_moof_header() {
    damage_and_repair("moof-header", 2, |f, r| {
        cut_at(f, r.fragments[2].offset + 5)
    });
}

#[test]
fn repair_cut_inside_traf() {
    damage_and_repair("traf", 1, |f, r| cut_at(f, r.fragments[1].offset + 40));
}

#[test]
fn repair_cut_inside_trun_records() {
    damage_and_repair("trun", 1, |f, r| cut_at(f, r.fragments[1].offset + 200));
}

#[test]
fn repair_cut_inside_mdat_header() {
    // moof of 25 samples: 88 + 12 * 25 = 388 bytes; the mdat header follows.
    damage_and_repair("mdat-header", 0, |f, r| {
        cut_at(f, r.fragments[0].offset + 388 + 3)
    });
}

#[test]
fn repair_cut_inside_sample_data() {
    damage_and_repair("mdat", 2, |f, r| {
        cut_at(f, r.fragments[2].offset + r.fragments[2].len / 2)
    });
}

#[test]
fn repair_cut_one_byte_short() {
    damage_and_repair("last-byte", 2, |f, r| cut_at(f, r.file_len - 1));
}

#[test]
fn repair_zero_filled_tail() {
    damage_and_repair("zero-tail", 3, |f, r| {
        f.write_all_at(&vec![0u8; 65536], r.file_len).unwrap()
    });
}

#[test]
fn repair_zero_filled_sample_data() {
    // Power loss after the file grew but before the last fragment's data reached the disk.
    damage_and_repair("zero-data", 2, |f, r| {
        let last = &r.fragments[2];
        f.write_all_at(&vec![0u8; 1000], last.offset + last.len - 1000)
            .unwrap();
    });
}

#[test]
fn repair_size_zero_box() {
    damage_and_repair("size-0", 3, |f, r| {
        f.write_all_at(b"\0\0\0\0moof\0\0\0\x10mfhd\0\0\0\0\0\0\0\x04", r.file_len)
            .unwrap();
    });
}

#[test]
fn repair_moof_without_mdat() {
    damage_and_repair("moof-only", 2, |f, r| {
        let last = &r.fragments[2];
        let mut moof = vec![0u8; 88 + 12 * 10];
        f.read_exact_at(&mut moof, last.offset).unwrap();
        f.set_len(last.offset).unwrap();
        f.write_all_at(&moof, last.offset).unwrap();
    });
}

#[test]
fn repair_unknown_box_after_fragments() {
    damage_and_repair("junk", 3, |f, r| {
        let mut w = f;
        std::io::Seek::seek(&mut w, std::io::SeekFrom::Start(r.file_len)).unwrap();
        w.write_all(b"\0\0\0\x0cjunkabcd").unwrap();
    });
}

#[test]
fn repair_torn_init_empties_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, reference) = reference(dir.path());
    let path = dir.path().join("torn-init.mp4");
    std::fs::write(&path, &bytes[..reference.init_len as usize - 100]).unwrap();
    let outcome = repair(&path).unwrap();
    assert!(outcome.scan.params.is_none());
    assert_eq!((outcome.scan.init_len, outcome.scan.valid_len), (0, 0));
    assert_eq!(outcome.truncated, reference.init_len - 100);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn repair_init_only_file_plays_empty() {
    damage_and_repair("init-only", 0, |f, r| cut_at(f, r.init_len + 7));
}

/// A segment with an audio track: its fragments end in audio data, which may end in zero bytes
/// (FLAC's CRC, AAC padding). Only the video data's last byte tells a zero-filled tail, so such
/// a file is kept whole, read back with its audio, and a zero-filled tail is still cut.
#[test]
fn audio_ending_in_zero_is_not_a_torn_tail() {
    use bytes::Bytes;
    use understudy_storage::fmp4::{encode_init, read_fragment, FragmentMuxer};
    let dir = tempfile::tempdir().unwrap();
    let clip = load_clip("h264-360p25-small.mp4");
    // A minimal `fLaC` entry (ISO/IEC 14496-12 AudioSampleEntry at 8 kHz; no `dfLa` is needed
    // by scan, which reads only the type and rate).
    let mut entry = vec![0u8, 0, 0, 36];
    entry.extend_from_slice(b"fLaC");
    entry.extend_from_slice(&[0; 28]);
    entry[8 + 24..8 + 26].copy_from_slice(&8000u16.to_be_bytes());
    let mut params = clip.params.clone();
    params.audio = Some(understudy_storage::AudioParams {
        codec: "flac".into(),
        sample_rate: 8000,
        sample_entry: Bytes::from(entry),
    });
    let path = dir.path().join("av.mp4");
    let mut out = std::fs::File::create(&path).unwrap();
    out.write_all(&encode_init(&params).unwrap()).unwrap();
    let mut muxer = FragmentMuxer::default();
    let t0 = clip.frames[0].0;
    let mut frags = Vec::new();
    for (i, (t, key, data)) in clip.frames[..60].iter().enumerate() {
        frags.extend(muxer.push(t - t0, *key, data.clone()));
        // 320 samples (40 ms at 8 kHz) per video frame, each ending in zero.
        muxer.push_audio(i as i64 * 320, 320, Bytes::from(vec![1, 2, 0]));
    }
    frags.extend(muxer.flush());
    for f in &frags {
        out.write_all(&f.header).unwrap();
        for d in &f.data {
            out.write_all(d).unwrap();
        }
    }
    out.sync_all().unwrap();
    let s = scan(&path).unwrap();
    assert_eq!(s.fragments.len(), 3, "no fragment dropped");
    assert_eq!(s.valid_len, s.file_len);
    assert_eq!(s.params.as_ref().unwrap().audio, params.audio);
    let file = std::fs::File::open(&path).unwrap();
    let audio: usize = s.fragments.iter().map(|f| read_fragment(&file, f).unwrap().audio.len()).sum();
    assert_eq!(audio, 60);
    // Zero the last fragment's whole mdat payload: now the video ends in zero, and it goes.
    let last = s.fragments.last().unwrap();
    let moof_len = frags.last().unwrap().header.len() as u64;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0u8; (last.len - moof_len) as usize], last.offset + moof_len).unwrap();
    let r = repair(&path).unwrap();
    assert_eq!(r.scan.fragments.len(), 2);
}
