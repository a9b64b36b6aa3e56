//! Hot and warm standby (issue #12): `understudy run` as a child process keeping standby
//! sessions to camsim cameras of a simulated main, which the test kills at a known instant.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use understudy::simmain::SimMain;

fn main_toml(name: &str, probe_addr: &str, mode: &str, cams: &[(u32, String, Option<String>)]) -> String {
    let mut s = format!(
        "[[main]]\nname = \"{name}\"\nprobe = \"tcp://{probe_addr}\"\ninterval = \"200ms\"\nfail_after = 3\nrecover_after = 3\nstandby = \"{mode}\"\nprebuffer = \"10s\"\n\n"
    );
    for (ch, url, standby_url) in cams {
        s.push_str(&format!("[[main.camera]]\nchannel = {ch}\nurl = \"{url}\"\n"));
        if let Some(u) = standby_url {
            s.push_str(&format!("standby_url = \"{u}\"\n"));
        }
        s.push('\n');
    }
    s
}

fn status(setup: &Setup) -> serde_json::Value {
    setup.api_get("/api/status").unwrap_or_default()
}

fn main_state(st: &serde_json::Value) -> String {
    st["mains"][0]["state"].as_str().unwrap_or("").to_owned()
}

/// The standby session shown on `ch` (its first one).
fn standby(st: &serde_json::Value, ch: u32) -> serde_json::Value {
    st["channels"].as_array().and_then(|cs| cs.iter().find(|c| c["channel"] == ch)).map(|c| c["standby"][0].clone()).unwrap_or_default()
}

