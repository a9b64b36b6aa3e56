//! `GET /api/channels/{n}/vod.m3u8?from&to`: an HLS media playlist (RFC 8216, version 7) of a
//! range, for players and VMSs that speak HLS.
//!
//! Its media are byte ranges of `play.mp4` (the virtual MP4 of the same range): `EXT-X-MAP`
//! is its init segment and each entry one key-frame-started group of stored fragments. So
//! nothing is re-muxed, and the decode times are the virtual file's: continuous across the
//! segment files of a run. A gap in the recording gets `EXT-X-DISCONTINUITY`, and a change of
//! codec parameters starts another virtual file (with its own `EXT-X-MAP`) after one; every
//! run is stamped with `EXT-X-PROGRAM-DATE-TIME`.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::play::{layout, playback_range};
use super::{check_channel, ApiError, ApiState, RangeQuery};
use crate::commands::time::format_90k;

/// A pause longer than this between fragments is a gap (marked as a discontinuity).
const GAP_90K: u64 = 45_000;
/// At most this many runs (changes of codec parameters) in one playlist.
const MAX_RUNS: usize = 100;

/// One playlist entry: a byte range of a virtual file and what it covers.
struct Entry {
    offset: u64,
    len: u64,
    start_90k: i64,
    duration_90k: u64,
    gap_before: bool,
}

pub async fn vod(State(st): State<ApiState>, Path(n): Path<u32>, Query(q): Query<RangeQuery>) -> Result<Response, ApiError> {
    check_channel(&st, n)?;
    let (from, to) = playback_range(&q)?;
    let mut body = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n");
    let mut media = String::new();
    let mut target = 1u64;
    let mut at = from;
    for run in 0..MAX_RUNS {
        let p = match layout(&st, n, at, to).await {
            Ok(p) => p,
            Err(e) if run > 0 => {
                tracing::debug!(channel = n, error = %e.1, "HLS playlist ends");
                break;
            }
            Err(e) => return Err(e),
        };
        // The URL play.mp4 answers with the same layout: both ends at millisecond precision.
        let uri = format!("play.mp4?from={}&to={}", format_90k(at), format_90k(to));
        if run > 0 {
            media.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(media, "#EXT-X-MAP:URI=\"{uri}\",BYTERANGE=\"{}@0\"", p.mp4.init_len());
        for (i, e) in entries(p.mp4.fragments()).iter().enumerate() {
            if e.gap_before && i > 0 {
                media.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if i == 0 || e.gap_before {
                let _ = writeln!(media, "#EXT-X-PROGRAM-DATE-TIME:{}", format_90k(e.start_90k));
            }
            let secs = e.duration_90k as f64 / 90_000.0;
            target = target.max(secs.round() as u64);
            let _ = writeln!(media, "#EXTINF:{secs:.5},\n#EXT-X-BYTERANGE:{}@{}\n{uri}", e.len, e.offset);
        }
        match p.summary.stopped_at_params_change_90k {
            Some(next) if next > at && next < to => at = next,
            _ => break,
        }
    }
    let _ = writeln!(body, "#EXT-X-TARGETDURATION:{target}");
    body.push_str(&media);
    body.push_str("#EXT-X-ENDLIST\n");
    Ok(([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// Groups the virtual file's fragments into entries that start at a key frame (or after a gap).
fn entries(frags: &[understudy_storage::fmp4::VirtualFragment]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut prev_end: Option<i64> = None;
    for f in frags {
        let gap = prev_end.is_some_and(|e| f.start_90k.saturating_sub(e) > GAP_90K as i64);
        prev_end = Some(f.start_90k.saturating_add(f.duration_90k as i64));
        match out.last_mut() {
            Some(last) if !gap && !f.starts_with_key => {
                last.len += f.len;
                last.duration_90k = (f.start_90k + f.duration_90k as i64 - last.start_90k) as u64;
            }
            _ => out.push(Entry { offset: f.offset, len: f.len, start_90k: f.start_90k, duration_90k: f.duration_90k, gap_before: gap }),
        }
    }
    out
}
