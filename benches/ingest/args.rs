//! The ingest bench's command line, parsed by hand (cargo adds its own `--bench`, ignored).

use std::path::{Path, PathBuf};

/// How camsim paces the cameras.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Frames at their media rate (25 fps): a real deployment.
    Realtime,
    /// Frames as fast as each client reads (`camsim --fast`): the recorder's ceiling.
    Flatout,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Realtime => "realtime",
            Mode::Flatout => "flatout",
        }
    }
}

/// Which third-party recorder is measured beside Understudy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Ffmpeg,
    Gstreamer,
    None,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Ffmpeg => "ffmpeg",
            Peer::Gstreamer => "gstreamer",
            Peer::None => "none",
        }
    }
}

/// Audio every camera serves beside its video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audio {
    None,
    /// AAC-LC 16 kHz mono (`fixtures/audio-aac-16k.mp4`), recorded as is.
    Aac,
    /// G.711 µ-law 8 kHz (`fixtures/audio-pcmu-8k.mov`), recorded as FLAC.
    Pcmu,
}

impl Audio {
    pub fn as_str(self) -> &'static str {
        match self {
            Audio::None => "none",
            Audio::Aac => "aac",
            Audio::Pcmu => "pcmu",
        }
    }

    /// The fixture camsim takes the audio from.
    pub fn fixture(self) -> Option<PathBuf> {
        match self {
            Audio::None => None,
            Audio::Aac => Some(from_repo("fixtures/audio-aac-16k.mp4")),
            Audio::Pcmu => Some(from_repo("fixtures/audio-pcmu-8k.mov")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Args {
    pub channels: u32,
    pub seconds: u64,
    pub clip: PathBuf,
    pub audio: Audio,
    pub mode: Mode,
    /// Parent of the run directory (volumes, catalog, peer and floor output).
    pub dir: PathBuf,
    pub peer: Peer,
    /// `-` = stdout.
    pub json: Option<String>,
    pub check: bool,
    pub floor: bool,
    /// Keep the recorded files after the run.
    pub keep: bool,
    /// Stop a phase once it has written this many bytes (protects the disk in flatout mode).
    pub max_bytes: Option<u64>,
    /// The command line, for the report.
    pub command: String,
}

pub const USAGE: &str = "\
usage: cargo bench --bench ingest -- [options]
  --channels N          cameras and channels (default 100)
  --seconds S           recording time per phase (default 60)
  --clip FILE           clip camsim loops (default fixtures/h264-1080p25.mp4)
  --audio none|aac|pcmu audio on every camera besides the clip's video (default none)
  --mode realtime|flatout
                        camsim paces frames in real time (default) or as fast as read
  --dir PATH            where the run directory goes (default target/bench-ingest)
  --peer ffmpeg|gstreamer|none
                        third-party recorder to compare with (default ffmpeg)
  --json FILE           write every figure as one JSON object (- = stdout, last line)
  --check               exit non-zero if a frame is lost or a channel never records
                        (skips the floor)
  --no-floor            skip the raw-socket floor
  --max-gb G            stop a phase after G GB written (default: 20, or less on a fuller disk)
  --keep                keep the recordings (default: deleted after verification)";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A relative path is taken from the repository root (cargo runs benches from there, but a
/// user may run the executable from anywhere).
fn from_repo(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        manifest_dir().join(p)
    }
}

/// The target directory cargo builds into (`CARGO_TARGET_DIR` or `<repo>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                manifest_dir().join(p)
            }
        })
        .unwrap_or_else(|| manifest_dir().join("target"))
}

impl Args {
    pub fn parse() -> Result<Args, String> {
        let raw: Vec<String> = std::env::args().skip(1).collect();
        Args::parse_from(&raw)
    }

    pub fn parse_from(raw: &[String]) -> Result<Args, String> {
        let mut a = Args {
            channels: 100,
            seconds: 60,
            clip: from_repo("fixtures/h264-1080p25.mp4"),
            audio: Audio::None,
            mode: Mode::Realtime,
            dir: target_dir().join("bench-ingest"),
            peer: Peer::Ffmpeg,
            json: None,
            check: false,
            floor: true,
            keep: false,
            max_bytes: None,
            command: format!(
                "cargo bench --bench ingest -- {}",
                raw.iter()
                    .filter(|a| *a != "--bench")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        let mut no_floor = false;
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            match name {
                "--bench" => {}
                "--channels" => a.channels = number(name, &value(name)?)?,
                "--seconds" => a.seconds = number(name, &value(name)?)?,
                "--clip" => a.clip = from_repo(&value(name)?),
                "--dir" => a.dir = from_repo(&value(name)?),
                "--json" => a.json = Some(value(name)?),
                "--check" => a.check = true,
                "--no-floor" => no_floor = true,
                "--keep" => a.keep = true,
                "--max-gb" => {
                    let gb: f64 = value(name)?
                        .parse()
                        .map_err(|_| format!("{name}: not a number"))?;
                    if gb.is_nan() || gb <= 0.0 {
                        return Err(format!("{name} must be positive"));
                    }
                    a.max_bytes = Some((gb * 1e9) as u64);
                }
                "--mode" => {
                    a.mode = match value(name)?.as_str() {
                        "realtime" => Mode::Realtime,
                        "flatout" => Mode::Flatout,
                        other => {
                            return Err(format!("--mode {other:?}: expected realtime or flatout"))
                        }
                    }
                }
                "--audio" => {
                    a.audio = match value(name)?.as_str() {
                        "none" => Audio::None,
                        "aac" => Audio::Aac,
                        "pcmu" => Audio::Pcmu,
                        other => {
                            return Err(format!("--audio {other:?}: expected none, aac or pcmu"))
                        }
                    }
                }
                "--peer" => {
                    a.peer = match value(name)?.as_str() {
                        "ffmpeg" => Peer::Ffmpeg,
                        "gstreamer" => Peer::Gstreamer,
                        "none" => Peer::None,
                        other => {
                            return Err(format!(
                                "--peer {other:?}: expected ffmpeg, gstreamer or none"
                            ))
                        }
                    }
                }
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if a.channels == 0 || a.channels > 4096 {
            return Err("--channels must be in 1..=4096".into());
        }
        if a.seconds == 0 {
            return Err("--seconds must be at least 1".into());
        }
        // The floor costs a full extra phase; CI's check run skips it.
        a.floor = !no_floor && !a.check;
        Ok(a)
    }
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name} {v:?}: not a valid number"))
}
