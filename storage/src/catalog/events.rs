//! The event log: disk errors, retention, repairs and whatever the binary records (failover).

use rusqlite::params;
use serde::Serialize;

use super::{now_ms, Catalog};
use crate::error::Result;

/// One logged event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    /// When it was recorded, RFC 3339 UTC.
    pub time: String,
    /// The same instant in milliseconds since the epoch.
    pub time_ms: i64,
    pub kind: String,
    /// The main recorder this concerns, if any.
    pub main: Option<String>,
    pub channel: Option<u32>,
    pub detail: serde_json::Value,
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl Catalog {
    pub(crate) fn add_event(
        &self,
        kind: &str,
        main: Option<&str>,
        channel: Option<u32>,
        detail: &serde_json::Value,
    ) -> Result<i64> {
        self.with("adding event", |c| {
            c.execute(
                "INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_ms(), kind, main, channel, detail.to_string()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub(crate) fn events_since(&self, after_id: i64, limit: usize) -> Result<Vec<EventRecord>> {
        self.with("reading events", |c| {
            let mut st = c.prepare_cached(
                "SELECT id, time_ms, kind, main, channel, detail FROM event WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![after_id, limit_param(limit)], read_event)?;
            rows.collect()
        })
    }

    /// Events in `[from_ms, to_ms)` that concern `channel`: its own, and those about one of
    /// `mains` with no channel (a main's takeover). Newest first, at most `limit`; the
    /// `event_time` index bounds the scan to the range.
    pub(crate) fn channel_events(
        &self,
        channel: u32,
        mains: &[String],
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        self.with("reading a channel's events", |c| {
            // `main IN (SELECT value FROM json_each(?))`: one cached statement for any list.
            let mut st = c.prepare_cached(
                "SELECT id, time_ms, kind, main, channel, detail FROM event
                 WHERE time_ms >= ?1 AND time_ms < ?2
                 AND (channel = ?3 OR (channel IS NULL AND main IN (SELECT value FROM json_each(?4))))
                 ORDER BY time_ms DESC, id DESC LIMIT ?5",
            )?;
            let mains = serde_json::Value::from(mains.to_vec()).to_string();
            let rows = st.query_map(
                params![from_ms, to_ms, channel, mains, limit_param(limit)],
                read_event,
            )?;
            rows.collect()
        })
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn read_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    let time_ms: i64 = r.get(1)?;
    let detail: String = r.get(5)?;
    Ok(EventRecord {
        id: r.get(0)?,
        time: rfc3339(time_ms),
        time_ms,
        kind: r.get(2)?,
        main: r.get(3)?,
        channel: r.get(4)?,
        // Written by us from a Value; if someone edited it by hand, keep the text.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channel_events_keeps_the_newest_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let mains = vec!["nvr-a".to_owned()];
        // Old events first (ids 1..=300, times 1000..1300 ms), then some outside the range or
        // about other channels and mains, then the newest.
        cat.with("test inserts", |c| {
            for i in 0..300i64 {
                c.execute(
                    "INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (?1, 'takeover', 'nvr-a', NULL, '{}')",
                    params![1000 + i],
                )?;
            }
            c.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (5000, 'x', NULL, 2, '{}')", [])?;
            c.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (5001, 'x', 'nvr-b', NULL, '{}')", [])?;
            c.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (9999, 'late', NULL, 1, '{}')", [])?;
            c.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (5002, 'mine', NULL, 1, '{\"a\":1}')", [])?;
            Ok(())
        })
        .unwrap();
        let got = cat.channel_events(1, &mains, 0, 9000, 100).unwrap();
        assert_eq!(got.len(), 100, "at most the limit");
        assert_eq!(got[0].kind, "mine", "the newest first: {:?}", got[0]);
        assert_eq!(got[0].detail, json!({ "a": 1 }));
        // Then the newest 99 of the main's takeovers (times 1299 down to 1201), none older.
        let times: Vec<i64> = got[1..].iter().map(|e| e.time_ms).collect();
        assert_eq!(times, (1201..=1299).rev().collect::<Vec<_>>());
        assert!(got.iter().all(|e| e.channel == Some(1) || e.main.as_deref() == Some("nvr-a")));
        // The range bounds both ends; no mains: only the channel's own.
        let got = cat.channel_events(1, &[], 1000, 9999, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["mine"]);
        // The query uses the time index rather than scanning the table.
        let plan: String = cat
            .with("plan", |c| {
                c.query_row(
                    "EXPLAIN QUERY PLAN SELECT id FROM event WHERE time_ms >= 1 AND time_ms < 2 ORDER BY time_ms DESC",
                    [],
                    |r| r.get::<_, String>(3),
                )
            })
            .unwrap();
        assert!(plan.contains("event_time"), "{plan}");
    }
}
