//! Operator-visible events: logged through tracing, persisted in the catalog (so they survive
//! restarts and the API can list them), and posted to the configured webhooks.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};
use understudy_storage::Store;

use crate::config::Webhook;

/// Where events go. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    store: Store,
    server: String,
    webhooks: Option<mpsc::Sender<Value>>,
}

/// Events queued for webhooks beyond this are dropped (and counted in the log): a dead
/// webhook receiver must never hold up failover.
const WEBHOOK_QUEUE: usize = 1024;

impl EventSink {
    /// Must be called inside a tokio runtime when `webhooks` is not empty.
    pub fn new(store: Store, server: String, webhooks: &[Webhook]) -> EventSink {
        let tx = if webhooks.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            tokio::spawn(deliver(rx, webhooks.to_vec()));
            Some(tx)
        };
        EventSink { store, server, webhooks: tx }
    }

    /// Records one event. Never fails: a catalog error is logged, the event still goes out.
    pub fn emit(&self, kind: &str, main: Option<&str>, channel: Option<u32>, detail: Value) {
        info!(event = kind, main = main.unwrap_or(""), channel = channel.unwrap_or(0), %detail, "event");
        let id = match self.store.add_event(kind, main, channel, &detail) {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(event = kind, error = %e, "could not persist event");
                None
            }
        };
        if let Some(tx) = &self.webhooks {
            let body = json!({
                "id": id, "server": self.server, "kind": kind, "main": main, "channel": channel,
                "time": crate::commands::time::format_90k(crate::commands::time::now_90k()), "detail": detail,
            });
            if tx.try_send(body).is_err() {
                warn!(event = kind, "webhook queue full: event not posted");
            }
        }
    }
}

/// Posts each event to every webhook, retrying with backoff (1 s, 2 s, 4 s, 8 s, 16 s).
async fn deliver(mut rx: mpsc::Receiver<Value>, hooks: Vec<Webhook>) {
    while let Some(ev) = rx.recv().await {
        let body = ev.to_string();
        for hook in &hooks {
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=6 {
                match post(hook, &body).await {
                    Ok(()) => break,
                    Err(e) if attempt == 6 => warn!(webhook = %hook.url, error = %e, "webhook gave up after 6 attempts"),
                    Err(e) => {
                        warn!(webhook = %hook.url, attempt, error = %e, "webhook failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

/// One HTTP/1.1 POST of JSON; 2xx is success.
async fn post(hook: &Webhook, body: &str) -> Result<(), String> {
    let url = &hook.url;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(t) = &hook.token {
            req.push_str(&format!("Authorization: Bearer {}\r\n", t.expose()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.map_err(|e| format!("read: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("not an HTTP answer")?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP status {code}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| "timed out".to_owned())?
}
