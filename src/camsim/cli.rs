//! The `understudy camsim` command: arguments, scheduled faults, and running until cancelled.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::config::{AuthConfig, AuthScheme, CamSimConfig, CameraSpec, Fault, Pacing};
use super::error::CamSimError;
use super::server::CamSim;

/// Default clip, relative to the working directory (the repository root).
const DEFAULT_CLIP: &str = "fixtures/h264-720p25.mp4";

/// Arguments of `understudy camsim`. `Debug` never shows the password.
#[derive(Clone, clap::Args)]
pub struct CamsimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8554")]
    pub listen: SocketAddr,
    /// Number of cameras, served at /cam/1 .. /cam/N.
    #[arg(long, default_value_t = 4)]
    pub cameras: u32,
    /// MP4 clip to loop (repeatable; camera i uses clip[(i-1) % count]).
    #[arg(long = "clip", value_name = "FILE")]
    pub clips: Vec<PathBuf>,
    /// MP4/QuickTime file whose audio track (AAC or G.711 µ-law) every camera also serves
    /// (repeatable; camera i uses audio[(i-1) % count]). Without it, a clip's own audio
    /// track is served if it has one.
    #[arg(long = "audio", value_name = "FILE")]
    pub audio: Vec<PathBuf>,
    /// Make cameras' RTP clocks run N parts per million fast (negative: slow): N for every
    /// camera, CAM:N for one (repeatable; the per-camera value wins).
    #[arg(long = "clock-ppm", value_name = "[CAM:]N", allow_hyphen_values = true)]
    pub clock_ppm: Vec<ClockPpm>,
    /// Send frames as fast as clients read instead of in real time.
    #[arg(long)]
    pub fast: bool,
    /// Require this user name (with --password).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// Require this password (with --user).
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// Authentication scheme when --user is given.
    #[arg(long, value_enum, default_value = "digest")]
    pub auth: AuthScheme,
    /// Inject a fault: CAM:KIND@SECS, e.g. 2:drop-mid-gop@10 (repeatable). KIND is one of
    /// stall, drop-mid-gop, garbage, reject-auth, change-params, rtp-back, rtp-forward.
    #[arg(long = "fault", value_name = "CAM:KIND@SECS")]
    pub faults: Vec<FaultSpec>,
    /// Close connections that send nothing for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub session_timeout: u64,
}

impl fmt::Debug for CamsimArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CamsimArgs")
            .field("listen", &self.listen)
            .field("cameras", &self.cameras)
            .field("clips", &self.clips)
            .field("audio", &self.audio)
            .field("clock_ppm", &self.clock_ppm)
            .field("fast", &self.fast)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("faults", &self.faults)
            .field("session_timeout", &self.session_timeout)
            .finish()
    }
}

impl CamsimArgs {
    /// The simulator configuration these arguments describe.
    pub fn to_config(&self) -> Result<CamSimConfig, CamSimError> {
        if self.cameras == 0 {
            return Err(CamSimError::Config("--cameras must be at least 1".into()));
        }
        let clips = if self.clips.is_empty() {
            vec![PathBuf::from(DEFAULT_CLIP)]
        } else {
            self.clips.clone()
        };
        for c in &self.clock_ppm {
            if c.camera.is_some_and(|id| id == 0 || id > self.cameras) {
                return Err(CamSimError::Config(format!(
                    "--clock-ppm {c}: no such camera (cameras are 1..={})",
                    self.cameras
                )));
            }
        }
        let ppm_of = |id: u32| {
            let one = self.clock_ppm.iter().rev().find(|c| c.camera == Some(id));
            let all = self.clock_ppm.iter().rev().find(|c| c.camera.is_none());
            one.or(all).map_or(0, |c| c.ppm)
        };
        let cameras = (1..=self.cameras)
            .map(|id| {
                let i = id as usize - 1;
                let mut spec = CameraSpec::new(id, clips[i % clips.len()].clone());
                spec.audio = (!self.audio.is_empty())
                    .then(|| self.audio[i % self.audio.len()].clone());
                spec.clock_ppm = ppm_of(id);
                spec
            })
            .collect();
        let auth = match (&self.user, &self.password) {
            (Some(username), Some(password)) => Some(AuthConfig {
                username: username.clone(),
                password: password.clone(),
                scheme: self.auth,
            }),
            (None, None) => None,
            _ => {
                return Err(CamSimError::Config(
                    "--user and --password go together".into(),
                ))
            }
        };
        for f in &self.faults {
            if f.camera == 0 || f.camera > self.cameras {
                return Err(CamSimError::Config(format!(
                    "--fault {f}: no camera {} (cameras are 1..={})",
                    f.camera, self.cameras
                )));
            }
        }
        Ok(CamSimConfig {
            listen: self.listen,
            cameras,
            pacing: if self.fast {
                Pacing::Fast
            } else {
                Pacing::Realtime
            },
            auth,
            session_timeout: Duration::from_secs(self.session_timeout),
        })
    }
}

/// A camera clock rate error from the command line: `N` (every camera) or `CAM:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockPpm {
    pub camera: Option<u32>,
    pub ppm: i32,
}

/// Rate errors beyond this are not a clock any more (10 %).
const MAX_PPM: i32 = 100_000;

impl fmt::Display for ClockPpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.camera {
            Some(c) => write!(f, "{c}:{}", self.ppm),
            None => write!(f, "{}", self.ppm),
        }
    }
}

