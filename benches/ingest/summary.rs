//! Each phase's result checked against the files and reduced to figures: Understudy's run,
//! the peer's run and the floor. Problems that `--check` fails on are collected here.

use serde_json::{json, Value};

use crate::analyze::{latency_json, mbit_s, opt, per_gb, per_stream_minute, Loss};
use crate::args::Args;
use crate::floor::FloorRun;
use crate::peer::PeerRun;
use crate::recorder::RecorderRun;
use crate::sys::{round3, Cpu};
use crate::verify::{self, ClipInfo};

pub struct Understudy {
    pub mbit_s: f64,
    pub cpu: Cpu,
    pub cpu_per_gb: Option<f64>,
    pub cpu_per_min: Option<f64>,
    pub rss_base_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub first_durable: Vec<f64>,
    pub never: Vec<u32>,
    pub loss: Loss,
    pub syncs_per_s: Option<f64>,
    pub camsim_cpu: Option<Cpu>,
    pub problems: Vec<String>,
    pub json: Value,
}

pub struct Peer {
    pub tool: &'static str,
    pub mbit_s: f64,
    pub cpu: Cpu,
    pub cpu_per_gb: Option<f64>,
    pub cpu_per_min: Option<f64>,
    pub rss_sum_kib: u64,
    pub pss_sum_kib: u64,
    pub loss: Loss,
    pub camsim_cpu: Option<Cpu>,
    pub json: Value,
}

pub struct Floor {
    pub mbit_s: f64,
    pub cpu: Cpu,
    pub cpu_per_gb: Option<f64>,
    pub camsim_cpu: Option<Cpu>,
    pub json: Value,
}

fn cpu_json(c: Option<Cpu>) -> Value {
    c.map_or(Value::Null, Cpu::json)
}

/// ffprobe's packet count against the tag count, for `channels` (1-based) of `files`.
fn ffprobe_check(
    channels: &[u32],
    files: &[&[std::path::PathBuf]],
    recorded: &[u64],
    problems: &mut Vec<String>,
) -> Value {
    let (mut packets, mut mismatched) = (0u64, Vec::new());
    for &ch in channels {
        let i = ch as usize - 1;
        match verify::ffprobe_total(files[i]) {
            Ok(n) => {
                packets += n;
                if n != recorded[i] {
                    mismatched.push(ch);
                    problems.push(format!(
                        "channel {ch}: ffprobe counts {n} packets, the tags {} frames",
                        recorded[i]
                    ));
                }
            }
            Err(e) => {
                mismatched.push(ch);
                problems.push(format!("channel {ch}: {e}"));
            }
        }
    }
    json!({ "channels_checked": channels.len(), "packets": packets, "channels_mismatched": mismatched })
}

