//! Retention: keeping each volume within `max_bytes` and above its free-space `reserve` by
//! deleting the oldest closed segments (any channel).
//!
//! Order (as Moonfire NVR does it): delete the catalog rows first, in one transaction with a
//! `retention_log` row and an event; then unlink the files; then fsync their directories.
//! A crash in between leaves orphan files, which start-up indexes again (or removes) — never
//! a row pointing at a missing file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, RetentionCommit};
use crate::volume::Volume;

/// Once triggered, delete down to this share of the budget so retention doesn't run every round.
const TARGET_PERCENT: u128 = 95;
/// Rows considered per catalog query.
const BATCH: usize = 256;
/// How often to repeat "volume full with only open segments".
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The most bytes of segments the volume may hold now: min(max_bytes, used + free − reserve).
fn budget(volume: &Volume, used: u64) -> Option<u64> {
    let by_reserve = match volume.reserve {
        None => None,
        Some(reserve) => match volume.free_bytes() {
            Ok(free) => Some(used.saturating_add(free).saturating_sub(reserve)),
            Err(e) => {
                tracing::warn!(volume = %volume.path.display(), error = %e, "statvfs failed; reserve not enforced this round");
                None
            }
        },
    };
    match (volume.max_bytes, by_reserve) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What one retention pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub segments: usize,
    pub bytes: u64,
}

/// Deletes the oldest closed segments if the volume is over budget.
pub(crate) fn enforce(volume: &Volume, catalog: &Catalog) -> Outcome {
    let mut out = Outcome::default();
    let used = volume.used();
    let Some(budget) = budget(volume, used) else {
        return out;
    };
    if used <= budget {
        return out;
    }
    let target = u64::try_from(u128::from(budget) * TARGET_PERCENT / 100).unwrap_or(budget);
    let to_free = used - target;
    while out.bytes < to_free {
        let rows = match catalog.oldest_closed(volume.id, BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(volume = %volume.path.display(), error = %e, "retention: listing segments failed");
                return out;
            }
        };
        if rows.is_empty() {
            warn_full(volume, used, budget);
            break;
        }
        let mut chosen = Vec::new();
        let mut bytes = 0u64;
        for r in rows {
            if out.bytes + bytes >= to_free {
                break;
            }
            bytes += r.bytes;
            chosen.push(r);
        }
        let ids: Vec<i64> = chosen.iter().map(|r| r.id).collect();
        let oldest = chosen.iter().map(|r| r.start_90k).min().unwrap_or_default();
        let newest = chosen.iter().map(|r| r.end_90k).max().unwrap_or_default();
        let detail = serde_json::json!({
            "volume": volume.path.display().to_string(),
            "segments": chosen.len(),
            "bytes": bytes,
            "oldest_start_90k": oldest,
            "newest_end_90k": newest,
            "used_bytes": used,
            "budget_bytes": budget,
        });
        // 1. Rows first.
        let commit = RetentionCommit {
            volume_id: volume.id,
            ids: &ids,
            bytes,
            oldest_start_90k: oldest,
            newest_end_90k: newest,
            event_detail: &detail,
        };
        if let Err(e) = catalog.commit_retention(&commit) {
            tracing::error!(volume = %volume.path.display(), error = %e, "retention: catalog commit failed");
            return out;
        }
        // 2. Then the files.
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for r in &chosen {
            let path = volume.path.join(&r.rel_path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // The row is gone; start-up will find the orphan and index it again.
                    tracing::error!(path = %path.display(), error = %e, "retention: unlink failed");
                    continue;
                }
            }
            volume.sub_used(r.bytes);
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        // 3. Then the directories.
        for d in &dirs {
            if let Err(e) = crate::fsutil::fsync_dir(d) {
                tracing::warn!(dir = %d.display(), error = %e, "retention: fsync of directory failed");
            }
            remove_if_empty_and_old(d);
        }
        tracing::info!(volume = %volume.path.display(), segments = chosen.len(), bytes, oldest_start_90k = oldest,
            "retention deleted oldest segments");
        out.segments += chosen.len();
        out.bytes += bytes;
    }
    out
}

fn warn_full(volume: &Volume, used: u64, budget: u64) {
    let mut last = volume
        .last_full_warning
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY) {
        *last = Some(Instant::now());
        tracing::error!(volume = %volume.path.display(), used, budget,
            "VOLUME FULL: over budget and only open segments remain; nothing can be deleted");
    }
}

/// Removes a date directory emptied by retention, unless it is today's or yesterday's (UTC),
/// which a writer may be about to use.
fn remove_if_empty_and_old(dir: &std::path::Path) {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Ok(date) = name.parse::<jiff::civil::Date>() else {
        return;
    };
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    if date >= today.yesterday().unwrap_or(today) {
        return;
    }
    if std::fs::remove_dir(dir).is_ok() {
        if let Some(parent) = dir.parent() {
            let _ = crate::fsutil::fsync_dir(parent);
        }
    }
}
