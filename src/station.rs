//! The recording station: the open store plus the channels currently recording on it.
//!
//! `run`, `demo`, the failover controller and the bench all drive recording through this, so
//! a channel is started and stopped the same way whoever asks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Span};
use understudy_recorder::ChannelSnapshot;
use understudy_storage::{DurableStats, Store};

use crate::chanstate::{self, ChannelHealth, Watch};
use crate::config::{Camera, Config};
use crate::failover::Handoff;
use crate::pipeline::RecordingChannel;

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Storage(#[from] understudy_storage::Error),
    #[error("channel {channel} is already recording {camera}")]
    ChannelBusy { channel: u32, camera: String },
    #[error("channel {channel}: cannot start its writer thread: {source}")]
    Thread { channel: u32, source: std::io::Error },
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub struct Station {
    pub cfg: Arc<Config>,
    pub store: Store,
    shutdown: CancellationToken,
    channels: Mutex<BTreeMap<u32, RecordingChannel>>,
    /// Per channel, what the state assessment remembers (see `chanstate`).
    watches: Mutex<HashMap<u32, Watch>>,
}

/// How often the station re-assesses channel states for `channel_stalled`/`channel_recovered`.
const MONITOR_EVERY: Duration = Duration::from_millis(500);

impl Station {
    /// Opens the store (repairing and indexing what a crash left) off the async threads.
    pub async fn open(cfg: Config, shutdown: CancellationToken) -> Result<Arc<Station>, StationError> {
        let sc = storage_config(&cfg);
        let store = tokio::task::spawn_blocking(move || Store::open(sc)).await??;
        let st = Arc::new(Station {
            cfg: Arc::new(cfg),
            store,
            shutdown: shutdown.clone(),
            channels: Mutex::new(BTreeMap::new()),
            watches: Mutex::new(HashMap::new()),
        });
        for v in st.store.volumes().iter().filter(|v| v.missing) {
            warn!(volume = %v.path.display(), error = v.error.as_deref().unwrap_or(""), "volume missing: recording on the others");
        }
        tokio::spawn(monitor(Arc::downgrade(&st), shutdown));
        Ok(st)
    }

    /// Every recording channel with its ingest stats, durable stats and truthful state.
    pub fn health(&self) -> Vec<(ChannelSnapshot, Arc<DurableStats>, ChannelHealth)> {
        self.assess().into_iter().map(|(s, d, h, _)| (s, d, h)).collect()
    }

    /// `health`, with each channel's span (channel, main, camera) to log about it in.
    fn assess(&self) -> Vec<(ChannelSnapshot, Arc<DurableStats>, ChannelHealth, Span)> {
        let stall_after = chanstate::stall_after(self.cfg.server.fragment_duration, self.cfg.server.sync_interval);
        let snaps = self.snapshots_in_spans();
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        watches.retain(|ch, _| snaps.iter().any(|(s, _, _)| s.channel == *ch));
        snaps
            .into_iter()
            .map(|(s, d, span)| {
                let w = watches.entry(s.channel).or_insert_with(|| Watch::new(s.dropped_gops));
                let h = chanstate::assess(&s, &d, w, stall_after);
                (s, d, h, span)
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, RecordingChannel>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every `[[camera]]` of the config; one that fails to start is logged, the others go on.
    pub fn start_local_cameras(&self) -> Result<(), StationError> {
        let cams = self.cfg.cameras.clone();
        for cam in &cams {
            if let Err(e) = self.start(cam) {
                warn!(channel = cam.channel, main = %cam.owner, camera = %cam.label, error = %e, "could not start channel");
            }
        }
        Ok(())
    }

    /// Starts recording `cam` on its channel.
    pub fn start(&self, cam: &Camera) -> Result<Arc<DurableStats>, StationError> {
        self.start_with(cam, || None)
    }

    /// Starts recording `cam` on its channel, from the standby session `handoff` gives, if any.
    /// `handoff` is called only once the channel is free and its writer is made: when the
    /// start fails before that, the standby session (and the footage it holds) stays where it
    /// was.
    pub fn start_with(&self, cam: &Camera, handoff: impl FnOnce() -> Option<Handoff>) -> Result<Arc<DurableStats>, StationError> {
        let mut chans = self.lock();
        if let Some(c) = chans.get(&cam.channel) {
            return Err(StationError::ChannelBusy { channel: cam.channel, camera: c.camera.clone() });
        }
        // A camera of the config's own `[[camera]]` list is local; anything else is a main's.
        let takeover = !self.cfg.cameras.iter().any(|c| c.channel == cam.channel && c.url == cam.url);
        let rc = RecordingChannel::start_with(&self.store, cam, &self.cfg.server, takeover, self.shutdown.child_token(), handoff)?;
        let durable = rc.durable().clone();
        chans.insert(cam.channel, rc);
        Ok(durable)
    }

    /// Stops recording on `channel` (closing its segment); false if it was not recording.
    pub async fn stop(&self, channel: u32) -> bool {
        let rc = self.lock().remove(&channel);
        match rc {
            Some(rc) => {
                rc.stop().await;
                true
            }
            None => false,
        }
    }

    /// Stops several channels at once.
    pub async fn stop_many(&self, channels: &[u32]) {
        let taken: Vec<RecordingChannel> = {
            let mut chans = self.lock();
            channels.iter().filter_map(|c| chans.remove(c)).collect()
        };
        futures::future::join_all(taken.into_iter().map(RecordingChannel::stop)).await;
    }

    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Ingest stats of every recording channel.
    pub fn snapshots(&self) -> Vec<(ChannelSnapshot, Arc<DurableStats>)> {
        self.lock().values().map(|c| (c.snapshot(), c.durable().clone())).collect()
    }

    /// `snapshots`, with each channel's span.
    fn snapshots_in_spans(&self) -> Vec<(ChannelSnapshot, Arc<DurableStats>, Span)> {
        self.lock().values().map(|c| (c.snapshot(), c.durable().clone(), c.span().clone())).collect()
    }

    /// Who owns the camera recording on `channel` (a main's name or `local`), if it is recording.
    pub fn owner_of(&self, channel: u32) -> Option<String> {
        self.lock().get(&channel).map(|c| c.owner.clone())
    }

    /// The longest time any channel's writer thread has gone without finishing a loop (None
    /// when nothing records): a writer stuck on a dead disk shows here.
    pub fn slowest_writer(&self) -> Option<std::time::Duration> {
        self.lock().values().map(|c| c.writer_heartbeat.age()).max()
    }

    /// The main's channel number recorded on `channel`, if it is recording.
    pub fn source_channel(&self, channel: u32) -> Option<u32> {
        self.lock().get(&channel).map(|c| c.source_channel)
    }

    pub fn log_summary(&self) {
        for (s, d, span) in self.snapshots_in_spans() {
            span.in_scope(|| {
                info!(state = ?s.state, bitrate_bps = s.bitrate_bps, frames = s.frames, durable_frames = d.frames_durable(),
                      reconnects = s.reconnects, dropped_gops = s.dropped_gops, "channel status")
            });
        }
    }

    /// Stops every channel and makes everything durable.
    pub async fn close(&self) -> Result<(), StationError> {
        let all: Vec<u32> = self.lock().keys().copied().collect();
        self.stop_many(&all).await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.shutdown()).await??;
        Ok(())
    }
}

/// Watches channel states and records `channel_stalled` (with the reason),
/// `channel_stall_changed` (a stalled channel's reason changed) and `channel_recovered`
/// events on each change (see `chanstate::transition`), until shutdown or the station is gone.
async fn monitor(station: Weak<Station>, shutdown: CancellationToken) {
    let mut last: HashMap<u32, ChannelHealth> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MONITOR_EVERY) => {}
        }
        let Some(st) = station.upgrade() else { return };
        let now = st.assess();
        let mut events = Vec::new();
        for (s, _, h, span) in &now {
            let _in_span = span.enter();
            let before = last.insert(s.channel, h.clone());
            let Some(kind) = chanstate::transition(before.as_ref(), h) else { continue };
            let mut detail = serde_json::json!({
                "camera": s.camera, "state": h.state, "reason": h.reason, "seconds_since_durable": h.seconds_since_durable,
            });
            let reason = h.reason.as_deref().unwrap_or("");
            match kind {
                "channel_stalled" => warn!(reason, "channel stalled"),
                "channel_stall_changed" => {
                    let previous = before.as_ref().and_then(|b| b.reason.clone());
                    warn!(reason, previous = previous.as_deref().unwrap_or(""), "channel still stalled, for another reason");
                    detail["previous_reason"] = serde_json::json!(previous);
                }
                _ => info!("channel recording again"),
            }
            events.push((kind, s.channel, detail, span.clone()));
        }
        last.retain(|ch, _| now.iter().any(|(s, _, _, _)| s.channel == *ch));
        if events.is_empty() {
            continue;
        }
        let store = st.store.clone();
        drop(st);
        let r = tokio::task::spawn_blocking(move || {
            for (kind, ch, detail, span) in events {
                if let Err(e) = store.add_event(kind, None, Some(ch), &detail) {
                    span.in_scope(|| warn!(error = %e, "could not record {kind} event"));
                }
            }
        })
        .await;
        if r.is_err() {
            warn!("channel state event task failed");
        }
    }
}

pub fn storage_config(cfg: &Config) -> understudy_storage::StoreConfig {
    let volumes = cfg
        .volumes
        .iter()
        .map(|v| understudy_storage::VolumeConfig { path: v.path.clone(), max_bytes: v.max_bytes, reserve: v.reserve })
        .collect();
    let mut sc = understudy_storage::StoreConfig::new(cfg.server.name.clone(), cfg.server.state_dir.clone(), volumes);
    sc.sync_interval = cfg.server.sync_interval;
    sc.segment_duration = cfg.server.segment_duration;
    sc.fragment_duration = cfg.server.fragment_duration;
    sc.protect_takeover = cfg.server.protect_takeover;
    sc
}
