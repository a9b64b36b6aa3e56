//! Playback at real sizes: `play.mp4` is a virtual MP4 (byte-identical for any split of Range
//! requests, the catalog's frame count, nothing copied under `state_dir`), answers a short
//! range while a long one is stalled half-read; a change of codec parameters ends the file and
//! says where (`X-Understudy-Stopped-At`, the CLI's warning), `X-Understudy-Start` names the
//! key frame it starts at; `vod.m3u8` plays in ffmpeg with the catalog's frames, in VLC
//! and in the vendored hls.js in headless Chromium; signed exports verify and tampering fails.

mod cdp;
mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use understudy_storage::{InputFrame, Store, StoreConfig, TrackParams, VolumeConfig};

use common::*;
use understudy::commands::time::format_90k;

const H264: &str = "h264-720p25.mp4";

fn frames_in(path: &std::path::Path) -> (u64, String) {
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "warning", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
    (n, String::from_utf8_lossy(&o.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_mp4_and_hls_vod() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "segment_duration = \"2s\"\ntls = false", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let _child = setup.spawn_run();
    let mut recs = Vec::new();
    let ok = wait_until_async(Duration::from_secs(90), || {
        recs = setup.try_recordings(1).unwrap_or_default();
        recs.len() >= 5
    })
    .await;
    assert!(ok, "never got four closed segments: {recs:?}\n{}", setup.log());
    // Plain HTTP on loopback through a proxy adding the admin's token: VLC and ffmpeg's HLS
    // reader cannot send one (authentication itself is tests/security.rs's).
    let addr = setup.auth_proxy();
    // Three closed segments, whole: the catalog says how many frames they hold.
    let (a, c) = (&recs[1], &recs[3]);
    let from = a["start_90k"].as_i64().unwrap();
    let to = c["end_90k"].as_i64().unwrap();
    let catalog_frames: u64 = recs[1..=3].iter().map(|r| r["frames"].as_u64().unwrap()).sum();
    let url = format!("/api/channels/1/play.mp4?from={}&to={}", format_90k(from), format_90k(to));

    let (code, head, whole) = http_request(&addr, &url, &[]).unwrap();
    assert_eq!(code, 200, "{head}");
    let etag = header_value(&head, "etag").expect("ETag");
    assert!(header_value(&head, "last-modified").is_some(), "{head}");
    assert_eq!(header_value(&head, "content-length").unwrap(), whole.len().to_string());
    let file = setup.dir.path().join("whole.mp4");
    std::fs::write(&file, &whole).unwrap();
    let (frames, warnings) = frames_in(&file);
    assert_eq!(frames, catalog_frames, "ffprobe counts the catalog's frames; {warnings}");
    ffprobe_clean(&file).unwrap();

    // Any split of Range requests gives the same bytes.
    let len = whole.len() as u64;
    for parts in [2u64, 3, 7, 64] {
        let mut got = Vec::new();
        for i in 0..parts {
            let (s, e) = (len * i / parts, len * (i + 1) / parts - 1);
            let (code, head, body) = http_request(&addr, &url, &[("Range", &format!("bytes={s}-{e}")), ("If-Range", &etag)]).unwrap();
            assert_eq!(code, 206, "{head}");
            assert_eq!(header_value(&head, "content-range").unwrap(), format!("bytes {s}-{e}/{len}"));
            got.extend_from_slice(&body);
        }
        assert!(got == whole, "{parts} ranges differ from the whole file");
    }
    let (_, _, tail) = http_request(&addr, &url, &[("Range", "bytes=-1000")]).unwrap();
    assert_eq!(tail, whole[whole.len() - 1000..]);
    let (code, _, _) = http_request(&addr, &url, &[("Range", &format!("bytes={len}-"))]).unwrap();
    assert_eq!(code, 416);
    let (code, _, _) = http_request(&addr, &url, &[("If-None-Match", &etag)]).unwrap();
    assert_eq!(code, 304);
    assert!(!setup.dir.path().join("state/exports").exists(), "nothing is copied under state_dir");

    // Too long a range is refused with a sentence.
    let (code, _, body) = http_request(&addr, "/api/channels/1/play.mp4?from=now-25h", &[]).unwrap();
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("at most 24 hours"));

    // HLS: byte ranges of the virtual file, the catalog's frames, no warnings.
    let m3u8 = format!("/api/channels/1/vod.m3u8?from={}&to={}", format_90k(from), format_90k(to));
    let playlist = String::from_utf8(http_get(&addr, &m3u8).unwrap()).unwrap();
    assert!(playlist.contains("#EXT-X-MAP:URI=\"play.mp4?") && playlist.contains("#EXT-X-BYTERANGE:"), "{playlist}");
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "warning", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(format!("http://{addr}{m3u8}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // HLS has a program: the stream is listed under it and on its own.
    let n: u64 = String::from_utf8_lossy(&o.stdout).split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert_eq!(n, catalog_frames, "HLS frames; ffprobe said: {stderr}\n{playlist}");
    assert!(!stderr.to_lowercase().contains("out of order") && !stderr.to_lowercase().contains("discontinuity"), "{stderr}");

    // The timeline: a gap before the recording, then one span holding the segments.
    let before = from - 20 * 90_000;
    let tl = setup.api_get(&format!("/api/channels/1/timeline?from={}&to={}", format_90k(before), format_90k(to))).unwrap();
    let spans = tl["spans"].as_array().unwrap();
    assert!(!spans.is_empty(), "{tl}");
    assert!(spans[0]["start_90k"].as_i64().unwrap() <= from && spans.last().unwrap()["end_90k"].as_i64().unwrap() >= to - 90, "{tl}");
    assert_eq!(tl["gaps"][0]["start_90k"].as_i64(), Some(before), "{tl}");
    assert_eq!(tl["gaps"][0]["end_90k"], spans[0]["start_90k"], "{tl}");

    // VLC (refuses to run as root) opens the playlist and plays it to the end.
    let vlc = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cvlc", "-I", "dummy", "--vout", "dummy", "--aout", "dummy", "--play-and-exit", "-vv"])
        .arg(format!("http://{addr}{m3u8}"))
        .output()
        .unwrap();
    let vlog = String::from_utf8_lossy(&vlc.stderr);
    assert!(vlc.status.success(), "cvlc failed: {vlog}");
    assert!(vlog.contains("EOF reached") || vlog.contains("end of stream"), "VLC did not play to the end: {}", &vlog[vlog.len().saturating_sub(3000)..]);
    assert!(vlog.contains("adaptive") && !vlog.contains("cannot open"), "VLC's adaptive (HLS) demuxer: {}", &vlog[vlog.len().saturating_sub(3000)..]);

    // hls.js (vendored, served by the box) plays it to the end in headless Chromium.
    let mut b = cdp::Browser::open(&setup.dir.path().join("chromium.log"));
    b.call("Page.navigate", serde_json::json!({ "url": format!("http://{addr}/") })).unwrap();
    b.wait_for("the operator page", Duration::from_secs(30), "document.readyState === 'complete'");
    b.eval(&format!(
        r#"(() => {{
            window.hlsDone = null; window.hlsLog = [];
            const s = document.createElement('script');
            s.src = '/vendor/hls.light.min.js';
            s.onload = () => {{
                const v = document.createElement('video');
                v.muted = true; document.body.appendChild(v);
                const hls = new Hls({{ enableWorker: false }});
                hls.on(Hls.Events.ERROR, (_, d) => {{ window.hlsLog.push(d.type + ':' + d.details + (d.fatal ? ' fatal' : '')); if (d.fatal) window.hlsDone = {{ error: d.details }}; }});
                hls.loadSource('{m3u8}');
                hls.attachMedia(v);
                v.addEventListener('ended', () => {{ window.hlsDone = {{ ended: true, t: v.currentTime, d: v.duration, frames: v.getVideoPlaybackQuality().totalVideoFrames }}; }});
                hls.on(Hls.Events.MANIFEST_PARSED, () => {{ v.playbackRate = 2; v.play(); }});
            }};
            s.onerror = () => {{ window.hlsDone = {{ error: 'hls.js did not load' }}; }};
            document.head.appendChild(s);
            return true;
        }})()"#
    ))
    .unwrap();
    let r = b.wait_for("hls.js playing to the end", Duration::from_secs(60), "window.hlsDone");
    let log = b.eval("JSON.stringify(window.hlsLog)").unwrap_or_default();
    println!("hls.js: {r} (non-fatal errors: {log})");
    assert_eq!(r["ended"], true, "hls.js: {r} {log}\n{}", b.log_tail());
    let expected = catalog_frames as f64 / 25.0;
    assert!((r["d"].as_f64().unwrap_or(0.0) - expected).abs() < 0.5, "hls.js duration {r}, expected {expected}");
    assert_eq!(r["frames"].as_u64(), Some(catalog_frames), "frames hls.js fed the decoder: {r}");
    drop(b);

    // A signed export verifies; one changed byte in the file or the manifest is rejected.
    let out = setup.dir.path().join("evidence.mp4");
    setup.cli(&["export", "--channel", "1", "--from", &format_90k(from), "--to", &format_90k(to), "-o", out.to_str().unwrap(), "--sign"]);
    let exported = std::fs::read(&out).unwrap();
    assert!(exported == whole, "the CLI export is the same file play.mp4 serves");
    let verify = |p: &std::path::Path| std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).arg("verify").arg(p).output().unwrap();
    let ok = verify(&out);
    assert!(ok.status.success() && String::from_utf8_lossy(&ok.stdout).starts_with("OK"), "{ok:?}");
    let mut changed = exported.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 1;
    std::fs::write(&out, &changed).unwrap();
    let bad = verify(&out);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("REJECTED"), "{bad:?}");
    std::fs::write(&out, &exported).unwrap();
    let manifest = setup.dir.path().join("evidence.mp4.manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"channel\": 1", "\"channel\": 2")).unwrap();
    let bad = verify(&out);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("signature does not match"), "{bad:?}");
    sim.shutdown().await;
}

