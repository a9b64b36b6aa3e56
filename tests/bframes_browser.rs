//! A recording with B-frames plays in a real headless Chromium (issue 8): camsim's H.264 clip
//! with B-frames, recorded by `understudy run` into several segments, played from
//! `GET /api/channels/{n}/play.mp4` across a segment boundary in a `<video>` element.

mod cdp;
mod common;

use std::time::Duration;

use serde_json::json;

use common::*;

#[test]
fn b_frame_recording_plays_in_chromium() {
    cdp::chromium_path(); // fail fast, before recording, when the browser is missing
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sim = rt.block_on(camsim(&["h264-bframes-360p25.mp4"]));
    let setup = Setup::new(1, "segment_duration = \"2s\"\ntls = false", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    // A plain <video src> sends no token: the page is reached through a proxy adding the
    // admin's (authentication itself is tests/security.rs's).
    let proxy = setup.auth_proxy();
    let mut child = setup.spawn_run();
    let closed = || setup.try_recordings(1).map(|r| r.into_iter().filter(|s| s["open"] == false).collect::<Vec<_>>()).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(60), || closed().len() >= 3), "fewer than 3 closed segments\n{}", setup.log());
    let segs = closed();
    let time = |r: &serde_json::Value, k: &str| understudy::commands::time::format_90k(r[k].as_i64().unwrap());
    let (from, to) = (time(&segs[0], "start_90k"), time(&segs[2], "end_90k"));
    let src = format!("/api/channels/1/play.mp4?from={from}&to={to}");
    // The export of the same range has B-frames (decode and presentation order differ), so
    // this is a B-frame file and not a degraded one.
    let out = setup.dir.path().join("export.mp4");
    setup.cli(&["export", "--channel", "1", "--from", &from, "--to", &to, "-o", out.to_str().unwrap()]);
    let p = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let pkts: Vec<Vec<i64>> = String::from_utf8_lossy(&p.stdout).lines().map(|l| l.split(',').filter_map(|x| x.parse().ok()).collect()).collect();
    assert!(pkts.iter().any(|v| v.len() == 2 && v[0] > v[1]), "the export holds no reordered frame: {pkts:?}");

    let log = setup.dir.path().join("chromium.log");
    let mut b = cdp::Browser::open(&log);
    b.call("Page.navigate", json!({ "url": format!("http://{proxy}/") })).unwrap();
    b.wait_for("the page", Duration::from_secs(30), "document.readyState === 'complete'");
    b.eval(&format!(
        "window.v = document.createElement('video'); v.muted = true; v.src = {src:?}; document.body.append(v); v.play().then(() => 'playing')"
    ))
    .unwrap();
    // Past the first segment boundary (2 s), with pictures decoded and no media error.
    let r = b.wait_for(
        "playback past 2.5 s",
        Duration::from_secs(40),
        "v.error ? { error: v.error.code, message: v.error.message } : (v.currentTime > 2.5 ? { t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, w: v.videoWidth } : null)",
    );
    assert!(r["error"].is_null(), "media error: {r}");
    assert!(r["frames"].as_u64().unwrap() >= 50 && r["w"] == 640, "{r}");
    let t0 = r["t"].as_f64().unwrap();
    // It keeps advancing (the export lasts ~6 s).
    let later = b.wait_for("currentTime advancing", Duration::from_secs(20), &format!("v.error ? {{ error: v.error.code }} : (v.currentTime > {t0} + 1.5 ? {{ t: v.currentTime }} : null)"));
    assert!(later["error"].is_null(), "media error: {later}");
    assert!(b.page_errors.is_empty(), "page errors: {:?}", b.page_errors);
    drop(b);
    sigterm(&mut child);
    rt.block_on(sim.shutdown());
}
