//! A camera's first audio track: which codec it is, whether it is recorded, and turning retina's
//! audio frames into what the MP4 audio track stores (AAC as sent; G.711 decoded and stored as
//! lossless FLAC, which ffmpeg, VLC and Chromium all play, unlike G.711 in MP4).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use retina::codec::ParametersRef;

use crate::g711::{FlacFromG711, Law};
use crate::timeline::TimelineConfig;

/// What the MP4 audio track holds.
#[derive(Clone, PartialEq, Eq)]
pub struct AudioParams {
    /// Codec stored: `aac` or `flac`.
    pub codec: &'static str,
    /// What the camera sends (RTP encoding name, lower case), e.g. `mpeg4-generic`, `pcmu`.
    pub source: String,
    /// Samples per second (the audio track's timescale).
    pub sample_rate: u32,
    /// The whole `AudioSampleEntry` box (`mp4a` or `fLaC`), ready for `stsd`.
    pub sample_entry: Bytes,
}

impl fmt::Debug for AudioParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioParams")
            .field("codec", &self.codec)
            .field("source", &self.source)
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

impl AudioParams {
    /// For status: `aac`, or `flac (from pcmu)`.
    pub fn describe(&self) -> String {
        if self.codec == "aac" {
            self.codec.to_owned()
        } else {
            format!("{} (from {})", self.codec, self.source)
        }
    }
}

/// One audio frame to record.
#[derive(Clone, Debug)]
pub struct AudioFrame {
    /// Wall-clock time of its first sample, 90 kHz units since the Unix epoch.
    pub time_90k: i64,
    /// Duration in samples at `AudioParams::sample_rate`.
    pub samples: u32,
    pub data: Bytes,
}

/// What a session does with the camera's audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AudioChoice {
    /// The camera offers no audio.
    None,
    /// `audio = false` for this camera.
    Disabled,
    /// Audio in a codec this recorder does not store (RTP encoding name).
    Skipped(String),
    /// Record stream `i`.
    Record { stream_i: usize, kind: Kind },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Aac,
    G711(Law),
}

impl AudioChoice {
    /// Picks the first audio stream of `streams`.
    pub(crate) fn pick(streams: &[retina::client::Stream], enabled: bool) -> AudioChoice {
        let Some((stream_i, s)) = streams.iter().enumerate().find(|(_, s)| s.media() == "audio")
        else {
            return AudioChoice::None;
        };
        if !enabled {
            return AudioChoice::Disabled;
        }
        let name = s.encoding_name().to_ascii_lowercase();
        let kind = match name.as_str() {
            "mpeg4-generic" => Kind::Aac,
            "pcmu" => Kind::G711(Law::Mu),
            "pcma" => Kind::G711(Law::A),
            _ => return AudioChoice::Skipped(name),
        };
        AudioChoice::Record { stream_i, kind }
    }

    /// For status and logs.
    pub(crate) fn status(&self, params: Option<&AudioParams>) -> String {
        match (self, params) {
            (AudioChoice::None, _) => "none".to_owned(),
            (AudioChoice::Disabled, _) => "off (audio = false)".to_owned(),
            (AudioChoice::Skipped(name), _) => format!("skipped: {name} is not recorded"),
            (AudioChoice::Record { .. }, Some(p)) => p.describe(),
            (AudioChoice::Record { .. }, None) => "unusable".to_owned(),
        }
    }
}

enum Converter {
    Aac,
    Flac(Box<FlacFromG711>),
}

/// The recorded audio stream of a playing session.
pub(crate) struct AudioTrack {
    pub stream_i: usize,
    pub params: Arc<AudioParams>,
    converter: Converter,
    clock_rate: u32,
    /// Wall-clock time (90 kHz since the epoch) at this stream's RTP elapsed time 0; set at its
    /// first frame, from its arrival time, like the video's.
    anchor_90k: Option<i64>,
    ready: VecDeque<AudioFrame>,
}

