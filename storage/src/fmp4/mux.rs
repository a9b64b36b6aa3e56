//! Turning a stream of timed frames into ready-to-write fragments: holds one frame back until
//! its duration is known, and cuts before every key frame and at least every `max_fragment_90k`.

use bytes::Bytes;
use tracing::{error, warn};

use super::audio::{append_audio_traf, AudioMeta, AudioRun};
use super::write::encode_fragment;
use super::SampleMeta;

/// Default longest fragment: 1 s at 90 kHz.
pub const DEFAULT_MAX_FRAGMENT_90K: u64 = 90_000;
/// Duration given to a lone frame whose successor never came: 40 ms (25 fps).
pub const DEFAULT_FRAME_DURATION_90K: u32 = 3600;
/// Cut once this much sample data is pending, whatever the time: keeps `mdat` far below 4 GiB.
const MAX_FRAGMENT_BYTES: u64 = 256 << 20;

/// A complete fragment ready to append to a file: `header`, then each of `data` in order.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// `moof` + `mdat` header.
    pub header: Vec<u8>,
    /// The samples' data, in order (write with vectored IO): the video's, then the audio's.
    pub data: Vec<Bytes>,
    /// The video samples.
    pub samples: Vec<SampleMeta>,
    /// `mfhd` sequence number.
    pub sequence: u32,
    /// `tfdt`, 90 kHz units from the stream's time 0.
    pub base_time: u64,
    /// Sum of the sample durations.
    pub duration: u64,
    pub starts_with_key: bool,
}

impl Fragment {
    /// Bytes this fragment occupies in the file.
    pub fn len(&self) -> u64 {
        self.header.len() as u64 + self.data.iter().map(|d| d.len() as u64).sum::<u64>()
    }

    /// Never true for a fragment the muxer emits (each holds at least one sample).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The frame waiting for its successor.
#[derive(Debug)]
struct Held {
    /// Effective decode time (after clamping), 90 kHz.
    time: u64,
    /// Presentation time as given (decode time plus composition offset), 90 kHz.
    pts: i64,
    key: bool,
    data: Bytes,
}

/// Samples accumulated for the next fragment.
#[derive(Debug, Default)]
struct Pending {
    base_time: u64,
    samples: Vec<SampleMeta>,
    data: Vec<Bytes>,
    duration: u64,
    bytes: u64,
}

/// Builds fragments from frames; see the module docs.
#[derive(Debug)]
pub struct FragmentMuxer {
    max_fragment_90k: u64,
    next_sequence: u32,
    held: Option<Held>,
    pending: Pending,
    /// End of the last finished sample: no later frame may start before it.
    finished_until: Option<u64>,
    last_duration: Option<u32>,
    audio: PendingAudio,
}

/// Audio samples waiting for the next fragment (audio has its own durations: no holding back).
#[derive(Debug, Default)]
struct PendingAudio {
    run: AudioRun,
    data: Vec<Bytes>,
    /// End of the last audio sample taken, in the audio timescale.
    end: Option<u64>,
}

impl Default for FragmentMuxer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAGMENT_90K)
    }
}

impl FragmentMuxer {
    /// A muxer whose fragments are cut once they hold `max_fragment_90k` of media (at least 1).
    pub fn new(max_fragment_90k: u64) -> Self {
        FragmentMuxer {
            max_fragment_90k: max_fragment_90k.max(1),
            next_sequence: 1,
            held: None,
            pending: Pending::default(),
            finished_until: None,
            last_duration: None,
            audio: PendingAudio::default(),
        }
    }

    /// Adds a frame at `time` (90 kHz, relative to the stream's time 0). Returns the fragment
    /// completed by this frame, if it triggered a cut (before a key frame, or once the pending
    /// media reaches `max_fragment_90k`). The frame itself is held until the next push or flush.
    pub fn push(&mut self, time: i64, key: bool, data: Bytes) -> Option<Fragment> {
        self.push_sample(time, 0, key, data)
    }

    /// As [`FragmentMuxer::push`], for a frame presented `cts_offset` after its decode `time`
    /// (reordered streams). If clamping moves the decode time forward, the offset shrinks so the
    /// presentation time stays put (but never below the decode time).
    pub fn push_sample(
        &mut self,
        time: i64,
        cts_offset: u32,
        key: bool,
        data: Bytes,
    ) -> Option<Fragment> {
        if u32::try_from(data.len()).is_err() {
            error!(time, bytes = data.len(), "dropping frame larger than 4 GiB");
            return None;
        }
        let given = time;
        let time = match self.held.take() {
            Some(held) => {
                let delta = time.saturating_sub(held.time.try_into().unwrap_or(i64::MAX));
                let duration = clamp_duration(delta, time);
                self.finish(held, duration);
                self.finished_until.unwrap_or(0)
            }
            None => self.start_time(time),
        };
        let cut = if !self.pending.samples.is_empty()
            && (key
                || self.pending.duration >= self.max_fragment_90k
                || self.pending.bytes + data.len() as u64 > MAX_FRAGMENT_BYTES)
        {
            self.cut()
        } else {
            None
        };
        let pts = time_pts(given, cts_offset).max(i64::try_from(time).unwrap_or(i64::MAX));
        self.held = Some(Held {
            time,
            pts,
            key,
            data,
        });
        cut
    }

