//! camsim with retina as the client: looping, continuity, and injected faults.

mod camsim_util;

use std::time::Duration;

use camsim_util::{dimensions, frame, next_frame, play, start, Next};
use understudy::camsim::{find_camsim_tags, Fault, Pacing};

/// More than two loops of the 150-frame clip in fast mode: timestamps advance by exactly one
/// frame (3600 at 90 kHz) across the loop points, no loss, and every frame carries its tag.
#[tokio::test]
async fn loops_with_continuous_timestamps() {
    let sim = start("h264-360p25-small.mp4", 2, Pacing::Fast, None).await;
    let mut d = play(&sim.url(2), None).await.unwrap();
    assert_eq!(dimensions(&d), Some((640, 360)), "parameters from the SDP");
    let mut last_ts = None;
    let mut key_frames = 0;
    for i in 0..(150 * 2 + 40) {
        let f = frame(&mut d).await;
        assert_eq!(f.loss(), 0, "frame {i}");
        let ts = f.timestamp().timestamp();
        if let Some(prev) = last_ts {
            assert_eq!(
                ts - prev,
                3600,
                "frame {i}: timestamps strictly increase, one frame apart"
            );
        }
        last_ts = Some(ts);
        assert_eq!(i % 50 == 0, f.is_random_access_point(), "frame {i}");
        key_frames += usize::from(f.is_random_access_point());
        assert!(!f.has_new_parameters(), "in-band SPS/PPS equal the SDP's");
        assert_eq!(find_camsim_tags(f.data()), vec![(2, i as u64)], "frame {i}");
    }
    assert_eq!(key_frames, 7);
    let stats = sim.stats();
    let cam2 = stats.camera(2).unwrap();
    assert_eq!((cam2.sessions, cam2.active_sessions), (1, 1));
    assert!(cam2.frames_sent >= 340);
    assert_eq!(stats.camera(1).unwrap().frames_sent, 0);
    drop(d);
    sim.shutdown().await;
}