impl AudioTrack {
    /// The track for a stream that was set up, or why it cannot be recorded.
    pub(crate) fn new(
        stream: &retina::client::Stream,
        stream_i: usize,
        kind: Kind,
    ) -> Result<AudioTrack, String> {
        let source = stream.encoding_name().to_ascii_lowercase();
        let clock_rate = stream.clock_rate_hz();
        let (params, converter) = match kind {
            Kind::Aac => {
                let Some(ParametersRef::Audio(p)) = stream.parameters() else {
                    return Err("AAC stream without a usable config in the SDP".to_owned());
                };
                let entry = p
                    .mp4_sample_entry()
                    .build()
                    .map_err(|e| format!("AAC sample entry: {e}"))?;
                let params = AudioParams {
                    codec: "aac",
                    source,
                    sample_rate: p.clock_rate(),
                    sample_entry: Bytes::from(entry),
                };
                (params, Converter::Aac)
            }
            Kind::G711(law) => {
                let channels = stream.channels().map_or(1, |c| c.get());
                if channels != 1 {
                    return Err(format!("G.711 with {channels} channels"));
                }
                let flac = FlacFromG711::new(law, clock_rate)?;
                let params = AudioParams {
                    codec: "flac",
                    source,
                    sample_rate: clock_rate,
                    sample_entry: flac.sample_entry(),
                };
                (params, Converter::Flac(Box::new(flac)))
            }
        };
        if params.sample_rate == 0 || params.sample_rate > u32::from(u16::MAX) {
            return Err(format!("sample rate {} Hz", params.sample_rate));
        }
        Ok(AudioTrack {
            stream_i,
            params: Arc::new(params),
            converter,
            clock_rate,
            anchor_90k: None,
            ready: VecDeque::new(),
        })
    }

    /// Takes one of retina's frames of this stream; `now_90k` is its arrival time.
    pub(crate) fn push(&mut self, f: &retina::codec::AudioFrame, now_90k: i64) {
        self.push_parts(f.timestamp().elapsed(), f.frame_length().get(), f.data(), now_90k);
    }

    /// The next frame starts a new anchor (the video's run was re-anchored to wall time, so the
    /// audio of the new run is placed by its own arrival, in sync with the new run's video).
    pub(crate) fn reanchor(&mut self) {
        self.anchor_90k = None;
    }

    /// A frame whose first sample is at RTP `elapsed` (this stream's clock), `samples` long,
    /// arriving at `now_90k` (so its last sample was heard just before). Anchored at the first frame (and after [`Self::reanchor`]); a
    /// frame the anchor would place more than the timeline's re-anchor threshold away from its
    /// arrival (RTP time jumped, or drifted too far) anchors anew, so audio is never stamped
    /// far from when it was heard.
    fn push_parts(&mut self, elapsed: i64, samples: u32, data: &[u8], now_90k: i64) {
        let elapsed_90k = crate::session::to_90k(elapsed, self.clock_rate);
        let limit = TimelineConfig::default().reanchor_after_90k;
        let anchor = match self.anchor_90k {
            Some(a) if (a + elapsed_90k - now_90k).abs() <= limit => a,
            old => {
                // The G.711 block being filled belongs to the old anchor: finish it there.
                if let (Some(old), Converter::Flac(enc)) = (old, &mut self.converter) {
                    let (ready, rate) = (&mut self.ready, self.clock_rate);
                    enc.finish_block(|start, samples, data| {
                        ready.push_back(AudioFrame {
                            time_90k: old + crate::session::to_90k(start, rate),
                            samples,
                            data,
                        })
                    });
                }
                // A packet leaves the camera only once its last sample is captured: its first
                // sample was heard `samples` before it arrived (128 ms for GStreamer's default
                // 1024-sample G.711 packets, which otherwise put the sound that late).
                now_90k - elapsed_90k - crate::session::to_90k(i64::from(samples), self.clock_rate)
            }
        };
        self.anchor_90k = Some(anchor);
        match &mut self.converter {
            Converter::Aac => self.ready.push_back(AudioFrame {
                time_90k: anchor + elapsed_90k,
                samples,
                data: Bytes::copy_from_slice(data),
            }),
            Converter::Flac(enc) => {
                let rate = self.clock_rate;
                enc.push(elapsed, data, |start, samples, data| {
                    self.ready.push_back(AudioFrame {
                        time_90k: anchor + crate::session::to_90k(start, rate),
                        samples,
                        data,
                    })
                });
            }
        }
    }

