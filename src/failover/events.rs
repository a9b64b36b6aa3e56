//! Operator-visible events: logged through tracing, persisted in the catalog (so they survive
//! restarts and the API can list them), and posted to the configured webhooks.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};
use understudy_storage::Store;

use super::outbound;
use crate::config::Webhook;

/// Deadline for one webhook POST (connect, TLS, answer).
const POST_TIMEOUT: Duration = Duration::from_secs(10);

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
        // A channel's event names its camera too (every channel's line carries channel, main,
        // camera); events of a main or of the box have no channel field at all.
        let camera = channel.and(detail.get("camera").and_then(Value::as_str));
        info!(event = kind, main, channel, camera, %detail, "event");
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
    // One client per webhook (its own TLS trust); a hook whose client cannot be built is
    // reported once per event and skipped.
    let clients: Vec<Result<reqwest::Client, String>> = hooks.iter().map(|h| outbound::http_client(&h.tls, POST_TIMEOUT)).collect();
    while let Some(ev) = rx.recv().await {
        let body = ev.to_string();
        for (hook, client) in hooks.iter().zip(&clients) {
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    warn!(webhook = %hook.url, error = %e, "webhook not posted");
                    continue;
                }
            };
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=6 {
                match post(client, hook, &body).await {
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

/// One POST of the event's JSON; 2xx is success.
async fn post(client: &reqwest::Client, hook: &Webhook, body: &str) -> Result<(), String> {
    let mut rb = client.post(hook.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_owned());
    if let Some(t) = &hook.token {
        rb = rb.bearer_auth(t.expose());
    }
    let resp = rb.send().await.map_err(|e| outbound::describe(e, &hook.tls))?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("HTTP status {}", s.as_u16())),
    }
}
