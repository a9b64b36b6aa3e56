//! Probing a main recorder once: TCP connect, HTTP(S) GET (2xx) or RTSP(S) DESCRIBE (200).
//!
//! Each probe is one short connection with a deadline; a probe never retries by itself (the
//! state machine's `fail_after` is the retry policy). HTTP goes through reqwest; TLS trusts what
//! the main's `ca`/`fingerprint` say; a 401 is answered once with Digest (RFC 7616, qop=auth,
//! via `http-auth`) or Basic. Errors are short sentences for the operator and never contain
//! credentials.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::outbound;
use crate::config::{Main, Probe, Secret, TlsTrust};

/// Credentials and TLS trust used by HTTP and RTSP probes, with the HTTP client built once.
#[derive(Clone, Debug, Default)]
pub struct ProbeAuth {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: TlsTrust,
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
}

impl ProbeAuth {
    /// What probing `m` needs.
    pub fn of(m: &Main) -> ProbeAuth {
        ProbeAuth::new(m.username.clone(), m.password.clone(), m.tls.clone())
    }

    pub fn new(username: Option<String>, password: Option<Secret>, tls: TlsTrust) -> ProbeAuth {
        ProbeAuth { username, password, tls, client: Arc::default() }
    }

    fn http(&self, timeout: Duration) -> Result<&reqwest::Client, String> {
        self.client.get_or_init(|| outbound::http_client(&self.tls, timeout)).as_ref().map_err(Clone::clone)
    }

    /// The `Authorization` answering `challenges` (WWW-Authenticate values), if we have a user.
    fn answer(&self, challenges: &str, method: &str, uri: &str) -> Result<String, String> {
        let Some(user) = &self.username else {
            return Err("the main asks for credentials (HTTP 401): set its username and password".to_owned());
        };
        let mut client = http_auth::PasswordClient::builder()
            .challenges(challenges)
            .build()
            .map_err(|e| format!("cannot answer the main's authentication challenge: {e}"))?;
        let params = http_auth::PasswordParams {
            username: user,
            password: self.password.as_ref().map(Secret::expose).unwrap_or_default(),
            uri,
            method,
            body: Some(&[]),
        };
        client.respond(&params).map_err(|e| format!("cannot answer the main's authentication challenge: {e}"))
    }
}

/// Runs one probe within `timeout`. `Ok` means the main is healthy.
pub async fn probe(p: &Probe, auth: &ProbeAuth, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, probe_inner(p, auth, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn probe_inner(p: &Probe, auth: &ProbeAuth, timeout: Duration) -> Result<(), String> {
    match p {
        Probe::Tcp { host, port } => {
            connect(host, *port).await?;
            Ok(())
        }
        Probe::Http { url } => http_get(url, auth, timeout).await,
        Probe::Rtsp { url } => rtsp_describe(url, auth).await,
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))
}

async fn http_get(url: &url::Url, auth: &ProbeAuth, timeout: Duration) -> Result<(), String> {
    let client = auth.http(timeout)?;
    let get = |authz: Option<String>| {
        let mut rb = client.get(url.clone());
        if let Some(a) = authz {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        async { rb.send().await.map_err(|e| outbound::describe(e, &auth.tls)) }
    };
    let mut resp = get(None).await?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenges = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authz = auth.answer(&challenges, "GET", &uri)?;
        resp = get(Some(authz)).await?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err("HTTP status 401 (wrong username or password)".to_owned());
        }
    }
    match resp.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("HTTP status {}", s.as_u16())),
    }
}

/// DESCRIBE over plain TCP (`rtsp://`) or TLS (`rtsps://`, same trust as https): the main
/// serves this stream, with these credentials (many servers answer OPTIONS to anyone).
async fn rtsp_describe(url: &url::Url, auth: &ProbeAuth) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let tls = url.scheme() == "rtsps";
    let port = url.port().unwrap_or(if tls { 322 } else { 554 });
    let tcp = connect(&host, port).await?;
    if !tls {
        return rtsp_exchange(tcp, url, auth).await;
    }
    let config = outbound::tls_config(&auth.tls)?;
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| outbound::tls_hint(outbound::tls_reason(&e).unwrap_or_else(|| e.to_string()), &auth.tls))?;
    rtsp_exchange(stream, url, auth).await
}

/// RTSP/1.0 DESCRIBE, answering one 401 challenge (RFC 2326 §D.2) with the `http-auth` crate.
async fn rtsp_exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, url: &url::Url, auth: &ProbeAuth) -> Result<(), String> {
    let target = url.as_str();
    let request = |cseq: u32, authz: Option<&str>| {
        let mut r = format!("DESCRIBE {target} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\nUser-Agent: understudy-probe\r\n");
        if let Some(a) = authz {
            r.push_str(&format!("Authorization: {a}\r\n"));
        }
        r + "\r\n"
    };
    s.write_all(request(1, None).as_bytes()).await.map_err(|e| format!("sending DESCRIBE: {e}"))?;
    let head = read_head(&mut s).await?;
    match rtsp_status(&head)? {
        200 => Ok(()),
        401 => {
            let challenges = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("WWW-Authenticate"))
                .map(|(_, v)| v.trim())
                .collect::<Vec<_>>()
                .join(", ");
            let authz = auth.answer(&challenges, "DESCRIBE", target)?;
            s.write_all(request(2, Some(&authz)).as_bytes()).await.map_err(|e| format!("sending DESCRIBE: {e}"))?;
            match rtsp_status(&read_head(&mut s).await?)? {
                200 => Ok(()),
                401 => Err("RTSP status 401 (wrong username or password)".to_owned()),
                c => Err(format!("RTSP status {c} (with credentials)")),
            }
        }
        c => Err(format!("RTSP status {c}")),
    }
}

/// Reads an RTSP answer's head (up to the blank line, 16 KiB at most).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() <= 16 * 1024 {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            if buf.is_empty() {
                return Err("connection closed without an answer".into());
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn rtsp_status(head: &str) -> Result<u16, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(p), Some(code)) if p.starts_with("RTSP/") => Ok(code),
        _ => Err(format!("not an RTSP answer: {:?}", line.chars().take(60).collect::<String>())),
    }
}
