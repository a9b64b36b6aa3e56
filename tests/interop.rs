//! Acceptance 5 (interop): `understudy run` recording from a third-party RTSP server —
//! GStreamer's, from Debian's packages — gives files ffprobe and ffmpeg accept; with audio
//! (issue 8), AAC and G.711 are recorded in sync, other codecs and `audio = false` are not.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn records_from_gstreamer_rtsp_server() {
    let h264 = GstServer::start("h264");
    let h265 = GstServer::start("h265");
    let cams = format!(
        "[[camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:{}/cam\"\n\n[[camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:{}/cam\"\n",
        h264.port, h265.port
    );
    let setup = Setup::new(2, "segment_duration = \"4s\"", &cams);
    let mut child = setup.spawn_run();
    let ok = wait_until(Duration::from_secs(90), || {
        setup.try_recordings(1).is_some_and(|r| r.len() >= 2) && setup.try_recordings(2).is_some_and(|r| r.len() >= 2)
    });
    sigterm(&mut child);
    assert!(ok, "GStreamer streams were not recorded: {}", setup.log());
    for ch in 1..=2 {
        let files = setup.segment_files(ch);
        assert!(files.len() >= 2);
        for f in &files {
            ffprobe_clean(f).unwrap();
            ffmpeg_decodes(f).unwrap();
            let (frames, w, h, _) = probe(f);
            assert!(frames > 0 && (w, h) == (640, 360), "{}: {frames} frames {w}x{h}", f.display());
        }
    }
}

#[test]
fn records_audio_from_gstreamer_rtsp_server() {
    // AAC, G.711 µ-law and A-law are recorded; G.726 is skipped (video only, status says so);
    // `audio = false` records none.
    let servers: Vec<(u32, GstServer, &str)> = [(1, "aac", ""), (2, "pcmu", ""), (3, "pcma", ""), (4, "g726", ""), (5, "pcmu", "audio = false\n")]
        .into_iter()
        .map(|(ch, audio, extra)| (ch, GstServer::start_with("h264", "320x240", audio), extra))
        .collect();
    let cams: String = servers
        .iter()
        .map(|(ch, s, extra)| format!("[[camera]]\nchannel = {ch}\nurl = \"rtsp://127.0.0.1:{}/cam\"\n{extra}\n", s.port))
        .collect();
    let setup = Setup::new(5, "segment_duration = \"4s\"", &cams);
    let mut child = setup.spawn_run();
    let ok = wait_until(Duration::from_secs(60), || {
        (1..=5).all(|ch| setup.try_recordings(ch).is_some_and(|r| r.iter().filter(|s| s["open"] == false).count() >= 2))
    });
    let status = setup.api_get("/api/status");
    sigterm(&mut child);
    assert!(ok, "GStreamer streams were not recorded: {}", setup.log());
    let status = status.expect("status answered");
    let audio_status = |ch: u32| {
        status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == ch).unwrap()["audio"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(audio_status(1), "aac");
    assert_eq!(audio_status(2), "flac (from pcmu)");
    assert_eq!(audio_status(3), "flac (from pcma)");
    assert!(audio_status(4).starts_with("skipped: g726"), "{}", audio_status(4));
    assert_eq!(audio_status(5), "off (audio = false)");
    assert_eq!(setup.log().matches("audio track not recorded").count(), 1, "the skipped codec is logged once");

    for (ch, want) in [(1, Some("aac")), (2, Some("flac")), (3, Some("flac")), (4, None), (5, None)] {
        let listed = setup.recordings(ch);
        assert!(listed.iter().all(|s| s["audio"].as_str() == want), "channel {ch}: {listed:?}");
        let files = setup.segment_files(ch);
        assert!(files.len() >= 2, "channel {ch}");
        for f in &files {
            ffprobe_clean(f).unwrap();
            ffmpeg_decodes(f).unwrap();
            let streams = stream_spans(f);
            let video = streams.iter().find(|s| s.0 == "video").unwrap_or_else(|| panic!("{}: no video", f.display()));
            let audio = streams.iter().find(|s| s.0 == "audio");
            match want {
                None => assert!(audio.is_none(), "{}: {streams:?}", f.display()),
                Some(codec) => {
                    let audio = audio.unwrap_or_else(|| panic!("{}: no audio: {streams:?}", f.display()));
                    assert_eq!(audio.1, codec, "{}", f.display());
                    // Same span of time: start and duration within 0.2 s of the video's.
                    assert!((audio.2 - video.2).abs() < 0.2, "{}: starts {streams:?}", f.display());
                    assert!((audio.3 - video.3).abs() < 0.2, "{}: durations {streams:?}", f.display());
                }
            }
        }
    }
    // An export across segments carries the audio too.
    let out = setup.dir.path().join("export.mp4");
    let listed = setup.recordings(2);
    let rfc3339 = |t_90k: &serde_json::Value| {
        jiff::Timestamp::from_millisecond(t_90k.as_i64().unwrap() / 90).unwrap().to_string()
    };
    let (from, to) = (rfc3339(&listed[0]["start_90k"]), rfc3339(&listed[1]["end_90k"]));
    setup.cli(&["export", "--channel", "2", "--from", &from, "--to", &to, "-o", out.to_str().unwrap()]);
    ffmpeg_decodes(&out).unwrap();
    let streams = stream_spans(&out);
    let (video, audio) = (&streams[0], streams.iter().find(|s| s.0 == "audio").expect("export has audio"));
    assert!(video.3 > 4.0 && (audio.3 - video.3).abs() < 0.3, "{streams:?}");
}

/// Per stream: (codec_type, codec_name, first packet time, span from the first packet to the
/// end of the last), from ffprobe's packet list.
fn stream_spans(path: &std::path::Path) -> Vec<(String, String, f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=index,codec_type,codec_name:packet=stream_index,pts_time,duration_time", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["streams"].is_array(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let num = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let i = s["index"].as_u64().unwrap();
            let pkts: Vec<_> = v["packets"].as_array().unwrap().iter().filter(|p| p["stream_index"].as_u64() == Some(i)).collect();
            let first = pkts.iter().map(|p| num(&p["pts_time"])).fold(f64::MAX, f64::min);
            // ffprobe gives no packet duration for FLAC in fragmented MP4 (N/A): a packet then
            // lasts as long as the one before it (fixed-size FLAC blocks).
            let mut pts: Vec<f64> = pkts.iter().map(|p| num(&p["pts_time"])).collect();
            pts.sort_by(f64::total_cmp);
            let step = if pts.len() >= 2 { pts[pts.len() - 1] - pts[pts.len() - 2] } else { 0.0 };
            let end = pkts
                .iter()
                .map(|p| num(&p["pts_time"]) + if p["duration_time"].is_string() { num(&p["duration_time"]) } else { step })
                .fold(f64::MIN, f64::max);
            (s["codec_type"].as_str().unwrap_or_default().to_owned(), s["codec_name"].as_str().unwrap_or_default().to_owned(), first, end - first)
        })
        .collect()
}

