//! `understudy drill`: a real takeover of a healthy main for a while, as a rehearsal, with
//! per-channel latency to the first durable fragment.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::CmdResult;
use crate::cli::DrillArgs;
use crate::config::{units::parse_duration, Config};
use crate::failover::EventSink;
use crate::station::Station;

pub async fn run(args: DrillArgs) -> CmdResult {
    let cfg = Config::load(&args.config)?;
    let duration = parse_duration(&args.r#for).map_err(|e| format!("--for: {e}"))?;
    let main = cfg
        .mains
        .iter()
        .find(|m| m.name == args.main)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.mains.iter().map(|m| m.name.as_str()).collect();
            format!("--main {:?}: no such [[main]] in {} (mains: {})", args.main, cfg.file.display(), names.join(", "))
        })?;
    let shutdown = CancellationToken::new();
    crate::signals::cancel_on_signal(shutdown.clone())?;
    let station = Station::open(cfg, shutdown.clone()).await.map_err(|e| format!("{e} (a drill needs the volumes to itself: stop `understudy run` first)"))?;
    let events = EventSink::new(station.store.clone(), station.cfg.server.name.clone(), &[]);
    events.emit("drill_started", Some(&main.name), None, json!({ "seconds": duration.as_secs_f64(), "cameras": main.cameras.len() }));
    eprintln!("drill: taking over {} ({} cameras) for {duration:?}", main.name, main.cameras.len());

    let started_at = SystemTime::now();
    let t0 = Instant::now();
    let mut chans = Vec::new();
    for cam in &main.cameras {
        match station.start(cam) {
            Ok(d) => chans.push((cam.clone(), d)),
            Err(e) => eprintln!("drill: channel {} ({}): {e}", cam.channel, cam.label),
        }
    }
    let mut latency: Vec<Option<Duration>> = vec![None; chans.len()];
    while t0.elapsed() < duration && !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        for (i, (_, d)) in chans.iter().enumerate() {
            if latency[i].is_none() {
                latency[i] = d.first_durable_at().map(|t| t.duration_since(started_at).unwrap_or_default());
            }
        }
        if t0.elapsed().as_millis() % 5000 < 100 {
            let done = latency.iter().filter(|l| l.is_some()).count();
            eprintln!("drill: {:>4.0} s  {done}/{} channels durable", t0.elapsed().as_secs_f64(), chans.len());
        }
    }
    let snaps = station.snapshots();
    // Stopped first, so the frames and bytes below include the closed last segments: what the
    // catalog holds.
    station.stop_many(&chans.iter().map(|(c, _)| c.channel).collect::<Vec<_>>()).await;
    outln!("{:>7} {:>6} {:<24} {:>12} {:>8} {:>10}  state / last error", "channel", "source", "camera", "latency ms", "frames", "MB");
    let mut lat_ms = Vec::new();
    for (i, (cam, d)) in chans.iter().enumerate() {
        let s = snaps.iter().find(|(s, _)| s.channel == cam.channel).map(|(s, _)| s);
        let l = latency[i].map(|l| l.as_secs_f64() * 1e3);
        if let Some(l) = l {
            lat_ms.push(l);
        }
        outln!(
            "{:>7} {:>6} {:<24} {:>12} {:>8} {:>10.2}  {}",
            cam.channel,
            cam.source_channel,
            cam.label,
            l.map(|l| format!("{l:.0}")).unwrap_or_else(|| "never".into()),
            d.frames_durable(),
            d.bytes_durable() as f64 / 1e6,
            s.map(|s| format!("{:?} {}", s.state, s.last_error.clone().unwrap_or_default())).unwrap_or_default()
        );
    }
    lat_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| lat_ms.get(((lat_ms.len() as f64 - 1.0) * p).round() as usize).copied();
    outln!(
        "{} of {} channels recorded; first durable fragment p50 {} ms, max {} ms",
        lat_ms.len(),
        chans.len(),
        pct(0.5).map_or("-".into(), |v| format!("{v:.0}")),
        pct(1.0).map_or("-".into(), |v| format!("{v:.0}"))
    );
    events.emit("drill_ended", Some(&main.name), None, json!({ "channels": chans.len(), "recorded": lat_ms.len(), "latency_ms_p50": pct(0.5), "latency_ms_max": pct(1.0) }));
    station.close().await?;
    if lat_ms.len() < chans.len() {
        return Err(format!("{} channel(s) never recorded during the drill", chans.len() - lat_ms.len()).into());
    }
    Ok(())
}
