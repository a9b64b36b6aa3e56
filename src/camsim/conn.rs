//! One client connection: reads RTSP requests and interleaved frames, answers them, and while a
//! session plays, writes its video frames and audio packets (whichever is due first) between
//! requests, applying injected faults. A single task owns the connection, so responses and RTP
//! frames never interleave mid-message.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use super::audio::AudioSender;
use super::config::{Fault, Pacing};
use super::rtsp::{self, Message, Response};
use super::sender::RtpSender;
use super::server::{ActiveSession, Camera, Shared};

/// Serves one accepted connection until it ends; never fails (errors are logged).
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("camsim_conn", %peer, camera = tracing::field::Empty);
    async move {
        let local = stream.local_addr().unwrap_or(peer);
        let (mut reader, mut writer) = stream.into_split();
        let mut conn = Conn {
            shared,
            local,
            state: State::Init,
            rbuf: BytesMut::with_capacity(4096),
            last_activity: Instant::now(),
        };
        match conn.run(&mut reader, &mut writer, &cancel).await {
            Ok(end) => debug!(?end, "connection closed"),
            Err(e) => debug!("connection closed on I/O error: {e}"),
        }
        if let Some(setup) = conn.state.setup() {
            info!(session = %setup.session_id, "session ended");
        }
    }
    .instrument(span)
    .await
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    SessionTimeout,
    /// The client stopped reading.
    WriteTimeout,
    Shutdown,
    BadRequest,
    /// Closed on purpose by a `DropMidGop` fault.
    FaultDrop,
}

/// Runs a step that writes to the client, giving up (closing the connection) on shutdown or
/// if the client has not taken the bytes within `limit`: a client that stopped reading must not
/// hold its connection forever.
async fn bounded(
    limit: Duration,
    cancel: &CancellationToken,
    step: impl std::future::Future<Output = std::io::Result<Option<End>>>,
) -> std::io::Result<Option<End>> {
    tokio::select! {
        r = step => r,
        _ = cancel.cancelled() => Ok(Some(End::Shutdown)),
        _ = tokio::time::sleep(limit) => {
            info!(?limit, "client did not read for the session timeout; closing");
            Ok(Some(End::WriteTimeout))
        }
    }
}

/// RTSP session state (RFC 2326 Appendix A.2), one session per connection.
#[derive(Debug)]
pub(super) enum State {
    Init,
    Ready(Setup),
    Playing(Playing),
    /// Playing, but a `Stall` fault stopped the media; requests are still answered.
    Stalled(Playing),
}

impl State {
    pub(super) fn setup(&self) -> Option<&Setup> {
        match self {
            State::Init => None,
            State::Ready(s) => Some(s),
            State::Playing(p) | State::Stalled(p) => Some(&p.setup),
        }
    }
}

/// A session that has been SETUP.
#[derive(Debug)]
pub(super) struct Setup {
    pub session_id: String,
    pub camera: Arc<Camera>,
    /// The track URL the client set up (RTP-Info), without user info.
    pub track_url: String,
    pub sender: RtpSender,
    /// The audio track, if the client set it up too.
    pub audio: Option<AudioSetup>,
}

/// The audio track of a session.
#[derive(Debug)]
pub(super) struct AudioSetup {
    /// The track URL the client set up (RTP-Info), without user info.
    pub track_url: String,
    pub sender: AudioSender,
}

impl Setup {
    /// When the next RTP packet (video frame or audio packet) is due under realtime pacing.
    fn next_deadline(&self) -> Instant {
        let video = self.sender.next_deadline();
        match &self.audio {
            Some(a) => a.sender.next_deadline().min(video),
            None => video,
        }
    }

    /// Whether the audio packet is due before the next video frame.
    fn audio_first(&self) -> bool {
        self.audio
            .as_ref()
            .is_some_and(|a| a.sender.next_deadline() < self.sender.next_deadline())
    }
}

/// A session that has been PLAYed.
#[derive(Debug)]
pub(super) struct Playing {
    pub setup: Setup,
    pub faults: broadcast::Receiver<Fault>,
    pub drop: DropPlan,
    pub _active: ActiveSession,
}

/// Whether a `DropMidGop` fault is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropPlan {
    Off,
    /// Cut the next frame that is not a key frame half-way, then close.
    AtNextDeltaFrame,
}

pub(super) struct Conn {
    pub shared: Arc<Shared>,
    /// Our address as the client sees it (for URLs given with only a path).
    pub local: SocketAddr,
    pub state: State,
    rbuf: BytesMut,
    last_activity: Instant,
}

