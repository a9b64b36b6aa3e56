//! Rebuilding the catalog from the files (start-up and `reindex`): the files are the truth.
//!
//! Each `chNNN/DATE/*.mp4` the catalog doesn't know, marks open, or records with another
//! size is repaired (torn tail cut off) and re-scanned; files without a complete init segment
//! or without a single fragment are deleted; rows whose files are gone are deleted. Files a
//! writer is using right now are left alone.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{index, Catalog, NewSegment, SegmentRow};
use crate::error::{Error, Result};
use crate::fmp4;
use crate::naming::{self, TICKS_PER_MS};
use crate::volume::Volume;

/// What an indexing pass did, over all volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReindexSummary {
    /// Segment files found.
    pub files: usize,
    /// Files scanned (the rest matched the catalog and were trusted).
    pub scanned: usize,
    /// Files whose torn tail was cut off.
    pub repaired: usize,
    pub bytes_cut: u64,
    /// Files the catalog didn't know.
    pub added: usize,
    /// Files deleted because they held no complete init segment or no fragment.
    pub removed_files: usize,
    /// Catalog rows deleted because their files are gone.
    pub removed_rows: usize,
    /// Files skipped because a writer is using them.
    pub skipped_active: usize,
    /// Files that could not be read (left as they are).
    pub errors: usize,
}

struct Found {
    rel: String,
    abs: PathBuf,
    channel: u32,
    start_ms: i64,
}

