//! Shared helpers for the integration tests: the camera simulator in-process, `understudy`
//! as a child process, config files in temp dirs, and ffprobe/ffmpeg checks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};

use understudy::camsim::{CamSim, CamSimConfig, CameraSpec, Pacing};

pub mod api;
pub use api::Answer;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub const H264: &str = "h264-360p25-small.mp4";
pub const H265: &str = "h265-360p25-small.mp4";
pub const H264_720: &str = "h264-720p25.mp4";
pub const H265_720: &str = "h265-720p25.mp4";

pub async fn camsim(clips: &[&str]) -> CamSim {
    CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        cameras: clips.iter().enumerate().map(|(i, c)| CameraSpec::new(i as u32 + 1, fixture(c))).collect(),
        pacing: Pacing::Realtime,
        auth: None,
        session_timeout: Duration::from_secs(60),
    })
    .await
    .expect("camsim starts")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temp dir with a config file; `extra` is appended (cameras, mains). The API is HTTPS with
/// the certificate `run` generates; an admin `test` (password [`ADMIN_PASSWORD`]) exists with
/// a bearer token in `token`, which `api_get`/`api` send.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub api: u16,
    pub token: String,
}

/// The password of the `test` admin every [`Setup`] creates.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

impl Setup {
    pub fn new(channels: u32, server_extra: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let config = dir.path().join("understudy.toml");
        let text = format!(
            "[server]\nname = \"test\"\nchannels = {channels}\nstate_dir = {:?}\nlisten = \"127.0.0.1:{api}\"\n{server_extra}\n\n[[volume]]\npath = {:?}\n\n{extra}",
            dir.path().join("state").display().to_string(),
            dir.path().join("disk1").display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        let mut setup = Setup { dir, config, api, token: String::new() };
        setup.add_user("test", "admin", "all", ADMIN_PASSWORD);
        setup.token = setup.create_token(&["--user", "test"]);
        setup
    }

    /// `ARGS` with `--config F` after the (sub)command: `user add --config F NAME …`.
    pub fn with_config<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let n = if matches!(args[0], "user" | "token" | "tls") { 2 } else { 1 };
        let mut full = args[..n].to_vec();
        full.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        full.extend_from_slice(&args[n..]);
        full
    }

    /// `understudy user add NAME --role ROLE --channels CH --password-stdin`.
    pub fn add_user(&self, name: &str, role: &str, channels: &str, password: &str) {
        self.cli_stdin(&["user", "add", name, "--role", role, "--channels", channels, "--password-stdin"], &format!("{password}\n"));
    }

    /// `understudy token create ARGS…`: the printed token.
    pub fn create_token(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        self.cli(&full).trim().to_owned()
    }

    /// Runs `understudy ARGS[0] --config F ARGS[1..]` with `stdin`; panics unless it succeeds.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> String {
        let full = self.with_config(args);
        let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(&full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "understudy {:?} failed: {}", full, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The certificate `run` generated (None before it has).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("state").join("tls").join("cert.pem")
    }

    /// One request to the API over HTTPS; `headers` are whole lines (`Cookie: …`). None while
    /// it does not answer.
    pub fn request(&self, method: &str, path: &str, headers: &[String], body: &[u8]) -> Option<Answer> {
        if self.plain_http() {
            return api::request(self.api, None, method, path, headers, body);
        }
        api::request(self.api, Some(api::tls_client(&self.cert())?), method, path, headers, body)
    }

    /// The config says `tls = false` (plain HTTP on loopback).
    fn plain_http(&self) -> bool {
        std::fs::read_to_string(&self.config).is_ok_and(|t| t.lines().any(|l| l.trim() == "tls = false"))
    }

