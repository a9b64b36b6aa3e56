//! Another Understudy box as the main: its own cameras from `GET /api/config/cameras` over
//! HTTPS, with a bearer token or a user/password login. The box's (usually self-signed)
//! certificate is pinned by its SHA-256 fingerprint or trusted from a CA file, else checked
//! against the public roots: verification is never skipped. The box never gives out camera
//! passwords, so its cameras come without them.


use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, Http};
use super::{Credentials, Listed, Options};
use crate::config::Secret;

/// The API port of an Understudy box when `understudy://HOST` names none.
pub const DEFAULT_PORT: u16 = 7878;
/// The endpoint listing a box's cameras (needs the `config` permission).
pub const PATH: &str = "/api/config/cameras";

/// How the other box's TLS certificate is trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The public roots (a box with a certificate from a public CA).
    #[default]
    Roots,
    /// Exactly this certificate: SHA-256 of its DER (`understudy tls fingerprint` on that box).
    Fingerprint([u8; 32]),
    /// Certificates (PEM) to trust as roots, e.g. the box's own `state_dir/tls/cert.pem`.
    Ca(std::path::PathBuf),
}

impl Trust {
    /// Parses `sha256:AB:CD:…` (colons and case optional, `sha256:` optional).
    pub fn parse_fingerprint(s: &str) -> Result<Trust, String> {
        let t = s.trim();
        let hex_part = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t).replace(':', "");
        let bytes = hex::decode(&hex_part).map_err(|_| format!("fingerprint {t:?}: expected sha256: and 32 hex bytes (as `understudy tls fingerprint` prints)"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| format!("fingerprint {t:?}: expected 32 bytes of SHA-256"))?;
        Ok(Trust::Fingerprint(arr))
    }
}

/// An HTTP client trusting the other box as `trust` says.
fn client(opts: &Options) -> Result<Http, String> {
    let builder = reqwest::Client::builder();
    let builder = match &opts.trust {
        Trust::Roots => builder,
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("--ca {}: not a PEM certificate: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("--ca {}: no certificate in the file", path.display()));
            }
            certs.into_iter().fold(builder, |b, c| b.add_root_certificate(c))
        }
        Trust::Fingerprint(sha256) => {
            let cfg = crate::failover::outbound::tls_config(&crate::config::TlsTrust::Fingerprint(*sha256))?;
            builder.use_preconfigured_tls(cfg)
        }
    };
    Http::from_builder(builder, opts.timeout).map_err(|e| e.to_string())
}

/// A request error in words; an untrusted certificate says how to trust it.
fn request_error(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let mut inner = None;
    let mut cause: &dyn std::error::Error = &e;
    while let Some(s) = cause.source() {
        cause = s;
        if let Some(r) = crate::failover::outbound::tls_reason(s) {
            inner = Some(r);
            break;
        }
        inner = Some(s.to_string());
    }
    let text = inner.unwrap_or_else(|| e.without_url().to_string());
    let text = text.replace("unexpected error: ", "");
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        format!("TLS: the box's certificate is not trusted ({text}); pin it with --fingerprint sha256:… (`understudy tls fingerprint` on that box) or --ca FILE (its cert.pem)")
    } else if timeout {
        "cannot connect: timed out".to_owned()
    } else {
        format!("cannot connect: {text}")
    }
}

/// The refusal sentence of an API answer (`{"error": …}`), else the status.
async fn refusal(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = http::read_body(resp).await.unwrap_or_default();
    let said = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_owned));
    match said {
        Some(s) => format!("HTTP {}: {s}", status.as_u16()),
        None => format!("HTTP {status}"),
    }
}

/// A logged-in session (cookie and CSRF token), ended after the listing.
struct Session {
    cookie: String,
    csrf: String,
}

async fn login(http: &Http, base: &url::Url, creds: &Credentials) -> Result<Session, String> {
    let url = base.join("/api/login").map_err(|e| e.to_string())?;
    let body = serde_json::json!({ "username": creds.user, "password": creds.password.expose() });
    let resp = http.client().post(url).header(CONTENT_TYPE, "application/json").body(body.to_string()).send().await.map_err(request_error)?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        return Err("POST /api/login: wrong user or password".to_owned());
    }
    if !resp.status().is_success() {
        return Err(format!("POST /api/login: {}", refusal(resp).await));
    }
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|kv| kv.contains('=')).map(str::to_owned))
        .ok_or("POST /api/login: no session cookie in the answer")?;
    let answer: serde_json::Value = serde_json::from_str(&http::read_body(resp).await.map_err(|e| format!("POST /api/login: {e}"))?).map_err(|e| format!("POST /api/login: {e}"))?;
    let csrf = answer["csrf"].as_str().unwrap_or_default().to_owned();
    Ok(Session { cookie, csrf })
}

