//! Full disks are normal: real tmpfs filesystems (so `write` really fails with ENOSPC), the
//! default free-space floor, ENOSPC → retention → retry, and what retention deletes first.
//!
//! Mounting needs CAP_SYS_ADMIN (root in the test container); without it each test says so
//! and returns.

mod common;

use std::time::{Duration, Instant};

use common::*;
use understudy_storage::{SegmentInfo, Store};

const MIB: u64 = 1 << 20;

fn skip(test: &str) {
    eprintln!("{test}: cannot mount tmpfs here (needs CAP_SYS_ADMIN); skipped");
}

/// Segments of a channel, by start.
fn recs(store: &Store, ch: u32) -> Vec<SegmentInfo> {
    store.recordings(ch, None, None).unwrap()
}

#[test]
fn enospc_mid_segment_keeps_whole_fragments_and_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("tiny"), "320k") else {
        return skip("disk_full");
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

    // ENOSPC with nothing closed to delete on "tiny": the segment keeps its whole fragments,
    // the channel moves on; a full disk is not a failing one.
    assert!(st.write_errors() >= 1);
    let events = store.events_since(0, 100).unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "disk_error")
        .expect("disk_error event");
    assert!(e.detail["error"].as_str().unwrap().contains("No space left"), "{e:?}");
    assert!(e.detail["path"].as_str().unwrap().contains("/tiny/"), "{e:?}");
    assert_eq!(e.detail["volume_healthy"], true, "{e:?}");

    let all = recs(&store, 1);
    let disk: Vec<_> = all.iter().filter(|r| r.volume.ends_with("disk")).collect();
    assert!(!disk.is_empty(), "{all:?}");
    for r in &all {
        assert!(!r.open);
        assert_eq!(std::fs::metadata(&r.path).unwrap().len(), r.bytes);
        assert_ffprobe_clean(&r.path);
        assert_decodes(&r.path);
        assert_eq!(ffprobe_frames(&r.path), r.frames);
    }
    // Recording carried on to the end on "disk", from the key frame whose arrival completed
    // the fragment that failed: only that fragment (at most 1 s) was lost.
    assert_eq!(disk.last().unwrap().end_90k, end);
    // The fragment that failed was written again there: nothing was lost.
    assert_eq!(st.frames_durable(), 300);
    // What "tiny" kept stays until its floor needs the room: then retention deletes it,
    // saying why (the closed segment is all there is, and the volume is below its floor).
    wait_until(Duration::from_secs(5), || {
        store.events_since(0, 100).unwrap().iter().any(|e| e.kind == "retention")
    });
    let tiny_left: Vec<_> = recs(&store, 1).into_iter().filter(|r| r.volume.ends_with("tiny")).collect();
    let ret = store.events_since(0, 100).unwrap().into_iter().filter(|e| e.kind == "retention").collect::<Vec<_>>();
    assert!(
        tiny_left.is_empty() != ret.is_empty(),
        "tiny: {tiny_left:?}, retention: {ret:?}"
    );
    for e in &ret {
        assert_eq!(e.detail["reason"], "local footage, oldest first", "{e:?}");
    }
}

