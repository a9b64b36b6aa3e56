//! Volume identity and placement: markers, locks, swapped or unmounted disks, spreading
//! channels over volumes and moving away from a failing one; read-only access and reindex.

mod common;

use std::time::Duration;

use common::*;
use understudy_storage::{Error, Store, VOLUME_MARKER};

fn record(store: &Store, channel: u32, base: i64, clip: &Clip) {
    let mut w = store.channel_writer(channel, 400_000).unwrap();
    feed(&mut w, clip, base, 1, None);
    w.close().unwrap();
}

#[test]
fn a_second_process_cannot_use_the_same_volume_or_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(2, "320x240");
    let cfg = config(tmp.path(), &[("v1", None)], Duration::from_secs(60));
    let store = Store::open(cfg.clone()).unwrap();
    let base = base_time_90k();
    record(&store, 1, base, &clip);

    // Same volume, another catalog: the marker's flock stops it.
    let mut other = cfg.clone();
    other.state_dir = tmp.path().join("state2");
    let err = Store::open(other.clone()).unwrap_err();
    assert!(matches!(err, Error::VolumeLocked { .. }), "{err}");
    assert!(err.to_string().contains("v1"), "{err}");
    // Same catalog, another volume: the catalog lock stops it.
    let err =
        Store::open(config(tmp.path(), &[("v2", None)], Duration::from_secs(60))).unwrap_err();
    assert!(matches!(err, Error::CatalogLocked { .. }), "{err}");

    // Once the first is gone, a fresh catalog adopts the volume and indexes its files.
    let recs = store.recordings(1, None, None).unwrap();
    store.shutdown().unwrap();
    drop(store);
    let adopted = Store::open(other).unwrap();
    let again = adopted.recordings(1, None, None).unwrap();
    assert_eq!(again.len(), recs.len());
    assert_eq!(again[0].frames, 50);
    assert_eq!(again[0].start_90k, recs[0].start_90k);
}

#[test]
fn swapped_or_unmounted_volume_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(2, "320x240");
    let cfg = config(tmp.path(), &[("v1", None)], Duration::from_secs(60));
    let vol = tmp.path().join("v1");
    let marker = vol.join(VOLUME_MARKER);
    {
        let store = Store::open(cfg.clone()).unwrap();
        record(&store, 1, base_time_90k(), &clip);
    }
    let original = std::fs::read_to_string(&marker).unwrap();
    let m: serde_json::Value = serde_json::from_str(&original).unwrap();
    assert_eq!(m["server_name"], "test-server");
    assert_eq!(m["uuid"].as_str().unwrap().len(), 36);

    // Another disk mounted there: different uuid.
    let mut swapped = m.clone();
    swapped["uuid"] = "00000000-0000-4000-8000-000000000000".into();
    std::fs::write(&marker, swapped.to_string()).unwrap();
    let err = Store::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, Error::VolumeMarkerMismatch { .. }), "{err}");
    assert!(err.to_string().contains("swapped"), "{err}");

    // Marker gone (e.g. an empty mount point): refused, and no new marker is written.
    std::fs::remove_file(&marker).unwrap();
    let err = Store::open(cfg.clone()).unwrap_err();
    assert!(
        matches!(err, Error::VolumeMarkerMissing { segments: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not mounted or swapped"), "{err}");
    assert!(!marker.exists());

    // Directory gone entirely: refused, and it is not re-created on the parent filesystem.
    let moved = tmp.path().join("elsewhere");
    std::fs::rename(&vol, &moved).unwrap();
    let err = Store::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, Error::VolumeMarkerMissing { .. }), "{err}");
    assert!(!vol.exists());

    // The real disk comes back: all is well.
    std::fs::rename(&moved, &vol).unwrap();
    std::fs::write(&marker, original).unwrap();
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.recordings(1, None, None).unwrap().len(), 1);
}

