//! `GET /api/channels/{n}/play.mp4?from&to`: a range of a channel as one MP4, laid out per
//! request from the catalog (a virtual file) and streamed straight from the segment files,
//! with HTTP Range (RFC 9110 §14), `ETag` and `Last-Modified` so players seek and resume.
//!
//! Nothing is copied and no lock is held between requests: the first byte leaves as soon as
//! the layout is known, whatever the range's length. Each response streams through a small
//! bounded channel, so a response never holds more than a few chunks in memory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use sha2::{Digest, Sha256};
use understudy_storage::Playback;

use super::{bad, internal, ApiError, ApiState, RangeQuery, SeenChannel};
use crate::commands::time::{format_90k, now_90k};

/// The longest range one request may lay out (the layout is ~100 bytes per second).
pub const MAX_RANGE_90K: i64 = 24 * 3600 * 90_000;
/// Responses streaming at once to one client address (a browser's video element makes a few
/// range requests in a row; more means many tabs or a misbehaving client).
pub const MAX_PER_CLIENT: usize = 8;
/// Bytes per chunk read from a segment file.
const CHUNK: usize = 256 * 1024;
/// Chunks queued per response between the reading thread and the socket.
const QUEUE: usize = 4;

/// Streams in progress per client address.
#[derive(Default)]
pub struct Viewers {
    active: Mutex<HashMap<IpAddr, usize>>,
}

/// One streaming response's place in `Viewers`; released when the body is done or dropped.
pub struct ViewerSlot {
    viewers: Arc<Viewers>,
    ip: IpAddr,
}

impl Viewers {
    /// A slot for `ip`, or an error sentence if it has `MAX_PER_CLIENT` already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<ViewerSlot, ApiError> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let n = active.entry(ip).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{ip} already has {MAX_PER_CLIENT} recordings streaming; wait for one to finish"),
            ));
        }
        *n += 1;
        Ok(ViewerSlot { viewers: Arc::clone(self), ip })
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        let mut active = self.viewers.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = active.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.ip);
            }
        }
    }
}

/// The client's address (unknown when served without connection info: one shared bucket).
pub fn client_ip(info: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    info.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(ConnectInfo(a))| a.ip())
}

/// `from` (required) and `to` (default now) of a playback request, checked.
pub fn playback_range(q: &RangeQuery) -> Result<(i64, i64), ApiError> {
    let (from, to) = q.parse()?;
    let from = from.ok_or_else(|| bad("from is required (RFC 3339 or now-10m)"))?;
    let to = to.unwrap_or_else(now_90k);
    if to <= from {
        return Err(bad("to must be after from"));
    }
    if to - from > MAX_RANGE_90K {
        return Err(bad("a range is at most 24 hours; ask for several, or use `understudy export`"));
    }
    Ok((from, to))
}

/// Lays out a channel's range (on a blocking thread: it reads the catalog).
pub async fn layout(st: &ApiState, n: u32, from: i64, to: i64) -> Result<Arc<Playback>, ApiError> {
    let store = st.station.store.clone();
    tokio::task::spawn_blocking(move || store.playback(n, from, to))
        .await
        .map_err(internal)?
        .map(Arc::new)
        .map_err(|e| match e {
            understudy_storage::Error::NothingRecorded { .. } | understudy_storage::Error::InvalidRange { .. } => {
                ApiError(StatusCode::NOT_FOUND, e.to_string())
            }
            e => internal(e),
        })
}

/// Response header: the wall time (RFC 3339) of the virtual file's first frame.
pub const START_HEADER: &str = "x-understudy-start";
/// Response header: the file stops early at this time (RFC 3339) because the codec parameters
/// change there; ask again from it for the rest.
pub const STOPPED_HEADER: &str = "x-understudy-stopped-at";

