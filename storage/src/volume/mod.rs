//! One allocated volume at run time: its identity, lock, space accounting, health, and the
//! segments its syncer is responsible for.

pub mod health;
pub mod marker;
mod open;

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::segment::ActiveSegment;
use health::Health;

pub(crate) use open::open_volume;

/// What `Store::volumes` reports about one volume.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeStatus {
    pub path: PathBuf,
    pub uuid: String,
    /// Bytes of segment files on it (including what is written but not yet durable).
    pub used_bytes: u64,
    /// Free bytes on its filesystem (None if statvfs failed).
    pub free_bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub reserve: Option<u64>,
    pub healthy: bool,
    /// Segments currently being written or awaiting their final sync.
    pub open_segments: usize,
}

/// What wakes a syncer.
#[derive(Debug, Default)]
pub(crate) struct SyncControl {
    pub kicked: bool,
    pub stop: bool,
}

pub(crate) struct Volume {
    pub id: i64,
    pub uuid: String,
    pub path: PathBuf,
    pub max_bytes: Option<u64>,
    pub reserve: Option<u64>,
    used: AtomicU64,
    health: Mutex<Health>,
    /// Segments the syncer must make durable; a segment leaves once settled.
    queue: Mutex<Vec<Arc<ActiveSegment>>>,
    /// Relative paths being created or written; reindexing leaves them alone.
    active_paths: Mutex<HashSet<String>>,
    pub control: Mutex<SyncControl>,
    pub wake: Condvar,
    /// When retention last complained that only open segments remain (rate limit).
    pub last_full_warning: Mutex<Option<Instant>>,
    /// Counters and the syncer's heartbeat, for monitoring.
    pub telemetry: crate::telemetry::VolumeTelemetry,
    /// Holds the exclusive `flock` on the marker (None for a read-only view).
    _lock: Option<File>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Volume {
    fn with(
        id: i64,
        uuid: String,
        cfg: &crate::config::VolumeConfig,
        lock: Option<File>,
    ) -> Volume {
        Volume {
            id,
            uuid,
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            reserve: cfg.reserve,
            used: AtomicU64::new(0),
            health: Mutex::new(Health::Healthy),
            queue: Mutex::new(Vec::new()),
            active_paths: Mutex::new(HashSet::new()),
            control: Mutex::new(SyncControl::default()),
            wake: Condvar::new(),
            last_full_warning: Mutex::new(None),
            telemetry: Default::default(),
            _lock: lock,
        }
    }

    /// A view of a volume another process records to: no lock, no writing.
    pub(crate) fn read_only(id: i64, uuid: String, cfg: &crate::config::VolumeConfig) -> Volume {
        Volume::with(id, uuid, cfg, None)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
    pub fn add_used(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }
    pub fn sub_used(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
    pub fn set_used(&self, n: u64) {
        self.used.store(n, Ordering::Release);
    }

    pub fn free_bytes(&self) -> std::io::Result<u64> {
        crate::fsutil::free_bytes(&self.path)
    }

    /// Bytes that may still be written before retention must act:
    /// min(max_bytes − used, free − reserve). Negative when over budget.
    pub fn headroom(&self) -> i128 {
        let used = i128::from(self.used());
        let by_max = self
            .max_bytes
            .map(|m| i128::from(m) - used)
            .unwrap_or(i128::MAX);
        let by_free = match self.free_bytes() {
            Ok(f) => i128::from(f) - i128::from(self.reserve.unwrap_or(0)),
            Err(e) => {
                tracing::warn!(volume = %self.path.display(), error = %e, "statvfs failed");
                0
            }
        };
        by_max.min(by_free)
    }

    pub fn health(&self) -> Health {
        let mut h = lock(&self.health);
        *h = h.aged(Instant::now());
        *h
    }
    pub fn usable(&self) -> bool {
        self.health().usable()
    }
    /// Records an IO error; returns the new state.
    pub fn record_error(&self) -> Health {
        self.telemetry.io_errors.fetch_add(1, Ordering::Relaxed);
        let mut h = lock(&self.health);
        let before = *h;
        *h = h.on_error(Instant::now());
        if before.usable() && !h.usable() {
            tracing::error!(volume = %self.path.display(), "volume marked unhealthy after repeated IO errors");
        }
        *h
    }
    pub fn record_success(&self) {
        let mut h = lock(&self.health);
        *h = h.on_success(Instant::now());
    }

    // ---- segment bookkeeping ----

    /// Claims a relative path for a segment about to be created. False if already claimed.
    pub fn claim_path(&self, rel: &str) -> bool {
        lock(&self.active_paths).insert(rel.to_owned())
    }
    pub fn release_path(&self, rel: &str) {
        lock(&self.active_paths).remove(rel);
    }
    pub fn is_active(&self, rel: &str) -> bool {
        lock(&self.active_paths).contains(rel)
    }

    /// Hands a new segment to this volume's syncer.
    pub fn enqueue(&self, seg: Arc<ActiveSegment>) {
        lock(&self.queue).push(seg);
    }
    pub fn queued(&self) -> Vec<Arc<ActiveSegment>> {
        lock(&self.queue).clone()
    }
    /// Drops a settled segment from the queue and releases its path.
    pub fn dequeue(&self, seg: &Arc<ActiveSegment>) {
        lock(&self.queue).retain(|s| !Arc::ptr_eq(s, seg));
        self.release_path(&seg.rel_path);
    }

    /// Asks the syncer for a round now rather than at the next interval.
    pub fn kick(&self) {
        lock(&self.control).kicked = true;
        self.wake.notify_all();
    }

    /// Waits for the next round's time, a kick or stop; returns true to stop.
    pub fn wait_for_round(&self, interval: Duration) -> bool {
        let deadline = Instant::now() + interval;
        let mut c = lock(&self.control);
        loop {
            if c.stop {
                return true;
            }
            if c.kicked {
                c.kicked = false;
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            c = match self.wake.wait_timeout(c, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn request_stop(&self) {
        lock(&self.control).stop = true;
        self.wake.notify_all();
    }

    pub fn status(&self) -> VolumeStatus {
        VolumeStatus {
            path: self.path.clone(),
            uuid: self.uuid.clone(),
            used_bytes: self.used(),
            free_bytes: self.free_bytes().ok(),
            max_bytes: self.max_bytes,
            reserve: self.reserve,
            healthy: self.usable(),
            open_segments: lock(&self.queue).len(),
        }
    }
}