    /// Adds an audio sample starting at `time` (the audio track's timescale, relative to the
    /// stream's time 0) lasting `duration`. It goes into the next fragment cut, after the video.
    /// Samples before time 0 are dropped; one that overlaps the previous sample starts at its
    /// end; a gap after a pending sample is absorbed by lengthening that sample, so the audio
    /// timeline stays continuous and in sync with the video.
    pub fn push_audio(&mut self, time: i64, duration: u32, data: Bytes) {
        let Ok(time) = u64::try_from(time) else {
            return;
        };
        if duration == 0 || u32::try_from(data.len()).is_err() {
            return;
        }
        let a = &mut self.audio;
        let time = a.end.map_or(time, |end| time.max(end));
        if let (Some(end), Some(last)) = (a.end, a.run.samples.last_mut()) {
            let gap = time - end;
            match u32::try_from(u64::from(last.duration) + gap) {
                Ok(d) => last.duration = d,
                Err(_) => return,
            }
        } else if a.run.samples.is_empty() {
            a.run.base_time = time;
        }
        a.run.samples.push(AudioMeta {
            duration,
            size: data.len() as u32,
        });
        a.data.push(data);
        a.end = Some(time + u64::from(duration));
    }

    /// Cuts now: the held frame gets the previous frame's duration (or 40 ms if none).
    pub fn flush(&mut self) -> Option<Fragment> {
        let duration = self.last_duration.unwrap_or(DEFAULT_FRAME_DURATION_90K);
        self.flush_with_duration(duration)
    }

    /// Cuts now, giving the held frame `duration` (at least 1).
    pub fn flush_with_duration(&mut self, duration: u32) -> Option<Fragment> {
        if let Some(held) = self.held.take() {
            self.finish(held, duration.max(1));
        }
        self.cut()
    }

    /// Media time covered by the fragments emitted and pending so far (end of the last
    /// finished sample); `None` before the first sample is finished.
    pub fn finished_until(&self) -> Option<u64> {
        self.finished_until
    }

    /// True if a frame is held or samples are pending.
    pub fn has_pending(&self) -> bool {
        self.held.is_some() || !self.pending.samples.is_empty()
    }

    /// Effective time of a frame that follows no held frame: not before what is already
    /// finished, and not negative.
    fn start_time(&self, time: i64) -> u64 {
        let floor = self.finished_until.unwrap_or(0);
        match u64::try_from(time) {
            Ok(t) if t >= floor => t,
            _ => {
                warn!(
                    time,
                    floor, "frame time before the end of the previous frame; moved forward"
                );
                floor
            }
        }
    }

    fn finish(&mut self, held: Held, duration: u32) {
        let p = &mut self.pending;
        if p.samples.is_empty() {
            p.base_time = held.time;
        }
        // Non-negative (`pts` is at least `time`); offsets past i32 are absurd and clamped.
        let cts = held
            .pts
            .saturating_sub(i64::try_from(held.time).unwrap_or(i64::MAX));
        p.samples.push(SampleMeta {
            duration,
            size: held.data.len() as u32,
            key: held.key,
            cts_offset: i32::try_from(cts).unwrap_or(i32::MAX),
        });
        p.duration += u64::from(duration);
        p.bytes += held.data.len() as u64;
        p.data.push(held.data);
        self.finished_until = Some(held.time + u64::from(duration));
        self.last_duration = Some(duration);
    }

    fn cut(&mut self) -> Option<Fragment> {
        if self.pending.samples.is_empty() {
            return None;
        }
        let capacity = self.pending.samples.len();
        let p = std::mem::replace(
            &mut self.pending,
            Pending {
                samples: Vec::with_capacity(capacity),
                data: Vec::with_capacity(capacity),
                ..Default::default()
            },
        );
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let mut header = match encode_fragment(sequence, p.base_time, &p.samples) {
            Ok(h) => h,
            Err(e) => {
                // Unreachable: samples are non-empty and their bytes are capped well under 4 GiB.
                error!(sequence, error = %e, "dropping fragment that could not be encoded");
                return None;
            }
        };
        let mut data = p.data;
        let audio = std::mem::take(&mut self.audio.run);
        let audio_data = std::mem::take(&mut self.audio.data);
        match append_audio_traf(&mut header, &audio) {
            Ok(()) => data.extend(audio_data),
            Err(e) => error!(sequence, error = %e, "dropping the audio of a fragment"),
        }
        let starts_with_key = p.samples.first().is_some_and(|s| s.key);
        Some(Fragment {
            header,
            data,
            samples: p.samples,
            sequence,
            base_time: p.base_time,
            duration: p.duration,
            starts_with_key,
        })
    }
}