/// The scenario: default config (no max_bytes, no reserve) on a small filesystem,
/// 4 channels for 3× the time it takes to fill it. Every channel keeps recording to the end,
/// the oldest closed segments go first, nothing is lost, every remaining file plays clean.
#[test]
fn default_floor_keeps_four_channels_recording_through_three_fills() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("small"), "64m") else {
        return skip("default_floor");
    };
    let clip = h264_clip(10, "1280x720");
    let clip_bytes: u64 = clip.frames.iter().map(|f| f.2.len() as u64).sum();
    let per_second = clip_bytes / 10 * 4; // all four channels
    let seconds = u32::try_from(3 * 64 * MIB / per_second).unwrap() + 10;
    let cfg = config(tmp.path(), &[("small", None)], Duration::from_secs(10));
    let store = Store::open(cfg).unwrap();
    let vol = &store.volumes()[0];
    assert!(vol.reserve_default);
    assert_eq!(vol.reserve, Some(64 * MIB / 20), "{vol:?}");

    let base = base_time_90k();
    let mut ws: Vec<_> = (1..=4).map(|ch| store.channel_writer(ch, 0).unwrap()).collect();
    let stats: Vec<_> = ws.iter().map(|w| w.stats()).collect();
    let started = Instant::now();
    let mut fill_s = None;
    let mut last = [0u64; 4];
    let mut windows = 0;
    let end = {
        let mut refs: Vec<&mut _> = ws.iter_mut().collect();
        feed_round_robin(&mut refs, &clip, base, seconds, |s| {
            if fill_s.is_none() && store.retention_log_len().unwrap() > 0 {
                fill_s = Some((s, started.elapsed()));
            }
            if s % 10 != 0 {
                return;
            }
            // Every 10 s of media: each channel's durable frames rose (the syncer is given a
            // moment, since frames are pushed faster than real time).
            for (i, st) in stats.iter().enumerate() {
                assert!(
                    wait_until(Duration::from_secs(10), || st.frames_durable() > last[i]),
                    "channel {} stopped becoming durable at {s} s of media", i + 1
                );
                last[i] = st.frames_durable();
            }
            windows += 1;
        })
    };
    for w in ws {
        w.close().unwrap();
    }
    let (fill_media_s, fill_wall) = fill_s.expect("the volume filled and retention ran");
    eprintln!(
        "default_floor: {seconds} s of media on 4 channels ({:.1} MB/s), volume full after {fill_media_s} s of media \
         ({:.1} s wall); whole run {:.1} s wall; {windows} windows of 10 s",
        per_second as f64 / 1e6,
        fill_wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(seconds >= 3 * fill_media_s, "ran {seconds} s, filled at {fill_media_s} s");
    // Nothing lost: every frame pushed became durable, no write error survived a retry.
    for (i, st) in stats.iter().enumerate() {
        assert_eq!(st.frames_durable(), u64::from(seconds) * 25, "channel {}", i + 1);
        assert_eq!(st.write_errors(), 0, "channel {}", i + 1);
    }
    // The oldest went first: each channel's remaining segments are one unbroken run that
    // ends at the end, and retention said why it deleted each batch.
    for ch in 1..=4 {
        let r = recs(&store, ch);
        assert!(r.first().unwrap().start_90k > base, "channel {ch} kept its first segment");
        assert_eq!(r.last().unwrap().end_90k, end, "channel {ch}");
        for pair in r.windows(2) {
            assert_eq!(pair[0].end_90k, pair[1].start_90k, "channel {ch}: gap in {pair:?}");
        }
        for s in &r {
            assert!(!s.open);
            assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.bytes);
            assert_ffprobe_clean(&s.path);
        }
        assert_decodes(&r[0].path);
    }
    let events = store.events_since(0, 10_000).unwrap();
    let ret: Vec<_> = events.iter().filter(|e| e.kind == "retention").collect();
    assert!(!ret.is_empty());
    assert!(ret.iter().all(|e| e.detail["reason"] == "local footage, oldest first"), "{ret:?}");
    assert!(!events.iter().any(|e| e.kind == "disk_error"), "no disk errors on a merely full disk");
}

/// Takeover footage survives while local footage is deleted on the same full volume; when
/// only protected takeover footage is left, the volume says so (event and flag) and the
/// oldest of it goes, so recording continues.
#[test]
fn takeover_footage_survives_while_local_footage_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("small"), "16m") else {
        return skip("takeover_first");
    };
    let clip = h264_clip(10, "1280x720");
    let clip_bytes: u64 = clip.frames.iter().map(|f| f.2.len() as u64).sum();
    let fill_s = u32::try_from(16 * MIB / (clip_bytes / 10 * 2)).unwrap();
    let cfg = config(tmp.path(), &[("small", None)], Duration::from_secs(4));
    let store = Store::open(cfg).unwrap();
    let base = base_time_90k();
    let mut local = store.channel_writer(1, 0).unwrap();
    let mut takeover = store.channel_writer(2, 0).unwrap();
    takeover.set_takeover(true);

    // 4/3 of the fill time, both channels (the takeover alone fills 2/3 of the volume):
    // only local footage is deleted.
    let t = feed_round_robin(&mut [&mut local, &mut takeover], &clip, base, fill_s * 4 / 3, |_| {});
    local.close().unwrap();
    let l = recs(&store, 1);
    let k = recs(&store, 2);
    assert!(l.first().unwrap().start_90k > base, "local footage was deleted: {:?}", l.first());
    assert_eq!(k.first().unwrap().start_90k, base, "takeover footage kept from the start");
    let events = store.events_since(0, 10_000).unwrap();
    assert!(events.iter().filter(|e| e.kind == "retention").all(|e| e.detail["reason"] == "local footage, oldest first"));
    assert!(!store.volumes()[0].only_protected);

    // The takeover goes on alone until nothing but protected takeover footage is left.
    let mut step = t;
    let ok = wait_until(Duration::from_secs(60), || {
        step = feed_round_robin(&mut [&mut takeover], &clip, step, 5, |_| {});
        store.volumes()[0].only_protected
    });
    assert!(ok, "volume never reported holding only protected footage");
    takeover.close().unwrap();
    assert!(recs(&store, 1).is_empty(), "all local footage went first");
    let k = recs(&store, 2);
    assert!(k.first().unwrap().start_90k > base, "then the oldest protected footage");
    assert_eq!(k.last().unwrap().end_90k, step, "the takeover kept recording");
    let events = store.events_since(0, 10_000).unwrap();
    let flag = events.iter().find(|e| e.kind == "volume_only_protected").expect("volume_only_protected event");
    assert!(flag.detail["volume"].as_str().unwrap().ends_with("/small"), "{flag:?}");
    assert!(events.iter().any(|e| e.kind == "retention"
        && e.detail["reason"] == "protected takeover footage: nothing else left to delete"));
}

