//! A main's `health = "…"` setting: where its recording health (which channels it records) is
//! read from, validated into a [`HealthSource`].

use std::path::PathBuf;

use toml::Spanned;

use super::{ConfigError, Secret, Validator};

/// Where a main's recording health comes from (see `failover::recording`).
#[derive(Clone, Debug)]
pub enum HealthSource {
    /// Another Understudy box's `/api/status` (`understudy://HOST:PORT`, HTTPS; or
    /// `understudy+http://` for one with `tls = false`, loopback only), with a bearer token and
    /// the PEM certificate (or CA) to trust.
    Understudy { base: url::Url, token: Option<Secret>, ca: Option<PathBuf> },
    /// A Hikvision NVR's ISAPI HDD status (`hikvision://HOST[:PORT]`, plain HTTP, Digest with
    /// the main's username/password).
    Hikvision { base: url::Url },
}

impl HealthSource {
    /// The setting as written (no secrets in it), for status and events.
    pub fn label(&self) -> String {
        match self {
            HealthSource::Understudy { base, .. } => {
                let scheme = if base.scheme() == "https" { "understudy" } else { "understudy+http" };
                format!("{scheme}://{}", host_port(base))
            }
            HealthSource::Hikvision { base } => format!("hikvision://{}", host_port(base)),
        }
    }
}

fn host_port(u: &url::Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_owned(),
    }
}

/// The raw fields of a `[[main]]` that describe its health source.
pub(super) struct RawHealth<'a> {
    pub health: Option<&'a Spanned<String>>,
    pub token_env: Option<&'a Spanned<String>>,
    pub ca: Option<&'a Spanned<PathBuf>>,
}

impl Validator<'_> {
    pub(super) fn health(&self, raw: RawHealth<'_>, field: &str) -> Result<Option<HealthSource>, ConfigError> {
        let Some(h) = raw.health else {
            if let Some(t) = raw.token_env {
                return self.err(Some(t.span()), format!("{field}.health_token_env"), "is set but `health` is not");
            }
            if let Some(c) = raw.ca {
                return self.err(Some(c.span()), format!("{field}.health_ca"), "is set but `health` is not");
            }
            return Ok(None);
        };
        let f = format!("{field}.health");
        let text = h.get_ref();
        let span = Some(h.span());
        let hint = "use understudy://HOST:PORT, understudy+http://HOST:PORT or hikvision://HOST[:PORT]";
        let url = url::Url::parse(text).or_else(|e| self.err(span.clone(), &f, format!("{text:?} is not a URL ({e}); {hint}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return self.err(span, &f, "must not contain credentials: use health_token_env, or the main's username/password");
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return self.err(span, &f, format!("{text:?} has no host; {hint}"));
        };
        if !url.path().trim_matches('/').is_empty() || url.query().is_some() {
            return self.err(span, &f, format!("{text:?}: give only the host and port; {hint}"));
        }
        let base = |scheme: &str, port: Option<u16>| -> Result<url::Url, ConfigError> {
            let authority = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            url::Url::parse(&format!("{scheme}://{authority}/")).or_else(|e| self.err(span.clone(), &f, format!("{text:?}: {e}")))
        };
        match url.scheme() {
            s @ ("understudy" | "understudy+http") => {
                let Some(port) = url.port() else {
                    return self.err(span, &f, format!("{text:?} needs a port (the main's API listen port)"));
                };
                let token = match raw.token_env {
                    None => None,
                    Some(v) if v.get_ref().trim().is_empty() => return self.err(Some(v.span()), format!("{field}.health_token_env"), "must name an environment variable"),
                    Some(_) if !self.read_env => None,
                    Some(v) => match std::env::var(v.get_ref()) {
                        Ok(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
                        _ => return self.err(Some(v.span()), format!("{field}.health_token_env"), format!("environment variable {:?} is not set or empty", v.get_ref())),
                    },
                };
                let ca = raw.ca.map(|c| c.get_ref().clone());
                if let (Some(c), Some(path)) = (raw.ca, &ca) {
                    if let Err(e) = std::fs::metadata(path) {
                        return self.err(Some(c.span()), format!("{field}.health_ca"), format!("cannot read {}: {e}", path.display()));
                    }
                }
                let https = s == "understudy";
                if !https && ca.is_some() {
                    return self.err(span, &f, "health_ca needs understudy:// (HTTPS)");
                }
                Ok(Some(HealthSource::Understudy { base: base(if https { "https" } else { "http" }, Some(port))?, token, ca }))
            }
            "hikvision" => {
                if let Some(t) = raw.token_env {
                    return self.err(Some(t.span()), format!("{field}.health_token_env"), "only for understudy:// (hikvision:// uses the main's username/password)");
                }
                Ok(Some(HealthSource::Hikvision { base: base("http", url.port())? }))
            }
            s => self.err(span, &f, format!("scheme {s:?} is not one of understudy, understudy+http, hikvision")),
        }
    }
}
