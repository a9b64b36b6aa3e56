//! Recording core acceptance: `understudy run` as a child process recording camsim cameras.

mod common;

use std::time::Duration;

use common::*;
use understudy::camsim::Fault;

fn cameras_toml(sim: &understudy::camsim::CamSim, n: u32) -> String {
    (1..=n).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect()
}

/// Acceptance 1: four cameras (H.264 and H.265) for 10 s; every segment decodes cleanly,
/// frame counts are within one GOP of what camsim sent, and channel N holds camera N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_cameras_record_clean_segments() {
    let sim = camsim(&[H264, H265, H264_720, H265_720]).await;
    let setup = Setup::new(4, "segment_duration = \"4s\"", &cameras_toml(&sim, 4));
    let mut child = setup.spawn_run();
    // Wait until every channel has durable footage, then record 10 s more.
    let ok = wait_until_async(Duration::from_secs(60), || (1..=4).all(|c| !setup.segment_files(c).is_empty())).await;
    assert!(ok, "not every channel started recording: {}", setup.log());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent_before_stop = sim.stats();
    sigterm(&mut child);
    let sent_after_stop = sim.stats();
    let log = setup.log();
    assert!(log.contains("stopped cleanly"), "no clean stop: {log}");

    for ch in 1..=4u32 {
        let files = setup.segment_files(ch);
        assert!(files.len() >= 2, "channel {ch}: expected rotation into several 4 s segments, got {files:?}");
        let mut frames = 0;
        for f in &files {
            ffprobe_clean(f).unwrap();
            ffmpeg_decodes(f).unwrap();
            frames += probe(f).0;
            assert_eq!(cameras_in(f), [ch].into_iter().collect(), "channel {ch} file {} holds another camera", f.display());
        }
        let cam_before = sent_before_stop.cameras.iter().find(|c| c.id == ch).unwrap().frames_sent;
        let cam_after = sent_after_stop.cameras.iter().find(|c| c.id == ch).unwrap().frames_sent;
        // Frames sent before our first key frame arrived are legitimately not recorded: at most one GOP (50).
        assert!(frames + 50 + 5 >= cam_before && frames <= cam_after, "channel {ch}: recorded {frames}, camsim sent {cam_before}..{cam_after}");
        // The catalog agrees with the files.
        let recs = setup.recordings(ch);
        assert_eq!(recs.len(), files.len(), "channel {ch}: catalog {recs:?} vs files {files:?}");
        let cat_frames: u64 = recs.iter().map(|r| r["frames"].as_u64().unwrap()).sum();
        assert_eq!(cat_frames, frames, "channel {ch}: catalog frames");
        assert!(recs.iter().all(|r| r["open"] == false), "a segment is still open after a clean stop");
    }
    sim.shutdown().await;
}

/// Acceptance 3: a tiny max_bytes keeps recording and deletes only the oldest closed segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_oldest_closed_segments() {
    let sim = camsim(&[H264_720]).await;
    let setup = Setup::new(1, "segment_duration = \"2s\"", &cameras_toml(&sim, 1));
    // ~3 Mbit/s = ~375 KB/s: 3 MB holds about 8 s.
    let text = std::fs::read_to_string(&setup.config).unwrap().replace("[[volume]]\npath", "[[volume]]\nmax_bytes = \"3 MB\"\npath");
    std::fs::write(&setup.config, text).unwrap();
    let mut child = setup.spawn_run();
    let mut first_starts = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Some(first) = setup.try_recordings(1).unwrap_or_default().first() {
            first_starts.push(first["start_90k"].as_i64().unwrap());
        }
    }
    let recs = setup.recordings(1);
    sigterm(&mut child);
    assert!(first_starts.windows(2).any(|w| w[1] > w[0]), "the oldest segment was never deleted: {first_starts:?}");
    assert!(first_starts.windows(2).all(|w| w[1] >= w[0]), "retention deleted out of order: {first_starts:?}");
    let bytes: u64 = recs.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert!(bytes < 3_000_000 + 2_000_000, "volume holds {bytes} bytes, budget 3 MB");
    // Still recording at the end: the newest segment ends near now.
    let newest = recs.last().unwrap()["end_90k"].as_i64().unwrap();
    let now = understudy::commands::time::now_90k();
    assert!(now - newest < 15 * 90_000, "recording stopped: newest end {newest}, now {now}");
    // Files and catalog agree: every cataloged file exists and no orphan is left.
    let files = setup.segment_files(1);
    assert_eq!(files.len(), setup.recordings(1).len());
    sim.shutdown().await;
}

