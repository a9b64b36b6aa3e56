//! One thread per volume that makes written footage durable and catalogs it, in batches.
//!
//! The order of one round, which is what makes a crash lose at most the last
//! `sync_interval` (plus one fragment) and never leave the catalog pointing at nothing:
//! 1. The writers have already written whole fragments (`moof`+`mdat`) with plain `write`s.
//! 2. Snapshot each queued segment's written progress (whole fragments only).
//! 3. `fdatasync` every file with bytes beyond its durable length. After this, everything in
//!    the snapshot is on disk.
//! 4. For files not yet cataloged, `fsync` the directories whose entries were created for
//!    them (date dir; channel dir and volume dir if those were new), so the file itself will
//!    be found after a crash.
//! 5. Commit the catalog for all of them in ONE SQLite transaction: insert rows (open = 1)
//!    for newly durable files, update end/bytes/frames/fragment index of the others, and
//!    finalize (open = 0) the ones their writers closed.
//! 6. Only then publish `DurableStats` and settle closed segments.
//! 7. Apply retention to the volume (see `retention`).
//!
//! The catalog runs with `synchronous = NORMAL`: a power loss may undo its last commits,
//! never the fdatasync'ed files, which start-up indexes again (files are the truth).
//!
//! An fsync failure abandons that file at its last durable length (the kernel may have
//! dropped the unsynced pages, so a retry proves nothing: fsyncgate), records a `disk_error`
//! event and counts against the volume's health; the writer notices and continues in a new
//! segment, on another volume. A failed directory fsync likewise abandons the new files in
//! it without cataloging them, and removes them, so catalog and disk agree. Giving up on a
//! file happens under the segment's append gate (see `segment`): no fragment is written
//! beyond the cut afterwards.
//!
//! Each round first checks that the volume's marker is still there (same device and inode):
//! if the disk was unmounted or the directory removed, the volume is marked missing, its
//! segments are finalized at their durable length and abandoned, and a `volume_missing`
//! event names it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fsutil;

use crate::catalog::{Catalog, NewSegment, SegmentUpdate, SyncOp};
use crate::retention;
use crate::segment::{ActiveSegment, Progress, Snapshot, SyncPhase, WriterPhase};
use crate::volume::Volume;

/// Runs the syncer loop until asked to stop; the last round happens after the stop request.
pub(crate) fn run(volume: Arc<Volume>, catalog: Arc<Catalog>, interval: Duration, protect: Duration) {
    tracing::debug!(volume = %volume.path.display(), "syncer started");
    // Test hook (UNDERSTUDY_TEST_HANG_SYNCER, see `telemetry::hang_hook`): None unless the
    // variable is set, and then only ever waits on the file it names.
    let hang = crate::telemetry::hang_hook();
    loop {
        volume.telemetry.syncer.beat();
        let stop = volume.wait_for_round(interval);
        if let Some(flag) = &hang {
            crate::telemetry::hang_while_exists(flag);
        }
        round(&volume, &catalog);
        if stop {
            break;
        }
        if !volume.is_missing() {
            let deleted = retention::enforce(&volume, &catalog, protect);
            volume.telemetry.retention(deleted.segments, deleted.bytes);
        }
    }
    tracing::debug!(volume = %volume.path.display(), "syncer stopped");
}

/// What a round decided for one segment.
enum Plan {
    /// Insert or update the row with `progress`; `open` = the writer may still append.
    Commit {
        seg: Arc<ActiveSegment>,
        snap: Snapshot,
        progress: Progress,
        open: bool,
    },
    /// Closed with no fragment: remove the file.
    Discard { seg: Arc<ActiveSegment> },
    /// Nothing new since the last round.
    Idle,
}

