//! Per-channel counters and status ([`ChannelStats`]), readable from any thread as a
//! serializable [`ChannelSnapshot`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

use crate::frame::VideoParams;

/// Bitrate and frame rate are computed over this sliding window.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Bound on the window's entries (a 5 s window at 800 fps), so memory stays bounded whatever the
/// camera sends.
const RATE_WINDOW_MAX_ENTRIES: usize = 4096;

/// The state of a channel's ingest loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    /// DESCRIBE/SETUP/PLAY in progress, or waiting for the first key frame.
    Connecting,
    /// Frames are flowing.
    Recording,
    /// Waiting before reconnecting after a failure that may be transient.
    Backoff,
    /// Waiting (the longest backoff) after a failure that looks like configuration: bad
    /// credentials, unknown path, no H.264/H.265 stream.
    Error,
    /// Shut down; the task has ended or is ending.
    Stopped,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Connecting => "connecting",
            ChannelState::Recording => "recording",
            ChannelState::Backoff => "backoff",
            ChannelState::Error => "error",
            ChannelState::Stopped => "stopped",
        }
    }
}

/// A point-in-time copy of a channel's status.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelSnapshot {
    pub channel: u32,
    pub camera: String,
    pub state: ChannelState,
    /// When `state` was entered; serialized as RFC 3339.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub since: SystemTime,
    /// Frames received (after the first key frame of each session).
    pub frames: u64,
    /// Bytes of frame data received.
    pub bytes: u64,
    /// Over the last ~5 s.
    pub bitrate_bps: u64,
    /// Over the last ~5 s.
    pub fps: f64,
    pub lost_packets: u64,
    pub reconnects: u64,
    /// Runs ended because the camera's RTP time and wall time disagreed (jump, reboot, drift).
    pub reanchors: u64,
    /// GOPs (whole, or their tail from the first frame that did not fit) dropped because the
    /// queue was full.
    pub dropped_gops: u64,
    /// Frames dropped because the queue was full.
    pub dropped_frames: u64,
    /// Frames discarded while waiting for a session's first key frame.
    pub skipped_frames: u64,
    /// Sessions that reached PLAY.
    pub sessions: u64,
    /// The last failure, if any; never contains a password.
    pub last_error: Option<String>,
    /// RFC 6381 codec string of the current parameters.
    pub codec: Option<String>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// The camera's audio as the last session found it: `aac`, `flac (from pcmu)`, `none`,
    /// `off (audio = false)` or `skipped: CODEC is not recorded`.
    pub audio: Option<String>,
}

fn serialize_rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    match jiff::Timestamp::try_from(*t) {
        Ok(ts) => s.collect_str(&ts),
        Err(_) => s.serialize_none(),
    }
}

#[derive(Debug)]
struct Status {
    state: ChannelState,
    since: SystemTime,
    last_error: Option<String>,
    codec: Option<String>,
    width: Option<u16>,
    height: Option<u16>,
    audio: Option<String>,
    /// (arrival, bytes) of recent frames, oldest first.
    window: VecDeque<(Instant, u64)>,
}

/// Live counters of one channel. Cheap to update from the ingest task, readable from any thread.
#[derive(Debug)]
pub struct ChannelStats {
    channel: u32,
    camera: String,
    frames: AtomicU64,
    bytes: AtomicU64,
    lost_packets: AtomicU64,
    reconnects: AtomicU64,
    reanchors: AtomicU64,
    dropped_gops: AtomicU64,
    dropped_frames: AtomicU64,
    skipped_frames: AtomicU64,
    sessions: AtomicU64,
    status: Mutex<Status>,
}

impl ChannelStats {
    pub(crate) fn new(channel: u32, camera: String) -> Self {
        ChannelStats {
            channel,
            camera,
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lost_packets: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reanchors: AtomicU64::new(0),
            dropped_gops: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            skipped_frames: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            status: Mutex::new(Status {
                state: ChannelState::Connecting,
                since: SystemTime::now(),
                last_error: None,
                codec: None,
                width: None,
                height: None,
                audio: None,
                window: VecDeque::new(),
            }),
        }
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // A panic while holding this lock cannot leave the status inconsistent in a harmful way.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> ChannelState {
        self.status().state
    }

