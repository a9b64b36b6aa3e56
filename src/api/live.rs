//! `GET /api/channels/{n}/live` (WebSocket): a channel's live fMP4 for Media Source Extensions.
//!
//! Messages, server to client: a JSON text message describing the tracks (`mime`, `codec`,
//! `audio`, `width`, `height`, and `origin`: the wall-clock time of media time 0), then the
//! init segment (binary), then each fragment (`moof`+`mdat`, binary) as the writer completes
//! it. A new JSON + init pair comes when the codec parameters change; media times stay on one
//! timeline (from `origin`) across segment files and parameter changes, so the player's
//! `currentTime` plus `origin` is the wall-clock time on screen.
//!
//! Each viewer reads the channel's bounded broadcast (see `understudy_storage::live`): the
//! writer never waits for it. A viewer that falls behind loses fragments and resumes at the
//! next fragment starting with a key frame; one whose socket stays blocked for `SEND_TIMEOUT`
//! is dropped. The guard in front of every route has checked the login, the `live`
//! permission, the channel and (on the upgrade) that `Origin` is this server.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use understudy_storage::live::{LiveFragment, LiveInit};

use super::{ApiError, ApiState, SeenChannel};
use crate::commands::time::format_90k;

/// A viewer whose socket accepts nothing for this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// WebSocket close code for "try again later" (RFC 6455 §7.4.1 registry: 1013).
const CLOSE_TRY_AGAIN: u16 = 1013;

pub async fn live(State(st): State<ApiState>, SeenChannel(n): SeenChannel, ws: WebSocketUpgrade) -> Result<Response, ApiError> {
    let store = st.station.store.clone();
    Ok(ws.on_upgrade(move |socket| async move {
        let sub = store.live(n);
        let mut viewer = Viewer::default();
        let why = viewer.run(socket, n, sub).await;
        tracing::debug!(channel = n, fragments = viewer.sequence, skipped = viewer.skipped, reason = why, "live viewer left");
    }))
}

/// Where one viewer's stream is.
#[derive(Default)]
struct Viewer {
    /// Absolute time of the viewer's media time 0 (the first fragment sent).
    origin_90k: Option<i64>,
    /// End of the last fragment sent (absolute).
    end_90k: i64,
    /// The init segment the fragments sent go with.
    init: Option<Arc<LiveInit>>,
    /// Fragments sent (the `mfhd` sequence number of the last).
    sequence: u32,
    /// Fell behind: send nothing until a fragment starts with a key frame.
    awaiting_key: bool,
    skipped: u64,
}

/// What to do with one fragment.
enum Step {
    Skip,
    Send { header: Option<serde_json::Value>, bytes: Vec<u8> },
    /// Time went backwards (the camera's clock or a new session): the viewer must start over.
    Restart,
}

impl Viewer {
    async fn run(&mut self, socket: WebSocket, n: u32, sub: understudy_storage::live::LiveSubscription) -> &'static str {
        let (mut tx, mut rx) = socket.split();
        let mut receiver = sub.receiver;
        let mut recent = sub.recent.into_iter();
        loop {
            let frag = if let Some(f) = recent.next() {
                f
            } else {
                tokio::select! {
                    r = receiver.recv() => match r {
                        Ok(f) => f,
                        Err(RecvError::Lagged(k)) => {
                            self.skipped += k;
                            self.awaiting_key = true;
                            tracing::debug!(channel = n, lost = k, "live viewer fell behind; skipping to the next key frame");
                            continue;
                        }
                        Err(RecvError::Closed) => return "recording stopped",
                    },
                    m = rx.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "viewer closed",
                        Some(Ok(_)) => continue, // pings are answered by the socket; nothing else is expected
                    },
                }
            };
            let (header, bytes) = match self.step(&frag) {
                Step::Skip => continue,
                Step::Restart => {
                    let close = CloseFrame { code: CLOSE_TRY_AGAIN, reason: "the channel's timeline restarted; reconnect".into() };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Close(Some(close)))).await;
                    return "timeline restarted";
                }
                Step::Send { header, bytes } => (header, bytes),
            };
            let mut msgs = Vec::with_capacity(3);
            if let (Some(h), Some(init)) = (header, &self.init) {
                msgs.push(Message::Text(h.to_string().into()));
                msgs.push(Message::Binary(init.init.clone()));
            }
            msgs.push(Message::Binary(bytes.into()));
            for m in msgs {
                match tokio::time::timeout(SEND_TIMEOUT, tx.send(m)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return "viewer closed",
                    Err(_) => return "viewer stopped reading",
                }
            }
        }
    }

    /// Decides what one fragment means for this viewer and builds its bytes.
    fn step(&mut self, frag: &LiveFragment) -> Step {
        // Every segment file has its own init; only one with other parameters is news.
        let new_init = self.init.as_ref().is_none_or(|i| !Arc::ptr_eq(i, &frag.init) && i.params != frag.init.params);
        if (self.awaiting_key || new_init) && !frag.starts_with_key {
            self.skipped += 1;
            return Step::Skip;
        }
        let origin = *self.origin_90k.get_or_insert(frag.start_90k);
        if frag.start_90k < origin || (self.sequence > 0 && frag.start_90k < self.end_90k.saturating_sub(90_000)) {
            return Step::Restart;
        }
        let bytes = match frag.bytes(origin, self.sequence.wrapping_add(1)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "live fragment could not be retimed; skipped");
                self.awaiting_key = true;
                return Step::Skip;
            }
        };
        self.awaiting_key = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.end_90k = frag.start_90k.saturating_add(i64::try_from(frag.duration_90k).unwrap_or(i64::MAX));
        let header = new_init.then(|| {
            self.init = Some(Arc::clone(&frag.init));
            let p = &frag.init.params;
            json!({
                "mime": frag.init.mime(),
                "codec": p.codec,
                "audio": p.audio.as_ref().map(|a| a.codec.clone()),
                "width": p.width,
                "height": p.height,
                "origin": format_90k(origin),
                "origin_ms": origin / 90,
            })
        });
        Step::Send { header, bytes }
    }
}
