//! The access-control tables (users, sessions, tokens) in `state_dir/catalog.db`, on a
//! connection of their own, with their own schema version in `auth_schema`.
//!
//! Every call reads the database, so `understudy user …`/`token …` run beside `understudy run`
//! (SQLite WAL) take effect on the next request. Calls block: use them off the async threads.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::perm::{Channels, Role, Scope};

/// Schema steps of the auth tables, in order; `auth_schema.version` counts those applied.
const STEPS: &[&str] = &[r#"
CREATE TABLE auth_user (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    channels TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE auth_session (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES auth_user(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    ip TEXT NOT NULL
);
CREATE TABLE auth_token (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES auth_user(id) ON DELETE CASCADE,
    role TEXT,
    channels TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER
);
CREATE TABLE auth_audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    user TEXT,
    token INTEGER,
    ip TEXT,
    action TEXT NOT NULL,
    channel INTEGER,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    bytes INTEGER,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"#,
    // 2: a token's scope (NULL: its role's full rights; `metrics`: only /metrics).
    "ALTER TABLE auth_token ADD COLUMN scope TEXT;",
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("access-control tables in {path}: {context}: {source}")]
    Sql { path: PathBuf, context: String, source: rusqlite::Error },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DbError>;

#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub channels: Channels,
    pub password_hash: String,
    pub created: i64,
}

#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    pub role: Option<Role>,
    pub channels: Channels,
    pub scope: Scope,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

pub struct AuthDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

pub fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

const USER_COLS: &str = "u.id, u.name, u.role, u.channels, u.password_hash, u.created";

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, String, String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_user(t: (i64, String, String, String, String, i64)) -> Result<User> {
    let role = Role::parse(&t.2).map_err(DbError::Invalid)?;
    let channels = Channels::parse(&t.3).map_err(DbError::Invalid)?;
    Ok(User { id: t.0, name: t.1, role, channels, password_hash: t.4, created: t.5 })
}

impl AuthDb {
    /// Opens (creating if needed) `state_dir/catalog.db` and brings the auth tables up to date.
    pub fn open(state_dir: &Path) -> Result<AuthDb> {
        let path = state_dir.join("catalog.db");
        let ctx = |c: &str| {
            let (path, c) = (path.clone(), c.to_owned());
            move |source| DbError::Sql { path, context: c, source }
        };
        std::fs::create_dir_all(state_dir).map_err(|e| DbError::Invalid(format!("creating {}: {e}", state_dir.display())))?;
        let mut conn = Connection::open(&path).map_err(ctx("opening"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(ctx("setting busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(ctx("enabling WAL"))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(ctx("enabling foreign keys"))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(ctx("upgrading schema"))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS auth_schema (version INTEGER NOT NULL)").map_err(ctx("upgrading schema"))?;
        let version: i64 = tx.query_row("SELECT version FROM auth_schema", [], |r| r.get(0)).optional().map_err(ctx("reading schema version"))?.unwrap_or(0);
        if version as usize > STEPS.len() {
            return Err(DbError::Invalid(format!(
                "{}: access-control schema version {version} is newer than this build supports ({}); upgrade understudy",
                path.display(),
                STEPS.len()
            )));
        }
        for step in &STEPS[version as usize..] {
            tx.execute_batch(step).map_err(ctx("upgrading schema"))?;
        }
        tx.execute("DELETE FROM auth_schema", []).map_err(ctx("upgrading schema"))?;
        tx.execute("INSERT INTO auth_schema (version) VALUES (?1)", [STEPS.len() as i64]).map_err(ctx("upgrading schema"))?;
        tx.commit().map_err(ctx("upgrading schema"))?;
        Ok(AuthDb { path, conn: Mutex::new(conn) })
    }

    /// `state_dir/catalog.db`.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn sql_err(&self, context: &str) -> impl FnOnce(rusqlite::Error) -> DbError {
        let (path, context) = (self.path.clone(), context.to_owned());
        move |source| DbError::Sql { path, context, source }
    }

    pub fn user_count(&self) -> Result<i64> {
        self.conn().query_row("SELECT count(*) FROM auth_user", [], |r| r.get(0)).map_err(self.sql_err("counting users"))
    }

    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let t = self
            .conn()
            .query_row(&format!("SELECT {USER_COLS} FROM auth_user u WHERE u.name = ?1"), [name], user_row)
            .optional()
            .map_err(self.sql_err("reading a user"))?;
        t.map(to_user).transpose()
    }

    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {USER_COLS} FROM auth_user u ORDER BY u.name")).map_err(self.sql_err("listing users"))?;
        let rows = st.query_map([], user_row).map_err(self.sql_err("listing users"))?;
        rows.map(|r| r.map_err(self.sql_err("listing users")).and_then(to_user)).collect()
    }

    pub fn add_user(&self, name: &str, role: Role, channels: &Channels, password_hash: &str) -> Result<()> {
        let r = self.conn().execute(
            "INSERT INTO auth_user (name, role, channels, password_hash, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, role.name(), channels.to_string(), password_hash, now_s()],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(DbError::Invalid(format!("user {name:?} already exists (use `user passwd` or `user del`)")))
            }
            r => r.map(drop).map_err(self.sql_err("adding a user")),
        }
    }

    /// Sets a new password hash and ends every session of the user. Returns false if no such user.
    pub fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql_err("changing a password"))?;
        let n = tx.execute("UPDATE auth_user SET password_hash = ?2 WHERE name = ?1", params![name, password_hash]).map_err(self.sql_err("changing a password"))?;
        tx.execute("DELETE FROM auth_session WHERE user_id = (SELECT id FROM auth_user WHERE name = ?1)", [name])
            .map_err(self.sql_err("ending sessions"))?;
        tx.commit().map_err(self.sql_err("changing a password"))?;
        Ok(n == 1)
    }

    /// Sets a user's role and channel set (sessions and tokens read them on every request, so
    /// the change applies at once). Returns false if no such user.
    pub fn update_user(&self, name: &str, role: Role, channels: &Channels) -> Result<bool> {
        let n = self
            .conn()
            .execute("UPDATE auth_user SET role = ?2, channels = ?3 WHERE name = ?1", params![name, role.name(), channels.to_string()])
            .map_err(self.sql_err("changing a user"))?;
        Ok(n == 1)
    }

    /// Deletes a user with their sessions and tokens. Returns false if no such user.
    pub fn del_user(&self, name: &str) -> Result<bool> {
        let n = self.conn().execute("DELETE FROM auth_user WHERE name = ?1", [name]).map_err(self.sql_err("deleting a user"))?;
        Ok(n == 1)
    }

    // ---- sessions ----

    pub fn create_session(&self, user_id: i64, id_hash: &str, csrf: &str, ip: &str) -> Result<()> {
        let now = now_s();
        self.conn()
            .execute(
                "INSERT INTO auth_session (id_hash, user_id, csrf, created, last_seen, ip) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![id_hash, user_id, csrf, now, ip],
            )
            .map(drop)
            .map_err(self.sql_err("creating a session"))
    }

    /// The session's user and CSRF token while it is within both limits (seconds); refreshes
    /// its idle clock (at most once a minute). Expired sessions are deleted.
    pub fn session(&self, id_hash: &str, idle: i64, max: i64) -> Result<Option<(User, String)>> {
        let now = now_s();
        let conn = self.conn();
        conn.execute("DELETE FROM auth_session WHERE last_seen < ?1 OR created < ?2", params![now - idle, now - max])
            .map_err(self.sql_err("expiring sessions"))?;
        let row = conn
            .query_row(
                &format!("SELECT {USER_COLS}, s.csrf, s.last_seen FROM auth_session s JOIN auth_user u ON u.id = s.user_id WHERE s.id_hash = ?1"),
                [id_hash],
                |r| Ok((user_row(r)?, r.get::<_, String>(6)?, r.get::<_, i64>(7)?)),
            )
            .optional()
            .map_err(self.sql_err("reading a session"))?;
        let Some((u, csrf, last_seen)) = row else { return Ok(None) };
        if now - last_seen >= 60 {
            conn.execute("UPDATE auth_session SET last_seen = ?2 WHERE id_hash = ?1", params![id_hash, now]).map_err(self.sql_err("refreshing a session"))?;
        }
        Ok(Some((to_user(u)?, csrf)))
    }

    pub fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.conn().execute("DELETE FROM auth_session WHERE id_hash = ?1", [id_hash]).map(drop).map_err(self.sql_err("ending a session"))
    }

    // ---- tokens ----

    /// Stores a token's hash and limits. A scope the user's (narrowed) role cannot use at all
    /// is refused, naming the user and the scope.
    pub fn create_token(&self, user: &str, hash: &str, role: Option<Role>, scope: Scope, channels: &Channels, expires: Option<i64>) -> Result<i64> {
        let u = self.user(user)?.ok_or_else(|| DbError::Invalid(format!("no user {user:?} (see `user list`)")))?;
        let effective = role.map_or(u.role, |r| r.min(u.role));
        if let Some(name) = scope.name().filter(|_| !scope.usable_by(effective)) {
            return Err(DbError::Invalid(format!("a token of user {user:?} ({}) cannot have the {name} scope: the role lacks that permission", effective.name())));
        }
        let conn = self.conn();
        conn.execute(
            "INSERT INTO auth_token (hash, user_id, role, channels, created, expires, scope) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![hash, u.id, role.map(Role::name), channels.to_string(), now_s(), expires, scope.name()],
        )
        .map_err(self.sql_err("creating a token"))?;
        Ok(conn.last_insert_rowid())
    }

    fn token_rows(&self, filter: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<(TokenRow, User)>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {USER_COLS}, t.id, t.role, t.channels, t.created, t.expires, t.revoked, t.scope FROM auth_token t JOIN auth_user u ON u.id = t.user_id {filter} ORDER BY t.id"
        );
        let mut st = conn.prepare(&sql).map_err(self.sql_err("reading tokens"))?;
        let rows = st
            .query_map(p, |r| {
                Ok((user_row(r)?, r.get::<_, i64>(6)?, r.get::<_, Option<String>>(7)?, r.get::<_, String>(8)?, r.get::<_, i64>(9)?, r.get::<_, Option<i64>>(10)?, r.get::<_, Option<i64>>(11)?, r.get::<_, Option<String>>(12)?))
            })
            .map_err(self.sql_err("reading tokens"))?;
        let mut out = Vec::new();
        for r in rows {
            let (u, id, role, ch, created, expires, revoked, scope) = r.map_err(self.sql_err("reading tokens"))?;
            let user = to_user(u)?;
            let role = role.map(|r| Role::parse(&r)).transpose().map_err(DbError::Invalid)?;
            let channels = Channels::parse(&ch).map_err(DbError::Invalid)?;
            let scope = scope.map(|s| Scope::parse(&s)).transpose().map_err(DbError::Invalid)?.unwrap_or_default();
            out.push((TokenRow { id, user: user.name.clone(), role, channels, scope, created, expires, revoked }, user));
        }
        Ok(out)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(self.token_rows("", &[])?.into_iter().map(|(t, _)| t).collect())
    }

    /// The token with this hash and its user, if it exists (revoked or expired included: the
    /// caller decides and says why).
    pub fn token(&self, hash: &str) -> Result<Option<(TokenRow, User)>> {
        Ok(self.token_rows("WHERE t.hash = ?1", &[&hash])?.into_iter().next())
    }

    /// Marks a token revoked. Returns false if there is no such (unrevoked) token.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        let n = self
            .conn()
            .execute("UPDATE auth_token SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL", params![id, now_s()])
            .map_err(self.sql_err("revoking a token"))?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::{digest_hex, SessionId, Token};
    use crate::auth::{Perm, SessionLimits};

    /// Sessions past either limit are refused and deleted, with rows backdated in the table;
    /// a session in use has its idle clock refreshed.
    #[test]
    fn sessions_expire_when_idle_and_at_the_absolute_limit() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        db.add_user("u", Role::Viewer, &Channels::All, "hash").unwrap();
        let uid = db.user("u").unwrap().unwrap().id;
        let limits = SessionLimits { idle_s: 3600, max_s: 8 * 3600 };
        let now = now_s();
        let rows = [
            ("fresh", now - 10, now - 10),
            ("idle", now - 2 * 3600, now - limits.idle_s - 1),
            ("old", now - limits.max_s - 1, now - 5),
            ("edge", now - limits.max_s + 120, now - limits.idle_s + 120),
        ];
        for (sid, created, last_seen) in rows {
            db.create_session(uid, &digest_hex(sid), "csrf", "127.0.0.1").unwrap();
            db.conn()
                .execute("UPDATE auth_session SET created = ?2, last_seen = ?3 WHERE id_hash = ?1", params![digest_hex(sid), created, last_seen])
                .unwrap();
        }
        let principal = |sid: &str| db.principal_for_session(&SessionId::new(sid), "127.0.0.1", limits).unwrap();
        assert!(principal("fresh").is_ok_and(|p| p.user == "u"));
        assert!(principal("edge").is_ok(), "within both limits, if only just");
        assert_eq!(principal("idle").err(), Some(crate::auth::Refusal::Unknown), "idle past session_idle");
        assert_eq!(principal("old").err(), Some(crate::auth::Refusal::Unknown), "past session_max though used 5 s ago");
        let mut left: Vec<String> = {
            let conn = db.conn();
            let mut st = conn.prepare("SELECT id_hash FROM auth_session").unwrap();
            st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        left.sort();
        let mut want = vec![digest_hex("edge"), digest_hex("fresh")];
        want.sort();
        assert_eq!(left, want, "expired sessions are deleted");
        let seen: i64 = db.conn().query_row("SELECT last_seen FROM auth_session WHERE id_hash = ?1", [digest_hex("edge")], |r| r.get(0)).unwrap();
        assert!(seen >= now, "a use refreshes the idle clock: {seen} < {now}");
    }

    /// A catalog of auth schema 1 (before token scopes) opens with its tokens unchanged (full
    /// rights); scoped tokens work after the upgrade.
    #[test]
    fn schema_1_tokens_survive_the_scope_column() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("catalog.db")).unwrap();
            c.execute_batch(STEPS[0]).unwrap();
            c.execute_batch("CREATE TABLE auth_schema (version INTEGER NOT NULL); INSERT INTO auth_schema (version) VALUES (1);").unwrap();
            c.execute("INSERT INTO auth_user (name, role, channels, password_hash, created) VALUES ('op', 'operator', '1-2', 'h', 0)", []).unwrap();
            c.execute("INSERT INTO auth_token (hash, user_id, role, channels, created) VALUES (?1, 1, NULL, 'all', 0)", [digest_hex("us_old")]).unwrap();
        }
        let db = AuthDb::open(dir.path()).unwrap();
        let version: i64 = db.conn().query_row("SELECT version FROM auth_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(version, STEPS.len() as i64);
        let old = db.principal_for_token(&Token::new("us_old"), "127.0.0.1").unwrap().unwrap();
        assert_eq!(old.scope, Scope::Full);
        assert!(old.can(Perm::Config) && old.can(Perm::Metrics) && old.can(Perm::Live));

        let (_, t) = db.issue_token("op", None, Scope::Metrics, &Channels::All, None).unwrap();
        let m = db.principal_for_token(&Token::new(t), "127.0.0.1").unwrap().unwrap();
        assert!(m.can(Perm::Metrics) && !m.can(Perm::Live) && !m.can(Perm::Config));
        assert_eq!(m.channels.to_string(), "1-2", "the user's channel set still applies");
        assert_eq!(db.tokens().unwrap().last().map(|t| t.scope), Some(Scope::Metrics));
        db.add_user("v", Role::Viewer, &Channels::All, "h").unwrap();
        let e = db.issue_token("v", None, Scope::Metrics, &Channels::All, None).unwrap_err().to_string();
        assert!(e.contains("\"v\"") && e.contains("metrics"), "{e}");
        drop(db);
        AuthDb::open(dir.path()).unwrap();
    }
}
