//! The HTTP API on `server.listen`: status, events, recordings, playback and Prometheus
//! metrics (axum), over TLS by default, every route behind the guard of [`auth`].
//!
//! It never changes what is recorded while running (`POST /api/mains/import` only writes the
//! config file, for the next start). Nothing it returns contains a password.

pub mod auth;
pub mod hls;
mod live;
pub mod import;
pub mod metrics;
pub mod play;
mod signed;
mod timeline;
pub mod tls;
mod trail;
mod ui;
mod users;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{AuthDb, Principal};
use crate::commands::time::{format_90k, parse_time_90k};
use crate::failover::Failover;
use crate::station::Station;

#[derive(Clone)]
pub struct ApiState {
    pub station: Arc<Station>,
    pub failover: Option<Arc<Failover>>,
    pub viewers: Arc<play::Viewers>,
    /// Users, sessions, tokens and the audit trail.
    pub auth: Arc<AuthDb>,
    pub backoff: Arc<crate::auth::backoff::Backoff>,
    /// Bounds concurrent password hashes (each takes 19 MiB and a core for tens of ms).
    pub hashing: Arc<tokio::sync::Semaphore>,
    seen: Arc<trail::Seen>,
}

impl ApiState {
    pub fn new(station: Arc<Station>, failover: Option<Arc<Failover>>, auth: Arc<AuthDb>) -> ApiState {
        ApiState {
            station,
            failover,
            viewers: Arc::default(),
            auth,
            backoff: Default::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(2)),
            seen: Default::default(),
        }
    }
}

/// The API's routes, with the list of their paths kept as they are added: the acceptance
/// test walks this list to prove every route refuses a request without credentials.
pub struct Routes {
    router: Router<ApiState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn new() -> Routes {
        Routes { router: Router::new(), paths: Vec::new() }
    }

    /// Adds a route (the only way to add one, so `paths` is complete).
    pub fn route(mut self, path: &'static str, method_router: MethodRouter<ApiState>) -> Routes {
        self.paths.push(path);
        self.router = self.router.route(path, method_router);
        self
    }
}

fn routes() -> Routes {
    Routes::new()
        .route("/", get(ui::index))
        .route("/vendor/hls.light.min.js", get(ui::hls_js))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route("/api/audit", get(auth::audit_list))
        .route("/api/users", get(users::list).post(users::add))
        .route("/api/users/{name}", axum::routing::put(users::change).delete(users::delete))
        .route("/api/tokens", get(users::tokens).post(users::create_token))
        .route("/api/tokens/{id}", axum::routing::delete(users::revoke_token))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/channels/{n}/recordings", get(recordings))
        .route("/api/channels/{n}/play.mp4", get(play::play))
        .route("/metrics", get(metrics::scrape))
        .route("/api/channels/{n}/vod.m3u8", get(hls::vod))
        .route("/api/channels/{n}/timeline", get(timeline::timeline))
        .route("/api/channels/{n}/live", get(live::live))
        .route("/api/channels/{n}/live.m3u8", get(hls::live))
        .route("/api/config/cameras", get(import::cameras))
        .route("/api/mains/import", post(import::import_main))
}

/// Every route's path, as registered (`{n}` placeholders included).
pub fn route_paths() -> Vec<&'static str> {
    routes().paths
}

/// The whole API: every route, and anything unrouted, behind [`auth::guard`].
pub fn router(state: ApiState) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .with_state(state)
}

