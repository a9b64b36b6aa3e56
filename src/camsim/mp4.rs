//! Reads the video track (and the first audio track) of an MP4 or QuickTime file (ISO/IEC
//! 14496-12 sample tables, ISO/IEC 14496-15 `avcC`/`hvcC`, ISO/IEC 14496-14 `esds`) into
//! parameter sets and a list of samples located in the file's bytes.

use std::io::Cursor;
use std::ops::Range;
use std::path::Path;

use mp4_atom::{Codec, Moov, ReadFrom, StszSamples, Trak};

use super::error::CamSimError;

/// Video codec of a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// RTP encoding name (RFC 6184 §8.1, RFC 7798 §7.1).
    pub(crate) fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
            VideoCodec::H265 => "H265",
        }
    }
}

/// Parameter sets from the sample entry, each a NAL unit without length prefix.
#[derive(Clone, Debug)]
pub(crate) struct ParamSets {
    /// H.265 only.
    pub vps: Option<Vec<u8>>,
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
}

/// One sample (access unit) of the track.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// Where the sample lies in the file.
    pub range: Range<usize>,
    /// Decode time in track timescale units.
    pub dts: u64,
    /// Composition offset (ctts), in track timescale units.
    pub cts_offset: i64,
    /// Duration (stts), in track timescale units.
    pub duration: u32,
    pub is_sync: bool,
}

/// The video track of an MP4 file.
#[derive(Debug)]
pub(crate) struct VideoTrack {
    pub codec: VideoCodec,
    pub width: u16,
    pub height: u16,
    pub timescale: u32,
    /// Size of the NAL length prefix in samples (1, 2 or 4).
    pub length_size: u8,
    pub params: ParamSets,
    pub samples: Vec<Sample>,
}

/// Audio codec of a clip's audio track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AudioCodec {
    /// AAC (`mp4a`), with its AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    Aac { config: Vec<u8> },
    /// G.711 µ-law (QuickTime `ulaw`), one byte per sample.
    Pcmu,
}

/// The first audio track of a file.
#[derive(Debug)]
pub(crate) struct AudioTrack {
    pub codec: AudioCodec,
    /// Samples per second (the track's timescale).
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<Sample>,
}

fn read_moov(path: &Path, data: &[u8]) -> Result<Moov, CamSimError> {
    let err = |reason: String| CamSimError::clip(path, reason);
    let moov_box = find_top_level_box(data, b"moov").map_err(err)?;
    Moov::read_from(&mut Cursor::new(moov_box))
        .map_err(|e| CamSimError::clip(path, format!("reading moov: {e}")))
}

/// Parses `data` (a whole MP4/QuickTime file read from `path`) and returns its first audio
/// track, `None` if it has none. AAC and G.711 µ-law are supported; other codecs are errors.
pub(crate) fn read_audio_track(
    path: &Path,
    data: &[u8],
) -> Result<Option<AudioTrack>, CamSimError> {
    let err = |reason: String| CamSimError::clip(path, reason);
    let moov = read_moov(path, data)?;
    let Some(trak) = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"soun"))
    else {
        return Ok(None);
    };
    let sample_rate = trak.mdia.mdhd.timescale;
    let entry = trak.mdia.minf.stbl.stsd.codecs.first();
    let (codec, channels) = match entry {
        Some(Codec::Mp4a(e)) => {
            let dsi = e
                .esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .filter(|d| d.raw.len() >= 2)
                .ok_or_else(|| err("mp4a without an AudioSpecificConfig".into()))?;
            // The AudioSpecificConfig's channel configuration is the truth (muxers write 2 in
            // the sample entry for mono AAC).
            let channels = match dsi.chan_conf {
                0 => e.audio.channel_count,
                n => u16::from(n),
            };
            (AudioCodec::Aac { config: dsi.raw.clone() }, channels)
        }
        Some(Codec::Unknown(fourcc, _)) if *fourcc == mp4_atom::FourCC::new(b"ulaw") => {
            if sample_rate != 8000 {
                return Err(err(format!("ulaw audio at {sample_rate} Hz (want 8000)")));
            }
            (AudioCodec::Pcmu, 1)
        }
        Some(other) => {
            return Err(err(format!(
                "unsupported audio sample entry {:?} (want mp4a or ulaw)",
                other_name(other)
            )))
        }
        None => return Err(err("audio stsd has no sample entry".into())),
    };
    if sample_rate == 0 {
        return Err(err("audio mdhd timescale is 0".into()));
    }
    let samples = sample_table(trak, data.len()).map_err(err)?;
    if samples.is_empty() {
        return Err(err("audio track has no samples".into()));
    }
    Ok(Some(AudioTrack {
        codec,
        sample_rate,
        channels,
        samples,
    }))
}

