//! The per-channel ingest loop: a state machine Connecting → Recording → Backoff → Connecting …,
//! Stopped on shutdown or when the consumer goes away.

use std::sync::Arc;
use std::time::Duration;

use retina::client::SessionGroup;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::BackoffState;
use crate::frame::{Frame, IngestItem, VideoParams};
use crate::gate::{ConsumerGone, Gate};
use crate::ratelimit::RateLimit;
use crate::session::{Event, Session, SessionError};
use crate::spec::{ChannelSpec, Credentials};
use crate::stats::{ChannelState, ChannelStats};

/// How long stopping waits for retina's background TEARDOWN (RFC 2326 section 10.7).
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// Re-anchors are logged and recorded as events at most this often.
const REANCHOR_REPORT_EVERY: Duration = Duration::from_secs(2);

/// Passwords shorter than this are not scrubbed from error texts (too likely to match
/// unrelated text); they are never put in URLs anyway.
const MIN_SCRUB_LEN: usize = 3;

/// The loop's states, each owning what it needs.
enum Phase {
    /// DESCRIBE/SETUP/PLAY and wait for the first key frame.
    Connecting,
    /// Frames flowing; `first` is the session's first (key) frame, not yet delivered.
    Recording { session: Session, first: Frame },
    /// Wait, then reconnect.
    Backoff { error: SessionError },
    /// Shut down (cancelled, or the consumer dropped its receiver).
    Stopped { why: &'static str },
}

struct Channel {
    spec: ChannelSpec,
    camera: Arc<str>,
    stats: Arc<ChannelStats>,
    gate: Gate,
    group: Arc<SessionGroup>,
    backoff: BackoffState,
    token: CancellationToken,
    /// Parameters last reported in stats/logs.
    params: Option<Arc<VideoParams>>,
    loss_log: RateLimit,
    reanchor_log: RateLimit,
    /// What the last session did with the audio (logged when it changes).
    audio_status: Option<String>,
}

/// Runs the channel until `token` is cancelled or the consumer drops its receiver.
pub(crate) async fn run(
    spec: ChannelSpec,
    out: tokio::sync::mpsc::Sender<IngestItem>,
    token: CancellationToken,
    stats: Arc<ChannelStats>,
) {
    let camera: Arc<str> = spec.camera.as_str().into();
    let group = Arc::new(
        SessionGroup::default().named(format!("channel {} ({})", spec.channel, spec.camera)),
    );
    let mut ch = Channel {
        gate: Gate::new(out, stats.clone(), spec.channel, camera.clone()),
        backoff: BackoffState::new(spec.backoff.clone()),
        camera,
        stats,
        group,
        token,
        params: None,
        loss_log: RateLimit::new(Duration::from_secs(10)),
        reanchor_log: RateLimit::new(REANCHOR_REPORT_EVERY),
        audio_status: None,
        spec,
    };
    let mut phase = Phase::Connecting;
    loop {
        phase = match phase {
            Phase::Connecting => ch.connect().await,
            Phase::Recording { session, first } => ch.record(session, first).await,
            Phase::Backoff { error } => ch.back_off(error).await,
            Phase::Stopped { why } => return ch.stop(why).await,
        };
    }
}

impl Channel {
    fn enter(&self, state: ChannelState) {
        self.stats.set_state(state);
    }

    async fn connect(&mut self) -> Phase {
        self.enter(ChannelState::Connecting);
        info!(
            channel = self.spec.channel,
            camera = %self.camera,
            url = %self.spec.url,
            transport = %self.spec.transport,
            "connecting"
        );
        // Sessions dropped earlier may still be playing on the camera (TEARDOWN in flight, or a
        // live555 server streaming on a dead connection); opening another too soon can exceed
        // the camera's session limit.
        let stale = self.group.stale_sessions();
        if stale.num_sessions > 0 {
            debug!(
                channel = self.spec.channel,
                camera = %self.camera,
                sessions = stale.num_sessions,
                "waiting for stale sessions to be torn down"
            );
            let wait = tokio::time::timeout(
                self.spec.stall_timeout,
                self.group.await_stale_sessions(&stale),
            );
            tokio::select! {
                _ = self.token.cancelled() => return Phase::Stopped { why: "shutdown" },
                _ = wait => {}
            }
        }
        let opened = tokio::select! {
            _ = self.token.cancelled() => return Phase::Stopped { why: "shutdown" },
            r = Session::open(&self.spec, self.group.clone()) => r,
        };
        let mut session = match opened {
            Ok(s) => s,
            // A warm standby session set up afresh: not a failure, no backoff.
            Err(SessionError::WarmRefresh) => return Phase::Connecting,
            Err(error) => return Phase::Backoff { error },
        };
        self.stats.add_session();
        self.note_audio(session.audio_status());
        debug!(
            channel = self.spec.channel,
            camera = %self.camera,
            "playing; waiting for the first key frame"
        );
        loop {
            let event = tokio::select! {
                _ = self.token.cancelled() => return Phase::Stopped { why: "shutdown" },
                e = session.next_event() => e,
            };
            match event {
                Ok(Event::Skipped { loss }) => {
                    self.note_loss(loss);
                    self.stats.add_skipped_frame();
                }
                Ok(Event::Lost { loss }) => self.note_loss(loss),
                Ok(Event::Frame(first)) => return Phase::Recording { session, first },
                Ok(Event::Reanchor { loss, .. }) => self.note_loss(loss),
                Ok(Event::Audio(_)) => {} // no run yet
                Err(error) => return Phase::Backoff { error },
            }
        }
    }

