//! User and token changes shared by the CLI (`understudy user|token …`) and the HTTP API
//! (`/api/users`, `/api/tokens`): name rules, token issue, expiry parsing and token state.

use super::db::{self, AuthDb, DbError, TokenRow};
use super::perm::{Channels, Role, Scope};
use super::secret::{digest_hex, random_secret};

/// A user name: 1 to 64 letters, digits, `.`, `_`, `@` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("user name {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"))
    }
}

/// `30d`, `12h`… from now, as a Unix time in seconds.
pub fn expires_at(s: &str) -> Result<i64, String> {
    crate::config::units::parse_duration(s).map(|d| db::now_s() + d.as_secs() as i64)
}

/// `active`, `expired` or `revoked`.
pub fn token_state(t: &TokenRow, now: i64) -> &'static str {
    match (t.revoked, t.expires) {
        (Some(_), _) => "revoked",
        (None, Some(e)) if e <= now => "expired",
        _ => "active",
    }
}

impl AuthDb {
    /// Creates a token for `user`; returns its id and the token itself (shown once, stored
    /// only as a hash).
    pub fn issue_token(&self, user: &str, role: Option<Role>, scope: Scope, channels: &Channels, expires: Option<i64>) -> Result<(i64, String), DbError> {
        let token = random_secret("us_");
        let id = self.create_token(user, &digest_hex(&token), role, scope, channels, expires)?;
        Ok((id, token))
    }

    /// Whether a change leaves no admin: `name` loses the role (or is deleted) while it is the
    /// only admin.
    pub fn is_last_admin(&self, name: &str) -> Result<bool, DbError> {
        let admins: Vec<String> = self.users()?.into_iter().filter(|u| u.role == Role::Admin).map(|u| u.name).collect();
        Ok(admins.len() == 1 && admins[0] == name)
    }
}
