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
//! second; a camera whose share is less than its `prebuffer` is shown short, with an event for
//! each channel that becomes short (and one when it holds its whole `prebuffer` again).

use std::collections::{BTreeMap, BTreeSet};
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
    /// Frames the session has received (hot: what went through the prebuffer).
    pub frames: u64,
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
    /// (main, channel) of the buffers that were short at the last budget round: an event for
    /// each channel that becomes short, and for each that is no longer.
    short: Mutex<BTreeSet<(String, u32)>>,
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
            short: Mutex::default(),
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
        let key = (main.to_owned(), channel);
        let e = lock(&self.entries).remove(&key)?;
        // The session it gets back after the takeover starts anew: announced again when short.
        lock(&self.short).remove(&key);
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

    /// Whether `main` has a standby session for `channel`.
    pub fn has(&self, main: &str, channel: u32) -> bool {
        lock(&self.entries).contains_key(&(main.to_owned(), channel))
    }

    /// Every standby session's state.
    pub fn status(&self) -> Vec<StandbyView> {
        lock(&self.entries).iter().map(|((main, ch), e)| view(main, *ch, e)).collect()
    }

    /// Splits the budget across hot sessions by their measured bitrate; says which channels
    /// became short, and which are no longer.
    fn rebalance(&self) {
        self.rebalance_by(|e| e.ingest.stats.snapshot().bitrate_bps);
    }

    /// `rebalance` with each session's bitrate read by `bitrate_of` (0: not measured yet).
    fn rebalance_by(&self, bitrate_of: impl Fn(&Entry) -> u64) {
        let views = {
            let entries = lock(&self.entries);
            let hot: Vec<(&(String, u32), &Entry, u64)> = entries
                .iter()
                .filter(|(_, e)| e.mode == StandbyMode::Hot)
                .map(|(k, e)| {
                    let bps = bitrate_of(e);
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
        let now: BTreeSet<(String, u32)> = views.iter().filter(|v| v.prebuffer_short).map(|v| (v.main.clone(), v.channel)).collect();
        let mut before = lock(&self.short);
        // Per main, the channels that became short and those that hold their span again (a
        // session handed to a takeover was forgotten by `take`: its successor starts anew).
        let mut became: BTreeMap<&str, Vec<&StandbyView>> = BTreeMap::new();
        let mut restored: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for v in &views {
            let key = (v.main.clone(), v.channel);
            match (v.prebuffer_short, before.contains(&key)) {
                (true, false) => became.entry(&v.main).or_default().push(v),
                (false, true) => restored.entry(&v.main).or_default().push(v.channel),
                _ => {}
            }
        }
        for (m, chans) in &became {
            let least = chans.iter().map(|v| v.prebuffer_seconds).fold(f64::INFINITY, f64::min);
            let all_short = now.iter().filter(|k| k.0 == *m).count();
            warn!(main = %m, channels = chans.len(), short_channels = all_short, held_s = least, budget = self.budget, "prebuffer_memory too small: standby buffers shortened");
            self.events.emit("prebuffer_short", Some(m), None, json!({
                "channels": chans.iter().map(|v| v.channel).collect::<Vec<_>>(),
                "short_channels": all_short,
                "prebuffer_memory": self.budget,
                "least_seconds": (least * 10.0).round() / 10.0,
                "reason": "server.prebuffer_memory split by bitrate holds less than the main's prebuffer",
            }));
        }
        for (m, chans) in &restored {
            info!(main = %m, channels = chans.len(), "standby buffers hold their whole prebuffer again");
            self.events.emit("prebuffer_restored", Some(m), None, json!({ "channels": chans, "prebuffer_memory": self.budget }));
        }
        *before = now;
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
        frames: snap.frames,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use understudy_recorder::{Codec, Frame, VideoParams};

    use super::*;
    use crate::config::Config;
    use crate::station::Station;

    /// A station on a temporary store and a `Standbys` without its budget task (the test runs
    /// the rounds), for main `nvr-a` with two hot cameras on channels 1 and 2 whose URLs refuse
    /// connections (the sessions sit in backoff; the test feeds their buffers itself).
    async fn setup(budget: u64) -> (tempfile::TempDir, Arc<Station>, Standbys, Main, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nname = \"t\"\nchannels = 2\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\nprebuffer_memory = {budget}\n\n[[volume]]\npath = {:?}\n\n\
             [[main]]\nname = \"nvr-a\"\nprobe = \"tcp://127.0.0.1:9\"\nstandby = \"hot\"\nprebuffer = \"10s\"\n\n\
             [[main.camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:9/1\"\n\n[[main.camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:9/2\"\n",
            dir.path().join("state").display().to_string(),
            dir.path().join("disk").display().to_string(),
        );
        let cfg = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
        let shutdown = CancellationToken::new();
        let station = Station::open(cfg, shutdown.clone()).await.unwrap();
        let server = station.cfg.server.clone();
        let main = station.cfg.mains[0].clone();
        let events = EventSink::new(station.store.clone(), "t".into(), &[]);
        let s = Standbys { budget: server.prebuffer_memory, server, events, shutdown: shutdown.clone(), entries: Mutex::default(), short: Mutex::default() };
        s.start_main(&main, &[]);
        (dir, station, s, main, shutdown)
    }

    /// `secs` of 25 fps frames at `bps`, a key frame every second, starting at `from_s`.
    fn feed(s: &Standbys, channel: u32, bps: u64, from_s: i64, secs: i64) {
        let params = Arc::new(VideoParams {
            codec: Codec::H264, rfc6381: "avc1.640028".into(), width: 16, height: 16, sample_entry: Bytes::new(), sps: None, frame_90k: None,
        });
        let entries = lock(&s.entries);
        let e = entries.get(&("nvr-a".to_owned(), channel)).unwrap();
        let mut b = lock(&e.buffered);
        let size = usize::try_from(bps / 8 / 25).unwrap();
        for i in from_s * 25..(from_s + secs) * 25 {
            b.buf.push(IngestItem::Frame(Frame {
                time_90k: i * 3600, key: i % 25 == 0, data: Bytes::from(vec![0u8; size]), params: params.clone(), loss: 0, cts_offset: 0, audio: None,
            }));
        }
    }

    fn view_of(s: &Standbys, channel: u32) -> StandbyView {
        s.status().into_iter().find(|v| v.channel == channel).unwrap()
    }

    /// Channel 1 at 1 Mbit/s, channel 2 at 3 Mbit/s.
    fn by_channel(e: &Entry) -> u64 {
        if e.ingest.stats.snapshot().channel == 1 { 1_000_000 } else { 3_000_000 }
    }

    fn short_events(station: &Station) -> Vec<(String, Vec<u64>)> {
        station
            .store
            .events_since(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.starts_with("prebuffer_"))
            .map(|e| (e.kind, e.detail["channels"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect()))
            .collect()
    }

    #[tokio::test]
    async fn the_budget_is_split_by_bitrate() {
        // 5 s of both cameras: 625 kB + 1,875 kB. Split by bitrate, each holds about 5 s of
        // its 10 s; split evenly, the 1 Mbit/s camera would hold all 10 s and the other 3.3 s.
        let budget = 2_500_000;
        let (_dir, station, s, _main, shutdown) = setup(budget).await;
        // Before any round, an equal share each.
        assert_eq!(view_of(&s, 1).prebuffer_limit_bytes, budget / 2);
        s.rebalance_by(by_channel);
        let (v1, v2) = (view_of(&s, 1), view_of(&s, 2));
        assert_eq!((v1.prebuffer_limit_bytes, v2.prebuffer_limit_bytes), (625_000, 1_875_000));
        feed(&s, 1, 1_000_000, 0, 10);
        feed(&s, 2, 3_000_000, 0, 10);
        s.rebalance_by(by_channel);
        for ch in [1, 2] {
            let v = view_of(&s, ch);
            assert!(v.prebuffer_short && v.prebuffer_bytes <= v.prebuffer_limit_bytes, "{v:?}");
            assert!((3.5..=5.0).contains(&v.prebuffer_seconds), "channel {ch} holds {} s: {v:?}", v.prebuffer_seconds);
        }
        // A camera that has not measured its bitrate counts as ASSUMED_BPS (4 Mbit/s).
        s.rebalance_by(|e| if e.ingest.stats.snapshot().channel == 1 { 0 } else { 12_000_000 });
        assert_eq!((view_of(&s, 1).prebuffer_limit_bytes, view_of(&s, 2).prebuffer_limit_bytes), (625_000, 1_875_000));
        shutdown.cancel();
        station.close().await.unwrap();
    }

    #[tokio::test]
    async fn each_channel_that_becomes_short_is_announced() {
        let (_dir, station, s, _main, shutdown) = setup(2_500_000).await;
        s.rebalance_by(by_channel);
        assert!(short_events(&station).is_empty());
        // Only channel 2 is full enough to be short.
        feed(&s, 2, 3_000_000, 0, 10);
        s.rebalance_by(by_channel);
        assert_eq!(short_events(&station), vec![("prebuffer_short".to_owned(), vec![2])]);
        // Nothing new: no new event.
        s.rebalance_by(by_channel);
        assert_eq!(short_events(&station).len(), 1);
        // Channel 1 becomes short in a later round: announced on its own.
        feed(&s, 1, 1_000_000, 0, 10);
        s.rebalance_by(by_channel);
        assert_eq!(short_events(&station)[1..], [("prebuffer_short".to_owned(), vec![1])]);
        // Channel 1 gets nearly all the budget and fills its 10 s again: restored.
        let ch1_heavy = |e: &Entry| if e.ingest.stats.snapshot().channel == 1 { 100_000_000 } else { 1 };
        s.rebalance_by(ch1_heavy);
        feed(&s, 1, 1_000_000, 10, 11);
        assert!(!view_of(&s, 1).prebuffer_short, "{:?}", view_of(&s, 1));
        s.rebalance_by(ch1_heavy);
        assert_eq!(short_events(&station)[2..], [("prebuffer_restored".to_owned(), vec![1])]);
        shutdown.cancel();
        station.close().await.unwrap();
    }

    /// A takeover channel that cannot be opened leaves the standby session where it was, its
    /// footage held; one that opens takes it.
    #[tokio::test]
    async fn a_channel_that_cannot_start_keeps_its_standby() {
        let (_dir, station, s, main, shutdown) = setup(2_500_000).await;
        feed(&s, 1, 1_000_000, 0, 3);
        // Channel 1 is busy (something already records it).
        station.start(&main.cameras[0]).unwrap();
        let r = crate::failover::controller::start_or_keep_standby(&station, &s, "nvr-a", &main.cameras[0]);
        assert!(matches!(r, Err(crate::station::StationError::ChannelBusy { channel: 1, .. })), "{:?}", r.err());
        assert!(s.has("nvr-a", 1), "the standby session was taken and lost");
        assert!(view_of(&s, 1).prebuffer_seconds >= 2.0, "{:?}", view_of(&s, 1));
        // Channel 2 is free: its session is handed over.
        assert!(crate::failover::controller::start_or_keep_standby(&station, &s, "nvr-a", &main.cameras[1]).is_ok());
        assert!(!s.has("nvr-a", 2));
        shutdown.cancel();
        station.close().await.unwrap();
    }
}