/// Acceptance (issue 8): an MJPEG camera (GStreamer, RTP/JPEG) puts its channel in `error` with
/// a message naming the codec, is retried slowly (the longest backoff, not a reconnect loop),
/// and another camera on the same box keeps recording.
#[test]
fn mjpeg_camera_errors_on_its_channel_only() {
    let mjpeg = GstServer::start_with("mjpeg", "320x240", "none");
    let h264 = GstServer::start_with("h264", "320x240", "none");
    let cams = format!(
        "[[camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:{}/cam\"\n\n[[camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:{}/cam\"\n",
        mjpeg.port, h264.port
    );
    let setup = Setup::new(2, "segment_duration = \"2s\"", &cams);
    let mut child = setup.spawn_run();
    let channel = |status: &serde_json::Value, ch: u32| status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == ch).unwrap().clone();
    let mut first = None;
    let ok = wait_until(Duration::from_secs(30), || {
        first = setup.api_get("/api/status").filter(|s| channel(s, 1)["state"] == "error");
        first.is_some()
    });
    assert!(ok, "channel 1 never reached error: {}", setup.log());
    let first = first.unwrap();
    let ch1 = channel(&first, 1);
    let error = ch1["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("MJPEG") && error.contains("H.264"), "{ch1}");
    // Over the next 12 s: at most one more attempt (the error backoff is 30 s ± 20 %), while
    // channel 2 records on.
    let recorded_before = setup.recordings(2).len();
    std::thread::sleep(Duration::from_secs(12));
    let later = setup.api_get("/api/status").expect("status");
    sigterm(&mut child);
    let (ch1_later, ch2) = (channel(&later, 1), channel(&later, 2));
    assert_eq!(ch1_later["state"], "error", "{ch1_later}");
    let attempts = ch1_later["reconnects"].as_u64().unwrap() - ch1["reconnects"].as_u64().unwrap();
    assert!(attempts <= 1, "channel 1 retried {attempts} times in 12 s: {ch1_later}");
    assert_eq!(ch1_later["frames"], 0, "{ch1_later}");
    assert!(setup.try_recordings(1).unwrap_or_default().is_empty(), "nothing recorded on channel 1");
    assert_eq!(ch2["state"], "recording", "{ch2}");
    assert!(ch2["last_error"].is_null(), "{ch2}");
    let files = setup.segment_files(2);
    assert!(files.len() >= recorded_before + 4, "channel 2 kept recording: {} then {} segments", recorded_before, files.len());
    for f in &files {
        ffprobe_clean(f).unwrap();
    }
    let log = setup.log();
    assert!(log.contains("unsupported video codec MJPEG"), "{log}");
}