/// One sync round over the volume's queued segments.
pub(crate) fn round(volume: &Volume, catalog: &Catalog) {
    let was_missing = volume.is_missing();
    let present = volume.check_present();
    let segs = volume.queued();
    if let Err(reason) = present {
        if !was_missing {
            let detail = serde_json::json!({
                "volume": volume.path.display().to_string(),
                "error": reason,
                "open_segments": segs.len(),
            });
            if let Err(e) = catalog.add_event("volume_missing", None, None, &detail) {
                tracing::error!(error = %e, "could not record volume_missing event");
            }
        }
        abandon_all(volume, catalog, segs, &reason);
        return;
    }
    if segs.is_empty() {
        return;
    }
    let mut plans = Vec::with_capacity(segs.len());
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut synced_any = false;
    for seg in segs {
        let snap = seg.snapshot();
        let durable_bytes = match &snap.sync {
            SyncPhase::Settled => continue,
            SyncPhase::Cataloged { durable, .. } => durable.bytes,
            SyncPhase::Uncataloged => 0,
        };
        let closed = snap.writer != WriterPhase::Writing;
        if closed && snap.written.fragments == 0 && snap.sync == SyncPhase::Uncataloged {
            plans.push(Plan::Discard { seg });
            continue;
        }
        if snap.written.bytes == durable_bytes && !closed {
            plans.push(Plan::Idle);
            continue;
        }
        // Step 3: fdatasync the file.
        if snap.written.bytes > durable_bytes {
            let t0 = std::time::Instant::now();
            let synced = fsutil::sync_data(&seg.file, &seg.abs_path);
            volume.telemetry.fsync.observe(t0.elapsed());
            if let Err(e) = synced {
                plans.push(sync_failed(volume, catalog, seg, snap, &e));
                continue;
            }
            synced_any = true;
        }
        if snap.sync == SyncPhase::Uncataloged {
            if snap.written.fragments == 0 {
                plans.push(Plan::Idle); // nothing worth a row yet
                continue;
            }
            dirs.extend(seg.dirs_to_sync.iter().cloned());
        }
        let progress = snap.written.clone();
        plans.push(Plan::Commit {
            seg,
            snap,
            progress,
            open: !closed,
        });
    }

    // Step 4: directory entries of new files.
    let mut bad_dirs = BTreeSet::new();
    for d in &dirs {
        if let Err(e) = crate::fsutil::fsync_dir(d) {
            tracing::error!(volume = %volume.path.display(), dir = %d.display(), error = %e, "fsync of directory failed");
            disk_error(volume, catalog, None, d, "fsync directory", &e);
            bad_dirs.insert(d.clone());
        }
    }

    // Step 5: one transaction.
    let mut ops = Vec::new();
    let mut committed = Vec::new();
    for plan in plans {
        match plan {
            Plan::Idle => {}
            Plan::Discard { seg } => discard(volume, &seg),
            Plan::Commit {
                seg,
                snap,
                progress,
                open,
            } => {
                let op = match &snap.sync {
                    SyncPhase::Uncataloged => {
                        if seg.dirs_to_sync.iter().any(|d| bad_dirs.contains(d)) {
                            // Its directory entry may not be on disk: never catalog it, never
                            // retry that fsync (fsyncgate), and remove the file, so a later
                            // reindex does not list what the catalog never did.
                            seg.stats.add_error();
                            seg.stats.set_problem(Some(format!(
                                "write error on {}: fsync of a directory failed",
                                volume.path.display()
                            )));
                            remove_abandoned(volume, &seg);
                            continue;
                        }
                        SyncOp::Insert(new_row(volume, &seg, &progress, open))
                    }
                    SyncPhase::Cataloged { id, .. } => {
                        SyncOp::Update(update_row(*id, &seg, &progress, open))
                    }
                    SyncPhase::Settled => continue,
                };
                ops.push(op);
                committed.push((seg, snap, progress, open));
            }
        }
    }
    if ops.is_empty() {
        return;
    }
    let ids = match catalog.apply_sync(&ops) {
        Ok(ids) => ids,
        Err(e) => {
            // The data is durable; the rows follow next round (or start-up indexes the files).
            tracing::error!(volume = %volume.path.display(), error = %e, "catalog commit failed; will retry");
            return;
        }
    };
    if synced_any {
        volume.record_success();
    }

    // Step 6: publish.
    for ((seg, snap, progress, open), id) in committed.into_iter().zip(ids) {
        let (prev_frames, prev_bytes, row_id) = match &snap.sync {
            SyncPhase::Cataloged { id, durable } => (durable.frames, durable.bytes, *id),
            _ => {
                seg.stats.add_segment(seg.start_90k);
                (0, 0, id.unwrap_or_default())
            }
        };
        seg.stats.add_durable(
            progress.frames - prev_frames,
            progress.bytes.saturating_sub(prev_bytes),
        );
        if open {
            seg.set_sync(SyncPhase::Cataloged {
                id: row_id,
                durable: progress,
            });
        } else {
            seg.span.in_scope(|| tracing::debug!(channel = seg.channel, path = %seg.abs_path.display(), frames = progress.frames, "segment finalized"));
            seg.set_sync(SyncPhase::Settled);
            volume.dequeue(&seg);
        }
    }
}

fn new_row(volume: &Volume, seg: &ActiveSegment, p: &Progress, open: bool) -> NewSegment {
    NewSegment {
        channel: seg.channel,
        volume_id: volume.id,
        rel_path: seg.rel_path.clone(),
        start_90k: seg.start_90k,
        end_90k: end_90k(seg, p),
        bytes: p.bytes,
        frames: p.frames,
        codec: seg.params.codec.clone(),
        width: seg.params.width,
        height: seg.params.height,
        sample_entry: seg.params.sample_entry.to_vec(),
        open,
        fragments: p.index.clone(),
        takeover: seg.takeover,
        audio_codec: seg.params.audio.as_ref().map(|a| a.codec.clone()),
        audio_entry: seg.params.audio.as_ref().map(|a| a.sample_entry.to_vec()),
    }
}

fn update_row(id: i64, seg: &ActiveSegment, p: &Progress, open: bool) -> SegmentUpdate {
    SegmentUpdate {
        id,
        end_90k: end_90k(seg, p),
        bytes: p.bytes,
        frames: p.frames,
        fragments: p.index.clone(),
        open,
    }
}

fn end_90k(seg: &ActiveSegment, p: &Progress) -> i64 {
    seg.start_90k
        .saturating_add(i64::try_from(p.end_rel_90k).unwrap_or(i64::MAX))
}

