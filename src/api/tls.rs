//! TLS for the HTTP API (rustls through axum-server): the certificate in force, a self-signed
//! one generated into `state_dir/tls/` at first start when none is configured, its SHA-256
//! fingerprint, and reloading configured PEM files when they change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Server;

/// How often configured PEM files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The certificate and key files in force, and whether we generated them.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

/// Where the generated certificate lives.
pub fn generated_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let d = state_dir.join("tls");
    (d.join("cert.pem"), d.join("key.pem"))
}

/// The configured files, or the generated ones (made now if missing).
pub fn cert_files(server: &Server) -> Result<CertFiles, String> {
    if let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) {
        return Ok(CertFiles { cert: cert.clone(), key: key.clone(), generated: false });
    }
    let (cert, key) = generated_paths(&server.state_dir);
    if !cert.exists() || !key.exists() {
        generate(&cert, &key, server.listen)?;
    }
    Ok(CertFiles { cert, key, generated: true })
}

/// A self-signed certificate for localhost, the loopback addresses, the listen address and
/// the host name; the key is written with mode 0600.
fn generate(cert: &Path, key: &Path, listen: Option<std::net::SocketAddr>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(a) = listen.filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback()) {
        names.push(a.ip().to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("generating a TLS certificate: {e}"))?;
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| format!("writing {}: {e}", key.display()))?;
    f.write_all(ck.signing_key.serialize_pem().as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("writing {}: {e}", key.display()))?;
    std::fs::write(cert, ck.cert.pem()).map_err(|e| format!("writing {}: {e}", cert.display()))?;
    info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// `sha256:AB:CD:…` of the first certificate in a PEM file.
pub fn fingerprint(cert: &Path) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use sha2::Digest;
    let der = CertificateDer::from_pem_file(cert).map_err(|e| format!("reading the certificate {}: {e}", cert.display()))?;
    let d = sha2::Sha256::digest(der.as_ref());
    Ok(crate::config::trust::format_fingerprint(&d))
}

/// The rustls configuration, with ring as the process's crypto provider.
pub async fn load(files: &CertFiles) -> Result<RustlsConfig, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| format!("loading TLS certificate {} and key {} (server.tls_cert/tls_key): {e}", files.cert.display(), files.key.display()))
}

fn mtimes(files: &CertFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

/// Reloads the PEM files whenever either changes, until `shutdown`. A bad new pair is logged
/// and the old one stays in force.
pub fn watch(files: CertFiles, config: RustlsConfig, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = mtimes(&files);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
            }
            let now = mtimes(&files);
            if now == seen {
                continue;
            }
            seen = now;
            match config.reload_from_pem_file(&files.cert, &files.key).await {
                Ok(()) => info!(cert = %files.cert.display(), fingerprint = %fingerprint(&files.cert).unwrap_or_default(), "TLS certificate reloaded"),
                Err(e) => warn!(cert = %files.cert.display(), error = %e, "TLS certificate changed but does not load; keeping the old one"),
            }
        }
    });
}
