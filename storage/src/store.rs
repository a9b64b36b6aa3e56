//! `Store`: the handle the binary holds: opens the catalog and volumes, indexes the files,
//! runs one syncer per volume, hands out channel writers and serves reads.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::catalog::{Catalog, EventRecord};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::indexing::{self, ReindexSummary};
use crate::reads::{self, ExportSummary, Playback, SegmentInfo};
use crate::volume::{open_volume, Volume, VolumeStatus};
use crate::writer::ChannelWriter;

/// What the store's handles, writers and syncers share.
pub(crate) struct Shared {
    pub cfg: StoreConfig,
    pub catalog: Arc<Catalog>,
    pub volumes: Vec<Arc<Volume>>,
    read_only: bool,
    shut_down: AtomicBool,
    syncers: Mutex<Vec<JoinHandle<()>>>,
    channels: Mutex<HashSet<u32>>,
    reindexing: Mutex<()>,
    pub live: crate::live::LiveHub,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub fn release_channel(&self, channel: u32) {
        lock(&self.channels).remove(&channel);
    }

    fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        for v in &self.volumes {
            v.request_stop();
        }
        let handles = std::mem::take(&mut *lock(&self.syncers));
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a syncer thread panicked");
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The storage layer; cheap to clone (one shared state inside).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("server_name", &self.shared.cfg.server_name)
            .field("state_dir", &self.shared.cfg.state_dir)
            .field(
                "volumes",
                &self
                    .shared
                    .volumes
                    .iter()
                    .map(|v| &v.path)
                    .collect::<Vec<_>>(),
            )
            .field("read_only", &self.shared.read_only)
            .finish()
    }
}