/// H.265 in realtime: paced at about 25 fps, tags present.
#[tokio::test]
async fn h265_realtime_pacing() {
    let sim = start("h265-720p25.mp4", 1, Pacing::Realtime, None).await;
    let mut d = play(&sim.url(1), None).await.unwrap();
    assert_eq!(dimensions(&d), Some((1280, 720)));
    let started = std::time::Instant::now();
    for i in 0..50u64 {
        let f = frame(&mut d).await;
        assert_eq!(f.loss(), 0);
        assert_eq!(find_camsim_tags(f.data()), vec![(1, i)]);
    }
    // 50 frames span 1.96 s of media; realtime pacing cannot deliver them much faster.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1800), "took {took:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn stall_keeps_connection_open_without_frames() {
    let sim = start("h264-360p25-small.mp4", 1, Pacing::Realtime, None).await;
    let mut d = play(&sim.url(1), None).await.unwrap();
    for _ in 0..5 {
        frame(&mut d).await;
    }
    sim.inject(1, Fault::Stall);
    // At most the frame in flight arrives; then a silence.
    let mut late = 0;
    loop {
        match next_frame(&mut d, Duration::from_secs(2)).await {
            Next::Frame(_) => late += 1,
            Next::Timeout => break,
            Next::Error(e) => panic!("stalled session errored: {e}"),
            Next::End => panic!("stalled session ended"),
        }
        assert!(late < 5, "frames keep coming after Stall");
    }
    assert!(matches!(
        next_frame(&mut d, Duration::from_secs(2)).await,
        Next::Timeout
    ));
    let stats = sim.stats();
    assert_eq!(stats.total.active_sessions, 1, "connection still open");
    // A new session of the same camera plays normally.
    let mut d2 = play(&sim.url(1), None).await.unwrap();
    assert_eq!(find_camsim_tags(frame(&mut d2).await.data()), vec![(1, 0)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_mid_gop_ends_the_stream() {
    let sim = start("h264-720p25.mp4", 1, Pacing::Realtime, None).await;
    let mut d = play(&sim.url(1), None).await.unwrap();
    for _ in 0..3 {
        frame(&mut d).await;
    }
    sim.inject(1, Fault::DropMidGop);
    let mut after = 0;
    loop {
        match next_frame(&mut d, Duration::from_secs(10)).await {
            Next::Frame(f) => {
                after += 1;
                assert!(!f.is_random_access_point(), "dropped before the next GOP");
            }
            Next::Error(_) | Next::End => break,
            Next::Timeout => panic!("stream neither ended nor errored"),
        }
    }
    assert!(after < 10, "{after} frames after DropMidGop");
    let mut d2 = play(&sim.url(1), None).await.unwrap();
    assert!(frame(&mut d2).await.is_random_access_point());
    sim.shutdown().await;
}

#[tokio::test]
async fn change_params_switches_resolution_in_band() {
    let sim = start("h264-720p25.mp4", 1, Pacing::Realtime, None).await;
    let mut d = play(&sim.url(1), None).await.unwrap();
    assert_eq!(dimensions(&d), Some((1280, 720)));
    let mut last_ts = frame(&mut d).await.timestamp().timestamp();
    sim.inject(1, Fault::ChangeParams);
    let mut seen = false;
    for _ in 0..25 {
        let f = frame(&mut d).await;
        let ts = f.timestamp().timestamp();
        assert_eq!(ts - last_ts, 3600, "timestamps continue across the switch");
        last_ts = ts;
        if f.has_new_parameters() {
            assert!(f.is_random_access_point());
            seen = true;
            break;
        }
    }
    assert!(seen, "a frame with new parameters");
    // The sibling fixture with the smallest picture: 640x360.
    assert_eq!(dimensions(&d), Some((640, 360)));
    // New sessions describe the new clip.
    let d2 = play(&sim.url(1), None).await.unwrap();
    assert_eq!(dimensions(&d2), Some((640, 360)));
    sim.shutdown().await;
}

#[tokio::test]
async fn reject_auth_gives_401_then_recovers() {
    let sim = start("h264-360p25-small.mp4", 2, Pacing::Realtime, None).await;
    sim.inject(1, Fault::RejectAuth);
    let e = play(&sim.url(1), None).await.err().expect("401");
    assert_eq!(e.status_code(), Some(401), "{e}");
    // Other cameras are unaffected.
    let mut d = play(&sim.url(2), None).await.unwrap();
    frame(&mut d).await;
    // After ~5 s the camera accepts DESCRIBE again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut d1 = play(&sim.url(1), None).await.unwrap();
    assert_eq!(find_camsim_tags(frame(&mut d1).await.data()), vec![(1, 0)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_does_not_break_new_sessions() {
    let sim = start("h264-360p25-small.mp4", 1, Pacing::Realtime, None).await;
    let mut d = play(&sim.url(1), None).await.unwrap();
    frame(&mut d).await;
    let before = sim.stats().total.bytes_sent;
    sim.inject(1, Fault::Garbage);
    // Retina may reject the garbage (an error) or skip it; either way it must not hang.
    let mut outcome = "frames";
    for _ in 0..10 {
        match next_frame(&mut d, Duration::from_secs(10)).await {
            Next::Frame(_) => {}
            Next::Error(_) => {
                outcome = "error";
                break;
            }
            Next::End => {
                outcome = "end";
                break;
            }
            Next::Timeout => panic!("session hung after garbage"),
        }
    }
    eprintln!("retina after garbage: {outcome}");
    assert!(
        sim.stats().total.bytes_sent > before + 500,
        "garbage burst was sent"
    );
    let mut d2 = play(&sim.url(1), None).await.unwrap();
    for i in 0..5u64 {
        let f = frame(&mut d2).await;
        assert_eq!((f.loss(), find_camsim_tags(f.data())), (0, vec![(1, i)]));
    }
    sim.shutdown().await;
}