/// Parses `data` (a whole MP4 file read from `path`) and returns its first video track.
pub(crate) fn read_video_track(path: &Path, data: &[u8]) -> Result<VideoTrack, CamSimError> {
    let err = |reason: String| CamSimError::clip(path, reason);
    let moov = read_moov(path, data)?;
    let trak = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"))
        .ok_or_else(|| err("no video track".into()))?;
    let (codec, width, height, length_size, params) = sample_entry(trak).map_err(err)?;
    let samples = sample_table(trak, data.len()).map_err(err)?;
    if samples.is_empty() {
        return Err(err("video track has no samples".into()));
    }
    if !samples[0].is_sync {
        return Err(err("first sample is not a sync sample (key frame)".into()));
    }
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err(err("mdhd timescale is 0".into()));
    }
    Ok(VideoTrack {
        codec,
        width,
        height,
        timescale,
        length_size,
        params,
        samples,
    })
}

/// The whole top-level box `kind` (header included), walking box sizes (ISO/IEC 14496-12 §4.2).
/// (mp4-atom's `read_until` does not skip the bodies of other boxes, so it cannot be used.)
fn find_top_level_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<&'a [u8], String> {
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let size = match size32 {
            0 => data.len() - pos, // extends to the end of the file
            1 => {
                let b = data
                    .get(pos + 8..pos + 16)
                    .ok_or_else(|| format!("truncated box header at byte {pos}"))?;
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                usize::try_from(u64::from_be_bytes(v))
                    .map_err(|_| format!("box at byte {pos} too large"))?
            }
            n => n as usize,
        };
        if size < 8 || pos + size > data.len() {
            return Err(format!("bad box size {size} at byte {pos}"));
        }
        if &data[pos + 4..pos + 8] == kind {
            return Ok(&data[pos..pos + size]);
        }
        pos += size;
    }
    Err(format!("no {} box", String::from_utf8_lossy(kind)))
}

type Entry = (VideoCodec, u16, u16, u8, ParamSets);

/// Codec, dimensions and parameter sets from `stsd` (ISO/IEC 14496-15 §5.3.3 and §8.3.3).
fn sample_entry(trak: &Trak) -> Result<Entry, String> {
    let codecs = &trak.mdia.minf.stbl.stsd.codecs;
    let codec = codecs.first().ok_or("stsd has no sample entry")?;
    match codec {
        Codec::Avc1(e) => avc_entry(&e.avcc, e.visual.width, e.visual.height),
        Codec::Avc3(e) => avc_entry(&e.avcc, e.visual.width, e.visual.height),
        Codec::Hvc1(e) => hevc_entry(&e.hvcc, e.visual.width, e.visual.height),
        Codec::Hev1(e) => hevc_entry(&e.hvcc, e.visual.width, e.visual.height),
        other => Err(format!(
            "unsupported sample entry {:?} (want avc1/avc3/hvc1/hev1)",
            other_name(other)
        )),
    }
}

fn other_name(c: &Codec) -> String {
    let dbg = format!("{c:?}");
    dbg.split('(').next().unwrap_or("?").to_string()
}

fn avc_entry(avcc: &mp4_atom::Avcc, width: u16, height: u16) -> Result<Entry, String> {
    let first = |v: &[Vec<u8>], what: &str| {
        v.first()
            .cloned()
            .ok_or_else(|| format!("avcC has no {what}"))
    };
    let params = ParamSets {
        vps: None,
        sps: first(&avcc.sequence_parameter_sets, "SPS")?,
        pps: first(&avcc.picture_parameter_sets, "PPS")?,
    };
    Ok((VideoCodec::H264, width, height, avcc.length_size, params))
}

fn hevc_entry(hvcc: &mp4_atom::Hvcc, width: u16, height: u16) -> Result<Entry, String> {
    // H.265 NAL unit types (ITU-T H.265 Table 7-1): 32 VPS, 33 SPS, 34 PPS.
    let find = |t: u8, what: &str| {
        hvcc.arrays
            .iter()
            .filter(|a| a.nal_unit_type == t)
            .find_map(|a| a.nalus.first().cloned())
            .ok_or_else(|| format!("hvcC has no {what}"))
    };
    let params = ParamSets {
        vps: Some(find(32, "VPS")?),
        sps: find(33, "SPS")?,
        pps: find(34, "PPS")?,
    };
    let length_size = hvcc.length_size_minus_one + 1;
    Ok((VideoCodec::H265, width, height, length_size, params))
}

