//! Importing a main recorder's cameras into the config: ask the main for its camera list
//! (stage A, one module per source kind), ask each camera over ONVIF for its stream URL
//! (stage B), flag what cannot work from this box, optionally DESCRIBE each camera, and merge
//! the result into the TOML file.

pub mod check;
pub mod dahua;
pub mod discovery;
pub mod hikvision;
pub mod http;
pub mod merge;
pub mod onvif;
pub mod resolve;
pub mod understudy;
pub mod xml;

use std::fmt;
use std::time::Duration;

use crate::config::Secret;

/// A user and password for the main or a camera. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// Most channels one answer may list (a box has at most 4096 failover channels).
pub const MAX_CHANNELS: usize = 4096;

/// Where the camera list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// ONVIF cameras, each its own main channel in the given order.
    Onvif(Vec<url::Url>),
    /// WS-Discovery on the local network, then ONVIF on each device found.
    Discover,
    /// A Hikvision NVR: ISAPI `InputProxy/channels`.
    Hikvision(url::Url),
    /// A Dahua (or rebranded) NVR: `configManager.cgi` `RemoteDevice`.
    Dahua(url::Url),
    /// Another Understudy box: `GET /api/config/cameras` (its base `https://HOST:PORT/`).
    Understudy(url::Url),
}

impl Source {
    /// Parses `--from` values (`onvif://HOST[:PORT]`, several allowed; `hikvision://HOST[:PORT]`;
    /// `dahua://HOST[:PORT]`; `understudy://HOST[:PORT]`); `discover` selects WS-Discovery.
    pub fn parse(from: &[String], discover: bool) -> Result<Source, String> {
        if discover {
            if !from.is_empty() {
                return Err("--discover and --from exclude each other".to_owned());
            }
            return Ok(Source::Discover);
        }
        let Some(first) = from.first() else { return Err("give --from SOURCE (or --discover)".to_owned()) };
        let parse_one = |s: &str| -> Result<(String, url::Url), String> {
            let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("--from {s:?}: expected SCHEME://HOST[:PORT] (onvif, hikvision, dahua, understudy)"))?;
            if rest.contains('@') {
                return Err(format!("--from {scheme}://…: put no credentials in the address; use --user and --password-env or --password-stdin"));
            }
            let http = url::Url::parse(&format!("http://{rest}")).map_err(|e| format!("--from {s:?}: {e}"))?;
            if http.host_str().is_none_or(str::is_empty) {
                return Err(format!("--from {s:?}: no host"));
            }
            Ok((scheme.to_ascii_lowercase(), http))
        };
        let (scheme, url) = parse_one(first)?;
        match scheme.as_str() {
            "onvif" => {
                let mut urls = Vec::new();
                for s in from {
                    let (sch, mut u) = parse_one(s)?;
                    if sch != "onvif" {
                        return Err(format!("--from {s:?}: only onvif:// sources can be given several times"));
                    }
                    if u.path() == "/" {
                        u.set_path("/onvif/device_service");
                    }
                    urls.push(u);
                }
                Ok(Source::Onvif(urls))
            }
            "hikvision" | "dahua" | "understudy" if from.len() > 1 => Err(format!("--from {scheme}://…: give one recorder per import")),
            "hikvision" => Ok(Source::Hikvision(url)),
            "dahua" => Ok(Source::Dahua(url)),
            "understudy" => {
                let host = url.host_str().unwrap_or_default();
                let port = url.port().unwrap_or(understudy::DEFAULT_PORT);
                url::Url::parse(&format!("https://{host}:{port}/")).map(Source::Understudy).map_err(|e| format!("--from {first:?}: {e}"))
            }
            other => Err(format!("--from: unknown source kind {other:?} (onvif, hikvision, dahua, understudy)")),
        }
    }

    /// A name for messages: scheme and address, never credentials.
    pub fn label(&self) -> String {
        let hp = |u: &url::Url| match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_owned(),
        };
        match self {
            Source::Onvif(v) => v.iter().map(|u| format!("onvif://{}", hp(u))).collect::<Vec<_>>().join(", "),
            Source::Discover => "WS-Discovery".to_owned(),
            Source::Hikvision(u) => format!("hikvision://{}", hp(u)),
            Source::Dahua(u) => format!("dahua://{}", hp(u)),
            Source::Understudy(u) => format!("understudy://{}", hp(u)),
        }
    }

    /// The main's own address (host, port): the probe, and how URLs served by the main
    /// itself are recognised. None for plain cameras.
    pub fn main_address(&self) -> Option<(String, u16)> {
        match self {
            Source::Hikvision(u) | Source::Dahua(u) | Source::Understudy(u) => Some((u.host_str()?.to_owned(), u.port_or_known_default()?)),
            _ => None,
        }
    }

    /// Whether the main's own login may also be a camera's (plug-and-play NVRs set their
    /// cameras' passwords; an Understudy box's login is never a camera's).
    pub fn login_may_fit_cameras(&self) -> bool {
        !matches!(self, Source::Understudy(_))
    }

    /// Whether the main may re-stream cameras itself, so a camera URL at its address is
    /// useless once it fails (an Understudy box serves no RTSP).
    pub fn may_restream(&self) -> bool {
        !matches!(self, Source::Understudy(_))
    }

    /// The probe of a new main: `tcp://HOST:PORT` of the recorder, when the source names one.
    pub fn default_probe(&self) -> Option<String> {
        self.main_address().map(|(h, p)| if h.contains(':') && !h.starts_with('[') { format!("tcp://[{h}]:{p}") } else { format!("tcp://{h}:{p}") })
    }
}