/// Lists the segment files of a volume. Unknown names are logged and left alone.
fn walk(volume: &Volume) -> Result<Vec<Found>> {
    let read = |dir: &Path| -> Result<Vec<std::fs::DirEntry>> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
        let mut v = Vec::new();
        for e in rd {
            v.push(e.map_err(|e| Error::io("listing", dir, e))?);
        }
        v.sort_by_key(|e| e.file_name());
        Ok(v)
    };
    let mut out = Vec::new();
    for ch in read(&volume.path)? {
        let name = ch.file_name();
        let Some(_) = name.to_str().and_then(naming::parse_channel_dir) else {
            continue;
        };
        if !ch.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        for date in read(&ch.path())? {
            if !date.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            for f in read(&date.path())? {
                let abs = f.path();
                let Ok(rel) = abs.strip_prefix(&volume.path) else {
                    continue;
                };
                match naming::parse_segment_rel_path(rel) {
                    Some((channel, start_ms)) => out.push(Found {
                        rel: rel.to_string_lossy().into_owned(),
                        abs: abs.clone(),
                        channel,
                        start_ms,
                    }),
                    None => {
                        tracing::warn!(path = %abs.display(), "ignoring unexpected file on volume")
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Indexes every volume. `force` scans every file (reindex); otherwise only files the catalog
/// doesn't vouch for. `progress` gets (files done, files total).
pub(crate) fn index_volumes(
    volumes: &[Arc<Volume>],
    catalog: &Catalog,
    force: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReindexSummary> {
    let mut found = Vec::with_capacity(volumes.len());
    for v in volumes {
        found.push(walk(v)?);
    }
    let total: usize = found.iter().map(Vec::len).sum();
    let mut sum = ReindexSummary {
        files: total,
        ..Default::default()
    };
    let mut done = 0;
    progress(0, total);
    for (volume, files) in volumes.iter().zip(found) {
        index_volume(volume, catalog, files, force, &mut sum, &mut |n| {
            done += n;
            progress(done, total);
        })?;
    }
    Ok(sum)
}

fn event(catalog: &Catalog, kind: &str, channel: u32, detail: serde_json::Value) {
    if let Err(e) = catalog.add_event(kind, None, Some(channel), &detail) {
        tracing::error!(error = %e, kind, "could not record event");
    }
}

fn index_volume(
    volume: &Volume,
    catalog: &Catalog,
    files: Vec<Found>,
    force: bool,
    sum: &mut ReindexSummary,
    tick: &mut dyn FnMut(usize),
) -> Result<()> {
    let rows: HashMap<String, SegmentRow> = catalog
        .segments_on_volume(volume.id)?
        .into_iter()
        .map(|r| (r.rel_path.clone(), r))
        .collect();
    let mut seen: HashSet<String> = HashSet::with_capacity(files.len());
    let mut used = 0u64;
    let mut stale_rows = Vec::new();
    let mut changed_dirs: HashSet<PathBuf> = HashSet::new();
    for f in files {
        tick(1);
        seen.insert(f.rel.clone());
        if volume.is_active(&f.rel) {
            sum.skipped_active += 1;
            continue;
        }
        let len = match std::fs::metadata(&f.abs) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // retention got there first
            Err(e) => {
                tracing::error!(path = %f.abs.display(), error = %e, "cannot stat segment");
                sum.errors += 1;
                continue;
            }
        };
        let row = rows.get(&f.rel);
        let trusted = !force
            && row.is_some_and(|r| {
                !r.open
                    && r.bytes == len
                    && r.channel == f.channel
                    && r.start_90k == f.start_ms * TICKS_PER_MS
            });
        if trusted {
            used += len;
            continue;
        }
        sum.scanned += 1;
        let outcome = match fmp4::repair(&f.abs) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::error!(path = %f.abs.display(), error = %e, "cannot repair segment; leaving it");
                sum.errors += 1;
                used += len;
                continue;
            }
        };
        let scan = &outcome.scan;
        let params = match (&scan.params, scan.fragments.last()) {
            (Some(p), Some(_)) if scan.valid_len > 0 => p,
            _ => {
                // No complete init segment, or no footage at all.
                tracing::warn!(path = %f.abs.display(), valid_len = scan.valid_len, file_len = len,
                    "deleting segment with no complete init segment or fragment");
                match std::fs::remove_file(&f.abs) {
                    Ok(()) => {
                        sum.removed_files += 1;
                        if let Some(d) = f.abs.parent() {
                            changed_dirs.insert(d.to_path_buf());
                        }
                        if let Some(r) = row {
                            stale_rows.push(r.id);
                        }
                        event(
                            catalog,
                            "segment_removed",
                            f.channel,
                            serde_json::json!({
                                "path": f.abs.display().to_string(), "bytes": len, "reason": "no complete init segment or fragment",
                            }),
                        );
                    }
                    Err(e) => {
                        tracing::error!(path = %f.abs.display(), error = %e, "cannot delete empty segment");
                        sum.errors += 1;
                    }
                }
                continue;
            }
        };
        if outcome.truncated > 0 {
            sum.repaired += 1;
            sum.bytes_cut += outcome.truncated;
            event(
                catalog,
                "segment_repaired",
                f.channel,
                serde_json::json!({
                    "path": f.abs.display().to_string(), "bytes_cut": outcome.truncated, "valid_len": scan.valid_len,
                    "fragments": scan.fragments.len(),
                }),
            );
        }
        let end_rel = scan
            .fragments
            .last()
            .map(|l| l.base_time + l.duration)
            .unwrap_or(0);
        let start_90k = f.start_ms * TICKS_PER_MS;
        let new = NewSegment {
            channel: f.channel,
            volume_id: volume.id,
            rel_path: f.rel.clone(),
            start_90k,
            end_90k: start_90k.saturating_add(i64::try_from(end_rel).unwrap_or(i64::MAX)),
            bytes: scan.valid_len,
            frames: scan.fragments.iter().map(|x| u64::from(x.samples)).sum(),
            codec: params.codec.clone(),
            width: params.width,
            height: params.height,
            sample_entry: params.sample_entry.to_vec(),
            open: false,
            fragments: index::encode(&scan.fragments),
            // Kept from an existing row (the upsert never clears it); a file the catalog lost
            // counts as local footage.
            takeover: false,
            audio_codec: params.audio.as_ref().map(|a| a.codec.clone()),
            audio_entry: params.audio.as_ref().map(|a| a.sample_entry.to_vec()),
        };
        catalog.upsert_segment(&new)?;
        if row.is_none() {
            sum.added += 1;
            tracing::info!(path = %f.abs.display(), frames = new.frames, "indexed segment the catalog didn't know");
        }
        used += scan.valid_len;
    }
    for d in &changed_dirs {
        if let Err(e) = crate::fsutil::fsync_dir(d) {
            tracing::warn!(dir = %d.display(), error = %e, "fsync after deleting segments failed");
        }
    }
    // Rows whose files are gone (checked again now: a writer or retention may have moved on).
    for (rel, r) in &rows {
        if seen.contains(rel) || volume.is_active(rel) {
            continue;
        }
        match volume.path.join(rel).try_exists() {
            Ok(false) => {
                tracing::warn!(volume = %volume.path.display(), path = %rel, "deleting catalog row whose file is gone");
                stale_rows.push(r.id);
            }
            Ok(true) => {}
            Err(e) => tracing::warn!(path = %rel, error = %e, "cannot check segment file"),
        }
    }
    sum.removed_rows += stale_rows.len();
    catalog.delete_segments(&stale_rows)?;
    let active: u64 = volume.queued().iter().map(|s| s.written_bytes()).sum();
    volume.set_used(used + active);
    Ok(())
}
