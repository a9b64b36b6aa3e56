//! What to record for one channel: [`ChannelSpec`], its [`Credentials`] (password redacted from
//! `Debug`) and the RTP [`TransportPolicy`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;

/// Default time without a frame after which a session is considered stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default capacity of a channel's ingest queue, in frames (10 s at 25 fps).
pub const DEFAULT_QUEUE_FRAMES: usize = 250;

/// Username and password for RTSP authentication (RFC 2326 section 14.2 refers to HTTP
/// authentication, RFC 2617). The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl From<Credentials> for retina::client::Credentials {
    fn from(c: Credentials) -> Self {
        retina::client::Credentials {
            username: c.username,
            password: c.password,
        }
    }
}

/// How RTP packets travel from the camera (RFC 2326 section 12.39, `Transport` header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportPolicy {
    /// Interleaved in the RTSP TCP connection (RFC 2326 section 10.12). Reliable; the default.
    #[default]
    Tcp,
    /// Separate UDP sockets. Retina's support is experimental: no reorder buffer, no receiver
    /// reports, and loopback tests lose packets at large IDR frames.
    Udp,
}

impl TransportPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportPolicy::Tcp => "tcp",
            TransportPolicy::Udp => "udp",
        }
    }

    pub(crate) fn to_retina(self) -> retina::client::Transport {
        match self {
            TransportPolicy::Tcp => retina::client::Transport::Tcp(Default::default()),
            TransportPolicy::Udp => retina::client::Transport::Udp(Default::default()),
        }
    }
}

