//! Catalog rows for volumes: which marker uuid belongs at which path.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Catalog};
use crate::error::Result;

#[derive(Clone, Debug)]
pub(crate) struct VolumeRow {
    pub id: i64,
    pub uuid: String,
    pub path: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        id: r.get(0)?,
        uuid: r.get(1)?,
        path: r.get(2)?,
    })
}

impl Catalog {
    pub(crate) fn volume_by_path(&self, path: &str) -> Result<Option<VolumeRow>> {
        self.with("looking up volume by path", |c| {
            c.query_row(
                "SELECT id, uuid, path FROM volume WHERE path = ?1",
                [path],
                row,
            )
            .optional()
        })
    }

    pub(crate) fn volume_by_uuid(&self, uuid: &str) -> Result<Option<VolumeRow>> {
        self.with("looking up volume by uuid", |c| {
            c.query_row(
                "SELECT id, uuid, path FROM volume WHERE uuid = ?1",
                [uuid],
                row,
            )
            .optional()
        })
    }

    pub(crate) fn insert_volume(&self, uuid: &str, path: &str, server_name: &str) -> Result<i64> {
        self.with("inserting volume", |c| {
            c.execute(
                "INSERT INTO volume (uuid, path, server_name, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![uuid, path, server_name, now_ms()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub(crate) fn update_volume_path(&self, id: i64, path: &str) -> Result<()> {
        self.with("updating volume path", |c| {
            c.execute(
                "UPDATE volume SET path = ?2 WHERE id = ?1",
                params![id, path],
            )
            .map(|_| ())
        })
    }

    /// Removes a volume row that has no segments (e.g. a stale row for a re-created empty volume).
    pub(crate) fn delete_empty_volume(&self, id: i64) -> Result<()> {
        self.with("deleting empty volume", |c| {
            c.execute(
                "DELETE FROM volume WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM segment WHERE volume_id = ?1)",
                [id],
            )
            .map(|_| ())
        })
    }

    pub(crate) fn segment_count(&self, volume_id: i64) -> Result<u64> {
        self.with("counting segments", |c| {
            c.query_row(
                "SELECT COUNT(*) FROM segment WHERE volume_id = ?1",
                [volume_id],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n.max(0) as u64)
    }
}