fn check_duplicates(cfg: &StoreConfig) -> Result<()> {
    for (i, a) in cfg.volumes.iter().enumerate() {
        for b in &cfg.volumes[..i] {
            if a.path == b.path || a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                return Err(Error::VolumeDuplicate {
                    path: a.path.clone(),
                    other: b.path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Opens every configured volume. One that is missing, swapped or unreadable is kept as a
/// missing volume (flagged in the status, with an event, never written) while at least one
/// other opens; with none left, the first error is returned.
fn open_volumes(cfg: &StoreConfig, catalog: &Catalog) -> Result<Vec<Arc<Volume>>> {
    let mut volumes = Vec::with_capacity(cfg.volumes.len());
    let mut first_err = None;
    for vc in &cfg.volumes {
        match open_volume(vc, catalog, &cfg.server_name) {
            Ok(v) => {
                warn_if_below_floor(&v, catalog);
                volumes.push(Arc::new(v))
            }
            Err(
                e @ (Error::VolumeMarkerMissing { .. }
                | Error::VolumeMarkerMismatch { .. }
                | Error::VolumeMarkerInvalid { .. }
                | Error::Io { .. }),
            ) => {
                let reason = e.to_string();
                tracing::error!(volume = %vc.path.display(), error = %reason, "volume missing; recording on the others");
                let id = vc
                    .path
                    .to_str()
                    .and_then(|p| catalog.volume_by_path(p).ok().flatten())
                    .map(|r| r.id)
                    .unwrap_or(-1);
                let detail =
                    serde_json::json!({ "volume": vc.path.display().to_string(), "error": reason });
                if let Err(e) = catalog.add_event("volume_missing", None, None, &detail) {
                    tracing::error!(error = %e, "could not record volume_missing event");
                }
                volumes.push(Arc::new(Volume::missing(id, vc, reason)));
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_err {
        Some(e) if volumes.iter().all(|v| v.is_missing()) => Err(e),
        _ => Ok(volumes),
    }
}

/// Says so (log and `volume_below_floor` event) when a volume starts with less free space than
/// its floor: retention will delete its oldest closed footage until the floor is met, which on a
/// directory of a shared disk may be every closed segment. The installer should know at once.
fn warn_if_below_floor(v: &Volume, catalog: &Catalog) {
    let (Some(reserve), Ok(free)) = (v.reserve, crate::fsutil::free_bytes(&v.path)) else {
        return;
    };
    if free >= reserve {
        return;
    }
    tracing::warn!(volume = %v.path.display(), free_bytes = free, reserve_bytes = reserve,
        default_floor = v.reserve_default,
        "volume starts below its free-space floor: retention will delete its oldest closed footage; set `reserve` or free space");
    let detail = serde_json::json!({
        "volume": v.path.display().to_string(),
        "free_bytes": free,
        "reserve_bytes": reserve,
        "reserve_default": v.reserve_default,
    });
    if let Err(e) = catalog.add_event("volume_below_floor", None, None, &detail) {
        tracing::error!(error = %e, "could not record volume_below_floor event");
    }
}

impl Store {
    /// Opens the catalog and every volume (checking markers, taking locks), brings the catalog
    /// in line with the files (repairing torn tails), and starts one syncer per volume.
    pub fn open(cfg: StoreConfig) -> Result<Store> {
        cfg.validate()?;
        check_duplicates(&cfg)?;
        let catalog = Arc::new(Catalog::open(&cfg.state_dir)?);
        let volumes = open_volumes(&cfg, &catalog)?;
        let started = std::time::Instant::now();
        let present: Vec<Arc<Volume>> = volumes
            .iter()
            .filter(|v| !v.is_missing())
            .cloned()
            .collect();
        let summary = indexing::index_volumes(&present, &catalog, false, &mut |_, _| {})?;
        tracing::info!(
            files = summary.files,
            scanned = summary.scanned,
            repaired = summary.repaired,
            added = summary.added,
            removed_files = summary.removed_files,
            removed_rows = summary.removed_rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volumes indexed"
        );
        let mut syncers: Vec<JoinHandle<()>> = Vec::with_capacity(volumes.len());
        for v in &volumes {
            if v.is_missing() {
                continue;
            }
            let (v2, c2, interval) = (Arc::clone(v), Arc::clone(&catalog), cfg.sync_interval);
            let protect = cfg.protect_takeover;
            let spawned = std::thread::Builder::new()
                .name(format!("syncer-{}", v.id))
                .spawn(move || crate::syncer::run(v2, c2, interval, protect));
            match spawned {
                Ok(h) => syncers.push(h),
                Err(e) => {
                    for v in &volumes {
                        v.request_stop();
                    }
                    for h in syncers {
                        let _ = h.join();
                    }
                    return Err(Error::io("starting syncer thread", &v.path, e));
                }
            }
        }
        let shared = Shared {
            cfg,
            catalog,
            volumes,
            read_only: false,
            shut_down: AtomicBool::new(false),
            syncers: Mutex::new(syncers),
            channels: Mutex::new(HashSet::new()),
            reindexing: Mutex::new(()),
            live: Default::default(),
        };
        Ok(Store {
            shared: Arc::new(shared),
        })
    }

    /// Opens the catalog read-only, beside a process that is recording (`recordings`,
    /// `export`, `events_since` and `volumes` work; writing, reindexing and events don't).
    /// Volumes the catalog doesn't know are left out.
    pub fn open_read_only(cfg: StoreConfig) -> Result<Store> {
        cfg.validate()?;
        let catalog = Arc::new(Catalog::open_read_only(&cfg.state_dir)?);
        let mut volumes = Vec::new();
        for vc in &cfg.volumes {
            let Some(path) = vc.path.to_str() else {
                continue;
            };
            if let Some(row) = catalog.volume_by_path(path)? {
                volumes.push(Arc::new(Volume::read_only(row.id, row.uuid, vc)));
            }
        }
        let shared = Shared {
            cfg,
            catalog,
            volumes,
            read_only: true,
            shut_down: AtomicBool::new(false),
            syncers: Mutex::new(Vec::new()),
            channels: Mutex::new(HashSet::new()),
            reindexing: Mutex::new(()),
            live: Default::default(),
        };
        Ok(Store {
            shared: Arc::new(shared),
        })
    }

    fn writable(&self) -> Result<()> {
        if self.shared.read_only {
            return Err(Error::ReadOnly);
        }
        if self.shared.is_shut_down() {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    /// A writer for `channel` (one at a time per channel). `expected_bitrate_bps` sizes the
    /// headroom a volume needs to take the channel's next segment.
    pub fn channel_writer(&self, channel: u32, expected_bitrate_bps: u64) -> Result<ChannelWriter> {
        self.writable()?;
        if !lock(&self.shared.channels).insert(channel) {
            return Err(Error::ChannelBusy { channel });
        }
        Ok(ChannelWriter::new(
            Arc::clone(&self.shared),
            channel,
            expected_bitrate_bps,
        ))
    }

    /// Segments of `channel` overlapping `[from, to]` (either end open), by start time,
    /// including open ones (whose end is their durable end).
    pub fn recordings(
        &self,
        channel: u32,
        from_90k: Option<i64>,
        to_90k: Option<i64>,
    ) -> Result<Vec<SegmentInfo>> {
        reads::recordings(
            &self.shared.catalog,
            &self.shared.volumes,
            channel,
            from_90k,
            to_90k,
        )
    }

    /// Writes `[from, to)` of `channel` as one fragmented MP4 starting at the key frame at or
    /// before `from`, across segments, stopping at a change of codec parameters.
    /// `progress` gets (source bytes read, source bytes to read).
    pub fn export(
        &self,
        channel: u32,
        from_90k: i64,
        to_90k: i64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportSummary> {
        reads::export(
            &self.shared.catalog,
            &self.shared.volumes,
            channel,
            from_90k,
            to_90k,
            out,
            progress,
        )
    }

    /// `channel`'s live fragments as the writer completes them (see `live`): the newest ones
    /// since a key frame, then a bounded broadcast of the next ones.
    pub fn live(&self, channel: u32) -> crate::live::LiveSubscription {
        self.shared.live.subscribe(channel)
    }

    /// `[from, to)` of `channel` as a virtual MP4 (same content as `export`), laid out from the
    /// catalog; its bytes are read from the segment files only when asked for.
    pub fn playback(&self, channel: u32, from_90k: i64, to_90k: i64) -> Result<Playback> {
        reads::playback(
            &self.shared.catalog,
            &self.shared.volumes,
            channel,
            from_90k,
            to_90k,
        )
    }

    /// Re-scans every segment file (except those being written), repairing torn tails and
    /// rebuilding their catalog rows. `progress` gets (files done, files total).
    pub fn reindex(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<ReindexSummary> {
        self.writable()?;
        let _one_at_a_time = lock(&self.shared.reindexing);
        let present: Vec<Arc<Volume>> = self
            .shared
            .volumes
            .iter()
            .filter(|v| !v.is_missing())
            .cloned()
            .collect();
        indexing::index_volumes(&present, &self.shared.catalog, true, progress)
    }

    /// Records an event; returns its id.
    pub fn add_event(
        &self,
        kind: &str,
        main: Option<&str>,
        channel: Option<u32>,
        detail: &serde_json::Value,
    ) -> Result<i64> {
        if self.shared.read_only {
            return Err(Error::ReadOnly);
        }
        self.shared.catalog.add_event(kind, main, channel, detail)
    }

    /// Events with id > `after_id`, oldest first, at most `limit`.
    pub fn events_since(&self, after_id: i64, limit: usize) -> Result<Vec<EventRecord>> {
        self.shared.catalog.events_since(after_id, limit)
    }

    /// Events in `[from_ms, to_ms)` about `channel`, or about one of `mains` with no channel
    /// (its takeovers): newest first, at most `limit`.
    pub fn channel_events(
        &self,
        channel: u32,
        mains: &[String],
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        self.shared
            .catalog
            .channel_events(channel, mains, from_ms, to_ms, limit)
    }

    pub fn volumes(&self) -> Vec<VolumeStatus> {
        self.shared.volumes.iter().map(|v| v.status()).collect()
    }

    /// Monitoring counters of every volume, in `volumes()` order.
    pub fn volume_metrics(&self) -> Vec<crate::VolumeMetrics> {
        self.shared
            .volumes
            .iter()
            .map(|v| v.telemetry.snapshot(v.path.clone()))
            .collect()
    }

    /// Final sync round on every volume, then stops the syncers. Idempotent. Writers still
    /// open should be closed first; their later pushes fail with `Error::ShutDown`.
    pub fn shutdown(&self) -> Result<()> {
        self.shared.shutdown();
        Ok(())
    }

    /// Rows in the retention log.
    pub fn retention_log_len(&self) -> Result<u64> {
        self.shared.catalog.retention_log_len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::Store>();
        send::<crate::ChannelWriter>();
        send_sync::<crate::DurableStats>();
    }
}
