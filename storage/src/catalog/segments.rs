//! Catalog rows for segment files: inserted by the syncer once durable, updated every sync
//! round while open, finalized on close, rebuilt from the files at start-up.

use rusqlite::{params, Connection, Row};

use super::{now_ms, Catalog};
use crate::error::Result;

/// A full segment row, as inserted or upserted.
#[derive(Clone, Debug)]
pub(crate) struct NewSegment {
    pub channel: u32,
    pub volume_id: i64,
    pub rel_path: String,
    pub start_90k: i64,
    pub end_90k: i64,
    pub bytes: u64,
    pub frames: u64,
    pub codec: String,
    pub width: u16,
    pub height: u16,
    pub sample_entry: Vec<u8>,
    pub open: bool,
    pub fragments: Vec<u8>,
    /// Takeover footage (a main's camera), as opposed to this box's own cameras.
    pub takeover: bool,
    /// The audio track's codec name and whole sample entry, if the segment has one.
    pub audio_codec: Option<String>,
    pub audio_entry: Option<Vec<u8>>,
}

/// The durable progress of an already cataloged segment.
#[derive(Clone, Debug)]
pub(crate) struct SegmentUpdate {
    pub id: i64,
    pub end_90k: i64,
    pub bytes: u64,
    pub frames: u64,
    pub fragments: Vec<u8>,
    pub open: bool,
}

/// One change in a syncer's batch.
#[derive(Clone, Debug)]
pub(crate) enum SyncOp {
    Insert(NewSegment),
    Update(SegmentUpdate),
}

/// A segment row as read back.
#[derive(Clone, Debug)]
pub(crate) struct SegmentRow {
    pub id: i64,
    pub channel: u32,
    pub volume_id: i64,
    pub rel_path: String,
    pub start_90k: i64,
    pub end_90k: i64,
    pub bytes: u64,
    pub frames: u64,
    pub codec: String,
    pub width: u16,
    pub height: u16,
    pub sample_entry: Vec<u8>,
    pub open: bool,
    /// Empty unless asked for.
    pub fragments: Vec<u8>,
    pub audio_codec: Option<String>,
    pub audio_entry: Option<Vec<u8>>,
}

const COLUMNS: &str =
    "id, channel, volume_id, path, start_90k, end_90k, bytes, frames, codec, width, height, sample_entry, open, audio_codec, audio_entry";

fn read_row(r: &Row<'_>, with_fragments: bool) -> rusqlite::Result<SegmentRow> {
    Ok(SegmentRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        volume_id: r.get(2)?,
        rel_path: r.get(3)?,
        start_90k: r.get(4)?,
        end_90k: r.get(5)?,
        bytes: r.get::<_, i64>(6)?.max(0) as u64,
        frames: r.get::<_, i64>(7)?.max(0) as u64,
        codec: r.get(8)?,
        width: r.get(9)?,
        height: r.get(10)?,
        sample_entry: r.get(11)?,
        open: r.get(12)?,
        audio_codec: r.get(13)?,
        audio_entry: r.get(14)?,
        fragments: if with_fragments {
            r.get(15)?
        } else {
            Vec::new()
        },
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert(c: &Connection, s: &NewSegment) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO segment (channel, volume_id, path, start_90k, end_90k, bytes, frames, codec, width, height,
                              sample_entry, open, fragments, takeover, audio_codec, audio_entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (volume_id, path) DO UPDATE SET
            channel = excluded.channel, start_90k = excluded.start_90k, end_90k = excluded.end_90k,
            bytes = excluded.bytes, frames = excluded.frames, codec = excluded.codec,
            width = excluded.width, height = excluded.height, sample_entry = excluded.sample_entry,
            open = excluded.open, fragments = excluded.fragments,
            takeover = MAX(segment.takeover, excluded.takeover),
            audio_codec = excluded.audio_codec, audio_entry = excluded.audio_entry",
        params![
            s.channel,
            s.volume_id,
            s.rel_path,
            s.start_90k,
            s.end_90k,
            to_i64(s.bytes),
            to_i64(s.frames),
            s.codec,
            s.width,
            s.height,
            s.sample_entry,
            s.open,
            s.fragments,
            s.takeover,
            s.audio_codec,
            s.audio_entry
        ],
    )?;
    c.query_row(
        "SELECT id FROM segment WHERE volume_id = ?1 AND path = ?2",
        params![s.volume_id, s.rel_path],
        |r| r.get(0),
    )
}

/// Which rule chose a retention batch, in the order they apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetentionRule {
    /// This box's own `[[camera]]` footage, oldest first.
    Local,
    /// Takeover footage older than `protect_takeover`, oldest first.
    TakeoverExpired,
    /// Takeover footage younger than `protect_takeover`: only when nothing else is left.
    TakeoverProtected,
}

impl RetentionRule {
    pub const ORDER: [RetentionRule; 3] = [
        RetentionRule::Local,
        RetentionRule::TakeoverExpired,
        RetentionRule::TakeoverProtected,
    ];

    /// The reason given in the `retention` event.
    pub fn reason(self) -> &'static str {
        match self {
            RetentionRule::Local => "local footage, oldest first",
            RetentionRule::TakeoverExpired => "takeover footage older than protect_takeover",
            RetentionRule::TakeoverProtected => {
                "protected takeover footage: nothing else left to delete"
            }
        }
    }

    fn filter(self) -> &'static str {
        match self {
            // Every filter names ?3 once, so each statement takes the same three parameters.
            RetentionRule::Local => "takeover = 0 AND ?3 = ?3",
            RetentionRule::TakeoverExpired => "takeover = 1 AND end_90k < ?3",
            RetentionRule::TakeoverProtected => "takeover = 1 AND ?3 = ?3",
        }
    }
}