impl Conn {
    async fn run(
        &mut self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
        cancel: &CancellationToken,
    ) -> std::io::Result<End> {
        loop {
            let idle_at = self.last_activity + self.shared.session_timeout;
            // None: nothing to send; Some(None): send now (fast pacing); Some(Some(t)): at t.
            let frame_at = match &self.state {
                State::Playing(p) => Some(match self.shared.pacing {
                    Pacing::Realtime => Some(p.setup.next_deadline()),
                    Pacing::Fast => None,
                }),
                _ => None,
            };
            let frame_due = async move {
                match frame_at {
                    Some(Some(t)) => sleep_until(t).await,
                    Some(None) => {}
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(End::Shutdown),
                _ = sleep_until(idle_at) => {
                    info!(timeout = ?self.shared.session_timeout, "client silent for the session timeout; closing");
                    return Ok(End::SessionTimeout);
                }
                r = reader.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        return Ok(End::ClientClosed);
                    }
                    self.last_activity = Instant::now();
                    let limit = self.shared.session_timeout;
                    if let Some(end) = bounded(limit, cancel, self.process_input(writer)).await? {
                        return Ok(end);
                    }
                }
                _ = frame_due => {
                    let limit = self.shared.session_timeout;
                    if let Some(end) = bounded(limit, cancel, self.send_next(writer)).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Handles every complete message in the read buffer.
    async fn process_input(&mut self, writer: &mut OwnedWriteHalf) -> std::io::Result<Option<End>> {
        loop {
            match rtsp::parse(&mut self.rbuf) {
                Ok(None) => return Ok(None),
                Ok(Some(Message::Interleaved { channel, len })) => {
                    // `interleaved`, not `channel`: an RTSP interleaved channel, not a failover one.
                    tracing::trace!(interleaved = channel, len, "interleaved frame from client ignored");
                }
                Ok(Some(Message::Response { status })) => {
                    debug!(%status, "response from client ignored");
                }
                Ok(Some(Message::Request(req))) => {
                    debug!(method = %req.method, uri = %rtsp::strip_userinfo(&req.uri), "request");
                    let resp = self.handle(&req);
                    if resp.status >= 400 {
                        info!(method = %req.method, status = resp.status, "request refused");
                    }
                    writer.write_all(&resp.serialize(req.cseq())).await?;
                }
                Err(bad) => {
                    let head = &self.rbuf[..self.rbuf.len().min(48)];
                    info!(reason = %bad.reason, head = ?String::from_utf8_lossy(head),
                          "bad request; closing");
                    let resp = Response::new(400).header("Connection", "close");
                    writer
                        .write_all(&resp.serialize(bad.cseq.as_deref()))
                        .await?;
                    return Ok(Some(End::BadRequest));
                }
            }
        }
    }

    /// Applies pending faults, then writes the next frame of a playing session.
    async fn send_next(&mut self, writer: &mut OwnedWriteHalf) -> std::io::Result<Option<End>> {
        let State::Playing(p) = &mut self.state else {
            return Ok(None);
        };
        let camera = Arc::clone(&p.setup.camera);
        let mut stall = false;
        loop {
            let fault = match p.faults.try_recv() {
                Ok(f) => f,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            };
            info!(%fault, "fault applied to session");
            match fault {
                Fault::Stall => stall = true,
                Fault::DropMidGop => p.drop = DropPlan::AtNextDeltaFrame,
                Fault::Garbage => {
                    let n = p.setup.sender.send_garbage(writer).await?;
                    camera
                        .counters
                        .bytes_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Fault::ChangeParams => p.setup.sender.switch_clip(camera.clip()),
                Fault::RejectAuth => {} // acts on new DESCRIBEs only
                Fault::RtpBack | Fault::RtpForward => {
                    let forward = fault == Fault::RtpForward;
                    let by = Duration::from_secs(if forward { 10 } else { 5 });
                    p.setup.sender.jump_rtp(by, forward);
                    if let Some(a) = &mut p.setup.audio {
                        a.sender.jump_rtp(by, forward);
                    }
                }
            }
        }
        if stall {
            self.state = match std::mem::replace(&mut self.state, State::Init) {
                State::Playing(p) => State::Stalled(p),
                other => other,
            };
            return Ok(None);
        }
        if p.setup.audio_first() {
            if let Some(a) = &mut p.setup.audio {
                let n = a.sender.send_packet(writer).await?;
                camera
                    .counters
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                return Ok(None);
            }
        }
        let sender = &mut p.setup.sender;
        if p.drop == DropPlan::AtNextDeltaFrame && !sender.next_is_key() {
            let half = (sender.next_packet_count() / 2).max(1);
            let n = sender.send_frame(writer, Some(half)).await?;
            camera
                .counters
                .bytes_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            info!(packets = half, "dropping connection mid-GOP, mid-frame");
            writer.shutdown().await?;
            return Ok(Some(End::FaultDrop));
        }
        let n = sender.send_frame(writer, None).await?;
        camera.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        camera
            .counters
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(None)
    }

    /// Records the session's camera on the connection's span.
    pub(super) fn note_camera(&self, camera: u32) {
        tracing::Span::current().record("camera", camera);
    }

    /// Ties a playing session to its camera's counters and fault channel.
    pub(super) fn start_playing(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Init) {
            State::Ready(mut setup) => {
                let now = Instant::now();
                setup.sender.start(now);
                if let Some(a) = &mut setup.audio {
                    a.sender.start(now);
                }
                let faults = setup.camera.subscribe();
                let active = ActiveSession::new(Arc::clone(&setup.camera));
                info!(session = %setup.session_id, codec = ?setup.sender.codec(),
                      audio = setup.audio.is_some(), "session playing");
                State::Playing(Playing {
                    setup,
                    faults,
                    drop: DropPlan::Off,
                    _active: active,
                })
            }
            other => other,
        };
    }
}
