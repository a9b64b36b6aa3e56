//! Encoding the init segment (`ftyp` + `moov`) and fragment headers (`moof` + `mdat` header).
//!
//! The init segment is built with `mp4-atom` for the leaf boxes; the containers are written
//! here so that the source's sample entry lands in `stsd` byte for byte. Fragment headers are
//! written by hand: they are on the hot path and have a fixed layout.

use mp4_atom::{BufMut as _, Encode as _, FourCC};

use super::boxes::{parse_header, KindDisplay};
use super::SampleMeta;
use crate::track::{TrackParams, TIMESCALE};

/// The video track of every file Understudy writes.
pub const TRACK_ID: u32 = 1;
/// The audio track, in files that have one.
pub const AUDIO_TRACK_ID: u32 = 2;

/// `sample_flags` (ISO/IEC 14496-12 §8.8.3.1) of a sync sample: `sample_depends_on` = 2
/// (does not depend on others).
pub const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: `sample_depends_on` = 1, `sample_is_non_sync_sample` = 1.
pub const FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// `sample_is_non_sync_sample` within `sample_flags`.
pub const FLAG_IS_NON_SYNC: u32 = 0x0001_0000;

/// `tfhd` flag: `default-base-is-moof` (§8.8.7.1).
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8.1): data-offset, sample-duration, sample-size, sample-flags present.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200 | 0x00_0400;
/// `trun` flag: sample-composition-time-offsets present.
pub(crate) const TRUN_CTS_PRESENT: u32 = 0x00_0800;

/// Bytes of one `trun` sample record with the flags above.
const TRUN_RECORD: usize = 12;
/// Bytes a composition time offset adds to each record.
const TRUN_CTS_FIELD: usize = 4;
/// `moof` bytes that do not depend on the sample count: moof(8) + mfhd(16) + traf(8) +
/// tfhd(16) + tfdt v1(20) + trun header(8 + 4 + 4 + 4).
const MOOF_FIXED: usize = 8 + 16 + 8 + 16 + 20 + 20;
/// Bytes of the `mdat` header `encode_fragment` appends.
pub const MDAT_HEADER_LEN: usize = 8;

/// `ftyp` + `moov` for one video track at 90 kHz (and the audio track, if any, at its sample rate), with `mvex`/`trex` so players treat it as fragmented.
pub fn encode_init(params: &TrackParams) -> Result<Vec<u8>, EncodeError> {
    let entry = &params.sample_entry[..];
    let header = parse_header(entry)
        .map_err(|p| EncodeError(format!("sample entry for {}: {p}", params.codec)))?;
    if header.size != entry.len() as u64 {
        return Err(EncodeError(format!(
            "sample entry for {}: box says {} bytes, have {}",
            params.codec,
            header.size,
            entry.len()
        )));
    }
    // Refuse what `scan` could not read back (it would treat the file as torn).
    super::codec::describe(entry)
        .map_err(|e| EncodeError(format!("sample entry for {}: {e}", params.codec)))?;
    let is_avc = matches!(&header.kind, b"avc1" | b"avc3");

    let mut compatible_brands = vec![
        FourCC::new(b"isom"),
        FourCC::new(b"iso6"),
        FourCC::new(b"mp41"),
    ];
    if is_avc {
        compatible_brands.push(FourCC::new(b"avc1"));
    }
    let ftyp = mp4_atom::Ftyp {
        major_brand: FourCC::new(b"isom"),
        minor_version: 0x200,
        compatible_brands,
    };

    let mut buf = Vec::with_capacity(entry.len() + 768);
    let mp4 = |e: mp4_atom::Error| {
        EncodeError(format!(
            "init segment for {} ('{}'): {e}",
            params.codec,
            KindDisplay(header.kind)
        ))
    };
    ftyp.encode(&mut buf).map_err(mp4)?;
    if let Some(a) = &params.audio {
        super::audio::describe(&a.sample_entry)
            .map_err(|e| EncodeError(format!("audio sample entry for {}: {e}", a.codec)))?;
    }
    buf.encode_atom(FourCC::new(b"moov"), |buf| {
        mp4_atom::Mvhd {
            timescale: TIMESCALE,
            duration: 0,
            rate: mp4_atom::FixedPoint::new(1, 0),
            volume: mp4_atom::FixedPoint::new(1, 0),
            next_track_id: AUDIO_TRACK_ID + 1,
            ..Default::default()
        }
        .encode(buf)?;
        let video = TrakSpec {
            track_id: TRACK_ID,
            timescale: TIMESCALE,
            video_size: Some((params.width, params.height)),
            entry,
        };
        encode_trak(buf, &video)?;
        let mut trex = vec![mp4_atom::Trex {
            track_id: TRACK_ID,
            default_sample_description_index: 1,
            ..Default::default()
        }];
        if let Some(a) = &params.audio {
            let audio = TrakSpec {
                track_id: AUDIO_TRACK_ID,
                timescale: a.sample_rate,
                video_size: None,
                entry: &a.sample_entry,
            };
            encode_trak(buf, &audio)?;
            trex.push(mp4_atom::Trex {
                track_id: AUDIO_TRACK_ID,
                default_sample_description_index: 1,
                ..Default::default()
            });
        }
        mp4_atom::Mvex { mehd: None, trex }.encode(buf)
    })
    .map_err(mp4)?;
    Ok(buf)
}

