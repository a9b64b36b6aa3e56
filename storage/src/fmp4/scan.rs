//! Scanning a segment file's top-level boxes, and cutting off a torn tail.
//!
//! The walk reads box headers and `moof` bodies only, never sample data, so a 60 s segment
//! costs about two small reads per fragment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::{debug, warn};

use super::boxes::{parse_header, Header, KindDisplay};
use super::init::{parse_moov, InitInfo};
use super::moof::{expect_mdat, parse_moof, Payload};
use super::{FragmentInfo, ScanResult};

/// Largest `moov` accepted (ours are under 1 KiB plus the sample entry).
const MAX_MOOV: u64 = 4 << 20;
/// Largest `moof` accepted (12 bytes a sample: a million samples).
const MAX_MOOF: u64 = 16 << 20;

/// Reads the file's structure without trusting it: stops at the first incomplete, zero-sized
/// or unknown box and reports how much of the file is clean.
pub fn scan(path: &Path) -> io::Result<ScanResult> {
    let file = File::open(path).map_err(|e| with_path(e, "opening", path))?;
    let (result, stop) = scan_file(&file).map_err(|e| with_path(e, "scanning", path))?;
    if let Some(reason) = &stop {
        debug!(path = %path.display(), valid_len = result.valid_len, file_len = result.file_len, %reason, "scan stopped early");
    }
    Ok(result)
}

#[derive(Clone, Debug)]
pub struct RepairOutcome {
    /// The file as it is after the repair (`file_len` is the new length).
    pub scan: ScanResult,
    /// Bytes cut from the end (0 if the file was clean).
    pub truncated: u64,
}

/// Scans and truncates the file to its clean length (fsyncing it if it changed).
///
/// A file whose `ftyp`/`moov` is torn or unreadable has no clean part: it is truncated to 0
/// bytes (and `scan.params` is `None`).
pub fn repair(path: &Path) -> io::Result<RepairOutcome> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, "opening for repair", path))?;
    let (mut result, stop) = scan_file(&file).map_err(|e| with_path(e, "scanning", path))?;
    let truncated = result.file_len - result.valid_len;
    if truncated > 0 {
        file.set_len(result.valid_len)
            .map_err(|e| with_path(e, "truncating", path))?;
        file.sync_data()
            .map_err(|e| with_path(e, "syncing", path))?;
        warn!(
            path = %path.display(),
            bytes_cut = truncated,
            new_len = result.valid_len,
            fragments_kept = result.fragments.len(),
            reason = stop.as_deref().unwrap_or("unknown"),
            "truncated torn segment file"
        );
        result.file_len = result.valid_len;
    }
    Ok(RepairOutcome {
        scan: result,
        truncated,
    })
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Where the walk is (ISO/IEC 14496-12 §4.3, §8.8: `ftyp`, `moov`, then fragments).
enum Stage {
    ExpectFtyp,
    ExpectMoov,
    Fragments(InitInfo),
}

/// The scan, plus why it stopped before the end of the file (if it did).
pub(crate) fn scan_file(file: &File) -> io::Result<(ScanResult, Option<String>)> {
    let file_len = file.metadata()?.len();
    let mut result = ScanResult {
        params: None,
        init_len: 0,
        fragments: Vec::new(),
        valid_len: 0,
        file_len,
    };
    let mut stage = Stage::ExpectFtyp;
    let mut pos = 0u64;
    // Where each fragment's video data ends (audio data, if any, follows it).
    let mut video_ends = Vec::new();
    let mut buf = Vec::new();
    let stop = loop {
        if pos == file_len {
            break None;
        }
        let header = match read_header(file, pos, file_len)? {
            Ok(h) => h,
            Err(reason) => break Some(reason),
        };
        let end = pos + header.size;
        let (next, next_pos) = match (stage, &header.kind) {
            (Stage::ExpectFtyp, b"ftyp") => (Stage::ExpectMoov, end),
            (Stage::ExpectFtyp, _) => {
                break Some(format!(
                    "file starts with '{}', not 'ftyp'",
                    KindDisplay(header.kind)
                ))
            }
            (Stage::ExpectMoov, b"moov") => {
                if header.size > MAX_MOOV {
                    break Some(format!(
                        "'moov' of {} bytes is implausibly large",
                        header.size
                    ));
                }
                read_at(file, pos, header.size, &mut buf)?;
                match parse_moov(&buf[header.header_len as usize..]) {
                    Ok(init) => {
                        result.params = Some(init.params.clone());
                        result.init_len = end;
                        result.valid_len = end;
                        (Stage::Fragments(init), end)
                    }
                    Err(reason) => break Some(format!("'moov': {reason}")),
                }
            }
            (s @ Stage::ExpectMoov, b"free" | b"skip") => (s, end),
            (Stage::ExpectMoov, _) => {
                break Some(format!(
                    "'{}' where 'moov' was expected",
                    KindDisplay(header.kind)
                ))
            }
            (Stage::Fragments(init), b"moof") => {
                match fragment(file, pos, header, file_len, &init, &mut buf)? {
                    Ok((frag, video_end)) => {
                        video_ends.push(video_end);
                        let frag_end = frag.offset + frag.len;
                        result.valid_len = frag_end;
                        result.fragments.push(frag);
                        (Stage::Fragments(init), frag_end)
                    }
                    Err(reason) => break Some(format!("fragment at {pos}: {reason}")),
                }
            }
            (s @ Stage::Fragments(_), b"styp" | b"sidx" | b"free" | b"skip" | b"prft") => (s, end),
            (Stage::Fragments(_), _) => {
                break Some(format!(
                    "unexpected '{}' at {pos}",
                    KindDisplay(header.kind)
                ))
            }
        };
        stage = next;
        pos = next_pos;
    };
    let stop = drop_zeroed_tail(file, &mut result, &video_ends)?.or(stop);
    if result.params.is_none() {
        result.init_len = 0;
        result.valid_len = 0;
    }
    Ok((result, stop))
}

