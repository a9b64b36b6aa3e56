//! The TOML configuration file: its schema, defaults and validation.
//!
//! Every error names the file, the line where it can be found and the field
//! (`camera[2].channel`), so an installer can fix it without guessing. Unknown fields are errors.

pub mod health;
pub mod trust;
pub mod units;

pub use health::HealthSource;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use trust::TlsTrust;
pub use units::{ByteSize, HumanDuration};

/// A password or token: deserialized from the file, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for handing to a protocol client. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A configuration error, pointing at the file, line and field.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

// ---- the file's schema, as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default, rename = "volume")]
    volumes: Vec<RawVolume>,
    #[serde(default, rename = "camera")]
    cameras: Vec<RawCamera>,
    #[serde(default, rename = "main")]
    mains: Vec<RawMain>,
    #[serde(default, rename = "webhook")]
    webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    channels: Spanned<u32>,
    state_dir: PathBuf,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    sync_interval: Option<HumanDuration>,
    #[serde(default)]
    segment_duration: Option<HumanDuration>,
    #[serde(default)]
    fragment_duration: Option<HumanDuration>,
    #[serde(default)]
    stall_timeout: Option<HumanDuration>,
    #[serde(default)]
    log_format: Option<Spanned<String>>,
    protect_takeover: Option<HumanDuration>,
    tls: Option<Spanned<bool>>,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    prebuffer_memory: Option<ByteSize>,
    /// A browser session ends after this long without a request (default 12h).
    #[serde(default)]
    session_idle: Option<Spanned<HumanDuration>>,
    /// A browser session ends this long after login whatever happens (default 7 days).
    #[serde(default)]
    session_max: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    path: Spanned<PathBuf>,
    #[serde(default)]
    max_bytes: Option<ByteSize>,
    #[serde(default)]
    reserve: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    channel: Spanned<u32>,
    url: Spanned<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    audio: Option<bool>,
    /// Set by `understudy import` when the camera could not be made usable from this box (no
    /// password, unreachable, served by the main itself). Informational: recording is still tried.
    #[serde(default)]
    problem: Option<String>,
    /// Only in `[[main.camera]]`: the stream the hot/warm standby session plays (e.g. a substream).
    #[serde(default)]
    standby_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMain {
    name: Spanned<String>,
    probe: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    fail_after: Option<Spanned<u32>>,
    #[serde(default)]
    recover_after: Option<Spanned<u32>>,
    #[serde(default)]
    start_channel: Option<Spanned<u32>>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    record: Option<Spanned<Vec<u32>>>,
    #[serde(default)]
    priority: Option<i32>,
    /// Recording health source (see `config::health`).
    #[serde(default)]
    health: Option<Spanned<String>>,
    #[serde(default)]
    health_token_env: Option<Spanned<String>>,
    #[serde(default)]
    health_ca: Option<Spanned<PathBuf>>,
    #[serde(default)]
    standby: Option<Spanned<String>>,
    #[serde(default)]
    prebuffer: Option<Spanned<HumanDuration>>,
    /// PEM CA certificate(s) an `https://`/`rtsps://` probe trusts instead of the public roots.
    #[serde(default)]
    ca: Option<Spanned<PathBuf>>,
    /// `sha256:…` of the main's own (self-signed) certificate.
    #[serde(default)]
    fingerprint: Option<Spanned<String>>,
    #[serde(default, rename = "camera")]
    cameras: Vec<RawCamera>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    ca: Option<Spanned<PathBuf>>,
    #[serde(default)]
    fingerprint: Option<Spanned<String>>,
}

// ---- the validated configuration ----

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub server: Server,
    pub volumes: Vec<Volume>,
    /// Cameras this box records all the time, on their own channels.
    pub cameras: Vec<Camera>,
    /// Main recorders this box stands in for.
    pub mains: Vec<Main>,
    pub webhooks: Vec<Webhook>,
}

#[derive(Clone, Debug)]
pub struct Server {
    pub name: String,
    /// Failover channel capacity: channels are numbered 1..=channels.
    pub channels: u32,
    pub state_dir: PathBuf,
    pub listen: Option<std::net::SocketAddr>,
    pub sync_interval: Duration,
    pub segment_duration: Duration,
    pub fragment_duration: Duration,
    pub stall_timeout: Duration,
    /// `[server] log_format`; `--log-format` overrides it.
    pub log_format: crate::logging::LogFormat,
    /// Takeover footage younger than this is deleted only when nothing else is left (0 = off).
    pub protect_takeover: Duration,
    /// HTTPS on `listen` (the default); false only on a loopback address.
    pub tls: bool,
    /// PEM certificate chain and key; None: a self-signed pair generated in `state_dir/tls/`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Memory all hot-standby prebuffers may hold together, split across cameras by bitrate.
    pub prebuffer_memory: u64,
    /// `session_idle` / `session_max`.
    pub sessions: crate::auth::SessionLimits,
}

