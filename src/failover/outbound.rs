//! Outbound HTTP(S) and TLS for probes and webhooks: a reqwest client (rustls, ring) trusting
//! what the config says (public roots, a CA file, or one pinned certificate), and error texts
//! an operator can act on.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

use crate::config::trust::format_fingerprint;
use crate::config::TlsTrust;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust`.
pub fn tls_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match trust {
        TlsTrust::Roots => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Ca { file, certs } => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(CertificateDer::from(c.clone()))
                    .map_err(|e| format!("CA certificate in {} is not usable: {e}", file.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(sha256) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256: *sha256, algs: provider().signature_verification_algorithms }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// An HTTP client for one peer: no redirects, no pooled connections (each probe proves the
/// peer accepts a new connection), `timeout` for connecting and for the whole request.
pub fn http_client(trust: &TlsTrust, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(trust)?)
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("understudy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A short sentence for a failed request: the innermost cause ("Connection refused", "invalid
/// peer certificate: UnknownIssuer"), with a hint when the certificate was refused. Never the
/// URL's credentials (URLs carry none; `without_url` to be sure).
pub fn describe(e: reqwest::Error, trust: &TlsTrust) -> String {
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    let e = e.without_url();
    let mut cause: &(dyn std::error::Error + 'static) = &e;
    loop {
        if let Some(r) = tls_reason(cause) {
            return tls_hint(r, trust);
        }
        match cause.source() {
            Some(s) => cause = s,
            None => return tls_hint(cause.to_string(), trust),
        }
    }
}

/// The certificate problem in `e` (a rustls error, possibly inside an `io::Error`), in words.
pub fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.get_ref().and_then(|inner| tls_reason(inner));
    }
    match e.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => Some(format!("invalid peer certificate: {}", o.0)),
        other => Some(other.to_string()),
    }
}

/// Adds what to do when `msg` says the certificate was refused.
pub fn tls_hint(msg: String, trust: &TlsTrust) -> String {
    if !msg.contains("certificate") {
        return msg;
    }
    match trust {
        TlsTrust::Roots => format!("TLS: {msg} (a self-signed main needs ca = \"FILE\" or fingerprint = \"sha256:…\")"),
        TlsTrust::Ca { file, .. } => format!("TLS: {msg} (checked against ca = {})", file.display()),
        TlsTrust::Fingerprint(_) => format!("TLS: {msg}"),
    }
}

/// Accepts exactly one leaf certificate (by SHA-256) and still checks that the peer holds its
/// key (the handshake signature).
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Mismatch(String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "certificate fingerprint {} is not the pinned one", self.0)
    }
}

impl std::error::Error for Mismatch {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha2::Sha256::digest(end_entity.as_ref());
        if got.as_slice() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            let other = rustls::OtherError(Arc::new(Mismatch(format_fingerprint(&got))));
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