/// Issue 8: when GStreamer's shared media re-bases RTP time (a second client joins, then
/// leaves), the video run re-anchors to wall time and the audio follows: every segment's audio
/// starts and lasts within 0.2 s of its video, before and after. Audio RTP loss (every 10th
/// packet dropped by the server) is counted in the channel's `lost_packets`, in /api/status
/// and /metrics.
#[test]
fn audio_follows_reanchors_and_its_loss_is_counted() {
    let server = GstServer::start_args(&["--codec", "h264", "--size", "320x240", "--audio", "pcmu", "--shared", "--drop-audio", "10"]);
    let url = format!("rtsp://127.0.0.1:{}/cam", server.port);
    let setup = Setup::new(1, "segment_duration = \"3s\"", &format!("[[camera]]\nchannel = 1\nurl = \"{url}\"\n"));
    let mut child = setup.spawn_run();
    let closed = || setup.try_recordings(1).map(|r| r.into_iter().filter(|s| s["open"] == false).count()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(30), || closed() >= 1), "not recorded: {}", setup.log());
    // A second client for 4 s: the server re-bases the shared media's RTP time as it joins.
    let second = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-rtsp_transport", "tcp", "-i", &url, "-t", "4", "-f", "null", "-"])
        .status()
        .unwrap();
    assert!(second.success(), "second client");
    let reanchors = || {
        setup.api_get("/api/events?limit=1000").map_or(0, |e| {
            e["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "time_reanchored" && e["channel"] == 1).count()
        })
    };
    assert!(wait_until(Duration::from_secs(20), || reanchors() >= 1), "no re-anchor: {}", setup.log());
    let before = closed();
    assert!(wait_until(Duration::from_secs(30), || closed() >= before + 2), "no recording after the re-anchor: {}", setup.log());
    let status = setup.api_get("/api/status").expect("status");
    let metrics = setup.api("GET", "/metrics").filter(|a| a.status == 200).expect("GET /metrics").text();
    sigterm(&mut child);

    let ch = status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == 1).unwrap().clone();
    let lost = ch["lost_packets"].as_u64().unwrap();
    assert!(lost >= 10, "audio loss not counted: {ch}");
    let line = metrics.lines().find(|l| l.starts_with("understudy_channel_lost_packets") && l.contains("channel=\"1\"")).unwrap_or_else(|| panic!("{metrics}"));
    let scraped: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(scraped >= 10.0, "{line}");
    assert!(ch["reanchors"].as_u64().unwrap() >= 1, "{ch}");

    let files = setup.segment_files(1);
    let mut checked = 0;
    let (mut worst_start, mut worst_end) = (0.0f64, 0.0f64);
    for f in &files {
        ffmpeg_decodes(f).unwrap();
        let streams = stream_spans(f);
        let video = streams.iter().find(|s| s.0 == "video").unwrap_or_else(|| panic!("{}: no video", f.display()));
        if video.3 < 1.0 {
            continue; // a run cut short at the jump or at stop: too short to judge
        }
        let audio = streams.iter().find(|s| s.0 == "audio").unwrap_or_else(|| panic!("{}: no audio: {streams:?}", f.display()));
        worst_start = worst_start.max((audio.2 - video.2).abs());
        worst_end = worst_end.max((audio.2 + audio.3 - video.2 - video.3).abs());
        assert!((audio.2 - video.2).abs() < 0.2, "{}: starts {streams:?}", f.display());
        assert!((audio.3 - video.3).abs() < 0.2, "{}: durations {streams:?}", f.display());
        checked += 1;
    }
    eprintln!("audio vs video over {checked} segments: starts within {worst_start:.3} s, ends within {worst_end:.3} s");
    assert!(checked >= 3, "{checked} segments checked of {}", files.len());
}
