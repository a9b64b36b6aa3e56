//! Recorded audio plays in a real headless Chromium (issue 8): AAC and G.711 (stored as FLAC)
//! cameras served by GStreamer's RTSP server, played from `GET /api/channels/{n}/play.mp4` in
//! a `<video>` element; Chromium's decoded-audio counter must grow.

mod cdp;
mod common;

use std::time::Duration;

use serde_json::json;

use common::*;

#[test]
fn recorded_aac_and_g711_audio_plays_in_chromium() {
    cdp::chromium_path(); // fail fast, before recording, when the browser is missing
    let aac = GstServer::start_with("h264", "320x240", "aac");
    let pcmu = GstServer::start_with("h264", "320x240", "pcmu");
    let cams = format!(
        "[[camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:{}/cam\"\n\n[[camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:{}/cam\"\n",
        aac.port, pcmu.port
    );
    let setup = Setup::new(2, "segment_duration = \"4s\"\ntls = false", &cams);
    // A plain <video src> sends no token: the page is reached through a proxy adding the
    // admin's (authentication itself is tests/security.rs's).
    let proxy = setup.auth_proxy();
    let mut child = setup.spawn_run();
    let ok = wait_until(Duration::from_secs(60), || {
        (1..=2).all(|ch| {
            setup
                .api_get(&format!("/api/channels/{ch}/recordings"))
                .and_then(|v| v["recordings"].as_array().map(|a| a.iter().any(|s| s["open"] == false && s["audio"].is_string())))
                .unwrap_or(false)
        })
    });
    assert!(ok, "no closed segment with audio on both channels\n{}", setup.log());

    let log = setup.dir.path().join("chromium.log");
    let mut b = cdp::Browser::open(&log);
    // The operator page gives the player the API's origin.
    b.call("Page.navigate", json!({ "url": format!("http://{proxy}/") })).unwrap();
    b.wait_for("the page", Duration::from_secs(30), "document.readyState === 'complete'");
    for (ch, codec) in [(1, "mp4a.40.2"), (2, "flac")] {
        let seg = &setup.api_get(&format!("/api/channels/{ch}/recordings")).unwrap()["recordings"][0];
        let src = format!("/api/channels/{ch}/play.mp4?from={}&to={}", seg["start"].as_str().unwrap(), seg["end"].as_str().unwrap());
        // A plain <video src>: plays (muted, as autoplay allows) until audio has been decoded.
        b.eval(&format!(
            "window.v = document.createElement('video'); v.muted = true; v.src = {src:?}; document.body.append(v); v.play().then(() => 'playing')"
        ))
        .unwrap();
        let decoded = b.wait_for(
            &format!("channel {ch}: decoded audio in <video>"),
            Duration::from_secs(30),
            "v.webkitAudioDecodedByteCount > 0 && v.webkitVideoDecodedByteCount > 0 ? v.webkitAudioDecodedByteCount : null",
        );
        assert!(decoded.as_u64().unwrap() > 0);
        // Both tracks decoded together: the audio played beside the video, not before or alone.
        let (a, t) = (b.eval("v.webkitAudioDecodedByteCount").unwrap(), b.eval("v.currentTime").unwrap());
        assert!(a.as_u64().unwrap() > 0 && t.as_f64().unwrap() > 0.0, "channel {ch} ({codec}): {a} {t}");
        b.eval("v.pause(); v.remove(); true").unwrap();
    }
    assert!(b.page_errors.is_empty(), "page errors: {:?}", b.page_errors);
    drop(b);
    sigterm(&mut child);
}
