//! `cargo bench --bench ingest`: many cameras (camsim, a separate process) recorded at once by
//! Understudy's real pipeline in this process, checked frame by frame against the files, and
//! compared with a third-party recorder (ffmpeg or GStreamer) and with a raw-socket floor.
//! See benches/README.md for the options, what is measured and the JSON schema.

#[path = "ingest/analyze.rs"]
mod analyze;
#[path = "ingest/args.rs"]
mod args;
#[path = "ingest/camsim.rs"]
mod camsim;
#[path = "ingest/floor.rs"]
mod floor;
#[path = "ingest/peer.rs"]
mod peer;
#[path = "ingest/recorder.rs"]
mod recorder;
#[path = "ingest/report.rs"]
mod report;
#[path = "ingest/summary.rs"]
mod summary;
#[path = "ingest/sys.rs"]
mod sys;
#[path = "ingest/verify.rs"]
mod verify;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;

use args::{Args, Peer};

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ingest: CHECK FAILED (see the problems above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ingest: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A phase's outcome in the JSON: its figures, or why it did not run.
fn skipped(reason: &str) -> Value {
    json!({ "skipped": reason })
}

/// Runs every phase; Ok(false) if `--check` found a problem.
fn run(args: &Args) -> Result<bool, String> {
    if !args.clip.is_file() {
        return Err(format!("clip {} not found", args.clip.display()));
    }
    let clip = verify::ClipInfo::probe(&args.clip)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let (fs, ram) = sys::fs_type(&args.dir);
    if ram {
        eprintln!("ingest: WARNING: {} is on {fs} (RAM): disk figures will be meaningless; use --dir on a real disk", args.dir.display());
    }
    let run_dir = args.dir.join(format!("run-{}", std::process::id()));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .map_err(|e| format!("clearing {}: {e}", run_dir.display()))?;
    }
    let free = sys::free_bytes(&args.dir).unwrap_or(0);
    let budget = args
        .max_bytes
        .unwrap_or_else(|| (free / 3).min(20_000_000_000))
        .max(1);
    // The run must fit above the volume's floor, or retention deletes what the check then
    // misses (a CI disk with 6 GB free once failed that way, with a 5 GB default floor).
    let reserve = recorder::BENCH_RESERVE_MIB << 20;
    let estimate = match args.mode {
        args::Mode::Realtime => {
            (clip.bitrate_bps / 8)
                .saturating_mul(args.channels as u64)
                .saturating_mul(args.seconds)
                * 5
                / 4
        }
        _ => budget,
    };
    if free < estimate.saturating_add(reserve) {
        return Err(format!(
            "not enough free space in {}: {:.2} GB free, the run needs about {:.2} GB plus the bench volume's {} MiB floor (free space, or --max-gb / fewer --channels / --seconds)",
            args.dir.display(),
            free as f64 / 1e9,
            estimate as f64 / 1e9,
            recorder::BENCH_RESERVE_MIB
        ));
    }
    let dir_desc = format!(
        "dir {} ({fs}, {:.0} GB free)",
        run_dir.display(),
        free as f64 / 1e9
    );
    eprintln!(
        "ingest: {} channels × {} s {} of {} ({:.2} Mbit/s each), audio {}; {dir_desc}",
        args.channels,
        args.seconds,
        args.mode.as_str(),
        args.clip.display(),
        clip.bitrate_bps as f64 / 1e6,
        args.audio.as_str()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-rt")
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let result = phases(args, &rt, &clip, &run_dir, &dir_desc, budget);
    if !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    } else {
        eprintln!("ingest: recordings kept in {}", run_dir.display());
    }
    result
}

