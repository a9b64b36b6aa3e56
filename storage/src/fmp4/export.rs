//! A virtual MP4 of a time range across segment files: its layout (init segment, then each
//! stored fragment with a retimed `moof`) is computed from the fragment index alone, and its
//! bytes are read from the segment files only when asked for, any range at a time. Nothing is
//! copied; the time to the first byte does not depend on the range's length.
//!
//! The timeline starts at 0 at the first exported fragment (which begins with a key frame) and
//! keeps absolute time: a gap between segments stays a gap. Fragments pass through as they
//! are stored (every track, every `trun` field); only sequence numbers, decode times and
//! absolute data offsets change, and the last fragment is cut at the end of the range.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::debug;

use super::boxes::parse_header;
use super::init::parse_moov;
use super::patch::{cut, retime, tracks_of, Retime, TrackInfo};
use super::FragmentInfo;

/// One segment file to export from.
#[derive(Clone, Debug)]
pub struct ExportPiece {
    pub path: PathBuf,
    /// Absolute time (90 kHz since the Unix epoch) of the file's media time 0.
    pub start_90k: i64,
    /// The file's complete fragments, in order.
    pub fragments: Vec<FragmentInfo>,
}

/// What an export holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Absolute time of the first exported frame (a key frame at or before the requested start).
    pub start_90k: i64,
    /// Absolute end of the last exported frame.
    pub end_90k: i64,
    pub frames: u64,
    /// Length of the file.
    pub bytes: u64,
}

/// One fragment's place in the virtual file.
#[derive(Clone, Debug)]
pub struct VirtualFragment {
    /// Offset and length in the virtual file (`moof` + `mdat`).
    pub offset: u64,
    pub len: u64,
    /// Absolute start (90 kHz since the epoch) and duration of its video samples.
    pub start_90k: i64,
    pub duration_90k: u64,
    pub samples: u32,
    pub starts_with_key: bool,
    piece: usize,
    src_offset: u64,
    src_len: u64,
    retime: Retime,
    /// A fragment cut short: its retimed `moof` + `mdat` header, and the file's byte ranges
    /// that make up the rest.
    cut: Option<Arc<CutFragment>>,
}

/// A cut fragment's head (`moof` + `mdat` header) and the `(offset, len)` file ranges after it.
type CutFragment = (Vec<u8>, Vec<(u64, u64)>);

