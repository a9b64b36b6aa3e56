//! Access control: users with roles and channel sets, browser sessions, API tokens, login
//! back-off and the audit trail, stored in `state_dir/catalog.db` (tables `auth_*`).

pub mod audit;
pub mod backoff;
pub mod db;
pub mod manage;
pub mod password;
pub mod perm;
pub mod secret;

pub use db::AuthDb;
pub use perm::{Channels, Perm, Role, Scope};

/// How long a browser session lives without a request, unless `[server] session_idle` says.
pub const SESSION_IDLE_S: i64 = 12 * 3600;
/// How long a browser session lives at most, unless `[server] session_max` says.
pub const SESSION_MAX_S: i64 = 7 * 24 * 3600;

/// A session's idle and absolute limits, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    pub idle_s: i64,
    pub max_s: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { idle_s: SESSION_IDLE_S, max_s: SESSION_MAX_S }
    }
}

/// Who is asking, with the rights in force for this request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub channels: Channels,
    /// A token's scope (`Full` for sessions).
    pub scope: Scope,
    /// The API token used, by id (None for a browser session).
    pub token: Option<i64>,
    /// The session's CSRF token (None for a bearer token).
    pub csrf: Option<String>,
    /// The client's address as trusted (peer, or forwarded by a trusted proxy).
    pub ip: String,
}

impl Principal {
    pub fn can(&self, p: Perm) -> bool {
        self.role.allows(p) && self.scope.allows(p)
    }

    /// The names of the permissions in force.
    pub fn perms(&self) -> Vec<&'static str> {
        Perm::ALL.iter().filter(|p| self.can(**p)).map(|p| p.name()).collect()
    }

    /// Whether rights (a role within a scope, on channels) are all within this principal's
    /// own: what it may grant to a user or a token.
    pub fn covers(&self, role: Role, scope: Scope, channels: &Channels) -> bool {
        Perm::ALL.iter().all(|p| !(role.allows(*p) && scope.allows(*p)) || self.can(*p)) && channels.is_subset(&self.channels)
    }

    pub fn sees(&self, channel: u32) -> bool {
        self.channels.contains(channel)
    }

    /// An audit entry for this principal, to fill in.
    pub fn entry(&self, action: &str, channel: Option<u32>, detail: serde_json::Value, result: &str) -> audit::Entry {
        audit::Entry {
            user: Some(self.user.clone()),
            token: self.token,
            ip: Some(self.ip.clone()),
            action: action.into(),
            channel,
            detail,
            result: result.into(),
            ..Default::default()
        }
    }
}

/// Why a bearer token or session cookie was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    Revoked,
}

impl Refusal {
    pub fn sentence(&self) -> &'static str {
        match self {
            Refusal::Unknown => "not logged in: log in (POST /api/login) or send Authorization: Bearer TOKEN",
            Refusal::Expired => "this token or session has expired",
            Refusal::Revoked => "this token was revoked",
        }
    }
}

impl AuthDb {
    /// The principal of a bearer token, checked against its user's current rights.
    pub fn principal_for_token(&self, token: &secret::Token, ip: &str) -> db::Result<Result<Principal, Refusal>> {
        let Some((t, u)) = self.token(&secret::digest_hex(token.expose()))? else { return Ok(Err(Refusal::Unknown)) };
        if t.revoked.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if t.expires.is_some_and(|e| e <= db::now_s()) {
            return Ok(Err(Refusal::Expired));
        }
        let role = t.role.map_or(u.role, |r| r.min(u.role));
        Ok(Ok(Principal { user: u.name, role, channels: u.channels.intersect(&t.channels), scope: t.scope, token: Some(t.id), csrf: None, ip: ip.into() }))
    }

    /// The principal of a session cookie.
    pub fn principal_for_session(&self, sid: &secret::SessionId, ip: &str, limits: SessionLimits) -> db::Result<Result<Principal, Refusal>> {
        match self.session(&secret::digest_hex(sid.expose()), limits.idle_s, limits.max_s)? {
            None => Ok(Err(Refusal::Unknown)),
            Some((u, csrf)) => Ok(Ok(Principal { user: u.name, role: u.role, channels: u.channels, scope: Scope::Full, token: None, csrf: Some(csrf), ip: ip.into() })),
        }
    }
}
