//! The standby sessions of hot and warm mains: one recorder session per camera while the main is
//! healthy, handed over whole to the takeover's recording channel so the same session records on.
//!
//! - `hot`: the session plays; a pump task moves its frames into the camera's [`Prebuffer`]
//!   every 100 ms. At takeover the held GOPs go to the writer first, then the frames still in the
//!   session's queue, then the live ones: one run, no seam.
//! - `warm`: the session is described and set up but held before PLAY (a [`PlayGate`]); the
//!   takeover opens the gate. Nothing is received meanwhile.
//!
//! Sessions reconnect with the recorder's own backoff and never touch the main's health. One
//! memory budget (`[server] prebuffer_memory`) is split across the hot cameras by bitrate once a
//! second; a camera whose share is less than its `prebuffer` is shown short, with an event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use understudy_recorder::{ChannelHandle, ChannelState, IngestItem, PlayGate};

use super::events::EventSink;
use super::standby::Prebuffer;
use crate::config::{Camera, Main, Server, StandbyMode};

/// How often a hot session's queue is moved into its prebuffer (as the writer drains its queue,
/// see `pipeline`; the queue holds ~10 s of frames).
const PUMP_EVERY: Duration = Duration::from_millis(100);
/// How often the memory budget is split again.
const BUDGET_EVERY: Duration = Duration::from_secs(1);
/// Bitrate assumed for a camera that has not measured its own yet.
const ASSUMED_BPS: u64 = 4_000_000;

/// A standby session given to the takeover's recording channel.
pub struct Handoff {
    /// The session and its queue; None when it was broken (backoff, error) at takeover: a fresh
    /// session is opened at once instead of inheriting its reconnect delay.
    pub session: Option<(ChannelHandle, mpsc::Receiver<IngestItem>)>,
    /// What the prebuffer held, oldest first, starting with a key frame (empty when warm).
    pub held: Vec<IngestItem>,
    /// The `channel` span the session logs in.
    pub span: tracing::Span,
}

/// What status and metrics show of one standby session.
#[derive(Clone, Debug, Serialize)]
pub struct StandbyView {
    pub main: String,
    pub channel: u32,
    pub mode: StandbyMode,
    /// `hot` (playing, buffering) · `warm` (set up, waiting to PLAY) · `connecting` · `backoff`
    /// · `error` (see `last_error`).
    pub state: &'static str,
    pub prebuffer_bytes: u64,
    /// Footage held, first frame to last.
    pub prebuffer_seconds: f64,
    /// The memory budget keeps this buffer shorter than the main's `prebuffer`.
    pub prebuffer_short: bool,
    /// Its byte share of `prebuffer_memory`.
    pub prebuffer_limit_bytes: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// The queue and prebuffer of a hot session; the pump and the hand-over take turns on them.
struct Buffered {
    /// None once handed over or stopped: the pump then ends.
    rx: Option<mpsc::Receiver<IngestItem>>,
    buf: Prebuffer,
    limit: usize,
}

struct Entry {
    mode: StandbyMode,
    ingest: ChannelHandle,
    buffered: Arc<Mutex<Buffered>>,
    gate: Option<PlayGate>,
    span: tracing::Span,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every standby session, by (main, failover channel).
pub struct Standbys {
    server: Server,
    budget: u64,
    events: EventSink,
    shutdown: CancellationToken,
    entries: Mutex<BTreeMap<(String, u32), Entry>>,
    /// Mains with short buffers at the last budget round (an event when one becomes short).
    short_mains: Mutex<Vec<String>>,
}

impl Standbys {
    /// Starts the budget task. Must be called inside a tokio runtime.
    pub fn new(server: &Server, events: EventSink, shutdown: CancellationToken) -> Arc<Standbys> {
        let s = Arc::new(Standbys {
            server: server.clone(),
            budget: server.prebuffer_memory,
            events,
            shutdown: shutdown.clone(),
            entries: Mutex::default(),
            short_mains: Mutex::default(),
        });
        tokio::spawn(budget_loop(Arc::downgrade(&s), shutdown));
        s
    }

