//! `GET /api/channels/{n}/play.mp4?from&to&sign=1`: the signed evidence manifest of exactly the
//! file `play.mp4` answers for the same range, as `understudy export --sign` writes it beside
//! an export: the SHA-256 of the virtual file (read once, streaming), channel, range, box and
//! the requesting user, signed with this box's key. Save the answer's `manifest` bytes as
//! `FILE.mp4.manifest.json` and `signature` as `FILE.mp4.sig` next to the downloaded
//! `FILE.mp4`; `understudy verify FILE.mp4` then checks all three offline.
//!
//! Only a range that can no longer change is signed: `to` must be given and no later than the
//! channel's last durable footage (else the file downloaded a moment later, with more
//! fragments, would not be the file signed). The manifest and answer carry the virtual file's
//! `ETag`: a download answered with that validator is byte for byte the signed file.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use understudy_storage::Playback;

use super::play::ViewerSlot;
use super::{bad, internal, ApiError, ApiState, RangeQuery};
use crate::commands::evidence;
use crate::commands::time::{format_90k, now_90k};

/// Bytes per read while hashing.
const CHUNK: usize = 1 << 20;

/// Refuses `sign=1` for a range whose file may still grow: `to` left out (now), or later than
/// the end of the channel's last durable fragment.
pub async fn check_signable(st: &ApiState, n: u32, q: &RangeQuery, to: i64) -> Result<(), ApiError> {
    if q.to.is_none() {
        return Err(bad("sign=1 needs an explicit `to` (no later than the channel's last durable footage): without it the range ends now and the file keeps growing"));
    }
    let store = st.station.store.clone();
    // Segments reaching `to` or later; an open one's end is its last durable fragment's.
    let later = tokio::task::spawn_blocking(move || store.recordings(n, Some(to), None)).await.map_err(internal)?.map_err(internal)?;
    let durable_end = later.iter().map(|s| s.end_90k).max();
    match durable_end {
        Some(end) if end >= to => Ok(()),
        _ => {
            let last = tokio::task::spawn_blocking({
                let store = st.station.store.clone();
                move || store.recordings(n, Some(to - super::play::MAX_RANGE_90K), None)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
            .iter()
            .map(|s| s.end_90k)
            .max();
            Err(bad(match last {
                    Some(end) => format!(
                        "sign=1: to={} is later than channel {n}'s last durable footage ({}); sign a range ending at or before it, so the signed file cannot change",
                        format_90k(to),
                        format_90k(end)
                    ),
                None => format!("sign=1: channel {n} has no durable footage in the 24 hours before to={}", format_90k(to)),
            }))
        }
    }
}

pub async fn manifest(st: &ApiState, n: u32, (from, to): (i64, i64), p: Arc<Playback>, user: &str, slot: ViewerSlot) -> Result<Response, ApiError> {
    let cfg = &st.station.cfg;
    let state_dir = cfg.server.state_dir.clone();
    let summary = p.mp4.summary();
    let file = format!("ch{n}-{}.mp4", format_90k(summary.start_90k).replace(':', ""));
    let m = evidence::Manifest {
        format: String::new(),
        file: file.clone(),
        bytes: 0,
        sha256: String::new(),
        box_name: cfg.server.name.clone(),
        channel: n,
        recorded_for: cfg.channel_map().remove(&n).unwrap_or_default(),
        requested_from: format_90k(from),
        requested_to: format_90k(to),
        start: format_90k(summary.start_90k),
        end: format_90k(summary.end_90k),
        frames: summary.frames,
        exported_at: format_90k(now_90k()),
        user: Some(user.to_owned()),
        cameras: evidence::cameras_on(cfg, n),
        etag: Some(super::play::etag(&p)),
        public_key: String::new(),
    };
    let tag = m.etag.clone();
    let sealed = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let _slot = slot; // counts as one of the client's streams while it reads
        let key = evidence::box_key(&state_dir)?;
        let mut h = Sha256::new();
        p.mp4
            .read_range(0, p.mp4.len(), CHUNK, &mut |buf| {
                h.update(&buf);
                Ok(())
            })
            .map_err(|e| format!("reading the footage: {e}"))?;
        let mut m = m;
        m.sha256 = hex::encode(h.finalize());
        m.bytes = p.mp4.len();
        let fp = evidence::fingerprint(&key.verifying_key());
        let (text, sig) = evidence::seal(&key, m)?;
        Ok((text, sig, fp))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let (text, sig, fingerprint) = sealed;
    let manifest = String::from_utf8(text).map_err(internal)?;
    Ok(Json(json!({
        "file": file,
        "manifest": manifest,
        "signature": sig,
        "key_fingerprint": fingerprint,
        // The validator of exactly the file signed: download it with `If-Range`/`If-Match`.
        "etag": tag,
    }))
    .into_response())
}
