//! Storage that never stops recording, end to end: `understudy run` with its default volume
//! settings on a small real filesystem (a tmpfs this test mounts as root), the channel status
//! when footage stops becoming durable, and start-up with a volume missing.
//!
//! Mounting needs CAP_SYS_ADMIN; without it the tmpfs tests say so and return.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn cameras_toml(sim: &understudy::camsim::CamSim, n: u32) -> String {
    (1..=n).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect()
}

fn channel(status: &serde_json::Value, ch: u32) -> serde_json::Value {
    status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == ch).cloned().unwrap_or_default()
}

fn events(setup: &Setup) -> Vec<serde_json::Value> {
    setup.api_get("/api/events?limit=10000").map(|e| e["events"].as_array().unwrap().clone()).unwrap_or_default()
}

/// The scenario: default volume settings (no max_bytes, no reserve) on a 16 MiB
/// filesystem, 4 real-time cameras for 3× the time it takes to fill it. Every channel's
/// durable frames rise in every 10 s window, the oldest segments go first, every remaining
/// file plays clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_cameras_keep_recording_on_a_full_filesystem() {
    let sim = camsim(&[H264_720, H264_720, H264_720, H264_720]).await;
    let setup = Setup::new(4, "segment_duration = \"3s\"", &cameras_toml(&sim, 4));
    let Some(_fs) = Tmpfs::mount(&setup.volume(), "16m") else {
        eprintln!("full_disk: cannot mount tmpfs here (needs CAP_SYS_ADMIN); skipped");
        return;
    };
    let mut child = setup.spawn_run();
    let started = Instant::now();
    let ok = wait_until_async(Duration::from_secs(30), || (1..=4).all(|c| !setup.segment_files(c).is_empty())).await;
    assert!(ok, "not every channel started recording: {}", setup.log());
    let first_file: Vec<PathBuf> = (1..=4).map(|c| setup.segment_files(c)[0].clone()).collect();

    // Until the volume is full (retention's first batch), then twice that again.
    let mut fill = None;
    let mut last = [0u64; 4];
    let mut window_end = Instant::now() + Duration::from_secs(10);
    let mut windows = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if fill.is_none() && events(&setup).iter().any(|e| e["kind"] == "retention") {
            fill = Some(started.elapsed());
            eprintln!("full_disk: 16 MiB full after {:.1} s", started.elapsed().as_secs_f64());
        }
        if Instant::now() >= window_end {
            let st = setup.api_get("/api/status").expect("status");
            for ch in 1..=4u32 {
                let c = channel(&st, ch);
                let d = c["durable_frames"].as_u64().unwrap_or(0);
                assert!(d > last[ch as usize - 1], "channel {ch}: durable frames stood still at {d} in window {windows}: {c}\n{}", setup.log());
                last[ch as usize - 1] = d;
            }
            windows += 1;
            window_end += Duration::from_secs(10);
        }
        match fill {
            Some(f) if started.elapsed() >= f * 3 => break,
            None if started.elapsed() > Duration::from_secs(60) => panic!("the volume never filled: {}", setup.log()),
            _ => {}
        }
    }
    let st = setup.api_get("/api/status").expect("status");
    sigterm(&mut child);
    eprintln!(
        "full_disk: ran {:.1} s ({windows} windows of 10 s); channel states at the end: {:?}",
        started.elapsed().as_secs_f64(),
        (1..=4).map(|c| channel(&st, c)["state"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>()
    );
    assert!(windows >= 3);
    let vol = &st["server"]["volumes"][0];
    assert_eq!(vol["reserve_default"], true, "{vol}");

    let evs = events(&setup);
    let ret: Vec<_> = evs.iter().filter(|e| e["kind"] == "retention").collect();
    assert!(ret.iter().all(|e| e["detail"]["reason"] == "local footage, oldest first"), "{ret:?}");
    assert!(!evs.iter().any(|e| e["kind"] == "disk_error"), "a full disk is not a failing one: {evs:?}");
    for ch in 1..=4u32 {
        let files = setup.segment_files(ch);
        assert!(!files.contains(&first_file[ch as usize - 1]), "channel {ch}: its oldest segment was kept");
        // The oldest went first: what is left is one unbroken run up to the end.
        let recs = setup.recordings(ch);
        assert_eq!(recs.len(), files.len());
        for pair in recs.windows(2) {
            // Segment starts are whole milliseconds (file names): within 1 ms of the end before.
            let gap = pair[1]["start_90k"].as_i64().unwrap() - pair[0]["end_90k"].as_i64().unwrap();
            assert!(gap.abs() <= 90, "channel {ch}: a hole between {pair:?}");
        }
        for f in &files {
            ffprobe_clean(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        ffmpeg_decodes(files.last().unwrap()).unwrap();
    }
    sim.shutdown().await;
}

/// A channel whose footage stops becoming durable is `stalled` within 3 s, with the reason,
/// in `/api/status` and as an event; it is `recording` again once the disk has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_channel_is_reported_within_3s_with_the_reason() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "segment_duration = \"60s\"", &cameras_toml(&sim, 1));
    let Some(_fs) = Tmpfs::mount(&setup.volume(), "8m") else {
        eprintln!("stalled: cannot mount tmpfs here (needs CAP_SYS_ADMIN); skipped");
        return;
    };
    let mut child = setup.spawn_run();
    let recording = || setup.api_get("/api/status").is_some_and(|s| channel(&s, 1)["state"] == "recording" && channel(&s, 1)["durable_frames"].as_u64() > Some(0));
    assert!(wait_until_async(Duration::from_secs(30), recording).await, "never recording: {}", setup.log());

    // Another process fills the filesystem: one segment open, nothing closed to delete.
    let filler = setup.volume().join("filler");
    let _ = Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).args(["bs=64k"]).output();
    let t0 = Instant::now();
    let mut seen = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(s) = setup.api_get("/api/status") {
            let c = channel(&s, 1);
            if c["state"] == "stalled" {
                seen = Some((t0.elapsed(), c));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, c) = seen.unwrap_or_else(|| panic!("never reported stalled: {}", setup.log()));
    eprintln!("stalled: reported {:.2} s after the disk filled: {c}", after.as_secs_f64());
    assert!(after <= Duration::from_secs(3), "took {after:?}");
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("disk full on") && reason.contains("disk1"), "{c}");
    assert!(c["seconds_since_durable"].as_f64().is_some(), "{c}");
    assert!(
        wait_until_async(Duration::from_secs(5), || events(&setup).iter().any(|e| e["kind"] == "channel_stalled"
            && e["channel"] == 1 && e["detail"]["reason"].as_str().is_some_and(|r| r.contains("disk full on")))).await,
        "no channel_stalled event: {:?}", events(&setup)
    );
    // Room again: recording resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    assert!(wait_until_async(Duration::from_secs(15), recording).await, "never recovered: {}", setup.log());
    assert!(wait_until_async(Duration::from_secs(5), || events(&setup).iter().any(|e| e["kind"] == "channel_recovered")).await);
    sigterm(&mut child);
    sim.shutdown().await;
}

/// A volume missing at start (disk not mounted: its directory is an empty mount point): a
/// clear message, the other volume records, the missing one is flagged and never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_volume_at_start_is_flagged_and_the_others_record() {
    let sim = camsim(&[H264, H264]).await;
    let setup = Setup::new(2, "segment_duration = \"4s\"", &cameras_toml(&sim, 2));
    let disk2 = setup.dir.path().join("disk2");
    let text = std::fs::read_to_string(&setup.config).unwrap()
        + &format!("\n[[volume]]\npath = {:?}\n", disk2.display().to_string());
    std::fs::write(&setup.config, text).unwrap();
    // First run: both volumes are known to the catalog.
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(30), || setup.api_get("/api/status").is_some_and(|s| s["server"]["volumes"].as_array().map(|v| v.len()) == Some(2))).await);
    assert!(wait_until_async(Duration::from_secs(30), || (1..=2).all(|c| !setup.try_recordings(c).unwrap_or_default().is_empty())).await);
    sigterm(&mut child);

    // The disk is "unmounted": its mount point is an empty directory.
    std::fs::rename(&disk2, setup.dir.path().join("disk2-unplugged")).unwrap();
    std::fs::create_dir(&disk2).unwrap();
    let mut child = setup.spawn_run();
    let status = || setup.api_get("/api/status");
    assert!(wait_until_async(Duration::from_secs(30), || status().is_some()).await, "{}", setup.log());
    let before: Vec<usize> = (1..=2).map(|c| setup.try_recordings(c).unwrap_or_default().len()).collect();
    let more = wait_until_async(Duration::from_secs(30), || {
        (1..=2).all(|c| setup.try_recordings(c).unwrap_or_default().len() > before[c as usize - 1])
    })
    .await;
    assert!(more, "channels did not record on the remaining volume: {}", setup.log());
    let s = status().unwrap();
    let v2 = s["server"]["volumes"].as_array().unwrap().iter().find(|v| v["path"] == disk2.display().to_string()).cloned().unwrap();
    assert_eq!(v2["missing"], true, "{v2}");
    assert!(v2["error"].as_str().unwrap().contains("not mounted or swapped"), "{v2}");
    sigterm(&mut child);
    let log = setup.log();
    assert!(log.contains("volume missing") && log.contains("disk2"), "no clear message: {log}");
    assert_eq!(std::fs::read_dir(&disk2).unwrap().count(), 0, "wrote into the empty mount point");
    sim.shutdown().await;
}
