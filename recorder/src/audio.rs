//! A camera's first audio track: which codec it is, whether it is recorded, and turning retina's
//! audio frames into what the MP4 audio track stores (AAC as sent; G.711 decoded and stored as
//! lossless FLAC, which ffmpeg, VLC and Chromium all play, unlike G.711 in MP4).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use retina::codec::ParametersRef;

use crate::g711::{FlacFromG711, Law};

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
        let elapsed = f.timestamp().elapsed();
        let elapsed_90k = crate::session::to_90k(elapsed, self.clock_rate);
        let anchor = *self.anchor_90k.get_or_insert(now_90k - elapsed_90k);
        match &mut self.converter {
            Converter::Aac => self.ready.push_back(AudioFrame {
                time_90k: anchor + elapsed_90k,
                samples: f.frame_length().get(),
                data: Bytes::copy_from_slice(f.data()),
            }),
            Converter::Flac(enc) => {
                let rate = self.clock_rate;
                enc.push(elapsed, f.data(), |start, samples, data| {
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
