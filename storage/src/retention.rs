//! Retention: keeping each volume within `max_bytes` and above its free-space floor (`reserve`,
//! or the default one) by deleting closed segments, and making room at once when a write
//! hits ENOSPC.
//!
//! What goes first (`RetentionRule::ORDER`): this box's own `[[camera]]` footage, oldest first;
//! then takeover footage older than `protect_takeover`; protected takeover footage only when
//! nothing else is left (the volume is then flagged `only_protected`, with an event). Each
//! batch's `retention` event names its rule.
//!
//! Order of a batch (as Moonfire NVR does it): delete the catalog rows first, in one
//! transaction with a `retention_log` row and the event; then unlink the files; then fsync
//! their directories. A crash in between leaves orphan files, which start-up indexes again
//! (or removes) — never a row pointing at a missing file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, RetentionCommit, RetentionRule, SegmentRow};
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

/// Why a pass runs (said in the event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The syncer found the volume over its budget or below its floor.
    OverBudget,
    /// A writer's write failed with ENOSPC.
    DiskFull,
}

/// The 90 kHz wall-clock time before which takeover footage is no longer protected.
fn protect_from_90k(protect: Duration) -> i64 {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let protect_ms = i64::try_from(protect.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(protect_ms).saturating_mul(90)
}

/// Deletes closed segments (see the module docs) if the volume is over budget.
pub(crate) fn enforce(volume: &Volume, catalog: &Catalog, protect: Duration) -> Outcome {
    let _one = volume.retention.lock().unwrap_or_else(|p| p.into_inner());
    let used = volume.used();
    let Some(budget) = budget(volume, used) else {
        return Outcome::default();
    };
    if used <= budget {
        volume.full.store(false, Ordering::Release);
        return Outcome::default();
    }
    let target = u64::try_from(u128::from(budget) * TARGET_PERCENT / 100).unwrap_or(budget);
    free(volume, catalog, protect, used - target, Trigger::OverBudget, budget)
}

/// A write hit ENOSPC: delete at least `need` bytes (and down to the usual target) at once,
/// from the writer's thread. Returns what was freed (nothing: no closed segment is left).
pub(crate) fn make_room(volume: &Volume, catalog: &Catalog, protect: Duration, need: u64) -> Outcome {
    let _one = volume.retention.lock().unwrap_or_else(|p| p.into_inner());
    let used = volume.used();
    let budget = budget(volume, used).unwrap_or(used);
    let target = u64::try_from(u128::from(budget) * TARGET_PERCENT / 100).unwrap_or(budget);
    let to_free = need.max(used.saturating_sub(target)).max(1);
    free(volume, catalog, protect, to_free, Trigger::DiskFull, budget)
}

fn free(
    volume: &Volume,
    catalog: &Catalog,
    protect: Duration,
    to_free: u64,
    trigger: Trigger,
    budget: u64,
) -> Outcome {
    let mut out = Outcome::default();
    let used = volume.used();
    let cutoff = protect_from_90k(protect);
    let mut rules = RetentionRule::ORDER.iter().copied().peekable();
    while out.bytes < to_free {
        let Some(&rule) = rules.peek() else {
            volume.full.store(true, Ordering::Release);
            warn_full(volume, used, budget);
            break;
        };
        let rows = match catalog.oldest_closed(volume.id, rule, cutoff, BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(volume = %volume.path.display(), error = %e, "retention: listing segments failed");
                return out;
            }
        };
        if rows.is_empty() {
            rules.next();
            continue;
        }
        if rule == RetentionRule::TakeoverProtected {
            flag_only_protected(volume, catalog);
        } else {
            volume.only_protected.store(false, Ordering::Release);
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
        if !delete_batch(volume, catalog, &chosen, bytes, rule, trigger, used, budget) {
            return out;
        }
        out.segments += chosen.len();
        out.bytes += bytes;
    }
    if out.bytes >= to_free {
        volume.full.store(false, Ordering::Release);
    }
    out
}

/// Deletes one batch: rows (with log and event), files, directories. False if the catalog
/// commit failed (nothing deleted).
#[allow(clippy::too_many_arguments)]
fn delete_batch(
    volume: &Volume,
    catalog: &Catalog,
    chosen: &[SegmentRow],
    bytes: u64,
    rule: RetentionRule,
    trigger: Trigger,
    used: u64,
    budget: u64,
) -> bool {
    let ids: Vec<i64> = chosen.iter().map(|r| r.id).collect();
    let oldest = chosen.iter().map(|r| r.start_90k).min().unwrap_or_default();
    let newest = chosen.iter().map(|r| r.end_90k).max().unwrap_or_default();
    let detail = serde_json::json!({
        "volume": volume.path.display().to_string(),
        "reason": rule.reason(),
        "trigger": match trigger { Trigger::OverBudget => "over budget", Trigger::DiskFull => "disk full (ENOSPC)" },
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
        return false;
    }
    // 2. Then the files.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for r in chosen {
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
        reason = rule.reason(), ?trigger, "retention deleted segments");
    true
}

/// Only protected takeover footage is left to delete: flag the volume, and say so once.
fn flag_only_protected(volume: &Volume, catalog: &Catalog) {
    if volume.only_protected.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::warn!(volume = %volume.path.display(),
        "volume holds only protected takeover footage; deleting the oldest of it to keep recording");
    let detail = serde_json::json!({
        "volume": volume.path.display().to_string(),
        "reason": "only protected takeover footage is left; the oldest is deleted to keep recording",
    });
    if let Err(e) = catalog.add_event("volume_only_protected", None, None, &detail) {
        tracing::error!(error = %e, "could not record volume_only_protected event");
    }
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