impl fmt::Display for TransportPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error parsing a [`TransportPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad transport {0:?}; expected tcp or udp")]
pub struct ParseTransportError(String);

impl FromStr for TransportPolicy {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(TransportPolicy::Tcp),
            "udp" => Ok(TransportPolicy::Udp),
            _ => Err(ParseTransportError(s.to_owned())),
        }
    }
}

/// Everything needed to record one channel.
#[derive(Clone, Debug)]
pub struct ChannelSpec {
    /// Channel number, as configured.
    pub channel: u32,
    /// Label for logs, e.g. `"nvr-a/3"` or `"local"`.
    pub camera: String,
    /// The RTSP URL, without credentials (see [`ChannelSpec::new`] to split them off).
    pub url: url::Url,
    pub credentials: Option<Credentials>,
    pub transport: TransportPolicy,
    /// No frame for this long ends the session. Also bounds each RTSP request while connecting.
    pub stall_timeout: Duration,
    pub backoff: Backoff,
    /// Suggested capacity of the ingest queue; see [`ChannelSpec::queue`].
    pub queue_frames: usize,
    /// Record the camera's first audio track (AAC, or G.711 stored as FLAC). `false` for sites
    /// where recording sound is not allowed.
    pub audio: bool,
    /// Warm standby: DESCRIBE and SETUP, then wait for the gate before PLAY (see [`PlayGate`]).
    pub play_gate: Option<PlayGate>,
}

/// Holds a session between SETUP and PLAY until [`PlayGate::open`]: a warm standby that keeps
/// the camera described and set up without receiving its stream. RTSP servers expire a session
/// that is not playing after their timeout (60 s by default, RFC 2326 section 12.37) and retina
/// sends keep-alives only while playing, so a held session is set up afresh every
/// [`WARM_REFRESH`].
#[derive(Clone, Debug)]
pub struct PlayGate {
    rx: tokio::sync::watch::Receiver<bool>,
    tx: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a warm session is held set up before it is replaced by a fresh one.
pub const WARM_REFRESH: Duration = Duration::from_secs(45);

impl PlayGate {
    /// A closed gate.
    pub fn new() -> PlayGate {
        let (tx, rx) = tokio::sync::watch::channel(false);
        PlayGate { rx, tx: std::sync::Arc::new(tx), ready: Default::default() }
    }

    /// Lets the session PLAY (now, or as soon as it is set up).
    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    /// Whether a session is set up and waiting for the gate right now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the gate opens (true) or `WARM_REFRESH` passes (false).
    pub(crate) async fn wait(&self) -> bool {
        let mut rx = self.rx.clone();
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        let opened = matches!(tokio::time::timeout(WARM_REFRESH, rx.wait_for(|open| *open)).await, Ok(Ok(_)));
        self.ready.store(false, std::sync::atomic::Ordering::Release);
        opened
    }
}

impl Default for PlayGate {
    fn default() -> Self {
        PlayGate::new()
    }
}

impl ChannelSpec {
    /// A spec with default settings. Credentials embedded in `url` (`rtsp://user:pass@host/`) are
    /// percent-decoded into [`ChannelSpec::credentials`] and removed from the URL.
    pub fn new(channel: u32, camera: impl Into<String>, url: url::Url) -> Self {
        let (url, credentials) = split_credentials(url);
        ChannelSpec {
            channel,
            camera: camera.into(),
            url,
            credentials,
            transport: TransportPolicy::default(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            backoff: Backoff::default(),
            queue_frames: DEFAULT_QUEUE_FRAMES,
            audio: true,
            play_gate: None,
        }
    }

    /// Creates the bounded ingest queue sized by [`ChannelSpec::queue_frames`] (at least 2, so a
    /// `SessionEnded` and the following key frame always fit together).
    pub fn queue(
        &self,
    ) -> (
        tokio::sync::mpsc::Sender<crate::IngestItem>,
        tokio::sync::mpsc::Receiver<crate::IngestItem>,
    ) {
        tokio::sync::mpsc::channel(self.queue_frames.max(2))
    }

    /// Makes sure the URL carries no credentials: any found are moved into `credentials` (unless
    /// credentials are already set, in which case they are discarded from the URL).
    pub(crate) fn sanitize(&mut self) {
        let (url, found) = split_credentials(self.url.clone());
        self.url = url;
        if self.credentials.is_none() {
            self.credentials = found;
        }
    }
}

/// Removes `user:password@` from `url`, returning the percent-decoded credentials if present.
pub(crate) fn split_credentials(mut url: url::Url) -> (url::Url, Option<Credentials>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url, None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = Credentials {
        username: decode(url.username()),
        password: decode(url.password().unwrap_or("")),
    };
    // Both setters only fail for URLs that cannot have credentials ("cannot-be-a-base"), which
    // would not have had any to begin with.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url, Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_redacts_password() {
        let mut spec = ChannelSpec::new(
            3,
            "nvr-a/3",
            "rtsp://admin:s3cr%40t+x@192.0.2.1:554/ch3".parse().unwrap(),
        );
        assert_eq!(spec.url.as_str(), "rtsp://192.0.2.1:554/ch3");
        let creds = spec.credentials.clone().unwrap();
        assert_eq!(creds.username, "admin");
        assert_eq!(creds.password, "s3cr@t+x");
        let dbg = format!("{spec:?} {creds:?}");
        assert!(!dbg.contains("s3cr"), "{dbg}");
        assert!(dbg.contains("admin"), "{dbg}");
        spec.url = "rtsp://u:other@h/".parse().unwrap();
        spec.sanitize();
        assert_eq!(spec.url.as_str(), "rtsp://h/");
        assert_eq!(spec.credentials.unwrap().password, "s3cr@t+x");
    }

    #[test]
    fn transport_parses_like_retina() {
        assert_eq!("tcp".parse::<TransportPolicy>(), Ok(TransportPolicy::Tcp));
        assert_eq!("UDP".parse::<TransportPolicy>(), Ok(TransportPolicy::Udp));
        let err = "http".parse::<TransportPolicy>().unwrap_err();
        assert!(err.to_string().contains("expected tcp or udp"));
        assert_eq!(TransportPolicy::Udp.to_string(), "udp");
        assert_eq!(TransportPolicy::default(), TransportPolicy::Tcp);
    }

    #[test]
    fn defaults() {
        let spec = ChannelSpec::new(1, "local", "rtsp://127.0.0.1/x".parse().unwrap());
        assert!(spec.credentials.is_none());
        assert_eq!(spec.stall_timeout, Duration::from_secs(10));
        assert_eq!(spec.queue_frames, 250);
        assert_eq!(spec.transport, TransportPolicy::Tcp);
    }
}
