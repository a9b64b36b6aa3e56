//! Reading samples back out of a fragment (for export and playback).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::boxes::parse_header;
use super::init::TrexDefaults;
use super::moof::{expect_mdat, parse_moof, Payload};
use super::write::TRACK_ID;
use super::{AudioMeta, FragmentInfo, SampleMeta};

/// The samples of one fragment with their data, in decode order.
pub fn read_fragment_samples(
    file: &File,
    frag: &FragmentInfo,
) -> io::Result<Vec<(SampleMeta, Bytes)>> {
    read_fragment(file, frag).map(|f| f.video)
}

/// A fragment's samples with their data: the video's and the audio's.
#[derive(Clone, Debug, Default)]
pub struct FragmentSamples {
    pub video: Vec<(SampleMeta, Bytes)>,
    /// `tfdt` of the audio run (audio timescale, from the segment's start).
    pub audio_base_time: u64,
    pub audio: Vec<(AudioMeta, Bytes)>,
}

/// Reads one fragment's video and audio samples.
///
/// Re-reads the fragment's `moof` (the catalog's `FragmentInfo` is only a pointer) and its whole
/// `mdat` payload in one read; the returned `Bytes` are slices of that one buffer. Errors are
/// `InvalidData` if the bytes at `frag.offset` are not the fragment described.
pub fn read_fragment(file: &File, frag: &FragmentInfo) -> io::Result<FragmentSamples> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("fragment at {}: {what}", frag.offset),
        )
    };
    let len =
        usize::try_from(frag.len).map_err(|_| bad(format!("length {} too large", frag.len)))?;
    let mut head = [0u8; 16];
    let n = len.min(16);
    file.read_exact_at(&mut head[..n], frag.offset)?;
    let moof = parse_header(&head[..n]).map_err(|p| bad(p.to_string()))?;
    if &moof.kind != b"moof" || moof.size + 8 > frag.len {
        return Err(bad(format!(
            "no 'moof' of a plausible size ({} bytes, fragment {})",
            moof.size, frag.len
        )));
    }
    // The moof plus up to 16 bytes for the mdat header; the payload is read separately so that
    // the sample buffer holds nothing else.
    let moof_len = moof.size as usize;
    let mut buf = vec![0u8; (moof_len + 16).min(len)];
    file.read_exact_at(&mut buf, frag.offset)?;
    let mdat = parse_header(&buf[moof_len..]).map_err(|p| bad(format!("'mdat': {p}")))?;
    expect_mdat(mdat.kind).map_err(bad)?;
    if moof.size + mdat.size != frag.len {
        return Err(bad(format!(
            "'moof' + 'mdat' are {} bytes, expected {}",
            moof.size + mdat.size,
            frag.len
        )));
    }
    let payload = Payload {
        start: frag.offset + moof.size + mdat.header_len,
        len: mdat.size - mdat.header_len,
    };

    let mut metas = Vec::with_capacity(frag.samples as usize);
    // Our files have no meaningful trex defaults: every trun carries duration, size and flags.
    let summary = parse_moof(
        &buf[moof.header_len as usize..moof_len],
        frag.offset,
        TRACK_ID,
        TrexDefaults::default(),
        payload,
        |m| metas.push(m),
    )
    .map_err(bad)?;
    if summary.samples != frag.samples || summary.base_time != frag.base_time {
        return Err(bad(format!(
            "holds {} samples at {}, expected {} at {}",
            summary.samples, summary.base_time, frag.samples, frag.base_time
        )));
    }

    let mut data = vec![0u8; payload.len as usize];
    file.read_exact_at(&mut data, payload.start)?;
    let data = Bytes::from(data);
    let mut at = 0usize;
    // Sizes sum to the payload length (checked by parse_moof).
    let mut take = |size: u32| {
        let end = at + size as usize;
        let sample = data.slice(at..end);
        at = end;
        sample
    };
    let video = metas.into_iter().map(|m| (m, take(m.size))).collect();
    let (audio_base_time, audio) = match summary.audio {
        Some(run) => (
            run.base_time,
            run.samples.into_iter().map(|m| (m, take(m.size))).collect(),
        ),
        None => (0, Vec::new()),
    };
    Ok(FragmentSamples {
        video,
        audio_base_time,
        audio,
    })
}
