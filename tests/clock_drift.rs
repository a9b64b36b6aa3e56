//! Cameras whose RTP clock runs fast or slow against wall time (camsim `--clock-ppm`), recorded
//! by `understudy run` (issue 8). Arrival time bounds capture time, so a fast clock (camera 1,
//! 5 % fast) is followed by moving the mapping back as frames arrive: its footage is never
//! stamped after it arrived, and its runs never overlap. A slow clock (camera 2, 5 % slow) is
//! slewed at most 500 ppm, so it drifts past the 1 s threshold within about 20 s: the run ends
//! and re-anchors to wall time with a `time_reanchored` event. Recordings stay within 1 s of
//! wall time and no sample lasts under 1 ms or over 10 s. (The 2,000 ppm takes ~11 min
//! to cross 1 s after slewing; `recorder/src/timeline.rs` tests it with synthetic clocks.)

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use understudy::camsim::{CamSim, CamSimConfig, CameraSpec, Pacing};

/// 5 %: with 500 ppm of slew the error still grows ~1 s every 20 s.
const PPM: i32 = 50_000;

/// Decode times of the video packets, 90 kHz.
fn dts(path: &Path) -> Vec<i64> {
    ffprobe_video_csv(path, "packet=dts").iter().filter_map(|l| l.parse().ok()).collect()
}

/// Acceptance (issue 8, timestamp faults): a fast (camera 1) and a slow (camera 2) clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifting_clocks_reanchor_to_wall_time() {
    let mut fast = CameraSpec::new(1, fixture(H264));
    fast.clock_ppm = PPM;
    let mut slow = CameraSpec::new(2, fixture(H264));
    slow.clock_ppm = -PPM;
    let sim = CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        cameras: vec![fast, slow],
        pacing: Pacing::Realtime,
        auth: None,
        session_timeout: Duration::from_secs(60),
    })
    .await
    .expect("camsim starts");
    let cams: String = (1..=2).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect();
    let setup = Setup::new(2, "segment_duration = \"10s\"", &cams);
    let started = understudy::commands::time::now_90k();
    let mut child = setup.spawn_run();
    let ok = wait_until_async(Duration::from_secs(30), || (1..=2).all(|ch| !setup.segment_files(ch).is_empty())).await;
    assert!(ok, "no recording: {}", setup.log());
    // Until the slow channel re-anchored at least once (about 20 s; generous for a loaded box).
    let reanchors = |ch: i64| -> usize {
        setup.api_get("/api/events?limit=1000").map_or(0, |e| {
            e["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "time_reanchored" && e["channel"] == ch).count()
        })
    };
    let ok = wait_until_async(Duration::from_secs(60), || reanchors(2) >= 1).await;
    let fast_reanchors = reanchors(1);
    sigterm(&mut child);
    assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some(), "understudy did not stop");
    let ended = understudy::commands::time::now_90k();
    assert!(ok, "no time_reanchored event on the slow channel within 60 s: {}", setup.log());
    eprintln!("fast clock: {fast_reanchors} re-anchors; slow clock: {} re-anchors", reanchors(2));

    for ch in 1..=2 {
        let mut recs = setup.recordings(ch);
        assert!(recs.len() >= 2, "channel {ch}: segments: {recs:?}");
        recs.sort_by_key(|r| r["start_90k"].as_i64());
        for r in &recs {
            let (s, e) = (r["start_90k"].as_i64().unwrap(), r["end_90k"].as_i64().unwrap());
            // Nothing before the start; nothing in the future (0.1 s: the last frame's
            // duration is a guess, and placement may be 2 ms after arrival).
            assert!(s >= started - 90_000, "channel {ch}: {r} starts before the run ({started})");
            assert!(e <= ended + 9_000, "channel {ch}: {r} ends after {ended} (stopped) + 0.1 s");
        }
        // Runs never overlap (a re-anchored run used to start before the previous one ended
        // when a fast clock had been placed ahead of wall time).
        for w in recs.windows(2) {
            let (end, next) = (w[0]["end_90k"].as_i64().unwrap(), w[1]["start_90k"].as_i64().unwrap());
            assert!(next >= end - 3_600, "channel {ch}: {} overlaps {}", w[1], w[0]);
        }
        for f in setup.segment_files(ch) {
            ffmpeg_decodes(&f).unwrap();
            for w in dts(&f).windows(2) {
                let d = w[1] - w[0];
                assert!((90..=900_000).contains(&d), "{}: sample duration {d} ticks", f.display());
            }
        }
    }
    sim.shutdown().await;
}
