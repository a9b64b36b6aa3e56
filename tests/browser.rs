//! Browser playback: footage recorded by `understudy run` plays in a real headless Chromium
//! from `GET /api/channels/{n}/play.mp4` (fragmented MP4, ISO/IEC 14496-12 §8.8, served
//! with HTTP Range, RFC 9110 §14): duration, decoded pixels, playback and seeking.
//!
//! Chromium is Debian's (`apt-get install chromium`, done by `tests/run-all.sh`). The page
//! is served by a tiny HTTP listener in this test and POSTs what it measured back to it.

mod cdp;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use understudy::commands::time::format_90k;

/// A headless Chromium showing `url`, sending `token` as a bearer token with every request
/// (see tests/cdp for the shared launch and clean-up).
struct Browser(cdp::Browser);

impl Browser {
    fn open(url: &str, token: &str, log: &Path) -> Browser {
        // Lets the page read back pixels of the video, which comes from another origin (the
        // API's port) that sends no CORS headers.
        let mut b = cdp::Browser::open_with(&["--disable-web-security"], log);
        b.call("Network.enable", serde_json::json!({})).unwrap();
        b.call("Network.setExtraHTTPHeaders", serde_json::json!({ "headers": { "Authorization": format!("Bearer {token}") } }))
            .unwrap();
        b.call("Page.navigate", serde_json::json!({ "url": url })).unwrap();
        Browser(b)
    }

    fn log_tail(&self) -> String {
        self.0.log_tail()
    }
}

/// What the page reported: progress lines and the final result.
#[derive(Default)]
struct Reports {
    log: Vec<String>,
    result: Option<serde_json::Value>,
}

/// Serves the test page at `/` and takes `POST /log` and `POST /result` from it.
fn serve_page(html: String, reports: Arc<Mutex<Reports>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (html, reports) = (html.clone(), reports.clone());
            std::thread::spawn(move || handle(conn, &html, &reports));
        }
    });
    port
}

fn handle(conn: TcpStream, html: &str, reports: &Mutex<Reports>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&body).to_string();
    let (status, ctype, out) = match (method.as_str(), path.as_str()) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", html.to_owned()),
        ("POST", "/log") => {
            reports.lock().unwrap().log.push(text);
            ("204 No Content", "text/plain", String::new())
        }
        ("POST", "/result") => {
            let v = serde_json::from_str(&text).unwrap_or_else(
                |e| serde_json::json!({ "unparsable": text, "error": e.to_string() }),
            );
            reports.lock().unwrap().result = Some(v);
            ("204 No Content", "text/plain", String::new())
        }
        _ => ("404 Not Found", "text/plain", String::new()),
    };
    let mut w = &conn;
    let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len());
}

