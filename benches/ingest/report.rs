//! The human-readable table (stderr) and the targets the issue sets, evaluated on this run.

use serde_json::{json, Value};

use crate::args::{Args, Mode};
use crate::summary::{Floor, Peer, Understudy};
use crate::sys::{percentile, round3};
use crate::verify::ClipInfo;

pub struct Target {
    pub name: &'static str,
    pub goal: String,
    pub value: String,
    /// None: not measured by this run (phase skipped, or another load than the target's).
    pub met: Option<bool>,
}

impl Target {
    pub fn json(&self) -> Value {
        json!({ "name": self.name, "goal": self.goal, "value": self.value, "met": self.met })
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn targets(
    args: &Args,
    clip: &ClipInfo,
    u: &Understudy,
    peer: Option<&Peer>,
    floor: Option<&Floor>,
) -> Vec<Target> {
    let n = f64::from(args.channels);
    let mut t = Vec::new();
    let full_load =
        args.mode == Mode::Realtime && args.channels >= 100 && clip.bitrate_bps >= 3_900_000;
    t.push(Target {
        name: "zero_loss_realtime",
        goal: "no frame lost, every channel recording, 100 × 4 Mbit/s realtime".into(),
        value: format!(
            "{} lost, {} channels never recorded ({} × {:.1} Mbit/s {})",
            u.loss.lost(),
            u.never.len(),
            args.channels,
            clip.bitrate_bps as f64 / 1e6,
            args.mode.as_str()
        ),
        met: full_load.then_some(u.loss.lost() == 0 && u.never.is_empty()),
    });
    let ratio =
        |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let ffmpeg = peer.filter(|p| p.tool == "ffmpeg");
    let r = ratio(u.cpu_per_gb, ffmpeg.and_then(|p| p.cpu_per_gb));
    t.push(Target {
        name: "cpu_vs_ffmpeg",
        goal: "CPU per GB ≤ 1/5 of ffmpeg's (ratio ≤ 0.20)".into(),
        value: r.map_or("not measured (--peer ffmpeg)".into(), |r| {
            format!("ratio {r:.2}")
        }),
        met: r.map(|r| r <= 0.2),
    });
    let r = ratio(u.cpu_per_gb, floor.and_then(|f| f.cpu_per_gb));
    t.push(Target {
        name: "cpu_vs_floor",
        goal: "CPU per GB ≤ 3 × the raw-socket floor".into(),
        value: r.map_or("not measured (floor skipped)".into(), |r| {
            format!("{r:.2} × floor")
        }),
        met: r.map(|r| r <= 3.0),
    });
    let limit = 64.0 + 2.0 * n;
    let peak = u.rss_peak_kib.map(|k| k as f64 / 1024.0);
    t.push(Target {
        name: "rss",
        goal: format!(
            "peak RSS ≤ 64 MiB + 2 MiB × {} channels = {limit:.0} MiB",
            args.channels
        ),
        value: peak.map_or("n/a".into(), |p| format!("{p:.0} MiB")),
        met: peak.map(|p| p <= limit),
    });
    let bound = clip.gop_seconds() + 1.0;
    let max = sorted(&u.first_durable).last().copied();
    t.push(Target {
        name: "first_durable",
        goal: format!("every channel's first durable fragment ≤ GOP + 1 s = {bound:.1} s after takeover start"),
        value: match max {
            Some(m) if u.never.is_empty() => format!("max {m:.2} s"),
            Some(m) => format!("max {m:.2} s, {} channels never", u.never.len()),
            None => "no channel recorded".into(),
        },
        // A takeover is real time; flatout saturates the machine on purpose.
        met: (args.mode == Mode::Realtime).then_some(u.never.is_empty() && max.is_some_and(|m| m <= bound)),
    });
    t.push(Target {
        name: "flatout_throughput",
        goal: "flatout > 2 Gbit/s (with zero loss)".into(),
        value: if args.mode == Mode::Flatout {
            format!("{:.0} Mbit/s, {} lost", u.mbit_s, u.loss.lost())
        } else {
            "not measured (--mode flatout)".into()
        },
        met: (args.mode == Mode::Flatout).then_some(u.mbit_s > 2000.0 && u.loss.lost() == 0),
    });
    t
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// Every phase's summary (the peer and the floor may have been skipped).
pub struct Results<'a> {
    pub u: &'a Understudy,
    pub peer: Option<&'a Peer>,
    pub floor: Option<&'a Floor>,
}

pub fn table(
    args: &Args,
    clip: &ClipInfo,
    dir_desc: &str,
    r: &Results<'_>,
    skipped: &[String],
    targets: &[Target],
) {
    let (u, peer, floor) = (r.u, r.peer, r.floor);
    let mut out = String::new();
    out.push_str(&format!(
        "\n== ingest: {} channels × {} s, {}, {} ({}x{} {}, {:.2} Mbit/s, GOP {} frames = {:.1} s), audio {}\n   {}\n   {}\n\n",
        args.channels,
        args.seconds,
        args.mode.as_str(),
        args.clip.display(),
        clip.width,
        clip.height,
        clip.codec,
        clip.bitrate_bps as f64 / 1e6,
        clip.gop_frames,
        clip.gop_seconds(),
        args.audio.as_str(),
        dir_desc,
        args.command
    ));
    let pname = peer.map_or("peer", |p| p.tool);
    out.push_str(&format!(
        "{:<34}{:>14}{:>14}{:>14}\n",
        "", "understudy", pname, "floor"
    ));
    let mut row = |name: &str, a: String, b: String, c: String| {
        out.push_str(&format!("{name:<34}{a:>14}{b:>14}{c:>14}\n"))
    };
    let dash = || "-".to_string();
    row(
        "throughput, Mbit/s",
        format!("{:.1}", u.mbit_s),
        peer.map_or(dash(), |p| format!("{:.1}", p.mbit_s)),
        floor.map_or(dash(), |f| format!("{:.1}", f.mbit_s)),
    );
    row(
        "CPU s (user+sys)",
        format!("{:.1}", u.cpu.total()),
        peer.map_or(dash(), |p| format!("{:.1}", p.cpu.total())),
        floor.map_or(dash(), |f| format!("{:.1}", f.cpu.total())),
    );
    row(
        "CPU s per GB",
        f(u.cpu_per_gb, 2),
        f(peer.and_then(|p| p.cpu_per_gb), 2),
        f(floor.and_then(|f| f.cpu_per_gb), 2),
    );
    row(
        "CPU s per stream-minute",
        f(u.cpu_per_min, 3),
        f(peer.and_then(|p| p.cpu_per_min), 3),
        dash(),
    );
    row(
        "peak RSS, MiB (peer: sum of VmHWM)",
        f(u.rss_peak_kib.map(|k| k as f64 / 1024.0), 0),
        peer.map_or(dash(), |p| format!("{:.0}", p.rss_sum_kib as f64 / 1024.0)),
        dash(),
    );
    row(
        "  peer: sum of Pss, MiB",
        dash(),
        peer.map_or(dash(), |p| format!("{:.0}", p.pss_sum_kib as f64 / 1024.0)),
        dash(),
    );
    let per_ch = u
        .rss_peak_kib
        .zip(u.rss_base_kib)
        .map(|(p, b)| p.saturating_sub(b) as f64 / 1024.0 / f64::from(args.channels));
    row(
        "RSS per channel, MiB",
        f(per_ch, 2),
        peer.map_or(dash(), |p| {
            format!(
                "{:.1}",
                p.rss_sum_kib as f64 / 1024.0 / f64::from(args.channels)
            )
        }),
        dash(),
    );
    row(
        "lost frames",
        u.loss.lost().to_string(),
        peer.map_or(dash(), |p| p.loss.lost().to_string()),
        dash(),
    );
    row(
        "frames recorded / sent",
        format!("{}/{}", u.loss.recorded, u.loss.sent),
        peer.map_or(dash(), |p| format!("{}/{}", p.loss.recorded, p.loss.sent)),
        dash(),
    );
    row(
        "skipped before key frame",
        u.loss.start_skip.to_string(),
        peer.map_or(dash(), |p| p.loss.start_skip.to_string()),
        dash(),
    );
    row(
        "in flight at stop",
        u.loss.in_flight.to_string(),
        peer.map_or(dash(), |p| p.loss.in_flight.to_string()),
        dash(),
    );
    let lag = |l: &crate::analyze::Loss| {
        format!(
            "{:.2}",
            l.in_flight as f64 / f64::from(args.channels) / clip.fps
        )
    };
    row(
        "  = lag at stop, s per channel",
        lag(&u.loss),
        peer.map_or(dash(), |p| lag(&p.loss)),
        dash(),
    );
    row(
        "camsim CPU s",
        f(u.camsim_cpu.map(|c| c.total()), 1),
        f(peer.and_then(|p| p.camsim_cpu).map(|c| c.total()), 1),
        f(floor.and_then(|f| f.camsim_cpu).map(|c| c.total()), 1),
    );
    let lat = sorted(&u.first_durable);
    out.push_str(&format!(
        "\nfirst durable fragment after takeover start: p50 {} s, p99 {} s, max {} s, never {}\n",
        f(percentile(&lat, 50.0), 2),
        f(percentile(&lat, 99.0), 2),
        f(lat.last().copied(), 2),
        u.never.len()
    ));
    out.push_str(&format!(
        "fdatasync+fsync per second (perf): {}\n",
        u.syncs_per_s
            .map_or("n/a (perf unavailable)".into(), |s| format!(
                "{:.1}",
                round3(s)
            ))
    ));
    if let (Some(a), Some(p)) = (u.cpu_per_gb, peer.and_then(|p| p.cpu_per_gb)) {
        out.push_str(&format!("understudy / {}: CPU per GB {:.2}", pname, a / p));
        if let (Some(r), Some(p)) = (u.rss_peak_kib, peer) {
            out.push_str(&format!(
                ", memory {:.2} (RSS) {:.2} (vs Pss)",
                r as f64 / p.rss_sum_kib.max(1) as f64,
                r as f64 / p.pss_sum_kib.max(1) as f64
            ));
        }
        out.push('\n');
    }
    if let (Some(a), Some(fl)) = (u.cpu_per_gb, floor.and_then(|f| f.cpu_per_gb)) {
        out.push_str(&format!("understudy CPU per GB = {:.2} × floor\n", a / fl));
    }
    for s in skipped {
        out.push_str(&format!("skipped: {s}\n"));
    }
    out.push_str("\ntargets:\n");
    for t in targets {
        let mark = match t.met {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        out.push_str(&format!("  [{mark}] {}: {}\n", t.goal, t.value));
    }
    if !u.problems.is_empty() {
        out.push_str(&format!("\nproblems ({}):\n", u.problems.len()));
        for p in u.problems.iter().take(20) {
            out.push_str(&format!("  {p}\n"));
        }
        if u.problems.len() > 20 {
            out.push_str(&format!("  … {} more in the JSON\n", u.problems.len() - 20));
        }
    }
    eprint!("{out}");
}
