//! A simulated main recorder for demos, drills and tests: a loopback TCP listener that can be
//! taken down and brought back on the same port, like an NVR losing power. Over HTTP it answers
//! `GET /api/status` the way an Understudy main does (its channels with their recording state,
//! its volumes), so recording health (`health = "understudy+http://…"`) can be drilled: channels
//! can stop recording while the main still answers, or its disk can fail.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the simulated main says it records.
#[derive(Debug, Default)]
struct Recording {
    /// Its channels are 1..=channels.
    channels: u32,
    not_recording: BTreeSet<u32>,
    disk_failed: bool,
}

pub struct SimMain {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    /// The accepting socket, shut down by [`SimMain::down`] so refusals start at once (an
    /// aborted task drops its listener only when the runtime next gets to it).
    listener: Option<Arc<TcpListener>>,
    recording: Arc<Mutex<Recording>>,
}

impl SimMain {
    /// Starts listening on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr) -> std::io::Result<SimMain> {
        let mut m = SimMain { addr, task: None, listener: None, recording: Arc::default() };
        m.up().await?;
        Ok(m)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_up(&self) -> bool {
        self.task.is_some()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recording) -> T) -> T {
        f(&mut self.recording.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reports channels 1..=`n` in its status, all recording.
    pub fn set_channels(&self, n: u32) {
        self.with(|r| r.channels = n);
    }

    /// Reports `channels` as not recording (camera lost on the main), the others as recording.
    pub fn set_not_recording(&self, channels: &[u32]) {
        self.with(|r| r.not_recording = channels.iter().copied().collect());
    }

    /// Reports its only volume as failed (nothing recorded) or healthy again.
    pub fn set_disk_failed(&self, failed: bool) {
        self.with(|r| r.disk_failed = failed);
    }

    /// Accepts connections until `down`: `GET /api/status` gets the status, anything else 200.
    pub async fn up(&mut self) -> std::io::Result<()> {
        if self.task.is_some() {
            return Ok(());
        }
        let listener = Arc::new(TcpListener::bind(self.addr).await?);
        self.addr = listener.local_addr()?;
        self.listener = Some(listener.clone());
        let recording = self.recording.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    // Shut down (or out of descriptors): yield so the abort can land.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let recording = recording.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 2048];
                    let n = match tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        _ => 0,
                    };
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let body = if head.starts_with("GET /api/status ") {
                        let r = recording.lock().unwrap_or_else(|p| p.into_inner());
                        status_json(&r).to_string()
                    } else {
                        "ok".to_owned()
                    };
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        }));
        Ok(())
    }

    /// Stops listening: connects are refused from now on.
    pub fn down(&mut self) {
        if let Some(l) = self.listener.take() {
            use std::os::fd::AsRawFd;
            // Linux: shutting down a listening socket closes it for new connections now.
            // SAFETY: `l` keeps the descriptor open for the duration of the call.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The part of Understudy's `/api/status` (see `api::status`) that recording health reads.
fn status_json(r: &Recording) -> serde_json::Value {
    let channels: Vec<serde_json::Value> = (1..=r.channels)
        .map(|ch| {
            let recording = !r.disk_failed && !r.not_recording.contains(&ch);
            let (state, reason) = match (recording, r.disk_failed) {
                (true, _) => ("recording", None),
                (false, true) => ("stalled", Some("volume failed")),
                (false, false) => ("backoff", Some("camera unreachable")),
            };
            serde_json::json!({ "channel": ch, "owner": "local", "state": state, "reason": reason })
        })
        .collect();
    serde_json::json!({
        "server": {
            "name": "simmain",
            "channels": r.channels,
            "volumes": [{ "path": "/sim", "healthy": !r.disk_failed, "missing": false, "full": false,
                          "error": if r.disk_failed { Some("I/O error") } else { None } }],
        },
        "mains": [],
        "channels": channels,
    })
}

impl Drop for SimMain {
    fn drop(&mut self) {
        self.down();
    }
}