    /// For third-party clients that cannot send a bearer token (VLC, ffmpeg's HLS reader, a
    /// plain `<video src>`): a plain-HTTP proxy on loopback that adds the admin's
    /// `Authorization` header to every request head it forwards. Needs `tls = false` in the
    /// server section (the API on plain HTTP, loopback only); returns the proxy's `HOST:PORT`.
    /// GET requests only (no bodies are forwarded): enough for playback.
    pub fn auth_proxy(&self) -> String {
        assert!(self.plain_http(), "auth_proxy needs `tls = false`");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (api, token) = (self.api, self.token.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", api)) else { continue };
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let token = token.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = c_read.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            let head = String::from_utf8_lossy(&head).into_owned();
                            let (first, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
                            let out = format!("{first}\r\nAuthorization: Bearer {token}\r\n{rest}");
                            if s_write.write_all(out.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        addr
    }

    /// A request with the admin's bearer token.
    pub fn api(&self, method: &str, path: &str) -> Option<Answer> {
        self.request(method, path, &[format!("Authorization: Bearer {}", self.token)], b"")
    }

    pub fn volume(&self) -> PathBuf {
        self.dir.path().join("disk1")
    }

    pub fn spawn_run(&self) -> RunGuard {
        RunGuard(Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("run.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn understudy run"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    /// `understudy recordings --json` for a channel; None while it fails (e.g. before the
    /// first start created the catalog).
    pub fn try_recordings(&self, channel: u32) -> Option<Vec<serde_json::Value>> {
        let mut full = vec!["recordings", "--config", self.config.to_str().unwrap()];
        let ch = channel.to_string();
        full.extend_from_slice(&["--channel", &ch, "--json"]);
        let out = Command::new(env!("CARGO_BIN_EXE_understudy")).args(&full).output().ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `understudy recordings --json` for a channel.
    pub fn recordings(&self, channel: u32) -> Vec<serde_json::Value> {
        let out = self.cli(&["recordings", "--channel", &channel.to_string(), "--json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("recordings json: {e}: {out}"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let full = self.with_config(args);
        let out = Command::new(env!("CARGO_BIN_EXE_understudy")).args(&full).output().unwrap();
        assert!(out.status.success(), "understudy {:?} failed: {}", full, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// GET on the API as the admin; the JSON of a 2xx answer, None otherwise (or while it
    /// doesn't answer).
    pub fn api_get(&self, path: &str) -> Option<serde_json::Value> {
        let a = self.api("GET", path).filter(|a| (200..300).contains(&a.status))?;
        serde_json::from_slice(&a.body).ok()
    }

    /// Every .mp4 under the volume for a channel, sorted by name (= start time).
    pub fn segment_files(&self, channel: u32) -> Vec<PathBuf> {
        let mut v = Vec::new();
        let root = self.volume().join(format!("ch{channel:03}"));
        walk(&root, &mut v);
        v.sort();
        v
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "mp4") {
            out.push(p);
        }
    }
}

/// `understudy run` as a child; killed if the test panics before stopping it.
pub struct RunGuard(pub Child);

impl std::ops::Deref for RunGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for RunGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Minimal plain HTTP/1.1 GET returning the body of a 2xx answer (for test servers; the
/// understudy API is HTTPS with a login: use [`Setup::api_get`]).
pub fn http_get(addr: &str, path: &str) -> Option<Vec<u8>> {
    let (code, _, body) = http_request(addr, path, &[])?;
    (200..300).contains(&code).then_some(body)
}

/// Minimal HTTP/1.1 GET with extra request headers: (status, response head, body).
pub fn http_request(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some((code, head, dechunk(&body)));
    }
    Some((code, head, body))
}

/// A response header's value (case-insensitive name) from a response head.
pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

pub fn sigterm(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_exit(child, Duration::from_secs(60));
}

pub fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Polls `f` every 200 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

pub async fn wait_until_async(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `ffprobe -show_entries ENTRIES` of the first video stream as CSV rows (trailing commas and
/// empty rows dropped), e.g. `"packet=pts,dts"` or `"frame=pts"`. Panics if ffprobe fails.
pub fn ffprobe_video_csv(path: &Path, entries: &str) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `ffprobe -v error`: empty stderr and success.
pub fn ffprobe_clean(path: &Path) -> Result<(), String> {
    let out = Command::new("ffprobe").args(["-v", "error", "-i"]).arg(path).output().map_err(|e| e.to_string())?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!("ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)))
    }
}

/// `ffmpeg -v error -xerror -i F -f null -`: decodes every frame.
pub fn ffmpeg_decodes(path: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!("ffmpeg {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Number of video packets, width and height, duration (s), via ffprobe.
pub fn probe(path: &Path) -> (u64, u32, u32, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
               "stream=nb_read_packets,width,height:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let n = s["nb_read_packets"].as_str().and_then(|x| x.parse().ok()).unwrap_or(0);
    let d = v["format"]["duration"].as_str().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (n, s["width"].as_u64().unwrap_or(0) as u32, s["height"].as_u64().unwrap_or(0) as u32, d)
}

/// The camsim camera ids tagged in a recorded file.
pub fn cameras_in(path: &Path) -> std::collections::BTreeSet<u32> {
    let data = std::fs::read(path).unwrap();
    understudy::camsim::find_camsim_tags(&data).into_iter().map(|(c, _)| c).collect()
}

/// GStreamer's RTSP server (recorder/tests/gst_rtsp_server.py) serving a live test pattern at
/// `/cam`; killed on drop.
pub struct GstServer {
    child: Child,
    pub port: u16,
}

impl GstServer {
    pub fn start(codec: &str) -> GstServer {
        Self::start_with(codec, "640x360", "none")
    }

    /// `audio`: none, aac, pcmu, pcma or g726.
    pub fn start_with(codec: &str, size: &str, audio: &str) -> GstServer {
        Self::start_args(&["--codec", codec, "--size", size, "--fps", "25", "--audio", audio])
    }

    /// With the script's own options (`--file`, `--shared`, `--drop-audio`…; see its usage).
    pub fn start_args(args: &[&str]) -> GstServer {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recorder/tests/gst_rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg("0")
            .args(args)
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