/// The layout of a virtual MP4; cheap to build, read with [`VirtualMp4::read_range`].
#[derive(Debug)]
pub struct VirtualMp4 {
    init: Arc<[u8]>,
    tracks: Vec<TrackInfo>,
    paths: Vec<PathBuf>,
    fragments: Vec<VirtualFragment>,
    len: u64,
    summary: ExportSummary,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn with_path(e: io::Error, what: &str, path: &std::path::Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl VirtualFragment {
    /// Index of the source piece (segment file) it comes from.
    pub fn piece_index(&self) -> usize {
        self.piece
    }
}

impl VirtualMp4 {
    /// Lays out `[from_90k, to_90k)` of `pieces` (in time order, one set of codec parameters).
    ///
    /// Starts at the last fragment beginning with a key frame at or before `from_90k` (or the
    /// first one after it, if there is none before); ends with the last frame starting before
    /// `to_90k`. Reads only the first file's init segment and the last fragment's `moof`.
    pub fn build(pieces: &[ExportPiece], from_90k: i64, to_90k: i64) -> io::Result<VirtualMp4> {
        if to_90k <= from_90k {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("export range [{from_90k}, {to_90k}) is empty"),
            ));
        }
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
            // Times reach us at millisecond precision (file names, the API, the CLI) while
            // frames sit anywhere inside their millisecond: a key frame less than 1 ms after
            // `from` is the one the caller meant (e.g. a segment's listed start).
            .rposition(|(_, f, start)| f.starts_with_key && *start < from_90k.saturating_add(90))
            .or_else(|| {
                all.iter().position(|(_, f, start)| {
                    f.starts_with_key && *start > from_90k && *start < to_90k
                })
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
        let &&(p0, _, export_start) = selected.first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no fragment in the range".to_owned())
        })?;

        let first_path = &pieces[p0].path;
        let init_len = pieces[p0].fragments.first().map_or(0, |f| f.offset);
        let file = File::open(first_path).map_err(|e| with_path(e, "opening", first_path))?;
        let mut init = vec![0u8; init_len as usize];
        file.read_exact_at(&mut init, 0)
            .map_err(|e| with_path(e, "reading the init segment of", first_path))?;
        let bad_init = |e: String| invalid(format!("init segment of {}: {e}", first_path.display()));
        let video = parse_moov(init_body(&init).map_err(bad_init)?).map_err(bad_init)?;
        let tracks = tracks_of(&init).map_err(bad_init)?;

        let mut fragments = Vec::with_capacity(selected.len());
        let mut at = init_len;
        let (mut frames, mut end_90k) = (0u64, export_start);
        for (i, &&(piece, f, start)) in selected.iter().enumerate() {
            let sequence = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let shift_90k = pieces[piece].start_90k - export_start;
            let mut v = VirtualFragment {
                offset: at,
                len: f.len,
                start_90k: start,
                duration_90k: f.duration,
                samples: f.samples,
                starts_with_key: f.starts_with_key,
                piece,
                src_offset: f.offset,
                src_len: f.len,
                retime: Retime {
                    sequence,
                    shift_90k,
                    data_moved: at as i64 - f.offset as i64,
                },
                cut: None,
            };
            if start.saturating_add(f.duration as i64) > to_90k {
                let path = &pieces[piece].path;
                let file = File::open(path).map_err(|e| with_path(e, "opening", path))?;
                let moof = read_moof(&file, f.offset, f.len).map_err(|e| with_path(e, "reading", path))?;
                let bad = |e: String| invalid(format!("{}: fragment at {}: {e}", path.display(), f.offset));
                let c = cut(&moof, f.offset, &tracks, pieces[piece].start_90k, to_90k, video.track_id)
                    .map_err(bad)?;
                v.len = c.head.len() as u64 + c.data.iter().map(|r| r.1).sum::<u64>();
                v.retime.data_moved = at as i64;
                v.samples = c.samples;
                v.duration_90k = c.duration;
                let mut head = c.head;
                let moof_len = head.len() - 8;
                retime(&mut head[..moof_len], &tracks, v.retime).map_err(bad)?;
                v.cut = Some(Arc::new((head, c.data)));
            }
            if v.samples == 0 {
                break;
            }
            at += v.len;
            frames += u64::from(v.samples);
            end_90k = start.saturating_add(v.duration_90k as i64);
            fragments.push(v);
        }
        let summary = ExportSummary {
            start_90k: export_start,
            end_90k,
            frames,
            bytes: at,
        };
        debug!(from_90k, to_90k, ?summary, "virtual mp4 laid out");
        Ok(VirtualMp4 {
            init: init.into(),
            tracks,
            paths: pieces.iter().map(|p| p.path.clone()).collect(),
            fragments,
            len: at,
            summary,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn summary(&self) -> ExportSummary {
        self.summary
    }

    /// Length of the init segment (`ftyp` + `moov`) at the start of the file.
    pub fn init_len(&self) -> u64 {
        self.init.len() as u64
    }

    pub fn fragments(&self) -> &[VirtualFragment] {
        &self.fragments
    }

    /// Path of the segment file a fragment comes from.
    pub fn source_of(&self, f: &VirtualFragment) -> &std::path::Path {
        &self.paths[f.piece]
    }

    /// A stable identity of the content (for `ETag`): the same layout over the same stored
    /// fragments gives the same tag.
    pub fn identity(&self) -> Vec<u8> {
        let mut id = Vec::with_capacity(64 + self.fragments.len() * 24);
        id.extend_from_slice(&self.init);
        for p in &self.paths {
            id.extend_from_slice(p.as_os_str().as_encoded_bytes());
            id.push(0);
        }
        for f in &self.fragments {
            id.extend_from_slice(&(f.piece as u64).to_be_bytes());
            id.extend_from_slice(&f.src_offset.to_be_bytes());
            id.extend_from_slice(&f.len.to_be_bytes());
            id.extend_from_slice(&f.retime.shift_90k.to_be_bytes());
        }
        id
    }

    /// Sends the bytes `[start, end)` of the virtual file to `out`, in order, in chunks of at
    /// most `chunk` bytes; stops at the first error `out` returns.
    pub fn read_range(
        &self,
        start: u64,
        end: u64,
        chunk: usize,
        out: &mut dyn FnMut(Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = end.min(self.len);
        let chunk = chunk.max(4096) as u64;
        if start >= end {
            return Ok(());
        }
        let init_len = self.init_len();
        if start < init_len {
            out(self.init[start as usize..end.min(init_len) as usize].to_vec())?;
        }
        let first = self.fragments.partition_point(|f| f.offset + f.len <= start);
        let mut open: Option<(usize, File)> = None;
        for f in self.fragments[first..].iter().take_while(|f| f.offset < end) {
            let path = &self.paths[f.piece];
            let file = match &open {
                Some((i, file)) if *i == f.piece => file,
                _ => {
                    let file = File::open(path).map_err(|e| with_path(e, "opening", path))?;
                    &open.insert((f.piece, file)).1
                }
            };
            // The head (`moof`, retimed) as it goes out, then the rest from the file.
            let (head, rest): (std::borrow::Cow<[u8]>, Vec<(u64, u64)>) = match &f.cut {
                Some(c) => (std::borrow::Cow::Borrowed(&c.0[..]), c.1.clone()),
                None => {
                    let mut m = read_moof(file, f.src_offset, f.src_len)
                        .map_err(|e| with_path(e, "reading", path))?;
                    retime(&mut m, &self.tracks, f.retime).map_err(|e| {
                        invalid(format!("{}: fragment at {}: {e}", path.display(), f.src_offset))
                    })?;
                    let n = m.len() as u64;
                    (m.into(), vec![(f.src_offset + n, f.src_len - n)])
                }
            };
            let mut pos = f.offset; // virtual position of the current part
            let head_end = pos + head.len() as u64;
            if start < head_end {
                let a = start.saturating_sub(pos) as usize;
                let b = (end.min(head_end) - pos) as usize;
                out(head[a..b].to_vec())?;
            }
            pos = head_end;
            for (src, len) in rest {
                let part_end = pos + len;
                let mut p = start.max(pos);
                while p < part_end.min(end) {
                    let n = (part_end.min(end) - p).min(chunk);
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, src + (p - pos))
                        .map_err(|e| with_path(e, "reading", path))?;
                    out(buf)?;
                    p += n;
                }
                pos = part_end;
                if pos >= end {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes the whole file to `out`; `progress` gets (bytes written, bytes to write).
    pub fn write_all(
        &self,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<()> {
        let mut done = 0u64;
        self.read_range(0, self.len, 1 << 20, &mut |buf| {
            out.write_all(&buf)
                .map_err(|e| io::Error::new(e.kind(), format!("writing export: {e}")))?;
            done += buf.len() as u64;
            progress(done, self.len);
            Ok(())
        })
    }
}

/// The `moov` body inside an init segment.
fn init_body(init: &[u8]) -> Result<&[u8], String> {
    for child in super::boxes::children(init) {
        let child = child?;
        if &child.kind == b"moov" {
            return Ok(child.body);
        }
    }
    Err("no 'moov'".to_owned())
}

/// The whole `moof` box at the start of a fragment.
fn read_moof(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, offset)?;
    let h = parse_header(&head).map_err(|p| invalid(format!("fragment at {offset}: {p}")))?;
    if &h.kind != b"moof" || h.size >= len || h.size > 16 << 20 {
        return Err(invalid(format!(
            "fragment at {offset}: no 'moof' of a plausible size ({} bytes, fragment {len})",
            h.size
        )));
    }
    let mut moof = vec![0u8; h.size as usize];
    file.read_exact_at(&mut moof, offset)?;
    Ok(moof)
}

/// Writes `[from_90k, to_90k)` of `pieces` to `out` as one MP4 (see [`VirtualMp4::build`]).
/// `progress` gets (bytes written, bytes to write).
pub fn write_export(
    out: &mut dyn Write,
    pieces: &[ExportPiece],
    from_90k: i64,
    to_90k: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<ExportSummary> {
    let v = VirtualMp4::build(pieces, from_90k, to_90k)?;
    v.write_all(out, progress)?;
    Ok(v.summary())
}
