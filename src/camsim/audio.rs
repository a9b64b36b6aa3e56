//! A camera's audio: an audio track loaded once and pre-packetized into RTP payloads (AAC as
//! RFC 3640 `mpeg4-generic` AAC-hbr, one access unit per packet; G.711 µ-law as RFC 3551 PCMU,
//! 20 ms per packet), its SDP media section, and one session's audio RTP stream, looped with
//! continuous timestamps and paced on the same session clock as the video.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::error::CamSimError;
use super::mp4::{self, AudioCodec};
use super::sender::{header, RtpStream, HEADER_LEN};

/// Dynamic RTP payload type of AAC; PCMU has the static type 0 (RFC 3551 Table 4).
const AAC_PAYLOAD_TYPE: u8 = 97;
const PCMU_PAYLOAD_TYPE: u8 = 0;
/// Control URL of the audio track, relative to the Content-Base.
pub(crate) const AUDIO_CONTROL: &str = "trackID=1";
/// G.711 samples per packet: 20 ms at 8 kHz, the usual camera packet time (RFC 3551 §4.5).
const PCMU_PACKET_SAMPLES: usize = 160;
/// AU-size is 13 bits in AAC-hbr (RFC 3640 §3.3.6).
const MAX_AAC_AU: usize = (1 << 13) - 1;

/// One RTP packet of an audio clip.
#[derive(Clone, Debug)]
pub(crate) struct AudioPacket {
    pub payload: Bytes,
    /// Samples it covers (its duration at the clip's sample rate).
    pub samples: u32,
}

/// A pre-packetized audio track.
#[derive(Debug)]
pub(crate) struct AudioClip {
    pub codec: AudioCodec,
    pub sample_rate: u32,
    pub channels: u16,
    pub packets: Vec<AudioPacket>,
}

impl AudioClip {
    /// Reads the first audio track of `path` (MP4 or QuickTime) and packetizes it; `None` if
    /// the file has no audio track. CPU-bound: call from a blocking thread.
    pub(crate) fn load(path: &Path) -> Result<Option<AudioClip>, CamSimError> {
        let data = std::fs::read(path).map_err(|e| CamSimError::clip(path, e.to_string()))?;
        let Some(track) = mp4::read_audio_track(path, &data)? else {
            return Ok(None);
        };
        let packets = match &track.codec {
            AudioCodec::Aac { config } => {
                // Every AAC access unit decodes to one frame of 1024 samples (960 with the
                // GASpecificConfig frameLengthFlag, ISO/IEC 14496-3 §4.4.1), whatever the
                // muxer wrote for the last one: RTP timestamps advance by that.
                let frame = if config.get(1).is_some_and(|b| b & 0x04 != 0) { 960 } else { 1024 };
                let mut out = Vec::with_capacity(track.samples.len());
                for (i, s) in track.samples.iter().enumerate() {
                    let au = &data[s.range.clone()];
                    if au.is_empty() || au.len() > MAX_AAC_AU {
                        return Err(CamSimError::clip(
                            path,
                            format!("AAC frame {i} is {} bytes (1..=8191)", au.len()),
                        ));
                    }
                    out.push(AudioPacket {
                        payload: aac_hbr_payload(au),
                        samples: frame,
                    });
                }
                out
            }
            AudioCodec::Pcmu => {
                // One byte per sample; samples are consecutive within chunks.
                let mut bytes = Vec::with_capacity(track.samples.len());
                for s in &track.samples {
                    bytes.extend_from_slice(&data[s.range.clone()]);
                }
                let whole = Bytes::from(bytes);
                (0..whole.len())
                    .step_by(PCMU_PACKET_SAMPLES)
                    .map(|at| {
                        let end = (at + PCMU_PACKET_SAMPLES).min(whole.len());
                        AudioPacket {
                            payload: whole.slice(at..end),
                            samples: (end - at) as u32,
                        }
                    })
                    .collect()
            }
        };
        let clip = AudioClip {
            codec: track.codec,
            sample_rate: track.sample_rate,
            channels: track.channels.max(1),
            packets,
        };
        if clip.duration_samples() == 0 {
            return Err(CamSimError::clip(path, "audio track has zero duration"));
        }
        Ok(Some(clip))
    }