    /// Starts a standby session for each camera of `main` (none when it is `cold`), except on
    /// the failover channels in `skip` (still recorded by a takeover).
    pub fn start_main(&self, main: &Main, skip: &[u32]) {
        if main.standby == StandbyMode::Cold {
            return;
        }
        let mut entries = lock(&self.entries);
        let hot = entries.values().filter(|e| e.mode == StandbyMode::Hot).count() + main.cameras.len();
        for cam in main.cameras.iter().filter(|c| !skip.contains(&c.channel)) {
            let key = (main.name.clone(), cam.channel);
            if entries.contains_key(&key) {
                continue;
            }
            // Until the first budget round: an equal share.
            let share = usize::try_from(self.budget / hot.max(1) as u64).unwrap_or(usize::MAX);
            entries.insert(key, self.spawn(main, cam, share));
        }
    }

    fn spawn(&self, main: &Main, cam: &Camera, share: usize) -> Entry {
        let mut spec = crate::pipeline::channel_spec(cam, &self.server);
        if let Some(u) = &cam.standby_url {
            spec.url = u.clone();
        }
        let gate = (main.standby == StandbyMode::Warm).then(PlayGate::new);
        spec.play_gate = gate.clone();
        let (tx, rx) = spec.queue();
        let span = tracing::info_span!("channel", channel = cam.channel, main = %cam.owner, camera = %cam.label);
        let ingest = span.in_scope(|| understudy_recorder::spawn_channel(spec, tx, self.shutdown.child_token()));
        let buffered = Arc::new(Mutex::new(Buffered { rx: Some(rx), buf: Prebuffer::new(main.prebuffer, share), limit: share }));
        if main.standby == StandbyMode::Hot {
            tokio::spawn(pump(buffered.clone()));
        }
        span.in_scope(|| info!(url = %cam.standby_url.as_ref().unwrap_or(&cam.url), mode = ?main.standby, "standby session started"));
        Entry { mode: main.standby, ingest, buffered, gate, span }
    }

    /// Hands `main`'s session for `channel` to the takeover: opens a warm session's gate, takes
    /// a hot one's buffer and queue. A session that is broken right now (backoff, error) is
    /// stopped and only its buffer is handed over. None when the main has no standby there.
    pub fn take(&self, main: &str, channel: u32) -> Option<Handoff> {
        let e = lock(&self.entries).remove(&(main.to_owned(), channel))?;
        let (rx, held) = {
            let mut b = lock(&e.buffered);
            let Buffered { rx, buf, .. } = &mut *b;
            let mut rx = rx.take()?;
            if e.mode == StandbyMode::Hot {
                // What the pump has not moved yet goes into the buffer, so nothing is lost
                // whichever way the session goes on.
                while let Ok(item) = rx.try_recv() {
                    buf.push(item);
                }
            }
            (rx, buf.drain())
        };
        let frames = held.iter().filter(|i| matches!(i, IngestItem::Frame(_))).count();
        let broken = matches!(e.ingest.stats.snapshot().state, ChannelState::Backoff | ChannelState::Error | ChannelState::Stopped);
        let session = if broken {
            e.span.in_scope(|| info!(held_frames = frames, "standby session broken at takeover: connecting afresh"));
            drop(rx);
            tokio::spawn(e.ingest.stop());
            None
        } else {
            if let Some(g) = &e.gate {
                g.open();
            }
            e.span.in_scope(|| info!(held_frames = frames, "standby session handed to the takeover"));
            Some((e.ingest, rx))
        };
        Some(Handoff { session, held, span: e.span })
    }

