//! A small HTTPS client for `understudy run`'s API in tests: trusts the certificate `run`
//! generated in the state dir, speaks HTTP/1.1, sends a bearer token when given one.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One answer: status code, head (status line and headers, lowercased) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    /// The head as sent (header values keep their case).
    pub raw_head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value, as sent (name in any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
    }

    /// The session cookie (`name=value`) a login set.
    #[allow(dead_code)] // not every test binary logs in
    pub fn cookie(&self) -> String {
        let c = self.header("set-cookie").unwrap_or_else(|| panic!("no cookie: {self:?}"));
        c.split(';').next().unwrap().trim().to_owned()
    }
}

/// The TLS client configuration trusting only the PEM certificate at `cert`.
pub fn tls_client(cert: &Path) -> Option<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).ok()?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(cfg))
}

/// One HTTP/1.1 request over TLS (when `tls` is Some) or plain TCP; None if the connection or
/// handshake fails. `headers` are full lines without CRLF.
pub fn request(port: u16, tls: Option<Arc<rustls::ClientConfig>>, method: &str, path: &str, headers: &[String], body: &[u8]) -> Option<Answer> {
    request_from(None, port, tls, method, path, headers, body)
}

/// A TCP connection to 127.0.0.1:`port` from a chosen loopback source address.
fn connect(from: Option<std::net::IpAddr>, port: u16) -> Option<std::net::TcpStream> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Some(ip) = from else { return std::net::TcpStream::connect(to).ok() };
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&std::net::SocketAddr::new(ip, 0).into()).ok()?;
    s.connect(&to.into()).ok()?;
    Some(s.into())
}

/// [`request`] from a chosen loopback source address (e.g. 127.0.0.2: "another client").
#[allow(clippy::too_many_arguments)]
pub fn request_from(from: Option<std::net::IpAddr>, port: u16, tls: Option<Arc<rustls::ClientConfig>>, method: &str, path: &str, headers: &[String], body: &[u8]) -> Option<Answer> {
    let tcp = connect(from, port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    let mut buf = Vec::new();
    match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let conn = rustls::ClientConnection::new(cfg, name).ok()?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(&raw).ok()?;
            read_all(&mut s, &mut buf);
        }
        None => {
            let mut s = tcp;
            s.write_all(&raw).ok()?;
            read_all(&mut s, &mut buf);
        }
    }
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let raw_head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let head = raw_head.to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = super::dechunk(&body);
    }
    Some(Answer { status, head, raw_head, body })
}

/// Reads until EOF; a peer closing without TLS close_notify still leaves what arrived.
fn read_all(s: &mut impl Read, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
