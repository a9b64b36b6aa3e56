//! The audit trail: an append-only table of who did what, from where, when, with what result.
//! Each entry carries the SHA-256 of the previous one, so editing or deleting a row shows; the
//! newest entry is anchored outside the database, in `state_dir/audit.head` (entry count and
//! hash, keyed with `state_dir/audit.key`), so removing the newest entries or rewriting the
//! whole chain shows too.
//!
//! Crash rule: an append takes `state_dir/audit.lock` (so `run` and the CLI append one at a
//! time), commits the row, then replaces the anchor (temporary file, fsync, rename, fsync of
//! the directory). A crash between the commit and the rename leaves the anchor one entry behind:
//! the table's newest entry then follows the anchored one (its `prev_hash` is the anchored
//! hash); that, and only that, is accepted as "not anchored yet". An anchor ahead of the table
//! means entries were removed. An append that finds the anchor not matching the table keeps
//! the finding in the anchor (`broken`), so writing on does not hide it.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::db::{AuthDb, DbError, Result};
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
    /// Appends an entry, chained to the last one, and moves the anchor to it (see the module
    /// comment for the order). One append at a time across processes (`audit.lock`) and in
    /// this one (the connection's mutex), so the CLI and `run` appending together make one
    /// chain and the anchor never goes backwards.
    pub fn audit(&self, mut e: Entry) -> Result<()> {
        let dir = self.state_dir();
        let _lock = lock(&dir, true)?;
        let key = anchor_key(&dir)?;
        let anchor = read_anchor(&dir);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(self.sql_err("appending to the audit trail"))?;
        let last: Option<Head> = tx
            .query_row("SELECT id, hash, prev_hash FROM auth_audit ORDER BY id DESC LIMIT 1", [], |r| Ok(Head { id: r.get(0)?, hash: r.get(1)?, prev_hash: r.get(2)? }))
            .optional()
            .map_err(self.sql_err("appending to the audit trail"))?;
        e.id = last.as_ref().map_or(0, |h| h.id) + 1;
        e.time = crate::commands::time::format_90k(crate::commands::time::now_90k());
        e.prev_hash = last.as_ref().map_or_else(|| GENESIS.to_owned(), |h| h.hash.clone());
        e.hash = entry_hash(&e);
        let (adopted, mut broken) = match &anchor {
            Ok(Some(a)) => (a.adopted, a.broken.clone()),
            _ => (last.as_ref().map_or(0, |h| h.id), Vec::new()),
        };
        match check_anchor(&dir, &key, &anchor, last.as_ref()) {
            Ok(Anchored::Missing) if e.id > 1 => {
                tracing::warn!(path = %dir.join(HEAD_FILE).display(), entries = e.id - 1, "the audit trail had no anchor: anchoring it as it is");
            }
            Ok(_) => {}
            Err(problem) => {
                tracing::warn!(problem = %problem, "the audit trail's anchor does not match its table; kept in the anchor for `understudy audit --verify`");
                broken.push(format!("found when appending entry {} at {}: {problem}", e.id, e.time));
                let excess = broken.len().saturating_sub(MAX_BROKEN);
                broken.drain(..excess);
            }
        }
        tx.execute(
            &format!("INSERT INTO auth_audit ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![e.id, e.time, e.user, e.token, e.ip, e.action, e.channel, e.detail.to_string(), e.result, e.bytes.map(|b| b as i64), e.prev_hash, e.hash],
        )
        .map_err(self.sql_err("appending to the audit trail"))?;
        tx.commit().map_err(self.sql_err("appending to the audit trail"))?;
        let mut head = Anchor { entries: e.id, hash: e.hash, adopted, broken, mac: String::new() };
        head.mac = head.mac(&key);
        write_anchor(&dir, &head)
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

    /// Walks the whole chain, then checks its newest entry against the anchor; Ok says how
    /// many entries were verified (and any note), Err names the first problem.
    pub fn audit_verify(&self) -> Result<std::result::Result<String, String>> {
        let dir = self.state_dir();
        let _lock = lock(&dir, false)?;
        let key = anchor_key(&dir)?;
        let anchor = read_anchor(&dir);
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {COLS} FROM auth_audit ORDER BY id")).map_err(self.sql_err("reading the audit trail"))?;
        let rows = st.query_map([], read_entry).map_err(self.sql_err("reading the audit trail"))?;
        let (mut prev, mut expect_id) = (GENESIS.to_owned(), 1i64);
        let mut last: Option<Head> = None;
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
            prev = e.hash.clone();
            expect_id += 1;
            last = Some(Head { id: e.id, hash: e.hash, prev_hash: e.prev_hash });
        }
        let n = last.as_ref().map_or(0, |h| h.id);
        if let Ok(Some(a)) = &anchor {
            if !a.broken.is_empty() && a.mac_ok(&key) {
                return Ok(Err(format!("the anchor {} recorded earlier mismatches: {}", dir.join(HEAD_FILE).display(), a.broken.join("; "))));
            }
        }
        let adopted = match &anchor {
            Ok(Some(a)) if a.adopted > 0 => format!(" (anchored from entry {} on; before it, the chain alone vouches)", a.adopted),
            _ => String::new(),
        };
        Ok(match check_anchor(&dir, &key, &anchor, last.as_ref()) {
            Ok(Anchored::Yes) => Ok(format!("{n} entries, hash chain verified, newest entry matches the anchor{adopted}")),
            Ok(Anchored::Lagging) => Ok(format!(
                "{n} entries, hash chain verified; entry {n} is not anchored yet (the process appending it stopped before updating {}), entry {} matches the anchor{adopted}",
                dir.join(HEAD_FILE).display(),
                n - 1
            )),
            Ok(Anchored::Missing) if n == 0 => Ok("0 entries".to_owned()),
            Ok(Anchored::Missing) => Err(format!(
                "the anchor {} is missing, so removed newest entries would not show ({n} entries in the table; the next entry written anchors the chain as it is)",
                dir.join(HEAD_FILE).display()
            )),
            Err(problem) => Err(problem),
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.path().parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

/// The newest entry of the table.
struct Head {
    id: i64,
    hash: String,
    prev_hash: String,
}

/// The anchor's file, its key and the lock serialising appends, in `state_dir`.
pub const HEAD_FILE: &str = "audit.head";
pub const KEY_FILE: &str = "audit.key";
const LOCK_FILE: &str = "audit.lock";
/// Findings kept in the anchor at most (the oldest go first).
const MAX_BROKEN: usize = 20;

/// `state_dir/audit.head`: the count and hash of the newest entry, keyed.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Anchor {
    entries: i64,
    hash: String,
    /// Entries the table already had when the anchor was first written (0: from the start).
    #[serde(default)]
    adopted: i64,
    /// Mismatches an append found between the anchor and the table; never cleared by appends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    broken: Vec<String>,
    /// HMAC-SHA256 of the fields above with `audit.key`.
    mac: String,
}

impl Anchor {
    fn mac(&self, key: &[u8; 32]) -> String {
        let text = format!("understudy audit head v1\n{}\n{}\n{}\n{}", self.entries, self.hash, self.adopted, self.broken.join("\n"));
        hex(&hmac_sha256(key, text.as_bytes()))
    }

    fn mac_ok(&self, key: &[u8; 32]) -> bool {
        bool::from(self.mac(key).as_bytes().ct_eq(self.mac.as_bytes()))
    }
}

/// How the table's newest entry stands against the anchor.
#[derive(Debug, PartialEq, Eq)]
enum Anchored {
    Yes,
    /// The newest entry follows the anchored one: a crash between commit and anchor.
    Lagging,
    Missing,
}

/// Err is the sentence naming what does not match.
fn check_anchor(dir: &Path, key: &[u8; 32], anchor: &std::result::Result<Option<Anchor>, String>, last: Option<&Head>) -> std::result::Result<Anchored, String> {
    let path = dir.join(HEAD_FILE);
    let a = match anchor {
        Err(e) => return Err(e.clone()),
        Ok(None) => return Ok(Anchored::Missing),
        Ok(Some(a)) => a,
    };
    if !a.mac_ok(key) {
        return Err(format!("the anchor {} was not written with this box's key {} (rewritten by hand?)", path.display(), dir.join(KEY_FILE).display()));
    }
    let (rows, hash, prev) = last.map_or((0, GENESIS, GENESIS), |h| (h.id, h.hash.as_str(), h.prev_hash.as_str()));
    if a.entries > rows {
        let gone = a.entries - rows;
        return Err(format!("the newest {gone} entries were removed: the anchor says {} entries, the table has {rows}", a.entries));
    }
    if a.entries == rows && a.hash == hash {
        return Ok(Anchored::Yes);
    }
    if a.entries + 1 == rows && a.hash == prev {
        return Ok(Anchored::Lagging);
    }
    if a.entries == rows {
        return Err(format!("entry {rows} is not the anchored one: its hash differs from the anchor's (the chain was rewritten)"));
    }
    Err(format!("the table has {rows} entries but the anchor says {} (with a hash the table does not continue): entries were added or the chain rewritten", a.entries))
}

fn read_anchor(dir: &Path) -> std::result::Result<Option<Anchor>, String> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("the anchor {} is unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading the anchor {}: {e}", path.display())),
    }
}

