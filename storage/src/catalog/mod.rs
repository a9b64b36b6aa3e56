//! The SQLite catalog (`state_dir/catalog.db`): volumes, segments, events and the retention log.
//!
//! The files on the volumes are the truth; the catalog is an index of them that start-up
//! rebuilds where it disagrees. One connection behind a mutex; callers keep transactions short
//! and never do file IO while holding it.

mod events;
pub mod index;
mod segments;
pub(crate) use segments::MAX_SEGMENT_SPAN_90K;
mod volumes;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::{Error, Result};

pub use events::EventRecord;
pub(crate) use segments::{
    NewSegment, RetentionCommit, RetentionRule, SegmentRow, SegmentUpdate, SyncOp,
};

/// Schema steps, in order: step *i* (0-based) takes `PRAGMA user_version` from *i* to *i* + 1.
/// A new schema change appends a step here (never edits a shipped one); each step runs in one
/// transaction with the version bump, so a crash mid-upgrade leaves the previous version intact.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2_TAKEOVER, AUDIO_V3, EVENT_TIME_V4];

/// Events are read by time range, newest first (a channel's timeline), not only by id.
const EVENT_TIME_V4: &str = r#"
CREATE INDEX event_time ON event (time_ms);
"#;

/// Segments may hold an audio track: its codec name and sample entry (NULL: video only).
const AUDIO_V3: &str = r#"
ALTER TABLE segment ADD COLUMN audio_codec TEXT;
ALTER TABLE segment ADD COLUMN audio_entry BLOB;
"#;

/// Schema version stored in `PRAGMA user_version`: the number of steps in [`MIGRATIONS`].
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SCHEMA_V1: &str = r#"
CREATE TABLE volume (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    server_name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE segment (
    id INTEGER PRIMARY KEY,
    channel INTEGER NOT NULL,
    volume_id INTEGER NOT NULL REFERENCES volume (id),
    path TEXT NOT NULL,             -- relative to the volume
    start_90k INTEGER NOT NULL,     -- wall clock, 90 kHz since the epoch; media time 0 of the file
    end_90k INTEGER NOT NULL,       -- start + end of the last durable fragment
    bytes INTEGER NOT NULL,         -- durable length of the file
    frames INTEGER NOT NULL,
    codec TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sample_entry BLOB NOT NULL,     -- the stsd entry, to tell equal parameters apart
    open INTEGER NOT NULL,          -- 1 while a writer may still append
    fragments BLOB NOT NULL,        -- see catalog::index
    UNIQUE (volume_id, path)
);
CREATE INDEX segment_channel_start ON segment (channel, start_90k);
CREATE INDEX segment_volume_start ON segment (volume_id, start_90k);
CREATE TABLE event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    main TEXT,
    channel INTEGER,
    detail TEXT NOT NULL
);
CREATE TABLE retention_log (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    volume_id INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    oldest_start_90k INTEGER NOT NULL,
    newest_end_90k INTEGER NOT NULL
);
"#;

/// Step 2: whether a segment holds takeover footage (a main's camera) or this box's own
/// `[[camera]]` footage, so retention deletes local footage first.
const SCHEMA_V2_TAKEOVER: &str = r#"
ALTER TABLE segment ADD COLUMN takeover INTEGER NOT NULL DEFAULT 0;
CREATE INDEX segment_volume_takeover_start ON segment (volume_id, takeover, start_90k);
"#;

pub(crate) struct Catalog {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Holds an exclusive `flock` on `catalog.lock` for the catalog's lifetime (None when read-only).
    _lock: Option<File>,
}

impl Catalog {
    pub const FILE_NAME: &'static str = "catalog.db";
    const LOCK_NAME: &'static str = "catalog.lock";

    /// Opens (creating if needed) the catalog in `state_dir`, upgrading its schema.
    pub fn open(state_dir: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::io("creating state directory", state_dir, e))?;
        let path = state_dir.join(Self::FILE_NAME);
        let lock_path = state_dir.join(Self::LOCK_NAME);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening catalog lock", &lock_path, e))?;
        if !crate::fsutil::try_lock_exclusive(&lock)
            .map_err(|e| Error::io("locking", &lock_path, e))?
        {
            return Err(Error::CatalogLocked {
                path,
                lock: lock_path,
            });
        }
        let ctx = |context: &str| {
            let path = path.clone();
            let context = context.to_owned();
            move |source| Error::Catalog {
                path,
                context,
                source,
            }
        };
        let mut conn = Connection::open(&path).map_err(ctx("opening"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(ctx("setting busy timeout"))?;
        // WAL + NORMAL: a commit is durable once the WAL is synced at checkpoint; a power
        // loss may lose the last commits, which start-up re-derives from the files.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(ctx("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(ctx("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(ctx("enabling foreign keys"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ctx("reading schema version"))?;
        if !(0..=SCHEMA_VERSION).contains(&version) {
            return Err(Error::CatalogVersion {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (from, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = from as i64 + 1;
            let tx = conn.transaction().map_err(ctx("upgrading schema"))?;
            tx.execute_batch(step).map_err(ctx("upgrading schema"))?;
            tx.pragma_update(None, "user_version", to)
                .map_err(ctx("upgrading schema"))?;
            tx.commit().map_err(ctx("upgrading schema"))?;
            tracing::info!(path = %path.display(), from, to, "catalog schema upgraded");
        }
        Ok(Catalog {
            path,
            conn: Mutex::new(conn),
            _lock: Some(lock),
        })
    }

    /// Opens an existing catalog read-only, without the lock, alongside a recording process
    /// (SQLite's WAL lets readers and one writer proceed together).
    pub fn open_read_only(state_dir: &Path) -> Result<Catalog> {
        use rusqlite::OpenFlags;
        let path = state_dir.join(Self::FILE_NAME);
        let ctx = |context: &str| {
            let path = path.clone();
            let context = context.to_owned();
            move |source| Error::Catalog {
                path,
                context,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(ctx("opening read-only"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(ctx("setting busy timeout"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ctx("reading schema version"))?;
        if version != SCHEMA_VERSION {
            return Err(Error::CatalogVersion {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Catalog {
            path,
            conn: Mutex::new(conn),
            _lock: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction (Transaction rolls back on drop).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the connection, mapping errors with `context`.
    pub(crate) fn with<T>(
        &self,
        context: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        f(&mut conn).map_err(|source| Error::Catalog {
            path: self.path.clone(),
            context: context.to_owned(),
            source,
        })
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
