//! A channel's truthful state: `recording` only while its footage becomes durable; otherwise
//! `stalled` with the reason (disk full, write error, queue full, nothing durable for a while).
//!
//! Computed the same way for `/api/status`, the operator page and the `channel_stalled` /
//! `channel_stall_changed` / `channel_recovered` events (see `Station::health` and
//! [`transition`]).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use understudy_recorder::{ChannelSnapshot, ChannelState};
use understudy_storage::DurableStats;

/// What the status says about one recording channel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelHealth {
    /// `connecting|recording|stalled|backoff|error|stopped`.
    pub state: &'static str,
    /// Why it is not `recording` (storage's reason first, then ingest's last error).
    pub reason: Option<String>,
    /// Seconds since footage of this channel last became durable (None: never, this run).
    pub seconds_since_durable: Option<f64>,
    /// Why a `stalled` channel is stalled, as a stable key (the reason text of "nothing
    /// durable" counts seconds, so it is no use to see the reason change).
    #[serde(skip)]
    pub cause: Option<StallCause>,
}

/// The kind of reason a channel is `stalled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StallCause {
    /// The storage layer's own reason (`disk full on VOLUME`, `write error on VOLUME: …`).
    Storage(String),
    /// The ingest queue overflowed: whole GOPs are being dropped.
    QueueFull,
    /// Frames arrive but nothing became durable for longer than the stall bound.
    NothingDurable,
}

/// What is remembered about a channel between assessments (to see drops happen).
#[derive(Debug)]
pub struct Watch {
    dropped_gops: u64,
    dropped_at: Option<SystemTime>,
}

impl Watch {
    pub fn new(dropped_gops: u64) -> Self {
        Watch { dropped_gops, dropped_at: None }
    }
}

/// How long a receiving channel may go without footage becoming durable before it is
/// `stalled`: a fragment's media time, one sync round, and a second of slack for a loaded
/// machine (3 s with the defaults: 1 s fragments, 1 s sync).
///
/// A healthy channel commits at least every fragment + sync round: a fragment is written at
/// most `fragment` after the previous one, and committed by the first round after it is
/// written. The bound is measured from the last commit, which came before whatever stopped
/// footage becoming durable, so any cause shows within it (disk full, write errors and a
/// full queue show at once: the storage layer and the ingest say so).
pub fn stall_after(fragment: Duration, sync_interval: Duration) -> Duration {
    fragment + sync_interval + Duration::from_secs(1)
}

/// What `assess` reads from a channel's durable stats (a copy, so it can be made in tests).
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// The storage layer's reason footage is not becoming durable, if it knows one.
    pub problem: Option<String>,
    /// When footage last became durable.
    pub last_durable_at: Option<SystemTime>,
}

impl Durable {
    pub fn of(d: &DurableStats) -> Durable {
        Durable { problem: d.problem(), last_durable_at: d.last_durable_at() }
    }
}

/// Assesses one channel now.
pub fn assess(ingest: &ChannelSnapshot, durable: &DurableStats, watch: &mut Watch, stall_after: Duration) -> ChannelHealth {
    assess_at(ingest, &Durable::of(durable), watch, stall_after, SystemTime::now())
}

/// Assesses one channel as of `now`.
pub fn assess_at(
    ingest: &ChannelSnapshot,
    durable: &Durable,
    watch: &mut Watch,
    stall_after: Duration,
    now: SystemTime,
) -> ChannelHealth {
    let since_durable = durable.last_durable_at.map(|t| now.duration_since(t).unwrap_or_default());
    let seconds_since_durable = since_durable.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0);
    if ingest.dropped_gops > watch.dropped_gops {
        watch.dropped_gops = ingest.dropped_gops;
        watch.dropped_at = Some(now);
    }
    let other = |state: &'static str| ChannelHealth {
        state,
        reason: ingest.last_error.clone(),
        seconds_since_durable,
        cause: None,
    };
    match ingest.state {
        ChannelState::Recording => {}
        ChannelState::Connecting => return other("connecting"),
        ChannelState::Backoff => return other("backoff"),
        ChannelState::Error => return other("error"),
        ChannelState::Stopped => return other("stopped"),
    }
    let stalled = |reason: String, cause: StallCause| ChannelHealth {
        state: "stalled",
        reason: Some(reason),
        seconds_since_durable,
        cause: Some(cause),
    };
    if let Some(problem) = &durable.problem {
        return stalled(problem.clone(), StallCause::Storage(problem.clone()));
    }
    if watch.dropped_at.is_some_and(|t| now.duration_since(t).unwrap_or_default() < stall_after) {
        return stalled("queue full, dropping".to_owned(), StallCause::QueueFull);
    }
    // Receiving frames: footage must have become durable lately (or, for a channel that has
    // not made anything durable yet, since it started receiving).
    let quiet = since_durable.unwrap_or_else(|| now.duration_since(ingest.since).unwrap_or_default());
    if quiet > stall_after {
        return stalled(format!("nothing durable for {:.0} s", quiet.as_secs_f64()), StallCause::NothingDurable);
    }
    ChannelHealth { state: "recording", reason: None, seconds_since_durable, cause: None }
}

