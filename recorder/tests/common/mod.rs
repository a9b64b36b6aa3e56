//! Test helpers: a real third-party RTSP server (GStreamer's, via `gst_rtsp_server.py`) on
//! loopback, polling helpers and frame checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use understudy_recorder::{Backoff, ChannelSpec, ChannelStats, Frame, IngestItem};

/// Generous: GStreamer on a loaded 2-core machine can be slow to start and to encode.
pub const LONG: Duration = Duration::from_secs(60);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "understudy_recorder=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// GStreamer's RTSP server serving a live test pattern at `/cam`.
pub struct GstServer {
    child: Child,
    pub port: u16,
    args: Vec<String>,
}

impl GstServer {
    /// Starts a server on a free port. `args` are passed to the script (`--codec h265`, ...).
    pub fn start(args: &[&str]) -> GstServer {
        Self::start_on(0, args.iter().map(|s| s.to_string()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> GstServer {
        Self::try_start_on(port, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16, args: Vec<String>) -> Result<GstServer, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gst_rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn /usr/bin/python3 gst_rtsp_server.py");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("ready ") {
                        let port = p.trim().parse().expect("port after ready");
                        return Ok(GstServer { child, port, args });
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(format!(
                        "GStreamer RTSP server on port {port} did not become ready: {e} ({status:?})"
                    ));
                }
            }
        }
    }

    /// Starts again on the same port (after [`GstServer::kill`]), retrying while the port is
    /// not yet reusable.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + LONG;
        loop {
            match Self::try_start_on(self.port, self.args.clone()) {
                Ok(fresh) => {
                    *self = fresh;
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    pub fn url(&self) -> url::Url {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
            .parse()
            .expect("url")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (`STOP`, `CONT`) to the server process, which this test started.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }
}

impl Drop for GstServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spec with test-friendly (short) backoff.
pub fn spec(channel: u32, url: url::Url) -> ChannelSpec {
    let mut s = ChannelSpec::new(channel, format!("gst/{channel}"), url);
    s.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        ..Backoff::default()
    };
    s
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout` with `what` and the stats.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    stats: &ChannelStats,
    mut cond: impl FnMut(&understudy_recorder::ChannelSnapshot) -> bool,
) -> understudy_recorder::ChannelSnapshot {
    let deadline = Instant::now() + timeout;
    loop {
        let snap = stats.snapshot();
        if cond(&snap) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; stats: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next queue item; panics on timeout or if the queue closed.
pub async fn next_item(rx: &mut mpsc::Receiver<IngestItem>) -> IngestItem {
    match tokio::time::timeout(LONG, rx.recv()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("ingest queue closed unexpectedly"),
        Err(_) => panic!("no ingest item within {LONG:?}"),
    }
}

pub async fn next_frame(rx: &mut mpsc::Receiver<IngestItem>) -> Frame {
    match next_item(rx).await {
        IngestItem::Frame(f) => f,
        IngestItem::SessionEnded => panic!("unexpected SessionEnded"),
        IngestItem::Audio(_) => panic!("unexpected audio (camsim serves none here)"),
    }
}

/// Reads items until the queue closes (after stop), returning them.
pub async fn drain_until_closed(rx: &mut mpsc::Receiver<IngestItem>) -> Vec<IngestItem> {
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout(LONG, rx.recv()).await {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return items,
            Err(_) => panic!("queue not closed within {LONG:?}"),
        }
    }
}

pub fn now_90k() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_nanos() * 90 / 1_000_000) as i64
}

/// Splits 4-byte length-prefixed data into NAL units, asserting the framing is exact.
pub fn nals(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "truncated length prefix");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(len > 0 && rest.len() >= 4 + len, "bad NAL length {len}");
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    out
}

/// NAL unit types of a frame: H.264 (ITU-T H.264 7.3.1) or H.265 (ITU-T H.265 7.3.1.2).
pub fn nal_types(data: &[u8], h265: bool) -> Vec<u8> {
    nals(data)
        .into_iter()
        .map(|n| {
            if h265 {
                (n[0] >> 1) & 0x3f
            } else {
                n[0] & 0x1f
            }
        })
        .collect()
}
