//! Acceptance 5 (interop): `understudy run` recording from a third-party RTSP server —
//! GStreamer's, from Debian's packages — gives files ffprobe and ffmpeg accept.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct GstServer {
    child: Child,
    port: u16,
}

impl GstServer {
    fn start(codec: &str) -> GstServer {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recorder/tests/gst_rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["0", "--codec", codec, "--size", "640x360", "--fps", "25"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) must be installed by tests/run-all.sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("ready ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("server said {line:?}"));
        GstServer { child, port }
    }
}

impl Drop for GstServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
