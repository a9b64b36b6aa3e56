//! Takeover bench (issue #12): cold vs warm vs hot standby for N cameras. For each mode, a
//! fresh in-process camsim (realtime), a simulated main, and the real daemon (station, failover
//! controller, standby sessions; no API) in this process; the main is killed at a known instant
//! and every channel's first durable fragment is awaited. Per channel: failure → first durable
//! fragment, and the gap (failure → first footage; 0 when the footage reaches back before it).
//!
//! `cargo bench --bench takeover [-- --cameras 100 --modes cold,warm,hot --settle 12 --json F]`;
//! see benches/README.md.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use understudy::camsim::{CamSim, CamSimConfig, CameraSpec, Pacing};
use understudy::config::Config;
use understudy::daemon::Daemon;
use understudy::failover::health::StateName;
use understudy::simmain::SimMain;

const CLIP: &str = "fixtures/h264-360p25-small.mp4";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// p-th percentile (0–100) of sorted values.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

struct ModeResult {
    mode: String,
    recorded: usize,
    /// Failure (the kill) → the failure being declared.
    detect_s: f64,
    /// Per channel, sorted: failure → first durable fragment (s); footage start relative to the
    /// failure (s, negative = before it); gap (s).
    latency: Vec<f64>,
    start: Vec<f64>,
    gap: Vec<f64>,
    /// While standing by: RTSP sessions camsim had open and the bitrate it sent.
    standby_sessions: u64,
    standby_mbps: f64,
    standby_rss_mib: f64,
    baseline_rss_mib: f64,
}

