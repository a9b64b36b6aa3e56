//! Recording real H.264 into segments: files valid per ffprobe/ffmpeg, catalog consistent with
//! the files (also after reopening), exports across segment boundaries, events.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use understudy_storage::{Error, InputFrame, SegmentInfo, Store};

fn check_segments(recs: &[SegmentInfo], base: i64, frames: u64) {
    assert!(recs.iter().all(|r| !r.open), "all closed");
    assert_eq!(recs.iter().map(|r| r.frames).sum::<u64>(), frames);
    assert_eq!(recs[0].start_90k, base);
    assert_eq!(
        recs.last().unwrap().end_90k,
        base + frames as i64 * FRAME_90K
    );
    for pair in recs.windows(2) {
        assert_eq!(
            pair[0].end_90k, pair[1].start_90k,
            "segments are back to back"
        );
    }
    for r in recs {
        assert!(r.path.is_absolute() && r.path.starts_with(&r.volume));
        assert_eq!(
            std::fs::metadata(&r.path).unwrap().len(),
            r.bytes,
            "{}",
            r.path.display()
        );
        let name = r.path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.ends_with("Z.mp4") && name.len() == "20261124T184220.123Z.mp4".len(),
            "{name}"
        );
        assert_ffprobe_clean(&r.path);
        assert_decodes(&r.path);
        assert_eq!(ffprobe_frames(&r.path), r.frames, "{}", r.path.display());
        assert_eq!((r.width, r.height), (320, 240));
        assert!(r.codec.starts_with("avc1."));
    }
}