/// Replaces the anchor atomically and durably: temporary file, fsync, rename, fsync the directory.
fn write_anchor(dir: &Path, a: &Anchor) -> Result<()> {
    let path = dir.join(HEAD_FILE);
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let err = |what: &str, p: &Path, e: std::io::Error| DbError::Invalid(format!("{what} {}: {e}", p.display()));
    let text = serde_json::to_vec_pretty(a).map_err(|e| DbError::Invalid(format!("encoding {}: {e}", path.display())))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| err("creating", &tmp, e))?;
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| err("writing", &tmp, e))?;
    owned_like_dir(dir, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| err("renaming to", &path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("syncing", dir, e))
}

/// The anchor's key (32 random bytes, mode 0600), made on first use.
fn anchor_key(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => b.try_into().map_err(|_| DbError::Invalid(format!("{}: not a 32-byte key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut o = std::fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(&key).and_then(|_| f.sync_all()).map_err(|e| DbError::Invalid(format!("writing {}: {e}", path.display())))?;
                    owned_like_dir(dir, &path)?;
                    Ok(key)
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anchor_key(dir),
                Err(e) => Err(DbError::Invalid(format!("creating {}: {e}", path.display()))),
            }
        }
        Err(e) => Err(DbError::Invalid(format!("reading {}: {e}", path.display()))),
    }
}