/// The page: plays `src` muted, waits for >1.2 s of playback, samples three colour bars of the
/// decoded picture, seeks to the middle and waits for playback to go on after `seeked`.
fn page(src: &str) -> String {
    const SCRIPT: &str = r#"
const v = document.getElementById('v');
const T = 60000;
let frames = 0;
const post = (p, body) => fetch(p, { method: 'POST', body }).catch(() => {});
const note = (s) => post('/log', (performance.now() / 1000).toFixed(2) + ' s: ' + s + ' (t=' + v.currentTime.toFixed(2) + ' rs=' + v.readyState + ' frames=' + frames + ')');
['loadedmetadata', 'loadeddata', 'canplay', 'playing', 'waiting', 'stalled', 'seeking', 'seeked', 'ended', 'error'].forEach((e) => v.addEventListener(e, () => note(e)));
if (v.requestVideoFrameCallback) { const tick = () => { frames++; v.requestVideoFrameCallback(tick); }; v.requestVideoFrameCallback(tick); }
const mediaError = () => v.error && new Error('media error ' + v.error.code + ': ' + v.error.message);
function until(cond, what) {
  return new Promise((ok, fail) => {
    const t0 = performance.now();
    const id = setInterval(() => {
      const e = mediaError();
      if (e || cond() || performance.now() - t0 > T) {
        clearInterval(id);
        if (e) fail(e); else if (cond()) ok(); else fail(new Error('timed out waiting for ' + what));
      }
    }, 50);
  });
}
function once(ev) {
  return new Promise((ok, fail) => {
    const to = setTimeout(() => fail(new Error('no ' + ev + ' event within ' + T + ' ms')), T);
    v.addEventListener(ev, () => { clearTimeout(to); ok(); }, { once: true });
  });
}
// Fraction of a column's pixels with the colour of the bar it crosses (testsrc2: red, green, blue bars).
function bars() {
  const c = document.getElementById('c').getContext('2d', { willReadFrequently: true });
  c.drawImage(v, 0, 0, 640, 360);
  const frac = (x, f) => {
    const d = c.getImageData(x, 0, 1, 360).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (f(d[i], d[i + 1], d[i + 2])) n++;
    return n / 360;
  };
  return {
    red: frac(50, (r, g, b) => r > 150 && g < 100 && b < 100),
    green: frac(160, (r, g, b) => g > 150 && r < 100 && b < 100),
    blue: frac(370, (r, g, b) => b > 150 && r < 100 && g < 100),
  };
}
async function main() {
  const r = {};
  try {
    v.src = SRC;
    await until(() => v.currentTime > 1.2, 'playback past 1.2 s');
    Object.assign(r, { ready_state: v.readyState, duration: String(v.duration), width: v.videoWidth, height: v.videoHeight, played_to: v.currentTime, frames_before_seek: frames });
    try { r.bars = bars(); } catch (e) { r.bars_error = String(e); }
    const target = v.duration / 2;
    const seeked = once('seeked');
    v.currentTime = target;
    await seeked;
    Object.assign(r, { seek_target: target, after_seek: v.currentTime });
    const f0 = frames;
    await until(() => v.currentTime > target + 1.0 && frames > f0 + 10, 'playback 1 s past the seek target');
    Object.assign(r, { played_after_seek_to: v.currentTime, frames_after_seek: frames - f0, paused: v.paused });
  } catch (e) {
    r.failure = String(e);
  }
  r.error_code = v.error ? v.error.code : null;
  r.error_message = v.error ? v.error.message : null;
  const q = v.getVideoPlaybackQuality();
  r.total_video_frames = q.totalVideoFrames;
  r.dropped_video_frames = q.droppedVideoFrames;
  document.getElementById('out').textContent = JSON.stringify(r);
  await post('/result', JSON.stringify(r));
}
main();
"#;
    format!(
        "<!doctype html><html><body style=\"margin:0;background:#000\">\
         <video id=\"v\" muted autoplay playsinline width=\"640\" height=\"360\"></video>\
         <canvas id=\"c\" width=\"640\" height=\"360\" style=\"display:none\"></canvas><pre id=\"out\"></pre>\
         <script>const SRC = {};{SCRIPT}</script></body></html>",
        serde_json::Value::String(src.to_owned())
    )
}

