//! The physical floor: the same bytes read from the same sockets with no parsing. A minimal
//! RTSP client (RFC 2326 §10.2 DESCRIBE, §10.4 SETUP with RTP/AVP/TCP interleaved §10.12,
//! §10.5 PLAY) per channel, then everything read goes to one file per channel as is. One
//! thread fdatasyncs every file once a second, like Understudy's syncer, so both pay for
//! the same durability.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::{Args, Mode};
use crate::camsim::{Camsim, Sent};
use crate::sys::{self, Cpu};

pub struct FloorRun {
    pub window_s: f64,
    pub cpu: Cpu,
    pub bytes: u64,
    pub failed: Vec<String>,
    pub camsim_cpu: Option<Cpu>,
    pub sent: Vec<Sent>,
    pub stopped_at_budget: bool,
}

/// Reads one RTSP response: status code, headers (lower-cased names), body; `buf` keeps what
/// followed it (the first interleaved bytes after PLAY).
async fn response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading response: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading body: {e}"))?;
        if n == 0 {
            return Err("connection closed inside a body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Ok((status, headers, body))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    text: String,
) -> Result<(Vec<(String, String)>, Vec<u8>), String> {
    s.write_all(text.as_bytes())
        .await
        .map_err(|e| format!("sending request: {e}"))?;
    let (status, h, body) = response(s, buf).await?;
    if status != 200 {
        return Err(format!(
            "{} answered {status}",
            text.split_whitespace().next().unwrap_or("?")
        ));
    }
    Ok((h, body))
}

/// Connects, sets up and plays `url`, then copies the socket into `file` until `stop`.
async fn channel(
    url: String,
    file: Arc<File>,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> Result<(), String> {
    let hostport = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .ok_or("bad url")?;
    let mut s = TcpStream::connect(hostport)
        .await
        .map_err(|e| format!("{url}: connect: {e}"))?;
    let mut buf = Vec::new();
    let (h, sdp) = request(
        &mut s,
        &mut buf,
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"),
    )
    .await?;
    let base = header(&h, "content-base")
        .unwrap_or(&url)
        .trim_end_matches('/')
        .to_owned();
    // The media's control attribute (the last one: the session-level one comes first).
    let control = String::from_utf8_lossy(&sdp)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=control:"))
        .next_back()
        .unwrap_or("*")
        .to_owned();
    let track = if control.starts_with("rtsp://") {
        control
    } else {
        format!("{base}/{control}")
    };
    let (h, _) = request(&mut s, &mut buf, format!("SETUP {track} RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")).await?;
    let session = header(&h, "session")
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| format!("{url}: SETUP without Session"))?
        .to_owned();
    request(
        &mut s,
        &mut buf,
        format!(
            "PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\nRange: npt=0.000-\r\n\r\n"
        ),
    )
    .await?;
    let mut f = &*file;
    f.write_all(&buf).map_err(|e| format!("writing: {e}"))?;
    bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    let mut chunk = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // Wake up now and then to notice `stop` even if the camera goes quiet.
        let n = match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(r) => r.map_err(|e| format!("{url}: read: {e}"))?,
        };
        if n == 0 {
            return Err(format!("{url}: camera closed the connection"));
        }
        f.write_all(&chunk[..n])
            .map_err(|e| format!("writing: {e}"))?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

pub fn run(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    dir: &Path,
    budget: u64,
) -> Result<FloorRun, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let camsim = Camsim::start(
        args.channels,
        &args.clip,
        args.audio.fixture().as_deref(),
        args.mode == Mode::Flatout,
        args.seconds + 120,
        &dir.join("camsim.log"),
    )?;
    let mut files = Vec::new();
    for ch in 1..=args.channels {
        let p: PathBuf = dir.join(format!("ch{ch:03}.rtp"));
        files.push(Arc::new(
            File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))?,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let syncer = {
        let (files, stop) = (files.clone(), stop.clone());
        std::thread::Builder::new()
            .name("floor-syncer".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    for f in &files {
                        let _ = f.sync_data();
                    }
                }
            })
            .map_err(|e| format!("starting the floor's syncer: {e}"))?
    };
    let cam0 = camsim.cpu();
    let cpu0 = sys::cpu_self();
    let t0 = Instant::now();
    let (results, stopped_at_budget, camsim_cpu, window_s, cpu) = rt.block_on(async {
        let tasks: Vec<_> = (1..=args.channels)
            .map(|ch| {
                tokio::spawn(channel(
                    camsim.url(ch),
                    files[ch as usize - 1].clone(),
                    stop.clone(),
                    bytes.clone(),
                ))
            })
            .collect();
        let deadline = t0 + Duration::from_secs(args.seconds);
        let mut stopped_at_budget = false;
        while Instant::now() < deadline {
            tokio::time::sleep(
                Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
            if bytes.load(Ordering::Relaxed) >= budget {
                stopped_at_budget = true;
                break;
            }
        }
        let camsim_cpu = camsim.cpu().zip(cam0).map(|(b, a)| b.since(a));
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for t in tasks {
            results.push(
                t.await
                    .map_err(|e| format!("floor task: {e}"))
                    .and_then(|r| r),
            );
        }
        let window_s = t0.elapsed().as_secs_f64();
        let cpu = sys::cpu_self().since(cpu0);
        (results, stopped_at_budget, camsim_cpu, window_s, cpu)
    });
    let _ = syncer.join();
    let sent = camsim.stop()?;
    Ok(FloorRun {
        window_s,
        cpu,
        bytes: bytes.load(Ordering::Relaxed),
        failed: results.into_iter().filter_map(Result::err).collect(),
        camsim_cpu,
        sent,
        stopped_at_budget,
    })
}
