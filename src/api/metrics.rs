//! `GET /metrics`: the Prometheus text exposition (0.0.4) of channels, mains, volumes and the
//! process, collected at scrape time from the stats the recorder, storage and failover already
//! keep, and encoded by `prometheus-client`.
//!
//! Names follow Prometheus conventions: prefix `understudy_`, base units in the name
//! (`_seconds`, `_bytes`), counters end in `_total`. Enumerations (channel and main state) are
//! one gauge per possible state, 1 for the current one.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use understudy_storage::HistogramSnapshot;

use super::{internal, ApiError, ApiState};
use crate::auth::Principal;
use crate::failover::health::StateName;

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the process start for `understudy_uptime_seconds`; called once at start-up.
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Every channel state the API knows (`idle` = no camera on it).
const CHANNEL_STATES: [&str; 6] = ["idle", "connecting", "recording", "backoff", "error", "stopped"];
const MAIN_STATES: [&str; 4] = ["ok", "suspect", "taken_over", "waiting"];

fn main_state(s: StateName) -> &'static str {
    match s {
        StateName::Ok => "ok",
        StateName::Suspect => "suspect",
        StateName::TakenOver => "taken_over",
        StateName::Waiting => "waiting",
    }
}

type Labels = Vec<(&'static str, String)>;

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramSnapshot),
}

/// One metric family: name without prefix (and without `_total` for counters).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Labels, Value)>,
}

