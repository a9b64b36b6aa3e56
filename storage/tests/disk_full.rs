//! A disk that fills up mid-segment (a real tmpfs, so `write` really fails with ENOSPC):
//! the segment keeps its whole fragments, the error is an event, and the channel carries on
//! in a new segment on the other volume.
//!
//! Mounting needs CAP_SYS_ADMIN (root in the test container); without it the test says so
//! and checks only that the store refuses nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use understudy_storage::Store;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn enospc_mid_segment_keeps_whole_fragments_and_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("tiny"), "320k") else {
        eprintln!(
            "disk_full: cannot mount tmpfs here (needs CAP_SYS_ADMIN); ENOSPC path not exercised"
        );
        return;
    };
    let clip = h264_clip(6, "320x240");
    // "disk" has less headroom than the empty tmpfs, so the channel starts on "tiny".
    let cfg = config(
        tmp.path(),
        &[("tiny", None), ("disk", Some(300_000))],
        Duration::from_secs(60),
    );
    let store = Store::open(cfg).unwrap();
    let base = base_time_90k();
    let mut w = store.channel_writer(1, 0).unwrap();
    let st = w.stats();
    let end = feed(&mut w, &clip, base, 2, None); // 12 s ≈ 470 kB: more than "tiny" holds
    w.close().unwrap();

    assert!(st.write_errors() >= 1);
    let events = store.events_since(0, 100).unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "disk_error")
        .expect("disk_error event");
    assert!(
        e.detail["error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{e:?}"
    );
    assert!(
        e.detail["path"].as_str().unwrap().contains("/tiny/"),
        "{e:?}"
    );

    let recs = store.recordings(1, None, None).unwrap();
    let tiny: Vec<_> = recs.iter().filter(|r| r.volume.ends_with("tiny")).collect();
    let disk: Vec<_> = recs.iter().filter(|r| r.volume.ends_with("disk")).collect();
    assert!(!tiny.is_empty() && !disk.is_empty(), "{recs:?}");
    // What reached "tiny" before it filled is intact: whole fragments, a valid file.
    assert_eq!(tiny[0].start_90k, base);
    assert!(tiny[0].frames >= 100, "{:?}", tiny[0]);
    for r in &recs {
        assert!(!r.open);
        assert_eq!(std::fs::metadata(&r.path).unwrap().len(), r.bytes);
        assert_ffprobe_clean(&r.path);
        assert_decodes(&r.path);
        assert_eq!(ffprobe_frames(&r.path), r.frames);
    }
    // Recording carried on to the end on "disk", from the key frame whose arrival completed
    // the fragment that failed: only that fragment (at most 1 s) was lost.
    assert_eq!(disk.last().unwrap().end_90k, end);
    assert_eq!(disk[0].start_90k, tiny.last().unwrap().end_90k + 90_000);
    let kept: u64 = recs.iter().map(|r| r.frames).sum();
    assert_eq!(kept, 275, "kept {kept} of 300 frames");
    assert_eq!(st.frames_durable(), kept);
}