impl FromStr for ClockPpm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected N or CAM:N (ppm, |N| <= {MAX_PPM}), e.g. 2:2000");
        let (camera, ppm) = match s.split_once(':') {
            Some((c, n)) => (Some(c.trim().parse().map_err(|_| usage())?), n),
            None => (None, s),
        };
        let ppm: i32 = ppm.trim().parse().map_err(|_| usage())?;
        if ppm.abs() > MAX_PPM {
            return Err(usage());
        }
        Ok(ClockPpm { camera, ppm })
    }
}

/// A fault scheduled from the command line: `CAM:KIND@SECS`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultSpec {
    pub camera: u32,
    pub fault: Fault,
    /// Delay after start-up.
    pub after: Duration,
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}",
            self.camera,
            self.fault,
            self.after.as_secs_f64()
        )
    }
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected CAM:KIND@SECS, e.g. 2:stall@10");
        let (cam, rest) = s.split_once(':').ok_or_else(usage)?;
        let (kind, secs) = rest.split_once('@').ok_or_else(usage)?;
        let camera = cam.trim().parse().map_err(|_| usage())?;
        let fault = kind.trim().parse()?;
        let secs: f64 = secs.trim().parse().map_err(|_| usage())?;
        let after = Duration::try_from_secs_f64(secs).map_err(|_| usage())?;
        Ok(FaultSpec {
            camera,
            fault,
            after,
        })
    }
}

/// Runs the simulator until `shutdown` is cancelled: logs the camera URLs, injects the
/// scheduled faults, and prints the counters at the end.
pub async fn run_cli(args: CamsimArgs, shutdown: CancellationToken) -> Result<(), CamSimError> {
    let cfg = args.to_config()?;
    let sim = CamSim::start(cfg.clone()).await?;
    for cam in &cfg.cameras {
        let audio = cam.audio.as_ref().map(|a| a.display().to_string());
        info!(camera = cam.id, url = %sim.url(cam.id), clip = %cam.clip.display(), ?audio,
              clock_ppm = cam.clock_ppm, "camera ready");
    }
    let mut schedule = args.faults.clone();
    schedule.sort_by_key(|f| f.after);
    let started = tokio::time::Instant::now();
    let faults = async {
        for f in &schedule {
            tokio::time::sleep_until(started + f.after).await;
            info!(camera = f.camera, fault = %f.fault, "scheduled fault");
            sim.inject(f.camera, f.fault);
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = faults => {}
    }
    let stats = sim.stats();
    sim.shutdown().await;
    // A closed stdout (camsim is a server: SIGPIPE stays ignored) must not panic at exit.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "camera  sessions  frames_sent  bytes_sent");
    for c in stats.cameras.iter().chain(std::iter::once(&stats.total)) {
        let name = if c.id == 0 {
            "total".to_string()
        } else {
            c.id.to_string()
        };
        let _ = writeln!(
            out,
            "{name:>6}  {:>8}  {:>11}  {:>10}",
            c.sessions, c.frames_sent, c.bytes_sent
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: CamsimArgs,
    }

    #[test]
    fn parses_arguments() {
        let cli = Cli::try_parse_from([
            "x",
            "--cameras",
            "3",
            "--clip",
            "a.mp4",
            "--clip",
            "b.mp4",
            "--fast",
            "--user",
            "u",
            "--password",
            "pw",
            "--auth",
            "basic",
            "--fault",
            "2:drop-mid-gop@1.5",
            "--audio",
            "x.mov",
            "--clock-ppm",
            "-300",
            "--clock-ppm",
            "2:2000",
        ])
        .unwrap();
        let cfg = cli.args.to_config().unwrap();
        let clips: Vec<_> = cfg
            .cameras
            .iter()
            .map(|c| c.clip.to_str().unwrap())
            .collect();
        assert_eq!(clips, ["a.mp4", "b.mp4", "a.mp4"]);
        assert!(cfg.cameras.iter().all(|c| c.audio == Some(PathBuf::from("x.mov"))));
        let ppm: Vec<i32> = cfg.cameras.iter().map(|c| c.clock_ppm).collect();
        assert_eq!(ppm, [-300, 2000, -300]);
        assert_eq!(cfg.pacing, Pacing::Fast);
        assert_eq!(cfg.auth.as_ref().unwrap().scheme, AuthScheme::Basic);
        assert_eq!(
            cli.args.faults,
            [FaultSpec {
                camera: 2,
                fault: Fault::DropMidGop,
                after: Duration::from_millis(1500)
            }]
        );
        assert!(!format!("{:?}", cli.args).contains("pw\""));
        let defaults = Cli::try_parse_from(["x"])
            .unwrap()
            .args
            .to_config()
            .unwrap();
        assert_eq!(defaults.cameras.len(), 4);
        assert_eq!(defaults.listen, "127.0.0.1:8554".parse().unwrap());
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(Cli::try_parse_from(["x", "--user", "u"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fault", "1:explode@3"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fault", "stall"]).is_err());
        let cli = Cli::try_parse_from(["x", "--cameras", "2", "--fault", "3:stall@1"]).unwrap();
        assert!(cli.args.to_config().is_err());
        assert!(Cli::try_parse_from(["x", "--clock-ppm", "2:fast"]).is_err());
        assert!(Cli::try_parse_from(["x", "--clock-ppm", "200000"]).is_err());
        let cli = Cli::try_parse_from(["x", "--cameras", "2", "--clock-ppm", "3:5"]).unwrap();
        assert!(cli.args.to_config().is_err());
    }
}
