//! One RTSP session with retina: DESCRIBE → SETUP (the first H.264/H.265 video stream, and the
//! first audio stream if recorded) → PLAY (RFC 2326 sections 10.2, 10.4, 10.5), then frames
//! stamped with wall-clock time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use retina::client::{
    Demuxed, PlayOptions, SessionGroup, SessionOptions, SetupOptions, TeardownPolicy,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoFrame};
use tokio::time::Instant;

use crate::audio::{AudioChoice, AudioFrame, AudioTrack};
use crate::frame::{Codec, Frame, ParamsError, VideoParams};
use crate::interleave::{Interleave, Out};
use crate::reorder::{reorder_depth, DecodeTimes, DEFAULT_DEPTH};
use crate::spec::ChannelSpec;
use crate::timeline::{Placement, Timeline, TimelineConfig};

const TIMEBASE: i64 = 90_000;

/// Why a session could not start or ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// `url` never has credentials (see `ChannelSpec::sanitize`).
    #[error("{step} {url} got no response within {} s", after.as_secs_f64())]
    Timeout {
        step: &'static str,
        url: url::Url,
        after: Duration,
    },
    /// retina's error text describes the connection and packet; it is given the URL without
    /// credentials and the credentials separately, so no password can appear here.
    #[error("{step} {url} failed: {source}")]
    Rtsp {
        step: &'static str,
        url: url::Url,
        source: retina::Error,
    },
    #[error("no H.264 or H.265 video stream offered (streams: {found})")]
    NoVideoStream { found: String },
    /// The camera sends video, but in a codec this recorder does not store.
    #[error("unsupported video codec {codec}: only H.264 and H.265 are recorded (streams offered: {found})")]
    UnsupportedVideo { codec: String, found: String },
    #[error("{0}")]
    Params(#[from] ParamsError),
    #[error("no frames for {} s", .0.as_secs_f64())]
    Stalled(Duration),
    #[error("the server ended the stream")]
    Ended,
    /// A warm session held set up for `WARM_REFRESH` without PLAY: replaced by a fresh one.
    #[error("warm session refreshed")]
    WarmRefresh,
}

impl SessionError {
    /// Errors that retrying soon will not fix (credentials, path, codec): worth the longest
    /// backoff and the `error` state.
    pub(crate) fn is_config(&self) -> bool {
        match self {
            SessionError::NoVideoStream { .. } | SessionError::UnsupportedVideo { .. } => true,
            SessionError::Params(
                ParamsError::UnsupportedCodec(_) | ParamsError::Dimensions(..),
            ) => true,
            SessionError::Rtsp { source, .. } => {
                // RFC 2326 section 7.1.1: 401 Unauthorized, 403 Forbidden, 404 Not Found,
                // 415 Unsupported Media Type.
                matches!(source.status_code(), Some(401 | 403 | 404 | 415))
            }
            _ => false,
        }
    }
}

/// What the session produced next.
pub(crate) enum Event {
    /// A frame to deliver; the first of a session is always a key frame.
    Frame(Frame),
    /// An audio frame of the recorded audio track.
    Audio(AudioFrame),
    /// A frame discarded before the session's first key frame (or before parameters are known).
    Skipped { loss: u64 },
    /// RTP packets of the recorded audio stream were lost (its frame, if any, is queued).
    Lost { loss: u64 },
    /// RTP time and wall time disagreed by `error_90k`: the run ends here; the next `Frame`
    /// (a key frame, possibly the one that showed the jump) starts a new one.
    Reanchor { error_90k: i64, loss: u64 },
}

/// A playing session.
pub(crate) struct Session {
    demuxed: Demuxed,
    url: url::Url,
    stream_i: usize,
    stall_timeout: Duration,
    last_frame_at: Instant,
    params: Option<Arc<VideoParams>>,
    /// RTP time on the wall clock.
    timeline: Box<Timeline>,
    /// Decode times of the current run (None between runs).
    decode: Option<Box<DecodeTimes>>,
    /// The previous frame's RTP time as sent and as used (repeated timestamps are spread).
    last_rtp: Option<(i64, i64)>,
    /// A key frame that showed a time jump, to start the next run with.
    pending_key: Option<Box<VideoFrame>>,
    audio_choice: AudioChoice,
    audio: Option<Box<AudioTrack>>,
    /// Frames and audio waiting for the other stream to reach their time.
    held: Box<Interleave>,
    /// How the session or run ends, returned once the held frames are out.
    ending: Option<Ending>,
}

impl From<Out> for Event {
    fn from(out: Out) -> Event {
        match out {
            Out::Video(f) => Event::Frame(f),
            Out::Audio(a) => Event::Audio(a),
        }
    }
}

