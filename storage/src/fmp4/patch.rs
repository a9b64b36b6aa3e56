//! Rewriting a stored fragment's `moof` for its place in another file (ISO/IEC 14496-12
//! §8.8.4–§8.8.12): a new sequence number, every `traf`'s `tfdt` moved onto the new timeline
//! (in that track's own timescale), absolute data offsets moved with the `mdat`, and optionally
//! the samples at or after a time left out. Everything else (every `traf` and `trun`, their
//! flags, composition offsets, sample flags, other tracks) passes through byte for byte.

use super::boxes::{children, parse_header, require, Fields};
use crate::track::TIMESCALE;

/// What the init segment says about one track, for retiming its fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrackInfo {
    pub id: u32,
    pub timescale: u32,
    /// `trex` default sample duration and size (used when neither `tfhd` nor `trun` gives one).
    pub default_duration: u32,
    pub default_size: u32,
}

/// Every track of an init segment (`ftyp` + `moov` …).
pub(crate) fn tracks_of(init: &[u8]) -> Result<Vec<TrackInfo>, String> {
    let mut moov = None;
    for child in children(init) {
        let child = child?;
        if &child.kind == b"moov" {
            moov = Some(child.body);
        }
    }
    let moov = moov.ok_or("no 'moov' in the init segment")?;
    let mut tracks = Vec::new();
    for child in children(moov) {
        let child = child?;
        if &child.kind != b"trak" {
            continue;
        }
        let tkhd = require(child.body, b"tkhd", "trak")?;
        let mut f = Fields::new(tkhd.body, "tkhd");
        let (version, _) = f.version_flags()?;
        f.take(if version == 1 { 16 } else { 8 })?;
        let id = f.u32()?;
        let mdia = require(child.body, b"mdia", "trak")?;
        let mdhd = require(mdia.body, b"mdhd", "mdia")?;
        let mut f = Fields::new(mdhd.body, "mdhd");
        let (version, _) = f.version_flags()?;
        f.take(if version == 1 { 16 } else { 8 })?;
        let timescale = f.u32()?;
        if timescale == 0 {
            return Err(format!("track {id} has timescale 0"));
        }
        tracks.push(TrackInfo {
            id,
            timescale,
            default_duration: 0,
            default_size: 0,
        });
    }
    for (id, d) in super::init::trex_entries(moov)? {
        if let Some(t) = tracks.iter_mut().find(|t| t.id == id) {
            t.default_duration = d.duration;
            t.default_size = d.size;
        }
    }
    Ok(tracks)
}

/// 90 kHz ticks in a track's timescale (exact for every timescale that divides evenly per
/// millisecond, i.e. all audio and video rates in use; rounded otherwise).
pub(crate) fn ticks(t_90k: i64, timescale: u32) -> i64 {
    if timescale == TIMESCALE {
        return t_90k;
    }
    let scaled = i128::from(t_90k) * i128::from(timescale);
    let q = scaled.div_euclid(i128::from(TIMESCALE));
    let r = scaled.rem_euclid(i128::from(TIMESCALE));
    (q + i128::from(2 * r >= i128::from(TIMESCALE))) as i64
}

/// How to rewrite one `moof`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retime {
    pub sequence: u32,
    /// Added to every `tfdt` (90 kHz; converted to each track's timescale).
    pub shift_90k: i64,
    /// How far the fragment's sample data moved (new absolute position minus old), for a
    /// `tfhd` with an explicit `base_data_offset`.
    pub data_moved: i64,
}

/// A box's body as a byte range within a buffer.
struct Span {
    kind: [u8; 4],
    body: std::ops::Range<usize>,
}

/// The child boxes of `buf[range]`, as absolute ranges of `buf`.
fn spans(buf: &[u8], range: std::ops::Range<usize>) -> Result<Vec<Span>, String> {
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let h = parse_header(&buf[at..range.end]).map_err(|p| p.to_string())?;
        let end = usize::try_from(h.size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&e| e <= range.end)
            .ok_or("a box overruns its 'moof'")?;
        out.push(Span {
            kind: h.kind,
            body: at + h.header_len as usize..end,
        });
        at = end;
    }
    Ok(out)
}

fn get_u32(buf: &[u8], at: usize) -> Result<u32, String> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "truncated fragment header".to_owned())
}