#[test]
fn two_channels_make_valid_segments_and_catalog_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(6, "320x240");
    let cfg = config(tmp.path(), &[("v1", None)], Duration::from_secs(2));
    let store = Store::open(cfg.clone()).unwrap();
    let base = base_time_90k();
    let stats: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|ch| {
                let (store, clip) = (&store, &clip);
                s.spawn(move || {
                    let mut w = store.channel_writer(ch, 400_000).unwrap();
                    let stats = w.stats();
                    feed(&mut w, clip, base, 1, None);
                    w.close().unwrap();
                    stats
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut before = Vec::new();
    for (ch, st) in [1u32, 2].into_iter().zip(&stats) {
        let recs = store.recordings(ch, None, None).unwrap();
        assert!(recs.len() >= 3, "channel {ch}: {} segments", recs.len());
        check_segments(&recs, base, 150);
        assert_eq!(st.frames_written(), 150);
        assert_eq!(st.frames_durable(), 150);
        assert_eq!(
            st.bytes_durable(),
            recs.iter().map(|r| r.bytes).sum::<u64>()
        );
        assert_eq!(st.segments(), recs.len() as u64);
        assert!(st.first_durable_at().is_some());
        assert_eq!((st.write_errors(), st.frames_dropped_before_key()), (0, 0));
        // Staggered: the first segment is cut short of segment_duration; later ones aren't.
        let first = recs[0].end_90k - recs[0].start_90k;
        assert!(first < 2 * 90_000, "first segment {first}");
        assert!(recs[1].end_90k - recs[1].start_90k >= 2 * 90_000);
        // A range query returns only overlapping segments.
        let mid = store
            .recordings(ch, Some(recs[1].start_90k + 1), Some(recs[1].end_90k - 1))
            .unwrap();
        assert_eq!(mid, vec![recs[1].clone()]);
        before.push(recs);
    }
    let vols = store.volumes();
    assert_eq!(vols.len(), 1);
    let on_disk: u64 = mp4_files(&tmp.path().join("v1"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(vols[0].used_bytes, on_disk);
    assert!(vols[0].healthy && vols[0].free_bytes.unwrap() > 0 && vols[0].open_segments == 0);
    store.shutdown().unwrap();
    store.shutdown().unwrap(); // idempotent
    assert!(matches!(store.channel_writer(3, 0), Err(Error::ShutDown)));
    drop(store);

    let store = Store::open(cfg).unwrap();
    for (ch, recs) in [1u32, 2].into_iter().zip(before) {
        assert_eq!(
            store.recordings(ch, None, None).unwrap(),
            recs,
            "channel {ch} after reopen"
        );
    }
    assert_eq!(store.volumes()[0].used_bytes, on_disk);
    // Nothing was repaired or removed on a clean reopen.
    let kinds: Vec<String> = store
        .events_since(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k == "segment_repaired" || k == "segment_removed"),
        "{kinds:?}"
    );
    let files = mp4_files(&tmp.path().join("v1"));
    assert_eq!(
        files.len(),
        store.recordings(1, None, None).unwrap().len()
            + store.recordings(2, None, None).unwrap().len()
    );
}

#[test]
fn export_across_segment_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(6, "320x240");
    let store = Store::open(config(tmp.path(), &[("v1", None)], Duration::from_secs(2))).unwrap();
    let base = base_time_90k();
    let mut w = store.channel_writer(5, 400_000).unwrap();
    feed(&mut w, &clip, base, 1, None);
    w.close().unwrap();
    let recs = store.recordings(5, None, None).unwrap();
    assert!(recs.len() >= 3);

    let out_path = tmp.path().join("export.mp4");
    let mut out = std::fs::File::create(&out_path).unwrap();
    let mut last_progress = (0, 0);
    let from = base + 45_000; // 0.5 s: starts at the key frame at 0
    let to = base + 4 * 90_000 + 45_000; // 4.5 s
    let s = store
        .export(5, from, to, &mut out, &mut |a, b| last_progress = (a, b))
        .unwrap();
    drop(out);
    assert_eq!(s.start_90k, base);
    assert_eq!(s.frames, 113); // frames starting before 4.5 s: 0..=112
    assert_eq!(s.end_90k, base + 113 * FRAME_90K);
    assert!(s.segments >= 3, "crosses boundaries: {s:?}");
    assert_eq!(s.stopped_at_params_change_90k, None);
    assert_eq!(s.bytes, std::fs::metadata(&out_path).unwrap().len());
    assert!(
        last_progress.0 > 0 && last_progress.0 == last_progress.1,
        "{last_progress:?}"
    );
    assert_ffprobe_clean(&out_path);
    assert_decodes(&out_path);
    assert_eq!(ffprobe_frames(&out_path), 113);
    let d = ffprobe_duration(&out_path);
    assert!((d - 4.52).abs() < 0.05, "duration {d}");

    let mut sink = Vec::new();
    let before = base - 100 * 90_000;
    assert!(matches!(
        store.export(5, before, before + 90_000, &mut sink, &mut |_, _| {}),
        Err(Error::NothingRecorded { channel: 5, .. })
    ));
    assert!(matches!(
        store.export(6, base, base + 90_000, &mut sink, &mut |_, _| {}),
        Err(Error::NothingRecorded { .. })
    ));
    assert!(matches!(
        store.export(5, base, base, &mut sink, &mut |_, _| {}),
        Err(Error::InvalidRange { .. })
    ));
}

#[test]
fn open_segments_params_changes_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = h264_clip(3, "320x240");
    let b = h264_clip(2, "352x288");
    let store = Store::open(config(tmp.path(), &[("v1", None)], Duration::from_secs(60))).unwrap();
    let base = base_time_90k();
    let mut w = store.channel_writer(9, 400_000).unwrap();
    assert!(matches!(
        store.channel_writer(9, 0),
        Err(Error::ChannelBusy { channel: 9 })
    ));
    let st = w.stats();

    // Frames before the first key frame are dropped and counted.
    for (rel, key, data) in &a.frames[1..11] {
        assert!(!key);
        w.push(
            &a.params,
            InputFrame {
                cts_offset: 0,
                time_90k: base - 20 * 90_000 + rel,
                key: false,
                data: data.clone(),
            },
        )
        .unwrap();
    }
    assert_eq!(st.frames_dropped_before_key(), 10);

    // While the segment is open it is listed (with its durable end) and exportable.
    let next = feed(&mut w, &a, base, 1, None);
    assert!(
        wait_until(Duration::from_secs(30), || st.frames_durable() >= 50),
        "durable {}",
        st.frames_durable()
    );
    let recs = store.recordings(9, None, None).unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].open && recs[0].end_90k > recs[0].start_90k && recs[0].frames >= 50);
    let mut buf = Vec::new();
    let s = store
        .export(9, base, base + 90_000, &mut buf, &mut |_, _| {})
        .unwrap();
    assert_eq!((s.start_90k, s.frames), (base, 25));

    // A change of parameters starts a new segment.
    let b_params = Arc::clone(&b.params);
    for (rel, key, data) in &b.frames {
        w.push(
            &b_params,
            InputFrame {
                cts_offset: 0,
                time_90k: next + rel,
                key: *key,
                data: data.clone(),
            },
        )
        .unwrap();
    }
    // A discontinuity closes the segment; the next run starts a new one.
    w.end_run().unwrap();
    let after = next + 10 * 90_000;
    feed(&mut w, &a, after, 1, None);
    w.close().unwrap();

    let recs = store.recordings(9, None, None).unwrap();
    let sizes: Vec<(u16, u64)> = recs.iter().map(|r| (r.width, r.frames)).collect();
    assert_eq!(sizes, vec![(320, 75), (352, 50), (320, 75)]);
    assert!(recs.iter().all(|r| !r.open));
    for r in &recs {
        assert_ffprobe_clean(&r.path);
        assert_decodes(&r.path);
    }
    assert_eq!(st.frames_durable(), 200);
    assert_eq!(st.segments(), 3);

    // An export across the change stops there and says so.
    let mut buf = Vec::new();
    let s = store
        .export(9, base, after + 90_000, &mut buf, &mut |_, _| {})
        .unwrap();
    assert_eq!(s.stopped_at_params_change_90k, Some(recs[1].start_90k));
    assert_eq!(s.frames, 75);
}

#[test]
fn events_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(config(tmp.path(), &[("v1", None)], Duration::from_secs(60))).unwrap();
    let detail = serde_json::json!({"reason": "main unreachable", "since_ms": 1234});
    let id1 = store
        .add_event("failover_start", Some("main-a"), Some(3), &detail)
        .unwrap();
    let id2 = store
        .add_event("failover_end", None, None, &serde_json::json!({}))
        .unwrap();
    assert!(id2 > id1);
    let all = store.events_since(0, 100).unwrap();
    let e = all.iter().find(|e| e.id == id1).unwrap();
    assert_eq!(
        (e.kind.as_str(), e.main.as_deref(), e.channel),
        ("failover_start", Some("main-a"), Some(3))
    );
    assert_eq!(e.detail, detail);
    assert!(e.time.ends_with('Z') && e.time_ms > 0, "{}", e.time);
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["detail"]["since_ms"], 1234);
    let after: Vec<i64> = store
        .events_since(id1, 100)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(after, vec![id2]);
    assert_eq!(store.events_since(0, 1).unwrap().len(), 1);
    // Events persist.
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(config(tmp.path(), &[("v1", None)], Duration::from_secs(60))).unwrap();
    assert_eq!(store.events_since(id1 - 1, 10).unwrap()[0].detail, detail);
}
