//! The running service behind `understudy run`: the station, local cameras, the failover
//! controller and the HTTP API, started together and stopped together.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::failover::{EventSink, Failover};
use crate::station::{Station, StationError};

pub struct Daemon {
    pub station: Arc<Station>,
    pub failover: Option<Arc<Failover>>,
    pub events: EventSink,
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Station(#[from] StationError),
    #[error("{0}")]
    Api(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::db::DbError),
}

impl Daemon {
    /// Opens the store, starts local cameras, the failover controller (if any `[[main]]`) and
    /// the HTTP API (if `server.listen`).
    pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Daemon, DaemonError> {
        api::metrics::mark_start();
        let station = Station::open(cfg, shutdown.clone()).await?;
        let cfg = station.cfg.clone();
        let events = EventSink::new(station.store.clone(), cfg.server.name.clone(), &cfg.webhooks);
        events.emit("started", None, None, serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"), "channels": cfg.server.channels,
            "local_cameras": cfg.cameras.len(), "mains": cfg.mains.len(),
        }));
        station.start_local_cameras()?;
        let failover = (!cfg.mains.is_empty()).then(|| Failover::start(station.clone(), events.clone(), shutdown.clone()));
        if let Some(addr) = cfg.server.listen {
            let dir = cfg.server.state_dir.clone();
            let auth = tokio::task::spawn_blocking(move || crate::auth::AuthDb::open(&dir)).await.map_err(std::io::Error::other)??;
            if auth.user_count()? == 0 {
                warn!(
                    "no user exists yet: the API answers 503 until you add one with `understudy user add --config {} NAME --role admin --password-stdin`",
                    cfg.file.display()
                );
            }
            // Versions before the virtual MP4 copied playback ranges here; nothing reads them now.
            let _ = std::fs::remove_dir_all(cfg.server.state_dir.join("exports"));
            let state = ApiState::new(station.clone(), failover.clone(), Arc::new(auth));
            api::serve(addr, state, shutdown.clone()).await?;
        }
        info!(local = cfg.cameras.len(), mains = cfg.mains.len(), "understudy running");
        Ok(Daemon { station, failover, events, shutdown })
    }

    /// Stops every channel, closing segments, and makes everything durable.
    pub async fn stop(&self) -> Result<(), StationError> {
        self.shutdown.cancel();
        let r = self.station.close().await;
        self.events.emit("stopped", None, None, serde_json::json!({ "clean": r.is_ok() }));
        r
    }
}