    async fn record(&mut self, mut session: Session, first: Frame) -> Phase {
        self.enter(ChannelState::Recording);
        info!(
            channel = self.spec.channel,
            camera = %self.camera,
            codec = %first.params.rfc6381,
            width = first.params.width,
            height = first.params.height,
            "recording"
        );
        let started = Instant::now();
        let mut next = Some(first);
        let end = loop {
            if let Some(frame) = next.take() {
                if self.deliver(frame).is_err() {
                    break Phase::Stopped {
                        why: "the consumer closed the ingest queue",
                    };
                }
            }
            let event = tokio::select! {
                _ = self.token.cancelled() => break Phase::Stopped { why: "shutdown" },
                e = session.next_event() => e,
            };
            match event {
                Ok(Event::Frame(f)) => next = Some(f),
                Ok(Event::Audio(a)) => {
                    if self.gate.push_audio(a).is_err() {
                        break Phase::Stopped {
                            why: "the consumer closed the ingest queue",
                        };
                    }
                }
                Ok(Event::Skipped { loss } | Event::Lost { loss }) => self.note_loss(loss),
                Ok(Event::Reanchor { error_90k, loss }) => {
                    self.note_loss(loss);
                    if self.reanchor(error_90k).is_err() {
                        break Phase::Stopped {
                            why: "the consumer closed the ingest queue",
                        };
                    }
                }
                Err(error) => break Phase::Backoff { error },
            }
        };
        // At shutdown the frames the session holds for interleaving are still recorded.
        if matches!(end, Phase::Stopped { why: "shutdown" }) {
            for event in session.drain_held() {
                let delivered = match event {
                    Event::Frame(f) => self.deliver(f),
                    Event::Audio(a) => self.gate.push_audio(a),
                    _ => Ok(()),
                };
                if delivered.is_err() {
                    break;
                }
            }
        }
        // Dropping the session starts retina's TEARDOWN per `TeardownPolicy::Auto`.
        drop(session);
        // The error is visible in stats by the time the consumer sees `SessionEnded`.
        if let Phase::Backoff { error } = &end {
            self.stats.set_error(self.error_text(error));
        }
        self.gate.end_run();
        let recorded = started.elapsed();
        self.backoff.session_ended(recorded);
        debug!(
            channel = self.spec.channel,
            camera = %self.camera,
            recorded_s = recorded.as_secs(),
            "session ended"
        );
        end
    }

    /// Ends the run because RTP time and wall time disagree; the next run (from the next key
    /// frame) is anchored to wall time again.
    /// A camera re-anchoring at every GOP (a clock far too fast) is logged and given an event
    /// at most once per [`REANCHOR_REPORT_EVERY`] (the status counts every one).
    fn reanchor(&mut self, error_90k: i64) -> Result<(), ConsumerGone> {
        let error_ms = error_90k / 90;
        self.stats.add_reanchor();
        if let Some(suppressed) = self.reanchor_log.allow() {
            warn!(
                channel = self.spec.channel,
                camera = %self.camera,
                error_ms,
                suppressed_reports = suppressed,
                "camera time and wall time disagree; ending the run and re-anchoring to wall time"
            );
            self.gate.notify(IngestItem::Reanchored { error_ms })?;
        }
        self.gate.end_run();
        Ok(())
    }

