//! What a user would run instead: one ffmpeg (or gst-launch) process per camera, copying the
//! stream into 60 s MP4 segments, started at once against a fresh camsim and stopped with
//! SIGINT (both tools finish their last file on it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::{Args, Audio, Mode, Peer};
use crate::camsim::{Camsim, Sent};
use crate::sys::{self, Cpu};

pub struct PeerRun {
    pub tool: &'static str,
    pub window_s: f64,
    /// Sum over the processes, read from /proc just before SIGINT.
    pub cpu: Cpu,
    /// Sum of each process's VmHWM and of its Pss (shared pages split), just before SIGINT.
    pub rss_sum_kib: u64,
    pub pss_sum_kib: u64,
    /// Processes gone before the stop (crashed or refused).
    pub exited_early: u32,
    /// Processes that needed SIGKILL after SIGINT.
    pub killed: u32,
    pub camsim_cpu: Option<Cpu>,
    pub sent: Vec<Sent>,
    /// Output files per channel, in order.
    pub files: Vec<Vec<PathBuf>>,
    pub bytes: u64,
    pub stopped_at_budget: bool,
}

/// The executable for `peer`, or why it can't run.
pub fn available(peer: Peer) -> Result<PathBuf, String> {
    let name = match peer {
        Peer::Ffmpeg => "ffmpeg",
        Peer::Gstreamer => "gst-launch-1.0",
        Peer::None => return Err("--peer none".into()),
    };
    sys::which(name).ok_or_else(|| {
        format!(
            "{name} is not installed (apt-get install {})",
            if peer == Peer::Ffmpeg {
                "ffmpeg"
            } else {
                "gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
            }
        )
    })
}

/// The peer's command for one camera. GStreamer records the video only; ffmpeg copies AAC and,
/// like Understudy, turns G.711 into FLAC (MP4 cannot hold G.711 for browsers).
fn command(peer: Peer, audio: Audio, exe: &Path, url: &str, out_dir: &Path, codec: &str) -> Command {
    let pattern = out_dir.join("out%03d.mp4").display().to_string();
    let mut c = Command::new(exe);
    match peer {
        Peer::Gstreamer => {
            let (depay, parse) = if codec == "hevc" {
                ("rtph265depay", "h265parse")
            } else {
                ("rtph264depay", "h264parse")
            };
            c.args([
                "-q",
                "-e",
                "rtspsrc",
                &format!("location={url}"),
                "protocols=tcp",
                "!",
                depay,
                "!",
                parse,
                "!",
                "splitmuxsink",
            ])
            .arg(format!("location={pattern}"))
            .arg("max-size-time=60000000000");
        }
        _ => {
            c.args([
                "-nostdin",
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                url,
                "-c",
                "copy",
            ]);
            if audio == Audio::Pcmu {
                // FLAC in MP4 is "experimental" to ffmpeg 5.1's mp4 muxer, inside segment.
                c.args(["-c:a", "flac", "-segment_format_options", "strict=experimental"]);
            }
            c.args([
                "-f",
                "segment",
                "-segment_time",
                "60",
                "-reset_timestamps",
                "1",
            ])
            .arg(pattern);
        }
    }
    c
}

pub fn run(
    args: &Args,
    exe: &Path,
    dir: &Path,
    codec: &str,
    budget: u64,
) -> Result<PeerRun, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let camsim = Camsim::start(
        args.channels,
        &args.clip,
        args.audio.fixture().as_deref(),
        args.mode == Mode::Flatout,
        args.seconds + 120,
        &dir.join("camsim.log"),
    )?;
    let mut children: Vec<Child> = Vec::new();
    let mut out_dirs = Vec::new();
    let cam0 = camsim.cpu();
    let t0 = Instant::now();
    for ch in 1..=args.channels {
        let out = dir.join(format!("ch{ch:03}"));
        std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let log = std::fs::File::create(out.join("stderr.log"))
            .map_err(|e| format!("creating a log in {}: {e}", out.display()))?;
        let child = command(args.peer, args.audio, exe, &camsim.url(ch), &out, codec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("starting {} for channel {ch}: {e}", exe.display()));
            }
        }
        out_dirs.push(out);
    }
    let deadline = t0 + Duration::from_secs(args.seconds);
    let mut stopped_at_budget = false;
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_millis(1000).min(deadline.saturating_duration_since(Instant::now())),
        );
        if args.mode == Mode::Flatout && sys::dir_bytes(dir) >= budget {
            stopped_at_budget = true;
            break;
        }
    }
    let camsim_cpu = camsim.cpu().zip(cam0).map(|(b, a)| b.since(a));
    let (mut cpu, mut rss, mut pss, mut exited_early) = (Cpu::default(), 0, 0, 0);
    for c in &mut children {
        let pid = c.id();
        match (c.try_wait(), sys::cpu_of(pid)) {
            (Ok(None), Some(used)) => {
                cpu = cpu.plus(used);
                rss += sys::status_kib(Some(pid), "VmHWM").unwrap_or(0);
                pss += sys::pss_kib(pid).unwrap_or(0);
            }
            _ => exited_early += 1,
        }
    }
    for c in &children {
        sys::signal(c.id(), libc::SIGINT);
    }
    let window_s = t0.elapsed().as_secs_f64();
    // One 30 s grace period for all of them, then SIGKILL whoever is left.
    let grace = Instant::now() + Duration::from_secs(30);
    let mut killed = 0;
    for c in &mut children {
        let left = grace
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        if !sys::wait_or_kill(c, left) {
            killed += 1;
        }
    }
    let sent = camsim.stop()?;
    let files: Vec<Vec<PathBuf>> = out_dirs
        .iter()
        .map(|d| sys::files_with_ext(d, ".mp4"))
        .collect();
    let bytes = files
        .iter()
        .flatten()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    Ok(PeerRun {
        tool: args.peer.as_str(),
        window_s,
        cpu,
        rss_sum_kib: rss,
        pss_sum_kib: pss,
        exited_early,
        killed,
        camsim_cpu,
        sent,
        files,
        bytes,
        stopped_at_budget,
    })
}