/// One `trak` of the init segment.
struct TrakSpec<'a> {
    track_id: u32,
    timescale: u32,
    /// Width and height for a video track; `None` for audio.
    video_size: Option<(u16, u16)>,
    /// The sample entry, spliced verbatim into `stsd`.
    entry: &'a [u8],
}

/// A `trak` with empty sample tables (ISO/IEC 14496-12 §8.3–§8.7; the samples are in fragments).
fn encode_trak(buf: &mut Vec<u8>, t: &TrakSpec<'_>) -> Result<(), mp4_atom::Error> {
    buf.encode_atom(FourCC::new(b"trak"), |buf| {
        let (width, height) = t.video_size.unwrap_or((0, 0));
        mp4_atom::Tkhd {
            track_id: t.track_id,
            enabled: true,
            in_movie: true,
            width: mp4_atom::FixedPoint::new(width, 0),
            height: mp4_atom::FixedPoint::new(height, 0),
            // Audio tracks play at full volume; video tracks have none (§8.3.2.3).
            volume: mp4_atom::FixedPoint::new(u8::from(t.video_size.is_none()), 0),
            ..Default::default()
        }
        .encode(buf)?;
        buf.encode_atom(FourCC::new(b"mdia"), |buf| {
            mp4_atom::Mdhd {
                timescale: t.timescale,
                duration: 0,
                language: "und".to_owned(),
                ..Default::default()
            }
            .encode(buf)?;
            let (handler, name) = match t.video_size {
                Some(_) => (b"vide", "VideoHandler"),
                None => (b"soun", "SoundHandler"),
            };
            mp4_atom::Hdlr {
                handler: FourCC::new(handler),
                name: name.to_owned(),
            }
            .encode(buf)?;
            buf.encode_atom(FourCC::new(b"minf"), |buf| {
                match t.video_size {
                    Some(_) => mp4_atom::Vmhd::default().encode(buf)?,
                    None => mp4_atom::Smhd::default().encode(buf)?,
                }
                mp4_atom::Dinf {
                    dref: mp4_atom::Dref {
                        entries: vec![mp4_atom::DrefEntry::Url(mp4_atom::Url {
                            location: String::new(),
                        })],
                    },
                }
                .encode(buf)?;
                buf.encode_atom(FourCC::new(b"stbl"), |buf| {
                    // SampleDescriptionBox (§8.5.2): a full box with one entry, spliced verbatim.
                    buf.encode_atom(FourCC::new(b"stsd"), |buf| {
                        buf.append_slice(&0u32.to_be_bytes()); // version 0, flags 0
                        buf.append_slice(&1u32.to_be_bytes()); // entry_count
                        buf.append_slice(t.entry);
                        Ok(())
                    })?;
                    mp4_atom::Stts::default().encode(buf)?;
                    mp4_atom::Stsc::default().encode(buf)?;
                    mp4_atom::Stsz::default().encode(buf)?;
                    mp4_atom::Stco::default().encode(buf)
                })
            })
        })
    })
}