/// A box header at `pos`, or why there is no complete box there.
fn read_header(file: &File, pos: u64, file_len: u64) -> io::Result<Result<Header, String>> {
    let mut h = [0u8; 16];
    let n = (file_len - pos).min(16) as usize;
    file.read_exact_at(&mut h[..n], pos)?;
    let header = match parse_header(&h[..n]) {
        Ok(h) => h,
        Err(p) => return Ok(Err(format!("{p} at {pos}"))),
    };
    if header.size > file_len - pos {
        return Ok(Err(format!(
            "'{}' at {pos} needs {} bytes, {} left",
            KindDisplay(header.kind),
            header.size,
            file_len - pos
        )));
    }
    Ok(Ok(header))
}

fn read_at(file: &File, pos: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    buf.resize(len as usize, 0);
    file.read_exact_at(buf, pos)
}

/// Checks the `moof` at `pos` and the `mdat` after it.
fn fragment(
    file: &File,
    pos: u64,
    moof: Header,
    file_len: u64,
    init: &InitInfo,
    buf: &mut Vec<u8>,
) -> io::Result<Result<(FragmentInfo, u64), String>> {
    if moof.size > MAX_MOOF {
        return Ok(Err(format!(
            "'moof' of {} bytes is implausibly large",
            moof.size
        )));
    }
    let mdat_pos = pos + moof.size;
    if mdat_pos == file_len {
        return Ok(Err("'moof' without 'mdat'".to_owned()));
    }
    let mdat = match read_header(file, mdat_pos, file_len)? {
        Ok(h) => h,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Err(reason) = expect_mdat(mdat.kind) {
        return Ok(Err(reason));
    }
    read_at(file, pos, moof.size, buf)?;
    let payload = Payload {
        start: mdat_pos + mdat.header_len,
        len: mdat.size - mdat.header_len,
    };
    let body = &buf[moof.header_len as usize..];
    Ok(
        parse_moof(body, pos, init.track_id, init.trex, payload, |_| {}).map(|s| {
            let info = FragmentInfo {
                offset: pos,
                len: moof.size + mdat.size,
                base_time: s.base_time,
                duration: s.duration,
                samples: s.samples,
                starts_with_key: s.starts_with_key,
            };
            (info, payload.start + s.video_bytes)
        }),
    )
}

/// H.264 and H.265 NAL units never end in a zero byte (ISO/IEC 14496-10 §7.4.1, 23008-2
/// §7.4.2), so a fragment whose data ends in zero is a zero-filled tail that happens to sit
/// inside an `mdat` (power loss after the length was extended). Drops such fragments from the end.
/// The video data's last byte is checked (`video_ends`, one per fragment): audio data after
/// it may well end in zero.
fn drop_zeroed_tail(
    file: &File,
    result: &mut ScanResult,
    video_ends: &[u64],
) -> io::Result<Option<String>> {
    let h26x = result.params.as_ref().is_some_and(|p| {
        ["avc1", "avc3", "hvc1", "hev1"]
            .iter()
            .any(|c| p.codec.starts_with(c))
    });
    if !h26x {
        return Ok(None);
    }
    let mut reason = None;
    while let Some(last) = result.fragments.last() {
        let mut byte = [0u8; 1];
        let video_end = video_ends
            .get(result.fragments.len() - 1)
            .copied()
            .unwrap_or(last.offset + last.len);
        file.read_exact_at(&mut byte, video_end - 1)?;
        if byte[0] != 0 {
            break;
        }
        reason = Some(format!(
            "fragment at {} ends in zero-filled data",
            last.offset
        ));
        result.fragments.pop();
        result.valid_len = result
            .fragments
            .last()
            .map_or(result.init_len, |f| f.offset + f.len);
    }
    Ok(reason)
}
