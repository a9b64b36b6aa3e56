//! Redacting newtypes for the secrets of access control: passwords, bearer tokens, session ids.
//!
//! None of them implements `Display`; `Debug` prints `<redacted>`. The value comes out only
//! through `expose()`, at the one place that hashes it or hands it to the client once.

use std::fmt;

macro_rules! redacting {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }
            /// The secret itself: for hashing, or for printing once to its owner. Never log it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name)
            }
        }
    };
}

redacting!(
    /// A user's password, as typed.
    Password
);
redacting!(
    /// An API bearer token (`us_…`), shown once at creation.
    Token
);
redacting!(
    /// A browser session id (the cookie value).
    SessionId
);

/// 32 random bytes, URL-safe base64 without padding, with a prefix saying what it is.
pub fn random_secret(prefix: &str) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256 of a high-entropy secret (tokens, session ids), hex: what the database stores.
pub fn digest_hex(s: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let p = Password::new("hunter2");
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert!(!format!("{:?}", Token::new("us_abc")).contains("abc"));
        assert_ne!(random_secret("us_"), random_secret("us_"));
        assert_eq!(digest_hex("abc").len(), 64);
    }
}
