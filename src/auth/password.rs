//! Password hashing: Argon2id with the RustCrypto defaults (m = 19 MiB, t = 2, p = 1, the
//! OWASP minimum), as PHC strings. Callers on the async runtime run these in `spawn_blocking`.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use super::secret::Password;

/// Hashes a password with a fresh random salt.
pub fn hash(pw: &Password) -> Result<String, String> {
    Argon2::default().hash_password(pw.expose().as_bytes()).map(|h| h.to_string()).map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `pw` matches the PHC string. A malformed stored hash never matches.
pub fn verify(pw: &Password, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(pw.expose().as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Verifies against a hash of nothing in particular, so a login for an unknown user costs
/// as much time as a wrong password.
pub fn verify_dummy(pw: &Password) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash(&Password::new(super::secret::random_secret(""))).unwrap_or_default());
    let _ = verify(pw, phc);
}

/// Checks a new password's length (the only rule: long enough, not too long to hash).
pub fn check_new(pw: &Password) -> Result<(), String> {
    let n = pw.expose().chars().count();
    if n < 8 {
        return Err("the password must have at least 8 characters".into());
    }
    if pw.expose().len() > 1024 {
        return Err("the password must be at most 1024 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let pw = Password::new("correct horse");
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&pw, &h));
        assert!(!verify(&Password::new("wrong horse"), &h));
        assert!(!verify(&pw, "garbage"));
        assert!(check_new(&Password::new("short")).is_err());
    }
}
