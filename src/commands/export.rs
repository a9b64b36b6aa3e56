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
            user: Some(super::evidence::os_user()),
            cameras: super::evidence::cameras_on(&cfg, channel),
            etag: None,
            public_key: String::new(),
        };
        let output = args.output.clone();
        let fp = super::evidence::fingerprint(&key.verifying_key());
        let manifest = tokio::task::spawn_blocking(move || super::evidence::sign(&output, &key, m)).await??;
        eprintln!("signed: {} (+ .sig), key fingerprint {fp}", manifest.display());
    }
    if let Some(at) = summary.stopped_at_params_change_90k {
        tracing::warn!(channel, stopped_at = %format_90k(at), "export stopped early at a change of codec parameters");
    }
    if let Some(w) = stopped_warning(channel, summary.stopped_at_params_change_90k, to) {
        eprintln!("{w}");
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

/// What to tell the operator when an export stopped early at a change of codec parameters
/// (one MP4 holds one set): where, and the command for the rest.
pub fn stopped_warning(channel: u32, stopped_90k: Option<i64>, to_90k: i64) -> Option<String> {
    let at = stopped_90k?;
    Some(format!(
        "warning: the export stops at {at} because channel {channel}'s codec parameters (resolution or codec) change there; \
         one MP4 holds one set. For the rest: understudy export --channel {channel} --from {at} --to {to} -o REST.mp4",
        at = format_90k(at),
        to = format_90k(to_90k),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_names_the_stop_and_the_rest() {
        assert_eq!(stopped_warning(2, None, 0), None);
        let at = 1_767_225_600 * 90_000 + 90_000;
        let w = stopped_warning(2, Some(at), at + 900_000).unwrap();
        assert!(w.contains("stops at 2026-01-01T00:00:01.000Z"), "{w}");
        assert!(w.contains("--channel 2 --from 2026-01-01T00:00:01.000Z --to 2026-01-01T00:00:11.000Z"), "{w}");
    }
}
