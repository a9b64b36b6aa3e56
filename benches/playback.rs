//! Playback bench: time to first byte and throughput of `GET /api/channels/1/play.mp4` for
//! 1 min, 1 h and 6 h ranges, and 20 viewers at once, against `understudy run` serving a
//! recording synthesized at flat-out speed through the storage crate (frame sizes and key
//! frames cycle through fixtures/h264-1080p25.mp4's, scaled by `--scale`; payloads are zeros;
//! nothing decodes them). Warm page cache (the recording was just written). The API is asked
//! as an admin with a bearer token (made with `understudy user add` / `token create`), first
//! over plain HTTP on loopback (`tls = false`), then over HTTPS (the certificate `run` makes);
//! any answer but 2xx, or one without a complete head or body, fails the bench.
//!
//! `cargo bench --bench playback [-- --hours 6 --scale 0.25 --no-tls]`; see benches/README.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use understudy::commands::time::format_90k as fmt;
use understudy_storage::{InputFrame, Store, StoreConfig, TrackParams, VolumeConfig};

const CLIP: &str = "fixtures/h264-1080p25.mp4";
const FRAME_90K: i64 = 3600;
/// 2026-01-01T00:00:00Z, 90 kHz.
const START_90K: i64 = 1_767_225_600 * 90_000;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (size, key) of the clip's frames.
fn clip_frames() -> Vec<(usize, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size,flags", "-of", "csv=p=0"])
        .arg(repo().join(CLIP))
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (size, flags) = l.split_once(',')?;
            Some((size.parse().ok()?, flags.contains('K')))
        })
        .collect()
}

fn track_params() -> Arc<TrackParams> {
    let file = std::fs::read(repo().join(CLIP)).expect("fixture clip readable");
    let stsd = file.windows(4).position(|w| w == b"stsd").expect("clip has an stsd box");
    let at = stsd + 4 + 8;
    let size = u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
    Arc::new(TrackParams {
        codec: "avc1.640028".into(),
        width: 1920,
        height: 1080,
        sample_entry: Bytes::copy_from_slice(&file[at..at + size]),
        audio: None,
    })
}

fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig::new("bench-playback", dir.join("state"), vec![VolumeConfig { path: dir.join("disk"), max_bytes: None, reserve: None }])
}

/// Writes `hours` of channel 1 as fast as the disk takes it.
fn synthesize(dir: &Path, hours: f64, scale: f64) -> u64 {
    let store = Store::open(store_config(dir)).expect("store opens");
    let params = track_params();
    let clip = clip_frames();
    let max = clip.iter().map(|f| f.0).max().unwrap_or(1);
    let zeros = Bytes::from(vec![0u8; max]);
    let mut w = store.channel_writer(1, 4_000_000).expect("channel writer");
    let n = (hours * 3600.0 * 25.0) as usize;
    let mut bytes = 0u64;
    for i in 0..n {
        let (size, key) = clip[i % clip.len()];
        let size = ((size as f64 * scale) as usize).max(16);
        bytes += size as u64;
        let frame = InputFrame { time_90k: START_90K + i as i64 * FRAME_90K, cts_offset: 0, key, data: zeros.slice(..size) };
        w.push(&params, frame).expect("frame accepted");
        // The writer drops whole GOPs rather than block when the disk falls behind: pace it.
        if i % 250 == 0 {
            while w.stats().frames_written() + 2500 < i as u64 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    w.close().expect("segments durable");
    store.shutdown().expect("store shuts down");
    bytes
}

struct Fetch {
    first_byte: Duration,
    total: Duration,
    bytes: u64,
}

/// How to reach the API: its address, the admin's token, and TLS (trusting `run`'s own
/// certificate) or plain HTTP.
#[derive(Clone)]
struct Target {
    addr: String,
    token: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A connection from `source` (each viewer its own loopback address: the server limits
/// streams per client address).
fn connect(addr: &str, source: std::net::Ipv4Addr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind((source, 0).into()).expect("bind the source address");
    let stream = rt.block_on(sock.connect(addr.parse().expect("address"))).expect("connect");
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("read timeout");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// GETs `path` from `source`, measuring the first body byte and the whole body. Panics on
/// anything but a 2xx answer with a head and exactly `Content-Length` body bytes.
fn fetch(t: &Target, path: &str, source: std::net::Ipv4Addr) -> Fetch {
    let t0 = Instant::now();
    let tcp = connect(&t.addr, source);
    let mut s: Box<dyn ReadWrite> = match &t.tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
            let conn = rustls::ClientConnection::new(Arc::clone(cfg), name).expect("TLS client");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    // One write (one TLS record): several small ones meet Nagle and delayed ACKs (+40 ms).
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", t.addr, t.token);
    s.write_all(req.as_bytes()).expect("request");
    s.flush().expect("request");
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut first_byte = None;
    let mut length = None;
    let mut bytes = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // A TLS peer closing without close_notify after the whole body: the length decides.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && length.is_some() => 0,
            Err(e) => panic!("GET {path}: reading the answer: {e}"),
        };
        if n == 0 {
            break;
        }
        if length.is_none() {
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..p]).into_owned();
                let body = String::from_utf8_lossy(&head[p + 4..]).into_owned();
                assert!(text.starts_with("HTTP/1.1 2"), "GET {path}: {text}\n{body}");
                let len: u64 = text
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().to_owned()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("GET {path}: no Content-Length: {text}"));
                length = Some(len);
                bytes += (head.len() - p - 4) as u64;
            }
        } else {
            bytes += n as u64;
        }
        if first_byte.is_none() && bytes > 0 {
            first_byte = Some(t0.elapsed());
        }
    }
    let Some(length) = length else { panic!("GET {path}: the connection closed before a complete head: {:?}", String::from_utf8_lossy(&head)) };
    assert_eq!(bytes, length, "GET {path}: body length");
    assert!(length > 0, "GET {path}: empty body");
    Fetch { first_byte: first_byte.unwrap_or_else(|| panic!("GET {path}: no body byte")), total: t0.elapsed(), bytes }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Runs `understudy ARGS` (with stdin), panicking with its stderr unless it succeeds.