/// The event a change of health calls for, given the previous assessment (None: first seen):
/// `channel_stalled` on becoming stalled, `channel_stall_changed` when a stalled channel's
/// reason changes kind (e.g. disk full → write error), `channel_recovered` on recording again.
pub fn transition(before: Option<&ChannelHealth>, now: &ChannelHealth) -> Option<&'static str> {
    let was_stalled = before.is_some_and(|b| b.state == "stalled");
    match now.state {
        "stalled" if !was_stalled => Some("channel_stalled"),
        "stalled" if before.is_some_and(|b| b.cause != now.cause) => Some("channel_stall_changed"),
        "recording" if was_stalled => Some("channel_recovered"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(3);

    fn ingest(state: ChannelState, since: SystemTime, dropped_gops: u64) -> ChannelSnapshot {
        ChannelSnapshot {
            channel: 1,
            camera: "cam".into(),
            state,
            since,
            frames: 100,
            bytes: 1000,
            bitrate_bps: 8000,
            fps: 25.0,
            lost_packets: 0,
            reconnects: 0,
            reanchors: 0,
            dropped_gops,
            dropped_frames: 0,
            skipped_frames: 0,
            sessions: 1,
            last_error: None,
            codec: None,
            width: None,
            height: None,
            audio: None,
        }
    }

    fn at(t0: SystemTime, secs: f64) -> SystemTime {
        t0 + Duration::from_secs_f64(secs)
    }

    #[test]
    fn default_bound_is_within_three_seconds_and_above_a_healthy_gap() {
        let d = stall_after(Duration::from_secs(1), Duration::from_secs(1));
        assert!(d <= Duration::from_secs(3), "{d:?}");
        // A healthy channel commits at least every fragment + sync round (2 s by default).
        assert!(d > Duration::from_secs(2), "{d:?}");
    }

    #[test]
    fn healthy_channel_is_recording() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(0);
        let i = ingest(ChannelState::Recording, t0, 0);
        // Commits 2 s apart (the worst a healthy channel does by default), assessed just before each.
        for k in 1..10 {
            let d = Durable { problem: None, last_durable_at: Some(at(t0, 2.0 * f64::from(k))) };
            let h = assess_at(&i, &d, &mut w, STALL, at(t0, 2.0 * f64::from(k) + 1.99));
            assert_eq!(h.state, "recording", "{h:?}");
            assert_eq!(h.reason, None);
            assert_eq!(h.seconds_since_durable, Some(2.0));
        }
        // Receiving but nothing durable yet: fine for a moment after it starts.
        let h = assess_at(&i, &Durable::default(), &mut w, STALL, at(t0, 2.0));
        assert_eq!(h.state, "recording", "{h:?}");
    }

    #[test]
    fn disk_full_is_stalled_at_once_then_recovers() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(0);
        let i = ingest(ChannelState::Recording, t0, 0);
        let full = Durable { problem: Some("disk full on /media/disk1".into()), last_durable_at: Some(at(t0, 10.0)) };
        let h = assess_at(&i, &full, &mut w, STALL, at(t0, 10.1));
        assert_eq!(h.state, "stalled");
        assert_eq!(h.reason.as_deref(), Some("disk full on /media/disk1"));
        assert_eq!(h.seconds_since_durable, Some(0.1));
        assert_eq!(h.cause, Some(StallCause::Storage("disk full on /media/disk1".into())));
        let ok = Durable { problem: None, last_durable_at: Some(at(t0, 20.0)) };
        let back = assess_at(&i, &ok, &mut w, STALL, at(t0, 20.5));
        assert_eq!(back.state, "recording", "{back:?}");
        assert_eq!(transition(Some(&h), &back), Some("channel_recovered"));
    }

    #[test]
    fn write_error_is_stalled_with_the_storage_reason() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(0);
        let i = ingest(ChannelState::Recording, t0, 0);
        let d = Durable {
            problem: Some("write error on /media/disk1: fdatasync: Input/output error (os error 5)".into()),
            last_durable_at: Some(t0),
        };
        let h = assess_at(&i, &d, &mut w, STALL, at(t0, 0.5));
        assert_eq!(h.state, "stalled");
        assert!(h.reason.as_deref().unwrap().starts_with("write error on /media/disk1"), "{h:?}");
    }

    #[test]
    fn queue_full_is_stalled_while_drops_are_recent() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(2);
        let ok = Durable { problem: None, last_durable_at: Some(t0) };
        // Drops seen at the first assessment after they happen.
        let h = assess_at(&ingest(ChannelState::Recording, t0, 3), &ok, &mut w, STALL, at(t0, 0.5));
        assert_eq!((h.state, h.reason.as_deref()), ("stalled", Some("queue full, dropping")));
        assert_eq!(h.cause, Some(StallCause::QueueFull));
        // No new drops, footage durable again: recording once the drops are older than the bound.
        let ok = Durable { problem: None, last_durable_at: Some(at(t0, 3.0)) };
        let still = assess_at(&ingest(ChannelState::Recording, t0, 3), &ok, &mut w, STALL, at(t0, 3.2));
        assert_eq!(still.state, "stalled");
        let back = assess_at(&ingest(ChannelState::Recording, t0, 3), &ok, &mut w, STALL, at(t0, 3.6));
        assert_eq!(back.state, "recording", "{back:?}");
    }

    #[test]
    fn nothing_durable_is_stalled_within_three_seconds() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(0);
        let i = ingest(ChannelState::Recording, t0, 0);
        // Last commit at 10 s; the disk hangs right after it.
        let d = Durable { problem: None, last_durable_at: Some(at(t0, 10.0)) };
        assert_eq!(assess_at(&i, &d, &mut w, STALL, at(t0, 12.5)).state, "recording");
        let h = assess_at(&i, &d, &mut w, STALL, at(t0, 13.1));
        assert_eq!(h.state, "stalled", "{h:?}");
        assert_eq!(h.reason.as_deref(), Some("nothing durable for 3 s"));
        assert_eq!(h.cause, Some(StallCause::NothingDurable));
        // Never durable since receiving began.
        let h = assess_at(&i, &Durable::default(), &mut w, STALL, at(t0, 3.5));
        assert_eq!(h.state, "stalled", "{h:?}");
        assert_eq!(h.seconds_since_durable, None);
        // Recovery.
        let d = Durable { problem: None, last_durable_at: Some(at(t0, 20.0)) };
        assert_eq!(assess_at(&i, &d, &mut w, STALL, at(t0, 20.2)).state, "recording");
    }

    #[test]
    fn not_receiving_is_not_stalled() {
        let t0 = SystemTime::now();
        let mut w = Watch::new(0);
        let mut i = ingest(ChannelState::Backoff, t0, 0);
        i.last_error = Some("connection refused".into());
        let d = Durable { problem: Some("disk full on /v".into()), last_durable_at: None };
        let h = assess_at(&i, &d, &mut w, STALL, at(t0, 60.0));
        assert_eq!((h.state, h.reason.as_deref()), ("backoff", Some("connection refused")));
    }

    #[test]
    fn events_on_stall_reason_change_and_recovery() {
        let h = |state: &'static str, cause: Option<StallCause>, reason: &str| ChannelHealth {
            state,
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
            seconds_since_durable: Some(1.0),
            cause,
        };
        let rec = h("recording", None, "");
        let full = h("stalled", Some(StallCause::Storage("disk full on /v".into())), "disk full on /v");
        let nothing3 = h("stalled", Some(StallCause::NothingDurable), "nothing durable for 3 s");
        let nothing4 = h("stalled", Some(StallCause::NothingDurable), "nothing durable for 4 s");
        assert_eq!(transition(None, &rec), None);
        assert_eq!(transition(Some(&rec), &rec), None);
        assert_eq!(transition(None, &full), Some("channel_stalled"));
        assert_eq!(transition(Some(&rec), &full), Some("channel_stalled"));
        assert_eq!(transition(Some(&full), &full), None);
        assert_eq!(transition(Some(&full), &nothing3), Some("channel_stall_changed"));
        // The seconds counting up is not a change of reason.
        assert_eq!(transition(Some(&nothing3), &nothing4), None);
        assert_eq!(transition(Some(&nothing4), &rec), Some("channel_recovered"));
    }
}