fn phases(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    clip: &verify::ClipInfo,
    run_dir: &Path,
    dir_desc: &str,
    budget: u64,
) -> Result<bool, String> {
    let mut notes: Vec<String> = Vec::new();
    eprintln!("ingest: understudy: recording…");
    let rec = recorder::run(rt, args, &run_dir.join("understudy"), budget)?;
    eprintln!("ingest: understudy: verifying {} channels…", args.channels);
    let u = summary::understudy(args, clip, &rec)?;
    drop(rec);
    if !args.keep {
        let _ = std::fs::remove_dir_all(run_dir.join("understudy"));
    }

    let (floor, floor_json) = if args.floor {
        eprintln!("ingest: floor: raw sockets to files…");
        match floor::run(rt, args, &run_dir.join("floor"), budget) {
            Ok(r) => {
                let f = summary::floor(&r);
                let j = f.json.clone();
                (Some(f), j)
            }
            Err(e) => {
                notes.push(format!("floor failed: {e}"));
                (None, skipped(&format!("failed: {e}")))
            }
        }
    } else {
        let why = if args.check { "--check" } else { "--no-floor" };
        notes.push(format!("floor ({why})"));
        (None, skipped(why))
    };
    if !args.keep {
        let _ = std::fs::remove_dir_all(run_dir.join("floor"));
    }

    let (peer, peer_json) = match peer::available(args.peer) {
        Err(why) => {
            notes.push(format!("peer: {why}"));
            (None, skipped(&why))
        }
        Ok(exe) => {
            eprintln!("ingest: peer: {} × {}…", args.channels, args.peer.as_str());
            let dir = run_dir.join(args.peer.as_str());
            let out = peer::run(args, &exe, &dir, &clip.codec, budget)
                .and_then(|r| summary::peer(args, clip, &r));
            if !args.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            match out {
                Ok(p) => {
                    let j = p.json.clone();
                    (Some(p), j)
                }
                Err(e) => {
                    notes.push(format!("peer failed: {e}"));
                    (None, skipped(&format!("failed: {e}")))
                }
            }
        }
    };

    let targets = report::targets(args, clip, &u, peer.as_ref(), floor.as_ref());
    let results = report::Results {
        u: &u,
        peer: peer.as_ref(),
        floor: floor.as_ref(),
    };
    report::table(args, clip, dir_desc, &results, &notes, &targets);
    if args.check && !(u.problems.is_empty() && u.never.is_empty() && u.loss.lost() == 0) {
        eprintln!(
            "ingest: --check: {} frames lost, {} channels never recorded, {} problems",
            u.loss.lost(),
            u.never.len(),
            u.problems.len()
        );
    }
    let check_failures: Vec<String> =
        if u.problems.is_empty() && u.never.is_empty() && u.loss.lost() == 0 {
            Vec::new()
        } else {
            u.problems.clone()
        };
    let ratio = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| sys::round3(a / b))
    };
    let doc = json!({
        "bench": "ingest",
        "schema": 1,
        "command": args.command,
        "mode": args.mode.as_str(),
        "channels": args.channels,
        "seconds": args.seconds,
        "audio": args.audio.as_str(),
        "clip": {
            "path": args.clip.display().to_string(), "codec": clip.codec, "width": clip.width, "height": clip.height,
            "fps": clip.fps, "frames": clip.frames, "gop_frames": clip.gop_frames, "bitrate_bps": clip.bitrate_bps,
        },
        "machine": { "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()), "dir": dir_desc },
        "understudy": u.json,
        "floor": floor_json,
        "peer": peer_json,
        "ratios": {
            "cpu_per_gb_vs_peer": ratio(u.cpu_per_gb, peer.as_ref().and_then(|p| p.cpu_per_gb)),
            "rss_vs_peer": ratio(u.rss_peak_kib.map(|k| k as f64), peer.as_ref().map(|p| p.rss_sum_kib as f64)),
            "rss_vs_peer_pss": ratio(u.rss_peak_kib.map(|k| k as f64), peer.as_ref().map(|p| p.pss_sum_kib as f64)),
            "cpu_per_gb_vs_floor": ratio(u.cpu_per_gb, floor.as_ref().and_then(|f| f.cpu_per_gb)),
        },
        "targets": targets.iter().map(report::Target::json).collect::<Vec<_>>(),
        "check": { "requested": args.check, "passed": check_failures.is_empty(), "failures": check_failures },
        "peer_requested": args.peer != Peer::None,
    });
    if let Some(dest) = &args.json {
        let text = doc.to_string();
        if dest == "-" {
            let mut so = std::io::stdout().lock();
            writeln!(so, "{text}").map_err(|e| format!("writing JSON to stdout: {e}"))?;
        } else {
            std::fs::write(dest, text + "\n").map_err(|e| format!("writing {dest}: {e}"))?;
            eprintln!("ingest: JSON written to {dest}");
        }
    }
    Ok(!args.check || check_failures.is_empty())
}