fn cli(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("understudy finishes");
    assert!(out.status.success(), "understudy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes the config (`tls = false`: plain HTTP, allowed on loopback).
fn write_config(dir: &Path, addr: &str, tls: bool) -> PathBuf {
    let config = dir.join("understudy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"bench\"\nchannels = 1\nstate_dir = {:?}\nlisten = \"{addr}\"\n{}\n[[volume]]\npath = {:?}\n",
            dir.join("state").display().to_string(),
            if tls { "" } else { "tls = false\n" },
            dir.join("disk").display().to_string()
        ),
    )
    .expect("config written");
    config
}

/// Writes the config and starts `run`, waiting until it listens.
fn start(dir: &Path, addr: &str, tls: bool) -> std::process::Child {
    let config = write_config(dir, addr, tls);
    let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("run.log")).expect("log")))
        .spawn()
        .expect("understudy run starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "understudy run did not listen on {addr}; see {}", dir.join("run.log").display());
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// The TLS client configuration trusting only the certificate `run` made in `state_dir`.
fn tls_client(dir: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let cert = dir.join("state/tls/cert.pem");
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("certificate");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// The 1 min / 1 h / 6 h ranges and the 20 viewers against one server.
fn measure(t: &Target, hours: f64, label: &str) {
    let end = START_90K + (hours * 3600.0 * 90_000.0) as i64;
    println!("{label}");
    println!("range     first byte   throughput        bytes");
    for (name, secs) in [("1 min", 60.0), ("1 h", 3600.0), ("6 h", 6.0 * 3600.0)] {
        if secs > hours * 3600.0 {
            continue;
        }
        let from = end - (secs * 90_000.0) as i64;
        let path = format!("/api/channels/1/play.mp4?from={}&to={}", fmt(from), fmt(end));
        let mut runs: Vec<Fetch> = (0..3).map(|_| fetch(t, &path, std::net::Ipv4Addr::LOCALHOST)).collect();
        runs.sort_by_key(|f| f.first_byte);
        let f = &runs[1];
        println!(
            "{name:<8} {:>8.1} ms {:>10.0} MB/s {:>12}",
            f.first_byte.as_secs_f64() * 1e3,
            f.bytes as f64 / 1e6 / f.total.as_secs_f64(),
            f.bytes
        );
    }
    // 20 viewers at once, each a different 1 h (or whole) range.
    let viewers = 20;
    let span = ((hours * 3600.0).min(3600.0) * 90_000.0) as i64;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..viewers)
        .map(|i| {
            let t = t.clone();
            let total = end - START_90K - span;
            let from = START_90K + total * i / viewers.max(2);
            let path = format!("/api/channels/1/play.mp4?from={}&to={}", fmt(from), fmt(from + span));
            std::thread::spawn(move || fetch(&t, &path, std::net::Ipv4Addr::new(127, 0, 1, i as u8 + 1)))
        })
        .collect();
    let results: Vec<Fetch> = handles.into_iter().map(|h| h.join().expect("viewer thread")).collect();
    let wall = t0.elapsed().as_secs_f64();
    let bytes: u64 = results.iter().map(|f| f.bytes).sum();
    let worst = results.iter().map(|f| f.first_byte).max().unwrap_or_default();
    println!(
        "{viewers} viewers × {:.0} min: worst first byte {:.1} ms, aggregate {:.0} MB/s ({} bytes in {:.2} s)",
        span as f64 / 90_000.0 / 60.0,
        worst.as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / wall,
        bytes,
        wall
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench` probes harness-less benches this way
    }
    let hours = arg("--hours", 6.0);
    let scale = arg("--scale", 0.25);
    let dir: PathBuf = repo().join("target/bench-playback");
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let written = synthesize(&dir, hours, scale);
    eprintln!("synthesized {hours} h ({:.2} GB) in {:.1} s", written as f64 / 1e9, t.elapsed().as_secs_f64());

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    // An admin and a token, as an operator makes them (the config must exist first).
    let config = write_config(&dir, &addr, false);
    let config = config.to_str().expect("UTF-8 path");
    cli(&["user", "add", "--config", config, "bench", "--role", "admin", "--channels", "all", "--password-stdin"], "bench-admin-password\n");
    let token = cli(&["token", "create", "--config", config, "--user", "bench"], "");
    assert!(!token.is_empty() && !token.contains(' '), "token create printed {token:?}");

    let child = start(&dir, &addr, false);
    measure(&Target { addr: addr.clone(), token: token.clone(), tls: None }, hours, "plain HTTP on loopback (tls = false)");
    stop(child);
    if !std::env::args().any(|a| a == "--no-tls") {
        let child = start(&dir, &addr, true);
        let tls = tls_client(&dir);
        measure(&Target { addr, token, tls: Some(tls) }, hours, "HTTPS (TLS 1.3, rustls both ends)");
        stop(child);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