/// A retention decision to commit: rows to delete and what to log.
pub(crate) struct RetentionCommit<'a> {
    pub volume_id: i64,
    pub ids: &'a [i64],
    pub bytes: u64,
    pub oldest_start_90k: i64,
    pub newest_end_90k: i64,
    pub event_detail: &'a serde_json::Value,
}


/// The longest a segment may span (3 h): range queries rely on it, the writer enforces it.
pub(crate) const MAX_SEGMENT_SPAN_90K: i64 = 3 * 3600 * 90_000;

impl Catalog {
    /// Applies one syncer round in one transaction; returns the ids of inserted rows (None for updates).
    pub(crate) fn apply_sync(&self, ops: &[SyncOp]) -> Result<Vec<Option<i64>>> {
        self.with("committing sync round", |c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(ops.len());
            for op in ops {
                match op {
                    SyncOp::Insert(s) => ids.push(Some(insert(&tx, s)?)),
                    SyncOp::Update(u) => {
                        tx.execute(
                            "UPDATE segment SET end_90k = ?2, bytes = ?3, frames = ?4, fragments = ?5, open = ?6
                             WHERE id = ?1",
                            params![u.id, u.end_90k, to_i64(u.bytes), to_i64(u.frames), u.fragments, u.open],
                        )?;
                        ids.push(None);
                    }
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Inserts or replaces (by volume and path) a row rebuilt from a file.
    pub(crate) fn upsert_segment(&self, s: &NewSegment) -> Result<i64> {
        self.with("upserting segment", |c| insert(c, s))
    }

    pub(crate) fn segments_on_volume(&self, volume_id: i64) -> Result<Vec<SegmentRow>> {
        self.with("listing segments of a volume", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segment WHERE volume_id = ?1"
            ))?;
            let rows = st.query_map([volume_id], |r| read_row(r, false))?;
            rows.collect()
        })
    }

    pub(crate) fn delete_segments(&self, ids: &[i64]) -> Result<()> {
        self.with("deleting segments", |c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute("DELETE FROM segment WHERE id = ?1", [id])?;
            }
            tx.commit()
        })
    }

    /// Segments of `channel` overlapping `[from, to]`, by start time.
    pub(crate) fn overlapping(
        &self,
        channel: u32,
        from_90k: i64,
        to_90k: i64,
        with_fragments: bool,
    ) -> Result<Vec<SegmentRow>> {
        self.with("listing recordings", |c| {
            let cols = if with_fragments {
                format!("{COLUMNS}, fragments")
            } else {
                COLUMNS.to_owned()
            };
            // `start_90k >= ?4` bounds the scan of the (channel, start_90k) index from below:
            // no segment spans more than MAX_SEGMENT_SPAN_90K (the writer cuts one that would),
            // so a segment reaching `from` started at most that long before it. Without it a
            // query for the last hour walks the channel's whole history.
            let mut st = c.prepare_cached(&format!(
                "SELECT {cols} FROM segment WHERE channel = ?1 AND start_90k <= ?3 AND end_90k >= ?2
                 AND start_90k >= ?4 ORDER BY start_90k, id"
            ))?;
            let lower = from_90k.saturating_sub(MAX_SEGMENT_SPAN_90K);
            let rows = st.query_map(params![channel, from_90k, to_90k, lower], |r| {
                read_row(r, with_fragments)
            })?;
            rows.collect()
        })
    }

    /// The oldest closed segments on a volume that `rule` may delete, any channel.
    /// `protect_from_90k`: takeover footage ending at or after it is protected.
    pub(crate) fn oldest_closed(
        &self,
        volume_id: i64,
        rule: RetentionRule,
        protect_from_90k: i64,
        limit: usize,
    ) -> Result<Vec<SegmentRow>> {
        self.with("listing oldest segments", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segment WHERE volume_id = ?1 AND open = 0 AND {}
                 ORDER BY start_90k, id LIMIT ?2",
                rule.filter()
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = st.query_map(params![volume_id, limit, protect_from_90k], |r| {
                read_row(r, false)
            })?;
            rows.collect()
        })
    }

    /// Deletes the rows chosen by retention, logs them and records an event, in one transaction.
    /// Only closed rows are deleted; returns how many were.
    pub(crate) fn commit_retention(&self, rc: &RetentionCommit<'_>) -> Result<usize> {
        self.with("committing retention", |c| {
            let tx = c.transaction()?;
            let now = now_ms();
            let mut n = 0;
            for id in rc.ids {
                n += tx.execute("DELETE FROM segment WHERE id = ?1 AND open = 0", [id])?;
            }
            tx.execute(
                "INSERT INTO retention_log (time_ms, volume_id, segments, bytes, oldest_start_90k, newest_end_90k)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now, rc.volume_id, n as i64, to_i64(rc.bytes), rc.oldest_start_90k, rc.newest_end_90k],
            )?;
            tx.execute(
                "INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (?1, 'retention', NULL, NULL, ?2)",
                params![now, rc.event_detail.to_string()],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// Number of rows in the retention log (for status and tests).
    pub(crate) fn retention_log_len(&self) -> Result<u64> {
        self.with("counting retention log", |c| {
            c.query_row("SELECT COUNT(*) FROM retention_log", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
        })
    }
}
