//! RTSP ingest for Understudy: one tokio task per channel turns a camera's H.264/H.265 stream
//! into [`Frame`]s pushed into a bounded queue. This crate knows nothing about files.
//!
//! ```no_run
//! # async fn example() {
//! use understudy_recorder::{spawn_channel, ChannelSpec, IngestItem};
//! let spec = ChannelSpec::new(1, "local", "rtsp://127.0.0.1:8554/cam".parse().unwrap());
//! let (tx, mut rx) = spec.queue();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let handle = spawn_channel(spec, tx, shutdown);
//! while let Some(item) = rx.recv().await {
//!     match item {
//!         IngestItem::Frame(f) => { /* hand to storage; a new f.params Arc means new segment */ }
//!         IngestItem::Audio(a) => { /* audio of the current run, parameters in f.audio */ }
//!         IngestItem::SessionEnded => { /* close the segment */ }
//!         IngestItem::Reanchored { error_ms } => { /* record an event */ }
//!     }
//! }
//! handle.stop().await;
//! # }
//! ```
//!
//! Queue contract: frames are only pushed with `try_send`, so a slow consumer never blocks
//! ingest. When the queue is full, the whole rest of the GOP is dropped; delivery resumes at a key
//! frame preceded by [`IngestItem::SessionEnded`]. Every run of frames (a session, or the part of
//! one between overflows) is followed by `SessionEnded`, delivered either right away or, if the
//! queue was full, just before the next frame. When the task ends it drops its `Sender`.

mod audio;
mod backoff;
mod channel;
mod frame;
mod g711;
mod gate;
mod interleave;
mod ratelimit;
mod reorder;
mod timeline;
mod session;
mod spec;
mod stats;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::error;

pub use audio::{AudioFrame, AudioParams};
pub use backoff::Backoff;
pub use frame::{Codec, Frame, IngestItem, ParamsError, VideoParams};
pub use spec::{
    ChannelSpec, Credentials, ParseTransportError, PlayGate, TransportPolicy,
    DEFAULT_QUEUE_FRAMES, DEFAULT_STALL_TIMEOUT, WARM_REFRESH,
};
pub use stats::{ChannelSnapshot, ChannelState, ChannelStats};

/// A running channel.
pub struct ChannelHandle {
    pub stats: Arc<ChannelStats>,
    pub task: tokio::task::JoinHandle<()>,
    token: CancellationToken,
}

impl ChannelHandle {
    /// Stops the channel: leaves the session (TEARDOWN per retina's policy), pushes
    /// `SessionEnded` if frames were delivered, drops the sender, and waits for the task.
    pub async fn stop(self) {
        self.token.cancel();
        if let Err(e) = self.task.await {
            let snap = self.stats.snapshot();
            error!(
                channel = snap.channel,
                camera = %snap.camera,
                error = %e,
                "ingest task failed"
            );
        }
    }
}

/// Spawns the ingest task for `spec` on the current tokio runtime. It runs until `shutdown` (or
/// [`ChannelHandle::stop`]) cancels it or the consumer drops its receiver. Credentials left in
/// `spec.url` are moved out of it first, so they never reach logs or errors.
///
/// # Panics
///
/// If called outside a tokio runtime.
pub fn spawn_channel(
    mut spec: ChannelSpec,
    out: tokio::sync::mpsc::Sender<IngestItem>,
    shutdown: CancellationToken,
) -> ChannelHandle {
    spec.sanitize();
    let stats = Arc::new(ChannelStats::new(spec.channel, spec.camera.clone()));
    let token = shutdown.child_token();
    // The task keeps the caller's span (the binary's `channel` span: channel, main, camera), so
    // every line it logs says whose camera it is.
    let task = tokio::spawn(
        tracing::Instrument::in_current_span(channel::run(spec, out, token.clone(), stats.clone())),
    );
    ChannelHandle { stats, task, token }
}
