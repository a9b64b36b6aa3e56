//! Reading an init segment's `moov` back: the video track's parameters (and the audio
//! track's, if any), the video track ID and the
//! `trex` defaults that fragments fall back on (ISO/IEC 14496-12 §8.2, §8.3, §8.4, §8.8.3).

use bytes::Bytes;

use super::boxes::{children, require, Fields};
use crate::track::{AudioParams, TrackParams, TIMESCALE};

/// Per-sample defaults from `trex` (§8.8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrexDefaults {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
}

/// What the init segment says about the one video track.
#[derive(Clone, Debug)]
pub(crate) struct InitInfo {
    pub params: TrackParams,
    pub track_id: u32,
    pub trex: TrexDefaults,
}

/// Parses a `moov` body. Errors name the box that is missing or malformed.
pub(crate) fn parse_moov(moov: &[u8]) -> Result<InitInfo, String> {
    let mut video = None;
    let mut audio = None;
    for child in children(moov) {
        let child = child?;
        if &child.kind == b"trak" {
            match track(child.body)? {
                Some((b"vide", id, timescale, entry)) if video.is_none() => {
                    if timescale != TIMESCALE {
                        return Err(format!(
                            "video track {id} has timescale {timescale}, not {TIMESCALE}"
                        ));
                    }
                    video = Some((id, entry));
                }
                Some((b"soun", _, timescale, entry)) if audio.is_none() => {
                    let (codec, rate) = super::audio::describe(entry)?;
                    if rate != timescale {
                        return Err(format!(
                            "audio track has timescale {timescale}, its sample rate is {rate}"
                        ));
                    }
                    audio = Some(AudioParams {
                        codec,
                        sample_rate: rate,
                        sample_entry: Bytes::copy_from_slice(entry),
                    });
                }
                _ => {}
            }
        }
    }
    let (track_id, entry) = video.ok_or("no video track in 'moov'")?;
    let (codec, width, height) = super::codec::describe(entry)?;
    let trex = trex_entries(moov)?
        .into_iter()
        .find_map(|(id, d)| (id == track_id).then_some(d));
    let trex = trex.ok_or_else(|| format!("no 'trex' for track {track_id}"))?;
    Ok(InitInfo {
        params: TrackParams {
            codec,
            width,
            height,
            sample_entry: Bytes::copy_from_slice(entry),
            audio,
        },
        track_id,
        trex,
    })
}

/// Every `trex` of `moov`'s `mvex` (§8.8.3): track ID and its per-sample defaults.
pub(crate) fn trex_entries(moov: &[u8]) -> Result<Vec<(u32, TrexDefaults)>, String> {
    let mvex = require(moov, b"mvex", "moov")?;
    let mut out = Vec::new();
    for child in children(mvex.body) {
        let child = child?;
        if &child.kind != b"trex" {
            continue;
        }
        let mut f = Fields::new(child.body, "trex");
        f.version_flags()?;
        let id = f.u32()?;
        let _sample_description_index = f.u32()?;
        out.push((id, TrexDefaults { duration: f.u32()?, size: f.u32()?, flags: f.u32()? }));
    }
    Ok(out)
}

/// What a `trak` holds.
type Track<'a> = (&'a [u8; 4], u32, u32, &'a [u8]);

/// `(handler, track_ID, timescale, first sample entry)` if this `trak` is a video or audio track.
fn track(trak: &[u8]) -> Result<Option<Track<'_>>, String> {
    let mdia = require(trak, b"mdia", "trak")?;
    let hdlr = require(mdia.body, b"hdlr", "mdia")?;
    let mut f = Fields::new(hdlr.body, "hdlr");
    f.version_flags()?;
    let _pre_defined = f.u32()?;
    let handler: &'static [u8; 4] = match f.take(4)? {
        b"vide" => b"vide",
        b"soun" => b"soun",
        _ => return Ok(None),
    };

    let tkhd = require(trak, b"tkhd", "trak")?;
    let mut f = Fields::new(tkhd.body, "tkhd");
    let (version, _) = f.version_flags()?;
    f.take(if version == 1 { 16 } else { 8 })?; // creation_time, modification_time
    let track_id = f.u32()?;

    let mdhd = require(mdia.body, b"mdhd", "mdia")?;
    let mut f = Fields::new(mdhd.body, "mdhd");
    let (version, _) = f.version_flags()?;
    f.take(if version == 1 { 16 } else { 8 })?;
    let timescale = f.u32()?;

    let minf = require(mdia.body, b"minf", "mdia")?;
    let stbl = require(minf.body, b"stbl", "minf")?;
    let stsd = require(stbl.body, b"stsd", "stbl")?;
    let mut f = Fields::new(stsd.body, "stsd");
    f.version_flags()?;
    if f.u32()? == 0 {
        return Err("'stsd' has no entries".to_owned());
    }
    let entries = &stsd.body[8..];
    let entry = find_first(entries)?.ok_or("'stsd' has no entries")?;
    Ok(Some((handler, track_id, timescale, entry)))
}

fn find_first(buf: &[u8]) -> Result<Option<&[u8]>, String> {
    match children(buf).next() {
        Some(child) => Ok(Some(child?.whole)),
        None => Ok(None),
    }
}