/// Total size of the `moof` plus `mdat` header for `sample_count` samples, with or without
/// composition time offsets.
pub fn fragment_header_len(sample_count: usize, with_cts: bool) -> usize {
    MOOF_FIXED + record_len(with_cts) * sample_count + MDAT_HEADER_LEN
}

fn record_len(with_cts: bool) -> usize {
    TRUN_RECORD + if with_cts { TRUN_CTS_FIELD } else { 0 }
}

/// A `moof` and the 8-byte `mdat` header for `samples`; the caller writes the sample data
/// (in order, concatenated) right after the returned bytes. `sequence` starts at 1 per file;
/// `base_time` is the `tfdt` in 90 kHz units from the segment's start.
///
/// Composition time offsets (presentation minus decode time, for reordered streams such as
/// B-frames) are written only when some sample has one, in a version 0 `trun`: unsigned
/// offsets, so every presentation time is at or after its decode time. Decode times are the
/// ones that lead: the file's timeline is wall-clock time, a picture is presented at the time
/// it was captured, and its decode time comes up to the reorder depth earlier. That needs no
/// edit list (which would sit in the `moov`, written before the first offset is known, and
/// would shift presentation away from wall-clock time and from any other track), and unlike
/// version 1's negative offsets every reader (ffmpeg, Chromium's MSE, the `mp4` crate) takes
/// it as it stands without a decode-time shift of its own.
///
/// One allocation, sized exactly.
pub fn encode_fragment(
    sequence: u32,
    base_time: u64,
    samples: &[SampleMeta],
) -> Result<Vec<u8>, EncodeError> {
    if samples.is_empty() {
        return Err(EncodeError(format!("fragment {sequence} has no samples")));
    }
    let data_len: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
    let with_cts = samples.iter().any(|s| s.cts_offset != 0);
    if let Some(s) = samples.iter().find(|s| s.cts_offset < 0) {
        return Err(EncodeError(format!(
            "fragment {sequence}: negative composition offset {}",
            s.cts_offset
        )));
    }
    let total = fragment_header_len(samples.len(), with_cts);
    let moof_len = total - MDAT_HEADER_LEN;
    let mdat_len = u32::try_from(data_len + MDAT_HEADER_LEN as u64).map_err(|_| {
        EncodeError(format!(
            "fragment {sequence}: {data_len} bytes of samples exceed 4 GiB"
        ))
    })?;
    let moof_len32 = u32::try_from(moof_len).map_err(|_| {
        EncodeError(format!(
            "fragment {sequence}: {} samples is too many",
            samples.len()
        ))
    })?;
    let count = samples.len() as u32; // bounded by moof_len32 above
    let traf_len = (moof_len - 8 - 16) as u32;
    let trun_len = (20 + record_len(with_cts) * samples.len()) as u32;

    let mut b = Vec::with_capacity(total);
    // MovieFragmentBox (§8.8.4).
    put_header(&mut b, moof_len32, b"moof");
    // MovieFragmentHeaderBox (§8.8.5).
    put_header(&mut b, 16, b"mfhd");
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&sequence.to_be_bytes());
    // TrackFragmentBox (§8.8.6).
    put_header(&mut b, traf_len, b"traf");
    // TrackFragmentHeaderBox (§8.8.7): track_ID only; data offsets relative to the moof.
    put_header(&mut b, 16, b"tfhd");
    b.extend_from_slice(&TFHD_DEFAULT_BASE_IS_MOOF.to_be_bytes());
    b.extend_from_slice(&TRACK_ID.to_be_bytes());
    // TrackFragmentBaseMediaDecodeTimeBox (§8.8.12), version 1.
    put_header(&mut b, 20, b"tfdt");
    b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    b.extend_from_slice(&base_time.to_be_bytes());
    // TrackRunBox (§8.8.8), version 0.
    put_header(&mut b, trun_len, b"trun");
    let trun_flags = TRUN_FLAGS | if with_cts { TRUN_CTS_PRESENT } else { 0 };
    b.extend_from_slice(&trun_flags.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    // data_offset: from the moof's first byte to the first sample byte, past the mdat header.
    b.extend_from_slice(&(moof_len32 + MDAT_HEADER_LEN as u32).to_be_bytes());
    for s in samples {
        b.extend_from_slice(&s.duration.to_be_bytes());
        b.extend_from_slice(&s.size.to_be_bytes());
        let flags = if s.key { FLAGS_SYNC } else { FLAGS_NON_SYNC };
        b.extend_from_slice(&flags.to_be_bytes());
        if with_cts {
            b.extend_from_slice(&s.cts_offset.to_be_bytes()); // checked non-negative above
        }
    }
    // MediaDataBox (§8.1.1) header.
    put_header(&mut b, mdat_len, b"mdat");
    debug_assert_eq!(b.len(), total);
    Ok(b)
}

