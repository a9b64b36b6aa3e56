//! The running simulator: loads clips, holds per-camera state (active clip, faults, counters)
//! and accepts connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::audio::AudioClip;
use super::auth::Authenticator;
use super::clip::Clip;
use super::config::{CamSimConfig, Fault, Pacing};
use super::conn;
use super::error::CamSimError;

/// How long a `RejectAuth` fault makes DESCRIBE fail.
const REJECT_AUTH_FOR: Duration = Duration::from_secs(5);

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cameras: HashMap<u32, Arc<Camera>>,
    pub auth: Authenticator,
    pub pacing: Pacing,
    pub session_timeout: Duration,
}

/// One simulated camera.
#[derive(Debug)]
pub(crate) struct Camera {
    pub id: u32,
    primary: Arc<Clip>,
    /// Clip with other parameters that `ChangeParams` switches to (and back).
    alternate: Option<Arc<Clip>>,
    active: Mutex<Arc<Clip>>,
    /// Audio served as a second stream, if any.
    pub audio: Option<Arc<AudioClip>>,
    /// How many ppm the camera's RTP clock runs fast.
    pub clock_ppm: i32,
    reject_auth_until: Mutex<Option<Instant>>,
    faults: broadcast::Sender<Fault>,
    pub counters: Counters,
}

/// Per-camera counters, updated by sessions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sessions: AtomicU64,
    pub active_sessions: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
}

