//! Which certificates an outbound TLS connection (probe, webhook) trusts: the public roots, a
//! CA file, or one pinned leaf certificate; parsed and checked when the config is loaded.

use std::path::{Path, PathBuf};

/// Trust for one outbound TLS peer. `Roots` unless `ca` or `fingerprint` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// The Mozilla root store (webpki-roots), host name checked.
    #[default]
    Roots,
    /// Only these CA certificates (DER, read from `file`), host name checked.
    Ca { file: PathBuf, certs: Vec<Vec<u8>> },
    /// Exactly the leaf certificate with this SHA-256 (self-signed NVRs); the host name is not
    /// checked, the handshake signature is.
    Fingerprint([u8; 32]),
}

/// Reads `ca` / `fingerprint` as written; the error is the message for the field.
pub fn parse(ca: Option<&Path>, fingerprint: Option<&str>) -> Result<TlsTrust, (&'static str, String)> {
    match (ca, fingerprint) {
        (Some(_), Some(_)) => Err(("fingerprint", "give ca or fingerprint, not both".to_owned())),
        (None, None) => Ok(TlsTrust::Roots),
        (Some(file), None) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::CertificateDer;
            let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.map(|c| c.map(|c| c.to_vec())).collect())
                .map_err(|e| ("ca", format!("cannot read PEM certificates from {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(("ca", format!("{} holds no PEM certificate", file.display())));
            }
            Ok(TlsTrust::Ca { file: file.to_owned(), certs })
        }
        (None, Some(f)) => parse_fingerprint(f).map(TlsTrust::Fingerprint).map_err(|m| ("fingerprint", m)),
    }
}

/// `sha256:AB:CD:…` (colons optional, any case) as printed by `understudy tls fingerprint` or
/// `openssl x509 -fingerprint -sha256`.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex_part = s
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| s.trim().strip_prefix("SHA256:"))
        .or_else(|| s.trim().strip_prefix("sha256 Fingerprint="))
        .ok_or_else(|| format!("{s:?} does not start with \"sha256:\""))?;
    let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| format!("{s:?} is not sha256: followed by 32 hex bytes"))?;
    Ok(out)
}

/// `sha256:AB:CD:…`, the form `understudy tls fingerprint` prints.
pub fn format_fingerprint(d: &[u8]) -> String {
    format!("sha256:{}", d.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_and_bad_ones_are_refused() {
        let d: Vec<u8> = (0u8..32).collect();
        let s = format_fingerprint(&d);
        assert_eq!(parse_fingerprint(&s).unwrap().to_vec(), d);
        assert_eq!(parse_fingerprint(&s.replace(':', "").replace("sha256", "sha256:").to_lowercase()).unwrap().to_vec(), d);
        assert!(parse_fingerprint("AB:CD").unwrap_err().contains("sha256:"));
        assert!(parse_fingerprint("sha256:AB:CD").unwrap_err().contains("32 hex bytes"));
        assert!(parse(Some(Path::new("/nonexistent.pem")), None).unwrap_err().1.contains("/nonexistent.pem"));
        assert_eq!(parse(Some(Path::new("/x")), Some("sha256:00")).unwrap_err().0, "fingerprint");
    }
}