    pub fn snapshot(&self) -> ChannelSnapshot {
        let now = Instant::now();
        let (state, since, last_error, codec, width, height, audio, bitrate_bps, fps) = {
            let mut st = self.status();
            prune(&mut st.window, now);
            let (bitrate_bps, fps) = rates(&st.window);
            (
                st.state,
                st.since,
                st.last_error.clone(),
                st.codec.clone(),
                st.width,
                st.height,
                st.audio.clone(),
                bitrate_bps,
                fps,
            )
        };
        // Drop counters are read before `frames`: every dropped frame was counted in `frames`
        // first, so a snapshot never shows more dropped than received.
        let dropped_gops = self.dropped_gops.load(Ordering::Acquire);
        let dropped_frames = self.dropped_frames.load(Ordering::Acquire);
        let skipped_frames = self.skipped_frames.load(Ordering::Acquire);
        ChannelSnapshot {
            channel: self.channel,
            camera: self.camera.clone(),
            state,
            since,
            frames: self.frames.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Relaxed),
            bitrate_bps,
            fps,
            lost_packets: self.lost_packets.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            reanchors: self.reanchors.load(Ordering::Relaxed),
            dropped_gops,
            dropped_frames,
            skipped_frames,
            sessions: self.sessions.load(Ordering::Relaxed),
            last_error,
            codec,
            width,
            height,
            audio,
        }
    }

    pub(crate) fn set_state(&self, state: ChannelState) {
        let mut st = self.status();
        if st.state != state {
            st.state = state;
            st.since = SystemTime::now();
        }
        if state != ChannelState::Recording {
            st.window.clear();
        }
    }

    pub(crate) fn set_error(&self, error: String) {
        self.status().last_error = Some(error);
    }

    pub(crate) fn set_params(&self, params: &VideoParams) {
        let mut st = self.status();
        st.codec = Some(params.rfc6381.clone());
        st.width = Some(params.width);
        st.height = Some(params.height);
    }

    pub(crate) fn set_audio(&self, audio: String) {
        self.status().audio = Some(audio);
    }

    pub(crate) fn record_frame(&self, len: usize) {
        let len = len as u64;
        self.frames.fetch_add(1, Ordering::Release);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        let now = Instant::now();
        let mut st = self.status();
        prune(&mut st.window, now);
        if st.window.len() >= RATE_WINDOW_MAX_ENTRIES {
            st.window.pop_front();
        }
        st.window.push_back((now, len));
    }

    pub(crate) fn add_lost(&self, n: u64) {
        self.lost_packets.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_reanchor(&self) {
        self.reanchors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped_gop(&self) {
        self.dropped_gops.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped_frame(&self) {
        self.dropped_frames.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn add_skipped_frame(&self) {
        self.skipped_frames.fetch_add(1, Ordering::Relaxed);
    }
}

fn prune(window: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while let Some(&(t, _)) = window.front() {
        if now.saturating_duration_since(t) > RATE_WINDOW {
            window.pop_front();
        } else {
            break;
        }
    }
}

/// (bits per second, frames per second) between the oldest and newest frame of the window. The
/// oldest frame only marks the start of the interval; its bytes are not counted.
fn rates(window: &VecDeque<(Instant, u64)>) -> (u64, f64) {
    let (Some(first), Some(last)) = (window.front(), window.back()) else {
        return (0, 0.0);
    };
    let span = last.0.saturating_duration_since(first.0).as_secs_f64();
    if window.len() < 2 || span <= 0.0 {
        return (0, 0.0);
    }
    let bytes: u64 = window.iter().skip(1).map(|&(_, b)| b).sum();
    let bps = (bytes as f64 * 8.0 / span).round() as u64;
    let fps = (window.len() - 1) as f64 / span;
    (bps, fps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_window() {
        let t0 = Instant::now();
        let w: VecDeque<_> = (0..=25u64)
            .map(|i| (t0 + Duration::from_millis(40 * i), 1000))
            .collect();
        let (bps, fps) = rates(&w);
        assert_eq!(bps, 25 * 1000 * 8);
        assert!((fps - 25.0).abs() < 1e-9, "{fps}");
        assert_eq!(rates(&VecDeque::new()), (0, 0.0));
        assert_eq!(rates(&w.iter().take(1).copied().collect()), (0, 0.0));
    }

    #[test]
    fn snapshot_serializes() {
        let stats = ChannelStats::new(7, "nvr-a/7".into());
        stats.set_state(ChannelState::Backoff);
        stats.set_error("connection refused".into());
        stats.record_frame(100);
        let v = serde_json::to_value(stats.snapshot()).unwrap();
        assert_eq!(v["channel"], 7);
        assert_eq!(v["state"], "backoff");
        assert_eq!(v["frames"], 1);
        assert_eq!(v["bytes"], 100);
        assert_eq!(v["last_error"], "connection refused");
        let since = v["since"].as_str().unwrap();
        assert!(since.parse::<jiff::Timestamp>().is_ok(), "{since}");
        assert!(v["codec"].is_null());
    }
}