impl Credentials {
    /// A user and a password given together, or neither; one without the other is an error.
    pub fn pair(user: Option<&str>, password: Option<Secret>, user_flag: &str, password_flag: &str) -> Result<Option<Credentials>, String> {
        match (user, password) {
            (Some(u), Some(p)) => Ok(Some(Credentials { user: u.to_owned(), password: p })),
            (None, Some(_)) => Err(format!("a password was given without {user_flag}")),
            (Some(_), None) => Err(format!("{user_flag} needs {password_flag}")),
            (None, None) => Ok(None),
        }
    }
}

/// One camera as the main (or discovery) lists it, before stage B.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The main's channel number (1-based).
    pub channel: u32,
    pub name: Option<String>,
    /// The camera's own address, as the main knows it.
    pub host: Option<String>,
    /// Where to ask the camera over ONVIF for its stream, when the main gives no usable URL.
    pub onvif: Option<url::Url>,
    /// An RTSP URL the main gave or that the camera's protocol implies.
    pub url: Option<url::Url>,
    pub username: Option<String>,
    /// A password the main gave (never a masked one).
    pub password: Option<Secret>,
}

/// One camera ready to write: its URL, credentials and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub channel: u32,
    pub name: Option<String>,
    pub url: Option<url::Url>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Why this camera may not record from this box; empty when nothing is known wrong.
    pub problems: Vec<String>,
    /// With `--check`: codec and resolution from DESCRIBE.
    pub described: Option<String>,
}

/// A failed import, naming the source; nothing has been written.
#[derive(Debug, thiserror::Error)]
#[error("{source_label}: {message}")]
pub struct ImportError {
    pub source_label: String,
    pub message: String,
}

impl ImportError {
    pub fn new(source: &Source, message: impl Into<String>) -> Self {
        ImportError { source_label: source.label(), message: message.into() }
    }
}

/// A camera already in the config under the main being imported: what the user may have set
/// by hand there (its username/password are tried first). `Debug` hides the password.
#[derive(Clone)]
pub struct Known {
    /// The main's channel (`channel` of the `[[main.camera]]`).
    pub channel: u32,
    /// Without credentials.
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl fmt::Debug for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Known").field("channel", &self.channel).field("url", &self.url.as_str()).field("username", &self.username).field("password_set", &self.password.is_some()).finish()
    }
}

impl Known {
    /// The cameras of `[[main]] name = main` in `cfg` (none when the main is new).
    pub fn of_main(cfg: &crate::config::Config, main: &str) -> Vec<Known> {
        cfg.mains
            .iter()
            .filter(|m| m.name == main)
            .flat_map(|m| &m.cameras)
            .map(|c| Known { channel: c.source_channel, url: c.url.clone(), username: c.username.clone(), password: c.password.clone() })
            .collect()
    }
}

/// Options of one import.
pub struct Options {
    /// The `[[main]]` being imported (for logs).
    pub main: String,
    pub source: Source,
    pub main_creds: Option<Credentials>,
    pub camera_user: Option<String>,
    pub camera_password: Option<Secret>,
    pub check: bool,
    pub timeout: Duration,
    /// How long WS-Discovery listens for answers.
    pub discover_for: Duration,
    /// `understudy://`: the bearer token (else `main_creds` log in).
    pub token: Option<Secret>,
    /// `understudy://`: how its TLS certificate is trusted.
    pub trust: understudy::Trust,
    /// The main's cameras already in the config (their hand-set credentials are tried first).
    pub known: Vec<Known>,
}