fn get_u64(buf: &[u8], at: usize) -> Result<u64, String> {
    Ok((u64::from(get_u32(buf, at)?) << 32) | u64::from(get_u32(buf, at + 4)?))
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), String> {
    buf.get_mut(at..at + bytes.len())
        .ok_or_else(|| "truncated fragment header".to_owned())?
        .copy_from_slice(bytes);
    Ok(())
}

/// Rewrites a whole `moof` box (header included) in place; its length does not change.
pub(crate) fn retime(moof: &mut [u8], tracks: &[TrackInfo], r: Retime) -> Result<(), String> {
    let top = spans(moof, 0..moof.len())?;
    let body = match &top[..] {
        [Span { kind: [b'm', b'o', b'o', b'f'], body }] => body.clone(),
        _ => return Err("not a single 'moof' box".to_owned()),
    };
    for s in spans(moof, body)? {
        match &s.kind {
            b"mfhd" => put(moof, s.body.start + 4, &r.sequence.to_be_bytes())?,
            b"traf" => retime_traf(moof, s.body, tracks, r)?,
            _ => {}
        }
    }
    Ok(())
}

fn retime_traf(
    moof: &mut [u8],
    traf: std::ops::Range<usize>,
    tracks: &[TrackInfo],
    r: Retime,
) -> Result<(), String> {
    let kids = spans(moof, traf)?;
    let tfhd = kids
        .iter()
        .find(|s| &s.kind == b"tfhd")
        .ok_or("no 'tfhd' in 'traf'")?;
    let at = tfhd.body.start;
    let flags = get_u32(moof, at)? & 0x00ff_ffff;
    let id = get_u32(moof, at + 4)?;
    if flags & 0x01 != 0 {
        let base = get_u64(moof, at + 8)?;
        let moved = base
            .checked_add_signed(r.data_moved)
            .ok_or("base data offset out of range")?;
        put(moof, at + 8, &moved.to_be_bytes())?;
    }
    let track = tracks
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| format!("'tfhd' names track {id}, which the init segment lacks"))?;
    let shift = ticks(r.shift_90k, track.timescale);
    if let Some(tfdt) = kids.iter().find(|s| &s.kind == b"tfdt") {
        let at = tfdt.body.start;
        let version = moof.get(at).copied().ok_or("truncated 'tfdt'")?;
        if version == 1 {
            let t = get_u64(moof, at + 4)?.saturating_add_signed(shift);
            put(moof, at + 4, &t.to_be_bytes())?;
        } else {
            let t = u64::from(get_u32(moof, at + 4)?).saturating_add_signed(shift);
            let t = u32::try_from(t).map_err(|_| {
                format!("track {id}: decode time {t} does not fit a version 0 'tfdt'")
            })?;
            put(moof, at + 4, &t.to_be_bytes())?;
        }
    }
    Ok(())
}

/// What is left of a fragment cut at a time.
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    /// The new `moof` box (not yet retimed) and the 8-byte header of the `mdat` after it.
    pub head: Vec<u8>,
    /// The new `mdat` payload: byte ranges `(offset, len)` of the segment file, in order.
    pub data: Vec<(u64, u64)>,
    /// Samples and duration (track timescale) kept of the counted track.
    pub samples: u32,
    pub duration: u64,
}

