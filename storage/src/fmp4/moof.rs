//! Parsing a `moof` (ISO/IEC 14496-12 §8.8.4–§8.8.8, §8.8.12) and checking it against the
//! `mdat` that follows: the video `traf` with one `trun`, optionally an audio `traf` whose data
//! follows the video's, together exactly filling the `mdat` payload.

use super::boxes::{children, require, Fields, KindDisplay};
use super::init::TrexDefaults;
use super::write::FLAG_IS_NON_SYNC;
use super::SampleMeta;
use super::audio::{parse_audio_traf, AudioRun};

/// What a fragment header says, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MoofSummary {
    pub sequence: u32,
    pub base_time: u64,
    pub samples: u32,
    pub duration: u64,
    pub starts_with_key: bool,
    /// The audio track's samples in this fragment, if it has any.
    pub audio: Option<AudioRun>,
    /// Bytes of video sample data (at the start of the `mdat` payload).
    pub video_bytes: u64,
}

/// Where the track's samples must be: the `mdat` payload's absolute offset and length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Payload {
    pub start: u64,
    pub len: u64,
}

/// Parses `moof_body` (the box at absolute `moof_offset`), calling `each` for every sample in
/// order. Errors if anything does not add up; `each` may have been called by then.
pub(crate) fn parse_moof(
    moof_body: &[u8],
    moof_offset: u64,
    track_id: u32,
    trex: TrexDefaults,
    payload: Payload,
    mut each: impl FnMut(SampleMeta),
) -> Result<MoofSummary, String> {
    let mfhd = require(moof_body, b"mfhd", "moof")?;
    let mut f = Fields::new(mfhd.body, "mfhd");
    f.version_flags()?;
    let sequence = f.u32()?;

    let mut traf = None;
    let mut audio_traf = None;
    for child in children(moof_body) {
        let child = child?;
        if &child.kind == b"traf" {
            let slot = if traf_track(child.body)? == track_id {
                &mut traf
            } else {
                &mut audio_traf
            };
            if slot.is_some() {
                return Err("more than one 'traf' for a track, or more than two tracks".to_owned());
            }
            *slot = Some(child.body);
        }
    }
    let traf = traf.ok_or("no 'traf' for the video track in 'moof'")?;

    // TrackFragmentHeaderBox (§8.8.7).
    let tfhd = require(traf, b"tfhd", "traf")?;
    let mut f = Fields::new(tfhd.body, "tfhd");
    let (_, tf_flags) = f.version_flags()?;
    let id = f.u32()?;
    if id != track_id {
        return Err(format!(
            "'tfhd' names track {id}, the init segment track {track_id}"
        ));
    }
    let base_data_offset = if tf_flags & 0x01 != 0 {
        Some(f.u64()?)
    } else {
        None
    };
    if tf_flags & 0x02 != 0 {
        f.u32()?; // sample_description_index
    }
    let default_duration = if tf_flags & 0x08 != 0 {
        f.u32()?
    } else {
        trex.duration
    };
    let default_size = if tf_flags & 0x10 != 0 {
        f.u32()?
    } else {
        trex.size
    };
    let default_flags = if tf_flags & 0x20 != 0 {
        f.u32()?
    } else {
        trex.flags
    };

    // TrackFragmentBaseMediaDecodeTimeBox (§8.8.12).
    let tfdt = require(traf, b"tfdt", "traf")?;
    let mut f = Fields::new(tfdt.body, "tfdt");
    let (version, _) = f.version_flags()?;
    let base_time = if version == 1 {
        f.u64()?
    } else {
        u64::from(f.u32()?)
    };

    let mut trun = None;
    for child in children(traf) {
        let child = child?;
        if &child.kind == b"trun" {
            if trun.is_some() {
                return Err("more than one 'trun'".to_owned());
            }
            trun = Some(child.body);
        }
    }
    let trun = trun.ok_or("no 'trun' in 'traf'")?;

    // TrackRunBox (§8.8.8).
    let mut f = Fields::new(trun, "trun");
    let (tr_version, tr_flags) = f.version_flags()?;
    let count = f.u32()?;
    if count == 0 {
        return Err("'trun' has no samples".to_owned());
    }
    let data_offset = if tr_flags & 0x001 != 0 {
        i64::from(f.u32()? as i32)
    } else {
        0
    };
    let first_flags = if tr_flags & 0x004 != 0 {
        Some(f.u32()?)
    } else {
        None
    };
    let has_duration = tr_flags & 0x100 != 0;
    let has_size = tr_flags & 0x200 != 0;
    let has_flags = tr_flags & 0x400 != 0;
    let has_cts = tr_flags & 0x800 != 0;
    let record = 4
        * (usize::from(has_duration)
            + usize::from(has_size)
            + usize::from(has_flags)
            + usize::from(has_cts));
    if (count as u64) * (record as u64) > f.remaining() as u64 {
        return Err(format!(
            "'trun' claims {count} samples but holds {} bytes",
            f.remaining()
        ));
    }

    let base = base_data_offset.unwrap_or(moof_offset);
    let data_start = i64::try_from(base)
        .ok()
        .and_then(|b| b.checked_add(data_offset));
    if data_start != i64::try_from(payload.start).ok() {
        return Err(format!(
            "sample data starts at {data_start:?}, the 'mdat' payload at {}",
            payload.start
        ));
    }

    let mut duration = 0u64;
    let mut data_len = 0u64;
    let mut starts_with_key = false;
    for i in 0..count {
        let d = if has_duration {
            f.u32()?
        } else {
            default_duration
        };
        let size = if has_size { f.u32()? } else { default_size };
        let flags = match (has_flags, first_flags) {
            (true, _) => f.u32()?,
            (false, Some(first)) if i == 0 => first,
            _ => default_flags,
        };
        // Version 0 offsets are unsigned, version 1 signed (§8.8.8.2).
        let cts_offset = match (has_cts, tr_version) {
            (false, _) => 0,
            (true, 0) => {
                let v = f.u32()?;
                i32::try_from(v)
                    .map_err(|_| format!("'trun' sample {i}: composition offset {v} too large"))?
            }
            (true, _) => f.u32()? as i32,
        };
        let key = flags & FLAG_IS_NON_SYNC == 0;
        if i == 0 {
            starts_with_key = key;
        }
        duration += u64::from(d);
        data_len += u64::from(size);
        each(SampleMeta {
            duration: d,
            size,
            key,
            cts_offset,
        });
    }
    let video_bytes = data_len;
    let audio = match audio_traf {
        None => None,
        Some(body) => {
            let (run, start) = parse_audio_traf(body, moof_offset)?;
            if start != payload.start + data_len {
                return Err(format!(
                    "audio data starts at {start}, the video data ends at {}",
                    payload.start + data_len
                ));
            }
            data_len += run.samples.iter().map(|s| u64::from(s.size)).sum::<u64>();
            Some(run)
        }
    };
    if data_len != payload.len {
        return Err(format!(
            "'trun' sample sizes add up to {data_len} bytes, the 'mdat' payload is {}",
            payload.len
        ));
    }
    Ok(MoofSummary {
        sequence,
        base_time,
        samples: count,
        duration,
        starts_with_key,
        audio,
        video_bytes,
    })
}