pub fn understudy(args: &Args, clip: &ClipInfo, r: &RecorderRun) -> Result<Understudy, String> {
    let mut problems = Vec::new();
    let jobs = r
        .channels
        .iter()
        .map(|c| (c.channel, c.files.clone()))
        .collect();
    let tallies = verify::tally_all(jobs)
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
    let mut loss = Loss::default();
    let (mut bytes, mut frames, mut first, mut never) = (0u64, 0u64, Vec::new(), Vec::new());
    let (mut lost_packets, mut dropped_frames, mut dropped_gops, mut reconnects, mut write_errors) =
        (0, 0, 0, 0, 0);
    for (c, t) in r.channels.iter().zip(&tallies) {
        let ch = c.channel;
        let sent = r.sent.get(ch as usize - 1).copied().unwrap_or_default();
        let lost_before = loss.lost();
        loss.add(
            ch,
            t,
            sent,
            c.snap.as_ref().map(|s| s.frames),
            clip.gop_frames,
        );
        let lost = loss.lost() - lost_before;
        if lost > 0 {
            problems.push(format!(
                "channel {ch}: {lost} frames lost ({} missing between recorded frames)",
                t.gaps
            ));
        }
        let d = &c.durable;
        bytes += d.bytes_durable();
        frames += d.frames_durable();
        write_errors += d.write_errors();
        match c.first_durable_s {
            Some(s) => first.push(s),
            None => never.push(ch),
        }
        if d.frames_durable() != t.recorded {
            problems.push(format!(
                "channel {ch}: {} frames durable by the stats, {} in the files",
                d.frames_durable(),
                t.recorded
            ));
        }
        if c.catalog_frames != d.frames_durable() {
            problems.push(format!(
                "channel {ch}: catalog lists {} frames, stats say {}",
                c.catalog_frames,
                d.frames_durable()
            ));
        }
        if t.foreign > 0 {
            problems.push(format!(
                "channel {ch}: {} frames of another camera",
                t.foreign
            ));
        }
        match &c.snap {
            Some(s) => {
                lost_packets += s.lost_packets;
                dropped_frames += s.dropped_frames;
                dropped_gops += s.dropped_gops;
                reconnects += s.reconnects;
                if s.reconnects > 0 || s.sessions > 1 {
                    problems.push(format!(
                        "channel {ch}: {} reconnects ({} sessions), last error: {}",
                        s.reconnects,
                        s.sessions,
                        s.last_error.as_deref().unwrap_or("none")
                    ));
                }
            }
            None => problems.push(format!("channel {ch}: not recording at the stop")),
        }
    }
    for ch in &never {
        problems.push(format!("channel {ch}: never recorded"));
    }
    if lost_packets + dropped_frames + dropped_gops + write_errors > 0 {
        problems.push(format!("ingest counted {lost_packets} lost RTP packets, {dropped_frames} frames dropped in {dropped_gops} GOPs at a full queue; storage {write_errors} write errors"));
    }
    let n = args.channels;
    let sample = if args.check {
        (1..=n).collect()
    } else {
        verify::sample_channels(n)
    };
    let files: Vec<&[std::path::PathBuf]> = r.channels.iter().map(|c| c.files.as_slice()).collect();
    let recorded: Vec<u64> = tallies.iter().map(|t| t.recorded).collect();
    let ffprobe = ffprobe_check(&sample, &files, &recorded, &mut problems);

    let mbit = mbit_s(bytes, r.window_s);
    let cpu_per_gb = per_gb(r.cpu.total(), bytes);
    let cpu_per_min = per_stream_minute(r.cpu.total(), n, r.window_s);
    let syncs_per_s = r.syncs.map(|s| (s.fdatasync + s.fsync) as f64 / r.wall_s);
    let rss_per_ch = r
        .rss_peak_kib
        .zip(r.rss_baseline_kib)
        .map(|(p, b)| p.saturating_sub(b) as f64 / 1024.0 / f64::from(n));
    let json = json!({
        "window_s": round3(r.window_s),
        "wall_s": round3(r.wall_s),
        "stopped_at_budget": r.stopped_at_budget,
        "bytes_durable": bytes,
        "frames_durable": frames,
        "segments": r.channels.iter().map(|c| c.catalog_segments).sum::<usize>(),
        "mbit_s": round3(mbit),
        "cpu": r.cpu.json(),
        "cores_used": round3(r.cpu.total() / r.wall_s),
        "cpu_s_per_gb": opt(cpu_per_gb),
        "cpu_s_per_stream_minute": opt(cpu_per_min),
        "rss": {
            "baseline_mib": opt(r.rss_baseline_kib.map(|k| k as f64 / 1024.0)),
            "peak_mib": opt(r.rss_peak_kib.map(|k| k as f64 / 1024.0)),
            "per_channel_mib": opt(rss_per_ch),
            "peak_reset_before_start": r.peak_was_reset,
        },
        "first_durable": latency_json(first.clone(), never.len()),
        "syncs": r.syncs.map_or(Value::Null, |s| json!({ "fdatasync": s.fdatasync, "fsync": s.fsync, "per_s": round3(syncs_per_s.unwrap_or(0.0)) })),
        "loss": loss.json(n),
        "ingest": { "lost_packets": lost_packets, "dropped_frames": dropped_frames, "dropped_gops": dropped_gops, "reconnects": reconnects },
        "storage_write_errors": write_errors,
        "ffprobe": ffprobe,
        "camsim_cpu": cpu_json(r.camsim_cpu),
        "camsim_sessions": r.sent.iter().map(|s| s.sessions).sum::<u64>(),
        "files": tallies.iter().map(|t| t.files).sum::<usize>(),
        "problems": problems,
    });
    Ok(Understudy {
        mbit_s: mbit,
        cpu: r.cpu,
        cpu_per_gb,
        cpu_per_min,
        rss_base_kib: r.rss_baseline_kib,
        rss_peak_kib: r.rss_peak_kib,
        first_durable: first,
        never,
        loss,
        syncs_per_s,
        camsim_cpu: r.camsim_cpu,
        problems,
        json,
    })
}

