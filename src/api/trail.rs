//! Which API requests go to the audit trail, and how often: one entry per (who, what, range)
//! in a window, so a player's many `Range` requests for one playback are a single entry.
//!
//! A playback's entry carries the bytes actually served: its responses count what they stream
//! ([`Served`], set by `play.mp4`), and the entry is written when the playback ends, i.e.
//! [`LINGER`] after its last response finished or was dropped with no new request for the
//! same range by the same principal, or when the server stops. (A crash loses the entries of
//! playbacks still in progress.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::Response;
use serde_json::json;

use super::auth::{record, requirement};
use super::ApiState;
use crate::auth::audit::Entry;
use crate::auth::{AuthDb, Principal};

/// Repeats of the same request by the same principal within this window are not recorded again.
const WINDOW: Duration = Duration::from_secs(600);
/// A playback ends this long after its last response, if no request for it came meanwhile.
pub const LINGER: Duration = Duration::from_secs(30);

pub struct Seen {
    recent: Mutex<HashMap<String, Instant>>,
    /// Playbacks in progress, by principal and range: alive while a response streams or
    /// within [`Seen::linger`] of the last one.
    playbacks: Mutex<HashMap<String, Weak<Pending>>>,
    linger: Duration,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::with_linger(LINGER)
    }
}

impl Seen {
    fn with_linger(linger: Duration) -> Self {
        Seen { recent: Default::default(), playbacks: Default::default(), linger }
    }

    /// True the first time `key` is seen in the window.
    fn first(&self, key: String) -> bool {
        let now = Instant::now();
        let mut m = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| now.duration_since(*t) < WINDOW);
        match m.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                true
            }
        }
    }

    /// Ties a streaming response to its playback's entry (made with `entry` if none is in
    /// progress under `key`): its bytes count there when it ends.
    fn playback(&self, key: String, served: &Served, db: &Arc<AuthDb>, entry: impl FnOnce() -> Entry) {
        let pending = {
            let mut m = self.playbacks.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, w| w.strong_count() > 0);
            match m.get(&key).and_then(Weak::upgrade) {
                Some(p) => p,
                None => {
                    let p = Arc::new(Pending { db: db.clone(), entry: Mutex::new(Some(entry())), served: AtomicU64::new(0), requests: AtomicU64::new(0) });
                    m.insert(key, Arc::downgrade(&p));
                    p
                }
            }
        };
        pending.requests.fetch_add(1, Ordering::Relaxed);
        *served.0.playback.lock().unwrap_or_else(|p| p.into_inner()) = Some((pending, self.linger));
    }
}

/// One playback's entry, written with the bytes served when the last reference goes: the
/// last response ends and [`LINGER`] passes, or the runtime drops the waiting task at exit.
struct Pending {
    db: Arc<AuthDb>,
    entry: Mutex<Option<Entry>>,
    served: AtomicU64,
    requests: AtomicU64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut e) = self.entry.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
        e.bytes = Some(self.served.load(Ordering::Relaxed));
        e.detail["requests"] = json!(self.requests.load(Ordering::Relaxed));
        if let Err(err) = self.db.audit(e) {
            tracing::warn!(error = %err, "writing a playback's audit entry");
        }
    }
}

/// The bytes a response body streamed, counted by the body as it goes (`play.mp4` sets one on
/// its streaming answers); when the body ends or is dropped they go to the playback's entry.
#[derive(Clone, Default)]
pub struct Served(Arc<ServedInner>);

#[derive(Default)]
struct ServedInner {
    bytes: AtomicU64,
    playback: Mutex<Option<(Arc<Pending>, Duration)>>,
}

impl Served {
    /// Counts `n` bytes handed to the connection.
    pub fn add(&self, n: usize) {
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for ServedInner {
    fn drop(&mut self) {
        let Some((pending, linger)) = self.playback.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
        pending.served.fetch_add(*self.bytes.get_mut(), Ordering::Relaxed);
        // Keep the playback open for a while; its entry is written (blocking) off the async
        // threads when the wait ends, or here and now without a runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(linger).await;
                    tokio::task::spawn_blocking(move || drop(pending));
                });
            }
            Err(_) => drop(pending),
        }
    }
}

