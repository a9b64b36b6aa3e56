//! `understudy export`: one MP4 of a channel between two times, with a progress bar.

use std::io::{BufWriter, Write};

use indicatif::{ProgressBar, ProgressStyle};

use super::recordings::check_channel;
use super::time::{format_90k, parse_time_90k};
use super::CmdResult;
use crate::cli::ExportArgs;
use crate::config::Config;
use crate::station::storage_config;

pub async fn run(args: ExportArgs) -> CmdResult {
    let cfg = Config::load(&args.config.config)?;
    check_channel(&cfg, args.channel)?;
    let from = parse_time_90k(&args.from, "--from")?;
    let to = parse_time_90k(&args.to, "--to")?;
    if to <= from {
        return Err("--to must be after --from".into());
    }
    let sc = storage_config(&cfg);
    let key = if args.sign { Some(super::evidence::box_key(&cfg.server.state_dir)?) } else { None };
    let (channel, output) = (args.channel, args.output.clone());
    let summary = tokio::task::spawn_blocking(move || -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
        let store = understudy_storage::Store::open_read_only(sc)?;
        // Write to a temporary name and rename, so a failed export never leaves a half file
        // that looks like a good one.
        let tmp = output.with_extension("mp4.part");
        let file = std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} exporting [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let result = store.export(channel, from, to, &mut out, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        out.flush().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        let file = out.into_inner().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        file.sync_all().map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &output).map_err(|e| format!("renaming to {}: {e}", output.display()))?;
        Ok(summary)
    })
    .await??;
    if let Some(key) = key {
        let m = super::evidence::Manifest {
            format: String::new(),
            file: String::new(),
            bytes: 0,
            sha256: String::new(),
            box_name: cfg.server.name.clone(),
            channel,
            recorded_for: cfg.channel_map().remove(&channel).unwrap_or_default(),
            requested_from: format_90k(from),
            requested_to: format_90k(to),
            start: format_90k(summary.start_90k),
            end: format_90k(summary.end_90k),
            frames: summary.frames,
            exported_at: format_90k(super::time::now_90k()),
            user: None,
            public_key: String::new(),
        };
        let output = args.output.clone();
        let fp = super::evidence::fingerprint(&key.verifying_key());
        let manifest = tokio::task::spawn_blocking(move || super::evidence::sign(&output, &key, m)).await??;
        eprintln!("signed: {} (+ .sig), key fingerprint {fp}", manifest.display());
    }
    eprintln!(
        "wrote {}: channel {}, {} → {} ({:.1} s, {} frames, {:.2} MB)",
        args.output.display(),
        channel,
        format_90k(summary.start_90k),
        format_90k(summary.end_90k),
        (summary.end_90k - summary.start_90k) as f64 / 90_000.0,
        summary.frames,
        summary.bytes as f64 / 1e6
    );
    Ok(())
}