/// The presentation time of a frame given at decode time `given` with `cts_offset`.
fn time_pts(given: i64, cts_offset: u32) -> i64 {
    given.saturating_add(i64::from(cts_offset))
}

/// A sample duration from the gap to the next frame: at least 1, at most `u32::MAX`.
fn clamp_duration(delta: i64, time: i64) -> u32 {
    match u32::try_from(delta) {
        Ok(0) | Err(_) if delta <= 0 => {
            warn!(
                time,
                delta, "frame time not after the previous frame's; previous frame given duration 1"
            );
            1
        }
        Ok(d) => d,
        Err(_) => {
            warn!(
                time,
                delta, "gap between frames too long for one sample; clamped"
            );
            u32::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![n as u8 + 1; n % 7 + 1])
    }

    /// Pushes (time, key) frames; returns every fragment including the final flush.
    fn run(max: u64, frames: &[(i64, bool)]) -> Vec<Fragment> {
        let mut m = FragmentMuxer::new(max);
        let mut out: Vec<Fragment> = frames
            .iter()
            .enumerate()
            .filter_map(|(i, &(t, k))| m.push(t, k, frame(i)))
            .collect();
        out.extend(m.flush());
        assert!(!m.has_pending());
        out
    }

    fn check_contiguous(frags: &[Fragment]) {
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(f.sequence, i as u32 + 1);
            assert_eq!(
                f.duration,
                f.samples.iter().map(|s| u64::from(s.duration)).sum::<u64>()
            );
            assert_eq!(f.data.len(), f.samples.len());
            assert_eq!(
                f.len(),
                f.header.len() as u64 + f.samples.iter().map(|s| u64::from(s.size)).sum::<u64>()
            );
            if let Some(next) = frags.get(i + 1) {
                assert_eq!(f.base_time + f.duration, next.base_time);
            }
        }
    }

    #[test]
    fn cuts_before_key_frames_and_every_second() {
        // 25 fps, key frame every 60 frames (2.4 s).
        let frames: Vec<_> = (0..130).map(|i| (i as i64 * 3600, i % 60 == 0)).collect();
        let frags = run(90_000, &frames);
        check_contiguous(&frags);
        let counts: Vec<usize> = frags.iter().map(|f| f.samples.len()).collect();
        assert_eq!(counts, [25, 25, 10, 25, 25, 10, 10]);
        let keys: Vec<bool> = frags.iter().map(|f| f.starts_with_key).collect();
        assert_eq!(keys, [true, false, false, true, false, false, true]);
        assert!(frags.iter().all(|f| f.samples[1..].iter().all(|s| !s.key)));
        assert_eq!(frags[0].base_time, 0);
        // The last frame takes the previous duration.
        assert_eq!(frags.last().unwrap().samples.last().unwrap().duration, 3600);
        assert_eq!(
            frags.last().unwrap().base_time + frags.last().unwrap().duration,
            130 * 3600
        );
    }

    #[test]
    fn lone_frame_gets_default_duration_and_first_time_is_base() {
        let frags = run(90_000, &[(5000, true)]);
        assert_eq!(frags.len(), 1);
        assert_eq!(frags[0].base_time, 5000);
        assert_eq!(frags[0].samples[0].duration, DEFAULT_FRAME_DURATION_90K);
        assert!(run(90_000, &[]).is_empty());
    }

    #[test]
    fn weird_timestamps_are_clamped_not_fatal() {
        let frames = [
            (-100, true),      // negative start: moved to 0
            (3600, false),     // normal
            (3600, false),     // repeated: previous frame gets duration 1
            (0, false),        // backwards
            (7200, false),     // forward again
            (i64::MAX, false), // absurd jump: clamped to u32::MAX
            (i64::MIN, true),  // and back
        ];
        let frags = run(90_000, &frames);
        check_contiguous(&frags);
        let durations: Vec<u32> = frags
            .iter()
            .flat_map(|f| f.samples.iter().map(|s| s.duration))
            .collect();
        // 0→3600; 3600 repeated → 1 (next at 3601); 0 → 1 (next at 3602); 7200 → 3598.
        assert_eq!(durations[..5], [3600, 1, 1, 3598, u32::MAX]);
        assert_eq!(durations.len(), frames.len());
        assert_eq!(frags[0].base_time, 0);
    }

    #[test]
    fn composition_offsets_keep_presentation_times() {
        // I0 P3 B1 B2 P6 B4 B5 in decode order, decode times one frame apart, two frames of
        // reorder delay: presentation = decode + offset.
        let pts = [2, 5, 3, 4, 8, 6, 7];
        let mut m = FragmentMuxer::new(90_000);
        let mut frags = Vec::new();
        for (i, p) in pts.iter().enumerate() {
            let dts = i as i64 * 3600;
            let cts = (*p * 3600 - dts) as u32;
            frags.extend(m.push_sample(dts, cts, i == 0, frame(i)));
        }
        frags.extend(m.flush());
        let got: Vec<i64> = frags
            .iter()
            .flat_map(|f| {
                let mut t = f.base_time as i64;
                f.samples.iter().map(move |s| {
                    let p = t + i64::from(s.cts_offset);
                    t += i64::from(s.duration);
                    p / 3600
                })
            })
            .collect();
        assert_eq!(got, pts);
        // A decode time moved forward by clamping keeps its presentation time where possible.
        let mut m = FragmentMuxer::new(90_000);
        m.push_sample(1000, 0, true, frame(0));
        m.push_sample(500, 1000, false, frame(1)); // moved to 1001, presented at 1500
        let f = m.flush().unwrap();
        assert_eq!(f.samples[1].cts_offset, 499);
    }

    #[test]
    fn flush_then_continue_keeps_time_moving_forward() {
        let mut m = FragmentMuxer::new(90_000);
        assert!(m.push(0, true, frame(0)).is_none());
        assert!(m.push(3600, false, frame(1)).is_none());
        let a = m.flush().unwrap();
        assert_eq!((a.base_time, a.duration, a.sequence), (0, 7200, 1));
        // A later frame after a gap keeps its time; an earlier one is moved to the end.
        assert!(m.push(20_000, true, frame(2)).is_none());
        let b = m.flush().unwrap();
        assert_eq!((b.base_time, b.sequence), (20_000, 2));
        assert!(m.push(100, true, frame(3)).is_none());
        let c = m.flush().unwrap();
        assert_eq!(c.base_time, b.base_time + b.duration);
        assert!(m.flush().is_none());
    }

    #[test]
    fn audio_goes_into_a_second_traf_after_the_video_data() {
        use mp4_atom::{Decode as _, Moof};
        let mut m = FragmentMuxer::new(90_000);
        // Video at 25 fps; audio at 8 kHz in 1024-sample frames; a gap of one frame at 3072.
        assert!(m.push(0, true, frame(0)).is_none());
        m.push_audio(-10, 1024, Bytes::from_static(b"early")); // before time 0: dropped
        m.push_audio(0, 1024, Bytes::from_static(b"aaaa"));
        m.push_audio(1000, 1024, Bytes::from_static(b"bb")); // overlaps: starts at 1024
        m.push_audio(3072, 1024, Bytes::from_static(b"c")); // gap: previous lasts 2048
        assert!(m.push(3600, false, frame(1)).is_none());
        let f = m.push(7200, true, frame(2)).unwrap();
        assert_eq!(f.samples.len(), 2);
        assert_eq!(f.data.len(), 5, "two video samples then three audio samples");
        let moof_len = f.header.len() - super::super::write::MDAT_HEADER_LEN;
        let moof = Moof::decode(&mut &f.header[..moof_len]).unwrap();
        assert_eq!(moof.traf.len(), 2);
        let (v, a) = (&moof.traf[0], &moof.traf[1]);
        assert_eq!(a.tfhd.track_id, super::super::write::AUDIO_TRACK_ID);
        assert_eq!(a.tfdt.as_ref().unwrap().base_media_decode_time, 0);
        let durations: Vec<_> = a.trun[0].samples.iter().map(|s| s.duration.unwrap()).collect();
        assert_eq!(durations, [1024, 2048, 1024]);
        let video_len: usize = f.data[..2].iter().map(|d| d.len()).sum();
        assert_eq!(v.trun[0].data_offset, Some(f.header.len() as i32));
        assert_eq!(a.trun[0].data_offset, Some((f.header.len() + video_len) as i32));
        // The same header parses back with the audio run and its sizes filling the mdat.
        let payload = super::super::moof::Payload {
            start: f.header.len() as u64,
            len: f.len() - f.header.len() as u64,
        };
        let s = super::super::moof::parse_moof(
            &f.header[8..moof_len],
            0,
            1,
            Default::default(),
            payload,
            |_| {},
        )
        .unwrap();
        let run = s.audio.unwrap();
        assert_eq!(run.samples.iter().map(|s| s.size).collect::<Vec<_>>(), [4, 2, 1]);
        // Nothing pending: the next fragment has no audio traf.
        let g = m.flush().unwrap();
        let moof_len = g.header.len() - super::super::write::MDAT_HEADER_LEN;
        assert_eq!(Moof::decode(&mut &g.header[..moof_len]).unwrap().traf.len(), 1);
    }
}
