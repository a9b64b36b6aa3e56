//! Failing disks, injected under the storage layer: write EIO, fsync EIO (fsyncgate), a
//! filesystem turned read-only (through the `fault-injection` file-operations seam), and a
//! volume that vanishes (a real tmpfs, lazily unmounted while recording). With two volumes,
//! each time: the channel continues on the other volume within 2 s, an event names the
//! volume and the error, nothing is reported durable that was not, every segment file on
//! either volume is in the catalog with exactly the listed length, and reindexing afterwards
//! agrees with the catalog.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use understudy_storage::faults::{self, Fault};
use understudy_storage::Store;

/// Records channel 1 in real time for 8 s on volumes "a" (preferred: more headroom) and
/// "b"; `inject` runs once "a" holds durable footage, and the channel must be on "b" within
/// `move_within`. Returns what the checks need.
fn run_fault(
    test: &str,
    root: &Path,
    move_within: Duration,
    inject: impl FnOnce(&Path),
) -> (Store, Vec<understudy_storage::EventRecord>) {
    let clip = h264_clip(4, "320x240");
    // "b" has a budget below what "a" can take (a 64 MiB tmpfs, or the root filesystem).
    let cfg = config(root, &[("a", None), ("b", Some(32 << 20))], Duration::from_secs(60));
    let store = Store::open(cfg).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    let base = base_time_90k();
    let mut w = store.channel_writer(1, 0).unwrap();
    let st = w.stats();
    // Fed inside a span like the binary's channel span: the segments are opened in it.
    let span = tracing::info_span!("channel", channel = 1, main = "nvr-x", camera = "nvr-x/cam-7");
    let feeder = std::thread::spawn(move || {
        let _in_span = span.enter();
        let end = feed(&mut w, &clip, base, 2, Some(Duration::from_millis(40)));
        w.close().map(|()| end)
    });
    assert!(wait_until(Duration::from_secs(10), || st.frames_durable() >= 25), "{test}: nothing durable on a");
    assert!(store.recordings(1, None, None).unwrap().iter().all(|r| r.volume == a));
    let durable_before = st.frames_durable();
    let t0 = Instant::now();
    inject(&a);
    let on_b = |open_ok: bool| {
        b.join("ch001").exists() && (open_ok || store.recordings(1, None, None).unwrap().iter().any(|r| r.volume == b))
    };
    assert!(wait_until(Duration::from_secs(10), || on_b(true)), "{test}: the channel never moved to b");
    let moved = t0.elapsed();
    assert!(wait_until(Duration::from_secs(10), || on_b(false)), "{test}: nothing durable on b");
    let durable = t0.elapsed();
    eprintln!(
        "{test}: fault → new segment on b after {:.2} s, durable there after {:.2} s",
        moved.as_secs_f64(),
        durable.as_secs_f64()
    );
    assert!(moved <= move_within, "{test}: took {moved:?} to move");
    let end = feeder.join().unwrap();
    faults::clear(&a);
    let end = end.unwrap_or_else(|e| panic!("{test}: close: {e}"));

    // Nothing falsely durable: what the channel reported durable is exactly what the
    // catalog lists, every listed byte is in its file, and the files play.
    let recs = store.recordings(1, None, None).unwrap();
    let listed: u64 = recs.iter().map(|r| r.frames).sum();
    assert_eq!(st.frames_durable(), listed, "{test}: {recs:?}");
    assert!(listed > durable_before);
    assert!(listed >= 200 - 3 * 25, "{test}: kept only {listed} of 200 frames");
    assert_eq!(recs.last().unwrap().end_90k, end, "{test}: recorded to the end");
    for r in recs.iter().filter(|r| r.path.exists()) {
        assert!(!r.open);
        assert_eq!(std::fs::metadata(&r.path).unwrap().len(), r.bytes, "{test}: {r:?}");
        assert_ffprobe_clean(&r.path);
        assert_eq!(ffprobe_frames(&r.path), r.frames, "{test}: {r:?}");
    }
    disk_matches_catalog(test, &store, &[&a, &b]);
    // Reindexing from the files agrees with the catalog: nothing to repair, add or remove.
    let sum = store.reindex(&mut |_, _| {}).unwrap();
    assert_eq!(
        (sum.repaired, sum.added, sum.removed_files, sum.removed_rows, sum.errors),
        (0, 0, 0, 0, 0),
        "{test}: {sum:?}"
    );
    assert_eq!(store.recordings(1, None, None).unwrap().len(), recs.len());
    let events = store.events_since(0, 1000).unwrap();
    (store, events)
}

