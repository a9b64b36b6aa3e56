//! `understudy run`: record the configured cameras and stand by for the mains until
//! SIGTERM/SIGINT, then close every segment cleanly.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CmdResult;
use crate::cli::ConfigArg;
use crate::config::Config;
use crate::daemon::Daemon;

pub async fn run(args: ConfigArg) -> CmdResult {
    let cfg = Config::load(&args.config)?;
    let shutdown = CancellationToken::new();
    crate::signals::cancel_on_signal(shutdown.clone())?;
    let daemon = std::sync::Arc::new(Daemon::start(cfg, shutdown.clone()).await?);
    // The store is open (torn tails repaired), cameras started, probes running, API bound.
    crate::service::ready(&daemon);
    crate::service::spawn_watchdog(daemon.clone(), shutdown.clone());
    info!("running; SIGTERM or Ctrl-C stops");
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => daemon.station.log_summary(),
        }
    }
    info!("stopping: closing every segment");
    crate::service::stopping();
    if let Err(e) = daemon.stop().await {
        warn!(error = %e, "closing the store");
        return Err(e.into());
    }
    info!("stopped cleanly");
    Ok(())
}
