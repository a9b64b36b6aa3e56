//! `understudy demo`: the whole product in one process on a temporary directory — simulated
//! cameras, a simulated main that fails and recovers, the takeover as it happens, and the
//! footage it left with the command to play it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::time::{format_90k, now_90k};
use super::CmdResult;
use crate::camsim::{CamSim, CamSimConfig, CameraSpec, Pacing};
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::failover::health::StateName;
use crate::simmain::SimMain;

/// A small clip compiled into the binary so the demo needs no files and no system packages.
const CLIP: &[u8] = include_bytes!("../../fixtures/h264-360p25-small.mp4");

fn say(msg: impl AsRef<str>) {
    outln!("[demo] {}", msg.as_ref());
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn run(args: DemoArgs) -> CmdResult {
    let n = args.cameras.clamp(1, 64);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("understudy-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let clip = dir.join("clip.mp4");
    std::fs::write(&clip, CLIP).map_err(|e| format!("writing {}: {e}", clip.display()))?;

    // Cameras and the main, on loopback.
    let cams = CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>()?,
        cameras: (1..=n).map(|id| CameraSpec::new(id, clip.clone())).collect(),
        pacing: Pacing::Realtime,
        auth: None,
        session_timeout: Duration::from_secs(60),
    })
    .await?;
    let mut main = SimMain::start("127.0.0.1:0".parse()?).await?;
    say(format!("{n} simulated cameras at rtsp://{}/cam/1..{n}; simulated main \"nvr-a\" at {}", cams.local_addr(), main.addr()));

    let api_port = free_port()?;
    let config_path = dir.join("understudy.toml");
    let mut toml = format!(
        "# Written by `understudy demo`.\n[server]\nname = \"demo-failover\"\nchannels = {n}\nstate_dir = {state:?}\nlisten = \"127.0.0.1:{api_port}\"\nsegment_duration = \"10s\"\n\n[[volume]]\npath = {vol:?}\nmax_bytes = \"2 GiB\"\n\n[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://{main}\"\ninterval = \"500ms\"\nfail_after = 3\nrecover_after = 3\nstart_channel = 1\n",
        state = dir.join("state").display().to_string(),
        vol = dir.join("disk1").display().to_string(),
        main = main.addr(),
    );
    for id in 1..=n {
        toml.push_str(&format!("\n[[main.camera]]\nchannel = {id}\nurl = \"{}\"\n", cams.url(id)));
    }
    std::fs::write(&config_path, &toml).map_err(|e| format!("writing {}: {e}", config_path.display()))?;
    let cfg = Config::load(&config_path)?;
    say(format!("config: {}", config_path.display()));
    let demo_password = throwaway_admin(&cfg.server.state_dir).await?;

    let shutdown = CancellationToken::new();
    crate::signals::cancel_on_signal(shutdown.clone())?;
    let daemon = Daemon::start(cfg, shutdown.clone()).await?;
    let fo = daemon.failover.clone().ok_or("demo config has no main")?;
    say(format!(
        "failover running; operator page at https://127.0.0.1:{api_port}/ (self-signed certificate {}): log in as \"demo\" with password {}",
        crate::api::tls::fingerprint(&crate::api::tls::generated_paths(&dir.join("state")).0).unwrap_or_default(),
        demo_password.expose()
    ));

    let state = || fo.status().first().map(|m| m.state);
    let wait_for = |want: StateName, limit: Duration| {
        let fo = fo.clone();
        async move {
            let t0 = Instant::now();
            while t0.elapsed() < limit {
                if fo.status().first().map(|m| m.state) == Some(want) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    if !wait_for(StateName::Ok, Duration::from_secs(10)).await {
        return Err(format!("main never looked healthy (state {:?})", state()).into());
    }
    say("nvr-a is healthy; standing by (nothing recorded)");
    tokio::time::sleep(Duration::from_secs(2)).await;

    say("nvr-a loses power now");
    main.down();
    let from = now_90k();
    let failed = Instant::now();
    if !wait_for(StateName::TakenOver, Duration::from_secs(30)).await {
        return Err(format!("no takeover (state {:?})", state()).into());
    }
    say(format!("takeover declared {:.1} s after the failure (3 failed probes at 500 ms)", failed.elapsed().as_secs_f64()));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(args.seconds.max(3)) && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snaps = daemon.station.snapshots();
        let line: Vec<String> = snaps
            .iter()
            .map(|(s, d)| format!("ch{} {:?} {:.1} Mbit/s {} durable", s.channel, s.state, s.bitrate_bps as f64 / 1e6, d.frames_durable()))
            .collect();
        say(line.join(" | "));
    }

    say("nvr-a is back");
    main.up().await?;
    if !wait_for(StateName::Ok, Duration::from_secs(30)).await {
        return Err(format!("main did not return to ok (state {:?})", state()).into());
    }
    let to = now_90k();
    say("returned to standby");
    daemon.stop().await?;
    cams.shutdown().await;

    say("events:");
    for e in daemon.station.store.events_since(0, 1000)? {
        outln!(
            "  {:<24} {:<17} {:<6} {:<5} {}",
            e.time,
            e.kind,
            e.main.as_deref().unwrap_or("-"),
            e.channel.map(|c| format!("ch{c}")).unwrap_or_else(|| "-".into()),
            e.detail
        );
    }
    say("footage:");
    for ch in 1..=n {
        for s in daemon.station.store.recordings(ch, Some(from), Some(to))? {
            outln!("  ch{ch} {} → {}  {} frames  {}", format_90k(s.start_90k), format_90k(s.end_90k), s.frames, s.path.display());
        }
    }
    let out: PathBuf = dir.join("takeover-ch1.mp4");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let summary = daemon.station.store.export(1, from, to, &mut f, &mut |_, _| {})?;
    std::io::Write::flush(&mut f)?;
    say(format!("exported channel 1 ({:.1} s, {} frames) to {}", (summary.end_90k - summary.start_90k) as f64 / 90_000.0, summary.frames, out.display()));
    say("play it:      ffplay ".to_owned() + &out.display().to_string());
    say(format!(
        "export again: understudy export --config {} --channel 1 --from {} --to {} -o takeover-ch1.mp4",
        config_path.display(), format_90k(from), format_90k(to)
    ));
    Ok(())
}

/// A throw-away administrator `demo` with a random password, so the demo's API can be tried
/// with no set-up (a real install adds its users with `understudy user add`).
async fn throwaway_admin(state_dir: &std::path::Path) -> Result<crate::auth::secret::Password, Box<dyn std::error::Error + Send + Sync>> {
    use crate::auth::{password, secret, AuthDb, Channels, Role};
    let dir = state_dir.to_owned();
    tokio::task::spawn_blocking(move || -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
        let pw = secret::Password::new(secret::random_secret("")[..16].to_owned());
        let db = AuthDb::open(&dir)?;
        if db.user("demo")?.is_some() {
            db.set_password("demo", &password::hash(&pw)?)?;
        } else {
            db.add_user("demo", Role::Admin, &Channels::All, &password::hash(&pw)?)?;
        }
        Ok(pw)
    })
    .await?
}
