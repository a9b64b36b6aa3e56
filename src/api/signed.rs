//! `GET /api/channels/{n}/play.mp4?from&to&sign=1`: the signed evidence manifest of exactly the
//! file `play.mp4` answers for the same range, as `understudy export --sign` writes it beside
//! an export: the SHA-256 of the virtual file (read once, streaming), channel, range, box and
//! the requesting user, signed with this box's key. Save the answer's `manifest` bytes as
//! `FILE.mp4.manifest.json` and `signature` as `FILE.mp4.sig` next to the downloaded
//! `FILE.mp4`; `understudy verify FILE.mp4` then checks all three offline.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use understudy_storage::Playback;

use super::play::ViewerSlot;
use super::{internal, ApiError, ApiState};
use crate::commands::evidence;
use crate::commands::time::{format_90k, now_90k};

/// Bytes per read while hashing.
const CHUNK: usize = 1 << 20;

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
        public_key: String::new(),
    };
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
    }))
    .into_response())
}
