//! `understudy check`: validate a config and print the channel map.

use super::CmdResult;
use crate::cli::ConfigArg;
use crate::config::{Config, Probe};

pub async fn run(args: ConfigArg) -> CmdResult {
    let cfg = Config::load(&args.config)?;
    println!("{}: OK", cfg.file.display());
    println!("server {:?}: {} channels, state in {}", cfg.server.name, cfg.server.channels, cfg.server.state_dir.display());
    for v in &cfg.volumes {
        println!(
            "volume {}{}{}",
            v.path.display(),
            v.max_bytes.map(|b| format!(", max {:.1} GB", b as f64 / 1e9)).unwrap_or_default(),
            v.reserve.map(|b| format!(", reserve {:.1} GB", b as f64 / 1e9)).unwrap_or_default()
        );
    }
    for m in &cfg.mains {
        let probe = match &m.probe {
            Probe::Tcp { host, port } => format!("tcp://{host}:{port}"),
            Probe::Http { url } | Probe::Rtsp { url } => url.to_string(),
        };
        let (lo, hi) = (
            m.cameras.iter().map(|c| c.channel).min().unwrap_or(0),
            m.cameras.iter().map(|c| c.channel).max().unwrap_or(0),
        );
        let detect = crate::failover::health::detection_time(m.interval, m.timeout, m.fail_after);
        let tolerate = crate::failover::health::flap_tolerance(m.interval, m.fail_after);
        println!(
            "main {:?}: probe {probe} every {:?} (timeout {:?}), takeover after {} failures (≤ {:.1} s; outages ≤ {:.1} s never take over), standby after {} successes, priority {}, {} cameras → channels {lo}–{hi}",
            m.name, m.interval, m.timeout, m.fail_after, detect.as_secs_f64(), tolerate.as_secs_f64(), m.recover_after, m.priority, m.cameras.len()
        );
    }
    println!("channel map:");
    let map = cfg.channel_map();
    for (ch, owners) in &map {
        let shared = if owners.len() > 1 { "   (shared: one takeover at a time, the others wait)" } else { "" };
        println!("  {ch:>4}  {}{shared}", owners.join(", "));
    }
    let free = cfg.server.channels as usize - map.len();
    println!("{} of {} channels assigned, {free} unassigned", map.len(), cfg.server.channels);
    // Problems `understudy import` flagged: these cameras may not record when their main fails.
    for (owner, c) in cfg.cameras.iter().map(|c| ("local", c)).chain(cfg.mains.iter().flat_map(|m| m.cameras.iter().map(move |c| (m.name.as_str(), c)))) {
        if let Some(p) = &c.problem {
            println!("warning: {owner} channel {} ({}): {p}", c.channel, c.label);
        }
    }
    Ok(())
}
