//! Configuration types of the camera simulator: cameras, pacing, authentication and faults.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything [`super::CamSim::start`] needs.
#[derive(Clone, Debug)]
pub struct CamSimConfig {
    /// Address to listen on; port 0 picks a free port (see [`super::CamSim::local_addr`]).
    pub listen: SocketAddr,
    /// Cameras to serve; ids must be unique and non-zero.
    pub cameras: Vec<CameraSpec>,
    /// How fast sessions send frames.
    pub pacing: Pacing,
    /// Credentials every request but OPTIONS must carry; `None` serves without authentication.
    pub auth: Option<AuthConfig>,
    /// RFC 2326 §12.37 session timeout: a connection that sends nothing for this long is closed.
    pub session_timeout: Duration,
}

impl CamSimConfig {
    /// A configuration with `n` cameras (ids 1..=n) that all loop `clip`, realtime pacing, no
    /// authentication and a 60 s session timeout.
    pub fn new(listen: SocketAddr, n: u32, clip: impl Into<PathBuf>) -> Self {
        let clip = clip.into();
        CamSimConfig {
            listen,
            cameras: (1..=n)
                .map(|id| CameraSpec::new(id, clip.clone()))
                .collect(),
            pacing: Pacing::Realtime,
            auth: None,
            session_timeout: Duration::from_secs(60),
        }
    }
}

/// One simulated camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraSpec {
    /// 1-based id; the camera is served at `/cam/{id}`.
    pub id: u32,
    /// MP4 file (H.264 `avc1`/`avc3` or H.265 `hvc1`/`hev1`) looped forever.
    pub clip: PathBuf,
    /// MP4/QuickTime file whose first audio track (AAC `mp4a` or G.711 µ-law `ulaw`) is served
    /// as a second `m=audio` stream, looped on its own length; `None`: the clip's own audio
    /// track if it has one, else no audio.
    pub audio: Option<PathBuf>,
    /// How many parts per million the camera's RTP clock (video and audio) runs fast against
    /// real time (negative: slow); 0 for an exact clock.
    pub clock_ppm: i32,
}

impl CameraSpec {
    /// Camera `id` looping `clip`, with the clip's own audio (if any) and an exact clock.
    pub fn new(id: u32, clip: impl Into<PathBuf>) -> Self {
        CameraSpec {
            id,
            clip: clip.into(),
            audio: None,
            clock_ppm: 0,
        }
    }
}

/// How sessions pace their frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Each frame is sent at its presentation time relative to the session start.
    #[default]
    Realtime,
    /// Frames are sent as fast as the client reads them (TCP backpressure).
    Fast,
}

/// Authentication scheme the server demands (RFC 2617).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthScheme {
    /// Digest with MD5 (RFC 2617 §3).
    #[default]
    Digest,
    /// Basic (RFC 2617 §2).
    Basic,
}

/// Credentials the server accepts. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub scheme: AuthScheme,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("scheme", &self.scheme)
            .finish()
    }
}

/// A misbehaviour injected into one camera, applied once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Fault {
    /// Playing sessions stop sending media but keep the connection open and keep answering
    /// requests (keepalives).
    Stall,
    /// Playing sessions close their TCP connection in the middle of a GOP, inside an access unit.
    DropMidGop,
    /// Playing sessions send one burst of malformed interleaved data (bad RTP version, a
    /// truncated fragmentation unit, random bytes inside a valid `$` frame), then go on.
    Garbage,
    /// For about 5 s every DESCRIBE gets 401 whatever the credentials.
    RejectAuth,
    /// The camera switches to a clip with other parameters (resolution, SPS); playing sessions
    /// switch at their next frame, which is the new clip's key frame with its parameter sets
    /// in-band before it.
    ChangeParams,
    /// Playing sessions' RTP timestamps jump back by 5 s (a camera reboot, a server re-base).
    RtpBack,
    /// Playing sessions' RTP timestamps jump forward by 10 s.
    RtpForward,
}

impl Fault {
    /// Every fault, for listings and help texts.
    pub const ALL: [Fault; 7] = [
        Fault::Stall,
        Fault::DropMidGop,
        Fault::Garbage,
        Fault::RejectAuth,
        Fault::ChangeParams,
        Fault::RtpBack,
        Fault::RtpForward,
    ];

    /// The CLI name (kebab-case), e.g. `drop-mid-gop`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Stall => "stall",
            Fault::DropMidGop => "drop-mid-gop",
            Fault::Garbage => "garbage",
            Fault::RejectAuth => "reject-auth",
            Fault::ChangeParams => "change-params",
            Fault::RtpBack => "rtp-back",
            Fault::RtpForward => "rtp-forward",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    /// Accepts the kebab-case name (`drop-mid-gop`) and, case-insensitively, the variant name
    /// with or without separators (`DropMidGop`, `drop_mid_gop`).
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        Fault::ALL
            .into_iter()
            .find(|f| f.name().replace('-', "") == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; expected one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
            assert_eq!(format!("{f:?}").parse::<Fault>(), Ok(f));
        }
        assert_eq!("DROP_MID_GOP".parse::<Fault>(), Ok(Fault::DropMidGop));
        assert!("explode".parse::<Fault>().is_err());
    }

    #[test]
    fn auth_debug_hides_password() {
        let a = AuthConfig {
            username: "admin".into(),
            password: "hunter2".into(),
            scheme: AuthScheme::Digest,
        };
        let s = format!("{a:?}");
        assert!(s.contains("admin") && !s.contains("hunter2"), "{s}");
    }
}
