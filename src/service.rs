//! Running under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once the store is open and
//! probing has started, `STATUS=` with a one-line summary, `WATCHDOG=1` only while recording,
//! syncing and failover make progress, and `STOPPING=1` on shutdown (the `sd-notify` crate).
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every notification is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};
use understudy_recorder::ChannelState;

use crate::daemon::Daemon;
use crate::failover::health::StateName;

/// How often STATUS= is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with the first status line.
pub fn ready(daemon: &Daemon) {
    let status = summary(daemon);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: systemd now waits for us to close every segment.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: closing every segment")]);
}

/// One line for `systemctl status`.
pub fn summary(d: &Daemon) -> String {
    let snaps = d.station.snapshots();
    let recording = snaps.iter().filter(|(s, _)| s.state == ChannelState::Recording).count();
    let mut line = format!("{recording}/{} channels recording", snaps.len());
    if let Some(fo) = &d.failover {
        let st = fo.status();
        let count = |n: StateName| st.iter().filter(|m| m.state == n).count();
        line.push_str(&format!(
            "; mains: {} ok, {} suspect, {} taken over, {} waiting",
            count(StateName::Ok), count(StateName::Suspect), count(StateName::TakenOver), count(StateName::Waiting)
        ));
    }
    let vols = d.station.store.volumes();
    line.push_str(&format!("; volumes: {}/{} healthy", vols.iter().filter(|v| v.healthy).count(), vols.len()));
    line
}

/// Why the watchdog must not be petted, if something stopped making progress for `limit`:
/// a volume's syncer, a channel's writer thread, or the failover decision loop.
pub fn stalled(d: &Daemon, limit: Duration) -> Option<String> {
    for v in d.station.store.volume_metrics() {
        if v.syncer_idle > limit {
            return Some(format!("the syncer of volume {} has not finished a round for {} s", v.path.display(), v.syncer_idle.as_secs()));
        }
    }
    if let Some(w) = d.station.slowest_writer().filter(|w| *w > limit) {
        return Some(format!("a channel's writer thread has not made progress for {} s", w.as_secs()));
    }
    if let Some(fo) = &d.failover {
        if !fo.making_progress(limit) {
            return Some("the failover controller has not handled a probe result in time".to_owned());
        }
    }
    None
}

/// The progress limit for a watchdog period: generous enough that a slow fsync round or a
/// loaded machine never trips it.
pub fn stall_limit(watchdog: Duration, sync_interval: Duration) -> Duration {
    watchdog.max(sync_interval * 3 + Duration::from_secs(5))
}

/// Refreshes STATUS= and, when systemd set `WATCHDOG_USEC`, pets the watchdog at half its
/// period while nothing is stalled. Runs on the same runtime as ingest, so a wedged runtime
/// stops the petting too.
pub fn spawn_watchdog(d: std::sync::Arc<Daemon>, shutdown: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).clamp(Duration::from_millis(50), STATUS_EVERY));
    let limit = stall_limit(watchdog.unwrap_or(STATUS_EVERY), d.station.cfg.server.sync_interval);
    if let Some(w) = watchdog {
        info!(watchdog_ms = w.as_millis() as u64, pet_every_ms = every.as_millis() as u64, stall_limit_s = limit.as_secs(), "systemd watchdog enabled");
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = String::new();
        let mut was_stalled = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stall = stalled(&d, limit);
            let status = match &stall {
                Some(why) => format!("stalled: {why}"),
                None => summary(&d),
            };
            match (&stall, was_stalled) {
                (Some(why), false) => error!(reason = %why, "stalled: no longer petting the systemd watchdog"),
                (None, true) => info!("progress again: petting the systemd watchdog"),
                _ => {}
            }
            was_stalled = stall.is_some();
            let mut states = Vec::with_capacity(2);
            if watchdog.is_some() && stall.is_none() {
                states.push(NotifyState::Watchdog);
            }
            if status != last_status {
                states.push(NotifyState::Status(&status));
            }
            if !states.is_empty() {
                notify(&states);
            }
            last_status = status;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_limit_covers_slow_sync_rounds() {
        let s = Duration::from_secs;
        assert_eq!(stall_limit(s(30), s(1)), s(30));
        assert_eq!(stall_limit(s(2), s(1)), s(8));
        assert_eq!(stall_limit(s(30), s(60)), s(185));
    }
}