/// The audit action of a request; None for paths whose handlers record their own entries.
/// `play.mp4?sign=1` (the signed manifest of an export) is `export`.
fn action(path: &str, query: &str) -> Option<String> {
    if matches!(path, "/api/login" | "/api/logout" | "/api/session" | "/api/mains/import") || ["/api/audit", "/api/users", "/api/tokens"].iter().any(|p| path.starts_with(p)) {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/api/channels/") {
        let tail = rest.split_once('/').map_or("", |(_, t)| t);
        return Some(match tail {
            "play.mp4" if query.split('&').any(|kv| matches!(kv, "sign=1" | "sign=true")) => "export".into(),
            "play.mp4" => "playback".into(),
            t => t.split(['/', '.']).next().unwrap_or(t).to_owned(),
        });
    }
    Some(path.trim_start_matches('/').replace('/', "_").trim_start_matches("api_").to_owned())
}

/// Bytes of a response that does not count its own ([`Served`]): its `Content-Length`.
fn bytes(resp: &Response) -> Option<u64> {
    resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|n| n.parse().ok())
}

impl ApiState {
    /// Records a request the guard let through (deduplicated, see [`WINDOW`]).
    pub fn audit_request(&self, p: &Principal, path: &str, query: &str, resp: &Response) {
        let Some(action) = action(path, query) else { return };
        // Footage requests count per range; polls (status, events since N) per path.
        let per_range = path.starts_with("/api/channels/");
        let key = format!("{}|{:?}|{path}?{}", p.user, p.token, if per_range { query } else { "" });
        let entry = || {
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
            p.entry(&action, channel, detail, &result)
        };
        // A streaming playback: one entry per playback, with the bytes its responses served.
        if let Some(served) = resp.extensions().get::<Served>() {
            self.seen.playback(key, served, &self.auth, entry);
            return;
        }
        if !self.seen.first(key) {
            return;
        }
        let mut e = entry();
        e.bytes = bytes(resp);
        record(&self.auth, e);
    }

    /// Records a refused request (permission or channel).
    pub fn audit_denied(&self, p: &Principal, path: &str, channel: Option<u32>) {
        if self.seen.first(format!("{}|{:?}|{path}|denied", p.user, p.token)) {
            record(&self.auth, p.entry(&action(path, "").unwrap_or_else(|| path.into()), channel, json!({ "path": path }), "denied"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_dedup() {
        assert_eq!(action("/api/channels/3/play.mp4", "from=now-10m").as_deref(), Some("playback"));
        assert_eq!(action("/api/channels/3/play.mp4", "from=now-10m&sign=1").as_deref(), Some("export"));
        assert_eq!(action("/api/channels/3/play.mp4", "sign=true&from=now-10m").as_deref(), Some("export"));
        assert_eq!(action("/api/channels/3/play.mp4", "from=now-10m&sign=0").as_deref(), Some("playback"));
        assert_eq!(action("/api/channels/3/recordings", "").as_deref(), Some("recordings"));
        assert_eq!(action("/api/status", "").as_deref(), Some("status"));
        assert_eq!(action("/metrics", "").as_deref(), Some("metrics"));
        assert_eq!(action("/api/login", ""), None);
        let s = Seen::default();
        assert!(s.first("a".into()));
        assert!(!s.first("a".into()));
        assert!(s.first("b".into()));
    }

    #[tokio::test]
    async fn a_playback_is_one_entry_with_the_bytes_served() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(AuthDb::open(dir.path()).unwrap());
        let seen = Seen::with_linger(Duration::from_millis(300));
        let entry = || Entry { action: "playback".into(), result: "ok".into(), detail: json!({ "from": "x" }), ..Default::default() };
        // Two Range requests of 1000 bytes each, one after the other.
        for _ in 0..2 {
            let served = Served::default();
            seen.playback("alice|None|/api/channels/1/play.mp4?from=x".into(), &served, &db, entry);
            served.add(600);
            served.add(400);
            drop(served);
        }
        assert!(db.audit_entries(None, 0, 10).unwrap().is_empty(), "written when the playback ends, not before");
        let t0 = Instant::now();
        let entries = loop {
            let e = db.audit_entries(None, 0, 10).unwrap();
            if !e.is_empty() || t0.elapsed() > Duration::from_secs(30) {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!((entries[0].bytes, entries[0].detail["requests"].as_u64()), (Some(2000), Some(2)), "{:?}", entries[0]);
    }
}
