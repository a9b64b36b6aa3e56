//! Probing a main recorder once: TCP connect, HTTP GET (2xx) or RTSP OPTIONS (200).
//!
//! Each probe is one short connection with a deadline; a probe never retries by itself (the
//! state machine's `fail_after` is the retry policy). Errors are short sentences for the
//! operator and never contain credentials.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Probe, Secret};

/// Credentials used by HTTP and RTSP probes.
#[derive(Clone, Debug, Default)]
pub struct ProbeAuth {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Runs one probe within `timeout`. `Ok` means the main is healthy.
pub async fn probe(p: &Probe, auth: &ProbeAuth, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, probe_inner(p, auth)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn probe_inner(p: &Probe, auth: &ProbeAuth) -> Result<(), String> {
    match p {
        Probe::Tcp { host, port } => {
            connect(host, *port).await?;
            Ok(())
        }
        Probe::Http { url } => {
            if url.scheme() == "https" {
                // TLS is not linked in: a TLS listener accepting connections is the health signal.
                connect(url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(443)).await?;
                return Ok(());
            }
            http_get(url, auth).await
        }
        Probe::Rtsp { url } => rtsp_options(url, auth).await,
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))
}

/// Reads a response head (up to the blank line, 16 KiB at most).
async fn read_head(s: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            if buf.is_empty() {
                return Err("connection closed without an answer".into());
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn status_code(head: &str, proto: &str) -> Result<u16, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(p), Some(code)) if p.starts_with(proto) => code.parse().map_err(|_| format!("bad status line {line:?}")),
        _ => Err(format!("not a {proto} answer: {:?}", line.chars().take(60).collect::<String>())),
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn basic(auth: &ProbeAuth) -> Option<String> {
    let u = auth.username.as_ref()?;
    let p = auth.password.as_ref().map(Secret::expose).unwrap_or_default();
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
}

fn host_port(url: &url::Url, default: u16) -> (String, u16) {
    (url.host_str().unwrap_or_default().to_owned(), url.port().unwrap_or(default))
}

async fn http_get(url: &url::Url, auth: &ProbeAuth) -> Result<(), String> {
    let (host, port) = host_port(url, 80);
    let mut s = connect(&host, port).await?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: understudy-probe\r\nConnection: close\r\n");
    if let Some(b) = basic(auth) {
        req.push_str(&format!("Authorization: {b}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("sending GET: {e}"))?;
    let head = read_head(&mut s).await?;
    match status_code(&head, "HTTP/")? {
        c if (200..300).contains(&c) => Ok(()),
        c => Err(format!("HTTP status {c}")),
    }
}

async fn rtsp_options(url: &url::Url, auth: &ProbeAuth) -> Result<(), String> {
    let (host, port) = host_port(url, 554);
    let mut s = connect(&host, port).await?;
    let target = url.as_str();
    let send = |cseq: u32, authz: Option<String>| {
        let mut r = format!("OPTIONS {target} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: understudy-probe\r\n");
        if let Some(a) = authz {
            r.push_str(&format!("Authorization: {a}\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    s.write_all(send(1, None).as_bytes()).await.map_err(|e| format!("sending OPTIONS: {e}"))?;
    let head = read_head(&mut s).await?;
    let code = status_code(&head, "RTSP/")?;
    if code == 200 {
        return Ok(());
    }
    if code == 401 && auth.username.is_some() {
        // RFC 2326 §D.2 / RFC 2617: answer the challenge once, Digest if offered, else Basic.
        let challenge = header(&head, "WWW-Authenticate").unwrap_or_default();
        let authz = if challenge.trim_start().to_ascii_lowercase().starts_with("digest") {
            digest(challenge, auth, "OPTIONS", target)
        } else {
            basic(auth)
        };
        s.write_all(send(2, authz).as_bytes()).await.map_err(|e| format!("sending OPTIONS: {e}"))?;
        let head = read_head(&mut s).await?;
        return match status_code(&head, "RTSP/")? {
            200 => Ok(()),
            c => Err(format!("RTSP status {c} (with credentials)")),
        };
    }
    Err(format!("RTSP status {code}"))
}

/// RFC 2617 §3.2.2 Digest response without qop (what RTSP servers use).
fn digest(challenge: &str, auth: &ProbeAuth, method: &str, uri: &str) -> Option<String> {
    use md5::{Digest, Md5};
    let param = |name: &str| -> Option<String> {
        let i = challenge.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = &challenge[i..];
        Some(rest[..rest.find('"')?].to_owned())
    };
    let (realm, nonce) = (param("realm")?, param("nonce")?);
    let user = auth.username.as_ref()?;
    let pass = auth.password.as_ref().map(Secret::expose).unwrap_or_default();
    let hex = |s: String| format!("{:x}", Md5::digest(s.as_bytes()));
    let ha1 = hex(format!("{user}:{realm}:{pass}"));
    let ha2 = hex(format!("{method}:{uri}"));
    let response = hex(format!("{ha1}:{nonce}:{ha2}"));
    Some(format!(r#"Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}""#))
}
