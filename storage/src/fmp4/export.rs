//! Exporting a time range that may span several segment files as one fragmented MP4 on a
//! single timeline starting at 0, beginning at a key frame.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use tracing::debug;

use super::mux::{Fragment, FragmentMuxer, DEFAULT_MAX_FRAGMENT_90K};
use super::read::read_fragment;
use super::write::encode_init;
use super::FragmentInfo;
use crate::track::TrackParams;

/// One segment file to export from.
#[derive(Clone, Debug)]
pub struct ExportPiece {
    pub path: PathBuf,
    /// Absolute time (90 kHz since the Unix epoch) of the file's media time 0.
    pub start_90k: i64,
    /// The file's complete fragments, in order.
    pub fragments: Vec<FragmentInfo>,
    /// Its audio track has the export's audio parameters: export its audio too.
    pub audio: bool,
}

/// What was exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Absolute time of the first exported frame (a key frame at or before the requested start).
    pub start_90k: i64,
    /// Absolute end of the last exported frame.
    pub end_90k: i64,
    pub frames: u64,
    /// Bytes written to `out`.
    pub bytes: u64,
}

/// Writes `[from_90k, to_90k)` of `pieces` (in time order, all with `params`) to `out` as
/// `ftyp`+`moov` and fragments of at most 1 s.
///
/// Starts at the last fragment beginning with a key frame at or before `from_90k` (or the
/// first one after it, if there is none before); ends with the last frame starting before
/// `to_90k`. Timestamps are absolute time minus the export's start, so a gap between
/// segments stays a gap (the frame before it lasts until the next one). `progress` gets
/// (source bytes read, source bytes to read).
pub fn write_export(
    out: &mut dyn Write,
    params: &TrackParams,
    pieces: &[ExportPiece],
    from_90k: i64,
    to_90k: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<ExportSummary> {
    if to_90k <= from_90k {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("export range [{from_90k}, {to_90k}) is empty"),
        ));
    }
    // Every fragment with its absolute start.
    let all: Vec<(usize, &FragmentInfo, i64)> = pieces
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.fragments
                .iter()
                .map(move |f| (i, f, p.start_90k.saturating_add(f.base_time as i64)))
        })
        .collect();
    let first = all
        .iter()
        // Times reach us at millisecond precision (file names, the API, the CLI) while frames
        // sit anywhere inside their millisecond: a key frame less than 1 ms after `from` is the
        // one the caller meant (e.g. a segment's listed start), not the GOP before it.
        .rposition(|(_, f, start)| f.starts_with_key && *start < from_90k.saturating_add(90))
        .or_else(|| {
            all.iter()
                .position(|(_, f, start)| f.starts_with_key && *start > from_90k && *start < to_90k)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no key frame to start an export at {from_90k} from"),
            )
        })?;
    let selected: Vec<_> = all[first..]
        .iter()
        .take_while(|(_, _, start)| *start < to_90k)
        .collect();
    let total: u64 = selected.iter().map(|(_, f, _)| f.len).sum();
    let export_start = selected.first().map_or(from_90k, |(_, _, s)| *s);

    let init = encode_init(params)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut bytes = 0u64;
    write_out(out, &init, &mut bytes)?;
    let mut muxer = FragmentMuxer::new(DEFAULT_MAX_FRAGMENT_90K);
    let mut frames = 0u64;
    let mut last_duration = None;
    let mut read = 0u64;
    let mut open: Option<(usize, File)> = None;
    'fragments: for &&(piece, frag, frag_start) in &selected {
        let path = &pieces[piece].path;
        let file = match &open {
            Some((i, f)) if *i == piece => f,
            _ => {
                let f = File::open(path).map_err(|e| with_path(e, "opening", path))?;
                &open.insert((piece, f)).1
            }
        };
        let samples = read_fragment(file, frag).map_err(|e| with_path(e, "reading", path))?;
        read += frag.len;
        progress(read, total);
        if let Some(a) = params.audio.as_ref().filter(|_| pieces[piece].audio) {
            let rate = i64::from(a.sample_rate);
            let piece_start = pieces[piece].start_90k.saturating_sub(export_start);
            let end = to_90k.saturating_sub(export_start);
            let mut t = to_rate(piece_start, rate).saturating_add(samples.audio_base_time as i64);
            for (meta, data) in samples.audio {
                if t.saturating_mul(90_000) / rate >= end {
                    break;
                }
                muxer.push_audio(t, meta.duration, data);
                t = t.saturating_add(i64::from(meta.duration));
            }
        }
        let mut t = frag_start;
        for (meta, data) in samples.video {
            if t >= to_90k {
                break 'fragments;
            }
            let cts = u32::try_from(meta.cts_offset).unwrap_or(0);
            if let Some(done) =
                muxer.push_sample(t.saturating_sub(export_start), cts, meta.key, data)
            {
                write_fragment(out, &done, &mut bytes)?;
            }
            frames += 1;
            last_duration = Some(meta.duration);
            t = t.saturating_add(i64::from(meta.duration));
        }
    }
    if let Some(done) = muxer.flush_with_duration(last_duration.unwrap_or(1)) {
        write_fragment(out, &done, &mut bytes)?;
    }
    let end_90k = export_start.saturating_add(muxer.finished_until().unwrap_or(0) as i64);
    debug!(
        from_90k,
        to_90k,
        start_90k = export_start,
        end_90k,
        frames,
        bytes,
        "export written"
    );
    Ok(ExportSummary {
        start_90k: export_start,
        end_90k,
        frames,
        bytes,
    })
}

/// 90 kHz ticks to ticks of `rate` per second.
fn to_rate(t_90k: i64, rate: i64) -> i64 {
    i64::try_from(i128::from(t_90k) * i128::from(rate) / 90_000).unwrap_or(i64::MAX)
}

fn write_fragment(out: &mut dyn Write, f: &Fragment, bytes: &mut u64) -> io::Result<()> {
    write_out(out, &f.header, bytes)?;
    for d in &f.data {
        write_out(out, d, bytes)?;
    }
    Ok(())
}

fn write_out(out: &mut dyn Write, buf: &[u8], bytes: &mut u64) -> io::Result<()> {
    out.write_all(buf)
        .map_err(|e| io::Error::new(e.kind(), format!("writing export: {e}")))?;
    *bytes += buf.len() as u64;
    Ok(())
}

fn with_path(e: io::Error, what: &str, path: &std::path::Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
