//! Live view (issue 10): `GET /api/channels/{n}/live` is a WebSocket of fMP4 (JSON header,
//! init segment, then each fragment as the writer completes it) that refuses callers without
//! the login, the channel or this server's origin; its fragments' decode times run on across
//! segment files (ffprobe reads init + fragments as one clean file with every frame), and the
//! operator page plays them in headless Chromium through MSE with `currentTime` advancing.
//! `live.m3u8` is a sliding HLS playlist of the newest durable fragments that ffprobe reads;
//! `play.mp4?…&sign=1` answers a signed manifest that `understudy verify` accepts.
//! The latency measured in the browser is printed, not asserted.

mod cdp;
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use understudy::commands::time::format_90k;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens the live socket of `channel` with these extra headers; Err(status) when refused.
fn open_live(port: u16, channel: u32, headers: &[(&'static str, String)]) -> Result<Ws, u16> {
    let mut req = format!("ws://127.0.0.1:{port}/api/channels/{channel}/live").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tungstenite::connect(req) {
        Ok((ws, _)) => {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("live socket: {e}"),
    }
}

/// The child boxes of `buf`: (type, body).
fn boxes(mut buf: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 8 {
        let size = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert!(size >= 8 && size <= buf.len(), "bad box size {size}");
        out.push((buf[4..8].try_into().unwrap(), &buf[8..size]));
        buf = &buf[size..];
    }
    out
}

/// A live fragment's video `tfdt`, total sample duration and sample count (track 1).
fn video_timing(frag: &[u8]) -> (u64, u64, u64) {
    let top = boxes(frag);
    assert_eq!(&top[0].0, b"moof", "a fragment starts with moof");
    assert_eq!(&top[1].0, b"mdat", "then its mdat");
    let traf = boxes(top[0].1).into_iter().find(|(k, _)| k == b"traf").unwrap().1;
    let kids = boxes(traf);
    let tfdt = kids.iter().find(|(k, _)| k == b"tfdt").unwrap().1;
    let base = if tfdt[0] == 1 { u64::from_be_bytes(tfdt[4..12].try_into().unwrap()) } else { u64::from(u32::from_be_bytes(tfdt[4..8].try_into().unwrap())) };
    let trun = kids.iter().find(|(k, _)| k == b"trun").unwrap().1;
    let flags = u32::from_be_bytes(trun[..4].try_into().unwrap()) & 0xff_ffff;
    let count = u32::from_be_bytes(trun[4..8].try_into().unwrap()) as usize;
    let mut at = 8 + if flags & 1 != 0 { 4 } else { 0 } + if flags & 4 != 0 { 4 } else { 0 };
    let rec = [0x100, 0x200, 0x400, 0x800].iter().filter(|&&f| flags & f != 0).count() * 4;
    assert!(flags & 0x100 != 0, "durations per sample");
    let mut dur = 0;
    for _ in 0..count {
        dur += u64::from(u32::from_be_bytes(trun[at..at + 4].try_into().unwrap()));
        at += rec;
    }
    (base, dur, count as u64)
}

fn frames_in(path: &std::path::Path) -> u64 {
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_websocket_mse_and_hls() {
    cdp::chromium_path(); // fail fast when the browser is missing
    let sim = camsim(&[H264, H265]).await;
    let cams = format!(
        "[[camera]]\nchannel = 1\nurl = \"{}\"\n\n[[camera]]\nchannel = 2\nurl = \"{}\"\n",
        sim.url(1),
        sim.url(2)
    );
    let setup = Setup::new(2, "segment_duration = \"2s\"\ntls = false", &cams);
    setup.add_user("viewer2", "viewer", "2", "viewer-password-2");
    let viewer2 = setup.create_token(&["--user", "viewer2"]);
    let _child = setup.spawn_run();
    let bearer = format!("Bearer {}", setup.token);
    let ok = wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| !r.is_empty())).await;
    assert!(ok, "channel 1 never recorded\n{}", setup.log());

    // Refusals: no login, a user without the channel, another site's page.
    assert_eq!(open_live(setup.api, 1, &[]).err(), Some(401));
    assert_eq!(open_live(setup.api, 1, &[("Authorization", format!("Bearer {viewer2}"))]).err(), Some(403));
    assert_eq!(open_live(setup.api, 1, &[("Authorization", bearer.clone()), ("Origin", "http://evil.example".into())]).err(), Some(403));

    // Header, init, then fragments for > 5 s: across at least two segment-file boundaries.
    let mut ws = open_live(setup.api, 1, &[("Authorization", bearer.clone())]).expect("live socket opens");
    let header = match ws.read().unwrap() {
        Message::Text(t) => serde_json::from_str::<serde_json::Value>(&t).unwrap(),
        other => panic!("first message is the JSON header, got {other:?}"),
    };
    assert!(header["codec"].as_str().unwrap().starts_with("avc1."), "{header}");
    assert!(header["mime"].as_str().unwrap().starts_with("video/mp4; codecs=\"avc1."), "{header}");
    let init = match ws.read().unwrap() {
        Message::Binary(b) => b,
        other => panic!("then the init segment, got {other:?}"),
    };
    assert_eq!(&init[4..8], b"ftyp");
    let segs_before = setup.recordings(1).len();
    let mut file = init.to_vec();
    let (mut frames, mut frags) = (0u64, 0usize);
    let mut next_tfdt = 0u64;
    let mut arrival = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        let b = match ws.read().unwrap() {
            Message::Binary(b) => b,
            Message::Text(t) => panic!("no new header expected (same parameters): {t}"),
            _ => continue,
        };
        let (base, dur, n) = video_timing(&b);
        // One timeline from the first fragment: each starts where the previous ended.
        assert_eq!(base, next_tfdt, "fragment {frags}: decode time continues the previous fragment's");
        next_tfdt = base + dur;
        frames += n;
        frags += 1;
        arrival.push(Instant::now());
        file.extend_from_slice(&b);
    }
    drop(ws);
    let segs_after = setup.recordings(1).len();
    assert!(segs_after >= segs_before + 2, "the fragments crossed segment files ({segs_before} → {segs_after})");
    assert!(frags >= 4, "{frags} fragments in 7 s");
    let path = setup.dir.path().join("live.mp4");
    std::fs::write(&path, &file).unwrap();
    ffprobe_clean(&path).unwrap();
    assert_eq!(frames_in(&path), frames, "ffprobe reads every frame sent live");
    let gaps: Vec<f64> = arrival.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    println!("live websocket: {frags} fragments, {frames} frames in 7 s; fragment inter-arrival max {:.2} s", gaps.iter().cloned().fold(0.0, f64::max));
    std::fs::remove_file(&path).unwrap();

    // live.m3u8: slides, keeps each entry's bytes under its sequence number, and ffprobe reads it.
    let proxy = setup.auth_proxy();
    let playlist = || {
        let (code, head, body) = http_request(&proxy, "/api/channels/1/live.m3u8", &[]).unwrap();
        assert_eq!(code, 200, "{head}");
        String::from_utf8(body).unwrap()
    };
    // (sequence number, byte range) of each entry.
    let entries = |pl: &str| -> Vec<(i64, String)> {
        let seq: i64 = pl.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap();
        pl.lines().filter_map(|l| l.strip_prefix("#EXT-X-BYTERANGE:")).enumerate().map(|(i, r)| (seq + i as i64, r.to_owned())).collect()
    };
    let p1 = playlist();
    assert!(p1.contains("#EXT-X-MAP:URI=") && !p1.contains("#EXT-X-ENDLIST"), "{p1}");
    std::thread::sleep(Duration::from_secs(3));
    let p2 = playlist();
    let (e1, e2) = (entries(&p1), entries(&p2));
    assert!(e1.len() >= 2 && e2.last().unwrap().0 > e1.last().unwrap().0, "the playlist slides:\n{p1}\n{p2}");
    let same_window = p1.lines().find(|l| l.starts_with("#EXT-X-MAP")) == p2.lines().find(|l| l.starts_with("#EXT-X-MAP"));
    if same_window {
        for (seq, range) in &e2 {
            if let Some((_, r1)) = e1.iter().find(|(s, _)| s == seq) {
                assert_eq!(r1, range, "entry {seq} kept its bytes:\n{p1}\n{p2}");
            }
        }
    }
    // play.mp4?…&sign=1: the signed manifest of exactly that file; `understudy verify` accepts
    // it beside the downloaded file and rejects a single changed byte.
    let rec = setup.recordings(1).into_iter().find(|r| r["open"] == false).expect("a closed segment");
    let q = format!("from={}&to={}", format_90k(rec["start_90k"].as_i64().unwrap()), format_90k(rec["end_90k"].as_i64().unwrap()));
    let (code, mp4_head, mp4) = http_request(&proxy, &format!("/api/channels/1/play.mp4?{q}"), &[]).unwrap();
    assert_eq!(code, 200, "{mp4_head}");
    let (code, head, body) = http_request(&proxy, &format!("/api/channels/1/play.mp4?{q}&sign=1"), &[]).unwrap();
    assert_eq!(code, 200, "{head}");
    let signed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // The signed file is the downloaded one: same ETag, in the answer and the manifest.
    let etag = header_value(&mp4_head, "etag").expect("play.mp4 sends an ETag");
    assert_eq!(signed["etag"].as_str(), Some(etag.as_str()), "{signed}");
    // A range that may still grow is not signed: `to` left out (now), or later than the
    // channel's last durable footage (the open segment's newest fragments, or the future).
    let from_only = format!("from={}", format_90k(rec["start_90k"].as_i64().unwrap()));
    let (code, _, body) = http_request(&proxy, &format!("/api/channels/1/play.mp4?{from_only}&sign=1"), &[]).unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(code == 400 && text.contains("explicit `to`"), "{code} {text}");
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 * 90 + 60 * 90_000;
    let (code, _, body) = http_request(&proxy, &format!("/api/channels/1/play.mp4?{from_only}&to={}&sign=1", format_90k(soon)), &[]).unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(code == 400 && text.contains("later than channel 1's last durable footage"), "{code} {text}");
    let file = setup.dir.path().join("export.mp4");
    std::fs::write(&file, &mp4).unwrap();
    std::fs::write(setup.dir.path().join("export.mp4.manifest.json"), signed["manifest"].as_str().unwrap()).unwrap();
    std::fs::write(setup.dir.path().join("export.mp4.sig"), signed["signature"].as_str().unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(signed["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["user"], "test", "{manifest}");
    assert_eq!(manifest["etag"].as_str(), Some(etag.as_str()), "{manifest}");
    // The camera that records onto channel 1, by owner and address, without credentials.
    let cam = &manifest["cameras"][0];
    assert_eq!((cam["owner"].as_str(), cam["source_channel"].as_u64()), (Some("local"), Some(1)), "{manifest}");
    assert_eq!(manifest["cameras"].as_array().unwrap().len(), 1, "{manifest}");
    assert!(sim.url(1).contains(cam["host"].as_str().unwrap()) && !cam["host"].as_str().unwrap().is_empty(), "{manifest}");
    assert_eq!(manifest["bytes"].as_u64().unwrap(), mp4.len() as u64, "{manifest}");
    let verify = |f: &std::path::Path| std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).arg("verify").arg(f).output().unwrap();
    let ok = verify(&file);
    assert!(ok.status.success(), "verify: {}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    let mut bad = mp4.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    assert!(!verify(&file).status.success(), "one changed byte is rejected");
    for f in ["export.mp4", "export.mp4.manifest.json", "export.mp4.sig"] {
        std::fs::remove_file(setup.dir.path().join(f)).unwrap();
    }
    // A viewer (no export permission) may play but not sign.
    let refused = setup
        .request("GET", &format!("/api/channels/2/play.mp4?{}&sign=1", q), &[format!("Authorization: Bearer {viewer2}")], b"")
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());

    let probe = std::process::Command::new("timeout")
        .args(["60", "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0"])
        .arg(format!("http://{proxy}/api/channels/1/live.m3u8"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success() && out.contains("h264,640"), "ffprobe of live.m3u8: {out} {}", String::from_utf8_lossy(&probe.stderr));

    // The operator page: a tile per channel recording, playing through MSE.
    let log = setup.dir.path().join("chromium.log");
    let mut b = cdp::Browser::open(&log);
    b.call("Page.navigate", json!({ "url": format!("http://{proxy}/") })).unwrap();
    b.wait_for("the page", Duration::from_secs(30), "document.readyState === 'complete'");
    b.wait_for(
        "channel 1 playing live",
        Duration::from_secs(45),
        "window.liveTiles && liveTiles.get(1) && liveTiles.get(1).player && liveTiles.get(1).player.state === 'playing' && liveTiles.get(1).video.currentTime > 0 || null",
    );
    let t0 = b.eval("liveTiles.get(1).video.currentTime").unwrap().as_f64().unwrap();
    b.wait_for("currentTime advancing", Duration::from_secs(30), &format!("liveTiles.get(1).video.currentTime > {t0} + 2 || null"));
    let mut lat = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(l) = b.eval("liveTiles.get(1).player.latencyMs").unwrap().as_f64() {
            lat.push(l);
        }
    }
    lat.sort_by(f64::total_cmp);
    let frags_in = b.eval("liveTiles.get(1).player.fragments").unwrap().as_u64().unwrap();
    assert!(frags_in >= 3, "MSE received {frags_in} fragments");
    println!(
        "live in Chromium (MSE): {frags_in} fragments appended; latency (wall clock − frame on screen) median {:.0} ms, max {:.0} ms",
        lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    // H.265: plays where the browser decodes it, else the tile says so (never a black picture).
    let h265 = b.wait_for(
        "channel 2 playing or explaining",
        Duration::from_secs(45),
        "(() => { const t = window.liveTiles && liveTiles.get(2); if (!t || !t.player) return null;
           if (t.player.state === 'unsupported') return 'message: ' + t.msg.textContent;
           if (t.player.state === 'playing' && t.video.currentTime > 1) return 'playing';
           return null; })()",
    );
    let h265 = h265.as_str().unwrap().to_owned();
    assert!(h265 == "playing" || h265.contains("H.265"), "{h265}");
    println!("channel 2 (H.265) in headless Chromium: {h265}");
    // The scrub bar shows the recorded span.
    b.wait_for("timeline spans", Duration::from_secs(20), "liveTiles.get(1).bar.querySelectorAll('.span').length > 0 || null");
    // A click at the bar's left edge (24 h ago, drawn a while back) plays recorded footage
    // (the range is kept within 24 h, so no 400), and the clock starts at the file's first
    // frame as the server says (X-Understudy-Start), not at the time clicked.
    let first_ms = setup.recordings(1)[0]["start_90k"].as_i64().unwrap().div_euclid(90);
    b.eval("(() => { const t = liveTiles.get(1); const r = t.bar.getBoundingClientRect(); t.bar.dispatchEvent(new MouseEvent('click', { clientX: r.left, clientY: r.top + 1, bubbles: true })); return true; })()").unwrap();
    let start = b.wait_for(
        "recorded playback from its first frame",
        Duration::from_secs(30),
        "(() => { const t = liveTiles.get(1); if (t.mode !== 'recorded') return null; if (t.video.error) return 'video error ' + t.video.error.code;
           return t.video.readyState > 0 && t.recordedFromMs > Date.now() - 3600000 ? t.recordedFromMs : null; })()",
    );
    assert!(start.as_f64().is_some_and(|ms| (ms - first_ms as f64).abs() <= 1.0), "clock origin {start}, first frame at {first_ms} ms");
    assert!(b.page_errors.is_empty(), "page errors: {:?}", b.page_errors);
    drop(b);
}
