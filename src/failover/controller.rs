//! The failover controller: turns probe outcomes into takeovers, queues, and returns to standby.
//!
//! One probe task per main sends outcomes here; this task alone owns every main's `Health` and
//! the map of which main holds which failover channel, so decisions are made one at a time and
//! in order. Recording itself goes through the `Station`.

mod partial;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use understudy_storage::{DurableStats, HistogramSnapshot, LatencyHistogram};

use super::events::EventSink;
use super::health::{Health, StateName, Thresholds, Transition};
use super::persist::FailedSet;
use super::probe::{probe, ProbeAuth};
use super::recording::Checker;
pub use partial::ChannelRecording;
use partial::{health_loop, ChannelWatch, HealthReport};
use super::standbys::{StandbyView, Standbys};
use crate::config::{Main, Probe};
use crate::station::Station;

/// Probe failures are posted as events at most this often per main.
const PROBE_EVENT_EVERY: Duration = Duration::from_secs(60);

/// What the API shows of a main.
#[derive(Clone, Debug, Serialize)]
pub struct MainStatus {
    pub name: String,
    pub state: StateName,
    /// The probe target; None where the API hides it (no `config` permission).
    pub probe: Option<String>,
    pub last_ok: Option<String>,
    pub last_error: Option<String>,
    pub failed_at: Option<String>,
    pub channels: Vec<u32>,
    pub priority: i32,
    /// The recording health source (`health = "…"`), if any.
    pub health: Option<String>,
    /// Why the latest recording health check gave no verdict.
    pub health_error: Option<String>,
    /// Channels the main may not be recording, or does not: each with its state here.
    pub not_recording: Vec<ChannelRecording>,
}

struct MainEntry {
    cfg: Main,
    health: Health,
    last_ok: Option<SystemTime>,
    last_error: Option<String>,
    last_probe_event: Option<Instant>,
    /// Failed probes in a row (whatever the state); 0 after a good one.
    consecutive_failures: u32,
    /// When the first of those failed probes started: the earliest the main was seen down.
    down_since: Option<SystemTime>,
    /// The failure instant of the latest failure declared (`down_since` when it was declared):
    /// what a takeover's footage start and gap are measured from.
    failure_began: Option<SystemTime>,
    probe_latency: Arc<LatencyHistogram>,
    takeovers: u64,
    /// Of the latest takeover: from the failure being declared to the last of its channels'
    /// first durable fragment so far, in ms; `u64::MAX` = none yet.
    last_takeover_latency_ms: Arc<AtomicU64>,
    /// `health = "…"` as shown in status; None without one.
    health_label: Option<String>,
    /// Why the latest recording health check gave no verdict.
    health_error: Option<String>,
    /// Failover channel → whether the main records it, from its recording health.
    recording: BTreeMap<u32, ChannelWatch>,
}

/// What `/metrics` shows of a main (see `api::metrics`).
#[derive(Clone, Debug)]
pub struct MainMetrics {
    pub name: String,
    pub state: StateName,
    pub consecutive_failures: u32,
    pub probe_latency: HistogramSnapshot,
    pub takeovers: u64,
    pub last_takeover_latency: Option<Duration>,
}

/// A probe task's report: which main, the outcome, how long the probe took.
type ProbeReport = (usize, Result<(), String>, Duration);

impl MainEntry {
    fn thresholds(&self) -> Thresholds {
        Thresholds { fail_after: self.cfg.fail_after, recover_after: self.cfg.recover_after }
    }
    fn channels(&self) -> Vec<u32> {
        self.cfg.cameras.iter().map(|c| c.channel).collect()
    }
}

struct Shared {
    mains: Vec<MainEntry>,
    /// When the decision loop last handled a probe report (for the systemd watchdog).
    last_decision: Instant,
    /// Failover channel → index of the main whose takeover holds it.
    owners: HashMap<u32, usize>,
}

/// The running controller.
pub struct Failover {
    station: Arc<Station>,
    events: EventSink,
    persist: FailedSet,
    shared: Mutex<Shared>,
    /// Hot and warm mains' standby sessions.
    standbys: Arc<Standbys>,
}

pub fn probe_label(p: &Probe) -> String {
    match p {
        Probe::Tcp { host, port } => format!("tcp://{host}:{port}"),
        Probe::Http { url } | Probe::Rtsp { url } => url.to_string(),
    }
}

fn fmt_time(t: SystemTime) -> String {
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    crate::commands::time::format_90k(ms * 90)
}