/// The fragment at `moof_offset` keeping only the samples that start before `until_90k`
/// (`file_start_90k` is the absolute time of the file's media time 0), with a new `mdat`
/// holding just their data. Every `trun` must carry a data offset. A `tfhd` with an explicit
/// `base_data_offset` gets 0 there (the retime that follows adds the new `moof` position).
/// `count_track` names the track whose kept samples are counted.
pub(crate) fn cut(
    moof: &[u8],
    moof_offset: u64,
    tracks: &[TrackInfo],
    file_start_90k: i64,
    until_90k: i64,
    count_track: u32,
) -> Result<Cut, String> {
    let top = spans(moof, 0..moof.len())?;
    let body = match &top[..] {
        [Span { kind: [b'm', b'o', b'o', b'f'], body }] => body.clone(),
        _ => return Err("not a single 'moof' box".to_owned()),
    };
    let mut out = Vec::with_capacity(moof.len());
    open_box(&mut out, b"moof");
    let (mut samples, mut duration) = (0, 0);
    let mut data = Vec::new();
    // Positions of trun data_offset fields in `out` and their offset within the new payload.
    let mut offsets = Vec::new();
    let mut payload = 0u64;
    for s in spans(moof, body)? {
        if &s.kind != b"traf" {
            out.extend_from_slice(&moof[s.body.start - 8..s.body.end]);
            continue;
        }
        let traf_at = open_box(&mut out, b"traf");
        let kids = spans(moof, s.body.clone())?;
        let tfhd = kids
            .iter()
            .find(|k| &k.kind == b"tfhd")
            .ok_or("no 'tfhd' in 'traf'")?;
        let mut f = Fields::new(&moof[tfhd.body.clone()], "tfhd");
        let (_, tf_flags) = f.version_flags()?;
        let id = f.u32()?;
        let track = tracks
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| format!("'tfhd' names track {id}, which the init segment lacks"))?;
        let base = if tf_flags & 0x01 != 0 {
            f.u64()?
        } else {
            moof_offset
        };
        if tf_flags & 0x02 != 0 {
            f.u32()?;
        }
        let default_duration = if tf_flags & 0x08 != 0 {
            f.u32()?
        } else {
            track.default_duration
        };
        let default_size = if tf_flags & 0x10 != 0 {
            f.u32()?
        } else {
            track.default_size
        };
        let mut t = match kids.iter().find(|k| &k.kind == b"tfdt") {
            Some(k) => {
                let mut f = Fields::new(&moof[k.body.clone()], "tfdt");
                let (v, _) = f.version_flags()?;
                if v == 1 {
                    f.u64()? as i64
                } else {
                    i64::from(f.u32()?)
                }
            }
            None => 0,
        };
        let until = ticks(until_90k.saturating_sub(file_start_90k), track.timescale);
        for k in &kids {
            let whole = &moof[k.body.start - 8..k.body.end];
            if &k.kind == b"tfhd" && tf_flags & 0x01 != 0 {
                let at = out.len() + 16;
                out.extend_from_slice(whole);
                put(&mut out, at, &0u64.to_be_bytes())?;
                continue;
            }
            if &k.kind != b"trun" {
                out.extend_from_slice(whole);
                continue;
            }
            let kept = cut_trun(&moof[k.body.clone()], default_duration, default_size, &mut t, until)?;
            if id == count_track {
                samples += kept.samples;
                duration += kept.duration;
            }
            let src = base
                .checked_add_signed(kept.data_offset)
                .ok_or("data offset out of range")?;
            data.push((src, kept.data_len));
            let at = out.len();
            out.extend_from_slice(&((8 + kept.body.len()) as u32).to_be_bytes());
            out.extend_from_slice(b"trun");
            out.extend_from_slice(&kept.body);
            offsets.push((at + 16, payload));
            payload += kept.data_len;
        }
        close_box(&mut out, traf_at)?;
    }
    close_box(&mut out, 0)?;
    let payload_at = out.len() as u64 + 8;
    for (at, within) in offsets {
        let v = i32::try_from(payload_at + within).map_err(|_| "data offset out of range")?;
        put(&mut out, at, &v.to_be_bytes())?;
    }
    let mdat_len = u32::try_from(8 + payload).map_err(|_| "'mdat' over 4 GiB")?;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    data.retain(|&(_, len)| len > 0);
    Ok(Cut {
        head: out,
        data,
        samples,
        duration,
    })
}

struct KeptRun {
    body: Vec<u8>,
    samples: u32,
    duration: u64,
    /// The run's data offset (relative to its base) and the bytes its kept samples take.
    data_offset: i64,
    data_len: u64,
}