fn channel_status(setup: &Setup, ch: u32) -> Option<serde_json::Value> {
    let st = setup.api_get("/api/status")?;
    st["channels"].as_array()?.iter().find(|c| c["channel"] == ch).cloned()
}

/// Acceptance 4: stall, disconnect mid-GOP, garbage RTP and a parameter change: the channel
/// reports it, reconnects and goes on in a new segment; the untouched channel keeps one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_reported_and_recovered_without_disturbing_others() {
    let sim = camsim(&[H264, H264, H264, H264, H264]).await;
    let setup = Setup::new(5, "stall_timeout = \"3s\"\nsegment_duration = \"60s\"", &cameras_toml(&sim, 5));
    let mut child = setup.spawn_run();
    let recording = |s: &Setup| (1..=5).all(|c| channel_status(s, c).is_some_and(|v| v["state"] == "recording" && v["durable_frames"].as_u64() > Some(25)));
    assert!(wait_until_async(Duration::from_secs(60), || recording(&setup)).await, "channels never all recording: {}", setup.log());

    sim.inject(1, Fault::Stall);
    sim.inject(2, Fault::DropMidGop);
    sim.inject(3, Fault::Garbage);
    sim.inject(4, Fault::ChangeParams);

    // 1 and 2 must reconnect (counted, with a reason); all four must end in a new segment.
    let ok = wait_until_async(Duration::from_secs(90), || {
        (1..=2).all(|c| channel_status(&setup, c).is_some_and(|v| v["reconnects"].as_u64() >= Some(1) && v["state"] == "recording"))
            && (1..=4).all(|c| setup.try_recordings(c).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let statuses: Vec<_> = (1..=5).map(|c| channel_status(&setup, c)).collect();
    assert!(ok, "faulted channels did not recover: {statuses:#?}\n{}", setup.log());
    let s1 = channel_status(&setup, 1).unwrap();
    assert!(s1["last_error"].as_str().is_some_and(|e| e.contains("no frames")), "stall not reported: {s1}");
    assert!(channel_status(&setup, 2).unwrap()["last_error"].as_str().is_some(), "disconnect not reported");
    // The parameter change shows up as a new resolution in the catalog.
    let r4 = setup.recordings(4);
    let dims: std::collections::BTreeSet<_> = r4.iter().map(|r| (r["width"].as_u64(), r["height"].as_u64())).collect();
    assert!(dims.len() >= 2, "parameter change did not start a segment with new dimensions: {r4:?}");
    // The untouched channel: one continuous run, no reconnects.
    let s5 = channel_status(&setup, 5).unwrap();
    assert_eq!(s5["reconnects"], 0, "channel 5 was disturbed: {s5}");
    assert_eq!(setup.recordings(5).len(), 1, "channel 5 was split");
    sigterm(&mut child);
    for ch in 1..=5 {
        for f in setup.segment_files(ch) {
            ffmpeg_decodes(&f).unwrap();
        }
    }
    sim.shutdown().await;
}

/// Acceptance 4 (auth): wrong credentials are reported without the password; the right ones
/// record; RejectAuth makes the channel retry until the camera accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_is_reported_without_the_password() {
    let sim = understudy::camsim::CamSim::start(understudy::camsim::CamSimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cameras: vec![
            understudy::camsim::CameraSpec::new(1, fixture(H264)),
            understudy::camsim::CameraSpec::new(2, fixture(H264)),
        ],
        pacing: understudy::camsim::Pacing::Realtime,
        auth: Some(understudy::camsim::AuthConfig { username: "admin".into(), password: "right-pass".into(), scheme: understudy::camsim::AuthScheme::Digest }),
        session_timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let cams = format!(
        "[[camera]]\nchannel = 1\nurl = \"{}\"\nusername = \"admin\"\npassword = \"wrong-pass-123\"\n\n[[camera]]\nchannel = 2\nurl = \"{}\"\nusername = \"admin\"\npassword = \"right-pass\"\n",
        sim.url(1), sim.url(2)
    );
    let setup = Setup::new(2, "", &cams);
    let mut child = setup.spawn_run();
    let ok = wait_until_async(Duration::from_secs(60), || {
        channel_status(&setup, 1).is_some_and(|v| v["last_error"].as_str().is_some_and(|e| e.contains("401")))
            && channel_status(&setup, 2).is_some_and(|v| v["state"] == "recording")
    })
    .await;
    let status = setup.api_get("/api/status").map(|v| v.to_string()).unwrap_or_default();
    assert!(ok, "auth failure not reported: {status}");
    sim.inject(2, Fault::RejectAuth);
    sim.inject(2, Fault::DropMidGop);
    assert!(wait_until_async(Duration::from_secs(60), || setup.try_recordings(2).is_some_and(|r| r.len() >= 2)).await, "channel 2 did not come back after RejectAuth");
    sigterm(&mut child);
    let log = setup.log();
    assert!(!status.contains("wrong-pass-123") && !status.contains("right-pass"), "password in API output");
    assert!(!log.contains("wrong-pass-123") && !log.contains("right-pass"), "password in the log");
    sim.shutdown().await;
}

/// Acceptance 6: an export spanning two segments starts at the key frame at or before `from`,
/// and lasts what was asked (plus the lead-in to that key frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_spans_segments_from_the_right_key_frame() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "segment_duration = \"4s\"", &cameras_toml(&sim, 1));
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| r.len() >= 3)).await, "no rotation: {}", setup.log());
    sigterm(&mut child);
    let recs = setup.recordings(1);
    let (a, b) = (&recs[0], &recs[1]);
    let from = a["start_90k"].as_i64().unwrap() + 90_000 + 30_000; // 1.33 s in: mid-GOP (GOP 1 s at 25 fps? no: 2 s)
    let to = b["start_90k"].as_i64().unwrap() + 2 * 90_000;
    let fmt = understudy::commands::time::format_90k;
    let out = setup.dir.path().join("export.mp4");
    setup.cli(&["export", "--channel", "1", "--from", &fmt(from), "--to", &fmt(to), "-o", out.to_str().unwrap()]);
    ffprobe_clean(&out).unwrap();
    ffmpeg_decodes(&out).unwrap();
    let (frames, _, _, dur) = probe(&out);
    // The clip has a key frame every 2 s and segments start on key frames, so the key frame at or
    // before `from` is the first one of segment a: the export starts at a's start.
    let expected = (to - a["start_90k"].as_i64().unwrap()) as f64 / 90_000.0;
    assert!((dur - expected).abs() < 0.25, "duration {dur} s, expected {expected} s");
    assert!((frames as f64 - expected * 25.0).abs() <= 3.0, "{frames} frames for {expected} s");
    // The first frame is a key frame.
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags", "-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).trim_start().starts_with('K'), "first packet is not a key frame: {:?}", String::from_utf8_lossy(&o.stdout));

    // Exporting from a segment's listed start (millisecond precision, its first frame a little
    // inside that millisecond) starts at that segment, not a GOP earlier.
    let b_start = b["start_90k"].as_i64().unwrap();
    let out2 = setup.dir.path().join("export-b.mp4");
    setup.cli(&["export", "--channel", "1", "--from", &fmt(b_start), "--to", &fmt(to), "-o", out2.to_str().unwrap()]);
    let (_, _, _, dur2) = probe(&out2);
    let expected2 = (to - b_start) as f64 / 90_000.0;
    assert!((dur2 - expected2).abs() < 0.25, "export from segment start: {dur2} s, expected {expected2} s");
    sim.shutdown().await;
}
