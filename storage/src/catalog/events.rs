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
            let rows = st.query_map(params![after_id, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
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
            })?;
            rows.collect()
        })
    }
}