/// Every segment file on the volumes is cataloged, with exactly the listed length: no
/// uncataloged file, no tail beyond what the catalog says (a hole plus a fragment written
/// after a cut would show here).
fn disk_matches_catalog(test: &str, store: &Store, volumes: &[&Path]) {
    let recs = store.recordings(1, None, None).unwrap();
    for v in volumes {
        for f in mp4_files(v) {
            let r = recs
                .iter()
                .find(|r| r.path == f)
                .unwrap_or_else(|| panic!("{test}: {} is on disk but not in the catalog: {recs:?}", f.display()));
            let len = std::fs::metadata(&f).unwrap().len();
            assert_eq!(len, r.bytes, "{test}: {} holds {len} bytes, the catalog lists {}", f.display(), r.bytes);
        }
    }
}

fn disk_error_on(events: &[understudy_storage::EventRecord], volume: &Path, error: &str) {
    let e = events
        .iter()
        .find(|e| e.kind == "disk_error" && e.detail["volume"] == volume.display().to_string())
        .unwrap_or_else(|| panic!("no disk_error event for {}: {events:?}", volume.display()));
    assert!(e.detail["error"].as_str().unwrap().contains(error), "{e:?}");
    assert_eq!(e.channel, Some(1));
}

#[test]
fn write_eio_moves_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, events) = run_fault("write EIO", tmp.path(), Duration::from_secs(2), |a| faults::inject(a, Fault::WriteEio));
    disk_error_on(&events, &tmp.path().join("a"), "Input/output error");
}

/// Every log line of this test binary (any thread), as plain text with the spans' fields.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        struct Sink(&'static std::sync::Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sub = tracing_subscriber::fmt().with_ansi(false).with_max_level(tracing::Level::DEBUG).with_writer(move || Sink(logs)).finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        logs
    })
}

#[test]
fn fsync_eio_abandons_the_segment_without_retrying() {
    let logs = captured_logs();
    let tmp = tempfile::tempdir().unwrap();
    let (store, events) = run_fault("fsync EIO", tmp.path(), Duration::from_secs(2), |a| faults::inject(a, Fault::SyncEio));
    // The syncer's lines about the failed segment carry the fields of the span the writer
    // opened it in (the binary's channel span: channel, main, camera), though the syncer is a
    // thread of its own serving the whole volume.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let vol_a = tmp.path().join("a").display().to_string();
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("fdatasync failed") && l.contains(&vol_a)).collect();
    assert!(!failed.is_empty(), "no fdatasync failure logged:\n{text}");
    for l in &failed {
        assert!(l.contains("main=\"nvr-x\"") && l.contains("camera=\"nvr-x/cam-7\""), "lacks main/camera: {l}");
    }
    disk_error_on(&events, &tmp.path().join("a"), "Input/output error");
    let e = events.iter().find(|e| e.kind == "disk_error").unwrap();
    assert_eq!(e.detail["op"], "fdatasync", "{e:?}");
    // fsyncgate: one failed fsync, never retried on that file (no second error for it).
    let same_file = events.iter().filter(|x| x.kind == "disk_error" && x.detail["path"] == e.detail["path"]).count();
    assert_eq!(same_file, 1, "{events:?}");
    // The segment on "a" ends where it was last durable, and is closed.
    let a_rows: Vec<_> = store.recordings(1, None, None).unwrap().into_iter().filter(|r| r.volume.ends_with("a")).collect();
    assert_eq!(a_rows.len(), 1, "{a_rows:?}");
}

