//! The source: `understudy camsim` as a separate process, started on a free loopback port and
//! stopped with SIGINT, after which it prints what it sent per camera.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys::{self, Cpu};

/// What camsim sent to one camera's clients (all sessions).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub sessions: u64,
    pub frames: u64,
    pub bytes: u64,
}

pub struct Camsim {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// The understudy binary cargo built for this bench.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy"))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("binding a loopback port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("reading the bound port: {e}"))
}

impl Camsim {
    /// Starts `cameras` cameras looping `clip` (and `audio`'s audio track); returns once the
    /// port accepts connections.
    pub fn start(
        cameras: u32,
        clip: &Path,
        audio: Option<&Path>,
        fast: bool,
        session_timeout_s: u64,
        log: &Path,
    ) -> Result<Camsim, String> {
        let bin = binary();
        let mut last_err = String::new();
        // A free port can be taken between our probe and camsim's bind: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let logf = std::fs::File::create(log)
                .map_err(|e| format!("creating {}: {e}", log.display()))?;
            let mut cmd = Command::new(&bin);
            cmd.arg("camsim")
                .args([
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--cameras",
                    &cameras.to_string(),
                ])
                .arg("--clip")
                .arg(clip)
                .args(audio.iter().flat_map(|a| [std::ffi::OsStr::new("--audio"), a.as_os_str()]))
                .args(["--session-timeout", &session_timeout_s.to_string()])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(logf));
            if fast {
                cmd.arg("--fast");
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("starting {} camsim: {e}", bin.display()))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    last_err = format!("camsim exited with {st} (log: {})", log.display());
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Camsim {
                        child,
                        port,
                        log: log.to_owned(),
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "camsim did not listen on {addr} within 60 s (log: {})",
                        log.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(last_err)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, camera: u32) -> String {
        format!("rtsp://127.0.0.1:{}/cam/{camera}", self.port)
    }

    pub fn cpu(&self) -> Option<Cpu> {
        sys::cpu_of(self.pid())
    }

    /// SIGINT, then reads the per-camera table camsim prints as it exits: index = camera id − 1.
    pub fn stop(mut self) -> Result<Vec<Sent>, String> {
        sys::signal(self.pid(), libc::SIGINT);
        if !sys::wait_or_kill(&mut self.child, 30) {
            return Err(format!(
                "camsim did not exit within 30 s of SIGINT (log: {})",
                self.log.display()
            ));
        }
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)
                .map_err(|e| format!("reading camsim's output: {e}"))?;
        }
        parse_table(&out).ok_or_else(|| {
            format!(
                "camsim printed no camera table (log: {}):\n{out}",
                self.log.display()
            )
        })
    }
}

impl Drop for Camsim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `camera  sessions  frames_sent  bytes_sent` then one line per camera and `total`.
fn parse_table(out: &str) -> Option<Vec<Sent>> {
    let mut cams: Vec<(u32, Sent)> = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let Ok(id) = f[0].parse::<u32>() else {
            continue;
        };
        let (Ok(sessions), Ok(frames), Ok(bytes)) = (f[1].parse(), f[2].parse(), f[3].parse())
        else {
            continue;
        };
        cams.push((
            id,
            Sent {
                sessions,
                frames,
                bytes,
            },
        ));
    }
    if cams.is_empty() {
        return None;
    }
    let n = cams.iter().map(|c| c.0).max().unwrap_or(0) as usize;
    let mut v = vec![Sent::default(); n];
    for (id, s) in cams {
        if id >= 1 {
            v[id as usize - 1] = s;
        }
    }
    Some(v)
}