/// The sample entry (`avc1` box) of a fixture clip, as the recorder would store it.
fn track_params(clip: &str, width: u16, height: u16) -> Arc<TrackParams> {
    let file = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(clip)).unwrap();
    let stsd = file.windows(4).position(|w| w == b"stsd").unwrap();
    let at = stsd + 4 + 8;
    let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    Arc::new(TrackParams { codec: "avc1.640028".into(), width, height, sample_entry: Bytes::copy_from_slice(&file[at..at + size]), audio: None })
}

/// 2026-01-01T00:00:00Z, 90 kHz.
const T0: i64 = 1_767_225_600 * 90_000;

/// Channel 1 written through the storage crate at disk speed: `big_s` seconds of 720p frames of
/// `frame_bytes` each (25 fps, a key frame every second), then 10 s of 1080p (a change of codec
/// parameters). Returns the time of the change.
fn synthesize(setup: &Setup, big_s: i64, frame_bytes: usize) -> i64 {
    let cfg = StoreConfig::new("test", setup.dir.path().join("state"), vec![VolumeConfig { path: setup.volume(), max_bytes: None, reserve: None }]);
    let store = Store::open(cfg).unwrap();
    let (a, b) = (track_params("h264-720p25.mp4", 1280, 720), track_params("h264-1080p25.mp4", 1920, 1080));
    let zeros = Bytes::from(vec![0u8; frame_bytes]);
    let mut w = store.channel_writer(1, 8 * frame_bytes as u64 * 25).unwrap();
    let n = (big_s + 10) * 25;
    for i in 0..n {
        let params = if i < big_s * 25 { &a } else { &b };
        let size = if i < big_s * 25 { frame_bytes } else { 1000 };
        w.push(params, InputFrame { time_90k: T0 + i * 3600, cts_offset: 0, key: i % 25 == 0, data: zeros.slice(..size) }).unwrap();
        // The writer drops whole GOPs rather than block when the disk falls behind: pace it.
        while w.stats().frames_written() + 250 < i as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    w.close().unwrap();
    store.shutdown().unwrap();
    T0 + big_s * 90_000
}

/// A short range answers while a long one is stalled half-read (no lock between requests); a
/// change of codec parameters ends `play.mp4` and `understudy export` early and both say where.
#[test]
fn concurrent_ranges_and_parameter_changes() {
    let setup = Setup::new(1, "tls = false", "");
    // 40 s of 1 MB/s: far more than socket buffers and the server's queue can hold.
    let change = synthesize(&setup, 40, 40_000);

    // The CLI: the export stops at the change and says where, with the command for the rest.
    let out = setup.dir.path().join("all.mp4");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["export", "--config", setup.config.to_str().unwrap(), "--channel", "1", "--from", &format_90k(T0), "--to", &format_90k(T0 + 50 * 90_000), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("stops at {}", format_90k(change))), "{err}");
    assert!(err.contains(&format!("--from {} --to {}", format_90k(change), format_90k(T0 + 50 * 90_000))), "{err}");

    let _child = setup.spawn_run();
    let api = format!("127.0.0.1:{}", setup.api);
    let bearer = format!("Bearer {}", setup.token);
    assert!(wait_until(Duration::from_secs(60), || setup.api_get("/api/status").is_some()), "the API never answered\n{}", setup.log());

    // play.mp4: starts at the key frame at or before `from`, stops at the change; headers say both.
    let url = format!("/api/channels/1/play.mp4?from={}&to={}", format_90k(T0 + 90_000 + 45_000), format_90k(T0 + 50 * 90_000));
    let (code, head, _) = http_request(&api, &url, &[("Authorization", &bearer), ("Range", "bytes=0-0")]).unwrap();
    assert_eq!(code, 206, "{head}");
    assert_eq!(header_value(&head, "x-understudy-start"), Some(format_90k(T0 + 90_000)), "{head}");
    assert_eq!(header_value(&head, "x-understudy-stopped-at"), Some(format_90k(change)), "{head}");
    // ... and so does the audit entry of that playback (written when the playback ends: 30 s
    // after its last response, see src/api/trail.rs).
    let audited = wait_until(Duration::from_secs(90), || {
        setup.api_get("/api/audit").is_some_and(|a| {
            a["entries"].as_array().is_some_and(|es| es.iter().any(|e| e["action"] == "playback" && e["detail"]["stopped_at_params_change"] == format_90k(change)))
        })
    });
    assert!(audited, "no audit entry names the stop: {:?}", setup.api_get("/api/audit"));
    // Within one set of parameters: no stop header.
    let (_, head, _) = http_request(&api, &format!("/api/channels/1/play.mp4?from={}&to={}", format_90k(T0), format_90k(T0 + 90_000)), &[("Authorization", &bearer), ("Range", "bytes=0-0")]).unwrap();
    assert_eq!(header_value(&head, "x-understudy-stopped-at"), None, "{head}");

    // Two clients: the long range (all 40 s) is read for its first 64 KiB and then left
    // unread, on a socket with a small receive buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(32 * 1024).unwrap();
    sock.connect(&api.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let rcvbuf = sock.recv_buffer_size().unwrap();
    let mut slow: std::net::TcpStream = sock.into();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let long_url = format!("/api/channels/1/play.mp4?from={}&to={}", format_90k(T0), format_90k(change));
    write!(slow, "GET {long_url} HTTP/1.1\r\nHost: {api}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = vec![0u8; 64 * 1024];
    slow.read_exact(&mut first).unwrap();
    let split = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let long_head = String::from_utf8_lossy(&first[..split]).to_string();
    assert!(long_head.starts_with("HTTP/1.1 200"), "{long_head}");
    let long_len: usize = header_value(&long_head, "content-length").unwrap().parse().unwrap();
    let unread_at_start = long_len - (first.len() - split - 4);
    // The short range, with the long one stalled: a lock between requests would hold it until
    // the long body is all sent, which cannot happen while nobody reads it.
    let (tx, rx) = std::sync::mpsc::channel();
    let short = format!("/api/channels/1/play.mp4?from={}&to={}", format_90k(T0 + 10 * 90_000), format_90k(T0 + 11 * 90_000));
    let (api2, bearer2) = (api.clone(), bearer.clone());
    std::thread::spawn(move || {
        let _ = tx.send(http_request(&api2, &short, &[("Authorization", &bearer2)]));
    });
    let answer = rx.recv_timeout(Duration::from_secs(20)).expect("the short range answers within 20 s while the long one is stalled");
    let (code, head, body) = answer.expect("the short range's answer");
    assert_eq!(code, 200, "{head}");
    assert!(body.len() > 25 * 40_000, "one second of footage ({} bytes)", body.len());
    // The long body was unfinished then: what was still unread exceeds everything that can
    // sit between the server's reader and this socket (send and receive buffers, the
    // response's queue of 4 + 1 chunks of 256 KiB, with slack for the HTTP stack).
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    let buffers = rcvbuf + wmem_max + 5 * 256 * 1024 + (2 << 20);
    println!("short range answered while the long one was stalled with {unread_at_start} of {long_len} bytes unread (buffers hold at most {buffers})");
    assert!(unread_at_start > buffers, "the long body ({unread_at_start} bytes unread) must not fit in buffers ({buffers} bytes)");
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), unread_at_start, "the long range then streams to its end");
}
