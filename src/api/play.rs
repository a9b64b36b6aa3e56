//! `GET /api/channels/{n}/play.mp4?from&to`: one playable MP4 of a range, served with HTTP
//! Range (RFC 9110 §14) so browsers can seek and show the right duration.
//!
//! The MP4 is exported once into `state_dir/exports/` and reused for the range requests a
//! player makes in a row; a few recent exports are kept.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{bad, check_channel, internal, ApiError, ApiState, RangeQuery};
use crate::commands::time::now_90k;

/// How many exports are kept for reuse.
const KEEP: usize = 8;
/// A range reaching into the last few seconds may still grow; such an export is reused only this long.
const LIVE_REUSE: Duration = Duration::from_secs(10);
/// The longest range one request may export.
const MAX_RANGE_90K: i64 = 6 * 3600 * 90_000;

struct Entry {
    key: (u32, i64, i64),
    path: PathBuf,
    made: Instant,
    live: bool,
}

pub struct ExportCache {
    dir: PathBuf,
    entries: tokio::sync::Mutex<VecDeque<Entry>>,
}

impl ExportCache {
    pub fn new(state_dir: &std::path::Path) -> ExportCache {
        ExportCache { dir: state_dir.join("exports"), entries: tokio::sync::Mutex::new(VecDeque::new()) }
    }

    /// The exported file for the range, making it if needed (one export at a time).
    async fn get(&self, st: &ApiState, n: u32, from: i64, to: i64) -> Result<PathBuf, ApiError> {
        let mut entries = self.entries.lock().await;
        let key = (n, from, to);
        if let Some(e) = entries.iter().find(|e| e.key == key && (!e.live || e.made.elapsed() < LIVE_REUSE)) {
            if e.path.exists() {
                return Ok(e.path.clone());
            }
        }
        entries.retain(|e| {
            let stale = e.key == key;
            if stale {
                let _ = std::fs::remove_file(&e.path);
            }
            !stale
        });
        std::fs::create_dir_all(&self.dir).map_err(internal)?;
        let path = self.dir.join(format!("ch{n:03}-{from}-{to}-{}.mp4", std::process::id()));
        let store = st.station.store.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&p).map_err(internal)?);
            let r = store.export(n, from, to, &mut f, &mut |_, _| {});
            if let Err(e) = r {
                let _ = std::fs::remove_file(&p);
                return Err(ApiError(StatusCode::NOT_FOUND, e.to_string()));
            }
            std::io::Write::flush(&mut f).map_err(internal)
        })
        .await
        .map_err(internal)??;
        entries.push_back(Entry { key, path: path.clone(), made: Instant::now(), live: to > now_90k() - 5 * 90_000 });
        while entries.len() > KEEP {
            if let Some(old) = entries.pop_front() {
                let _ = std::fs::remove_file(&old.path);
            }
        }
        Ok(path)
    }
}

/// Parses a single `bytes=` range against a length: (start, end inclusive).
fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None; // multiple ranges: answer with the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().ok()?, len - 1),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

pub async fn play(State(st): State<ApiState>, Path(n): Path<u32>, Query(q): Query<RangeQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_channel(&st, n)?;
    let (from, to) = q.parse()?;
    let from = from.ok_or_else(|| bad("from is required (RFC 3339 or now-10m)"))?;
    let to = to.unwrap_or_else(now_90k);
    if to <= from {
        return Err(bad("to must be after from"));
    }
    if to - from > MAX_RANGE_90K {
        return Err(bad("a range is at most 6 hours; use `understudy export` for longer"));
    }
    let path = st.exports.get(&st, n, from, to).await?;
    let mut file = tokio::fs::File::open(&path).await.map_err(internal)?;
    let len = file.metadata().await.map_err(internal)?.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|h| parse_range(h, len));
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "no-store");
    let resp = match range {
        Some(None) => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty()),
        Some(Some((start, end))) => {
            file.seek(SeekFrom::Start(start)).await.map_err(internal)?;
            let body = Body::from_stream(ReaderStream::new(file.take(end - start + 1)));
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
                .header(header::CONTENT_LENGTH, end - start + 1)
                .body(body)
        }
        None => builder.header(header::CONTENT_LENGTH, len).body(Body::from_stream(ReaderStream::new(file))),
    };
    resp.map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 19)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