    fn deliver(&mut self, frame: Frame) -> Result<(), ConsumerGone> {
        self.note_loss(frame.loss);
        self.stats.record_frame(frame.data.len());
        if !self
            .params
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &frame.params))
        {
            if let Some(old) = &self.params {
                if **old != *frame.params {
                    info!(
                        channel = self.spec.channel,
                        camera = %self.camera,
                        codec = %frame.params.rfc6381,
                        width = frame.params.width,
                        height = frame.params.height,
                        "video parameters changed"
                    );
                }
            }
            self.stats.set_params(&frame.params);
            self.params = Some(frame.params.clone());
        }
        self.gate.push(frame)
    }

    /// Shows what the session does with the audio; logs it when it changes (so a camera whose
    /// audio codec is skipped is logged once, not at every reconnect).
    fn note_audio(&mut self, status: String) {
        if self.audio_status.as_deref() == Some(status.as_str()) {
            return;
        }
        if status.starts_with("skipped") {
            warn!(channel = self.spec.channel, camera = %self.camera, audio = %status, "audio track not recorded; recording video only");
        } else {
            info!(channel = self.spec.channel, camera = %self.camera, audio = %status, "audio");
        }
        self.stats.set_audio(status.clone());
        self.audio_status = Some(status);
    }

    fn note_loss(&mut self, loss: u64) {
        if loss == 0 {
            return;
        }
        self.stats.add_lost(loss);
        if let Some(suppressed) = self.loss_log.allow() {
            warn!(
                channel = self.spec.channel,
                camera = %self.camera,
                lost = loss,
                total_lost = self.stats.snapshot().lost_packets,
                suppressed_reports = suppressed,
                "RTP packets lost"
            );
        }
    }

    async fn back_off(&mut self, error: SessionError) -> Phase {
        let config = error.is_config();
        let text = self.error_text(&error);
        let delay = if config {
            self.backoff.max_delay()
        } else {
            self.backoff.next_delay()
        };
        self.stats.set_error(text.clone());
        let state = if config {
            ChannelState::Error
        } else {
            ChannelState::Backoff
        };
        self.enter(state);
        warn!(
            channel = self.spec.channel,
            camera = %self.camera,
            state = state.as_str(),
            url = %self.spec.url,
            error = %text,
            retry_in_ms = delay.as_millis() as u64,
            "session failed; will reconnect"
        );
        tokio::select! {
            _ = self.token.cancelled() => Phase::Stopped { why: "shutdown" },
            _ = tokio::time::sleep(delay) => {
                self.stats.add_reconnect();
                Phase::Connecting
            }
        }
    }

    fn error_text(&self, error: &SessionError) -> String {
        one_line_scrubbed(&error.to_string(), self.spec.credentials.as_ref())
    }

    async fn stop(mut self, why: &'static str) {
        self.gate.end_run();
        // Dropping the only Sender lets the consumer see the queue close after the last item.
        drop(self.gate);
        self.stats.set_state(ChannelState::Stopped);
        // Give retina's background TEARDOWN a bounded chance to finish before the runtime may
        // shut down.
        let stale = self.group.stale_sessions();
        if stale.num_sessions > 0
            && tokio::time::timeout(TEARDOWN_WAIT, self.group.await_stale_sessions(&stale))
                .await
                .is_err()
        {
            debug!(
                channel = self.spec.channel,
                camera = %self.camera,
                "TEARDOWN still in progress at stop"
            );
        }
        info!(
            channel = self.spec.channel,
            camera = %self.camera,
            reason = why,
            "stopped"
        );
    }
}

/// An error text as one line, with the password scrubbed should a server have echoed it.
fn one_line_scrubbed(text: &str, credentials: Option<&Credentials>) -> String {
    let mut text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(c) = credentials {
        if c.password.len() >= MIN_SCRUB_LEN {
            let encoded = percent_encoding::utf8_percent_encode(
                &c.password,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
            text = text
                .replace(&c.password, "<redacted>")
                .replace(&encoded, "<redacted>");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_one_line_without_password() {
        let c = Credentials {
            username: "admin".into(),
            password: "p@ss word".into(),
        };
        let got = one_line_scrubbed(
            "401 response to DESCRIBE: p@ss word\n\nconn: a->b\nmsg: p%40ss%20word",
            Some(&c),
        );
        assert_eq!(
            got,
            "401 response to DESCRIBE: <redacted>; conn: a->b; msg: <redacted>"
        );
        let short = Credentials {
            username: "admin".into(),
            password: "1".into(),
        };
        assert_eq!(one_line_scrubbed("port 1", Some(&short)), "port 1");
    }
}
