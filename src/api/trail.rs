//! Which API requests go to the audit trail, and how often: one entry per (who, what, range)
//! in a window, so a player's many `Range` requests for one playback are a single entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::Response;
use serde_json::json;

use super::auth::{record, requirement};
use super::ApiState;
use crate::auth::Principal;

/// Repeats of the same request by the same principal within this window are not recorded again.
const WINDOW: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Seen(Mutex<HashMap<String, Instant>>);

impl Seen {
    /// True the first time `key` is seen in the window.
    fn first(&self, key: String) -> bool {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| now.duration_since(*t) < WINDOW);
        match m.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                true
            }
        }
    }
}

/// The audit action of a path; None for paths whose handlers record their own entries.
fn action(path: &str) -> Option<String> {
    if matches!(path, "/api/login" | "/api/logout" | "/api/session" | "/api/mains/import") || ["/api/audit", "/api/users", "/api/tokens"].iter().any(|p| path.starts_with(p)) {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/api/channels/") {
        let tail = rest.split_once('/').map_or("", |(_, t)| t);
        return Some(match tail {
            "play.mp4" => "playback".into(),
            t => t.split(['/', '.']).next().unwrap_or(t).to_owned(),
        });
    }
    Some(path.trim_start_matches('/').replace('/', "_").trim_start_matches("api_").to_owned())
}

/// Total bytes of the resource answered: the length in `Content-Range`, else `Content-Length`.
fn bytes(resp: &Response) -> Option<u64> {
    let h = resp.headers();
    let total = h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.rsplit('/').next()).and_then(|n| n.parse().ok());
    total.or_else(|| h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|n| n.parse().ok()))
}

impl ApiState {
    /// Records a request the guard let through (deduplicated, see [`WINDOW`]).
    pub fn audit_request(&self, p: &Principal, path: &str, query: &str, resp: &Response) {
        let Some(action) = action(path) else { return };
        // Footage requests count per range; polls (status, events since N) per path.
        let per_range = path.starts_with("/api/channels/");
        let key = format!("{}|{:?}|{path}?{}", p.user, p.token, if per_range { query } else { "" });
        if !self.seen.first(key) {
            return;
        }
        let channel = requirement(path).1.and_then(Result::ok);
        let mut detail = json!({ "path": path });
        for kv in query.split('&').filter_map(|kv| kv.split_once('=')) {
            if matches!(kv.0, "from" | "to" | "since") {
                detail[kv.0] = json!(kv.1.replace("%3A", ":").replace("%2B", "+"));
            }
        }
        // A file cut short at a change of codec parameters says where (see play.rs).
        if let Some(at) = resp.headers().get(super::play::STOPPED_HEADER).and_then(|v| v.to_str().ok()) {
            detail["stopped_at_params_change"] = json!(at);
        }
        let result = if resp.status().is_success() { "ok".to_owned() } else { resp.status().as_u16().to_string() };
        let mut e = p.entry(&action, channel, detail, &result);
        e.bytes = bytes(resp);
        record(&self.auth, e);
    }

    /// Records a refused request (permission or channel).
    pub fn audit_denied(&self, p: &Principal, path: &str, channel: Option<u32>) {
        if self.seen.first(format!("{}|{:?}|{path}|denied", p.user, p.token)) {
            record(&self.auth, p.entry(&action(path).unwrap_or_else(|| path.into()), channel, json!({ "path": path }), "denied"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_dedup() {
        assert_eq!(action("/api/channels/3/play.mp4").as_deref(), Some("playback"));
        assert_eq!(action("/api/channels/3/recordings").as_deref(), Some("recordings"));
        assert_eq!(action("/api/status").as_deref(), Some("status"));
        assert_eq!(action("/metrics").as_deref(), Some("metrics"));
        assert_eq!(action("/api/login"), None);
        let s = Seen::default();
        assert!(s.first("a".into()));
        assert!(!s.first("a".into()));
        assert!(s.first("b".into()));
    }
}