    /// The next frame ready to record, if any.
    pub(crate) fn pop(&mut self) -> Option<AudioFrame> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(converter: Converter, clock_rate: u32) -> AudioTrack {
        AudioTrack {
            stream_i: 1,
            params: Arc::new(AudioParams {
                codec: "aac",
                source: "test".into(),
                sample_rate: clock_rate,
                sample_entry: Bytes::new(),
            }),
            converter,
            clock_rate,
            anchor_90k: None,
            ready: VecDeque::new(),
        }
    }

    fn drain(t: &mut AudioTrack) -> Vec<i64> {
        std::iter::from_fn(|| t.pop()).map(|f| f.time_90k).collect()
    }

    const NOW: i64 = 1_800_000_000 * 90_000;

    #[test]
    fn rtp_jumps_and_video_reanchors_move_the_anchor() {
        // AAC at 16 kHz, 1024-sample frames (64 ms = 5760 ticks at 90 kHz).
        let mut t = track(Converter::Aac, 16_000);
        t.push_parts(0, 1024, b"a", NOW + 5760);
        t.push_parts(1024, 1024, b"b", NOW + 5760 + 5760 + 100); // jitter: same anchor
        assert_eq!(drain(&mut t), [NOW, NOW + 5760]);
        // RTP time jumps back 3.5 s (a server re-base): anchored anew by arrival.
        t.push_parts(2048 - 56_000, 1024, b"c", NOW + 5760 + 2 * 5760);
        t.push_parts(3072 - 56_000, 1024, b"d", NOW + 5760 + 3 * 5760);
        assert_eq!(drain(&mut t), [NOW + 2 * 5760, NOW + 3 * 5760]);
        // Forward 10 s.
        t.push_parts(4096 + 160_000, 1024, b"e", NOW + 5760 + 4 * 5760);
        assert_eq!(drain(&mut t), [NOW + 4 * 5760]);
        // Within the threshold RTP time rules; after the video re-anchors, arrival does.
        t.push_parts(5120 + 160_000, 1024, b"f", NOW + 5760 + 5 * 5760 + 45_000);
        assert_eq!(drain(&mut t), [NOW + 5 * 5760]);
        t.reanchor();
        t.push_parts(6144 + 160_000, 1024, b"g", NOW + 5760 + 6 * 5760 + 45_000);
        assert_eq!(drain(&mut t), [NOW + 6 * 5760 + 45_000]);
    }

    #[test]
    fn g711_block_in_progress_ends_at_the_old_anchor() {
        let flac = FlacFromG711::new(Law::Mu, 8000).unwrap();
        let mut t = track(Converter::Flac(Box::new(flac)), 8000);
        // 160-sample packets (20 ms = 1800 ticks): four make one 512-sample block plus 128.
        for i in 0..4 {
            t.push_parts(i * 160, 160, &[0xff; 160], NOW + 1800 + i * 1800);
        }
        assert_eq!(drain(&mut t), [NOW]);
        // A jump back by 5 s: the partial block (from sample 512) closes on the old anchor,
        // the new one starts where the jumped packet's samples began (its arrival less 20 ms).
        for i in 4..8 {
            t.push_parts(i * 160 - 40_000, 160, &[0xff; 160], NOW + 1800 + i * 1800);
        }
        assert_eq!(drain(&mut t), [NOW + 512 * 90_000 / 8000, NOW + 4 * 1800]);
    }
}