impl Camera {
    /// The clip new sessions (and sessions switching after `ChangeParams`) play.
    pub(crate) fn clip(&self) -> Arc<Clip> {
        Arc::clone(&self.active.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a `RejectAuth` fault is in force.
    pub(crate) fn rejecting_auth(&self) -> bool {
        let until = self
            .reject_auth_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Faults injected from now on, for a session that starts playing.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Fault> {
        self.faults.subscribe()
    }

    fn inject(&self, fault: Fault) {
        match fault {
            Fault::RejectAuth => {
                *self
                    .reject_auth_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + REJECT_AUTH_FOR);
                info!(camera = self.id, %fault, "rejecting DESCRIBE for {REJECT_AUTH_FOR:?}");
                return;
            }
            Fault::ChangeParams => {
                let Some(alt) = &self.alternate else {
                    warn!(camera = self.id, %fault, "no clip with other parameters to switch to");
                    return;
                };
                let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
                let next = if Arc::ptr_eq(&active, &self.primary) {
                    alt
                } else {
                    &self.primary
                };
                *active = Arc::clone(next);
                info!(camera = self.id, %fault, clip = %next.path.display(),
                      width = next.width, height = next.height, "switching clip");
            }
            Fault::Stall | Fault::DropMidGop | Fault::Garbage | Fault::RtpBack | Fault::RtpForward => {
                info!(camera = self.id, %fault, "injecting into playing sessions");
            }
        }
        if self.faults.send(fault).is_err() {
            debug!(camera = self.id, %fault, "no playing session to inject into");
        }
    }

    fn stats(&self) -> CameraStats {
        let c = &self.counters;
        CameraStats {
            id: self.id,
            sessions: c.sessions.load(Ordering::Relaxed),
            active_sessions: c.active_sessions.load(Ordering::Relaxed),
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }
}

/// Counts a playing session for its camera while alive.
#[derive(Debug)]
pub(crate) struct ActiveSession(Arc<Camera>);

impl ActiveSession {
    pub(crate) fn new(camera: Arc<Camera>) -> Self {
        camera.counters.sessions.fetch_add(1, Ordering::Relaxed);
        camera
            .counters
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        ActiveSession(camera)
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0
            .counters
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of one camera (or, with `camera` 0, of all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CameraStats {
    /// Camera id (0 in [`CamSimStats::total`]).
    pub id: u32,
    /// Sessions that started playing since start-up.
    pub sessions: u64,
    /// Sessions playing (or stalled) now.
    pub active_sessions: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
}

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CamSimStats {
    /// Per camera, by id.
    pub cameras: Vec<CameraStats>,
    /// Sum over all cameras (`id` is 0).
    pub total: CameraStats,
}

impl CamSimStats {
    pub fn camera(&self, id: u32) -> Option<&CameraStats> {
        self.cameras.iter().find(|c| c.id == id)
    }
}

/// A running camera simulator. Dropping it without [`CamSim::shutdown`] stops it too.
#[derive(Debug)]
pub struct CamSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for CamSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl CamSim {
    /// Loads and packetizes the clips, binds `cfg.listen` and starts serving.
    pub async fn start(cfg: CamSimConfig) -> Result<CamSim, CamSimError> {
        validate(&cfg)?;
        let specs = cfg.cameras.clone();
        let (clips, audio) = tokio::task::spawn_blocking(move || {
            Ok::<_, CamSimError>((load_clips(&specs)?, load_audio(&specs)?))
        })
        .await
        .map_err(|e| CamSimError::Config(format!("clip loading task failed: {e}")))??;
        let mut cameras = HashMap::new();
        for spec in &cfg.cameras {
            let (primary, alternate) = clips
                .get(&spec.clip)
                .cloned()
                .ok_or_else(|| CamSimError::clip(&spec.clip, "not loaded"))?;
            cameras.insert(
                spec.id,
                Arc::new(Camera {
                    id: spec.id,
                    active: Mutex::new(Arc::clone(&primary)),
                    primary,
                    alternate,
                    audio: audio.get(&spec.id).cloned(),
                    clock_ppm: spec.clock_ppm,
                    reject_auth_until: Mutex::new(None),
                    faults: broadcast::channel(16).0,
                    counters: Counters::default(),
                }),
            );
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| CamSimError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| CamSimError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            cameras,
            auth: Authenticator::new(cfg.auth),
            pacing: cfg.pacing,
            session_timeout: cfg.session_timeout,
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), cancel.clone()));
        info!(%addr, cameras = shared.cameras.len(), pacing = ?cfg.pacing,
              auth = shared.auth.required(), "camsim listening");
        Ok(CamSim {
            addr,
            shared,
            cancel,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `rtsp://ADDR/cam/{camera}`.
    pub fn url(&self, camera: u32) -> String {
        format!("rtsp://{}/cam/{camera}", self.addr)
    }

    /// Injects `fault` into `camera` (see [`Fault`]); unknown cameras are logged and ignored.
    pub fn inject(&self, camera: u32, fault: Fault) {
        match self.shared.cameras.get(&camera) {
            Some(c) => c.inject(fault),
            None => warn!(camera, %fault, "cannot inject fault: no such camera"),
        }
    }

    pub fn stats(&self) -> CamSimStats {
        let mut cameras: Vec<CameraStats> =
            self.shared.cameras.values().map(|c| c.stats()).collect();
        cameras.sort_by_key(|c| c.id);
        let mut total = CameraStats::default();
        for c in &cameras {
            total.sessions += c.sessions;
            total.active_sessions += c.active_sessions;
            total.frames_sent += c.frames_sent;
            total.bytes_sent += c.bytes_sent;
        }
        CamSimStats { cameras, total }
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                warn!("camsim accept loop ended abnormally: {e}");
            }
        }
    }
}

fn validate(cfg: &CamSimConfig) -> Result<(), CamSimError> {
    if cfg.cameras.is_empty() {
        return Err(CamSimError::Config("no cameras".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cfg.cameras {
        if c.id == 0 || !seen.insert(c.id) {
            return Err(CamSimError::Config(format!(
                "camera id {} is 0 or repeated",
                c.id
            )));
        }
    }
    if cfg.session_timeout < Duration::from_secs(1) {
        return Err(CamSimError::Config("session timeout below 1 s".into()));
    }
    if let Some(a) = &cfg.auth {
        if a.username.is_empty() || a.username.contains(':') {
            return Err(CamSimError::Config(
                "username empty or containing ':'".into(),
            ));
        }
    }
    Ok(())
}

type ClipPair = (Arc<Clip>, Option<Arc<Clip>>);

/// Loads each distinct clip once, with its `ChangeParams` alternate: a clip of the same codec
/// and other dimensions, first among the configured clips, else among the other `.mp4` files
/// of its directory (the smallest picture wins).
fn load_clips(specs: &[super::CameraSpec]) -> Result<HashMap<PathBuf, ClipPair>, CamSimError> {
    let mut loaded: HashMap<PathBuf, Arc<Clip>> = HashMap::new();
    for s in specs {
        if !loaded.contains_key(&s.clip) {
            let clip = Clip::load(&s.clip)?;
            info!(clip = %s.clip.display(), codec = clip.codec.encoding_name(), width = clip.width,
                  height = clip.height, frames = clip.frames.len(), packets = clip.payloads.len(),
                  "clip packetized");
            loaded.insert(s.clip.clone(), Arc::new(clip));
        }
    }
    let mut out = HashMap::new();
    for (path, clip) in &loaded {
        let differs =
            |c: &Clip| c.codec == clip.codec && (c.width, c.height) != (clip.width, clip.height);
        let alternate = match loaded.values().find(|c| differs(c)) {
            Some(c) => Some(Arc::clone(c)),
            None => sibling_alternate(path, clip).map(Arc::new),
        };
        out.insert(path.clone(), (Arc::clone(clip), alternate));
    }
    Ok(out)
}

/// Loads each distinct audio source once (a camera's `audio` file, else its clip's own audio
/// track) and returns the audio of each camera that has one, by camera id.
fn load_audio(
    specs: &[super::CameraSpec],
) -> Result<HashMap<u32, Arc<AudioClip>>, CamSimError> {
    let mut loaded: HashMap<PathBuf, Option<Arc<AudioClip>>> = HashMap::new();
    let mut out = HashMap::new();
    for s in specs {
        let path = s.audio.as_ref().unwrap_or(&s.clip);
        if !loaded.contains_key(path) {
            let audio = AudioClip::load(path)?;
            match &audio {
                Some(a) => info!(audio = %path.display(), codec = a.codec_name(),
                                 sample_rate = a.sample_rate, packets = a.packets.len(),
                                 "audio packetized"),
                None if s.audio.is_some() => {
                    return Err(CamSimError::clip(path, "no audio track"));
                }
                None => {}
            }
            loaded.insert(path.clone(), audio.map(Arc::new));
        }
        if let Some(Some(a)) = loaded.get(path) {
            out.insert(s.id, Arc::clone(a));
        }
    }
    Ok(out)
}

fn sibling_alternate(path: &Path, clip: &Clip) -> Option<Clip> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mp4") && p.file_name() != path.file_name())
        .filter_map(|p| {
            let (codec, w, h) = Clip::probe(&p).ok()?;
            let other = codec == clip.codec && (w, h) != (clip.width, clip.height);
            other.then_some((u32::from(w) * u32::from(h), p))
        })
        .collect();
    candidates.sort();
    for (_, p) in candidates {
        match Clip::load(&p) {
            Ok(c) => return Some(c),
            Err(e) => debug!(clip = %p.display(), "not usable for ChangeParams: {e}"),
        }
    }
    None
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    if let Err(e) = sock.set_nodelay(true) {
                        debug!(%peer, "set_nodelay: {e}");
                    }
                    conns.spawn(conn::serve(sock, peer, Arc::clone(&shared), cancel.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!("camsim accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = conns.len(),
            "camsim connections did not close in 5 s; aborting them"
        );
        conns.abort_all();
    }
    info!("camsim stopped");
}