/// A `trun` body keeping the samples that start before `until` (track ticks); `t` is the
/// decode time of its first sample and advances past the whole run.
fn cut_trun(
    body: &[u8],
    default_duration: u32,
    default_size: u32,
    t: &mut i64,
    until: i64,
) -> Result<KeptRun, String> {
    let mut f = Fields::new(body, "trun");
    let (_, flags) = f.version_flags()?;
    let count = f.u32()?;
    if flags & 0x001 == 0 {
        return Err("'trun' without a data offset".to_owned());
    }
    let data_offset = i64::from(f.u32()? as i32);
    let fixed = 12 + 4 * usize::from(flags & 0x004 != 0);
    let fields = [0x100, 0x200, 0x400, 0x800];
    let record = 4 * fields.iter().filter(|&&b| flags & b != 0).count();
    let size_at = 4 * usize::from(flags & 0x100 != 0);
    if body.len() < fixed + record * count as usize {
        return Err(format!("'trun' claims {count} samples but is {} bytes", body.len()));
    }
    let (mut kept, mut duration, mut data_len) = (0u32, 0u64, 0u64);
    for i in 0..count as usize {
        let d = if flags & 0x100 != 0 {
            get_u32(body, fixed + i * record)?
        } else {
            default_duration
        };
        let size = if flags & 0x200 != 0 {
            get_u32(body, fixed + i * record + size_at)?
        } else {
            default_size
        };
        if *t < until {
            kept += 1;
            duration += u64::from(d);
            data_len += u64::from(size);
        }
        *t += i64::from(d);
    }
    let mut out = body[..fixed + record * kept as usize].to_vec();
    put(&mut out, 4, &kept.to_be_bytes())?;
    Ok(KeptRun {
        body: out,
        samples: kept,
        duration,
        data_offset,
        data_len,
    })
}

fn open_box(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    at
}

fn close_box(out: &mut [u8], at: usize) -> Result<(), String> {
    let len = u32::try_from(out.len() - at).map_err(|_| "box over 4 GiB")?;
    put(out, at, &len.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::write::{encode_fragment, MDAT_HEADER_LEN};
    use crate::fmp4::SampleMeta;

    fn tracks() -> Vec<TrackInfo> {
        vec![TrackInfo {
            id: 1,
            timescale: TIMESCALE,
            default_duration: 0,
            default_size: 0,
        }]
    }

    fn frag() -> Vec<u8> {
        let samples: Vec<_> = (0..5)
            .map(|i| SampleMeta {
                duration: 3600,
                size: 10 + i,
                key: i == 0,
                cts_offset: 0,
            })
            .collect();
        let mut b = encode_fragment(7, 90_000, &samples).unwrap();
        b.truncate(b.len() - MDAT_HEADER_LEN);
        b
    }

    #[test]
    fn retime_moves_tfdt_and_sequence_only() {
        let orig = frag();
        let mut m = orig.clone();
        let r = Retime {
            sequence: 42,
            shift_90k: 1000,
            data_moved: 5,
        };
        retime(&mut m, &tracks(), r).unwrap();
        assert_eq!(m.len(), orig.len());
        let diff: Vec<usize> = (0..m.len()).filter(|&i| m[i] != orig[i]).collect();
        assert!(!diff.is_empty() && diff.len() <= 4, "{diff:?}");
        assert!(m.windows(8).any(|w| w == 91_000u64.to_be_bytes()));
        assert!(m.windows(4).any(|w| w == 42u32.to_be_bytes()));
        assert!(retime(&mut m[..20], &tracks(), r).is_err());
    }

    #[test]
    fn cut_keeps_samples_before_the_time() {
        let orig = frag();
        // The file starts at 0, the fragment (at byte 1000) at 90 000; cut after two samples.
        let c = cut(&orig, 1000, &tracks(), 0, 90_000 + 7200, 1).unwrap();
        assert_eq!((c.samples, c.duration), (2, 7200));
        let moof_len = c.head.len() - 8;
        assert_eq!(orig.len() - moof_len, 3 * 12);
        assert_eq!(&c.head[moof_len + 4..], b"mdat");
        assert_eq!(get_u32(&c.head, moof_len).unwrap(), 8 + 10 + 11);
        // The kept data is the start of the old payload; the data offset points after the mdat header.
        assert_eq!(c.data, vec![(1000 + orig.len() as u64 + 8, 21)]);
        let off = get_u32(&c.head, 8 + 16 + 8 + 16 + 20 + 16).unwrap();
        assert_eq!(off as usize, moof_len + 8);
        let all = cut(&orig, 1000, &tracks(), 0, i64::MAX / 2, 1).unwrap();
        assert_eq!(&all.head[..orig.len()], &orig[..]);
        assert_eq!(ticks(90_000, 48_000), 48_000);
        assert_eq!(ticks(-90, 8_000), -8);
    }
}