/// Families in output order, built up by `add`.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, labels: Labels, value: Value) {
        let kind = match value {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) => MetricType::Gauge,
            Value::Histogram(_) => MetricType::Histogram,
        };
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.rows.push((labels, value)),
            None => self.0.push(Family { name, help, kind, rows: vec![(labels, value)] }),
        }
    }

    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut me = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.rows {
                let mut row = me.encode_family(labels)?;
                match value {
                    Value::Counter(v) => ConstCounter::new(*v).encode(row)?,
                    Value::Gauge(v) => ConstGauge::new(*v).encode(row)?,
                    Value::Histogram(h) => row.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Reads every stat once; runs off the async threads (statvfs per volume, a few locks).
/// Channel and standby series only for channels `p` sees, main series only for mains it sees.
fn collect(st: &ApiState, p: &Principal) -> Families {
    let mut f = Families::default();
    let cfg = &st.station.cfg;

    // ---- process ----
    f.add("build_info", "Build and identity of this recorder (always 1).",
        vec![("version", env!("CARGO_PKG_VERSION").to_owned()), ("server", cfg.server.name.clone())], Value::Gauge(1.0));
    f.add("uptime_seconds", "Seconds since this process started.", vec![],
        Value::Gauge(STARTED.get().map(|t| secs(t.elapsed())).unwrap_or(0.0)));
    f.add("channel_capacity", "Failover channels this box has (server.channels).", vec![], Value::Gauge(f64::from(cfg.server.channels)));

    // ---- channels ----
    let mut recording: std::collections::HashMap<u32, _> =
        st.station.snapshots().into_iter().map(|(s, d)| (s.channel, (s, d))).collect();
    let now = SystemTime::now();
    for (ch, _) in cfg.channel_map().into_iter().filter(|(ch, _)| p.sees(*ch)) {
        let Some((s, d)) = recording.remove(&ch) else {
            for state in CHANNEL_STATES {
                f.add("channel_state", "Channel state: 1 for the current one.",
                    vec![("channel", ch.to_string()), ("owner", String::new()), ("state", state.to_owned())],
                    Value::Gauge(if state == "idle" { 1.0 } else { 0.0 }));
            }
            continue;
        };
        let owner = st.station.owner_of(ch).unwrap_or_default();
        let l = || vec![("channel", ch.to_string()), ("owner", owner.clone())];
        let current = s.state.as_str();
        let mut states: Vec<&str> = CHANNEL_STATES.to_vec();
        if !states.contains(&current) {
            states.push(current);
        }
        for state in states {
            let mut labels = l();
            labels.push(("state", state.to_owned()));
            f.add("channel_state", "Channel state: 1 for the current one.", labels, Value::Gauge(if state == current { 1.0 } else { 0.0 }));
        }
        f.add("channel_frames", "Video frames received from the camera.", l(), Value::Counter(s.frames));
        f.add("channel_received_bytes", "Bytes of video frames received from the camera.", l(), Value::Counter(s.bytes));
        f.add("channel_durable_frames", "Frames fsynced and cataloged.", l(), Value::Counter(d.frames_durable()));
        f.add("channel_durable_bytes", "Segment file bytes fsynced and cataloged.", l(), Value::Counter(d.bytes_durable()));
        f.add("channel_lost_packets", "RTP packets lost (sequence gaps).", l(), Value::Counter(s.lost_packets));
        f.add("channel_reconnects", "Reconnections to the camera.", l(), Value::Counter(s.reconnects));
        f.add("channel_reanchors", "Runs ended because camera time and wall time disagreed.", l(), Value::Counter(s.reanchors));
        f.add("channel_dropped_gops", "GOPs dropped because the disk side fell behind.", l(), Value::Counter(s.dropped_gops));
        f.add("channel_dropped_frames", "Frames dropped because the disk side fell behind.", l(), Value::Counter(s.dropped_frames));
        f.add("channel_write_errors", "Write, fsync and segment-creation errors of the channel.", l(), Value::Counter(d.write_errors()));
        f.add("channel_receive_rate_bytes_per_second", "Received video bytes per second over the last ~5 s (bitrate / 8).", l(), Value::Gauge(s.bitrate_bps as f64 / 8.0));
        f.add("channel_frames_per_second", "Received frame rate over the last ~5 s.", l(), Value::Gauge(s.fps));
        if let Some(t) = d.last_durable_at() {
            f.add("channel_durable_age_seconds", "Seconds since the channel's latest footage became durable.", l(),
                Value::Gauge(secs(now.duration_since(t).unwrap_or_default())));
        }
    }

    // ---- mains ----
    for m in st.failover.as_ref().map(|fo| fo.metrics()).unwrap_or_default().into_iter().filter(|m| super::sees_main(st, p, &m.name)) {
        let l = || vec![("main", m.name.clone())];
        let current = main_state(m.state);
        for state in MAIN_STATES {
            f.add("main_state", "Main state: 1 for the current one.", vec![("main", m.name.clone()), ("state", state.to_owned())],
                Value::Gauge(if state == current { 1.0 } else { 0.0 }));
        }
        f.add("main_consecutive_probe_failures", "Failed probes in a row (0 after a good one).", l(), Value::Gauge(f64::from(m.consecutive_failures)));
        f.add("main_probe_duration_seconds", "Probe duration (a failed probe counts too; timeouts at the timeout).", l(), Value::Histogram(m.probe_latency));
        f.add("main_takeovers", "Takeovers of this main's cameras since start.", l(), Value::Counter(m.takeovers));
        if let Some(d) = m.last_takeover_latency {
            f.add("main_last_takeover_latency_seconds",
                "Latest takeover: from the failure being declared to the last channel's first durable fragment.", l(), Value::Gauge(secs(d)));
        }
    }

    // ---- standby sessions (hot/warm mains) ----
    for sb in st.failover.as_ref().map(|fo| fo.standbys()).unwrap_or_default().into_iter().filter(|sb| p.sees(sb.channel)) {
        let l = || vec![("channel", sb.channel.to_string()), ("main", sb.main.clone())];
        f.add("standby_prebuffer_bytes", "Bytes of footage a hot standby holds in memory for the channel.", l(), Value::Gauge(sb.prebuffer_bytes as f64));
        f.add("standby_prebuffer_seconds", "Seconds of footage a hot standby holds for the channel.", l(), Value::Gauge(sb.prebuffer_seconds));
        f.add("standby_prebuffer_limit_bytes", "The channel's share of server.prebuffer_memory.", l(), Value::Gauge(sb.prebuffer_limit_bytes as f64));
        f.add("standby_prebuffer_short", "1 while the memory budget holds less than the main's prebuffer.", l(), Value::Gauge(if sb.prebuffer_short { 1.0 } else { 0.0 }));
        f.add("standby_reconnects", "Reconnections of the standby session.", l(), Value::Counter(sb.reconnects));
        let mut labels = l();
        labels.push(("state", sb.state.to_owned()));
        f.add("standby_state", "Standby session state (hot, warm, connecting, backoff, error): 1 for the current one.", labels, Value::Gauge(1.0));
    }

    // ---- volumes ----
    let statuses = st.station.store.volumes();
    let counters = st.station.store.volume_metrics();
    for (v, m) in statuses.iter().zip(counters) {
        let l = || vec![("volume", v.path.display().to_string())];
        f.add("volume_used_bytes", "Bytes of segment files on the volume.", l(), Value::Gauge(v.used_bytes as f64));
        if let Some(free) = v.free_bytes {
            f.add("volume_free_bytes", "Free bytes on the volume's filesystem.", l(), Value::Gauge(free as f64));
        }
        if let Some(max) = v.max_bytes {
            f.add("volume_budget_bytes", "The volume's max_bytes budget.", l(), Value::Gauge(max as f64));
        }
        if let Some(r) = v.reserve {
            f.add("volume_reserve_bytes", "Free space the volume keeps on its filesystem.", l(), Value::Gauge(r as f64));
        }
        f.add("volume_healthy", "1 while the volume takes new segments, 0 after repeated IO errors.", l(), Value::Gauge(if v.healthy { 1.0 } else { 0.0 }));
        f.add("volume_open_segments", "Segments being written or awaiting their final sync.", l(), Value::Gauge(v.open_segments as f64));
        f.add("volume_fsync_duration_seconds", "fdatasync of segment files.", l(), Value::Histogram(m.fsync));
        f.add("volume_write_errors", "IO errors counted against the volume (write, fsync, directory).", l(), Value::Counter(m.io_errors));
        f.add("volume_retention_deleted_segments", "Segments deleted by retention.", l(), Value::Counter(m.retention_deleted_segments));
        f.add("volume_retention_deleted_bytes", "Bytes deleted by retention.", l(), Value::Counter(m.retention_deleted_bytes));
        f.add("volume_syncer_idle_seconds", "Seconds since the volume's syncer last went round (grows only when stuck).", l(),
            Value::Gauge(secs(m.syncer_idle)));
    }
    f
}

/// The families of one scrape, as a `prometheus-client` collector.
struct Scrape(Families);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(enc)
    }
}

/// The exposition text of everything `collect` reads, as `p` may see it.
pub fn render(st: &ApiState, p: &Principal) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("understudy");
    registry.register_collector(Box::new(Scrape(collect(st, p))));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `GET /metrics` (the `metrics` permission, checked by the guard).
pub async fn scrape(State(st): State<ApiState>, Extension(p): Extension<Principal>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || render(&st, &p)).await.map_err(internal)?.map_err(internal)?;
    Ok(([(CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text).into_response())
}
