//! What the store tells monitoring about each volume beyond `VolumeStatus`: fsync latency, IO
//! errors, retention deletions, and a heartbeat proving its syncer thread still makes progress.
//!
//! Plain atomics, updated by the syncer and read at scrape time; the binary turns the snapshots
//! into Prometheus metrics and the systemd watchdog reads the heartbeat.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency buckets: 0.5 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]), lock-free to update.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One count per bound, then one for +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram's values at one moment: non-cumulative counts per upper bound (the last bound
/// is +Inf), their total, and the sum in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|&b| s <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = LATENCY_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&self.counts).map(|(b, c)| (b, c.load(Ordering::Relaxed))).collect();
        HistogramSnapshot {
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// When a loop last went round: `beat` from the loop, `age` from anywhere.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds after `base` of the last beat.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { base: Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// Time since the last beat (or since creation).
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(last)
    }
}

/// A volume's counters, owned by the `Volume`.
#[derive(Debug, Default)]
pub(crate) struct VolumeTelemetry {
    pub fsync: LatencyHistogram,
    pub io_errors: AtomicU64,
    pub retention_segments: AtomicU64,
    pub retention_bytes: AtomicU64,
    pub syncer: Heartbeat,
}

impl VolumeTelemetry {
    pub fn retention(&self, segments: usize, bytes: u64) {
        self.retention_segments.fetch_add(segments as u64, Ordering::Relaxed);
        self.retention_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self, path: PathBuf) -> VolumeMetrics {
        VolumeMetrics {
            path,
            fsync: self.fsync.snapshot(),
            io_errors: self.io_errors.load(Ordering::Relaxed),
            retention_deleted_segments: self.retention_segments.load(Ordering::Relaxed),
            retention_deleted_bytes: self.retention_bytes.load(Ordering::Relaxed),
            syncer_idle: self.syncer.age(),
        }
    }
}

/// What `Store::volume_metrics` reports about one volume.
#[derive(Clone, Debug)]
pub struct VolumeMetrics {
    pub path: PathBuf,
    /// `fdatasync` of segment files.
    pub fsync: HistogramSnapshot,
    /// Write, fsync and directory errors counted against the volume.
    pub io_errors: u64,
    pub retention_deleted_segments: u64,
    pub retention_deleted_bytes: u64,
    /// Time since its syncer last finished a round (or waited for one): grows without bound
    /// only when the syncer is stuck.
    pub syncer_idle: Duration,
}

/// TEST HOOK, not a setting: `tests/service.rs` (the systemd watchdog test) runs the release
/// binary, so the hook lives in production code. When `UNDERSTUDY_TEST_HANG_SYNCER` names a
/// file, a syncer hangs (without beating) for as long as that file exists, as it would on a
/// disk that stops answering. Unset (or empty), as in production, it does nothing at all: no
/// file is looked at. Read once per syncer, when it starts.
pub(crate) fn hang_hook() -> Option<PathBuf> {
    std::env::var_os("UNDERSTUDY_TEST_HANG_SYNCER").filter(|v| !v.is_empty()).map(PathBuf::from)
}

pub(crate) fn hang_while_exists(flag: &std::path::Path) {
    while flag.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets.iter().find(|b| b.0 == 0.01).map(|b| b.1), Some(1));
        assert_eq!(s.buckets.last().copied(), Some((f64::INFINITY, 1)));
        assert!((s.sum_seconds - 20.0073).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn heartbeat_ages() {
        let h = Heartbeat::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.beat();
        assert!(h.age() < Duration::from_millis(30));
    }
}
