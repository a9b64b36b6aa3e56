//! `understudy recordings`: list a channel's segments in a time range.

use super::time::{format_90k, parse_time_90k};
use super::CmdResult;
use crate::cli::RecordingsArgs;
use crate::config::Config;
use crate::station::storage_config;

pub async fn run(args: RecordingsArgs) -> CmdResult {
    let cfg = Config::load(&args.config.config)?;
    let from = args.from.as_deref().map(|s| parse_time_90k(s, "--from")).transpose()?;
    let to = args.to.as_deref().map(|s| parse_time_90k(s, "--to")).transpose()?;
    check_channel(&cfg, args.channel)?;
    let channel = args.channel;
    if !cfg.server.state_dir.join("catalog.db").exists() {
        // Nothing was ever recorded with this config: an empty answer, not an error.
        if args.json {
            println!("[]");
        } else {
            eprintln!("no catalog in {} yet: nothing recorded with this config", cfg.server.state_dir.display());
        }
        return Ok(());
    }
    let sc = storage_config(&cfg);
    let segs = tokio::task::spawn_blocking(move || {
        understudy_storage::Store::open_read_only(sc)?.recordings(channel, from, to)
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&segs)?);
        return Ok(());
    }
    if segs.is_empty() {
        eprintln!("channel {channel}: no recordings in that range");
        return Ok(());
    }
    println!("{:<25} {:<25} {:>8} {:>7} {:>10}  {:<22} file", "start", "end", "seconds", "frames", "MB", "codec");
    for s in &segs {
        println!(
            "{:<25} {:<25} {:>8.1} {:>7} {:>10.2}  {:<22} {}{}",
            format_90k(s.start_90k),
            format_90k(s.end_90k),
            (s.end_90k - s.start_90k) as f64 / 90_000.0,
            s.frames,
            s.bytes as f64 / 1e6,
            match &s.audio {
                Some(a) => format!("{} {}x{} +{a}", s.codec, s.width, s.height),
                None => format!("{} {}x{}", s.codec, s.width, s.height),
            },
            s.path.display(),
            if s.open { "  (recording)" } else { "" }
        );
    }
    Ok(())
}

/// A channel outside the box's capacity is a user mistake worth naming.
pub fn check_channel(cfg: &Config, channel: u32) -> Result<(), String> {
    if channel == 0 || channel > cfg.server.channels {
        return Err(format!("--channel {channel} is outside 1..={} (server.channels in {})", cfg.server.channels, cfg.file.display()));
    }
    Ok(())
}