async fn run_mode(mode: &str, n: u32, settle: Duration, root: &Path) -> ModeResult {
    let sim = CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
        cameras: (1..=n).map(|id| CameraSpec::new(id, Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIP))).collect(),
        pacing: Pacing::Realtime,
        auth: None,
        session_timeout: Duration::from_secs(60),
    })
    .await
    .expect("camsim starts");
    let mut main = SimMain::start("127.0.0.1:0".parse().expect("addr")).await.expect("sim main");
    let dir = root.join(format!("run-{}-{mode}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut text = format!(
        "[server]\nname = \"bench\"\nchannels = {n}\nstate_dir = {:?}\n\n[[volume]]\npath = {:?}\nreserve = \"256 MiB\"\n\n\
         [[main]]\nname = \"nvr\"\nprobe = \"tcp://{}\"\ninterval = \"200ms\"\nfail_after = 3\nrecover_after = 3\nstandby = \"{mode}\"\nprebuffer = \"10s\"\n\n",
        dir.join("state").display().to_string(),
        dir.join("disk").display().to_string(),
        main.addr()
    );
    for i in 1..=n {
        text.push_str(&format!("[[main.camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i)));
    }
    let cfg = Config::parse(&text, &dir.join("bench.toml")).expect("bench config is valid");
    let baseline_rss_mib = rss_kib() as f64 / 1024.0;
    let shutdown = CancellationToken::new();
    let d = Daemon::start(cfg, shutdown.clone()).await.expect("daemon starts");
    let fo = d.failover.clone().expect("a main is configured");
    // Standing by: the main is ok and every standby session is ready.
    let want = match mode {
        "hot" => Some("hot"),
        "warm" => Some("warm"),
        _ => None,
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        let ok = fo.status().first().is_some_and(|m| m.state == StateName::Ok);
        let sb = fo.standbys();
        if ok && want.is_none_or(|w| sb.len() == n as usize && sb.iter().all(|s| s.state == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = t0.elapsed();
    let sent0 = sim.stats().total.bytes_sent;
    tokio::time::sleep(settle).await;
    let stats = sim.stats();
    let standby_mbps = (stats.total.bytes_sent - sent0) as f64 * 8.0 / settle.as_secs_f64() / 1e6;
    let standby_rss_mib = rss_kib() as f64 / 1024.0;
    eprintln!("{mode}: standing by after {:.1} s; {} camera sessions, {standby_mbps:.1} Mbit/s, RSS {standby_rss_mib:.0} MiB",
        ready.as_secs_f64(), stats.total.active_sessions);

    let killed = SystemTime::now();
    main.down();
    let mut declared = None;
    let t1 = Instant::now();
    let mut firsts = Vec::new();
    while t1.elapsed() < Duration::from_secs(60) {
        if declared.is_none() && fo.status().first().is_some_and(|m| m.state == StateName::TakenOver) {
            declared = Some(SystemTime::now());
        }
        firsts = d.station.snapshots().iter().filter_map(|(_, dur)| Some((dur.first_durable_at()?, dur.first_start_90k()?))).collect();
        if firsts.len() == n as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let k = ms(killed);
    let mut latency: Vec<f64> = firsts.iter().map(|(t, _)| (ms(*t) - k) as f64 / 1e3).collect();
    let mut start: Vec<f64> = firsts.iter().map(|(_, s)| (s / 90 - k) as f64 / 1e3).collect();
    let mut gap: Vec<f64> = start.iter().map(|s| s.max(0.0)).collect();
    for v in [&mut latency, &mut start, &mut gap] {
        v.sort_by(f64::total_cmp);
    }
    let _ = d.stop().await;
    drop(main);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    ModeResult {
        mode: mode.to_owned(),
        recorded: firsts.len(),
        detect_s: declared.map_or(f64::NAN, |t| (ms(t) - k) as f64 / 1e3),
        latency,
        start,
        gap,
        standby_sessions: stats.total.active_sessions,
        standby_mbps,
        standby_rss_mib,
        baseline_rss_mib,
    }
}

fn main() {
    let n: u32 = arg("--cameras").and_then(|v| v.parse().ok()).unwrap_or(100);
    let settle = Duration::from_secs_f64(arg("--settle").and_then(|v| v.parse().ok()).unwrap_or(12.0));
    let modes = arg("--modes").unwrap_or_else(|| "cold,warm,hot".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-takeover");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut results = Vec::new();
    for mode in modes.split(',') {
        results.push(rt.block_on(run_mode(mode.trim(), n, settle, &root)));
    }
    println!("\n{n} cameras ({CLIP}, realtime), main probed every 200 ms, fail_after 3, prebuffer 10 s; times from the kill, s");
    println!("{:<5} {:>8} {:>7} | {:>22} | {:>24} | {:>11} | {:>17}", "mode", "recorded", "detect",
        "first durable p50/p95/max", "footage start p50/min/max", "gap p50/max", "standby sess/Mbit");
    for r in &results {
        println!("{:<5} {:>8} {:>7.2} | {:>6.2} {:>6.2} {:>8.2} | {:>7.2} {:>7.2} {:>8.2} | {:>5.2} {:>5.2} | {:>6} {:>10.1}",
            r.mode, format!("{}/{n}", r.recorded), r.detect_s,
            pct(&r.latency, 50.0), pct(&r.latency, 95.0), pct(&r.latency, 100.0),
            pct(&r.start, 50.0), pct(&r.start, 0.0), pct(&r.start, 100.0),
            pct(&r.gap, 50.0), pct(&r.gap, 100.0), r.standby_sessions, r.standby_mbps);
    }
    for r in &results {
        println!("{}: RSS {:.0} MiB standing by (process {:.0} MiB before the daemon)", r.mode, r.standby_rss_mib, r.baseline_rss_mib);
    }
    if let Some(path) = arg("--json") {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|r| serde_json::json!({
                "mode": r.mode, "cameras": n, "recorded": r.recorded, "detect_s": r.detect_s,
                "first_durable_s": { "p50": pct(&r.latency, 50.0), "p95": pct(&r.latency, 95.0), "max": pct(&r.latency, 100.0) },
                "footage_start_s": { "p50": pct(&r.start, 50.0), "min": pct(&r.start, 0.0), "max": pct(&r.start, 100.0) },
                "gap_s": { "p50": pct(&r.gap, 50.0), "max": pct(&r.gap, 100.0) },
                "standby_camera_sessions": r.standby_sessions, "standby_mbit_s": r.standby_mbps, "standby_rss_mib": r.standby_rss_mib,
            }))
            .collect();
        if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default()) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    if results.iter().any(|r| r.recorded != n as usize) {
        eprintln!("not every channel recorded");
        std::process::exit(1);
    }
}