impl Failover {
    /// Starts one probe task per main and the decision loop. Mains that were failed when the
    /// box stopped resume one probe away from takeover.
    pub fn start(station: Arc<Station>, events: EventSink, shutdown: CancellationToken) -> Arc<Failover> {
        let persist = FailedSet::new(&station.cfg.server.state_dir);
        let was_failed = persist.load();
        let mains: Vec<MainEntry> = station
            .cfg
            .mains
            .iter()
            .map(|m| {
                let t = Thresholds { fail_after: m.fail_after, recover_after: m.recover_after };
                let health = if was_failed.contains(&m.name) { Health::resumed(t) } else { Health::Ok };
                MainEntry {
                    cfg: m.clone(), health, last_ok: None, last_error: None, last_probe_event: None, consecutive_failures: 0,
                    down_since: None, failure_began: None,
                    probe_latency: Arc::default(), takeovers: 0, last_takeover_latency_ms: Arc::new(AtomicU64::new(u64::MAX)),
                    health_label: m.health.as_ref().map(|h| h.label()), health_error: None, recording: BTreeMap::new(),
                }
            })
            .collect();
        for m in mains.iter().filter(|m| m.health != Health::Ok) {
            events.emit("resume_pending", Some(&m.cfg.name), None, json!({
                "reason": "the main was failed when this box stopped; one failed probe resumes the takeover"
            }));
        }
        let standbys = Standbys::new(&station.cfg.server, events.clone(), shutdown.clone());
        for m in &station.cfg.mains {
            standbys.start_main(m, &[]);
        }
        let fo = Arc::new(Failover { station, events, persist, standbys, shared: Mutex::new(Shared { mains, last_decision: Instant::now(), owners: HashMap::new() }) });
        let (tx, rx) = mpsc::channel(256);
        for (i, m) in fo.station.cfg.mains.iter().enumerate() {
            tokio::spawn(probe_loop(i, m.clone(), tx.clone(), shutdown.clone()));
        }
        let (htx, hrx) = mpsc::channel(256);
        fo.start_health_checks(htx, &shutdown);
        tokio::spawn(fo.clone().decide_loop(rx, hrx, shutdown));
        fo
    }