/// Expands stsz/stco(co64)/stsc/stts/ctts/stss (ISO/IEC 14496-12 §8.6–8.7) into samples.
fn sample_table(trak: &Trak, file_len: usize) -> Result<Vec<Sample>, String> {
    let stbl = &trak.mdia.minf.stbl;
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => vec![*size; *count as usize],
        StszSamples::Different { sizes } => sizes.clone(),
    };
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err("no stco/co64".into()),
    };

    // Sample offsets: walk chunks, with stsc runs giving samples per chunk.
    let mut offsets = Vec::with_capacity(sizes.len());
    let stsc = &stbl.stsc.entries;
    for (i, run) in stsc.iter().enumerate() {
        let first = run.first_chunk as usize;
        let end = stsc
            .get(i + 1)
            .map(|r| r.first_chunk as usize)
            .unwrap_or(chunk_offsets.len() + 1);
        if first == 0 || end < first {
            return Err(format!("bad stsc entry {i}"));
        }
        for chunk in first..end {
            let mut off = *chunk_offsets
                .get(chunk - 1)
                .ok_or_else(|| format!("stsc refers to missing chunk {chunk}"))?;
            for _ in 0..run.samples_per_chunk {
                let Some(&size) = sizes.get(offsets.len()) else {
                    break;
                };
                offsets.push(off);
                off += u64::from(size);
            }
        }
    }
    if offsets.len() != sizes.len() {
        return Err(format!(
            "stsc/stco cover {} samples, stsz has {}",
            offsets.len(),
            sizes.len()
        ));
    }

    let durations: Vec<u32> = stbl
        .stts
        .entries
        .iter()
        .flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize))
        .collect();
    if durations.len() < sizes.len() {
        return Err(format!(
            "stts covers {} samples, stsz has {}",
            durations.len(),
            sizes.len()
        ));
    }
    let cts: Vec<i64> = stbl
        .ctts
        .as_ref()
        .map(|c| {
            c.entries
                .iter()
                .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize))
                .collect()
        })
        .unwrap_or_default();
    let sync: Option<std::collections::HashSet<u32>> = stbl
        .stss
        .as_ref()
        .map(|s| s.entries.iter().copied().collect());

    let mut samples = Vec::with_capacity(sizes.len());
    let mut dts = 0u64;
    for (i, (&size, &off)) in sizes.iter().zip(&offsets).enumerate() {
        let start = usize::try_from(off).map_err(|_| format!("sample {i} offset too large"))?;
        let end = start
            .checked_add(size as usize)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| format!("sample {i} ({size} bytes at {off}) is past the end of file"))?;
        let number = u32::try_from(i + 1).map_err(|_| "too many samples".to_string())?;
        samples.push(Sample {
            range: start..end,
            dts,
            cts_offset: cts.get(i).copied().unwrap_or(0),
            duration: durations[i],
            is_sync: sync.as_ref().is_none_or(|s| s.contains(&number)),
        });
        dts += u64::from(durations[i]);
    }
    Ok(samples)
}

/// Splits a length-prefixed sample (ISO/IEC 14496-15 §5.3.2) into NAL units.
pub(crate) fn split_nals<'a>(
    sample: &'a [u8],
    length_size: u8,
) -> impl Iterator<Item = Result<&'a [u8], String>> + 'a {
    let ls = usize::from(length_size);
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= sample.len() {
            return None;
        }
        if !(1..=4).contains(&ls) || pos + ls > sample.len() {
            pos = sample.len();
            return Some(Err(format!("truncated NAL length prefix at byte {pos}")));
        }
        let len = sample[pos..pos + ls]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let start = pos + ls;
        let end = start + len;
        if end > sample.len() || len == 0 {
            pos = sample.len();
            return Some(Err(format!("bad NAL length {len} at byte {start}")));
        }
        pos = end;
        Some(Ok(&sample[start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_nals_four_byte_prefix() {
        let s = [0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41];
        let nals: Vec<_> = split_nals(&s, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(nals, vec![&[0x65, 1][..], &[0x41][..]]);
        let bad = [0, 0, 0, 9, 0x65];
        assert!(split_nals(&bad, 4).next().unwrap().is_err());
    }

    #[test]
    fn reads_fixture_tracks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for (name, codec, w, h, n) in [
            ("h264-360p25-small.mp4", VideoCodec::H264, 640, 360, 150),
            ("h265-720p25.mp4", VideoCodec::H265, 1280, 720, 150),
        ] {
            let path = dir.join(name);
            let data = std::fs::read(&path).unwrap();
            let t = read_video_track(&path, &data).unwrap();
            assert_eq!((t.codec, t.width, t.height), (codec, w, h));
            assert_eq!(t.samples.len(), n);
            assert_eq!(t.samples.iter().filter(|s| s.is_sync).count(), n / 50);
            assert!(t.samples.iter().all(|s| s.duration * 25 == t.timescale));
            assert_eq!(t.params.vps.is_some(), codec == VideoCodec::H265);
        }
    }
}
