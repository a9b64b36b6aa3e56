//! Partial takeover: recording here just the channels a main answers for but does not record.
//!
//! A health task per main (with `health = "…"`) asks the main which of its channels it records
//! (`failover::recording`) and sends the verdicts to the decision loop. Each channel of the main
//! has its own `Health` state machine fed by those verdicts, with the main's `fail_after` and
//! `recover_after`, so a blip never moves a channel. A channel declared failed is recorded here
//! while the main as a whole stays with its probe's verdict; it returns to the main once the
//! main has recorded it again `recover_after` checks in a row. A whole-main failure still takes
//! over every channel (see `try_take_over`), keeping the channels already recorded here running.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Failover, MainEntry};
use crate::config::Camera;
use crate::failover::health::{Health, StateName, Transition};
use crate::failover::recording::{Checker, Verdict};

/// A health task's report: which main, and the verdict or why there is none.
pub(super) type HealthReport = (usize, Result<Verdict, String>);

/// One failover channel as the main's recording health sees it.
#[derive(Clone, Debug)]
pub(super) struct ChannelWatch {
    pub health: Health,
    /// Why the latest check said the main does not record it (None when it does).
    pub reason: Option<String>,
}

/// What the API shows of a channel the main is not (or not surely) recording.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelRecording {
    pub channel: u32,
    pub source_channel: u32,
    /// `suspect` (not recorded lately, not yet `fail_after` checks), `taken_over` (recorded
    /// here), `waiting` (failed, but the channel is held by another main's takeover).
    pub state: StateName,
    pub reason: Option<String>,
}

impl MainEntry {
    /// Failover channels whose main is declared not to record them.
    pub(super) fn not_recorded(&self) -> Vec<u32> {
        self.recording.iter().filter(|(_, w)| w.health.failed_at().is_some()).map(|(c, _)| *c).collect()
    }

    pub(super) fn recording_view(&self, owners: &std::collections::HashMap<u32, usize>, me: usize) -> Vec<ChannelRecording> {
        self.cfg
            .cameras
            .iter()
            .filter_map(|c| {
                let w = self.recording.get(&c.channel)?;
                let state = match (&w.health, owners.get(&c.channel)) {
                    (Health::Ok, _) => return None,
                    (Health::Suspect { .. }, _) => StateName::Suspect,
                    (_, Some(&o)) if o == me => StateName::TakenOver,
                    _ => StateName::Waiting,
                };
                Some(ChannelRecording { channel: c.channel, source_channel: c.source_channel, state, reason: w.reason.clone() })
            })
            .collect()
    }
}

/// Asks one main's health source forever at the main's probe interval.
pub(super) async fn health_loop(i: usize, checker: Checker, interval: Duration, timeout: Duration, tx: mpsc::Sender<HealthReport>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let verdict = tokio::select! {
            _ = shutdown.cancelled() => return,
            v = checker.check(timeout) => v,
        };
        if tx.send((i, verdict)).await.is_err() {
            return;
        }
    }
}

impl Failover {
    /// Counts one recording-health verdict per channel, then records or returns channels.
    pub(super) async fn on_health(&self, i: usize, outcome: Result<Verdict, String>) {
        let now = SystemTime::now();
        let mut failed: Vec<(u32, u32, String)> = Vec::new();
        let name = {
            let mut s = self.lock();
            let m = &mut s.mains[i];
            let name = m.cfg.name.clone();
            let verdict = match outcome {
                Err(e) => {
                    // No verdict: the probe alone says whether the main is up. Reported once
                    // per run of errors.
                    if m.health_error.is_none() {
                        self.events.emit("health_check_failed", Some(&name), None, json!({ "error": e, "source": m.health_label }));
                    } else {
                        debug!(main = %name, error = %e, "recording health check failed");
                    }
                    m.health_error = Some(e);
                    return;
                }
                Ok(v) => v,
            };
            m.health_error = None;
            let t = m.thresholds();
            let cams: Vec<Camera> = m.cfg.cameras.clone();
            for cam in &cams {
                let bad = verdict.not_recording.get(&cam.source_channel);
                let w = m.recording.entry(cam.channel).or_insert(ChannelWatch { health: Health::Ok, reason: None });
                if let Some(b) = bad {
                    w.reason = Some(b.clone());
                }
                let tr = w.health.on_probe(bad.is_none(), now, t);
                if w.health == Health::Ok {
                    w.reason = None;
                }
                match tr {
                    Transition::Failed { .. } => {
                        w.health.declare(true);
                        failed.push((cam.channel, cam.source_channel, bad.cloned().unwrap_or_default()));
                    }
                    Transition::BecameSuspect => {
                        debug!(main = %name, channel = cam.channel, camera = %cam.label, reason = ?bad, "main may not be recording this channel");
                    }
                    _ => {}
                }
            }
            name
        };
        if !failed.is_empty() {
            self.events.emit("not_recording", Some(&name), None, json!({
                "channels": failed.iter().map(|f| f.0).collect::<Vec<_>>(),
                "source_channels": failed.iter().map(|f| f.1).collect::<Vec<_>>(),
                "reasons": failed.iter().map(|f| json!({ "channel": f.0, "reason": f.2 })).collect::<Vec<_>>(),
            }));
        }
        if self.reconcile_partial(i).await {
            // Freed channels may let a waiting main's takeover start.
            self.schedule_waiting();
        }
    }