/// What [`Session::next_event`] returns after the held frames have been delivered.
enum Ending {
    /// The run ends (RTP and wall time disagreed); the session goes on.
    Reanchor(Event),
    /// The session ends.
    Error(SessionError),
}

async fn bounded<T>(
    step: &'static str,
    url: &url::Url,
    after: Duration,
    f: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(after, f).await {
        Err(_) => Err(SessionError::Timeout {
            step,
            url: url.clone(),
            after,
        }),
        Ok(Err(source)) => Err(SessionError::Rtsp {
            step,
            url: url.clone(),
            source,
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

impl Session {
    /// DESCRIBE, SETUP, PLAY; each request bounded by the spec's stall timeout.
    pub(crate) async fn open(
        spec: &ChannelSpec,
        group: Arc<SessionGroup>,
    ) -> Result<Session, SessionError> {
        let options = SessionOptions::default()
            .creds(spec.credentials.clone().map(Into::into))
            .user_agent(format!("understudy/{}", env!("CARGO_PKG_VERSION")))
            .session_group(group)
            .teardown(TeardownPolicy::Auto);
        let after = spec.stall_timeout;
        let mut described = bounded(
            "DESCRIBE",
            &spec.url,
            after,
            retina::client::Session::describe(spec.url.clone(), options),
        )
        .await?;

        let streams = described.streams();
        let stream_i = streams
            .iter()
            .position(|s| {
                s.media() == "video"
                    && (s.encoding_name().eq_ignore_ascii_case("h264")
                        || s.encoding_name().eq_ignore_ascii_case("h265"))
            })
            .ok_or_else(|| no_video_error(streams))?;

        setup_stream("SETUP", spec, &mut described, stream_i, after).await?;
        // Parameters are often known from the SDP's sprop-parameter-sets (RFC 6184 section
        // 8.1, RFC 7798 section 7.1); otherwise they come in-band before the first key frame.
        let (audio_choice, audio) = setup_audio(spec, &mut described, after).await;
        let params = match described.streams()[stream_i].parameters() {
            Some(ParametersRef::Video(p)) => Some(Arc::new(VideoParams::from_retina(p)?)),
            _ => None,
        };
        if let Some(gate) = &spec.play_gate {
            if !gate.wait().await {
                return Err(SessionError::WarmRefresh);
            }
        }
        let playing = bounded(
            "PLAY",
            &spec.url,
            after,
            described.play(PlayOptions::default()),
        )
        .await?;
        let demuxed = playing.demuxed().map_err(|source| SessionError::Rtsp {
            step: "PLAY",
            url: spec.url.clone(),
            source,
        })?;
        Ok(Session {
            demuxed,
            url: spec.url.clone(),
            stream_i,
            stall_timeout: spec.stall_timeout,
            last_frame_at: Instant::now(),
            params,
            timeline: Box::new(Timeline::new(TimelineConfig::default())),
            decode: None,
            last_rtp: None,
            pending_key: None,
            held: Box::new(Interleave::new(
                audio.as_ref().map(|a| a.params.sample_rate),
                Instant::now(),
            )),
            ending: None,
            audio_choice,
            audio,
        })
    }

    /// What this session does with the camera's audio, for status and logs.
    pub(crate) fn audio_status(&self) -> String {
        self.audio_choice
            .status(self.audio.as_ref().map(|a| &*a.params))
    }

    /// The next frame, or an error when the session ends (including a stall: no frame within the
    /// stall timeout; retina has no such timeout of its own). Video and audio come out in time
    /// order (see [`crate::interleave`]); frames held for that are delivered before the run or
    /// the session ends.
    pub(crate) async fn next_event(&mut self) -> Result<Event, SessionError> {
        loop {
            if self.ending.is_some() {
                if let Some(out) = self.held.pop_any() {
                    return Ok(out.into());
                }
                match self.ending.take() {
                    Some(Ending::Reanchor(e)) => {
                        self.held.new_run();
                        return Ok(e);
                    }
                    Some(Ending::Error(e)) => return Err(e),
                    None => {}
                }
            }
            if let Some(out) = self.held.pop_ready(Instant::now()) {
                return Ok(out.into());
            }
            match self.next_raw().await {
                // `last_frame_at`: when next_raw took this frame in (one clock read a frame).
                Ok(Some(Event::Frame(f))) => self.held.push_video(f, self.last_frame_at),
                Ok(Some(e @ Event::Reanchor { .. })) => self.ending = Some(Ending::Reanchor(e)),
                Ok(Some(e)) => return Ok(e),
                Ok(None) => {} // held audio arrived, or a held item is due
                Err(e) => self.ending = Some(Ending::Error(e)),
            }
        }
    }

    /// Everything held, in time order, when the session is dropped at shutdown.
    pub(crate) fn drain_held(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.held.pop_any()).map(Event::from).collect()
    }

    /// The next event from the camera, before interleaving; `None` when audio was taken in or
    /// the oldest held item is due.
    async fn next_raw(&mut self) -> Result<Option<Event>, SessionError> {
        if let Some(f) = self.pending_key.take() {
            return self.on_frame(*f).map(Some);
        }
        let stall = self.last_frame_at + self.stall_timeout;
        let deadline = self.held.deadline().map_or(stall, |d| d.min(stall));
        let item = match tokio::time::timeout_at(deadline, self.demuxed.next()).await {
            Err(_) if deadline < stall => return Ok(None),
            Err(_) => return Err(SessionError::Stalled(self.stall_timeout)),
            Ok(None) => return Err(SessionError::Ended),
            Ok(Some(Err(source))) => {
                return Err(SessionError::Rtsp {
                    step: "streaming",
                    url: self.url.clone(),
                    source,
                })
            }
            Ok(Some(Ok(item))) => item,
        };
        match item {
            CodecItem::VideoFrame(f) if f.stream_id() == self.stream_i => {
                self.last_frame_at = Instant::now();
                self.on_frame(f).map(Some)
            }
            // Audio never resets the stall timer: an audio-only stream is a stalled camera.
            CodecItem::AudioFrame(f) => {
                let Some(a) = self.audio.as_mut().filter(|a| a.stream_i == f.stream_id()) else {
                    return Ok(None);
                };
                a.push(&f, now_90k());
                let now = Instant::now();
                while let Some(frame) = a.pop() {
                    self.held.push_audio(frame, now);
                }
                let loss = u64::from(f.loss());
                Ok((loss > 0).then_some(Event::Lost { loss }))
            }
            // RTCP sender reports and anything else: not frames, so no stall reset.
            _ => Ok(None),
        }
    }

    fn on_frame(&mut self, f: VideoFrame) -> Result<Event, SessionError> {
        let loss = u64::from(f.loss());
        if f.has_new_parameters() || self.params.is_none() {
            if let Some(ParametersRef::Video(p)) =
                self.demuxed.streams()[self.stream_i].parameters()
            {
                let new = VideoParams::from_retina(p)?;
                if self.params.as_deref() != Some(&new) {
                    self.params = Some(Arc::new(new));
                }
            }
        }
        let Some(params) = self.params.clone() else {
            return Ok(Event::Skipped { loss });
        };
        let key = f.is_random_access_point()
            || (params.codec == Codec::H265 && crate::frame::h265_is_irap(f.data()));
        let ts = f.timestamp();
        let rtp_raw = to_90k(ts.elapsed(), ts.clock_rate().get());
        if !self.timeline.is_anchored() && !key {
            return Ok(Event::Skipped { loss });
        }
        let frame_90k = frame_duration_90k(&params);
        // A repeated timestamp (a camera bug; B-frames never repeat one) is spread by the
        // frame rate instead of piling frames onto one instant.
        let rtp = match self.last_rtp {
            Some((raw, used)) if raw == rtp_raw => used + frame_90k,
            _ => rtp_raw,
        };
        let decode = self.decode.get_or_insert_with(|| {
            Box::new(DecodeTimes::new(
                reorder_depth_of(&params).unwrap_or(DEFAULT_DEPTH),
                frame_90k,
            ))
        });
        let window = (decode.depth() as i64 + 1) * frame_90k;
        let pts = match self.timeline.place(rtp, now_90k(), window, decode.depth() > 0) {
            Placement::At(t) => t,
            Placement::Jump { error_90k } => {
                self.decode = None;
                self.last_rtp = None;
                // The new run's audio is placed from its own arrival, like the video's.
                if let Some(a) = self.audio.as_mut() {
                    a.reanchor();
                }
                if key {
                    self.pending_key = Some(Box::new(f));
                }
                return Ok(Event::Reanchor { error_90k, loss });
            }
        };
        self.last_rtp = Some((rtp_raw, rtp));
        let placed = decode.place(pts);
        let time_90k = placed.dts;
        let cts_offset = u32::try_from(placed.pts - placed.dts).unwrap_or(u32::MAX);
        Ok(Event::Frame(Frame {
            time_90k,
            cts_offset,
            key,
            data: bytes::Bytes::from(f.into_data()),
            params,
            loss,
            audio: self.audio.as_ref().map(|a| a.params.clone()),
        }))
    }
}

/// Why none of `streams` can be recorded: the first video stream's codec, if there is one.
fn no_video_error(streams: &[retina::client::Stream]) -> SessionError {
    let found = streams
        .iter()
        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
        .collect::<Vec<_>>()
        .join(", ");
    match streams.iter().find(|s| s.media() == "video") {
        Some(s) => SessionError::UnsupportedVideo {
            codec: video_codec_name(s.encoding_name()),
            found,
        },
        None => SessionError::NoVideoStream { found },
    }
}

/// A video RTP encoding name (RFC 4855 registry) as users know the codec.
fn video_codec_name(encoding: &str) -> String {
    let known = match encoding.to_ascii_lowercase().as_str() {
        "jpeg" => "MJPEG (Motion JPEG, RTP/JPEG)",
        "mp4v-es" => "MPEG-4 Part 2 (MP4V-ES)",
        "h263" | "h263-1998" | "h263-2000" => "H.263",
        "mp2t" => "MPEG-2 TS",
        "mpv" => "MPEG-1/2 video",
        "vp8" => "VP8",
        "vp9" => "VP9",
        "av1" => "AV1",
        "h266" => "H.266",
        _ => return encoding.to_owned(),
    };
    known.to_owned()
}

/// SETUP of stream `i` with the spec's transport, frames as MP4 wants them.
async fn setup_stream(
    step: &'static str,
    spec: &ChannelSpec,
    described: &mut retina::client::Session<retina::client::Described>,
    i: usize,
    after: Duration,
) -> Result<(), SessionError> {
    let options = SetupOptions::default()
        .transport(spec.transport.to_retina())
        .frame_format(FrameFormat::MP4);
    bounded(step, &spec.url, after, described.setup(i, options)).await
}

/// Chooses the camera's audio track and sets it up. Audio never fails the session: a track
/// that cannot be set up or recorded is reported in the status and skipped.
async fn setup_audio(
    spec: &ChannelSpec,
    described: &mut retina::client::Session<retina::client::Described>,
    after: Duration,
) -> (AudioChoice, Option<Box<AudioTrack>>) {
    let choice = AudioChoice::pick(described.streams(), spec.audio);
    let AudioChoice::Record { stream_i, kind } = choice else {
        return (choice, None);
    };
    let setup = setup_stream("SETUP (audio)", spec, described, stream_i, after).await;
    let stream = &described.streams()[stream_i];
    let name = stream.encoding_name().to_ascii_lowercase();
    let track = match setup {
        Ok(()) => AudioTrack::new(stream, stream_i, kind),
        Err(e) => Err(e.to_string()),
    };
    match track {
        Ok(t) => (choice, Some(Box::new(t))),
        Err(why) => (AudioChoice::Skipped(format!("{name} ({why})")), None),
    }
}

/// Converts a duration in `clock_rate` units to 90 kHz units.
pub(crate) fn to_90k(ticks: i64, clock_rate: u32) -> i64 {
    if clock_rate == 90_000 || clock_rate == 0 {
        return ticks;
    }
    let v = i128::from(ticks) * i128::from(TIMEBASE) / i128::from(clock_rate);
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn now_90k() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(d.as_nanos() * 90 / 1_000_000).unwrap_or(i64::MAX)
}

/// One frame's duration from the stream's declared frame rate, else 25 fps.
fn frame_duration_90k(p: &VideoParams) -> i64 {
    p.frame_90k.unwrap_or(3600)
}

/// The reorder depth the stream's SPS declares.
fn reorder_depth_of(p: &VideoParams) -> Option<usize> {
    reorder_depth(p.codec, p.sps.as_deref()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_conversions() {
        assert_eq!(to_90k(90_000, 90_000), 90_000);
        assert_eq!(to_90k(48_000, 48_000), 90_000);
        assert_eq!(to_90k(-8_000, 8_000), -90_000);
        let now = now_90k();
        // 2020-01-01 .. 2100-01-01
        assert!(
            now > 1_577_836_800 * 90_000 && now < 4_102_444_800 * 90_000,
            "{now}"
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            SessionError::Stalled(Duration::from_secs(10)).to_string(),
            "no frames for 10 s"
        );
        let e = SessionError::Timeout {
            step: "DESCRIBE",
            url: "rtsp://192.0.2.1/x".parse().unwrap(),
            after: Duration::from_millis(2500),
        };
        assert_eq!(
            e.to_string(),
            "DESCRIBE rtsp://192.0.2.1/x got no response within 2.5 s"
        );
        assert!(SessionError::NoVideoStream {
            found: "audio/pcma".into()
        }
        .is_config());
        assert!(!SessionError::Ended.is_config());
        let e = SessionError::UnsupportedVideo {
            codec: video_codec_name("JPEG"),
            found: "video/JPEG".into(),
        };
        assert!(e.is_config());
        assert_eq!(
            e.to_string(),
            "unsupported video codec MJPEG (Motion JPEG, RTP/JPEG): only H.264 and H.265 are recorded (streams offered: video/JPEG)"
        );
        assert_eq!(video_codec_name("MP4V-ES"), "MPEG-4 Part 2 (MP4V-ES)");
        assert_eq!(video_codec_name("x-weird"), "x-weird");
    }
}
