//! The audio track of a segment: what its sample entry says (ISO/IEC 14496-12 §12.2.3) and its
//! `traf` in each fragment, placed after the video `traf` with its data after the video's in
//! the same `mdat`.

use super::boxes::{parse_header, Fields, KindDisplay};
use super::write::{put_header, EncodeError, AUDIO_TRACK_ID, MDAT_HEADER_LEN};

/// One audio sample's entry in a fragment's audio `trun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioMeta {
    /// Duration in samples (the track's timescale is its sample rate).
    pub duration: u32,
    /// Size of the sample's data in bytes.
    pub size: u32,
}

/// The audio samples of one fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioRun {
    /// `tfdt` in the audio track's timescale, from the segment's start.
    pub base_time: u64,
    pub samples: Vec<AudioMeta>,
}

/// Bytes of an `AudioSampleEntry` body before its child boxes: SampleEntry (8) + 20.
const AUDIO_FIELDS_LEN: usize = 28;

/// `trun` flags of the audio run: data-offset, sample-duration, sample-size present. Every
/// audio sample is a sync sample (the `trex` default flags, 0).
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200;

/// Codec name (`aac`, `flac`, else the entry's type) and sample rate of a whole audio sample
/// entry box.
pub(crate) fn describe(entry: &[u8]) -> Result<(String, u32), String> {
    let header = parse_header(entry).map_err(|p| format!("audio sample entry: {p}"))?;
    if header.size != entry.len() as u64 {
        return Err(format!(
            "audio sample entry: box says {} bytes, have {}",
            header.size,
            entry.len()
        ));
    }
    let body = &entry[header.header_len as usize..];
    if body.len() < AUDIO_FIELDS_LEN {
        return Err(format!(
            "sample entry '{}' is too short for an audio sample entry",
            KindDisplay(header.kind)
        ));
    }
    // samplerate is 16.16 fixed point at body[24..28].
    let rate = u32::from(u16::from_be_bytes([body[24], body[25]]));
    if rate == 0 {
        return Err("audio sample entry has sample rate 0".to_owned());
    }
    let codec = match &header.kind {
        b"mp4a" => "aac".to_owned(),
        b"fLaC" => "flac".to_owned(),
        k if k.iter().all(|b| b.is_ascii_alphanumeric()) => String::from_utf8_lossy(k).into_owned(),
        _ => {
            return Err(format!(
                "audio sample entry type '{}' is not a codec name",
                KindDisplay(header.kind)
            ))
        }
    };
    Ok((codec, rate))
}

/// Adds the audio `traf` to a fragment header made by `encode_fragment` (a `moof` followed by
/// the `mdat` header): the `moof`, the `mdat` size and the video `trun`'s data offset grow to
/// match. The audio data must be written right after the video data.
pub(crate) fn append_audio_traf(header: &mut Vec<u8>, run: &AudioRun) -> Result<(), EncodeError> {
    if run.samples.is_empty() {
        return Ok(());
    }
    let bad = |what: &str| EncodeError(format!("adding the audio track fragment: {what}"));
    let moof_len = header
        .len()
        .checked_sub(MDAT_HEADER_LEN)
        .ok_or_else(|| bad("header too short"))?;
    let audio_data: u64 = run.samples.iter().map(|s| u64::from(s.size)).sum();
    let trun_len = 20 + 8 * run.samples.len();
    let traf_len = 8 + 16 + 20 + trun_len;
    let new_moof_len =
        u32::try_from(moof_len + traf_len).map_err(|_| bad("too many audio samples"))?;
    let old_mdat = read_u32(header, moof_len).ok_or_else(|| bad("no mdat header"))?;
    let video_data = old_mdat
        .checked_sub(MDAT_HEADER_LEN as u32)
        .ok_or_else(|| bad("mdat header smaller than itself"))?;
    let new_mdat = u32::try_from(u64::from(old_mdat) + audio_data)
        .map_err(|_| bad("samples exceed 4 GiB"))?;
    let video_offset_at = video_data_offset_pos(&header[..moof_len])?;
    let old_offset = read_u32(header, video_offset_at).ok_or_else(|| bad("no data offset"))?;

    let mut traf = Vec::with_capacity(traf_len);
    put_header(&mut traf, traf_len as u32, b"traf");
    put_header(&mut traf, 16, b"tfhd");
    traf.extend_from_slice(&0x02_0000u32.to_be_bytes()); // default-base-is-moof
    traf.extend_from_slice(&AUDIO_TRACK_ID.to_be_bytes());
    put_header(&mut traf, 20, b"tfdt");
    traf.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    traf.extend_from_slice(&run.base_time.to_be_bytes());
    put_header(&mut traf, trun_len as u32, b"trun");
    traf.extend_from_slice(&TRUN_FLAGS.to_be_bytes());
    traf.extend_from_slice(&(run.samples.len() as u32).to_be_bytes());
    let audio_offset = new_moof_len as u64 + MDAT_HEADER_LEN as u64 + u64::from(video_data);
    let audio_offset = u32::try_from(audio_offset).map_err(|_| bad("data offset past 4 GiB"))?;
    traf.extend_from_slice(&audio_offset.to_be_bytes());
    for s in &run.samples {
        traf.extend_from_slice(&s.duration.to_be_bytes());
        traf.extend_from_slice(&s.size.to_be_bytes());
    }
    debug_assert_eq!(traf.len(), traf_len);

    let shifted = old_offset
        .checked_add(traf_len as u32)
        .ok_or_else(|| bad("data offset overflow"))?;
    header.truncate(moof_len);
    header.extend_from_slice(&traf);
    header[0..4].copy_from_slice(&new_moof_len.to_be_bytes());
    header[video_offset_at..video_offset_at + 4].copy_from_slice(&shifted.to_be_bytes());
    put_header(header, new_mdat, b"mdat");
    Ok(())
}

