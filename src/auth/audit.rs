//! The audit trail: an append-only table of who did what, from where, when, with what result.
//! Each entry carries the SHA-256 of the previous one, so editing or deleting a row shows.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::Digest;

use super::db::{AuthDb, Result};
use super::secret::hex;

/// What happened; `time`, `prev_hash` and `hash` are filled in by [`AuthDb::audit`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Entry {
    pub id: i64,
    pub time: String,
    /// The user acting (or the name tried, for a failed login); None for the local CLI.
    pub user: Option<String>,
    /// The API token used, by id.
    pub token: Option<i64>,
    /// The client's address; `cli` for commands run on the box.
    pub ip: Option<String>,
    /// `login`, `login_failed`, `logout`, `status`, `events`, `playback`, `recordings`, `export`,
    /// `user_add`, `user_passwd`, `user_del`, `token_create`, `token_revoke`, `audit_read`, …
    pub action: String,
    pub channel: Option<u32>,
    /// JSON: the range played, the user changed, …
    pub detail: serde_json::Value,
    /// `ok`, or why not (`denied`, `bad_password`, …).
    pub result: String,
    pub bytes: Option<u64>,
    pub prev_hash: String,
    pub hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn entry_hash(e: &Entry) -> String {
    let fields = serde_json::json!([e.id, e.time, e.user, e.token, e.ip, e.action, e.channel, e.detail.to_string(), e.result, e.bytes]);
    let mut h = sha2::Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex(&h.finalize())
}

fn read_entry(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
    let detail: String = r.get(7)?;
    Ok(Entry {
        id: r.get(0)?,
        time: r.get(1)?,
        user: r.get(2)?,
        token: r.get(3)?,
        ip: r.get(4)?,
        action: r.get(5)?,
        channel: r.get(6)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        result: r.get(8)?,
        bytes: r.get::<_, Option<i64>>(9)?.map(|b| b.max(0) as u64),
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

const COLS: &str = "id, time, user, token, ip, action, channel, detail, result, bytes, prev_hash, hash";

impl AuthDb {
    /// Appends an entry, chained to the last one (in one write transaction, so the CLI and
    /// `run` appending together still make one chain).
    pub fn audit(&self, mut e: Entry) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(self.sql_err("appending to the audit trail"))?;
        let last: Option<(i64, String)> = tx
            .query_row("SELECT id, hash FROM auth_audit ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(self.sql_err("appending to the audit trail"))?;
        let (last_id, prev) = last.unwrap_or((0, GENESIS.to_owned()));
        e.id = last_id + 1;
        e.time = crate::commands::time::format_90k(crate::commands::time::now_90k());
        e.prev_hash = prev;
        e.hash = entry_hash(&e);
        tx.execute(
            &format!("INSERT INTO auth_audit ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![e.id, e.time, e.user, e.token, e.ip, e.action, e.channel, e.detail.to_string(), e.result, e.bytes.map(|b| b as i64), e.prev_hash, e.hash],
        )
        .map_err(self.sql_err("appending to the audit trail"))?;
        tx.commit().map_err(self.sql_err("appending to the audit trail"))
    }

    /// Entries at or after `since` (RFC 3339, compared as text: every time is stored in UTC
    /// with the same format), oldest first, at most `limit`, after id `after`.
    pub fn audit_entries(&self, since: Option<&str>, after: i64, limit: usize) -> Result<Vec<Entry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!("SELECT {COLS} FROM auth_audit WHERE id > ?1 AND time >= ?2 ORDER BY id LIMIT ?3"))
            .map_err(self.sql_err("reading the audit trail"))?;
        let rows = st.query_map(params![after, since.unwrap_or(""), limit as i64], read_entry).map_err(self.sql_err("reading the audit trail"))?;
        rows.map(|r| r.map_err(self.sql_err("reading the audit trail"))).collect()
    }

    /// Walks the whole chain; Err names the first entry that does not match.
    pub fn audit_verify(&self) -> Result<std::result::Result<usize, String>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {COLS} FROM auth_audit ORDER BY id")).map_err(self.sql_err("reading the audit trail"))?;
        let rows = st.query_map([], read_entry).map_err(self.sql_err("reading the audit trail"))?;
        let (mut prev, mut expect_id, mut n) = (GENESIS.to_owned(), 1i64, 0usize);
        for r in rows {
            let e = r.map_err(self.sql_err("reading the audit trail"))?;
            if e.id != expect_id {
                return Ok(Err(format!("entry {expect_id} is missing (next is {})", e.id)));
            }
            if e.prev_hash != prev {
                return Ok(Err(format!("entry {} does not follow entry {}: its previous hash differs", e.id, e.id - 1)));
            }
            if entry_hash(&e) != e.hash {
                return Ok(Err(format!("entry {} ({} at {}) was altered: its hash does not match its content", e.id, e.action, e.time)));
            }
            prev = e.hash;
            expect_id += 1;
            n += 1;
        }
        Ok(Ok(n))
    }
}