/// The `track_ID` of a `traf` body's `tfhd`.
fn traf_track(traf: &[u8]) -> Result<u32, String> {
    let tfhd = require(traf, b"tfhd", "traf")?;
    let mut f = Fields::new(tfhd.body, "tfhd");
    f.version_flags()?;
    f.u32()
}

/// Checks that the box after a `moof` is an `mdat`, for messages.
pub(crate) fn expect_mdat(kind: [u8; 4]) -> Result<(), String> {
    if &kind == b"mdat" {
        Ok(())
    } else {
        Err(format!(
            "'moof' is followed by '{}', not 'mdat'",
            KindDisplay(kind)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::write::{encode_fragment, MDAT_HEADER_LEN};

    fn parse(
        buf: &[u8],
        offset: u64,
        payload_len: u64,
    ) -> Result<(MoofSummary, Vec<SampleMeta>), String> {
        let moof_len = buf.len() - MDAT_HEADER_LEN;
        let mut v = Vec::new();
        let payload = Payload {
            start: offset + buf.len() as u64,
            len: payload_len,
        };
        let s = parse_moof(
            &buf[8..moof_len],
            offset,
            1,
            TrexDefaults::default(),
            payload,
            |m| v.push(m),
        )?;
        Ok((s, v))
    }

    #[test]
    fn round_trip() {
        let samples = [
            SampleMeta {
                duration: 3600,
                size: 10,
                key: true,
                cts_offset: 0,
            },
            SampleMeta {
                duration: 3000,
                size: 5,
                key: false,
                cts_offset: 5400,
            },
        ];
        let buf = encode_fragment(3, 90_000, &samples).unwrap();
        let (s, v) = parse(&buf, 1000, 15).unwrap();
        assert_eq!(v, samples);
        assert_eq!(
            s,
            MoofSummary {
                sequence: 3,
                base_time: 90_000,
                samples: 2,
                duration: 6600,
                starts_with_key: true,
                audio: None,
                video_bytes: 15,
            }
        );
    }

    #[test]
    fn inconsistencies_are_errors() {
        let samples = [SampleMeta {
            duration: 3600,
            size: 10,
            key: false,
            cts_offset: 0,
        }];
        let buf = encode_fragment(1, 0, &samples).unwrap();
        assert!(parse(&buf, 0, 11).is_err(), "size mismatch");
        let moof_len = buf.len() - MDAT_HEADER_LEN;
        let wrong_start = Payload { start: 5, len: 10 };
        assert!(parse_moof(
            &buf[8..moof_len],
            0,
            1,
            TrexDefaults::default(),
            wrong_start,
            |_| {}
        )
        .is_err());
        let ok = Payload {
            start: buf.len() as u64,
            len: 10,
        };
        assert!(
            parse_moof(&buf[8..moof_len], 0, 2, TrexDefaults::default(), ok, |_| {}).is_err(),
            "track"
        );
        // Every truncation of the body fails cleanly.
        for cut in 0..moof_len - 8 {
            assert!(
                parse_moof(&buf[8..8 + cut], 0, 1, TrexDefaults::default(), ok, |_| {}).is_err()
            );
        }
        let (s, _) = parse(&buf, 0, 10).unwrap();
        assert!(!s.starts_with_key);
    }
}