/// Stage A: the camera list from the source.
pub async fn list(opts: &Options, http: &http::Http) -> Result<Vec<Listed>, ImportError> {
    let src = &opts.source;
    let listed = match src {
        Source::Onvif(urls) => urls
            .iter()
            .enumerate()
            .map(|(i, u)| Listed { channel: i as u32 + 1, host: u.host_str().map(str::to_owned), onvif: Some(u.clone()), ..Default::default() })
            .collect(),
        Source::Discover => {
            let found = discovery::probe(opts.discover_for).await.map_err(|e| ImportError::new(src, e))?;
            if found.is_empty() {
                return Err(ImportError::new(src, format!("no ONVIF device answered within {:?}", opts.discover_for)));
            }
            found
                .into_iter()
                .enumerate()
                .map(|(i, u)| Listed { channel: i as u32 + 1, host: u.host_str().map(str::to_owned), onvif: Some(u), ..Default::default() })
                .collect()
        }
        Source::Hikvision(base) => hikvision::list(http, base, opts.main_creds.as_ref()).await.map_err(|e| ImportError::new(src, e))?,
        Source::Dahua(base) => dahua::list(http, base, opts.main_creds.as_ref()).await.map_err(|e| ImportError::new(src, e))?,
        Source::Understudy(base) => understudy::list(opts, base).await.map_err(|e| ImportError::new(src, e))?,
    };
    if listed.len() > MAX_CHANNELS {
        return Err(ImportError::new(src, format!("the answer lists {} channels, more than the {MAX_CHANNELS} a box can take: refusing it", listed.len())));
    }
    let mut seen = std::collections::HashSet::new();
    for l in &listed {
        if l.channel == 0 || l.channel as usize > MAX_CHANNELS {
            return Err(ImportError::new(src, format!("channel {} is outside 1..={MAX_CHANNELS}", l.channel)));
        }
        if !seen.insert(l.channel) {
            return Err(ImportError::new(src, format!("channel {} is listed twice", l.channel)));
        }
    }
    Ok(listed)
}

/// Both stages and the optional check: what would be written.
pub async fn run(opts: &Options) -> Result<Vec<Imported>, ImportError> {
    let http = http::Http::new(opts.timeout).map_err(|e| ImportError::new(&opts.source, e.to_string()))?;
    let listed = list(opts, &http).await?;
    if listed.is_empty() {
        return Err(ImportError::new(&opts.source, "the main lists no cameras"));
    }
    let mut out = resolve::resolve_all(opts, &http, listed).await;
    out.sort_by_key(|c| c.channel);
    Ok(out)
}

/// What an import would do to the config file's `text`: the merged text and the changes,
/// checked to still be a valid config (else nothing may be written). Errors name the file.
pub fn plan(text: &str, path: &std::path::Path, main: &str, probe: Option<&str>, source: &Source, cams: &[Imported]) -> Result<(String, Vec<merge::Change>), String> {
    if cams.iter().all(|c| c.url.is_none()) {
        return Err(format!("{}: no camera could be imported (see the problems); nothing written", source.label()));
    }
    let (new_text, changes) = merge::merge(text, main, probe, cams).map_err(|e| format!("{}: {e}", path.display()))?;
    // Its structure only: secrets the daemon reads from its environment (health_token_env)
    // need not be set for the import.
    crate::config::Config::parse_structure(&new_text, path).map_err(|e| format!("the merged config would be invalid, nothing written: {e}"))?;
    Ok((new_text, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_needs_no_environment_secret_of_the_config() {
        let var = "UNDERSTUDY_TEST_IMPORT_UNSET_TOKEN";
        assert!(std::env::var_os(var).is_none());
        let text = format!(
            "[server]\nname = \"fo\"\nchannels = 8\nstate_dir = \"/tmp/x\"\n\n[[volume]]\npath = \"/tmp/v\"\n\n[[main]]\nname = \"other\"\nprobe = \"tcp://10.0.0.9:80\"\nhealth = \"understudy://10.0.0.9:7878\"\nhealth_token_env = \"{var}\"\nstart_channel = 8\n\n[[main.camera]]\nchannel = 1\nurl = \"rtsp://10.0.0.9/1\"\n"
        );
        let path = std::path::Path::new("understudy.toml");
        // The daemon's own validation reads the variable ...
        let daemon = crate::config::Config::parse(&text, path);
        // ... the import only checks the structure.
        let cam = Imported { channel: 1, name: None, url: Some(url::Url::parse("rtsp://10.0.1.1/s").unwrap()), username: None, password: None, problems: vec![], described: None };
        let src = Source::Hikvision(url::Url::parse("http://10.0.0.5/").unwrap());
        let planned = plan(&text, path, "nvr", Some("tcp://10.0.0.5:80"), &src, &[cam]);
        assert!(daemon.as_ref().is_err_and(|e| e.to_string().contains("health_token_env")), "{:?}", daemon.err());
        let (out, _) = planned.unwrap();
        assert!(out.contains("name = \"nvr\"") && out.contains(&format!("health_token_env = \"{var}\"")), "{out}");
    }
}