/// An advisory lock on `state_dir/audit.lock`, held until dropped (exclusive to append,
/// shared to verify).
fn lock(dir: &Path, exclusive: bool) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut o = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let f = o.read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| DbError::Invalid(format!("opening {}: {e}", path.display())))?;
    owned_like_dir(dir, &path)?;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let r = unsafe { libc::flock(f.as_raw_fd(), if exclusive { libc::LOCK_EX } else { libc::LOCK_SH }) };
        if r == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(DbError::Invalid(format!("locking {}: {e}", path.display())));
        }
    }
}

/// Run as root (`sudo understudy audit`), gives a file made in `state_dir` to the directory's
/// owner, so the service's own user can still append afterwards.
fn owned_like_dir(dir: &Path, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let m = std::fs::metadata(dir).map_err(|e| DbError::Invalid(format!("reading {}: {e}", dir.display())))?;
    std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())).map_err(|e| DbError::Invalid(format!("giving {} to the owner of {}: {e}", path.display(), dir.display())))
}

/// HMAC-SHA256 (RFC 2104) of `msg` with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |b: u8| block.map(|k| k ^ b);
    let inner = sha2::Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    sha2::Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(db: &AuthDb, action: &str) {
        db.audit(Entry { action: action.into(), result: "ok".into(), ..Default::default() }).unwrap();
    }

    fn verify(db: &AuthDb) -> std::result::Result<String, String> {
        db.audit_verify().unwrap()
    }

    #[test]
    fn anchor_catches_removed_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        for a in ["a", "b", "c", "d"] {
            append(&db, a);
        }
        assert!(verify(&db).unwrap().starts_with("4 entries"), "{:?}", verify(&db));
        let key = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
        db.conn().execute("DELETE FROM auth_audit WHERE id >= 3", []).unwrap();
        let err = verify(&db).unwrap_err();
        assert!(err.contains("the newest 2 entries were removed: the anchor says 4 entries, the table has 2"), "{err}");
        // Writing on does not hide it: the finding stays in the anchor.
        append(&db, "e");
        let err = verify(&db).unwrap_err();
        assert!(err.contains("found when appending entry 3") && err.contains("the newest 2 entries were removed"), "{err}");
    }

    #[test]
    fn anchor_catches_a_rewritten_chain_and_a_forged_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        for a in ["a", "b", "c"] {
            append(&db, a);
        }
        // A consistent rewrite of the whole chain: same count, other content.
        let mut rows = db.audit_entries(None, 0, 100).unwrap();
        let mut prev = GENESIS.to_owned();
        for e in &mut rows {
            e.detail = serde_json::json!({ "rewritten": true });
            e.prev_hash = prev.clone();
            e.hash = entry_hash(e);
            prev = e.hash.clone();
            db.conn().execute("UPDATE auth_audit SET detail = ?2, prev_hash = ?3, hash = ?4 WHERE id = ?1", params![e.id, e.detail.to_string(), e.prev_hash, e.hash]).unwrap();
        }
        let err = verify(&db).unwrap_err();
        assert!(err.contains("entry 3 is not the anchored one"), "{err}");
        // An anchor written to match, without the key, is refused.
        let mut a = read_anchor(dir.path()).unwrap().unwrap();
        a.hash = prev;
        a.mac = a.mac(&[7; 32]);
        write_anchor(dir.path(), &a).unwrap();
        let err = verify(&db).unwrap_err();
        assert!(err.contains("was not written with this box's key"), "{err}");
    }

    #[test]
    fn anchor_may_lag_by_the_entry_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        append(&db, "a");
        append(&db, "b");
        let anchored_two = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        append(&db, "c");
        // A crash after committing entry 3, before its anchor replaced entry 2's.
        std::fs::write(dir.path().join(HEAD_FILE), &anchored_two).unwrap();
        let ok = verify(&db).unwrap();
        assert!(ok.contains("entry 3 is not anchored yet") && ok.contains("entry 2 matches the anchor"), "{ok}");
        append(&db, "d");
        assert!(verify(&db).unwrap().starts_with("4 entries"), "{:?}", verify(&db));
        // Two behind is not a crash: entries were added behind the anchor's back.
        std::fs::write(dir.path().join(HEAD_FILE), &anchored_two).unwrap();
        assert!(verify(&db).unwrap_err().contains("the table has 4 entries but the anchor says 2"));
    }

    #[test]
    fn a_trail_without_anchor_is_adopted_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        append(&db, "a");
        append(&db, "b");
        std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
        assert!(verify(&db).unwrap_err().contains("is missing"));
        append(&db, "c");
        let ok = verify(&db).unwrap();
        assert!(ok.contains("anchored from entry 2 on"), "{ok}");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 uses a 4-byte key; ours are 32 bytes, zero-padded the same way.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(hex(&hmac_sha256(&key, b"what do ya want for nothing?")), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
