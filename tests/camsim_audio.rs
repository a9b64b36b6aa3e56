//! camsim cameras with audio (issue 8): AAC (RFC 3640) and G.711 µ-law (RFC 3551) served as a
//! second `m=audio` stream beside the video. ffmpeg, as an independent client, must record both
//! streams; `understudy run` must record files with a video and an audio stream whose
//! durations agree within 0.2 s in every segment.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use understudy::camsim::{CamSim, CamSimConfig, CameraSpec, Pacing};

const AAC: &str = "audio-aac-16k.mp4";
const PCMU: &str = "audio-pcmu-8k.mov";

/// camsim with: 1 = H.264 + AAC file, 2 = H.264 + G.711 file, 3 = `muxed` (a clip carrying its
/// own AAC track).
async fn audio_camsim(muxed: &Path) -> CamSim {
    let mut c1 = CameraSpec::new(1, fixture(H264));
    c1.audio = Some(fixture(AAC));
    let mut c2 = CameraSpec::new(2, fixture(H264));
    c2.audio = Some(fixture(PCMU));
    let c3 = CameraSpec::new(3, muxed);
    CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        cameras: vec![c1, c2, c3],
        pacing: Pacing::Realtime,
        auth: None,
        session_timeout: Duration::from_secs(60),
    })
    .await
    .expect("camsim starts")
}

/// H.265 video and the AAC fixture in one MP4 (a clip with its own audio track).
fn mux_h265_aac(out: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(fixture(H265))
        .arg("-i")
        .arg(fixture(AAC))
        .args(["-map", "0:v", "-map", "1:a", "-c", "copy"])
        .arg(out)
        .output()
        .expect("ffmpeg runs");
    assert!(o.status.success(), "ffmpeg mux: {}", String::from_utf8_lossy(&o.stderr));
}

/// Per stream type (`video`, `audio`): codec name and covered duration in seconds (from the
/// first packet's start to the last packet's end).
fn streams(path: &Path) -> BTreeMap<String, (String, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=index,codec_type,codec_name:packet=stream_index,pts_time,duration_time", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // (pts, duration) per stream; ffprobe gives no packet duration for FLAC in MP4: there the
    // step to the next packet counts, and the last packet lasts as long as the one before.
    let mut packets: BTreeMap<u64, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for p in v["packets"].as_array().unwrap() {
        let f = |k: &str| p[k].as_str().and_then(|x| x.parse::<f64>().ok());
        let Some(pts) = f("pts_time") else { continue };
        packets.entry(p["stream_index"].as_u64().unwrap()).or_default().push((pts, f("duration_time")));
    }
    let mut span: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (i, mut p) in packets {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut step = 0.0;
        let mut end = f64::MIN;
        for (k, &(pts, d)) in p.iter().enumerate() {
            step = d.or_else(|| p.get(k + 1).map(|n| n.0 - pts)).unwrap_or(step);
            end = end.max(pts + step);
        }
        span.insert(i, (p[0].0, end));
    }
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (a, b) = span.get(&s["index"].as_u64().unwrap()).copied().unwrap_or((0.0, 0.0));
            (s["codec_type"].as_str().unwrap().to_owned(), (s["codec_name"].as_str().unwrap().to_owned(), (b - a).max(0.0)))
        })
        .collect()
}

/// Acceptance (issue 8): ffmpeg records camsim's audio cameras with their audio stream, and
/// `understudy run` records video + audio segments with matching durations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_cameras_are_recorded_with_audio_in_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let muxed = tmp.path().join("h265-aac.mp4");
    mux_h265_aac(&muxed);
    let sim = audio_camsim(&muxed).await;

    // ffmpeg as a third-party client: both streams, the audio in the codec served.
    for (cam, want) in [(1, "aac"), (2, "pcm_mulaw"), (3, "aac")] {
        let out = tmp.path().join(format!("ffmpeg-{cam}.mkv"));
        let url = sim.url(cam);
        let args = ["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", &url, "-t", "3", "-c", "copy", "-y", out.to_str().unwrap()];
        let o = tokio::process::Command::new("ffmpeg").args(args).kill_on_drop(true).output();
        let o = tokio::time::timeout(Duration::from_secs(60), o).await.expect("ffmpeg ends").unwrap();
        assert!(o.status.success() && o.stderr.is_empty(), "ffmpeg camera {cam}: {}", String::from_utf8_lossy(&o.stderr));
        let s = streams(&out);
        assert_eq!(s.get("audio").map(|a| a.0.as_str()), Some(want), "camera {cam}: {s:?}");
        let (v, a) = (s["video"].1, s["audio"].1);
        assert!(v > 2.0 && (v - a).abs() < 0.3, "camera {cam}: video {v} s, audio {a} s");
        ffmpeg_decodes(&out).unwrap();
    }

    let cams: String = (1..=3).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect();
    let setup = Setup::new(3, "segment_duration = \"4s\"", &cams);
    let mut child = setup.spawn_run();
    // Two closed segments per channel (the first starts at the first key frame).
    let ok = wait_until_async(Duration::from_secs(60), || {
        (1..=3).all(|ch| setup.try_recordings(ch).is_some_and(|r| r.iter().filter(|s| s["open"] == false).count() >= 2))
    })
    .await;
    assert!(ok, "no two closed segments per channel: {}", setup.log());
    let status = setup.api_get("/api/status").expect("status");
    sigterm(&mut child);
    assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some(), "understudy did not stop");

    for (ch, stored, said) in [(1, "aac", "aac"), (2, "flac", "flac (from pcmu)"), (3, "aac", "aac")] {
        let st = status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == ch).expect("channel status");
        assert_eq!(st["audio"], said, "channel {ch}: {st}");
        let files = setup.segment_files(ch);
        assert!(files.len() >= 2, "channel {ch}: {files:?}");
        for f in &files {
            ffprobe_clean(f).unwrap();
            let s = streams(f);
            let (video, audio) = (&s["video"], s.get("audio").unwrap_or_else(|| panic!("{}: no audio stream: {s:?}", f.display())));
            assert_eq!(audio.0, stored, "{}", f.display());
            // The last segment ends at SIGTERM: a frame of either kind may be cut off there.
            assert!((video.1 - audio.1).abs() <= 0.2, "{}: video {} s, audio {} s", f.display(), video.1, audio.1);
            assert!(video.1 > 0.5 || f == files.last().unwrap(), "{}: video {} s", f.display(), video.1);
            assert!(cameras_in(f).contains(&ch), "{}: camera tags", f.display());
        }
    }
    sim.shutdown().await;
}