async fn logout(http: &Http, base: &url::Url, s: &Session) {
    let Ok(url) = base.join("/api/logout") else { return };
    let r = http.client().post(url).header(COOKIE, &s.cookie).header("x-csrf-token", &s.csrf).send().await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "logging out of the other box");
    }
}

/// One camera as the other box lists it.
#[derive(Deserialize)]
struct Cam {
    channel: u32,
    name: Option<String>,
    url: String,
    username: Option<String>,
    /// `local` for the box's own `[[camera]]`s, else the main it stands in for.
    owner: String,
}

#[derive(Deserialize)]
struct CameraList {
    cameras: Vec<Cam>,
}

/// Stage A for `understudy://`: the other box's own cameras (`[[camera]]`, recorded all the
/// time), on their channels there. Cameras it only records for its own mains are left out.
pub async fn list(opts: &Options, base: &url::Url) -> Result<Vec<Listed>, String> {
    let http = client(opts)?;
    let (auth, session) = match (&opts.token, &opts.main_creds) {
        (Some(t), _) => (Some(format!("Bearer {}", t.expose())), None),
        (None, Some(c)) => (None, Some(login(&http, base, c).await?)),
        (None, None) => return Err("give a token (--token-env VAR) or --user with --password-env/--password-stdin".to_owned()),
    };
    let url = base.join(PATH).map_err(|e| e.to_string())?;
    let mut rb = http.client().get(url);
    if let Some(a) = auth {
        rb = rb.header(AUTHORIZATION, a);
    }
    if let Some(s) = &session {
        rb = rb.header(COOKIE, &s.cookie);
    }
    let result = async {
        let resp = rb.send().await.map_err(request_error)?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => return Err(format!("GET {PATH}: the token or login is not accepted ({})", refusal(resp).await)),
            s if !s.is_success() => return Err(format!("GET {PATH}: {}", refusal(resp).await)),
            _ => {}
        }
        let body = http::read_body(resp).await.map_err(|e| format!("GET {PATH}: {e}"))?;
        parse(&body)
    }
    .await;
    if let Some(s) = &session {
        logout(&http, base, s).await;
    }
    result
}

/// Parses the camera list; any malformed entry fails the whole answer.
pub fn parse(body: &str) -> Result<Vec<Listed>, String> {
    let list: CameraList = serde_json::from_str(body).map_err(|e| format!("GET {PATH}: malformed answer: {e}"))?;
    let mut out = Vec::new();
    for c in list.cameras.into_iter().filter(|c| c.owner == "local") {
        let url = url::Url::parse(&c.url).map_err(|e| format!("GET {PATH}: channel {}: url {:?}: {e}", c.channel, c.url))?;
        out.push(Listed {
            channel: c.channel,
            name: c.name,
            host: url.host_str().map(str::to_owned),
            url: Some(url),
            username: c.username,
            password: None::<Secret>,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let fp = crate::config::trust::format_fingerprint(&[0xab; 32]);
        assert_eq!(Trust::parse_fingerprint(&fp).unwrap(), Trust::Fingerprint([0xab; 32]));
        assert_eq!(Trust::parse_fingerprint(&"ab".repeat(32)).unwrap(), Trust::Fingerprint([0xab; 32]));
        assert!(Trust::parse_fingerprint("sha256:AB:CD").unwrap_err().contains("32 bytes"));
        assert!(Trust::parse_fingerprint("sha256:zz").unwrap_err().contains("hex"));
    }

    #[test]
    fn only_local_cameras_and_clear_errors() {
        let body = r#"{"cameras":[{"channel":2,"name":"door","url":"rtsp://10.0.0.2/s","username":"admin","owner":"local"},
                                  {"channel":9,"name":null,"url":"rtsp://10.0.0.9/s","username":null,"owner":"nvr-a"}]}"#;
        let l = parse(body).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].channel, l[0].username.as_deref()), (2, Some("admin")));
        assert!(parse(r#"{"cameras":[{"channel":1}]}"#).unwrap_err().contains("missing field"));
        assert!(parse(r#"{"cameras":[{"channel":1,"url":"x","owner":"local"}]}"#).unwrap_err().contains("channel 1"));
        assert!(parse("{\"cameras\":[").unwrap_err().contains("malformed"));
    }
}
