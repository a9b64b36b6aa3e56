//! `GET /api/channels/{n}/vod.m3u8?from&to`: an HLS media playlist (RFC 8216, version 7) of a
//! range, for players and VMSs that speak HLS.
//!
//! Its media are byte ranges of `play.mp4` (the virtual MP4 of the same range): `EXT-X-MAP`
//! is its init segment and each entry one key-frame-started group of stored fragments. So
//! nothing is re-muxed, and the decode times are the virtual file's: continuous across the
//! segment files of a run. A gap in the recording gets `EXT-X-DISCONTINUITY`, and a change of
//! codec parameters starts another virtual file (with its own `EXT-X-MAP`) after one; every
//! run is stamped with `EXT-X-PROGRAM-DATE-TIME`.
//!
//! `GET /api/channels/{n}/live.m3u8`: a sliding live playlist of the newest durable fragments
//! (plain HLS with `EXT-X-MAP`/`EXT-X-BYTERANGE`; Low-Latency HLS parts were not attempted).
//! Its media are byte ranges of the virtual file of a fixed window of `ANCHOR_90K` (plus an
//! overlap), so an entry keeps its URI, bytes and sequence number while the playlist slides:
//! that file only grows as fragments become durable. Window `k` numbers its entries from
//! `k × SEQ_PER_ANCHOR` and is discontinuity sequence `k`; the playlist moves to the next
//! window once that has `LIVE_ENTRIES` entries (players see a skip forward and a discontinuity
//! every `ANCHOR_90K`).

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::play::{layout, playback_range};
use super::{ApiError, ApiState, RangeQuery, SeenChannel};
use crate::commands::time::format_90k;

/// A pause longer than this between fragments is a gap (marked as a discontinuity).
const GAP_90K: u64 = 45_000;
/// At most this many runs (changes of codec parameters) in one playlist.
const MAX_RUNS: usize = 100;

/// The fixed windows a live playlist's media come from.
const ANCHOR_90K: i64 = 10 * 60 * 90_000;
/// How far a window's file reaches past its end, so the next window can fill up first.
const ANCHOR_OVERLAP_90K: i64 = 60 * 90_000;
/// Entries in a live playlist.
const LIVE_ENTRIES: usize = 6;
/// Sequence numbers per window (far more than its entries).
const SEQ_PER_ANCHOR: i64 = 100_000;

/// One playlist entry: a byte range of a virtual file and what it covers.
struct Entry {
    offset: u64,
    len: u64,
    start_90k: i64,
    duration_90k: u64,
    gap_before: bool,
}

pub async fn vod(State(st): State<ApiState>, SeenChannel(n): SeenChannel, Query(q): Query<RangeQuery>) -> Result<Response, ApiError> {
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

pub async fn live(State(st): State<ApiState>, SeenChannel(n): SeenChannel) -> Result<Response, ApiError> {
    let now = crate::commands::time::now_90k();
    let current = now.div_euclid(ANCHOR_90K);
    let mut chosen = None;
    let mut last_err = None;
    // The newest window with enough entries; else the previous one (still in its overlap).
    for k in [current, current - 1] {
        let from = k * ANCHOR_90K;
        match layout(&st, n, from, from + ANCHOR_90K + ANCHOR_OVERLAP_90K).await {
            Ok(p) => {
                let mut e = entries(p.mp4.fragments());
                // The newest group may still grow (until the next key frame): not yet listed,
                // so an entry's bytes never change under its sequence number.
                e.pop();
                let enough = e.len() >= LIVE_ENTRIES.min(3);
                if chosen.is_none() || enough {
                    chosen = Some((k, p, e));
                }
                if enough {
                    break;
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some((k, p, all)) = chosen else {
        return Err(last_err.unwrap_or_else(|| super::bad("nothing recorded lately")));
    };
    let first = all.len().saturating_sub(LIVE_ENTRIES);
    let from = k * ANCHOR_90K;
    let uri = format!("play.mp4?from={}&to={}", format_90k(from), format_90k(from + ANCHOR_90K + ANCHOR_OVERLAP_90K));
    let target = all[first..].iter().map(|e| (e.duration_90k as f64 / 90_000.0).ceil() as u64).max().unwrap_or(1).max(1);
    let mut body = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{k}\n",
        k * SEQ_PER_ANCHOR + first as i64,
        // Each gap's discontinuity counts once its entry has left the top of the playlist.
        k = k * SEQ_PER_ANCHOR + all.iter().take(first + 1).skip(1).filter(|e| e.gap_before).count() as i64,
    );
    let _ = writeln!(body, "#EXT-X-MAP:URI=\"{uri}\",BYTERANGE=\"{}@0\"", p.mp4.init_len());
    for (i, e) in all[first..].iter().enumerate() {
        if e.gap_before && i > 0 {
            body.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if i == 0 || e.gap_before {
            let _ = writeln!(body, "#EXT-X-PROGRAM-DATE-TIME:{}", format_90k(e.start_90k));
        }
        let _ = writeln!(body, "#EXTINF:{:.5},\n#EXT-X-BYTERANGE:{}@{}\n{uri}", e.duration_90k as f64 / 90_000.0, e.len, e.offset);
    }
    Ok(([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}
