//! Retention under a tiny byte budget: only the oldest closed segments go, recording never stops.

mod common;

use std::time::Duration;

use common::*;
use understudy_storage::Store;

#[test]
fn tiny_budget_deletes_oldest_closed_segments_and_keeps_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(6, "320x240");
    let max = 300_000u64; // about four 2 s segments of this clip
    let mut cfg = config(tmp.path(), &[("v1", Some(max))], Duration::from_secs(2));
    cfg.sync_interval = Duration::from_millis(50);
    let store = Store::open(cfg).unwrap();
    let base = base_time_90k();
    let mut w = store.channel_writer(4, 400_000).unwrap();
    let st = w.stats();
    // 30 s of video, paced so many sync rounds (and retention passes) happen along the way.
    let end = feed(&mut w, &clip, base, 5, Some(Duration::from_millis(2)));
    w.close().unwrap();

    assert_eq!(st.frames_durable(), 750, "every frame became durable");
    assert_eq!(st.write_errors(), 0);
    assert!(st.segments() >= 15, "{} segments", st.segments());
    let vol = tmp.path().join("v1");
    // Retention deletes rows, then files, then updates the usage: wait for a quiet state.
    let on_disk = || -> (usize, u64) {
        let files = mp4_files(&vol);
        let bytes = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        (files.len(), bytes)
    };
    let settled = wait_until(Duration::from_secs(30), || {
        let used = store.volumes()[0].used_bytes;
        let rows = store.recordings(4, None, None).unwrap().len();
        used <= max && on_disk() == (rows, used)
    });
    assert!(
        settled,
        "used {} > {max} or files != rows",
        store.volumes()[0].used_bytes
    );
    let recs = store.recordings(4, None, None).unwrap();
    assert!(!recs.is_empty() && (recs.len() as u64) < st.segments());
    // What is left is the newest footage, back to back up to the end: only the oldest went.
    assert_eq!(recs.last().unwrap().end_90k, end);
    for pair in recs.windows(2) {
        assert_eq!(pair[0].end_90k, pair[1].start_90k);
    }
    assert!(recs[0].start_90k > base);
    let (files, bytes) = on_disk();
    assert_eq!(files, recs.len(), "no orphans, no dangling rows");
    assert_eq!(bytes, recs.iter().map(|r| r.bytes).sum::<u64>());
    assert!(bytes <= max);
    for r in &recs {
        assert_ffprobe_clean(&r.path);
    }
    assert!(store.retention_log_len().unwrap() > 0);
    let events = store.events_since(0, 10_000).unwrap();
    let deleted: u64 = events
        .iter()
        .filter(|e| e.kind == "retention")
        .map(|e| e.detail["segments"].as_u64().unwrap())
        .sum();
    assert_eq!(deleted + recs.len() as u64, st.segments());
}

#[test]
fn budget_smaller_than_the_open_segment_never_deletes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(6, "320x240");
    let mut cfg = config(tmp.path(), &[("v1", Some(20_000))], Duration::from_secs(60));
    cfg.sync_interval = Duration::from_millis(50);
    let store = Store::open(cfg).unwrap();
    let base = base_time_90k();
    let mut w = store.channel_writer(4, 400_000).unwrap();
    let st = w.stats();
    feed(&mut w, &clip, base, 1, Some(Duration::from_millis(4)));
    assert!(wait_until(Duration::from_secs(30), || st.frames_durable() >= 125));
    // Way over budget, but the only segment is open: it stays.
    let recs = store.recordings(4, None, None).unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].open && recs[0].bytes > 20_000 && recs[0].path.exists());
    w.close().unwrap();
    assert_eq!(st.frames_durable(), 150);
    // Once closed, it is the oldest closed segment and goes (row first, then the file).
    let gone = wait_until(Duration::from_secs(30), || {
        store.recordings(4, None, None).unwrap().is_empty()
            && !recs[0].path.exists()
            && store.volumes()[0].used_bytes == 0
    });
    assert!(gone, "closed segment over budget was not deleted");
}