    /// Length of one loop, in samples.
    pub(crate) fn duration_samples(&self) -> u64 {
        self.packets.iter().map(|p| u64::from(p.samples)).sum()
    }

    /// Name for logs: `aac` or `pcmu`.
    pub(crate) fn codec_name(&self) -> &'static str {
        match self.codec {
            AudioCodec::Aac { .. } => "aac",
            AudioCodec::Pcmu => "pcmu",
        }
    }

    fn payload_type(&self) -> u8 {
        match self.codec {
            AudioCodec::Aac { .. } => AAC_PAYLOAD_TYPE,
            AudioCodec::Pcmu => PCMU_PAYLOAD_TYPE,
        }
    }

    /// The SDP media section (RFC 4566 §5.14) of this audio, ending in CRLF.
    pub(crate) fn sdp_media(&self) -> String {
        let pt = self.payload_type();
        let (rate, ch) = (self.sample_rate, self.channels);
        let format = match &self.codec {
            // RFC 3640 §4.1 and §3.3.6: AAC-hbr, 13-bit sizes, 3-bit indexes.
            AudioCodec::Aac { config } => format!(
                "a=rtpmap:{pt} mpeg4-generic/{rate}/{ch}\r\n\
                 a=fmtp:{pt} streamtype=5;profile-level-id=15;mode=AAC-hbr;config={};\
                 sizelength=13;indexlength=3;indexdeltalength=3\r\n",
                hex(config)
            ),
            AudioCodec::Pcmu => format!("a=rtpmap:{pt} PCMU/{rate}\r\n"),
        };
        format!(
            "m=audio 0 RTP/AVP {pt}\r\n\
             c=IN IP4 0.0.0.0\r\n\
             {format}\
             a=control:{AUDIO_CONTROL}\r\n"
        )
    }
}

