//! One allocated volume at run time: its identity, lock, space accounting, health, and the
//! segments its syncer is responsible for.

pub mod health;
pub mod marker;
mod open;

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The free-space floor in force: the configured `reserve`, or the default one.
    pub reserve: Option<u64>,
    /// True when `reserve` is the default floor (none configured).
    pub reserve_default: bool,
    pub healthy: bool,
    /// The volume is not there (unmounted, swapped, vanished): nothing is written to it.
    pub missing: bool,
    /// Over its floor or budget with nothing closed left to delete: new segments go elsewhere.
    pub full: bool,
    /// Everything closed on it is protected takeover footage (younger than `protect_takeover`).
    pub only_protected: bool,
    /// Why it is missing or unhealthy, if known.
    pub error: Option<String>,
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
    /// The free-space floor in force (configured, or the default; None for a missing volume).
    pub reserve: Option<u64>,
    pub reserve_default: bool,
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
    /// One retention pass at a time (the syncer's, or a writer's after ENOSPC).
    pub retention: Mutex<()>,
    /// Set once the volume is found missing (marker gone or replaced); never cleared at run time.
    missing: Mutex<Option<String>>,
    pub full: AtomicBool,
    pub only_protected: AtomicBool,
    /// (device, inode) of the marker when opened: a different one means another disk.
    marker_id: Option<(u64, u64)>,
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
        let reserve = cfg.reserve.or_else(|| {
            crate::fsutil::fs_bytes(&cfg.path)
                .map(crate::config::default_reserve)
                .ok()
        });
        let marker_id = lock.as_ref().and_then(|f| crate::fsutil::file_id(f).ok());
        Volume {
            id,
            uuid,
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            reserve,
            reserve_default: cfg.reserve.is_none(),
            used: AtomicU64::new(0),
            health: Mutex::new(Health::Healthy),
            queue: Mutex::new(Vec::new()),
            active_paths: Mutex::new(HashSet::new()),
            control: Mutex::new(SyncControl::default()),
            wake: Condvar::new(),
            last_full_warning: Mutex::new(None),
            telemetry: Default::default(),
            retention: Mutex::new(()),
            missing: Mutex::new(None),
            full: AtomicBool::new(false),
            only_protected: AtomicBool::new(false),
            marker_id,
            _lock: lock,
        }
    }

    /// A configured volume that could not be opened (not mounted, swapped): listed in the
    /// status as missing, never written to. `id` is the catalog's, or -1 if it has none.
    pub(crate) fn missing(
        id: i64,
        cfg: &crate::config::VolumeConfig,
        reason: String,
    ) -> Volume {
        let v = Volume::with(id, String::new(), cfg, None);
        *lock(&v.missing) = Some(reason);
        v
    }

    /// Why the volume is missing, if it is.
    pub fn missing_reason(&self) -> Option<String> {
        lock(&self.missing).clone()
    }

    pub fn is_missing(&self) -> bool {
        lock(&self.missing).is_some()
    }

    /// Checks that the marker opened at start-up is still where it was (the disk is still
    /// mounted and the same). Marks the volume missing and returns the reason if not.
    pub fn check_present(&self) -> Result<(), String> {
        if let Some(r) = self.missing_reason() {
            return Err(r);
        }
        let Some(expected) = self.marker_id else {
            return Ok(()); // read-only view
        };
        let marker = marker::marker_path(&self.path);
        let found = std::fs::metadata(&marker).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        });
        let reason = match found {
            Ok(id) if id == expected => return Ok(()),
            Ok(_) => format!("volume {}: marker replaced (another disk mounted there?)", self.path.display()),
            Err(e) => format!("volume {}: marker {} gone ({e}): disk unmounted or directory removed?", self.path.display(), marker.display()),
        };
        let mut m = lock(&self.missing);
        if m.is_none() {
            tracing::error!(volume = %self.path.display(), reason = %reason, "volume missing; nothing more is written to it");
            *m = Some(reason.clone());
        }
        Err(reason)
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
        if self.is_missing() {
            return i128::MIN;
        }
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
    /// Healthy enough for new segments, and present.
    pub fn usable(&self) -> bool {
        self.health().usable() && !self.is_missing()
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
            reserve_default: self.reserve_default,
            healthy: self.usable(),
            missing: self.is_missing(),
            full: self.full.load(Ordering::Acquire),
            only_protected: self.only_protected.load(Ordering::Acquire),
            error: self.missing_reason(),
            open_segments: lock(&self.queue).len(),
        }
    }
}