/// fsync failed: keep what is durable, finalize it, and abandon the file.
fn sync_failed(
    volume: &Volume,
    catalog: &Catalog,
    seg: Arc<ActiveSegment>,
    snap: Snapshot,
    e: &std::io::Error,
) -> Plan {
    // Everything logged about this failure (here and in `disk_error`) names its camera.
    let span = seg.span.clone();
    let _in_span = span.enter();
    tracing::error!(channel = seg.channel, path = %seg.abs_path.display(), error = %e,
        "fdatasync failed; abandoning the segment at its last durable length");
    seg.stats.add_error();
    seg.stats.set_problem(Some(format!(
        "write error on {}: fdatasync: {e}",
        volume.path.display()
    )));
    disk_error(
        volume,
        catalog,
        Some(seg.channel),
        &seg.abs_path,
        "fdatasync",
        e,
    );
    match &snap.sync {
        SyncPhase::Cataloged { durable, .. } => {
            let durable = durable.clone();
            // Under the append gate: a fragment the writer was writing lands before the cut,
            // and none after it (the writer checks `sync_failed` under the same gate).
            let gate = seg.stop_writer();
            let cut = seg
                .file
                .metadata()
                .map(|m| m.len().saturating_sub(durable.bytes))
                .unwrap_or(0);
            if let Err(e) = seg.file.set_len(durable.bytes) {
                tracing::warn!(path = %seg.abs_path.display(), error = %e, "could not cut the unsynced tail; start-up repair will");
            } else {
                volume.sub_used(cut);
            }
            drop(gate);
            Plan::Commit {
                seg,
                snap,
                progress: durable,
                open: false,
            }
        }
        _ => {
            // Nothing of it was ever durable: remove it, so neither the catalog nor a later
            // reindex lists footage that may not be on the disk.
            remove_abandoned(volume, &seg);
            Plan::Idle
        }
    }
}

/// Abandons a segment that was never cataloged: stops its writer, removes the file (so
/// neither the catalog nor a later reindex lists it) and stops tracking it.
fn remove_abandoned(volume: &Volume, seg: &Arc<ActiveSegment>) {
    let gate = seg.stop_writer();
    let len = seg.file.metadata().map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&seg.abs_path) {
        Ok(()) => volume.sub_used(len),
        Err(e) => tracing::warn!(channel = seg.channel, path = %seg.abs_path.display(), error = %e,
            "could not remove a segment that never became durable; start-up indexing will see it"),
    }
    drop(gate);
    seg.set_sync(SyncPhase::Settled);
    volume.dequeue(seg);
}

/// A closed segment that never got a fragment: unlink it.
fn discard(volume: &Volume, seg: &Arc<ActiveSegment>) {
    let _in_span = seg.span.enter();
    let len = seg.file.metadata().map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&seg.abs_path) {
        Ok(()) => {
            volume.sub_used(len);
            if let Some(dir) = seg.abs_path.parent() {
                if let Err(e) = crate::fsutil::fsync_dir(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "fsync after removing an empty segment failed");
                }
            }
            tracing::debug!(channel = seg.channel, path = %seg.abs_path.display(), "removed segment with no fragments");
        }
        Err(e) => {
            tracing::warn!(path = %seg.abs_path.display(), error = %e, "could not remove empty segment")
        }
    }
    seg.set_sync(SyncPhase::Settled);
    volume.dequeue(seg);
}

/// The volume is gone: finalize each segment at what is durable (the catalog row, already
/// committed), mark it failed so its writer moves on, and stop tracking it.
fn abandon_all(volume: &Volume, catalog: &Catalog, segs: Vec<Arc<ActiveSegment>>, reason: &str) {
    let mut ops = Vec::new();
    for seg in &segs {
        drop(seg.stop_writer());
        seg.stats.set_problem(Some(reason.to_owned()));
        if let SyncPhase::Cataloged { id, durable } = seg.snapshot().sync {
            ops.push(SyncOp::Update(update_row(id, seg, &durable, false)));
        }
    }
    if !ops.is_empty() {
        if let Err(e) = catalog.apply_sync(&ops) {
            tracing::error!(volume = %volume.path.display(), error = %e, "could not finalize the segments of a missing volume");
        }
    }
    for seg in &segs {
        seg.set_sync(SyncPhase::Settled);
        volume.dequeue(seg);
    }
}

/// Logs a disk error as an event and counts it against the volume (a full disk does not
/// count: it is not failing, and retention deals with it).
pub(crate) fn disk_error(
    volume: &Volume,
    catalog: &Catalog,
    channel: Option<u32>,
    path: &std::path::Path,
    op: &str,
    e: &std::io::Error,
) {
    if !fsutil::is_full(e) {
        volume.record_error();
    }
    let detail = serde_json::json!({
        "volume": volume.path.display().to_string(),
        "path": path.display().to_string(),
        "op": op,
        "error": e.to_string(),
        "volume_healthy": volume.usable(),
    });
    if let Err(err) = catalog.add_event("disk_error", None, channel, &detail) {
        tracing::error!(error = %err, "could not record disk_error event");
    }
}
