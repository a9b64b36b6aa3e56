//! `GET /api/channels/{n}/timeline?from&to`: what a scrub bar needs for one channel: the
//! recorded spans (back-to-back segments merged), the gaps between them within the range, and
//! the events that concern the channel (its own, and its mains' takeovers).

use axum::extract::{Query, State};
use axum::Json;
use serde_json::json;

use super::{bad, internal, ApiError, ApiState, RangeQuery, SeenChannel};
use crate::commands::time::{format_90k, now_90k};

/// Segments less than this apart are one span.
const JOIN_90K: i64 = 90_000;
/// At most this many events in one answer: the newest in the range (a scrub bar over a day
/// shows the recent takeovers; older ones are a narrower request away).
const MAX_EVENTS: usize = 10_000;

pub async fn timeline(State(st): State<ApiState>, SeenChannel(n): SeenChannel, Query(q): Query<RangeQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = q.parse()?;
    let to = to.unwrap_or_else(now_90k);
    let from = from.unwrap_or(to - 24 * 3600 * 90_000);
    if to <= from {
        return Err(bad("to must be after from"));
    }
    let mains: Vec<String> = st.station.cfg.channel_map().remove(&n).unwrap_or_default();
    let store = st.station.store.clone();
    let (segs, events) = tokio::task::spawn_blocking(move || -> Result<_, understudy_storage::Error> {
        let segs = store.recordings(n, Some(from), Some(to))?;
        // Newest first from the catalog (time-indexed), oldest first in the answer. An event at
        // `time_ms` is in the range when `from <= time_ms * 90 < to`.
        let ms = |t: i64| t.saturating_add(89).div_euclid(90);
        let mut events = store.channel_events(n, &mains, ms(from), ms(to), MAX_EVENTS)?;
        events.reverse();
        Ok((segs, events))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;

    // (start, end, segments, frames) of merged spans, clipped to the range.
    let mut spans: Vec<(i64, i64, u64, u64)> = Vec::new();
    for s in &segs {
        let (a, b) = (s.start_90k.max(from), s.end_90k.min(to));
        if b <= a {
            continue;
        }
        match spans.last_mut() {
            Some(last) if a - last.1 <= JOIN_90K => {
                last.1 = last.1.max(b);
                last.2 += 1;
                last.3 += s.frames;
            }
            _ => spans.push((a, b, 1, s.frames)),
        }
    }
    let mut gaps = Vec::new();
    let mut at = from;
    for &(a, b, _, _) in &spans {
        if a > at {
            gaps.push((at, a));
        }
        at = b;
    }
    if to > at {
        gaps.push((at, to));
    }
    let when = |a: i64, b: i64| json!({ "start": format_90k(a), "end": format_90k(b), "start_90k": a, "end_90k": b, "seconds": (b - a) as f64 / 90_000.0 });
    Ok(Json(json!({
        "channel": n,
        "from": format_90k(from),
        "to": format_90k(to),
        "spans": spans.iter().map(|&(a, b, segments, frames)| {
            let mut v = when(a, b);
            v["segments"] = json!(segments);
            v["frames"] = json!(frames);
            v
        }).collect::<Vec<_>>(),
        "gaps": gaps.iter().map(|&(a, b)| when(a, b)).collect::<Vec<_>>(),
        // More events than one answer holds: the oldest were left out; ask a narrower range.
        "events_truncated": events.len() >= MAX_EVENTS,
        "events": events,
    })))
}
