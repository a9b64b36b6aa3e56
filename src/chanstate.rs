//! A channel's truthful state: `recording` only while its footage becomes durable; otherwise
//! `stalled` with the reason (disk full, write error, queue full, nothing durable for a while).
//!
//! Computed the same way for `/api/status`, the operator page and the `channel_stalled` /
//! `channel_recovered` events (see `Station::health`).

use std::time::{Duration, Instant, SystemTime};

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
}

/// What is remembered about a channel between assessments (to see drops happen).
#[derive(Debug)]
pub struct Watch {
    dropped_gops: u64,
    dropped_at: Option<Instant>,
}

impl Watch {
    pub fn new(dropped_gops: u64) -> Self {
        Watch { dropped_gops, dropped_at: None }
    }
}

/// How long footage may take to become durable before a receiving channel is `stalled`: a
/// fragment's media time, two sync rounds and a second of slack for a loaded machine.
pub fn stall_after(fragment: Duration, sync_interval: Duration) -> Duration {
    fragment + sync_interval * 2 + Duration::from_secs(1)
}

/// Assesses one channel now.
pub fn assess(ingest: &ChannelSnapshot, durable: &DurableStats, watch: &mut Watch, stall_after: Duration) -> ChannelHealth {
    let now = SystemTime::now();
    let since_durable = durable.last_durable_at().map(|t| now.duration_since(t).unwrap_or_default());
    let seconds_since_durable = since_durable.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0);
    if ingest.dropped_gops > watch.dropped_gops {
        watch.dropped_gops = ingest.dropped_gops;
        watch.dropped_at = Some(Instant::now());
    }
    let other = |state: &'static str| ChannelHealth { state, reason: ingest.last_error.clone(), seconds_since_durable };
    match ingest.state {
        ChannelState::Recording => {}
        ChannelState::Connecting => return other("connecting"),
        ChannelState::Backoff => return other("backoff"),
        ChannelState::Error => return other("error"),
        ChannelState::Stopped => return other("stopped"),
    }
    let stalled = |reason: String| ChannelHealth { state: "stalled", reason: Some(reason), seconds_since_durable };
    if let Some(problem) = durable.problem() {
        return stalled(problem);
    }
    if watch.dropped_at.is_some_and(|t| t.elapsed() < stall_after) {
        return stalled("queue full, dropping".to_owned());
    }
    // Receiving frames: footage must have become durable lately (or, for a channel that has
    // not made anything durable yet, since it started receiving).
    let quiet = since_durable.unwrap_or_else(|| now.duration_since(ingest.since).unwrap_or_default());
    if quiet > stall_after {
        return stalled(format!("nothing durable for {:.0} s", quiet.as_secs_f64()));
    }
    ChannelHealth { state: "recording", reason: None, seconds_since_durable }
}