/// A strong validator for the layout's content.
pub fn etag(p: &Playback) -> String {
    let digest = Sha256::digest(p.mp4.identity());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn last_modified(p: &Playback) -> String {
    let secs = u64::try_from(p.modified_90k / 90_000).unwrap_or(0);
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A body streaming `[start, end)` of the virtual file; the reading happens on a blocking
/// thread that stops as soon as the client goes away. `served` counts what it hands on.
pub fn stream_body(p: Arc<Playback>, start: u64, end: u64, slot: Option<ViewerSlot>, served: super::trail::Served) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let r = p.mp4.read_range(start, end, CHUNK, &mut |buf| {
            tx.blocking_send(Ok(Bytes::from(buf)))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
        });
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "playback stream failed");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream = futures::stream::unfold((rx, slot, served), |(mut rx, slot, served)| async move {
        let item = rx.recv().await?;
        if let Ok(b) = &item {
            served.add(b.len());
        }
        Some((item, (rx, slot, served)))
    });
    Body::from_stream(stream)
}

/// Answers a GET for a virtual file with Range, If-Range and If-None-Match handled.
pub fn serve_file(p: Arc<Playback>, headers: &HeaderMap, content_type: &str, slot: ViewerSlot) -> Result<Response, ApiError> {
    let len = p.mp4.len();
    let tag = etag(&p);
    // The bytes actually streamed, for the playback's audit entry (see `trail`).
    let served = super::trail::Served::default();
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, last_modified(&p))
        .header(header::CACHE_CONTROL, "private, no-cache")
        // The wall time of the file's first frame: the key frame at or before `from`.
        .header(START_HEADER, format_90k(p.summary.start_90k));
    // One MP4 holds one set of codec parameters: the file ends where they changed.
    let builder = match p.summary.stopped_at_params_change_90k {
        Some(at) => builder.header(STOPPED_HEADER, format_90k(at)),
        None => builder,
    };
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if text(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*")) {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(internal);
    }
    // If-Range with another validator: the file changed, send all of it (RFC 9110 §13.1.5).
    let range_applies = text(header::IF_RANGE).is_none_or(|v| v.trim() == tag);
    let range = text(header::RANGE).filter(|_| range_applies);
    let resp = match range.map(|h| http_range_header::parse_range_header(h).and_then(|r| r.validate(len))) {
        Some(Err(_)) => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty()),
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (start, end) = (*ranges[0].start(), *ranges[0].end());
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
                .header(header::CONTENT_LENGTH, end - start + 1)
                .extension(served.clone())
                .body(stream_body(p, start, end + 1, Some(slot), served))
        }
        // No Range, or several (which a server may answer with the whole representation).
        _ => builder.header(header::CONTENT_LENGTH, len).extension(served.clone()).body(stream_body(p, 0, len, Some(slot), served)),
    };
    resp.map_err(internal)
}

/// `play.mp4`'s query: the range, and `sign=1` for the signed manifest instead of the file.
#[derive(serde::Deserialize)]
pub struct PlayQuery {
    #[serde(flatten)]
    range: RangeQuery,
    sign: Option<String>,
}

pub async fn play(
    State(st): State<ApiState>,
    SeenChannel(n): SeenChannel,
    Query(q): Query<PlayQuery>,
    Extension(who): Extension<crate::auth::Principal>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, to) = playback_range(&q.range)?;
    let sign = match q.sign.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => return Err(bad(format!("sign: {other:?} is not 1 or 0"))),
    };
    if sign && !who.can(crate::auth::Perm::Export) {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("user {} may not sign exports (needs the export permission)", who.user)));
    }
    if sign {
        super::signed::check_signable(&st, n, &q.range, to).await?;
    }
    let slot = st.viewers.enter(client_ip(info))?;
    let p = layout(&st, n, from, to).await?;
    if let Some(at) = p.summary.stopped_at_params_change_90k {
        tracing::debug!(channel = n, user = %who.user, stopped_at = %format_90k(at), "play.mp4 stops early at a change of codec parameters");
    }
    if sign {
        return super::signed::manifest(&st, n, (from, to), p, &who.user, slot).await;
    }
    serve_file(p, &headers, "video/mp4", slot)
}
