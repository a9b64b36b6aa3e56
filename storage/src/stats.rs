//! Per-channel counters the writer and the syncer publish, readable from any thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a channel has written and what of it is durable (fsynced and cataloged).
#[derive(Debug, Default)]
pub struct DurableStats {
    frames_written: AtomicU64,
    frames_durable: AtomicU64,
    bytes_durable: AtomicU64,
    segments: AtomicU64,
    /// Microseconds since the epoch of the first durable commit; 0 = never.
    first_durable_us: AtomicU64,
    /// Microseconds since the epoch of the latest commit that made frames durable; 0 = never.
    last_durable_us: AtomicU64,
    write_errors: AtomicU64,
    frames_dropped_before_key: AtomicU64,
    /// Why footage is not becoming durable right now (set by the writer or syncer on a
    /// failure, cleared by the writer's next successful fragment).
    problem: Mutex<Option<String>>,
    /// Wall-clock start (90 kHz since the epoch) of the first cataloged segment; 0 = none yet.
    first_start_90k: AtomicI64,
}

impl DurableStats {
    /// Frames written to segment files (not necessarily durable yet).
    pub fn frames_written(&self) -> u64 {
        self.frames_written.load(Ordering::Relaxed)
    }
    /// Frames fsynced and cataloged.
    pub fn frames_durable(&self) -> u64 {
        self.frames_durable.load(Ordering::Acquire)
    }
    /// Segment file bytes fsynced and cataloged (init segments included).
    pub fn bytes_durable(&self) -> u64 {
        self.bytes_durable.load(Ordering::Acquire)
    }
    /// Segments cataloged.
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Acquire)
    }
    /// When this channel's first footage became durable.
    pub fn first_durable_at(&self) -> Option<SystemTime> {
        match self.first_durable_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(UNIX_EPOCH + Duration::from_micros(us)),
        }
    }
    /// When this channel's latest footage became durable.
    pub fn last_durable_at(&self) -> Option<SystemTime> {
        match self.last_durable_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(UNIX_EPOCH + Duration::from_micros(us)),
        }
    }
    /// Why the channel's footage is not becoming durable right now, if the storage layer
    /// knows (`disk full on VOLUME`, `write error on VOLUME: …`, `no volume can take …`).
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn set_problem(&self, reason: Option<String>) {
        let mut p = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() || reason.is_some() {
            *p = reason;
        }
    }
    /// Where this channel's durable footage starts: its first cataloged segment's wall-clock
    /// start, 90 kHz since the epoch.
    pub fn first_start_90k(&self) -> Option<i64> {
        match self.first_start_90k.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }
    /// Write, fsync and segment-creation errors.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
    /// Frames discarded because no key frame had started the run (or the segment had failed).
    pub fn frames_dropped_before_key(&self) -> u64 {
        self.frames_dropped_before_key.load(Ordering::Relaxed)
    }

    pub(crate) fn add_written(&self, frames: u64) {
        self.frames_written.fetch_add(frames, Ordering::Relaxed);
    }
    pub(crate) fn add_durable(&self, frames: u64, bytes: u64) {
        if frames > 0 || bytes > 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            let now = u64::try_from(now).unwrap_or(u64::MAX).max(1);
            self.last_durable_us.store(now, Ordering::Release);
            let _ =
                self.first_durable_us
                    .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
        self.bytes_durable.fetch_add(bytes, Ordering::AcqRel);
        self.frames_durable.fetch_add(frames, Ordering::AcqRel);
    }
    pub(crate) fn add_segment(&self, start_90k: i64) {
        let _ = self.first_start_90k.compare_exchange(0, start_90k, Ordering::AcqRel, Ordering::Acquire);
        self.segments.fetch_add(1, Ordering::AcqRel);
    }
    pub(crate) fn add_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_dropped(&self, frames: u64) {
        self.frames_dropped_before_key
            .fetch_add(frames, Ordering::Relaxed);
    }
}
