//! Understudy's side: the real pipeline (recorder ingest → bounded queue → writer thread →
//! storage) in this process, every channel started at once as a takeover does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use understudy::config::Config;
use understudy::station::Station;
use understudy_recorder::ChannelSnapshot;
use understudy_storage::DurableStats;

use crate::args::Args;
use crate::camsim::{Camsim, Sent};
use crate::sys::{self, Cpu, SyncCounts};

/// One channel at the end of the run.
pub struct ChannelEnd {
    pub channel: u32,
    /// Ingest counters just before `close` (the station drops them with the channel).
    pub snap: Option<ChannelSnapshot>,
    pub durable: Arc<DurableStats>,
    /// Seconds from takeover start to this channel's first durable fragment.
    pub first_durable_s: Option<f64>,
    /// Frames and segments the catalog lists for the channel after close.
    pub catalog_frames: u64,
    pub catalog_segments: usize,
    /// Segment files on the volume, in time order.
    pub files: Vec<PathBuf>,
}

pub struct RecorderRun {
    /// Takeover start to the stop request.
    pub window_s: f64,
    /// Takeover start to `close` returning (everything durable).
    pub wall_s: f64,
    /// This process's CPU from takeover start to `close` returning.
    pub cpu: Cpu,
    pub rss_baseline_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub peak_was_reset: bool,
    pub syncs: Option<SyncCounts>,
    pub camsim_cpu: Option<Cpu>,
    pub sent: Vec<Sent>,
    pub channels: Vec<ChannelEnd>,
    pub stopped_at_budget: bool,
}

/// The volume's free-space floor in the bench: explicit, so what the bench measures (ingest)
/// does not depend on the runner's disk size; `ingest.rs` checks the run fits above it.
pub const BENCH_RESERVE_MIB: u64 = 256;

fn config_text(args: &Args, dir: &Path, cam: &Camsim) -> String {
    let mut t = format!(
        "[server]\nname = \"bench\"\nchannels = {}\nstate_dir = {:?}\n\n[[volume]]\npath = {:?}\nreserve = \"{BENCH_RESERVE_MIB} MiB\"\n",
        args.channels,
        dir.join("state").display().to_string(),
        dir.join("disk").display().to_string()
    );
    for ch in 1..=args.channels {
        t.push_str(&format!(
            "\n[[camera]]\nchannel = {ch}\nurl = \"{}\"\n",
            cam.url(ch)
        ));
    }
    t
}

pub fn run(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    dir: &Path,
    budget: u64,
) -> Result<RecorderRun, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let fast = args.mode == crate::args::Mode::Flatout;
    let camsim = Camsim::start(
        args.channels,
        &args.clip,
        args.audio.fixture().as_deref(),
        fast,
        args.seconds + 120,
        &dir.join("camsim.log"),
    )?;
    let cfg_path = dir.join("understudy.toml");
    let text = config_text(args, dir, &camsim);
    std::fs::write(&cfg_path, &text).map_err(|e| format!("writing {}: {e}", cfg_path.display()))?;
    let cfg = Config::parse(&text, &cfg_path).map_err(|e| format!("bench config: {e}"))?;
    let volume = cfg.volumes[0].path.clone();
    let cameras = cfg.cameras.clone();
    let shutdown = CancellationToken::new();
    let station = rt
        .block_on(Station::open(cfg, shutdown.clone()))
        .map_err(|e| format!("opening the store in {}: {e}", dir.display()))?;

    let peak_was_reset = sys::reset_peak_rss();
    let rss_baseline_kib = sys::status_kib(None, "VmRSS");
    let counter = sys::SyncCounter::start();
    let cam0 = camsim.cpu();
    let cpu0 = sys::cpu_self();
    let t0_wall = SystemTime::now();
    let t0 = Instant::now();

    // Takeover: every channel at once.
    let (durables, stopped_at_budget, snaps, camsim_cpu, window_s) = rt.block_on(async {
        let mut durables = Vec::with_capacity(cameras.len());
        for cam in &cameras {
            match station.start(cam) {
                Ok(d) => durables.push((cam.channel, Some(d))),
                Err(e) => {
                    eprintln!("ingest: channel {} did not start: {e}", cam.channel);
                    durables.push((cam.channel, None));
                }
            }
        }
        let deadline = t0 + Duration::from_secs(args.seconds);
        let mut next_report = t0 + Duration::from_secs(10);
        let mut stopped_at_budget = false;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now()))).await;
            let bytes: u64 = durables.iter().filter_map(|(_, d)| d.as_ref()).map(|d| d.bytes_durable()).sum();
            if bytes >= budget {
                eprintln!("ingest: stopping at the {:.1} GB budget (--max-gb)", budget as f64 / 1e9);
                stopped_at_budget = true;
                break;
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(10);
                let snaps = station.snapshots();
                let recording = snaps.iter().filter(|(_, d)| d.frames_durable() > 0).count();
                let secs = t0.elapsed().as_secs_f64();
                eprintln!(
                    "ingest: understudy {secs:>4.0} s: {recording}/{} channels durable, {:.0} MB, {:.0} Mbit/s",
                    durables.len(),
                    bytes as f64 / 1e6,
                    bytes as f64 * 8.0 / 1e6 / secs
                );
            }
        }
        let camsim_cpu = camsim.cpu().zip(cam0).map(|(b, a)| b.since(a));
        let window_s = t0.elapsed().as_secs_f64();
        let snaps: Vec<ChannelSnapshot> = station.snapshots().into_iter().map(|(s, _)| s).collect();
        (durables, stopped_at_budget, snaps, camsim_cpu, window_s)
    });
    rt.block_on(station.close())
        .map_err(|e| format!("closing the station: {e}"))?;
    let cpu = sys::cpu_self().since(cpu0);
    let wall_s = t0.elapsed().as_secs_f64();
    let rss_peak_kib = sys::status_kib(None, "VmHWM");
    let syncs = counter.and_then(|c| c.stop());
    let sent = camsim.stop()?;

    let mut channels = Vec::with_capacity(durables.len());
    for (channel, durable) in durables {
        let durable = durable.unwrap_or_default();
        let first_durable_s = durable
            .first_durable_at()
            .map(|t| t.duration_since(t0_wall).map_or(0.0, |d| d.as_secs_f64()));
        let rows = station
            .store
            .recordings(channel, None, None)
            .map_err(|e| format!("channel {channel}: listing recordings: {e}"))?;
        let files = sys::files_with_ext(&volume.join(format!("ch{channel:03}")), ".mp4");
        channels.push(ChannelEnd {
            channel,
            snap: snaps.iter().find(|s| s.channel == channel).cloned(),
            durable,
            first_durable_s,
            catalog_frames: rows.iter().map(|r| r.frames).sum(),
            catalog_segments: rows.len(),
            files,
        });
    }
    drop(station);
    Ok(RecorderRun {
        window_s,
        wall_s,
        cpu,
        rss_baseline_kib,
        rss_peak_kib,
        peak_was_reset,
        syncs,
        camsim_cpu,
        sent,
        channels,
        stopped_at_budget,
    })
}
