//! Ground truth from the files: camsim tags every frame with an SEI `camsim cam=N frame=F`
//! (F counts from 0 in each RTSP session, and frame 0 is a key frame), which survives into any
//! recording that keeps the bitstream (Understudy's fMP4, ffmpeg's and GStreamer's MP4). Reading
//! the tags back tells exactly which frames a file holds; ffprobe counts packets independently.

use std::path::{Path, PathBuf};
use std::process::Command;

use understudy::camsim::find_camsim_tags;

/// What one channel's files hold, by camsim frame number.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub files: usize,
    pub bytes: u64,
    /// Frames found (tags of the expected camera).
    pub recorded: u64,
    /// Runs of frame numbers: a number lower than the previous one starts a new session.
    pub sessions: u32,
    /// Sum over sessions of the first recorded frame number: frames the camera sent in that
    /// session before the first one recorded (a recorder waits for a key frame).
    pub start_skip: u64,
    /// Each session's first recorded frame number.
    pub session_skips: Vec<u64>,
    /// Frame numbers missing between the first and last recorded frame of a session: lost.
    pub gaps: u64,
    /// Frames recorded twice.
    pub duplicates: u64,
    /// Tags of another camera: a channel crossed with another.
    pub foreign: u64,
    /// Last frame number of the last session + 1 (0 if nothing).
    pub next_frame: u64,
}

/// Reads `files` in order and tallies camera `camera`'s tags.
pub fn tally(camera: u32, files: &[PathBuf]) -> Result<Tally, String> {
    let mut t = Tally {
        files: files.len(),
        ..Tally::default()
    };
    let mut prev: Option<u64> = None;
    for f in files {
        let data = std::fs::read(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        t.bytes += data.len() as u64;
        for (cam, frame) in find_camsim_tags(&data) {
            if cam != camera {
                t.foreign += 1;
                continue;
            }
            match prev {
                Some(p) if frame == p => t.duplicates += 1,
                Some(p) if frame > p => {
                    t.gaps += frame - p - 1;
                    t.recorded += 1;
                }
                _ => {
                    t.sessions += 1;
                    t.start_skip += frame;
                    t.session_skips.push(frame);
                    t.recorded += 1;
                }
            }
            prev = Some(frame);
        }
    }
    t.next_frame = prev.map_or(0, |p| p + 1);
    Ok(t)
}

/// Tallies every (camera, files) job on all cores.
pub fn tally_all(jobs: Vec<(u32, Vec<PathBuf>)>) -> Vec<Result<Tally, String>> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Tally, String>>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((cam, files)) = jobs.get(i) else {
                    break;
                };
                let r = tally(*cam, files);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("tally worker failed".into()))
        })
        .collect()
}

/// Video packets in `file` by `ffprobe -count_packets` (reads the container, decodes nothing).
pub fn ffprobe_packets(file: &Path) -> Result<u64, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .map_err(|e| format!("running ffprobe on {}: {e}", file.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_end_matches(',').parse().map_err(|_| {
        format!(
            "ffprobe {}: unexpected output {:?} {}",
            file.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Packets of every file, summed.
pub fn ffprobe_total(files: &[PathBuf]) -> Result<u64, String> {
    files.iter().map(|f| ffprobe_packets(f)).sum()
}

/// Channels to cross-check with ffprobe: all of them up to 12, else 12 spread evenly.
pub fn sample_channels(n: u32) -> Vec<u32> {
    if n <= 12 {
        return (1..=n).collect();
    }
    let mut v: Vec<u32> = (0..12).map(|i| 1 + i * (n - 1) / 11).collect();
    v.dedup();
    v
}

/// What the clip is: frames, key-frame interval, rate, codec, as ffprobe sees it.
#[derive(Clone, Debug)]
pub struct ClipInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frames: u64,
    pub gop_frames: u64,
    pub bitrate_bps: u64,
}

impl ClipInfo {
    pub fn gop_seconds(&self) -> f64 {
        self.gop_frames as f64 / self.fps
    }

    pub fn probe(clip: &Path) -> Result<ClipInfo, String> {
        let run = |args: &[&str]| -> Result<String, String> {
            let out = Command::new("ffprobe")
                .args(["-v", "error", "-select_streams", "v:0"])
                .args(args)
                .arg(clip)
                .output()
                .map_err(|e| format!("running ffprobe (is ffmpeg installed?): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ffprobe {}: {}",
                    clip.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let s = run(&[
            "-show_entries",
            "stream=codec_name,width,height,avg_frame_rate",
            "-of",
            "default=nw=1",
        ])?;
        let field = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or("")
                .to_owned()
        };
        let fps = match field("avg_frame_rate").split_once('/') {
            Some((a, b)) => {
                a.parse::<f64>().unwrap_or(25.0) / b.parse::<f64>().unwrap_or(1.0).max(1.0)
            }
            None => 25.0,
        };
        let flags = run(&["-show_entries", "packet=flags,size", "-of", "csv=p=0"])?;
        let (mut frames, mut keys, mut bytes) = (0u64, 0u64, 0u64);
        for l in flags.lines() {
            let mut it = l.split(',');
            let size: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let key = it.next().is_some_and(|f| f.contains('K'));
            frames += 1;
            bytes += size;
            keys += u64::from(key);
        }
        if frames == 0 {
            return Err(format!("{}: no video packets", clip.display()));
        }
        Ok(ClipInfo {
            codec: field("codec_name"),
            width: field("width").parse().unwrap_or(0),
            height: field("height").parse().unwrap_or(0),
            fps,
            frames,
            gop_frames: frames / keys.max(1),
            bitrate_bps: (bytes as f64 * 8.0 * fps / frames as f64) as u64,
        })
    }
}