pub fn peer(args: &Args, clip: &ClipInfo, r: &PeerRun) -> Result<Peer, String> {
    let jobs = r
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (i as u32 + 1, f.clone()))
        .collect();
    let tallies = verify::tally_all(jobs)
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
    let mut loss = Loss::default();
    for (i, t) in tallies.iter().enumerate() {
        let sent = r.sent.get(i).copied().unwrap_or_default();
        loss.add(i as u32 + 1, t, sent, None, clip.gop_frames);
    }
    let mut problems = Vec::new();
    let files: Vec<&[std::path::PathBuf]> = r.files.iter().map(Vec::as_slice).collect();
    let recorded: Vec<u64> = tallies.iter().map(|t| t.recorded).collect();
    let ffprobe = ffprobe_check(
        &verify::sample_channels(args.channels),
        &files,
        &recorded,
        &mut problems,
    );
    let n = args.channels;
    let mbit = mbit_s(r.bytes, r.window_s);
    let cpu_per_gb = per_gb(r.cpu.total(), r.bytes);
    let cpu_per_min = per_stream_minute(r.cpu.total(), n, r.window_s);
    let json = json!({
        "tool": r.tool,
        "window_s": round3(r.window_s),
        "stopped_at_budget": r.stopped_at_budget,
        "bytes": r.bytes,
        "mbit_s": round3(mbit),
        "cpu": r.cpu.json(),
        "cpu_s_per_gb": opt(cpu_per_gb),
        "cpu_s_per_stream_minute": opt(cpu_per_min),
        "rss_sum_mib": round3(r.rss_sum_kib as f64 / 1024.0),
        "pss_sum_mib": round3(r.pss_sum_kib as f64 / 1024.0),
        "rss_per_process_mib": round3(r.rss_sum_kib as f64 / 1024.0 / f64::from(n)),
        "processes_exited_early": r.exited_early,
        "processes_killed": r.killed,
        "loss": loss.json(n),
        "ffprobe": ffprobe,
        "camsim_cpu": cpu_json(r.camsim_cpu),
        "camsim_sessions": r.sent.iter().map(|s| s.sessions).sum::<u64>(),
        "files": tallies.iter().map(|t| t.files).sum::<usize>(),
        "problems": problems,
    });
    Ok(Peer {
        tool: r.tool,
        mbit_s: mbit,
        cpu: r.cpu,
        cpu_per_gb,
        cpu_per_min,
        rss_sum_kib: r.rss_sum_kib,
        pss_sum_kib: r.pss_sum_kib,
        loss,
        camsim_cpu: r.camsim_cpu,
        json,
    })
}

pub fn floor(r: &FloorRun) -> Floor {
    let mbit = mbit_s(r.bytes, r.window_s);
    let cpu_per_gb = per_gb(r.cpu.total(), r.bytes);
    let json = json!({
        "window_s": round3(r.window_s),
        "stopped_at_budget": r.stopped_at_budget,
        "bytes": r.bytes,
        "mbit_s": round3(mbit),
        "cpu": r.cpu.json(),
        "cpu_s_per_gb": opt(cpu_per_gb),
        "camsim_sent_bytes": r.sent.iter().map(|s| s.bytes).sum::<u64>(),
        "channels_failed": r.failed,
        "camsim_cpu": cpu_json(r.camsim_cpu),
    });
    Floor {
        mbit_s: mbit,
        cpu: r.cpu,
        cpu_per_gb,
        camsim_cpu: r.camsim_cpu,
        json,
    }
}