    /// One recording-health task per main with `health = "…"`; a source that cannot be set up
    /// (unreadable `health_ca`) is reported in its main's status and as an event.
    fn start_health_checks(&self, tx: mpsc::Sender<HealthReport>, shutdown: &CancellationToken) {
        for (i, m) in self.station.cfg.mains.iter().enumerate() {
            let Some(src) = &m.health else { continue };
            match Checker::new(m, src) {
                Ok(c) => {
                    tokio::spawn(health_loop(i, c, m.interval, m.timeout, tx.clone(), shutdown.clone()));
                }
                Err(e) => {
                    self.events.emit("health_check_failed", Some(&m.name), None, json!({ "error": e, "source": src.label() }));
                    self.lock().mains[i].health_error = Some(e);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Vec<MainStatus> {
        let s = self.lock();
        s.mains
            .iter()
            .enumerate()
            .map(|(i, m)| MainStatus {
                name: m.cfg.name.clone(),
                state: m.health.name(),
                probe: Some(probe_label(&m.cfg.probe)),
                last_ok: m.last_ok.map(fmt_time),
                last_error: m.last_error.clone(),
                failed_at: m.health.failed_at().map(fmt_time),
                channels: m.channels(),
                priority: m.cfg.priority,
                health: m.health_label.clone(),
                health_error: m.health_error.clone(),
                not_recording: m.recording_view(&s.owners, i),
            })
            .collect()
    }

    /// Per-main counters for `/metrics`.
    pub fn metrics(&self) -> Vec<MainMetrics> {
        let s = self.lock();
        s.mains
            .iter()
            .map(|m| MainMetrics {
                name: m.cfg.name.clone(),
                state: m.health.name(),
                consecutive_failures: m.consecutive_failures,
                probe_latency: m.probe_latency.snapshot(),
                takeovers: m.takeovers,
                last_takeover_latency: match m.last_takeover_latency_ms.load(Ordering::Acquire) {
                    u64::MAX => None,
                    ms => Some(Duration::from_millis(ms)),
                },
            })
            .collect()
    }

    /// Whether the decision loop is keeping up: it handled a probe report within twice the
    /// slowest main's probe period (interval + timeout) plus `grace`.
    pub fn making_progress(&self, grace: Duration) -> bool {
        let s = self.lock();
        let period = s.mains.iter().map(|m| m.cfg.interval + m.cfg.timeout).max().unwrap_or_default();
        s.last_decision.elapsed() <= period * 2 + grace
    }

    /// The main whose takeover holds `channel`, if any.
    pub fn owner_of(&self, channel: u32) -> Option<String> {
        let s = self.lock();
        s.owners.get(&channel).map(|&i| s.mains[i].cfg.name.clone())
    }

    async fn decide_loop(self: Arc<Self>, mut rx: mpsc::Receiver<ProbeReport>, mut hrx: mpsc::Receiver<HealthReport>, shutdown: CancellationToken) {
        loop {
            let (i, outcome, took) = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
                Some((i, verdict)) = hrx.recv() => {
                    self.on_health(i, verdict).await;
                    continue;
                }
            };
            {
                let mut s = self.lock();
                s.last_decision = Instant::now();
                s.mains[i].probe_latency.observe(took);
            }
            self.on_probe(i, outcome, took).await;
        }
        // Shutdown: the station closes every channel; what was failed stays in `persist` so a
        // restart resumes it.
    }

    async fn on_probe(&self, i: usize, outcome: Result<(), String>, took: Duration) {
        let now = SystemTime::now();
        let (name, transition) = {
            let mut s = self.lock();
            let m = &mut s.mains[i];
            match &outcome {
                Ok(()) => {
                    m.last_ok = Some(now);
                    m.consecutive_failures = 0;
                    m.down_since = None;
                }
                Err(e) => {
                    m.last_error = Some(e.clone());
                    m.consecutive_failures = m.consecutive_failures.saturating_add(1);
                    m.down_since.get_or_insert(now.checked_sub(took).unwrap_or(now));
                }
            }
            let t = m.thresholds();
            let tr = m.health.on_probe(outcome.is_ok(), now, t);
            if let Transition::Failed { failed_at } = tr {
                m.failure_began = Some(m.down_since.unwrap_or(failed_at));
            }
            // Probe failures while failed are rate-limited events; the first one always goes out.
            if let Err(e) = &outcome {
                let due = m.last_probe_event.is_none_or(|t| t.elapsed() >= PROBE_EVENT_EVERY);
                if due || tr == Transition::BecameSuspect {
                    m.last_probe_event = Some(Instant::now());
                    self.events.emit("probe_failed", Some(&m.cfg.name), None, json!({ "error": e, "state": m.health.name() }));
                } else {
                    debug!(main = %m.cfg.name, error = %e, "probe failed");
                }
            }
            (m.cfg.name.clone(), tr)
        };
        match transition {
            Transition::None | Transition::BecameSuspect => {}
            Transition::BlipCleared { failures } => {
                self.events.emit("probe_recovered", Some(&name), None, json!({ "after_failures": failures, "takeover": false }));
                // A main resumed as failed after a restart may have come back meanwhile.
                self.persist_failed();
            }
            Transition::Failed { failed_at } => {
                let began = self.lock().mains[i].failure_began.unwrap_or(failed_at);
                self.events.emit("main_failed", Some(&name), None, json!({
                    "failed_at": fmt_time(failed_at), "down_since": fmt_time(began),
                }));
                self.persist_failed();
                self.try_take_over(i, failed_at);
            }
            Transition::Recovered { failed_at, was_taken_over } => {
                let down_for = now.duration_since(failed_at).unwrap_or_default();
                self.events.emit("main_recovered", Some(&name), None, json!({ "down_seconds": down_for.as_secs_f64() }));
                if was_taken_over {
                    self.release(i).await;
                }
                self.persist_failed();
                self.schedule_waiting();
                self.reconcile_all().await;
            }
        }
    }

    fn persist_failed(&self) {
        let failed: Vec<String> = {
            let s = self.lock();
            s.mains.iter().filter(|m| m.health.failed_at().is_some()).map(|m| m.cfg.name.clone()).collect()
        };
        if let Err(e) = self.persist.save(&failed) {
            warn!(error = %e, "could not persist which mains are failed; a restart would wait a full fail_after");
        }
    }

    /// Takes over main `i` if all its channels are free; otherwise it waits.
    fn try_take_over(&self, i: usize, failed_at: SystemTime) {
        let already: Vec<u32>;
        let (name, cams, holders, takeover_latency, began) = {
            let mut s = self.lock();
            let chans = s.mains[i].channels();
            // Channels of this main's own partial takeover are already recording: kept as they are.
            already = chans.iter().filter(|c| s.owners.get(c) == Some(&i)).copied().collect();
            let mut holders: Vec<String> = chans.iter().filter_map(|c| s.owners.get(c)).filter(|&&o| o != i).map(|&o| s.mains[o].cfg.name.clone()).collect();
            holders.sort();
            holders.dedup();
            if holders.is_empty() {
                for c in &chans {
                    s.owners.insert(*c, i);
                }
            }
            let taken = holders.is_empty();
            let m = &mut s.mains[i];
            m.health.declare(taken);
            if taken {
                m.takeovers += 1;
                m.last_takeover_latency_ms.store(u64::MAX, Ordering::Release);
            }
            (m.cfg.name.clone(), m.cfg.cameras.clone(), holders, m.last_takeover_latency_ms.clone(), m.failure_began.unwrap_or(failed_at))
        };
        if !holders.is_empty() {
            self.events.emit("waiting", Some(&name), None, json!({
                "reason": "its failover channels are held by another takeover",
                "held_by": holders,
                "channels": cams.iter().map(|c| c.channel).collect::<Vec<_>>(),
            }));
            return;
        }
        let started = Instant::now();
        // Every camera starts at once: `start` only spawns the ingest task and writer, so the
        // RTSP handshakes of all channels run concurrently.
        let mut ok = Vec::new();
        for cam in cams.iter().filter(|c| !already.contains(&c.channel)) {
            match self.start_camera(&name, cam) {
                Ok(durable) => ok.push((cam.clone(), durable)),
                Err(e) => self.events.emit("channel_error", Some(&name), Some(cam.channel), json!({
                    "camera": cam.label, "error": e.to_string(), "standby_kept": self.standbys.has(&name, cam.channel),
                })),
            }
        }
        self.events.emit("takeover_started", Some(&name), None, json!({
            "channels": cams.iter().map(|c| c.channel).collect::<Vec<_>>(),
            "cameras": cams.len(),
            "started": ok.len(),
            "start_ms": started.elapsed().as_secs_f64() * 1e3,
        }));
        for (cam, durable) in ok {
            let events = self.events.clone();
            let main = name.clone();
            let takeover_latency = takeover_latency.clone();
            tokio::spawn(async move {
                // Report each channel's first durable fragment with its latency since the
                // failure was declared (`failed_at`; for a main that waited, its declaration, not
                // when the channels came free) and since the failure instant (`began`, when
                // the first failed probe started), and where its footage starts relative to the
                // failure instant; give up quietly after 10 minutes (the channel's own state already
                // says it is not recording).
                let deadline = Instant::now() + Duration::from_secs(600);
                while Instant::now() < deadline {
                    if let Some(t) = durable.first_durable_at() {
                        let latency = t.duration_since(failed_at).unwrap_or_default();
                        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX - 1);
                        // The takeover's latency is its slowest channel's so far.
                        let _ = takeover_latency.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                            Some(if old == u64::MAX { ms } else { old.max(ms) })
                        });
                        let footage_start_ms = footage_start_ms(&durable, began);
                        let from_failure = t.duration_since(began).unwrap_or_default();
                        events.emit("first_fragment", Some(&main), Some(cam.channel), json!({
                            "camera": cam.label, "source_channel": cam.source_channel,
                            "latency_ms": (latency.as_secs_f64() * 1e3).round(),
                            "latency_from_failure_ms": (from_failure.as_secs_f64() * 1e3).round(),
                            "down_since": fmt_time(began),
                            "footage_start_ms": footage_start_ms,
                            "gap_ms": footage_start_ms.map(|ms| ms.max(0)),
                        }));
                        return;
                    }
                    if Arc::strong_count(&durable) == 1 {
                        return; // the channel was stopped before anything became durable
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    }

    /// Stops main `i`'s channels, reports footage totals and frees the channels.
    ///
    /// The totals are read after the channels stopped, when their last segments are closed and
    /// cataloged, so they are exactly what the catalog holds of this takeover. The gap is from
    /// the failure instant to the first footage, per channel; the takeover's is its worst.
    async fn release(&self, i: usize) {
        let (name, chans, began) = {
            let s = self.lock();
            let m = &s.mains[i];
            // Channels the main still does not record stay with its partial takeover.
            let keep = m.not_recorded();
            let chans: Vec<u32> = m.channels().into_iter().filter(|c| !keep.contains(c)).collect();
            (m.cfg.name.clone(), chans, m.failure_began)
        };
        let stats: Vec<(u32, Arc<DurableStats>)> = self
            .station
            .snapshots()
            .into_iter()
            .filter(|(s, _)| chans.contains(&s.channel))
            .map(|(s, d)| (s.channel, d))
            .collect();
        self.station.stop_many(&chans).await;
        let cfg = {
            let mut s = self.lock();
            s.owners.retain(|c, o| *o != i || !chans.contains(c));
            let held: Vec<u32> = s.owners.iter().filter(|(_, o)| **o == i).map(|(c, _)| *c).collect();
            (s.mains[i].cfg.clone(), held)
        };
        // Standing by again: hot and warm mains get their standby sessions back (not on the
        // channels a partial takeover still records).
        self.standbys.start_main(&cfg.0, &cfg.1);
        let per_channel: Vec<(u32, u64, u64, Option<i64>)> = stats
            .iter()
            .map(|(ch, d)| (*ch, d.frames_durable(), d.bytes_durable(), began.and_then(|b| footage_start_ms(d, b))))
            .collect();
        let frames: u64 = per_channel.iter().map(|t| t.1).sum();
        let bytes: u64 = per_channel.iter().map(|t| t.2).sum();
        let gap_ms = per_channel.iter().filter_map(|t| t.3).map(|ms| ms.max(0)).max();
        self.events.emit("takeover_ended", Some(&name), None, json!({
            "channels": chans, "frames": frames, "bytes": bytes, "gap_ms": gap_ms,
            "down_since": began.map(fmt_time),
            "per_channel": per_channel.iter().map(|t| json!({
                "channel": t.0, "frames": t.1, "bytes": t.2,
                "footage_start_ms": t.3, "gap_ms": t.3.map(|ms| ms.max(0)),
            })).collect::<Vec<_>>(),
        }));
    }

    /// Starts recording one of `main`'s cameras at takeover: from its standby session when it
    /// has one (hot: the held footage first; warm: PLAY now), otherwise by connecting afresh.
    /// The standby session is taken only once the channel is open: when it cannot be, the
    /// session stays a standby, its footage held (see `start_or_keep_standby`).
    fn start_camera(&self, main: &str, cam: &crate::config::Camera) -> Result<Arc<DurableStats>, crate::station::StationError> {
        start_or_keep_standby(&self.station, &self.standbys, main, cam)
    }

    /// Every standby session's state (status and metrics).
    pub fn standbys(&self) -> Vec<StandbyView> {
        self.standbys.status()
    }

    /// Gives freed channels to waiting mains: higher priority first, then the earliest failure.
    fn schedule_waiting(&self) {
        let mut waiting: Vec<(i32, SystemTime, usize)> = {
            let s = self.lock();
            s.mains
                .iter()
                .enumerate()
                .filter_map(|(i, m)| match m.health {
                    Health::Waiting { failed_at, .. } => Some((-m.cfg.priority, failed_at, i)),
                    _ => None,
                })
                .collect()
        };
        waiting.sort();
        for (_, failed_at, i) in waiting {
            self.try_take_over(i, failed_at);
        }
    }
}

/// Records `cam` (of `main`) on its channel from its standby session, if it has one. The
/// session is handed over only once the channel is free and its writer made; when the start
/// fails before that, the session keeps standing by with what it holds, and the log says so.
pub(super) fn start_or_keep_standby(station: &Station, standbys: &Standbys, main: &str, cam: &crate::config::Camera) -> Result<Arc<DurableStats>, crate::station::StationError> {
    let mut taken = false;
    let r = station.start_with(cam, || {
        taken = true;
        standbys.take(main, cam.channel)
    });
    if let Err(e) = &r {
        if !taken && standbys.has(main, cam.channel) {
            warn!(main, channel = cam.channel, camera = %cam.label, error = %e, "takeover channel could not start: its standby session goes on holding its footage");
        }
    }
    r
}

/// Where a channel's durable footage starts relative to the failure instant, in ms: negative
/// when it reaches back before the failure; None before anything is durable.
fn footage_start_ms(durable: &DurableStats, failure: SystemTime) -> Option<i64> {
    let start_90k = durable.first_start_90k()?;
    let failure_ms = match failure.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(_) => return None,
    };
    Some(start_90k / 90 - failure_ms)
}

/// Probes one main forever at its interval and reports each outcome.
async fn probe_loop(i: usize, m: Main, tx: mpsc::Sender<ProbeReport>, shutdown: CancellationToken) {
    let auth = ProbeAuth::of(&m);
    let mut tick = tokio::time::interval(m.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = probe(&m.probe, &auth, m.timeout) => r,
        };
        if tx.send((i, outcome, started.elapsed())).await.is_err() {
            return;
        }
    }
}
