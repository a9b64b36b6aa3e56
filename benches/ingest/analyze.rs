//! Turning tallies and counters into the figures the report prints: loss (counted honestly,
//! see `Loss`), latency percentiles, CPU per GB and per stream-minute.

use serde_json::{json, Value};

use crate::camsim::Sent;
use crate::sys::{percentile, round3};
use crate::verify::Tally;

/// Frame accounting over all channels of one recorder, from the tags in its files.
///
/// - `gaps`: frame numbers missing between the first and last frame recorded in a session: lost.
/// - `start_skip`: frames the camera sent in a session before the first one recorded. A
///   recorder must wait for a key frame, so up to one GOP per session is not loss; anything
///   beyond is counted in `excess_skip`, which is.
/// - `unwritten` (Understudy only): frames ingest had received (its counter just before the
///   stop) beyond what the files hold: lost inside the recorder.
/// - `in_flight`: sent by camsim but neither recorded nor counted above: the tail still in
///   sockets when the recorder stopped (and whatever a broken session swallowed, so any extra
///   session is reported too). Not counted as loss.
#[derive(Clone, Debug, Default)]
pub struct Loss {
    pub sent: u64,
    pub recorded: u64,
    pub gaps: u64,
    pub start_skip: u64,
    pub excess_skip: u64,
    pub unwritten: u64,
    pub in_flight: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub extra_sessions: u64,
    /// Channels with any loss, and channels whose files hold no frame.
    pub lossy_channels: Vec<u32>,
    pub empty_channels: Vec<u32>,
}

impl Loss {
    pub fn lost(&self) -> u64 {
        self.gaps + self.excess_skip + self.unwritten
    }

    /// Adds channel `ch`: its tally, what camsim sent it, and (for Understudy) the frames its
    /// ingest had received after the first key frame of each session.
    pub fn add(&mut self, ch: u32, t: &Tally, sent: Sent, received: Option<u64>, gop_frames: u64) {
        let excess: u64 = t
            .session_skips
            .iter()
            .map(|s| s.saturating_sub(gop_frames))
            .sum();
        let unwritten = received.map_or(0, |r| r.saturating_sub(t.recorded + t.gaps));
        self.sent += sent.frames;
        self.recorded += t.recorded;
        self.gaps += t.gaps;
        self.start_skip += t.start_skip;
        self.excess_skip += excess;
        self.unwritten += unwritten;
        self.in_flight += sent
            .frames
            .saturating_sub(t.recorded + t.gaps + t.start_skip + unwritten);
        self.duplicates += t.duplicates;
        self.foreign += t.foreign;
        self.extra_sessions += u64::from(t.sessions.saturating_sub(1));
        if t.gaps + excess + unwritten > 0 {
            self.lossy_channels.push(ch);
        }
        if t.recorded == 0 {
            self.empty_channels.push(ch);
        }
    }

    pub fn json(&self, channels: u32) -> Value {
        json!({
            "lost_frames": self.lost(),
            "sent_frames": self.sent,
            "recorded_frames": self.recorded,
            "gap_frames": self.gaps,
            "start_skip_frames": self.start_skip,
            "excess_start_skip_frames": self.excess_skip,
            "unwritten_frames": self.unwritten,
            "in_flight_at_stop_frames": self.in_flight,
            "in_flight_per_channel": round3(self.in_flight as f64 / f64::from(channels.max(1))),
            "duplicate_frames": self.duplicates,
            "foreign_frames": self.foreign,
            "extra_sessions": self.extra_sessions,
            "channels_with_loss": self.lossy_channels,
            "channels_without_frames": self.empty_channels,
        })
    }
}

/// p50 / p99 / max of first-durable times, and how many channels never had one.
pub fn latency_json(mut v: Vec<f64>, never: usize) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| percentile(&v, q).map(round3);
    json!({ "p50_s": p(50.0), "p99_s": p(99.0), "max_s": v.last().copied().map(round3), "channels_never": never })
}

/// CPU seconds per GB (10^9 bytes); None for no bytes.
pub fn per_gb(cpu_s: f64, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| cpu_s / (bytes as f64 / 1e9))
}

/// CPU seconds per stream-minute: `channels` streams for `secs`.
pub fn per_stream_minute(cpu_s: f64, channels: u32, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| cpu_s / (f64::from(channels) * secs / 60.0))
}

pub fn mbit_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 * 8.0 / 1e6 / secs
    } else {
        0.0
    }
}

pub fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!(round3(x)))
}
