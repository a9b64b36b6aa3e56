//! The command line: `understudy <command>`, parsed with clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "understudy", version, about = "Failover recorder for video surveillance")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record every [[camera]] of the config (and stand by for its mains) until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// List a channel's recorded segments.
    Recordings(RecordingsArgs),
    /// Write one MP4 of a channel's footage between two times.
    Export(ExportArgs),
    /// Rebuild the catalog from the segment files on the volumes (repairing torn tails).
    Reindex(ConfigArg),
    /// Validate a config and print the channel map.
    Check(ConfigArg),
    /// Serve simulated RTSP cameras looping fixture clips.
    Camsim(crate::camsim::CamsimArgs),
    /// Rehearse a takeover of a healthy main for a while and report per-channel latency.
    Drill(DrillArgs),
    /// Run a self-contained demonstration on a temporary directory: simulated cameras, recording, export.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RecordingsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Failover channel number.
    #[arg(long)]
    pub channel: u32,
    /// Start of the range (RFC 3339, e.g. 2026-11-24T18:00:00Z, or "now-10m").
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range (RFC 3339 or "now").
    #[arg(long)]
    pub to: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long)]
    pub channel: u32,
    /// Start (RFC 3339 or "now-10m"); the export starts at the key frame at or before it.
    #[arg(long)]
    pub from: String,
    /// End (RFC 3339 or "now").
    #[arg(long)]
    pub to: String,
    /// Output MP4 file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated cameras.
    #[arg(long, default_value_t = 4)]
    pub cameras: u32,
    /// Keep the demo's files in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds to record before each step (failure, recovery).
    #[arg(long, default_value_t = 6)]
    pub seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The TOML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The `[[main]]` to take over.
    #[arg(long)]
    pub main: String,
    /// How long to record, e.g. 60s.
    #[arg(long = "for", default_value = "60s")]
    pub r#for: String,
}