#[derive(Clone, Debug)]
pub struct Volume {
    pub path: PathBuf,
    pub max_bytes: Option<u64>,
    pub reserve: Option<u64>,
}

/// An RTSP camera source; `url` carries no credentials.
#[derive(Clone, Debug)]
pub struct Camera {
    /// The channel it records onto (for a main's camera: the failover channel).
    pub channel: u32,
    /// For a main's camera, the main's own channel number; for a local camera, `channel`.
    pub source_channel: u32,
    /// A label for logs: the camera's name, or `local/3`, `nvr-a/3`.
    pub label: String,
    /// Who the camera belongs to: the `[[main]]`'s name, or `local` for a `[[camera]]`.
    pub owner: String,
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub transport: Transport,
    /// Record the camera's first audio track (default true; false where sound may not be recorded).
    pub audio: bool,
    /// Why `understudy import` thinks this camera may not work from this box (shown by `check`).
    pub problem: Option<String>,
    /// A main's camera: the URL its standby session plays instead of `url` (same credentials).
    pub standby_url: Option<url::Url>,
}

/// What this box keeps ready for a main while it is healthy (`[[main]] standby`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StandbyMode {
    /// Nothing: the takeover connects to each camera (the classic behaviour).
    #[default]
    Cold,
    /// One session per camera described and set up, PLAY sent at takeover.
    Warm,
    /// One playing session per camera holding the last `prebuffer` in memory, written first at
    /// takeover; the same session then continues.
    Hot,
}

/// RTP transport for a camera: TCP interleaved (default, reliable) or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// How a main recorder is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect succeeds.
    Tcp { host: String, port: u16 },
    /// An HTTP(S) GET answers 2xx.
    Http { url: url::Url },
    /// An RTSP(S) DESCRIBE of the stream answers 200.
    Rtsp { url: url::Url },
}

#[derive(Clone, Debug)]
pub struct Main {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub fail_after: u32,
    pub recover_after: u32,
    pub start_channel: u32,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub priority: i32,
    /// Where to read which channels the main records, if anywhere (`health = "…"`).
    pub health: Option<HealthSource>,
    pub standby: StandbyMode,
    /// How much footage a hot standby holds per camera (whole GOPs).
    pub prebuffer: Duration,
    /// What an `https://` or `rtsps://` probe trusts.
    pub tls: TlsTrust,
    /// The cameras recorded on takeover (already filtered by `record`), with failover channels.
    pub cameras: Vec<Camera>,
}

#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: url::Url,
    pub token: Option<Secret>,
    /// What an `https://` webhook trusts.
    pub tls: TlsTrust,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            field: String::new(),
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is used in error messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, true)
    }

    /// Like [`Config::parse`] but reads no environment variable: secrets named by `*_env`
    /// fields are left unset (only their names are checked). For tools that edit the file
    /// (`understudy import`) and need its structure, not the daemon's secrets.
    pub fn parse_structure(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, false)
    }

    fn parse_with(text: &str, path: &Path, read_env: bool) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError {
                file: path.to_owned(),
                line,
                field: String::new(),
                message: e.message().to_owned(),
            }
        })?;
        Validator { text, file: path, read_env }.validate(raw)
    }

    /// Every channel that something may record onto, with who owns it: used by `check`.
    pub fn channel_map(&self) -> BTreeMap<u32, Vec<String>> {
        let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for c in &self.cameras {
            map.entry(c.channel).or_default().push("local".to_owned());
        }
        for m in &self.mains {
            for c in &m.cameras {
                map.entry(c.channel).or_default().push(m.name.clone());
            }
        }
        map
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    /// Whether secrets named by `*_env` fields are read from the environment.
    read_env: bool,
}