/// Position (from the start of the `moof`) of the first `trun`'s `data_offset` field.
fn video_data_offset_pos(moof: &[u8]) -> Result<usize, EncodeError> {
    let bad = |what: &str| EncodeError(format!("locating the video data offset: {what}"));
    let mut pos = 8; // past the moof header
    // moof children: find the first traf, then its trun.
    let traf = find_child(moof, pos, b"traf").ok_or_else(|| bad("no 'traf'"))?;
    pos = traf + 8;
    let end = traf + read_u32(moof, traf).ok_or_else(|| bad("short 'traf'"))? as usize;
    let trun = find_child(&moof[..end.min(moof.len())], pos, b"trun").ok_or_else(|| bad("no 'trun'"))?;
    let flags = read_u32(moof, trun + 8).ok_or_else(|| bad("short 'trun'"))? & 0x00ff_ffff;
    if flags & 0x1 == 0 {
        return Err(bad("'trun' has no data offset"));
    }
    Ok(trun + 16)
}

/// Offset of the first box of `kind` among the boxes packed from `pos` to the end of `buf`.
fn find_child(buf: &[u8], mut pos: usize, kind: &[u8; 4]) -> Option<usize> {
    while pos + 8 <= buf.len() {
        let size = read_u32(buf, pos)? as usize;
        if size < 8 {
            return None;
        }
        if &buf[pos + 4..pos + 8] == kind {
            return Some(pos);
        }
        pos += size;
    }
    None
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The audio run of a `traf` body (any track other than the video one), with the absolute
/// offset of its data. Errors name what does not add up.
pub(crate) fn parse_audio_traf(traf: &[u8], moof_offset: u64) -> Result<(AudioRun, u64), String> {
    let tfhd = super::boxes::require(traf, b"tfhd", "traf")?;
    let mut f = Fields::new(tfhd.body, "tfhd");
    let (_, tf_flags) = f.version_flags()?;
    let _id = f.u32()?;
    let base = if tf_flags & 0x01 != 0 { f.u64()? } else { moof_offset };
    let tfdt = super::boxes::require(traf, b"tfdt", "traf")?;
    let mut f = Fields::new(tfdt.body, "tfdt");
    let (version, _) = f.version_flags()?;
    let base_time = if version == 1 { f.u64()? } else { u64::from(f.u32()?) };
    let trun = super::boxes::require(traf, b"trun", "traf")?;
    let mut f = Fields::new(trun.body, "trun");
    let (_, flags) = f.version_flags()?;
    if flags & 0x301 != 0x301 {
        return Err(format!("audio 'trun' flags {flags:#x} lack offset, durations or sizes"));
    }
    let count = f.u32()?;
    let data_offset = i64::from(f.u32()? as i32);
    let record = 8 + 4 * usize::from(flags & 0x400 != 0) + 4 * usize::from(flags & 0x800 != 0);
    if (count as u64) * (record as u64) > f.remaining() as u64 {
        return Err(format!("audio 'trun' claims {count} samples but holds {} bytes", f.remaining()));
    }
    let mut samples = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let duration = f.u32()?;
        let size = f.u32()?;
        f.take(record - 8)?;
        samples.push(AudioMeta { duration, size });
    }
    let start = i64::try_from(base)
        .ok()
        .and_then(|b| b.checked_add(data_offset))
        .and_then(|s| u64::try_from(s).ok())
        .ok_or("audio data offset out of range")?;
    Ok((AudioRun { base_time, samples }, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_entries() {
        let mut e = vec![0u8, 0, 0, 36];
        e.extend_from_slice(b"fLaC");
        e.extend_from_slice(&[0; 28]);
        e[8 + 24..8 + 26].copy_from_slice(&8000u16.to_be_bytes());
        assert_eq!(describe(&e).unwrap(), ("flac".to_owned(), 8000));
        e[8 + 24..8 + 26].copy_from_slice(&0u16.to_be_bytes());
        assert!(describe(&e).is_err());
        assert!(describe(&e[..20]).is_err());
    }
}