    /// Stops `main`'s standby sessions (e.g. the config changed); they TEARDOWN in the background.
    pub fn stop_main(&self, main: &str) {
        let gone: Vec<Entry> = {
            let mut entries = lock(&self.entries);
            let keys: Vec<_> = entries.keys().filter(|k| k.0 == main).cloned().collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        for e in gone {
            lock(&e.buffered).rx = None;
            tokio::spawn(e.ingest.stop());
        }
    }

    /// Every standby session's state.
    pub fn status(&self) -> Vec<StandbyView> {
        lock(&self.entries).iter().map(|((main, ch), e)| view(main, *ch, e)).collect()
    }

    /// Splits the budget across hot sessions by bitrate; says which mains became short.
    fn rebalance(&self) {
        let views = {
            let entries = lock(&self.entries);
            let hot: Vec<(&(String, u32), &Entry, u64)> = entries
                .iter()
                .filter(|(_, e)| e.mode == StandbyMode::Hot)
                .map(|(k, e)| {
                    let bps = e.ingest.stats.snapshot().bitrate_bps;
                    (k, e, if bps == 0 { ASSUMED_BPS } else { bps })
                })
                .collect();
            let total: u128 = hot.iter().map(|h| u128::from(h.2)).sum::<u128>().max(1);
            for (_, e, bps) in &hot {
                let share = usize::try_from(u128::from(self.budget) * u128::from(*bps) / total).unwrap_or(usize::MAX);
                let mut b = lock(&e.buffered);
                b.limit = share;
                b.buf.set_max_bytes(share);
            }
            hot.iter().map(|(k, e, _)| view(&k.0, k.1, e)).collect::<Vec<_>>()
        };
        let mut short: Vec<String> = views.iter().filter(|v| v.prebuffer_short).map(|v| v.main.clone()).collect();
        short.dedup();
        let mut before = lock(&self.short_mains);
        for m in short.iter().filter(|m| !before.contains(m)) {
            let chans: Vec<&StandbyView> = views.iter().filter(|v| &v.main == m && v.prebuffer_short).collect();
            let least = chans.iter().map(|v| v.prebuffer_seconds).fold(f64::INFINITY, f64::min);
            warn!(main = %m, channels = chans.len(), held_s = least, budget = self.budget, "prebuffer_memory too small: standby buffers shortened");
            self.events.emit("prebuffer_short", Some(m), None, json!({
                "channels": chans.iter().map(|v| v.channel).collect::<Vec<_>>(),
                "prebuffer_memory": self.budget,
                "least_seconds": (least * 10.0).round() / 10.0,
                "reason": "server.prebuffer_memory split by bitrate holds less than the main's prebuffer",
            }));
        }
        *before = short;
    }
}

fn view(main: &str, channel: u32, e: &Entry) -> StandbyView {
    let snap = e.ingest.stats.snapshot();
    let b = lock(&e.buffered);
    let state = match snap.state {
        _ if e.gate.as_ref().is_some_and(PlayGate::is_ready) => "warm",
        ChannelState::Recording => "hot",
        ChannelState::Connecting => "connecting",
        ChannelState::Backoff => "backoff",
        ChannelState::Error => "error",
        ChannelState::Stopped => "stopped",
    };
    StandbyView {
        main: main.to_owned(),
        channel,
        mode: e.mode,
        state,
        prebuffer_bytes: b.buf.bytes() as u64,
        prebuffer_seconds: (b.buf.held().as_secs_f64() * 10.0).round() / 10.0,
        prebuffer_short: b.buf.is_short(),
        prebuffer_limit_bytes: b.limit as u64,
        reconnects: snap.reconnects,
        last_error: snap.last_error,
    }
}

/// Moves a hot session's frames into its prebuffer until it is handed over or stopped.
async fn pump(buffered: Arc<Mutex<Buffered>>) {
    use tokio::sync::mpsc::error::TryRecvError;
    loop {
        tokio::time::sleep(PUMP_EVERY).await;
        let mut b = lock(&buffered);
        let Buffered { rx, buf, .. } = &mut *b;
        let Some(q) = rx.as_mut() else { return };
        loop {
            match q.try_recv() {
                Ok(item) => buf.push(item),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

async fn budget_loop(standbys: std::sync::Weak<Standbys>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BUDGET_EVERY) => {}
        }
        let Some(s) = standbys.upgrade() else { return };
        s.rebalance();
    }
}
