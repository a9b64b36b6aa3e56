//! camsim with ffmpeg as a third-party client: it records a camera over RTSP/TCP, and the file
//! must be clean (ffprobe, a full `ffmpeg -xerror` decode) and tagged with the right camera.

mod camsim_util;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use camsim_util::start;
use understudy::camsim::{find_camsim_tags, AuthConfig, AuthScheme, Pacing};

async fn run(cmd: &str, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{cmd} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Records 3 s of `url` with `ffmpeg -c copy` into `out`.
async fn record(url: &str, out: &Path) {
    let o = run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
            "-t",
            "3",
            "-c",
            "copy",
            "-y",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        o.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Checks the recording and returns its camsim tags.
async fn check_recording(out: &Path, codec: &str, width: u32) -> Vec<(u32, u64)> {
    let o = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_name,width,nb_read_packets",
            "-of",
            "default=nw=1",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let probe = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "ffprobe: {probe} {:?}",
        o.stderr
    );
    assert!(probe.contains(&format!("codec_name={codec}\n")), "{probe}");
    assert!(probe.contains(&format!("width={width}\n")), "{probe}");
    let packets: u32 = probe
        .lines()
        .find_map(|l| l.strip_prefix("nb_read_packets="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {probe}"));
    assert!(
        (60..=90).contains(&packets),
        "3 s at 25 fps, got {packets} packets"
    );

    let o = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-xerror",
            "-i",
            out.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ],
    )
    .await;
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tags = find_camsim_tags(&std::fs::read(out).unwrap());
    assert!(
        tags.len() as u32 >= packets - 1,
        "{} tags for {packets} frames",
        tags.len()
    );
    for w in tags.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "consecutive frame numbers: {tags:?}");
    }
    tags
}

#[tokio::test]
async fn ffmpeg_records_h264_of_the_right_camera() {
    let sim = start("h264-720p25.mp4", 3, Pacing::Realtime, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("cam1.mp4"), dir.path().join("cam3.mp4"));
    let (url1, url3) = (sim.url(1), sim.url(3));
    tokio::join!(record(&url1, &a), record(&url3, &b));
    let tags = check_recording(&a, "h264", 1280).await;
    assert!(tags.iter().all(|t| t.0 == 1), "{tags:?}");
    let tags = check_recording(&b, "h264", 1280).await;
    assert!(tags.iter().all(|t| t.0 == 3), "{tags:?}");
    let stats = sim.stats();
    assert_eq!(stats.camera(2).unwrap().sessions, 0);
    assert_eq!(stats.camera(1).unwrap().sessions, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_records_h265() {
    let sim = start("h265-720p25.mp4", 1, Pacing::Realtime, None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cam1.mp4");
    record(&sim.url(1), &out).await;
    let tags = check_recording(&out, "hevc", 1280).await;
    assert!(tags.iter().all(|t| t.0 == 1) && tags[0].1 <= 1, "{tags:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_with_digest_and_basic_auth() {
    for scheme in [AuthScheme::Digest, AuthScheme::Basic] {
        let auth = AuthConfig {
            username: "admin".into(),
            password: "pa55word".into(),
            scheme,
        };
        let sim = start("h264-360p25-small.mp4", 1, Pacing::Realtime, Some(auth)).await;
        let authed = sim.url(1).replace("rtsp://", "rtsp://admin:pa55word@");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cam1.mp4");
        record(&authed, &out).await;
        let tags = check_recording(&out, "h264", 640).await;
        assert!(tags.iter().all(|t| t.0 == 1), "{tags:?}");

        // Wrong and missing credentials are refused.
        let wrong = sim.url(1).replace("rtsp://", "rtsp://admin:nope@");
        for url in [wrong, sim.url(1)] {
            let o = run(
                "ffmpeg",
                &[
                    "-nostdin",
                    "-v",
                    "error",
                    "-rtsp_transport",
                    "tcp",
                    "-i",
                    &url,
                    "-t",
                    "1",
                    "-f",
                    "null",
                    "-",
                ],
            )
            .await;
            assert!(!o.status.success(), "{scheme:?}: {url} accepted");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("401") && !err.contains("pa55word"), "{err}");
        }
        assert_eq!(sim.stats().total.sessions, 1, "{scheme:?}");
        sim.shutdown().await;
    }
}
