//! Starting a segment: choosing its volume and creating its file with the init segment.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::naming;
use crate::segment::ActiveSegment;
use crate::stats::DurableStats;
use crate::track::TrackParams;
use crate::volume::Volume;

/// Volumes in the order a new segment should try them.
///
/// The channel stays on `current` while it is usable and has room for a segment (`need`);
/// otherwise the usable volume with the most headroom goes first. `avoid` (where this
/// channel's last segment failed) and unhealthy volumes come last: a failing disk is better
/// than not recording at all.
pub(crate) fn placement(
    volumes: &[Arc<Volume>],
    current: Option<&Arc<Volume>>,
    avoid: Option<&Arc<Volume>>,
    need: u64,
) -> Vec<Arc<Volume>> {
    let mut scored: Vec<(bool, i128, Arc<Volume>)> = volumes
        .iter()
        .map(|v| {
            let avoided = avoid.is_some_and(|a| Arc::ptr_eq(a, v));
            (v.usable() && !avoided, v.headroom(), Arc::clone(v))
        })
        .collect();
    let keep = current.and_then(|c| {
        scored
            .iter()
            .find(|(usable, headroom, v)| {
                Arc::ptr_eq(v, c) && *usable && *headroom >= i128::from(need)
            })
            .map(|(_, _, v)| Arc::clone(v))
    });
    // Usable first, then by headroom, descending.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<Arc<Volume>> = Vec::with_capacity(scored.len());
    if let Some(k) = keep {
        out.push(k);
    }
    for (_, _, v) in scored {
        if !out.iter().any(|o| Arc::ptr_eq(o, &v)) {
            out.push(v);
        }
    }
    out
}

/// What a new segment file is for.
pub(crate) struct NewSegmentFile<'a> {
    pub channel: u32,
    pub start_ms: i64,
    pub params: &'a Arc<TrackParams>,
    pub init: &'a [u8],
    pub stats: &'a Arc<DurableStats>,
    pub takeover: bool,
}

/// Creates `chNNN/DATE/START.mp4` on `volume`, writes the init segment and hands the segment
/// to the volume's syncer. The file is not cataloged until the syncer has made it and its
/// directory entries durable. Refuses a volume whose marker is gone or replaced (an unmounted
/// disk's empty mount point is on another filesystem: never write there).
pub(crate) fn create_segment(volume: &Volume, new: &NewSegmentFile<'_>) -> Result<Arc<ActiveSegment>> {
    let NewSegmentFile { channel, start_ms, params, init, stats, takeover } = *new;
    if let Err(reason) = volume.check_present() {
        return Err(Error::io(
            "creating segment",
            &volume.path,
            std::io::Error::new(ErrorKind::NotFound, reason),
        ));
    }
    let mut dup = 0u32;
    let mut retried_dir = false;
    loop {
        if dup > 1000 {
            return Err(Error::io(
                "creating segment",
                volume.path.join(naming::channel_dir(channel)),
                std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!("no free name for a segment at {start_ms} ms"),
                ),
            ));
        }
        let rel = naming::segment_rel_path(channel, start_ms, dup).ok_or_else(|| {
            Error::Config(format!(
                "channel {channel}: frame time {start_ms} ms is out of range"
            ))
        })?;
        let rel_s = rel.to_string_lossy().into_owned();
        let abs = volume.path.join(&rel);
        let dir = abs
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| volume.path.clone());
        // Claim the path first so a concurrent reindex never touches a file being created.
        if !volume.claim_path(&rel_s) {
            dup += 1;
            continue;
        }
        let created_dirs = match fsutil::create_dirs_tracked(&volume.path, &dir) {
            Ok(c) => c,
            Err(e) => {
                volume.release_path(&rel_s);
                return Err(Error::io("creating segment directory", &dir, e));
            }
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&abs)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                volume.release_path(&rel_s);
                dup += 1;
                continue;
            }
            Err(e) if e.kind() == ErrorKind::NotFound && !retried_dir => {
                // Retention removed an emptied (old) date directory in between: once more.
                volume.release_path(&rel_s);
                retried_dir = true;
                continue;
            }
            Err(e) => {
                volume.release_path(&rel_s);
                return Err(Error::io("creating segment", &abs, e));
            }
        };
        let written = fsutil::faults::check(&abs, fsutil::faults::Op::Write)
            .and_then(|()| (&file).write_all(init));
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(&abs);
            volume.release_path(&rel_s);
            return Err(Error::io("writing init segment", &abs, e));
        }
        volume.add_used(init.len() as u64);
        let mut dirs_to_sync = vec![dir];
        dirs_to_sync.extend(created_dirs);
        let seg = Arc::new(ActiveSegment::new(
            channel,
            rel_s,
            abs,
            start_ms * naming::TICKS_PER_MS,
            Arc::clone(params),
            file,
            init.len() as u64,
            dirs_to_sync,
            Arc::clone(stats),
            takeover,
        ));
        volume.enqueue(Arc::clone(&seg));
        tracing::debug!(channel, path = %seg.abs_path.display(), "segment started");
        return Ok(seg);
    }
}
