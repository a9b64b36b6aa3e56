//! HTTP authentication for RTSP (RFC 2326 §D, RFC 2617): Basic and Digest (MD5, no qop or
//! `qop=auth`) checks, and the `WWW-Authenticate` challenge.

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::config::{AuthConfig, AuthScheme};

pub(crate) const REALM: &str = "understudy-camsim";

/// Checks credentials of requests (RTSP here; the HTTP device simulators of the import tests
/// reuse it, HTTP Digest being the same scheme). `Debug` leaves out the password.
pub struct Authenticator {
    config: Option<AuthConfig>,
    nonce: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: Option<AuthConfig>) -> Self {
        Authenticator {
            config,
            nonce: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// Whether requests need credentials at all.
    pub(crate) fn required(&self) -> bool {
        self.config.is_some()
    }

    /// `WWW-Authenticate` value for a 401 (RFC 2617 §3.2.1, §2). Without configured credentials
    /// (a `RejectAuth` fault) a Digest challenge is sent.
    pub fn challenge(&self) -> String {
        match self.config.as_ref().map(|c| c.scheme) {
            Some(AuthScheme::Basic) => format!("Basic realm=\"{REALM}\""),
            Some(AuthScheme::Digest) | None => {
                format!("Digest realm=\"{REALM}\", nonce=\"{}\"", self.nonce)
            }
        }
    }

    /// Whether the `Authorization` header value authorizes `method` on `uri`.
    pub fn check(&self, method: &str, authorization: Option<&str>) -> bool {
        let Some(cfg) = &self.config else {
            return true;
        };
        let Some(value) = authorization else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        match cfg.scheme {
            AuthScheme::Basic if scheme.eq_ignore_ascii_case("Basic") => {
                let expected = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", cfg.username, cfg.password));
                constant_time_eq(rest.trim().as_bytes(), expected.as_bytes())
            }
            AuthScheme::Digest if scheme.eq_ignore_ascii_case("Digest") => {
                self.check_digest(cfg, method, rest)
            }
            _ => false,
        }
    }

    /// RFC 2617 §3.2.2.1: response = MD5(HA1:nonce[:nc:cnonce:qop]:HA2), HA1 =
    /// MD5(user:realm:password), HA2 = MD5(method:uri). The digest `uri` parameter is used as
    /// sent (clients sign the URI they put in the request line).
    fn check_digest(&self, cfg: &AuthConfig, method: &str, params: &str) -> bool {
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return false;
        };
        if user != cfg.username || realm != REALM || nonce != self.nonce {
            return false;
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return false;
        }
        let ha1 = md5_hex(&format!("{user}:{REALM}:{}", cfg.password));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return false;
                };
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            Some(_) => return false,
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        constant_time_eq(
            response.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        )
    }
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .fold(String::with_capacity(32), |mut acc, b| {
            use std::fmt::Write as _;
            let _ = write!(acc, "{b:02x}");
            acc
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `k="v", k2=v2` (RFC 2617 §1.2 auth-params, quoted strings may hold commas).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(scheme: AuthScheme) -> Authenticator {
        Authenticator::new(Some(AuthConfig {
            username: "admin".into(),
            password: "s3cret, \"x\"".into(),
            scheme,
        }))
    }

    #[test]
    fn basic() {
        let a = auth(AuthScheme::Basic);
        let good = base64::engine::general_purpose::STANDARD.encode("admin:s3cret, \"x\"");
        assert!(a.check("DESCRIBE", Some(&format!("Basic {good}"))));
        assert!(!a.check("DESCRIBE", Some("Basic YWRtaW46bm8=")));
        assert!(!a.check("DESCRIBE", None));
        assert!(a.challenge().starts_with("Basic realm="));
    }

    #[test]
    fn digest_with_and_without_qop() {
        let a = auth(AuthScheme::Digest);
        let n = a.nonce.clone();
        let ha1 = md5_hex(&format!("admin:{REALM}:s3cret, \"x\""));
        let ha2 = md5_hex("DESCRIBE:rtsp://h/cam/1");
        let r = md5_hex(&format!("{ha1}:{n}:{ha2}"));
        let hdr = format!(
            "Digest username=\"admin\", realm=\"{REALM}\", nonce=\"{n}\", uri=\"rtsp://h/cam/1\", response=\"{r}\""
        );
        assert!(a.check("DESCRIBE", Some(&hdr)));
        assert!(!a.check("SETUP", Some(&hdr)), "method is signed");
        let r2 = md5_hex(&format!("{ha1}:{n}:00000001:abc:auth:{ha2}"));
        let hdr2 = format!(
            "Digest username=\"admin\",realm=\"{REALM}\",nonce=\"{n}\",uri=\"rtsp://h/cam/1\",qop=auth,nc=00000001,cnonce=\"abc\",response=\"{r2}\",algorithm=MD5"
        );
        assert!(a.check("DESCRIBE", Some(&hdr2)));
        assert!(
            !a.check("DESCRIBE", Some(&hdr2.replace(&n, "0000"))),
            "nonce checked"
        );
        assert!(a.challenge().contains(&n));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn md5_known_value() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