/// A volume that starts below its floor says so at once (log and `volume_below_floor` event),
/// because retention will delete its closed footage; one above it raises nothing.
#[test]
fn volume_starting_below_its_floor_raises_an_event() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("v"), "8m") else {
        return skip("below_floor");
    };
    let mut cfg = config(tmp.path(), &[("v", None)], Duration::from_secs(4));
    // Fill the tmpfs to 1 MiB free, then ask for a 2 MiB floor.
    let filler = tmp.path().join("v").join("filler");
    std::fs::write(&filler, vec![1u8; 7 * MIB as usize]).unwrap();
    cfg.volumes[0].reserve = Some(2 * MIB);
    let store = Store::open(cfg.clone()).unwrap();
    let events = store.events_since(0, 100).unwrap();
    let e = events.iter().find(|e| e.kind == "volume_below_floor").expect("volume_below_floor event");
    assert_eq!(e.detail["reserve_bytes"], 2 * MIB);
    assert!(e.detail["free_bytes"].as_u64().unwrap() < 2 * MIB, "{:?}", e.detail);
    assert_eq!(e.detail["reserve_default"], false);
    store.shutdown().unwrap();
    drop(store);

    // Room again: no new event on the next start.
    std::fs::remove_file(&filler).unwrap();
    let store = Store::open(cfg).unwrap();
    let n = store.events_since(0, 100).unwrap().iter().filter(|e| e.kind == "volume_below_floor").count();
    assert_eq!(n, 1, "a volume above its floor raised volume_below_floor");
}

/// ENOSPC → retention → the same fragment written again, made deterministic: with no
/// free-space floor (`reserve = 0`) the syncer never deletes anything, so only a write (or a
/// segment start) that hits ENOSPC can run retention. Closed segments are there to delete;
/// every frame pushed becomes durable, nothing counts as a write error, and the channel never
/// leaves the full volume for the spare one.
#[test]
fn enospc_runs_retention_at_once_and_writes_the_fragment_again() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("t"), "4m") else {
        return skip("enospc_retry");
    };
    let clip = h264_clip(10, "1280x720");
    let clip_bytes: u64 = clip.frames.iter().map(|f| f.2.len() as u64).sum();
    // "spare" has less headroom than the empty tmpfs: the channel starts on "t", and would
    // only go to "spare" if a full "t" ended its segment.
    let mut cfg = config(tmp.path(), &[("t", None), ("spare", Some(MIB))], Duration::from_secs(2));
    cfg.volumes[0].reserve = Some(0);
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.volumes()[0].reserve, Some(0));
    let base = base_time_90k();
    let mut w = store.channel_writer(1, 0).unwrap();
    let st = w.stats();
    // Three times what the tmpfs holds.
    let loops = u32::try_from(3 * 4 * MIB / clip_bytes).unwrap() + 1;
    let end = feed(&mut w, &clip, base, loops, None);
    w.close().unwrap();
    let pushed = u64::from(loops) * clip.frames.len() as u64;

    let events = store.events_since(0, 10_000).unwrap();
    let ret: Vec<_> = events.iter().filter(|e| e.kind == "retention").collect();
    assert!(!ret.is_empty(), "retention never ran: {events:?}");
    // Nothing but ENOSPC could have triggered it (no floor, no max_bytes).
    for e in &ret {
        assert_eq!(e.detail["trigger"], "disk full (ENOSPC)", "{e:?}");
        assert_eq!(e.detail["reason"], "local footage, oldest first", "{e:?}");
        assert!(e.detail["volume"].as_str().unwrap().ends_with("/t"), "{e:?}");
    }
    assert!(!events.iter().any(|e| e.kind == "disk_error"), "{events:?}");
    assert_eq!(st.write_errors(), 0);
    // No frame lost around a retry: everything pushed (the last fragment flushed by close) is durable.
    assert_eq!(st.frames_durable(), pushed);
    let r = recs(&store, 1);
    assert!(r.iter().all(|s| s.volume.ends_with("t")), "the channel moved: {r:?}");
    assert!(mp4_files(&tmp.path().join("spare")).is_empty());
    assert!(r.first().unwrap().start_90k > base, "retention deleted the oldest: {:?}", r.first());
    assert_eq!(r.last().unwrap().end_90k, end);
    for pair in r.windows(2) {
        assert_eq!(pair[0].end_90k, pair[1].start_90k, "gap in {pair:?}");
    }
    for s in &r {
        assert!(!s.open);
        assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.bytes);
        assert_ffprobe_clean(&s.path);
        assert_eq!(ffprobe_frames(&s.path), s.frames, "{s:?}");
    }
}