#[test]
fn channels_go_to_the_roomiest_healthy_volume_and_avoid_a_failing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(4, "320x240");
    let cfg = config(
        tmp.path(),
        &[("small", Some(50 << 20)), ("big", Some(500 << 20))],
        Duration::from_secs(1),
    );
    let store = Store::open(cfg).unwrap();
    let base = base_time_90k();
    // Channel 1 lands on the volume with the most headroom and stays there across segments.
    record(&store, 1, base, &clip);
    let recs = store.recordings(1, None, None).unwrap();
    assert!(recs.len() >= 3);
    assert!(
        recs.iter().all(|r| r.volume == tmp.path().join("big")),
        "{recs:?}"
    );

    // Channel 2 cannot create its directory on "big" (a file is in the way): it records on
    // "small" instead, and the failure is an event.
    std::fs::write(tmp.path().join("big/ch002"), b"in the way").unwrap();
    record(&store, 2, base, &clip);
    let recs = store.recordings(2, None, None).unwrap();
    assert_eq!(recs.iter().map(|r| r.frames).sum::<u64>(), 100);
    assert!(
        recs.iter().all(|r| r.volume == tmp.path().join("small")),
        "{recs:?}"
    );
    let events = store.events_since(0, 100).unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "disk_error")
        .expect("disk_error event");
    assert_eq!(e.channel, Some(2));
    assert!(
        e.detail["path"].as_str().unwrap().contains("big/ch002"),
        "{e:?}"
    );
    let vols = store.volumes();
    assert!(
        vols.iter().all(|v| v.healthy),
        "one error makes a volume suspect, not unhealthy"
    );
}

#[test]
fn read_only_view_and_reindex_while_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(6, "320x240");
    let cfg = config(tmp.path(), &[("v1", None)], Duration::from_secs(2));
    let store = Store::open(cfg.clone()).unwrap();
    let base = base_time_90k();
    record(&store, 1, base, &clip);
    let mut w = store.channel_writer(2, 400_000).unwrap();
    let st = w.stats();
    let next = feed(&mut w, &clip, base, 1, None);
    // One more key frame: the segment started at 5 s gets its first fragment (5–6 s).
    let (_, key, data) = clip.frames[0].clone();
    assert!(key);
    w.push(
        &clip.params,
        understudy_storage::InputFrame {
            cts_offset: 0,
            time_90k: next,
            key,
            data,
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || st.frames_durable() == 150));

    // Another process (e.g. the `export` command) reads while this one records.
    let ro = Store::open_read_only(cfg.clone()).unwrap();
    assert_eq!(
        ro.recordings(1, None, None).unwrap(),
        store.recordings(1, None, None).unwrap()
    );
    let open_now = ro.recordings(2, None, None).unwrap();
    assert!(open_now.last().unwrap().open);
    let mut buf = Vec::new();
    let s = ro
        .export(2, base, base + 7 * 90_000, &mut buf, &mut |_, _| {})
        .unwrap();
    assert_eq!(s.frames, 150, "{s:?}"); // the open segment's fragments are read by scanning it
    assert!(matches!(ro.channel_writer(3, 0), Err(Error::ReadOnly)));
    assert!(matches!(ro.reindex(&mut |_, _| {}), Err(Error::ReadOnly)));

    // Reindex leaves the file being written alone and finds the rest consistent.
    let before = store.recordings(1, None, None).unwrap();
    let mut calls = Vec::new();
    let sum = store
        .reindex(&mut |done, total| calls.push((done, total)))
        .unwrap();
    let files = mp4_files(&tmp.path().join("v1")).len();
    assert_eq!(sum.files, files);
    assert_eq!(sum.skipped_active, 1);
    assert_eq!(sum.scanned, files - 1);
    assert_eq!(
        (
            sum.repaired,
            sum.removed_files,
            sum.removed_rows,
            sum.added,
            sum.errors
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(calls.last(), Some(&(files, files)));
    assert_eq!(store.recordings(1, None, None).unwrap(), before);
    w.close().unwrap();
    assert_eq!(
        store
            .recordings(2, None, None)
            .unwrap()
            .iter()
            .map(|r| r.frames)
            .sum::<u64>(),
        151
    );
}