pub(crate) fn put_header(b: &mut Vec<u8>, size: u32, kind: &[u8; 4]) {
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(kind);
}

#[derive(Debug, thiserror::Error)]
#[error("encoding MP4: {0}")]
pub struct EncodeError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Decode as _, Moof};

    #[test]
    fn fragment_round_trips_through_mp4_atom() {
        let samples = [
            SampleMeta {
                duration: 3600,
                size: 1000,
                key: true,
                cts_offset: 0,
            },
            SampleMeta {
                duration: 3601,
                size: 20,
                key: false,
                cts_offset: 0,
            },
        ];
        let b = encode_fragment(7, 1 << 40, &samples).unwrap();
        assert_eq!(b.len(), fragment_header_len(2, false));
        let moof_len = b.len() - MDAT_HEADER_LEN;
        let moof = Moof::decode(&mut &b[..moof_len]).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, TRACK_ID);
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 1 << 40);
        let trun = &traf.trun[0];
        assert_eq!(trun.data_offset, Some(b.len() as i32));
        assert_eq!(trun.samples.len(), 2);
        assert_eq!(trun.samples.get(1).unwrap().duration, Some(3601));
        assert_eq!(trun.samples.get(0).unwrap().flags, Some(FLAGS_SYNC));
        assert_eq!(trun.samples.get(1).unwrap().flags, Some(FLAGS_NON_SYNC));
        assert_eq!(&b[moof_len..], &[0, 0, 0x04, 0x04, b'm', b'd', b'a', b't']);
    }

    #[test]
    fn composition_offsets_round_trip_through_mp4_atom() {
        let samples = [(true, 7200), (false, 10_800), (false, 0)].map(|(key, cts_offset)| {
            SampleMeta {
                duration: 3600,
                size: 10,
                key,
                cts_offset,
            }
        });
        let b = encode_fragment(1, 0, &samples).unwrap();
        assert_eq!(b.len(), fragment_header_len(3, true));
        let moof = Moof::decode(&mut &b[..b.len() - MDAT_HEADER_LEN]).unwrap();
        let trun = &moof.traf[0].trun[0];
        let cts: Vec<_> = trun.samples.iter().map(|s| s.cts).collect();
        assert_eq!(cts, [Some(7200), Some(10_800), Some(0)]);
        let negative = [SampleMeta {
            cts_offset: -1,
            ..samples[0]
        }];
        assert!(encode_fragment(1, 0, &negative).is_err());
    }

    #[test]
    fn rejects_empty_fragment_and_bad_entry() {
        assert!(encode_fragment(1, 0, &[]).is_err());
        let params = TrackParams {
            codec: "avc1.640028".into(),
            width: 1,
            height: 1,
            sample_entry: bytes::Bytes::from_static(b"\0\0\0\x10avc1"),
            audio: None,
        };
        assert!(encode_init(&params).is_err());
        // A complete box, but not a visual sample entry `scan` could read back.
        let params = TrackParams {
            sample_entry: bytes::Bytes::from_static(b"\0\0\0\x08avc1"),
            ..params
        };
        assert!(encode_init(&params).is_err());
    }
}