fn events(setup: &Setup) -> Vec<serde_json::Value> {
    setup.api_get("/api/events?since=0").and_then(|v| v["events"].as_array().cloned()).unwrap_or_default()
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The camsim frame numbers of camera `cam` in the channel's segment files, in file order.
fn tagged_frames(setup: &Setup, ch: u32, cam: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for f in setup.segment_files(ch) {
        let data = std::fs::read(&f).unwrap();
        out.extend(understudy::camsim::find_camsim_tags(&data).into_iter().filter(|(c, _)| *c == cam).map(|(_, n)| n));
    }
    out
}

/// Acceptance 1: the takeover's recording starts with footage captured before the main died,
/// and from its first held frame on no frame is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_standby_records_footage_from_before_the_failure() {
    let sim = camsim(&[H264, H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let cams: Vec<_> = (1..=2).map(|i| (i, sim.url(i), None)).collect();
    let setup = Setup::new(2, "segment_duration = \"60s\"", &main_toml("nvr-a", &main.addr().to_string(), "hot", &cams));
    let mut child = setup.spawn_run();
    // The standby sessions play from (at latest) the moment their state shows `hot`; camsim's
    // frame F of a session is captured F × 40 ms after that session started playing.
    let hot = wait_until_async(Duration::from_secs(60), || {
        let st = status(&setup);
        main_state(&st) == "ok" && (1..=2).all(|ch| standby(&st, ch)["state"] == "hot")
    })
    .await;
    assert!(hot, "standby sessions not hot: {}\n{}", status(&setup), setup.log());
    let playing_by = SystemTime::now();
    // Let the buffers fill past one GOP (2 s), but not to their 10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = status(&setup);
    for ch in 1..=2 {
        let sb = standby(&st, ch);
        assert!(sb["prebuffer_bytes"].as_u64().unwrap() > 50_000 && sb["prebuffer_seconds"].as_f64().unwrap() >= 2.0, "{sb}");
        assert_eq!(sb["prebuffer_short"], false, "{sb}");
        assert!(st["channels"].as_array().unwrap().iter().all(|c| c["state"] == "idle"), "recording while the main is healthy: {st}");
    }
    let killed = SystemTime::now();
    main.down();
    let all = wait_until_async(Duration::from_secs(60), || {
        let evs = events(&setup);
        evs.iter().filter(|e| e["kind"] == "first_fragment").count() == 2
    })
    .await;
    assert!(all, "no first fragments: {}\n{}", status(&setup), setup.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    main.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(60), || events(&setup).iter().any(|e| e["kind"] == "takeover_ended")).await, "{}", setup.log());

    let evs = events(&setup);
    let failed = evs.iter().find(|e| e["kind"] == "main_failed").expect("main_failed");
    for e in evs.iter().filter(|e| e["kind"] == "first_fragment") {
        // The footage reaches back before the failure instant: no gap.
        let start = e["detail"]["footage_start_ms"].as_i64().unwrap();
        eprintln!("first_fragment: {}", e["detail"]);
        assert!(start < -1000, "footage starts {start} ms after the failure: {e}\n{failed}");
        assert_eq!(e["detail"]["gap_ms"].as_i64(), Some(0), "{e}");
    }
    let ended = &evs.iter().find(|e| e["kind"] == "takeover_ended").unwrap()["detail"];
    assert_eq!(ended["gap_ms"].as_i64(), Some(0), "{ended}");
    for ch in 1..=2u32 {
        let recs = setup.recordings(ch);
        assert!(!recs.is_empty(), "channel {ch} recorded nothing");
        // Frames and bytes in the event are what the catalog holds.
        let frames: u64 = recs.iter().map(|r| r["frames"].as_u64().unwrap()).sum();
        let pc = ended["per_channel"].as_array().unwrap().iter().find(|p| p["channel"] == ch).unwrap();
        assert_eq!(pc["frames"].as_u64(), Some(frames), "{pc}");
        for f in setup.segment_files(ch) {
            ffprobe_clean(&f).unwrap();
            ffmpeg_decodes(&f).unwrap();
        }
        let tags = tagged_frames(&setup, ch, ch);
        assert_eq!(tags.len() as u64, frames, "channel {ch}: every recorded frame carries camsim's tag");
        // One session from the first held frame to the end: consecutive frame numbers.
        let first = tags[0];
        for (i, n) in tags.iter().enumerate() {
            assert_eq!(*n, first + i as u64, "channel {ch}: frame {} missing or repeated (tags {:?}…)", first + i as u64, &tags[i.saturating_sub(3)..(i + 3).min(tags.len())]);
        }
        // The first held frame was captured before the kill (by camsim's own count).
        let captured_by = ms_since_epoch(playing_by) + first as i64 * 40;
        assert!(captured_by < ms_since_epoch(killed), "channel {ch}: first frame {first} captured by {captured_by} ms, killed at {} ms", ms_since_epoch(killed));
        // …and the recording's own start time says so too.
        let start_ms = recs[0]["start_90k"].as_i64().unwrap() / 90;
        assert!(start_ms < ms_since_epoch(killed) - 1000, "channel {ch} starts at {start_ms} ms: {}", recs[0]);
    }
    sigterm(&mut child);
    sim.shutdown().await;
}

/// Acceptance 2: 50 cameras with a budget for about 3 s each: the buffers are shortened, say
/// so, stay within the budget, and so does the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_shortens_buffers_and_bounds_rss() {
    const N: u32 = 50;
    let clips = vec![H264; N as usize];
    let sim = camsim(&clips).await;
    let main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let cams: Vec<_> = (1..=N).map(|i| (i, sim.url(i), None)).collect();
    // The clip is 530 kbit/s: 3 s ≈ 200 kB per camera.
    let budget: u64 = N as u64 * 3 * 530_000 / 8;
    let setup = Setup::new(N, &format!("prebuffer_memory = {budget}"), &main_toml("nvr-a", &main.addr().to_string(), "hot", &cams));
    let mut child = setup.spawn_run();
    let short = wait_until_async(Duration::from_secs(60), || {
        let st = status(&setup);
        (1..=N).all(|ch| standby(&st, ch)["prebuffer_short"] == true)
    })
    .await;
    assert!(short, "buffers not shown short: {}\n{}", status(&setup), setup.log());
    // Several budget rounds later, every buffer is within its share and the whole budget.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let st = status(&setup);
    let mut total = 0;
    for ch in 1..=N {
        let sb = standby(&st, ch);
        let (bytes, limit, secs) = (sb["prebuffer_bytes"].as_u64().unwrap(), sb["prebuffer_limit_bytes"].as_u64().unwrap(), sb["prebuffer_seconds"].as_f64().unwrap());
        assert!(bytes <= limit && secs < 5.0 && secs > 0.0, "channel {ch}: {sb}");
        assert_eq!(sb["prebuffer_short"], true, "{sb}");
        total += bytes;
    }
    assert!(total <= budget, "{total} bytes held, budget {budget}");
    let evs = events(&setup);
    let ev = evs.iter().find(|e| e["kind"] == "prebuffer_short").unwrap_or_else(|| panic!("no prebuffer_short event: {evs:?}"));
    assert_eq!(ev["detail"]["channels"].as_array().unwrap().len(), N as usize, "{ev}");
    // RSS: the budget plus the usual per-channel cost (README: under 2 MiB/channel + 64 MiB).
    let rss = rss_bytes(child.0.id());
    let bound = budget + N as u64 * 2 * 1024 * 1024 + 64 * 1024 * 1024;
    eprintln!("50 hot cameras: {} kB held of a {} kB budget, RSS {} MiB (bound {} MiB)", total / 1000, budget / 1000, rss >> 20, bound >> 20);
    assert!(rss < bound, "RSS {} MiB over {} MiB", rss >> 20, bound >> 20);
    let text = setup.api("GET", "/metrics").unwrap();
    let body = String::from_utf8_lossy(&text.body).to_string();
    assert!(body.contains("understudy_standby_prebuffer_bytes{channel=\"1\",main=\"nvr-a\"}"), "{body}");
    assert!(body.contains("understudy_standby_prebuffer_short{channel=\"50\",main=\"nvr-a\"} 1"), "{body}");
    sigterm(&mut child);
    sim.shutdown().await;
}

fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A loopback TCP forwarder whose open connections the test can cut (a camera's network blip).
struct Cutter {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
}

impl Cutter {
    async fn start(to: std::net::SocketAddr) -> Cutter {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let c = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                let token = c.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut b) = TcpStream::connect(to).await else { return };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                    }
                });
            }
        });
        Cutter { addr, cut }
    }

    /// Closes every connection made so far.
    fn cut(&self) {
        let mut t = self.cut.lock().unwrap();
        t.cancel();
        *t = CancellationToken::new();
    }
}

/// Acceptance 3: a standby session that breaks reconnects (counted, visible), and neither the
/// main's state nor the other cameras' sessions notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_standby_session_reconnects_alone() {
    let sim = camsim(&[H264, H264, H264]).await;
    let cutter = Cutter::start(sim.local_addr()).await;
    let main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut cams: Vec<_> = (1..=3).map(|i| (i, sim.url(i), None)).collect();
    // Camera 1's standby session goes through the cutter (its `standby_url`, as a substream would).
    cams[0].2 = Some(format!("rtsp://{}/cam/1", cutter.addr));
    let setup = Setup::new(3, "", &main_toml("nvr-a", &main.addr().to_string(), "hot", &cams));
    let mut child = setup.spawn_run();
    let hot = |st: &serde_json::Value| (1..=3).all(|ch| standby(st, ch)["state"] == "hot");
    assert!(wait_until_async(Duration::from_secs(60), || hot(&status(&setup))).await, "{}\n{}", status(&setup), setup.log());
    cutter.cut();
    let t0 = Instant::now();
    let mut left_hot = false;
    let mut back = false;
    while t0.elapsed() < Duration::from_secs(45) {
        let st = status(&setup);
        assert_eq!(main_state(&st), "ok", "the main's state moved: {st}");
        for ch in 2..=3 {
            let sb = standby(&st, ch);
            assert!(sb["state"] == "hot" && sb["reconnects"] == 0, "channel {ch} disturbed: {sb}");
        }
        assert!(st["channels"].as_array().unwrap().iter().all(|c| c["state"] == "idle"), "{st}");
        let sb = standby(&st, 1);
        left_hot |= sb["state"] != "hot";
        if sb["reconnects"].as_u64().unwrap_or(0) >= 1 && sb["state"] == "hot" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "camera 1's standby session did not come back: {}\n{}", status(&setup), setup.log());
    assert!(left_hot || standby(&status(&setup), 1)["reconnects"].as_u64() >= Some(1));
    let st = status(&setup);
    assert!(standby(&st, 1)["last_error"].is_string(), "the break is shown: {}", standby(&st, 1));
    // No event says anything happened to the main.
    let evs = events(&setup);
    assert!(!evs.iter().any(|e| ["probe_failed", "main_failed", "takeover_started"].contains(&e["kind"].as_str().unwrap())), "{evs:?}");
    sigterm(&mut child);
    drop(main);
    sim.shutdown().await;
}

/// `warm`: the session is set up but receives nothing while the main is healthy; at takeover it
/// PLAYs and records (with a gap: nothing was held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_standby_plays_only_at_takeover() {
    let sim = camsim(&[H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let setup = Setup::new(1, "", &main_toml("nvr-a", &main.addr().to_string(), "warm", &[(1, sim.url(1), None)]));
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || standby(&status(&setup), 1)["state"] == "warm").await, "{}\n{}", status(&setup), setup.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = status(&setup);
    assert_eq!(standby(&st, 1)["state"], "warm", "{st}");
    assert_eq!(standby(&st, 1)["prebuffer_bytes"], 0, "{st}");
    assert_eq!(sim.stats().total.frames_sent, 0, "a warm session received frames");
    assert_eq!(sim.stats().total.sessions, 0, "a warm session is playing");
    main.down();
    assert!(wait_until_async(Duration::from_secs(60), || events(&setup).iter().any(|e| e["kind"] == "first_fragment")).await, "{}", setup.log());
    let evs = events(&setup);
    let ff = evs.iter().find(|e| e["kind"] == "first_fragment").unwrap();
    assert!(ff["detail"]["footage_start_ms"].as_i64().unwrap() > 0, "{ff}");
    assert!(sim.stats().total.frames_sent > 0);
    // The takeover recorded the warm session itself: one PLAY at the camera.
    assert_eq!(sim.stats().total.sessions, 1, "{:?}", sim.stats().total.sessions);
    sigterm(&mut child);
    sim.shutdown().await;
}
