//! Interleaving a session's video frames and audio frames in time order before they leave the
//! session.
//!
//! Storage cuts segments at video key frames and puts each audio frame into the segment open
//! when it arrives. Audio reaches us later than the video of the same instant: a G.711 FLAC
//! block is only complete after 64 ms of samples, an AAC frame at 8 kHz covers 128 ms, and
//! cameras packetize audio in 20–40 ms RTP packets. Without reordering, the audio heard just
//! before a key frame lands in the next segment (where it is older than the segment's start and
//! dropped), so every segment's audio started and ended ~0.1–0.25 s before or after its video.
//! Here each stream waits, briefly, until the other has reached its time, like any muxer's
//! interleaving by timestamp (ffmpeg's `interleave_packet_per_dts`), with two bounds so a
//! camera whose audio stops never delays its video for long:
//! - an item is held at most [`MAX_HOLD`] after it arrived;
//! - once no audio has arrived for [`MAX_HOLD`], video does not wait for audio at all.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::audio::AudioFrame;
use crate::frame::Frame;

/// The longest an item waits for the other stream.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(500);

/// Video frames held beyond this many are released regardless (a burst after a network stall).
const MAX_HELD_VIDEO: usize = 256;

/// What leaves the interleaver.
pub(crate) enum Out {
    Video(Frame),
    Audio(AudioFrame),
}

/// The held frames of one session, in arrival order per stream.
pub(crate) struct Interleave {
    video: VecDeque<(Frame, Instant)>,
    audio: VecDeque<(AudioFrame, Instant)>,
    /// Whether the session records audio at all.
    has_audio: bool,
    /// Decode time of the newest video frame taken in (90 kHz wall clock).
    video_time: Option<i64>,
    /// End time of the newest audio frame taken in (90 kHz wall clock).
    audio_end: Option<i64>,
    /// Arrival of the newest audio frame (the session's start until the first one).
    audio_seen: Instant,
    /// 90 kHz ticks per audio sample count, as (numerator, denominator) = (90000, rate).
    audio_rate: u32,
}

impl Interleave {
    /// `audio_rate` is the audio track's sample rate, `None` when no audio is recorded.
    pub(crate) fn new(audio_rate: Option<u32>, now: Instant) -> Interleave {
        Interleave {
            video: VecDeque::new(),
            audio: VecDeque::new(),
            has_audio: audio_rate.is_some(),
            video_time: None,
            audio_end: None,
            audio_seen: now,
            audio_rate: audio_rate.unwrap_or(0).max(1),
        }
    }

    pub(crate) fn push_video(&mut self, f: Frame, now: Instant) {
        self.video_time = Some(f.time_90k);
        self.video.push_back((f, now));
    }

    pub(crate) fn push_audio(&mut self, a: AudioFrame, now: Instant) {
        let end = a.time_90k + i64::from(a.samples) * 90_000 / i64::from(self.audio_rate);
        self.audio_end = Some(self.audio_end.map_or(end, |e| e.max(end)));
        self.audio_seen = now;
        self.audio.push_back((a, now));
    }

    /// Whether audio is arriving: video waits for it only then.
    fn audio_live(&self, now: Instant) -> bool {
        self.has_audio && now.saturating_duration_since(self.audio_seen) < MAX_HOLD
    }

    /// The next item that need not wait any longer, in time order.
    pub(crate) fn pop_ready(&mut self, now: Instant) -> Option<Out> {
        let overdue = |at: Instant| now.saturating_duration_since(at) >= MAX_HOLD;
        match (self.video.front(), self.audio.front()) {
            (Some((v, _)), Some((a, _))) => {
                // The other stream has an item later than this one: nothing earlier can come.
                if a.time_90k < v.time_90k {
                    self.pop_audio()
                } else {
                    self.pop_video()
                }
            }
            (Some((v, at)), None) => {
                let covered = self.audio_end.is_some_and(|e| e >= v.time_90k);
                if covered
                    || !self.audio_live(now)
                    || overdue(*at)
                    || self.video.len() > MAX_HELD_VIDEO
                {
                    self.pop_video()
                } else {
                    None
                }
            }
            (None, Some((a, at))) => {
                let covered = self.video_time.is_some_and(|t| t >= a.time_90k);
                if covered || overdue(*at) {
                    self.pop_audio()
                } else {
                    None
                }
            }
            (None, None) => None,
        }
    }

    /// Everything held, in time order, without waiting (the run or the session ends).
    pub(crate) fn pop_any(&mut self) -> Option<Out> {
        match (self.video.front(), self.audio.front()) {
            (Some((v, _)), Some((a, _))) if a.time_90k < v.time_90k => self.pop_audio(),
            (Some(_), _) => self.pop_video(),
            (None, Some(_)) => self.pop_audio(),
            (None, None) => None,
        }
    }