impl Validator<'_> {
    fn err<T>(&self, span: Option<std::ops::Range<usize>>, field: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_owned(),
            line: span.map(|s| line_of(self.text, s.start)),
            field: field.into(),
            message: message.into(),
        })
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let s = &raw.server;
        if s.name.trim().is_empty() {
            return self.err(None, "server.name", "must not be empty");
        }
        let channels = *s.channels.get_ref();
        if channels == 0 || channels > 4096 {
            return self.err(Some(s.channels.span()), "server.channels", format!("{channels} is out of range 1..=4096"));
        }
        let listen = match &s.listen {
            None => None,
            Some(l) => Some(l.get_ref().parse().or_else(|_| {
                self.err(Some(l.span()), "server.listen", format!("{:?} is not HOST:PORT (e.g. \"127.0.0.1:7878\")", l.get_ref()))
            })?),
        };
        let sync_interval = s.sync_interval.map_or(Duration::from_secs(1), |d| d.0);
        let segment_duration = s.segment_duration.map_or(Duration::from_secs(60), |d| d.0);
        let fragment_duration = s.fragment_duration.map_or(Duration::from_secs(1), |d| d.0);
        let stall_timeout = s.stall_timeout.map_or(Duration::from_secs(10), |d| d.0);
        let protect_takeover = s.protect_takeover.map_or(Duration::from_secs(7 * 86400), |d| d.0);
        if sync_interval < Duration::from_millis(50) || sync_interval > Duration::from_secs(60) {
            return self.err(None, "server.sync_interval", "must be between 50ms and 60s");
        }
        if fragment_duration < Duration::from_millis(100) || fragment_duration > Duration::from_secs(10) {
            return self.err(None, "server.fragment_duration", "must be between 100ms and 10s");
        }
        if segment_duration < Duration::from_secs(2) || segment_duration > Duration::from_secs(3600) {
            return self.err(None, "server.segment_duration", "must be between 2s and 1h");
        }
        if stall_timeout < Duration::from_secs(1) {
            return self.err(None, "server.stall_timeout", "must be at least 1s");
        }
        let tls = s.tls.as_ref().is_none_or(|t| *t.get_ref());
        if let (false, Some(addr), Some(t)) = (tls, listen, &s.tls) {
            let addr: std::net::SocketAddr = addr;
            if !addr.ip().is_loopback() {
                return self.err(Some(t.span()), "server.tls", format!("false is allowed only on a loopback address, and server.listen is {addr}: plain HTTP would expose logins and footage to the network"));
            }
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return self.err(None, if s.tls_cert.is_some() { "server.tls_key" } else { "server.tls_cert" }, "tls_cert and tls_key go together: set both, or neither for a generated self-signed certificate");
        }
        let mut trusted_proxies = Vec::new();
        if let Some(tp) = &s.trusted_proxies {
            for (i, p) in tp.get_ref().iter().enumerate() {
                match p.parse() {
                    Ok(ip) => trusted_proxies.push(ip),
                    Err(_) => return self.err(Some(tp.span()), format!("server.trusted_proxies[{i}]"), format!("{p:?} is not an IP address")),
                }
            }
        }
        let sessions = self.sessions(s)?;
        let server = Server {
            sessions,
            tls,
            tls_cert: s.tls_cert.clone(),
            tls_key: s.tls_key.clone(),
            trusted_proxies,
            name: s.name.clone(),
            channels,
            state_dir: s.state_dir.clone(),
            listen,
            sync_interval,
            segment_duration,
            fragment_duration,
            stall_timeout,
            log_format: match &s.log_format {
                None => crate::logging::LogFormat::Text,
                Some(f) => f.get_ref().parse().or_else(|e| self.err(Some(f.span()), "server.log_format", e))?,
            },
            protect_takeover,
            prebuffer_memory: s.prebuffer_memory.map_or(2 << 30, |b| b.0),
        };
        if server.prebuffer_memory < 1 << 20 {
            return self.err(None, "server.prebuffer_memory", "must be at least 1 MiB");
        }

        if raw.volumes.is_empty() {
            return self.err(None, "volume", "at least one [[volume]] is required: the disks this box records to");
        }
        let mut volumes = Vec::new();
        for (i, v) in raw.volumes.iter().enumerate() {
            let path = v.path.get_ref();
            if !path.is_absolute() && path.as_os_str().is_empty() {
                return self.err(Some(v.path.span()), format!("volume[{i}].path"), "must not be empty");
            }
            if volumes.iter().any(|o: &Volume| o.path == *path) {
                return self.err(Some(v.path.span()), format!("volume[{i}].path"), format!("{} is listed twice", path.display()));
            }
            volumes.push(Volume { path: path.clone(), max_bytes: v.max_bytes.map(|b| b.0), reserve: v.reserve.map(|b| b.0) });
        }

        let mut used: HashMap<u32, String> = HashMap::new();
        let mut cameras = Vec::new();
        for (i, c) in raw.cameras.iter().enumerate() {
            let field = format!("camera[{i}]");
            let ch = *c.channel.get_ref();
            if ch == 0 || ch > channels {
                return self.err(Some(c.channel.span()), format!("{field}.channel"), format!("channel {ch} is outside 1..={channels} (server.channels)"));
            }
            if let Some(prev) = used.insert(ch, field.clone()) {
                return self.err(Some(c.channel.span()), format!("{field}.channel"), format!("channel {ch} is already used by {prev}"));
            }
            let label = c.name.clone().unwrap_or_else(|| format!("local/{ch}"));
            cameras.push(self.camera(c, &field, ch, ch, label, "local")?);
        }

        let mut mains = Vec::new();
        for (i, m) in raw.mains.iter().enumerate() {
            mains.push(self.main(m, i, channels, &used, &mains)?);
        }

        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.iter().enumerate() {
            let url = url::Url::parse(w.url.get_ref()).or_else(|e| self.err(Some(w.url.span()), format!("webhook[{i}].url"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return self.err(Some(w.url.span()), format!("webhook[{i}].url"), "must be https://HOST[:PORT]/PATH or http://…");
            }
            let tls = self.trust(w.ca.as_ref(), w.fingerprint.as_ref(), &format!("webhook[{i}]"), url.scheme() == "https")?;
            webhooks.push(Webhook { url, token: w.token.clone(), tls });
        }

        Ok(Config { file: self.file.to_owned(), server, volumes, cameras, mains, webhooks })
    }

    fn camera(&self, c: &RawCamera, field: &str, channel: u32, source_channel: u32, label: String, owner: &str) -> Result<Camera, ConfigError> {
        let mut url = url::Url::parse(c.url.get_ref())
            .or_else(|e| self.err(Some(c.url.span()), format!("{field}.url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "rtsp" | "rtsps") {
            return self.err(Some(c.url.span()), format!("{field}.url"), format!("scheme {:?} is not rtsp", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return self.err(Some(c.url.span()), format!("{field}.url"), "has no host");
        }
        let mut username = c.username.clone();
        let mut password = c.password.clone();
        // Credentials inside the URL are moved out of it, so the URL can be logged.
        if !url.username().is_empty() || url.password().is_some() {
            if username.is_some() || password.is_some() {
                return self.err(Some(c.url.span()), format!("{field}.url"), "has credentials and username/password are set too: give them once");
            }
            let decode = |s: &str| percent_decode(s);
            username = Some(decode(url.username()));
            password = url.password().map(|p| Secret::new(decode(p)));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let transport = match &c.transport {
            None => Transport::Tcp,
            Some(t) => match t.get_ref().as_str() {
                "tcp" => Transport::Tcp,
                "udp" => Transport::Udp,
                other => return self.err(Some(t.span()), format!("{field}.transport"), format!("{other:?} is not tcp or udp")),
            },
        };
        let problem = c.problem.clone().filter(|p| !p.trim().is_empty());
        let standby_url = match &c.standby_url {
            None => None,
            Some(_) if owner == "local" => return self.err(c.standby_url.as_ref().map(|u| u.span()), format!("{field}.standby_url"), "only a [[main.camera]] has a standby session"),
            Some(u) => {
                let parsed = url::Url::parse(u.get_ref()).or_else(|e| self.err(Some(u.span()), format!("{field}.standby_url"), format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "rtsp" | "rtsps") || parsed.host_str().is_none_or(str::is_empty) {
                    return self.err(Some(u.span()), format!("{field}.standby_url"), "must be rtsp://HOST/…");
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return self.err(Some(u.span()), format!("{field}.standby_url"), "must not contain credentials: the camera's username/password are used");
                }
                Some(parsed)
            }
        };
        Ok(Camera { channel, source_channel, label, owner: owner.to_owned(), url, username, password, transport, audio: c.audio.unwrap_or(true), problem, standby_url })
    }

    fn main(&self, m: &RawMain, i: usize, channels: u32, local: &HashMap<u32, String>, earlier: &[Main]) -> Result<Main, ConfigError> {
        let field = format!("main[{i}]");
        let name = m.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return self.err(Some(m.name.span()), format!("{field}.name"), "must not be empty");
        }
        if name.contains('/') || name.chars().any(char::is_control) {
            return self.err(Some(m.name.span()), format!("{field}.name"), "must not contain '/' or control characters");
        }
        if earlier.iter().any(|e| e.name == name) {
            return self.err(Some(m.name.span()), format!("{field}.name"), format!("{name:?} is used by another [[main]]"));
        }
        let probe = self.probe(m, &field)?;
        let health = self.health(health::RawHealth { health: m.health.as_ref(), token_env: m.health_token_env.as_ref(), ca: m.health_ca.as_ref() }, &field)?;
        let tls_probe = matches!(&probe, Probe::Http { url } | Probe::Rtsp { url } if matches!(url.scheme(), "https" | "rtsps"));
        let tls = self.trust(m.ca.as_ref(), m.fingerprint.as_ref(), &field, tls_probe)?;
        let interval = m.interval.as_ref().map_or(Duration::from_secs(30), |d| d.get_ref().0);
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return self.err(m.interval.as_ref().map(|d| d.span()), format!("{field}.interval"), "must be between 100ms and 3600s");
        }
        let timeout = m.timeout.as_ref().map_or(interval.min(Duration::from_secs(5)), |d| d.get_ref().0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return self.err(m.timeout.as_ref().map(|d| d.span()), format!("{field}.timeout"), "must be between 1ms and 60s");
        }
        let count = |v: &Option<Spanned<u32>>, f: &str| -> Result<u32, ConfigError> {
            match v {
                None => Ok(3),
                Some(s) if *s.get_ref() >= 1 && *s.get_ref() <= 1000 => Ok(*s.get_ref()),
                Some(s) => self.err(Some(s.span()), format!("{field}.{f}"), "must be between 1 and 1000"),
            }
        };
        let fail_after = count(&m.fail_after, "fail_after")?;
        let recover_after = count(&m.recover_after, "recover_after")?;
        let standby = match &m.standby {
            None => StandbyMode::Cold,
            Some(s) => match s.get_ref().as_str() {
                "cold" => StandbyMode::Cold,
                "warm" => StandbyMode::Warm,
                "hot" => StandbyMode::Hot,
                other => return self.err(Some(s.span()), format!("{field}.standby"), format!("{other:?} is not cold, warm or hot")),
            },
        };
        let prebuffer = m.prebuffer.as_ref().map_or(Duration::from_secs(10), |d| d.get_ref().0);
        if prebuffer < Duration::from_secs(1) || prebuffer > Duration::from_secs(300) {
            return self.err(m.prebuffer.as_ref().map(|d| d.span()), format!("{field}.prebuffer"), "must be between 1s and 300s");
        }
        let start_channel = m.start_channel.as_ref().map_or(1, |s| *s.get_ref());
        if start_channel == 0 || start_channel > channels {
            return self.err(m.start_channel.as_ref().map(|s| s.span()), format!("{field}.start_channel"), format!("{start_channel} is outside 1..={channels} (server.channels)"));
        }
        if m.cameras.is_empty() {
            return self.err(Some(m.name.span()), format!("{field}.camera"), format!("main {name:?} has no [[main.camera]]: nothing to take over"));
        }
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for (j, c) in m.cameras.iter().enumerate() {
            let ch = *c.channel.get_ref();
            if ch == 0 {
                return self.err(Some(c.channel.span()), format!("{field}.camera[{j}].channel"), "main channels start at 1");
            }
            if let Some(prev) = seen.insert(ch, j) {
                return self.err(Some(c.channel.span()), format!("{field}.camera[{j}].channel"), format!("main channel {ch} is also {field}.camera[{prev}]"));
            }
        }
        if let Some(rec) = &m.record {
            for ch in rec.get_ref() {
                if !seen.contains_key(ch) {
                    return self.err(Some(rec.span()), format!("{field}.record"), format!("channel {ch} has no [[main.camera]] in main {name:?}"));
                }
            }
        }
        let mut cameras = Vec::new();
        for (j, c) in m.cameras.iter().enumerate() {
            let src = *c.channel.get_ref();
            if let Some(rec) = &m.record {
                if !rec.get_ref().contains(&src) {
                    continue;
                }
            }
            let cf = format!("{field}.camera[{j}]");
            let failover = start_channel as u64 + src as u64 - 1;
            if failover > channels as u64 {
                return self.err(Some(c.channel.span()), format!("{cf}.channel"), format!(
                    "main channel {src} maps to failover channel {failover} (start_channel {start_channel}), beyond server.channels = {channels}"));
            }
            let failover = failover as u32;
            if let Some(owner) = local.get(&failover) {
                return self.err(Some(c.channel.span()), format!("{cf}.channel"), format!(
                    "maps to failover channel {failover}, which {owner} records all the time"));
            }
            let label = c.name.clone().unwrap_or_else(|| format!("{name}/{src}"));
            cameras.push(self.camera(c, &cf, failover, src, label, &name)?);
        }
        Ok(Main {
            name,
            probe,
            interval,
            timeout,
            fail_after,
            recover_after,
            start_channel,
            username: m.username.clone(),
            password: m.password.clone(),
            priority: m.priority.unwrap_or(0),
            health,
            standby,
            prebuffer,
            tls,
            cameras,
        })
    }

    /// `server.session_idle` (1 min … 30 days) and `server.session_max` (≥ idle, ≤ 365 days).
    fn sessions(&self, s: &RawServer) -> Result<crate::auth::SessionLimits, ConfigError> {
        let d = crate::auth::SessionLimits::default();
        let secs = |v: &Option<Spanned<HumanDuration>>, def: i64| v.as_ref().map_or(def, |v| v.get_ref().0.as_secs() as i64);
        let (idle_s, max_s) = (secs(&s.session_idle, d.idle_s), secs(&s.session_max, d.max_s));
        if !(60..=30 * 86400).contains(&idle_s) {
            return self.err(s.session_idle.as_ref().map(|v| v.span()), "server.session_idle", "must be between 1m and 30 days (720h)");
        }
        if max_s < idle_s || max_s > 365 * 86400 {
            let span = s.session_max.as_ref().or(s.session_idle.as_ref()).map(|v| v.span());
            return self.err(span, "server.session_max", format!("must be at least server.session_idle ({idle_s} s) and at most 365 days (8760h)"));
        }
        Ok(crate::auth::SessionLimits { idle_s, max_s })
    }

    /// `ca` / `fingerprint` of a `[[main]]` or `[[webhook]]` (`field`); only for TLS URLs.
    fn trust(&self, ca: Option<&Spanned<PathBuf>>, fp: Option<&Spanned<String>>, field: &str, tls: bool) -> Result<TlsTrust, ConfigError> {
        let span = |name: &str| if name == "ca" { ca.map(|c| c.span()) } else { fp.map(|f| f.span()) };
        let set = if ca.is_some() { Some("ca") } else if fp.is_some() { Some("fingerprint") } else { None };
        if let (false, Some(name)) = (tls, set) {
            return self.err(span(name), format!("{field}.{name}"), "is only used with https:// (or rtsps://) URLs");
        }
        trust::parse(ca.map(|c| c.get_ref().as_path()), fp.map(|f| f.get_ref().as_str()))
            .or_else(|(name, msg)| self.err(span(name), format!("{field}.{name}"), msg))
    }

    fn probe(&self, m: &RawMain, field: &str) -> Result<Probe, ConfigError> {
        let raw = m.probe.get_ref();
        let span = Some(m.probe.span());
        let f = format!("{field}.probe");
        let url = url::Url::parse(raw).or_else(|e| self.err(span.clone(), &f, format!("{raw:?} is not a URL ({e}); use tcp://HOST:PORT, http://…, https://… or rtsp://…")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return self.err(span, &f, "must not contain credentials: use the main's username/password fields");
        }
        match url.scheme() {
            "tcp" => {
                let host = url.host_str().filter(|h| !h.is_empty());
                match (host, url.port()) {
                    (Some(h), Some(p)) => Ok(Probe::Tcp { host: h.trim_matches(['[', ']']).to_owned(), port: p }),
                    _ => self.err(span, &f, format!("{raw:?} needs a host and a port: tcp://HOST:PORT")),
                }
            }
            "http" | "https" if url.host_str().is_some() => Ok(Probe::Http { url }),
            "rtsp" | "rtsps" if url.host_str().is_some() => Ok(Probe::Rtsp { url }),
            "http" | "https" | "rtsp" | "rtsps" => self.err(span, &f, "has no host"),
            s => self.err(span, &f, format!("scheme {s:?} is not one of tcp, http, https, rtsp")),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