/// A volume that stays full (another process filled it, nothing closed to delete): every key
/// frame tries to start a segment and hits ENOSPC, but that is one `disk_error` event when it
/// starts and one `disk_error_ended` (with the count) when footage is written again, not one
/// event per key frame.
#[test]
fn a_volume_that_stays_full_raises_one_disk_error_not_one_per_key_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&tmp.path().join("v"), "2m") else {
        return skip("full_flood");
    };
    let clip = h264_clip(4, "320x240");
    let mut cfg = config(tmp.path(), &[("v", None)], Duration::from_secs(60));
    cfg.volumes[0].reserve = Some(0);
    let store = Store::open(cfg).unwrap();
    // Fill the filesystem to the last byte.
    let filler = tmp.path().join("v").join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let base = base_time_90k();
    let mut w = store.channel_writer(1, 0).unwrap();
    let st = w.stats();
    let push = |w: &mut understudy_storage::ChannelWriter, from: usize, n: usize| {
        let mut refused = 0;
        for i in from..from + n {
            let (rel, key, data) = &clip.frames[i % clip.frames.len()];
            let t = base + (i / clip.frames.len()) as i64 * clip.frames.len() as i64 * FRAME_90K + rel;
            let f = understudy_storage::InputFrame { time_90k: t, cts_offset: 0, key: *key, data: data.clone() };
            if w.push(&clip.params, f).is_err() {
                refused += 1;
            }
        }
        refused
    };
    // 12 s of media: 12 key frames, each one refused.
    let refused = push(&mut w, 0, 12 * 25);
    assert_eq!(refused, 12, "every key frame tried and failed");
    assert!(st.write_errors() >= 12);
    let events = store.events_since(0, 1000).unwrap();
    let errors: Vec<_> = events.iter().filter(|e| e.kind == "disk_error").collect();
    assert_eq!(errors.len(), 1, "one event for the whole full period: {errors:?}");
    assert!(errors[0].detail["error"].as_str().unwrap().contains("No space left"), "{:?}", errors[0]);
    assert_eq!(errors[0].channel, Some(1));
    assert!(!events.iter().any(|e| e.kind == "disk_error_ended"));

    // Room again: recording resumes, and the end of the condition is said once, with its count.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(push(&mut w, 12 * 25, 3 * 25), 0);
    w.close().unwrap();
    let events = store.events_since(0, 1000).unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "disk_error").count(), 1, "{events:?}");
    let ended: Vec<_> = events.iter().filter(|e| e.kind == "disk_error_ended").collect();
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0].detail["repeats"], 11, "{:?}", ended[0]);
    assert!(ended[0].detail["volume"].as_str().unwrap().ends_with("/v"), "{:?}", ended[0]);
    let r = recs(&store, 1);
    assert_eq!(r.iter().map(|s| s.frames).sum::<u64>(), 3 * 25, "{r:?}");
}
