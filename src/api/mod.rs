//! The HTTP API on `server.listen`: status, events, recordings, playback and Prometheus metrics (axum).
//!
//! Read-only: it never changes what is recorded. Nothing it returns contains a password.

pub mod hls;
pub mod metrics;
pub mod play;
mod timeline;
mod ui;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::commands::time::{format_90k, parse_time_90k};
use crate::failover::Failover;
use crate::station::Station;

#[derive(Clone)]
pub struct ApiState {
    pub station: Arc<Station>,
    pub failover: Option<Arc<Failover>>,
    pub viewers: Arc<play::Viewers>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/vendor/hls.light.min.js", get(ui::hls_js))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/channels/{n}/recordings", get(recordings))
        .route("/api/channels/{n}/play.mp4", get(play::play))
        .route("/metrics", get(metrics::scrape))
        .route("/api/channels/{n}/vod.m3u8", get(hls::vod))
        .route("/api/channels/{n}/timeline", get(timeline::timeline))
        .with_state(state)
}

/// Serves the API until `shutdown`. Binding errors are returned (the port is named in them).
pub async fn serve(addr: std::net::SocketAddr, state: ApiState, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the HTTP API to {addr} (server.listen): {e}")))?;
    info!(%addr, "HTTP API listening");
    tokio::spawn(async move {
        let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let r = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = r {
            warn!(error = %e, "HTTP API stopped");
        }
    });
    Ok(())
}

/// An API error: a status and a sentence.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Serialize)]
struct ChannelView {
    channel: u32,
    owner: Option<String>,
    source_channel: Option<u32>,
    camera: Option<String>,
    /// `recording` only while footage becomes durable (see `chanstate`).
    state: String,
    /// Why it is not `recording`.
    reason: Option<String>,
    seconds_since_durable: Option<f64>,
    bitrate_bps: u64,
    fps: f64,
    frames: u64,
    bytes: u64,
    durable_frames: u64,
    lost_packets: u64,
    reconnects: u64,
    reanchors: u64,
    dropped_gops: u64,
    last_error: Option<String>,
    /// What the last session did with the camera's audio (see `ChannelSnapshot::audio`).
    audio: Option<String>,
}

async fn status(State(st): State<ApiState>) -> Json<serde_json::Value> {
    let cfg = &st.station.cfg;
    let mut recording: std::collections::HashMap<u32, _> =
        st.station.health().into_iter().map(|(s, d, h)| (s.channel, (s, d, h))).collect();
    let local: std::collections::HashSet<u32> = cfg.cameras.iter().map(|c| c.channel).collect();
    let mut channels = Vec::new();
    for (ch, _) in cfg.channel_map() {
        let owner = if local.contains(&ch) {
            Some("local".to_owned())
        } else {
            st.failover.as_ref().and_then(|f| f.owner_of(ch))
        };
        let view = match recording.remove(&ch) {
            Some((s, d, h)) => ChannelView {
                channel: ch,
                owner,
                source_channel: st.station.source_channel(ch),
                camera: Some(s.camera.clone()),
                state: h.state.to_owned(),
                reason: h.reason,
                seconds_since_durable: h.seconds_since_durable,
                bitrate_bps: s.bitrate_bps,
                fps: s.fps,
                frames: s.frames,
                bytes: s.bytes,
                durable_frames: d.frames_durable(),
                lost_packets: s.lost_packets,
                reconnects: s.reconnects,
                reanchors: s.reanchors,
                dropped_gops: s.dropped_gops,
                last_error: s.last_error.clone(),
                audio: s.audio.clone(),
            },
            None => ChannelView {
                channel: ch, owner: None, source_channel: None, camera: None, state: "idle".into(), reason: None,
                seconds_since_durable: None, bitrate_bps: 0, fps: 0.0,
                frames: 0, bytes: 0, durable_frames: 0, lost_packets: 0, reconnects: 0, reanchors: 0, dropped_gops: 0, last_error: None,
                audio: None,
            },
        };
        channels.push(view);
    }
    let mains = st.failover.as_ref().map(|f| f.status()).unwrap_or_default();
    Json(json!({
        "server": {
            "name": cfg.server.name,
            "channels": cfg.server.channels,
            "recording": channels.iter().filter(|c| c.state != "idle").count(),
            "volumes": st.station.store.volumes(),
            "version": env!("CARGO_PKG_VERSION"),
        },
        "mains": mains,
        "channels": channels,
    }))
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<i64>,
    limit: Option<usize>,
}

async fn events(State(st): State<ApiState>, Query(q): Query<EventsQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = st.station.store.clone();
    let (since, limit) = (q.since.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let evs = tokio::task::spawn_blocking(move || store.events_since(since, limit)).await.map_err(internal)?.map_err(internal)?;
    Ok(Json(json!({ "events": evs })))
}

#[derive(Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl RangeQuery {
    fn parse(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        let from = self.from.as_deref().map(|s| parse_time_90k(s, "from")).transpose().map_err(bad)?;
        let to = self.to.as_deref().map(|s| parse_time_90k(s, "to")).transpose().map_err(bad)?;
        Ok((from, to))
    }
}

fn check_channel(st: &ApiState, n: u32) -> Result<(), ApiError> {
    let max = st.station.cfg.server.channels;
    if n == 0 || n > max {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("channel {n} is outside 1..={max}")));
    }
    Ok(())
}

async fn recordings(State(st): State<ApiState>, Path(n): Path<u32>, Query(q): Query<RangeQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    check_channel(&st, n)?;
    let (from, to) = q.parse()?;
    let store = st.station.store.clone();
    let segs = tokio::task::spawn_blocking(move || store.recordings(n, from, to)).await.map_err(internal)?.map_err(internal)?;
    let list: Vec<_> = segs
        .iter()
        .map(|s| json!({
            "start": format_90k(s.start_90k), "end": format_90k(s.end_90k),
            "seconds": (s.end_90k - s.start_90k) as f64 / 90_000.0,
            "frames": s.frames, "bytes": s.bytes, "codec": s.codec, "width": s.width, "height": s.height,
            "audio": s.audio, "open": s.open, "path": s.path,
        }))
        .collect();
    Ok(Json(json!({ "channel": n, "recordings": list })))
}