    /// When the oldest held item must go even if the other stream has not caught up.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let v = self.video.front().map(|(_, at)| *at);
        let a = self.audio.front().map(|(_, at)| *at);
        let first = match (v, a) {
            (Some(v), Some(a)) => v.min(a),
            (x, y) => x.or(y)?,
        };
        // Video also stops waiting when audio goes quiet.
        let quiet = (self.has_audio && !self.video.is_empty()).then(|| self.audio_seen + MAX_HOLD);
        Some(quiet.map_or(first + MAX_HOLD, |q| q.min(first + MAX_HOLD)))
    }

    /// A new run starts (re-anchor): times of the old run must not hold the new one's frames.
    pub(crate) fn new_run(&mut self) {
        self.video_time = None;
        self.audio_end = None;
    }

    fn pop_video(&mut self) -> Option<Out> {
        self.video.pop_front().map(|(f, _)| Out::Video(f))
    }

    fn pop_audio(&mut self) -> Option<Out> {
        self.audio.pop_front().map(|(a, _)| Out::Audio(a))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn video(time_90k: i64) -> Frame {
        Frame::for_test(time_90k, false)
    }

    fn audio(time_90k: i64) -> AudioFrame {
        // 512 samples at 8 kHz: 64 ms = 5760 ticks.
        AudioFrame {
            time_90k,
            samples: 512,
            data: Bytes::new(),
        }
    }

    fn times(out: Vec<Out>) -> Vec<(char, i64)> {
        out.into_iter()
            .map(|o| match o {
                Out::Video(f) => ('v', f.time_90k),
                Out::Audio(a) => ('a', a.time_90k),
            })
            .collect()
    }

    fn drain(il: &mut Interleave, now: Instant) -> Vec<(char, i64)> {
        times(std::iter::from_fn(|| il.pop_ready(now)).collect())
    }

    #[test]
    fn video_waits_for_the_audio_of_its_time() {
        let t0 = Instant::now();
        let mut il = Interleave::new(Some(8000), t0);
        il.push_audio(audio(0), t0);
        // Video at 0, 3600, 7200 arrives before the audio block covering 5760..11520.
        for (i, t) in [0, 3600, 7200].into_iter().enumerate() {
            il.push_video(video(t), t0 + Duration::from_millis(40 * i as u64));
        }
        let now = t0 + Duration::from_millis(100);
        assert_eq!(drain(&mut il, now), [('v', 0), ('a', 0), ('v', 3600)]);
        il.push_audio(audio(5760), now);
        assert_eq!(drain(&mut il, now), [('a', 5760), ('v', 7200)]);
    }

    #[test]
    fn audio_waits_for_the_video_of_its_time() {
        let t0 = Instant::now();
        let mut il = Interleave::new(Some(8000), t0);
        il.push_video(video(0), t0);
        il.push_audio(audio(0), t0);
        il.push_audio(audio(5760), t0);
        // Video at 0 is covered by audio up to 11520; audio at 5760 waits for video ≥ 5760.
        assert_eq!(drain(&mut il, t0), [('v', 0), ('a', 0)]);
        il.push_video(video(3600), t0);
        assert_eq!(drain(&mut il, t0), [('v', 3600)]);
        il.push_video(video(7200), t0);
        assert_eq!(drain(&mut il, t0), [('a', 5760), ('v', 7200)]);
    }

    #[test]
    fn quiet_audio_never_holds_video_long() {
        let t0 = Instant::now();
        let mut il = Interleave::new(Some(8000), t0);
        il.push_video(video(0), t0);
        assert_eq!(drain(&mut il, t0), []);
        assert_eq!(il.deadline(), Some(t0 + MAX_HOLD));
        assert_eq!(drain(&mut il, t0 + MAX_HOLD), [('v', 0)]);
        // Audio still quiet: later video goes at once.
        let later = t0 + MAX_HOLD + Duration::from_millis(40);
        il.push_video(video(3600), later);
        assert_eq!(drain(&mut il, later), [('v', 3600)]);
        // Without an audio track nothing waits.
        let mut il = Interleave::new(None, t0);
        il.push_video(video(0), t0);
        assert_eq!(drain(&mut il, t0), [('v', 0)]);
    }

    #[test]
    fn pop_any_empties_in_time_order() {
        let t0 = Instant::now();
        let mut il = Interleave::new(Some(8000), t0);
        il.push_video(video(0), t0);
        il.push_video(video(7200), t0);
        il.push_audio(audio(3000), t0);
        let all = times(std::iter::from_fn(|| il.pop_any()).collect());
        assert_eq!(all, [('v', 0), ('a', 3000), ('v', 7200)]);
    }
}