/// Serves the API until `shutdown`: HTTPS unless `server.tls = false` (loopback only).
/// Binding and certificate errors are returned (naming the port or the file).
pub async fn serve(addr: std::net::SocketAddr, state: ApiState, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the HTTP API to {addr} (server.listen): {e}")))?;
    let server = &state.station.cfg.server;
    let app = router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    if !server.tls {
        info!(%addr, "HTTP API listening on plain HTTP (server.tls = false, loopback only)");
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move {
            let r = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(e) = r {
                warn!(error = %e, "HTTP API stopped");
            }
        });
        return Ok(());
    }
    let files = tls::cert_files(server).map_err(std::io::Error::other)?;
    let config = tls::load(&files).await.map_err(std::io::Error::other)?;
    let fingerprint = tls::fingerprint(&files.cert).map_err(std::io::Error::other)?;
    info!(%addr, cert = %files.cert.display(), %fingerprint, generated = files.generated, "HTTPS API listening");
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    tls::watch(files, config.clone(), shutdown);
    let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
    tokio::spawn(async move {
        if let Err(e) = server.serve(app).await {
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
    /// Why a main's channel is recorded here: `main failed`, or `main not recording it: …`.
    owner_reason: Option<String>,
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
    /// The standby sessions of hot/warm mains on this channel (one per main sharing it).
    standby: Vec<crate::failover::StandbyView>,
}

/// `s` with every URL (`scheme://…` up to a space or quote) replaced by `<url hidden>`: for
/// errors shown to a principal without the `config` right (camera and probe URLs are
/// configuration).
fn hide_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let start = rest[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c))).map_or(0, |j| j + 1);
        let end = rest[i..].find(|c: char| c.is_whitespace() || "\"'<>".contains(c)).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str("<url hidden>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether the principal sees a main: some channel of it is in their set.
pub(crate) fn sees_main(st: &ApiState, p: &Principal, main: &str) -> bool {
    st.station.cfg.mains.iter().filter(|m| m.name == main).flat_map(|m| &m.cameras).any(|c| p.sees(c.channel))
}

async fn status(State(st): State<ApiState>, Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    let cfg = &st.station.cfg;
    let mut recording: std::collections::HashMap<u32, _> =
        st.station.health().into_iter().map(|(s, d, h)| (s.channel, (s, d, h))).collect();
    let local: std::collections::HashSet<u32> = cfg.cameras.iter().map(|c| c.channel).collect();
    let standbys = st.failover.as_ref().map(|f| f.standbys()).unwrap_or_default();
    let standby_of = |ch: u32| standbys.iter().filter(|s| s.channel == ch).cloned().collect::<Vec<_>>();
    let mut channels = Vec::new();
    for (ch, _) in cfg.channel_map().into_iter().filter(|(ch, _)| p.sees(*ch)) {
        let owner = if local.contains(&ch) {
            Some("local".to_owned())
        } else {
            st.failover.as_ref().and_then(|f| f.owner_of(ch))
        };
        let owner_reason = if local.contains(&ch) { None } else { st.failover.as_ref().and_then(|f| f.takeover_reason(ch)) };
        let view = match recording.remove(&ch) {
            Some((s, d, h)) => ChannelView {
                channel: ch,
                owner,
                owner_reason,
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
                standby: standby_of(ch),
            },
            None => ChannelView {
                channel: ch, owner: None, owner_reason: None, source_channel: None, camera: None, state: "idle".into(), reason: None,
                seconds_since_durable: None, bitrate_bps: 0, fps: 0.0,
                frames: 0, bytes: 0, durable_frames: 0, lost_packets: 0, reconnects: 0, reanchors: 0, dropped_gops: 0, last_error: None,
                audio: None,
                standby: standby_of(ch),
            },
        };
        channels.push(view);
    }
    let config = p.can(crate::auth::Perm::Config);
    if !config {
        for c in &mut channels {
            for text in [&mut c.last_error, &mut c.reason, &mut c.owner_reason].into_iter().flatten() {
                *text = hide_urls(text);
            }
            for sb in &mut c.standby {
                sb.last_error = sb.last_error.as_deref().map(hide_urls);
            }
        }
    }
    let mut mains = st.failover.as_ref().map(|f| f.status()).unwrap_or_default();
    mains.retain(|m| sees_main(&st, &p, &m.name));
    for m in &mut mains {
        // A main's channels beyond the principal's set are not theirs to see; its probe URL,
        // errors (which can hold camera URLs) and health source are configuration.
        m.channels.retain(|ch| p.sees(*ch));
        m.not_recording.retain(|c| p.sees(c.channel));
        for c in m.not_recording.iter_mut().filter(|_| !config) {
            c.reason = c.reason.as_deref().map(hide_urls);
        }
        if !config {
            m.probe = None;
            m.last_error = None;
            m.health = None;
            m.health_error = None;
        }
    }
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

/// Events oldest first after `since`, only those of channels and mains the principal sees;
/// `next` is the id to ask after next (past events filtered out), `more` whether the page was full.
async fn events(State(st): State<ApiState>, Extension(p): Extension<Principal>, Query(q): Query<EventsQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = st.station.store.clone();
    let (since, limit) = (q.since.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let mut evs = tokio::task::spawn_blocking(move || store.events_since(since, limit)).await.map_err(internal)?.map_err(internal)?;
    let (next, more) = (evs.last().map_or(since, |e| e.id), evs.len() == limit);
    evs.retain(|e| match (e.channel, &e.main) {
        (Some(ch), _) => p.sees(ch),
        (None, Some(m)) => sees_main(&st, &p, m),
        (None, None) => true,
    });
    Ok(Json(json!({ "events": evs, "next": next, "more": more })))
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

/// The channel `n` of a `/api/channels/{n}/…` route, as the handler receives it (decoded by
/// axum), checked again against the principal the guard let in and against
/// `server.channels`: the guard reads the raw path, so a handler must not rely on it alone
/// for the channel it serves. Every channel-scoped handler takes its channel through this.
pub struct SeenChannel(pub u32);

impl FromRequestParts<ApiState> for SeenChannel {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<SeenChannel, ApiError> {
        let Path(n) = Path::<u32>::from_request_parts(parts, st).await.map_err(|e| bad(format!("channel: {}", e.body_text())))?;
        let Some(p) = parts.extensions.get::<Principal>() else {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "not logged in".into()));
        };
        if !p.sees(n) {
            st.audit_denied(p, parts.uri.path(), Some(n));
            return Err(ApiError(StatusCode::FORBIDDEN, format!("user {:?} may not see channel {n}", p.user)));
        }
        let max = st.station.cfg.server.channels;
        if n == 0 || n > max {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("channel {n} is outside 1..={max}")));
        }
        Ok(SeenChannel(n))
    }
}

async fn recordings(State(st): State<ApiState>, SeenChannel(n): SeenChannel, Query(q): Query<RangeQuery>) -> Result<Json<serde_json::Value>, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::hide_urls;

    #[test]
    fn urls_are_hidden_from_errors() {
        assert_eq!(
            hide_urls("DESCRIBE rtsp://10.0.0.5:554/cam-2 failed: refused"),
            "DESCRIBE <url hidden> failed: refused"
        );
        assert_eq!(hide_urls("probe \"https://nvr.local/x?y=1\": 500; then http://a"), "probe \"<url hidden>\": 500; then <url hidden>");
        assert_eq!(hide_urls("no address here"), "no address here");
        assert_eq!(hide_urls("odd :// alone"), "odd <url hidden> alone");
    }
}