/// The race behind fsyncgate's "abandon the file": the syncer's fdatasync fails while the
/// writer, already past its last check, is writing the next fragment (the seam stages it:
/// the write goes ahead 300 ms after the failure). The file must end where the catalog says
/// (`run_fault` compares every file with its row): the syncer's cut and the writer's append
/// never interleave, so no fragment lands beyond the cut (a hole plus an uncataloged tail).
#[test]
fn fsync_eio_during_a_fragment_write_leaves_nothing_beyond_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    // The staged failure waits for the next fragment (about a second) before it happens.
    let (store, events) = run_fault("fsync EIO mid-write", tmp.path(), Duration::from_secs(5), |a| {
        faults::inject(a, Fault::SyncEioDuringWrite)
    });
    disk_error_on(&events, &tmp.path().join("a"), "Input/output error");
    let e = events.iter().find(|e| e.kind == "disk_error").unwrap();
    assert_eq!(e.detail["op"], "fdatasync", "{e:?}");
    let a_rows: Vec<_> = store.recordings(1, None, None).unwrap().into_iter().filter(|r| r.volume.ends_with("a")).collect();
    assert_eq!(a_rows.len(), 1, "{a_rows:?}");
}

/// A directory fsync that fails while a new segment is created: the file's directory entry
/// may never reach the disk, so the segment is never cataloged, and its file is removed
/// (otherwise a reindex would list footage the catalog never did). The channel moves to "b".
#[test]
fn directory_fsync_eio_on_a_new_segment_leaves_no_uncataloged_file() {
    let test = "directory fsync EIO";
    let tmp = tempfile::tempdir().unwrap();
    let clip = h264_clip(4, "320x240");
    let cfg = config(tmp.path(), &[("a", None), ("b", Some(32 << 20))], Duration::from_secs(60));
    let store = Store::open(cfg).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    faults::inject(&a, Fault::DirSyncEio);
    let base = base_time_90k();
    let mut w = store.channel_writer(1, 0).unwrap();
    let st = w.stats();
    let end = feed(&mut w, &clip, base, 2, Some(Duration::from_millis(40)));
    w.close().unwrap();
    faults::clear(&a);

    let events = store.events_since(0, 1000).unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "disk_error" && e.detail["op"] == "fsync directory")
        .unwrap_or_else(|| panic!("{test}: no disk_error for the directory fsync: {events:?}"));
    assert!(e.detail["path"].as_str().unwrap().starts_with(&a.display().to_string()), "{e:?}");
    assert!(e.detail["error"].as_str().unwrap().contains("Input/output error"), "{e:?}");
    let recs = store.recordings(1, None, None).unwrap();
    assert!(recs.iter().all(|r| r.volume == b), "{test}: {recs:?}");
    assert!(mp4_files(&a).is_empty(), "{test}: files left on a: {:?}", mp4_files(&a));
    assert!(st.write_errors() >= 1);
    let listed: u64 = recs.iter().map(|r| r.frames).sum();
    assert_eq!(st.frames_durable(), listed, "{test}: {recs:?}");
    assert!(listed >= 200 - 3 * 25, "{test}: kept only {listed} of 200 frames");
    assert_eq!(recs.last().unwrap().end_90k, end, "{test}: recorded to the end");
    for r in &recs {
        assert_ffprobe_clean(&r.path);
    }
    disk_matches_catalog(test, &store, &[&a, &b]);
    let sum = store.reindex(&mut |_, _| {}).unwrap();
    assert_eq!(
        (sum.repaired, sum.added, sum.removed_files, sum.removed_rows, sum.errors),
        (0, 0, 0, 0, 0),
        "{test}: {sum:?}"
    );
}

#[test]
fn read_only_filesystem_moves_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, events) = run_fault("read-only", tmp.path(), Duration::from_secs(2), |a| faults::inject(a, Fault::ReadOnly));
    disk_error_on(&events, &tmp.path().join("a"), "Read-only file system");
    assert!(store.volumes().iter().any(|v| v.path.ends_with("b") && v.healthy));
}

#[test]
fn vanished_volume_moves_the_channel_and_is_never_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&tmp.path().join("a"), "64m") else {
        eprintln!("vanish: cannot mount tmpfs here (needs CAP_SYS_ADMIN); skipped");
        return;
    };
    let (store, events) = run_fault("vanish", tmp.path(), Duration::from_secs(2), |_| mount.unmount());
    let a = tmp.path().join("a");
    let e = events.iter().find(|e| e.kind == "volume_missing").expect("volume_missing event");
    assert_eq!(e.detail["volume"], a.display().to_string());
    assert!(e.detail["error"].as_str().unwrap().contains("marker"), "{e:?}");
    let v = store.volumes().into_iter().find(|v| v.path == a).unwrap();
    assert!(v.missing && !v.healthy, "{v:?}");
    // The empty mount point (on the parent filesystem) was never written into.
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 0, "wrote into the mount point");
}