/// One AU-header section with one 16-bit header (13-bit size, 3-bit index 0), then the AU
/// (RFC 3640 §3.2.1, §3.3.6).
fn aac_hbr_payload(au: &[u8]) -> Bytes {
    let size = au.len() as u16; // at most MAX_AAC_AU: fits 13 bits
    let mut p = Vec::with_capacity(4 + au.len());
    p.extend_from_slice(&16u16.to_be_bytes()); // AU-headers-length in bits
    p.extend_from_slice(&(size << 3).to_be_bytes());
    p.extend_from_slice(au);
    Bytes::from(p)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// State of one session's outgoing audio RTP stream over TCP interleaved.
#[derive(Debug)]
pub(crate) struct AudioSender {
    clip: Arc<AudioClip>,
    /// Started on the session clock shared with the video (see [`AudioSender::start`]).
    stream: RtpStream,
    /// Samples sent since the session start.
    elapsed: u64,
    idx: usize,
    buf: Vec<u8>,
}

impl AudioSender {
    pub(crate) fn new(clip: Arc<AudioClip>, channel: u8, clock_ppm: i32) -> Self {
        let stream = RtpStream::new(channel, clip.sample_rate, clock_ppm);
        AudioSender {
            clip,
            stream,
            elapsed: 0,
            idx: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    pub(crate) fn ssrc(&self) -> u32 {
        self.stream.ssrc
    }

    pub(crate) fn next_seq(&self) -> u16 {
        self.stream.seq
    }

    /// RTP timestamp of the next packet (for RTP-Info).
    pub(crate) fn next_rtptime(&self) -> u32 {
        self.stream.timestamp(self.elapsed, 0)
    }

    pub(crate) fn start(&mut self, now: Instant) {
        self.stream.start = now;
    }

    /// When the next packet is due under realtime pacing.
    pub(crate) fn next_deadline(&self) -> Instant {
        self.stream.deadline(self.elapsed)
    }

    /// Moves RTP time by `by` (a clock jump, for faults).
    pub(crate) fn jump_rtp(&mut self, by: Duration, forward: bool) {
        self.stream.jump(by, forward);
    }

    /// Writes the next packet (marker set: each is a whole access unit, RFC 3640 §3.2.1;
    /// for G.711 the marker only marks talkspurts, RFC 3551 §4.1, and is left clear). Returns
    /// the bytes written.
    pub(crate) async fn send_packet<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<usize> {
        let clip = Arc::clone(&self.clip);
        let p = &clip.packets[self.idx];
        let marker = matches!(clip.codec, AudioCodec::Aac { .. });
        let ts = self.next_rtptime();
        let st = &self.stream;
        let h = header(
            st.channel,
            clip.payload_type(),
            marker,
            st.seq,
            ts,
            st.ssrc,
            p.payload.len(),
        );
        self.buf.clear();
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(&p.payload);
        w.write_all(&self.buf).await?;
        self.stream.seq = self.stream.seq.wrapping_add(1);
        self.elapsed += u64::from(p.samples);
        self.idx = (self.idx + 1) % clip.packets.len();
        Ok(HEADER_LEN + p.payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
    }

    #[test]
    fn loads_aac_and_pcmu() {
        let aac = AudioClip::load(&fixture("audio-aac-16k.mp4")).unwrap().unwrap();
        assert_eq!((aac.sample_rate, aac.channels), (16_000, 1));
        assert!(aac.packets.iter().all(|p| p.samples == 1024));
        let AudioCodec::Aac { config } = &aac.codec else {
            panic!("not AAC")
        };
        // AAC-LC (2), 16 kHz (index 8), mono: 00010 1000 0001 000.
        assert_eq!(config[..2], [0x14, 0x08]);
        let p = &aac.packets[1].payload;
        assert_eq!(&p[..2], &[0, 16]);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]]) >> 3), p.len() - 4);
        let sdp = aac.sdp_media();
        assert!(sdp.contains("a=rtpmap:97 mpeg4-generic/16000/1\r\n"), "{sdp}");
        assert!(sdp.contains("mode=AAC-hbr;config=1408"), "{sdp}");
        assert!(sdp.contains(";sizelength=13;indexlength=3;indexdeltalength=3\r\n"), "{sdp}");

        let pcmu = AudioClip::load(&fixture("audio-pcmu-8k.mov")).unwrap().unwrap();
        assert_eq!(pcmu.codec, AudioCodec::Pcmu);
        assert_eq!(pcmu.duration_samples(), 4 * 8000);
        assert!(pcmu.packets.iter().all(|p| p.samples == 160 && p.payload.len() == 160));
        assert!(pcmu.sdp_media().contains("m=audio 0 RTP/AVP 0\r\n"));

        assert!(AudioClip::load(&fixture("h264-360p25-small.mp4")).unwrap().is_none());
    }

    #[tokio::test]
    async fn packets_loop_with_continuous_timestamps() {
        let clip = Arc::new(AudioClip::load(&fixture("audio-pcmu-8k.mov")).unwrap().unwrap());
        let n = clip.packets.len();
        let mut s = AudioSender::new(clip, 2, 0);
        let ts0 = s.next_rtptime();
        let mut out = Vec::new();
        for _ in 0..n + 3 {
            s.send_packet(&mut out).await.unwrap();
        }
        let mut ts = Vec::new();
        let mut b = &out[..];
        while !b.is_empty() {
            assert_eq!((b[0], b[1]), (b'$', 2));
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            assert_eq!(b[5] & 0x7F, 0, "PCMU payload type");
            ts.push(u32::from_be_bytes([b[8], b[9], b[10], b[11]]));
            b = &b[4 + len..];
        }
        assert_eq!(ts.len(), n + 3);
        for (i, t) in ts.iter().enumerate() {
            assert_eq!(t.wrapping_sub(ts0), 160 * i as u32);
        }
        assert_eq!(s.next_deadline() - s.stream.start, Duration::from_millis(20 * (n as u64 + 3)));
    }
}
