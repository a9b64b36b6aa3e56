//! Reads: listing a channel's recordings and laying out a time range as one (virtual) MP4.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{index, Catalog, SegmentRow};
use crate::error::{Error, Result};
use crate::fmp4::{self, ExportPiece, FragmentInfo};
use crate::volume::Volume;

/// One segment file as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    pub id: i64,
    pub channel: u32,
    pub volume: PathBuf,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Wall-clock start, 90 kHz since the Unix epoch (media time 0 of the file).
    pub start_90k: i64,
    /// End of the last durable fragment.
    pub end_90k: i64,
    pub bytes: u64,
    pub frames: u64,
    pub codec: String,
    pub width: u16,
    pub height: u16,
    /// The audio track's codec (`aac`, `flac`), if the segment has one.
    pub audio: Option<String>,
    /// A writer may still append to it.
    pub open: bool,
}

/// What `Store::export` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Absolute time of the first exported frame (a key frame at or before the requested start).
    pub start_90k: i64,
    /// Absolute end of the last exported frame.
    pub end_90k: i64,
    pub frames: u64,
    /// Bytes written to the output.
    pub bytes: u64,
    /// Segment files read from.
    pub segments: usize,
    /// The export stopped early at this time because the codec parameters changed there
    /// (one MP4 holds one set); export again from here for the rest.
    pub stopped_at_params_change_90k: Option<i64>,
}

fn volume_of<'a>(volumes: &'a [Arc<Volume>], row: &SegmentRow) -> Option<&'a Arc<Volume>> {
    volumes.iter().find(|v| v.id == row.volume_id)
}

pub(crate) fn recordings(
    catalog: &Catalog,
    volumes: &[Arc<Volume>],
    channel: u32,
    from_90k: Option<i64>,
    to_90k: Option<i64>,
) -> Result<Vec<SegmentInfo>> {
    let rows = catalog.overlapping(
        channel,
        from_90k.unwrap_or(i64::MIN),
        to_90k.unwrap_or(i64::MAX),
        false,
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let v = volume_of(volumes, &r)?; // volumes no longer configured are not readable
            Some(SegmentInfo {
                id: r.id,
                channel: r.channel,
                volume: v.path.clone(),
                path: v.path.join(&r.rel_path),
                start_90k: r.start_90k,
                end_90k: r.end_90k,
                bytes: r.bytes,
                frames: r.frames,
                codec: r.codec,
                width: r.width,
                height: r.height,
                audio: r.audio_codec,
                open: r.open,
            })
        })
        .collect())
}

/// The complete fragments of a segment: the catalog's index for closed ones; a scan of the
/// file for open ones (the writer may have appended since the last sync; a scan only ever
/// reports complete fragments).
fn fragments_of(r: &SegmentRow, path: &std::path::Path) -> Result<Vec<FragmentInfo>> {
    if !r.open {
        if let Some(f) = index::decode(&r.fragments, r.bytes) {
            return Ok(f);
        }
        tracing::warn!(path = %path.display(), "malformed fragment index in catalog; scanning the file");
    }
    fmp4::scan(path)
        .map(|s| s.fragments)
        .map_err(|e| Error::io("scanning segment", path, e))
}

/// A range of a channel as one virtual MP4 (see [`fmp4::VirtualMp4`]), with what it holds.
#[derive(Debug)]
pub struct Playback {
    pub mp4: fmp4::VirtualMp4,
    pub summary: ExportSummary,
    /// Wall-clock time of the newest segment's last durable fragment (90 kHz), for
    /// `Last-Modified`.
    pub modified_90k: i64,
}

pub(crate) fn playback(
    catalog: &Catalog,
    volumes: &[Arc<Volume>],
    channel: u32,
    from_90k: i64,
    to_90k: i64,
) -> Result<Playback> {
    if to_90k <= from_90k {
        return Err(Error::InvalidRange {
            channel,
            from_90k,
            to_90k,
        });
    }
    let nothing = || Error::NothingRecorded {
        channel,
        from_90k,
        to_90k,
    };
    let rows: Vec<SegmentRow> = catalog
        .overlapping(channel, from_90k, to_90k, true)?
        .into_iter()
        .filter(|r| r.end_90k > from_90k && r.start_90k < to_90k && volume_of(volumes, r).is_some())
        .collect();
    let first = rows.first().ok_or_else(nothing)?;
    let mut pieces: Vec<ExportPiece> = Vec::new();
    let mut stopped = None;
    let mut prev_end = i64::MIN;
    let mut modified_90k = i64::MIN;
    for r in &rows {
        if r.sample_entry != first.sample_entry
            || r.codec != first.codec
            || r.width != first.width
            || r.height != first.height
            // The virtual file's init comes from the first segment: its audio track too.
            || r.audio_entry != first.audio_entry
        {
            tracing::info!(
                channel,
                at_90k = r.start_90k,
                "export stops at a change of codec parameters"
            );
            stopped = Some(r.start_90k);
            break;
        }
        // Segment starts are stored truncated to the millisecond (the file name's precision),
        // so a segment that follows another back to back may start up to 1 ms "before" the
        // previous one's end; its frames' absolute times are exact and do not overlap.
        if r.start_90k + 90 < prev_end {
            tracing::warn!(channel, path = %r.rel_path, "skipping segment overlapping the previous one in time");
            continue;
        }
        let Some(v) = volume_of(volumes, r) else {
            continue;
        };
        let path = v.path.join(&r.rel_path);
        let fragments = match fragments_of(r, &path) {
            Ok(f) => f,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        if fragments.is_empty() {
            continue;
        }
        prev_end = r.end_90k.max(r.start_90k);
        modified_90k = modified_90k.max(r.end_90k);
        pieces.push(ExportPiece {
            path,
            start_90k: r.start_90k,
            fragments,
        });
    }
    let to = stopped.map_or(to_90k, |s| s.min(to_90k));
    // An export starts at a key frame before `to`.
    let startable = pieces.iter().any(|p| {
        p.fragments
            .iter()
            .any(|f| f.starts_with_key && p.start_90k.saturating_add(f.base_time as i64) < to)
    });
    if !startable {
        return Err(nothing());
    }
    let mp4 = fmp4::VirtualMp4::build(&pieces, from_90k, to)
        .map_err(|source| Error::Export { channel, source })?;
    let s = mp4.summary();
    if s.frames == 0 {
        return Err(nothing());
    }
    let segments = {
        let used: std::collections::BTreeSet<usize> =
            mp4.fragments().iter().map(|f| f.piece_index()).collect();
        used.len()
    };
    Ok(Playback {
        summary: ExportSummary {
            start_90k: s.start_90k,
            end_90k: s.end_90k,
            frames: s.frames,
            bytes: s.bytes,
            segments,
            stopped_at_params_change_90k: stopped,
        },
        mp4,
        modified_90k,
    })
}

pub(crate) fn export(
    catalog: &Catalog,
    volumes: &[Arc<Volume>],
    channel: u32,
    from_90k: i64,
    to_90k: i64,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary> {
    let p = playback(catalog, volumes, channel, from_90k, to_90k)?;
    p.mp4
        .write_all(out, progress)
        .map_err(|source| Error::Export { channel, source })?;
    Ok(p.summary)
}