    /// Makes main `i`'s partial takeover match its channels' states: records the channels it
    /// does not record (when free), returns those it records again. Nothing to do while the
    /// main as a whole is failed: its whole takeover (or wait) covers every channel. Returns
    /// whether channels were freed.
    pub(super) async fn reconcile_partial(&self, i: usize) -> bool {
        let (name, start, mut stop) = {
            let mut s = self.lock();
            if s.mains[i].health.failed_at().is_some() {
                return false;
            }
            let wanted = s.mains[i].not_recorded();
            let start: Vec<Camera> = s.mains[i].cfg.cameras.iter().filter(|c| wanted.contains(&c.channel) && !s.owners.contains_key(&c.channel)).cloned().collect();
            let stop: Vec<u32> = s.owners.iter().filter(|(c, o)| **o == i && !wanted.contains(c)).map(|(c, _)| *c).collect();
            for c in &start {
                s.owners.insert(c.channel, i);
            }
            (s.mains[i].cfg.name.clone(), start, stop)
        };
        if !stop.is_empty() {
            stop.sort_unstable();
            let durable: BTreeMap<u32, (u64, u64)> = self
                .station
                .snapshots()
                .into_iter()
                .filter(|(s, _)| stop.contains(&s.channel))
                .map(|(s, d)| (s.channel, (d.frames_durable(), d.bytes_durable())))
                .collect();
            self.station.stop_many(&stop).await;
            let (cfg, held) = {
                let mut s = self.lock();
                s.owners.retain(|c, o| !(*o == i && stop.contains(c)));
                let held: Vec<u32> = s.owners.iter().filter(|(_, o)| **o == i).map(|(c, _)| *c).collect();
                (s.mains[i].cfg.clone(), held)
            };
            // The returned channels stand by again (hot/warm mains); the others are still ours.
            self.standbys.start_main(&cfg, &held);
            self.events.emit("channel_returned", Some(&name), None, json!({
                "channels": stop,
                "reason": "the main records them again",
                "per_channel": durable.iter().map(|(c, (f, b))| json!({ "channel": c, "frames": f, "bytes": b })).collect::<Vec<_>>(),
            }));
        }
        if !start.is_empty() {
            let began = Instant::now();
            let mut started = Vec::new();
            for cam in &start {
                // From the standby session when the main has one: its held footage first.
                match self.start_camera(&name, cam) {
                    Ok(_) => started.push(cam.channel),
                    Err(e) => {
                        self.lock().owners.remove(&cam.channel);
                        self.events.emit("channel_error", Some(&name), Some(cam.channel), json!({
                            "camera": cam.label, "error": e.to_string(), "standby_kept": self.standbys.has(&name, cam.channel),
                        }));
                    }
                }
            }
            let reasons: Vec<serde_json::Value> = {
                let s = self.lock();
                start.iter().map(|c| json!({ "channel": c.channel, "source_channel": c.source_channel, "reason": s.mains[i].recording.get(&c.channel).and_then(|w| w.reason.clone()) })).collect()
            };
            self.events.emit("partial_takeover", Some(&name), None, json!({
                "channels": start.iter().map(|c| c.channel).collect::<Vec<_>>(),
                "started": started,
                "reasons": reasons,
                "start_ms": began.elapsed().as_secs_f64() * 1e3,
            }));
        }
        !stop.is_empty()
    }

    /// Runs `reconcile_partial` for every main (after a whole-main return freed channels).
    pub(super) async fn reconcile_all(&self) {
        let n = self.lock().mains.len();
        for i in 0..n {
            self.reconcile_partial(i).await;
        }
    }

    /// Why `channel` is recorded here for a main: its whole failure or its not recording it.
    pub fn takeover_reason(&self, channel: u32) -> Option<String> {
        let s = self.lock();
        let &i = s.owners.get(&channel)?;
        let m = &s.mains[i];
        if m.health.failed_at().is_some() {
            return Some("main failed".to_owned());
        }
        let reason = m.recording.get(&channel).and_then(|w| w.reason.clone());
        Some(match reason {
            Some(r) => format!("main not recording it: {r}"),
            None => "main not recording it".to_owned(),
        })
    }
}