fn at(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Acceptance: a range spanning two recorded segments, starting mid-GOP, plays in Chromium:
/// no media error, 640x360, the duration the catalog implies (from the key frame at or before
/// `from`), real colour bars decoded, playback advances, and a seek to the middle plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_footage_plays_and_seeks_in_chromium() {
    cdp::chromium_path(); // fail fast, before recording, when the browser is missing
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(
        1,
        "segment_duration = \"4s\"",
        &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)),
    );
    let mut child = setup.spawn_run();
    // The first segment is cut short (rotation follows the wall clock), so wait for two full
    // closed 4 s segments after it: ~8 s of footage across a segment boundary.
    let mut recs = Vec::new();
    let ok = wait_until_async(Duration::from_secs(90), || {
        recs = setup.try_recordings(1).unwrap_or_default();
        recs.len() >= 4
    })
    .await;
    assert!(
        ok,
        "never got three closed segments: {recs:?}\n{}",
        setup.log()
    );
    let (s0, s1) = (&recs[1], &recs[2]);
    assert_eq!(s0["open"], false, "{recs:?}");
    assert_eq!(s1["open"], false, "{recs:?}");
    let start0 = s0["start_90k"].as_i64().unwrap();
    let end1 = s1["end_90k"].as_i64().unwrap();
    // `from` 1 s into the first segment, i.e. mid-GOP (the clip has a key frame every 2 s and
    // segments start at key frames), so the export must start at the segment's first frame.
    let from = start0 + 90_000;
    let to = end1 - 45_000;
    assert!(
        from < s0["end_90k"].as_i64().unwrap() && to > s1["start_90k"].as_i64().unwrap() + 90_000,
        "range does not span both segments: {recs:?}"
    );
    let expected = (to - start0) as f64 / 90_000.0;
    let src = format!(
        "https://127.0.0.1:{}/api/channels/1/play.mp4?from={}&to={}",
        setup.api,
        format_90k(from),
        format_90k(to)
    );

    let reports = Arc::new(Mutex::new(Reports::default()));
    let port = serve_page(page(&src), reports.clone());
    // A viewer of channel 1 only plays it, with a token of her own.
    setup.add_user("alice", "viewer", "1", "alice-password");
    let alice = setup.create_token(&["--user", "alice"]);
    let browser = Browser::open(
        &format!("http://127.0.0.1:{port}/"),
        &alice,
        &setup.dir.path().join("chromium.log"),
    );
    let t0 = Instant::now();
    let result = loop {
        if let Some(r) = reports.lock().unwrap().result.clone() {
            break Some(r);
        }
        if t0.elapsed() > Duration::from_secs(180) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let page_log = reports.lock().unwrap().log.join("\n");
    let context = format!(
        "src {src}\npage log:\n{page_log}\nchromium log:\n{}",
        browser.log_tail()
    );
    let r = result.unwrap_or_else(|| panic!("the page reported nothing within 180 s\n{context}"));
    drop(browser);
    eprintln!("segments: {recs:?}\npage result: {r}\nexpected duration {expected:.3} s\n{context}");
    sigterm(&mut child);
    sim.shutdown().await;

    // The audit trail: the player's many Range requests are one playback entry, with who,
    // which channel and which range.
    let audit: Vec<serde_json::Value> = setup.cli(&["audit", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let plays: Vec<_> = audit.iter().filter(|e| e["action"] == "playback").collect();
    assert_eq!(plays.len(), 1, "one playback entry expected: {audit:#?}");
    let e = plays[0];
    assert_eq!((e["user"].as_str(), e["channel"].as_u64(), e["result"].as_str()), (Some("alice"), Some(1), Some("ok")), "{e}");
    assert!(e["token"].as_i64().is_some() && e["ip"] == "127.0.0.1" && e["bytes"].as_u64().is_some_and(|b| b > 100_000), "{e}");
    assert_eq!((e["detail"]["from"].as_str(), e["detail"]["to"].as_str()), (Some(format_90k(from).as_str()), Some(format_90k(to).as_str())), "{e}");
    setup.cli(&["audit", "--verify"]);

    assert!(
        r["failure"].is_null() && r["error_code"].is_null(),
        "playback failed: {r}\n{context}"
    );
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    assert!(
        at(&r, "ready_state") >= 2.0,
        "no current frame while playing: {r}"
    );
    let duration: f64 = r["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(f64::NAN);
    assert!(
        (duration - expected).abs() <= 0.5,
        "duration {duration} s, catalog says {expected:.3} s (key frame at {} to {}): {r}\n{context}",
        format_90k(start0),
        format_90k(to)
    );
    assert!(at(&r, "played_to") > 1.2, "{r}");
    let bars = &r["bars"];
    for c in ["red", "green", "blue"] {
        assert!(
            bars[c].as_f64().is_some_and(|f| f > 0.5),
            "decoded picture lacks the {c} bar: {r}"
        );
    }
    let target = at(&r, "seek_target");
    assert!(
        (at(&r, "after_seek") - target).abs() < 0.5,
        "seek landed elsewhere: {r}"
    );
    assert!(at(&r, "played_after_seek_to") > target + 1.0, "{r}");
    assert!(
        at(&r, "frames_after_seek") > 10.0,
        "no frames shown after the seek: {r}"
    );
}
