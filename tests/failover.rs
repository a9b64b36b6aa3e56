//! Failover acceptance: `understudy run` as a child process watching mains simulated by
//! loopback listeners this test controls, taking over camsim cameras.

mod common;

use std::time::{Duration, Instant};

use common::*;
use understudy::simmain::SimMain;

fn main_toml(name: &str, probe_addr: &str, start: u32, cams: &[(u32, String)], extra: &str) -> String {
    let mut s = format!(
        "[[main]]\nname = \"{name}\"\nprobe = \"tcp://{probe_addr}\"\ninterval = \"200ms\"\nfail_after = 3\nrecover_after = 3\nstart_channel = {start}\n{extra}\n"
    );
    for (ch, url) in cams {
        s.push_str(&format!("[[main.camera]]\nchannel = {ch}\nurl = \"{url}\"\n\n"));
    }
    s
}

fn main_state(setup: &Setup, name: &str) -> Option<String> {
    let st = setup.api_get("/api/status")?;
    st["mains"].as_array()?.iter().find(|m| m["name"] == name).and_then(|m| m["state"].as_str().map(str::to_owned))
}

fn recording_channels(setup: &Setup) -> Vec<u32> {
    let Some(st) = setup.api_get("/api/status") else { return vec![] };
    st["channels"].as_array().unwrap().iter().filter(|c| c["state"] == "recording").map(|c| c["channel"].as_u64().unwrap() as u32).collect()
}

fn events(setup: &Setup) -> Vec<serde_json::Value> {
    setup.api_get("/api/events?since=0").and_then(|v| v["events"].as_array().cloned()).unwrap_or_default()
}

/// Acceptance 1 (1:1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_takeover_and_return_to_standby() {
    let sim = camsim(&[H264, H265, H264, H265]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let cams: Vec<(u32, String)> = (1..=4).map(|i| (i, sim.url(i))).collect();
    let setup = Setup::new(4, "segment_duration = \"60s\"", &main_toml("nvr-a", &main.addr().to_string(), 1, &cams, ""));
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await, "{}", setup.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(recording_channels(&setup).is_empty(), "recording while the main is healthy");

    main.down();
    let t0 = Instant::now();
    let all = wait_until_async(Duration::from_secs(60), || recording_channels(&setup) == vec![1, 2, 3, 4]).await;
    let took = t0.elapsed();
    assert!(all, "not all channels recording: {:?}\n{}", setup.api_get("/api/status"), setup.log());
    assert_eq!(main_state(&setup, "nvr-a").as_deref(), Some("taken_over"));
    // fail_after × interval + 3 s, plus the probe timeout and this test's polling.
    assert!(took < Duration::from_millis(3 * 200 + 200 + 3000 + 1500), "takeover took {took:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;

    main.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await);
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup).is_empty()).await, "channels still recording after recovery");
    // The channels leave the status at once; takeover_ended follows once their segments are closed.
    assert!(wait_until_async(Duration::from_secs(30), || events(&setup).iter().any(|e| e["kind"] == "takeover_ended")).await, "no takeover_ended event");
    let evs = events(&setup);
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["main_failed", "takeover_started", "first_fragment", "main_recovered", "takeover_ended"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    let lat: Vec<f64> = evs.iter().filter(|e| e["kind"] == "first_fragment").map(|e| e["detail"]["latency_ms"].as_f64().unwrap()).collect();
    assert_eq!(lat.len(), 4, "one first_fragment per channel: {evs:?}");
    // A cold takeover's footage starts after the failure instant (the first failed probe),
    // and before its first fragment became durable.
    for e in evs.iter().filter(|e| e["kind"] == "first_fragment") {
        let d = &e["detail"];
        let start = d["footage_start_ms"].as_i64().unwrap_or_else(|| panic!("no footage_start_ms: {e}"));
        let latency = d["latency_ms"].as_f64().unwrap() as i64;
        // From the failure instant (the first failed probe) is longer than from its
        // declaration (the last of `fail_after` failed probes).
        let from_failure = d["latency_from_failure_ms"].as_f64().unwrap_or_else(|| panic!("no latency_from_failure_ms: {e}")) as i64;
        assert!(from_failure >= latency + 200, "latency from the failure {from_failure} ms vs from its declaration {latency} ms: {e}");
        assert!(start > 0 && start <= latency + 3 * 200 + 1000, "footage start {start} ms vs latency {latency} ms: {e}");
        assert_eq!(d["gap_ms"].as_i64(), Some(start), "{e}");
    }
    assert_takeover_totals_match_the_catalog(&setup, &evs);
    for ch in 1..=4u32 {
        let recs = setup.recordings(ch);
        assert!(!recs.is_empty(), "channel {ch} recorded nothing");
        assert!(recs.iter().all(|r| r["open"] == false), "channel {ch}: segment left open after standby");
        for f in setup.segment_files(ch) {
            ffprobe_clean(&f).unwrap();
            ffmpeg_decodes(&f).unwrap();
            assert_eq!(cameras_in(&f), [ch].into_iter().collect(), "failover channel {ch} holds another camera");
        }
    }
    sigterm(&mut child);
    sim.shutdown().await;
}

/// `takeover_ended` reports per channel exactly the frames and bytes the catalog holds (every
/// segment of these channels in this test is the takeover's), and totals that add up.
fn assert_takeover_totals_match_the_catalog(setup: &Setup, evs: &[serde_json::Value]) {
    let ended = &evs.iter().find(|e| e["kind"] == "takeover_ended").expect("takeover_ended")["detail"];
    let (mut frames, mut bytes, mut gap) = (0u64, 0u64, 0i64);
    let per_channel = ended["per_channel"].as_array().unwrap();
    assert_eq!(per_channel.len(), ended["channels"].as_array().unwrap().len(), "{ended}");
    for pc in per_channel {
        let ch = pc["channel"].as_u64().unwrap() as u32;
        let recs = setup.recordings(ch);
        let cat_frames: u64 = recs.iter().map(|r| r["frames"].as_u64().unwrap()).sum();
        let cat_bytes: u64 = recs.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
        assert!(cat_frames > 0, "channel {ch} recorded nothing");
        assert_eq!((pc["frames"].as_u64(), pc["bytes"].as_u64()), (Some(cat_frames), Some(cat_bytes)), "channel {ch}: takeover_ended {pc} vs catalog");
        frames += cat_frames;
        bytes += cat_bytes;
        gap = gap.max(pc["gap_ms"].as_i64().unwrap_or_else(|| panic!("channel {ch}: no gap_ms in {pc}")));
    }
    assert_eq!((ended["frames"].as_u64(), ended["bytes"].as_u64(), ended["gap_ms"].as_i64()), (Some(frames), Some(bytes), Some(gap)), "{ended}");
}

/// Acceptance 2 (N:1 shared): B waits while A holds the channels, then is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_channels_queue_the_second_failure() {
    let sim = camsim(&[H264, H264, H264, H264]).await;
    let mut a = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut b = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = main_toml("nvr-a", &a.addr().to_string(), 1, &[(1, sim.url(1)), (2, sim.url(2))], "")
        + &main_toml("nvr-b", &b.addr().to_string(), 1, &[(1, sim.url(3)), (2, sim.url(4))], "");
    let setup = Setup::new(2, "", &text);
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-b").as_deref() == Some("ok")).await, "{}", setup.log());

    a.down();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-a").as_deref() == Some("taken_over")).await);
    b.down();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-b").as_deref() == Some("waiting")).await, "{:?}", setup.api_get("/api/status"));
    assert!(events(&setup).iter().any(|e| e["kind"] == "waiting" && e["main"] == "nvr-b"), "no waiting event");
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![1, 2]).await);

    a.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-b").as_deref() == Some("taken_over")).await, "B was not taken over: {:?}", setup.api_get("/api/status"));
    assert_eq!(main_state(&setup, "nvr-a").as_deref(), Some("ok"));
    // Channel 1 now records B's camera 1 (camsim camera 3).
    let st = setup.api_get("/api/status").unwrap();
    let ch1 = st["channels"].as_array().unwrap().iter().find(|c| c["channel"] == 1).unwrap().clone();
    assert_eq!(ch1["owner"], "nvr-b", "{ch1}");
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![1, 2]).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sigterm(&mut child);
    let cams: std::collections::BTreeSet<u32> = setup.segment_files(1).iter().flat_map(|f| cameras_in(f)).collect();
    assert_eq!(cams, [1, 3].into_iter().collect(), "channel 1 should hold A's camera then B's");
    drop(b);
    sim.shutdown().await;
}

/// Acceptance 3 (N:1 high-channel): four 25-camera mains on 100 channels; two fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_channel_two_mains_fail_at_once() {
    let clips: Vec<&str> = vec![H264; 100];
    let sim = camsim(&clips).await;
    let mut mains = Vec::new();
    let mut text = String::new();
    for m in 0..4u32 {
        let sm = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cams: Vec<(u32, String)> = (1..=25).map(|c| (c, sim.url(25 * m + c))).collect();
        text += &main_toml(&format!("nvr-{m}"), &sm.addr().to_string(), 1 + 25 * m, &cams, "");
        mains.push(sm);
    }
    let setup = Setup::new(100, "", &text);
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-3").as_deref() == Some("ok")).await, "{}", setup.log());
    mains[1].down();
    mains[3].down();
    let want: Vec<u32> = (26..=50).chain(76..=100).collect();
    let ok = wait_until_async(Duration::from_secs(90), || recording_channels(&setup) == want).await;
    assert!(ok, "recording {:?}", recording_channels(&setup));
    tokio::time::sleep(Duration::from_secs(3)).await;
    sigterm(&mut child);
    for ch in [26, 37, 50, 76, 100] {
        let files = setup.segment_files(ch);
        assert!(!files.is_empty(), "channel {ch} has no footage");
        for f in files {
            assert_eq!(cameras_in(&f), [ch].into_iter().collect(), "channel {ch} holds the wrong camera");
        }
    }
    assert!(setup.segment_files(1).is_empty() && setup.segment_files(51).is_empty(), "healthy mains were taken over");
    sim.shutdown().await;
}

/// Acceptance 4: a main flapping faster than fail_after × interval never triggers a takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_main_causes_no_takeover() {
    let sim = camsim(&[H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // fail_after 5 at 200 ms = 1 s of failure needed; the main is down 400 ms at a time.
    let text = main_toml("nvr-a", &main.addr().to_string(), 1, &[(1, sim.url(1))], "").replace("fail_after = 3", "fail_after = 5");
    let setup = Setup::new(1, "", &text);
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await);
    for _ in 0..12 {
        main.down();
        tokio::time::sleep(Duration::from_millis(400)).await;
        main.up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let evs = events(&setup);
    sigterm(&mut child);
    assert!(evs.iter().any(|e| e["kind"] == "probe_failed"), "the flapping was never seen: {evs:?}");
    assert!(!evs.iter().any(|e| e["kind"] == "takeover_started" || e["kind"] == "main_failed"), "flapping caused a takeover: {evs:?}");
    assert!(setup.segment_files(1).is_empty());
    sim.shutdown().await;
}

/// Acceptance 5: SIGKILL during a takeover; the restarted box resumes recording at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_takeover_resumes_it() {
    let sim = camsim(&[H264, H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // A long fail_after makes "resumes without a full fail_after" observable.
    let text = main_toml("nvr-a", &main.addr().to_string(), 1, &[(1, sim.url(1)), (2, sim.url(2))], "")
        .replace("fail_after = 3", "fail_after = 25");
    let setup = Setup::new(2, "", &text);
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await);
    main.down();
    assert!(wait_until_async(Duration::from_secs(60), || recording_channels(&setup) == vec![1, 2]).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigkill(&mut child);

    let mut child = setup.spawn_run();
    let t0 = Instant::now();
    assert!(wait_until_async(Duration::from_secs(60), || recording_channels(&setup) == vec![1, 2]).await, "takeover not resumed: {}", setup.log());
    // 25 failures × 200 ms = 5 s would be a fresh detection; resuming takes one probe.
    assert!(t0.elapsed() < Duration::from_secs(5) + Duration::from_secs(10), "resume waited like a fresh failure");
    assert!(events(&setup).iter().any(|e| e["kind"] == "resume_pending"));
    sigterm(&mut child);
    for ch in 1..=2 {
        let files = setup.segment_files(ch);
        assert!(files.len() >= 2, "channel {ch}: footage from both runs expected: {files:?}");
        for f in files {
            ffmpeg_decodes(&f).unwrap();
        }
    }
    sim.shutdown().await;
}

/// Acceptance 6: `understudy check` rejects mistakes, naming the field.
#[test]
fn check_names_the_field_of_each_mistake() {
    let base = std::fs::read_to_string(fixture("configs/n-to-one.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("channels = 2\n", "channels = 2\nchanels = 4\n", "unknown field `chanels`"),
        ("start_channel", "start_channel", ""), // placeholder replaced below
        ("interval = \"1s\"\nfail_after = 5\npriority", "interval = \"1s\"\nfail_after = 0\npriority", "main[0].fail_after"),
        ("probe = \"http://10.0.0.5/health\"", "probe = \"gopher://10.0.0.5/\"", "main[0].probe"),
        ("name = \"nvr-b\"", "name = \"nvr-a\"", "main[1].name"),
        ("url = \"rtsp://10.0.1.12/stream1\"", "url = \"not a url\"", "main[0].camera[1].url"),
        ("[[main]]\nname = \"nvr-a\"", "[[main]]\nstart_channel = 2\nname = \"nvr-a\"", "beyond server.channels"),
        ("[[volume]]\npath = \"/mnt/disk1/understudy\"\n", "", "[[volume]]"),
        ("interval = \"1s\"\nfail_after = 5\npriority", "interval = \"1 fortnight\"\nfail_after = 5\npriority", "unknown unit"),
    ];
    let mut distinct = 0;
    for (i, (from, to, want)) in cases.iter().enumerate() {
        if want.is_empty() {
            continue;
        }
        assert!(base.contains(from), "case {i}: base config lacks {from:?}");
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, base.replacen(from, to, 1)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).args(["check", "--config"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} accepted");
        assert!(err.contains(*want), "case {i}: {err:?} should contain {want:?}");
        assert!(err.contains(&format!("bad{i}.toml:")), "case {i}: no file:line in {err:?}");
        distinct += 1;
    }
    assert!(distinct >= 6);
    // And the good one prints the channel map with the shared channels marked.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).args(["check", "--config"]).arg(fixture("configs/n-to-one.toml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("nvr-a, nvr-b") && text.contains("shared"), "{text}");
}

/// Probe kinds against real listeners: tcp and http (the simulated main), rtsp (camsim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_kinds_against_real_listeners() {
    use understudy::config::Probe;
    use understudy::failover::probe::{probe, ProbeAuth};
    let sim = camsim(&[H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let a = ProbeAuth::default();
    let t = Duration::from_secs(5);
    let tcp = Probe::Tcp { host: "127.0.0.1".into(), port: main.addr().port() };
    let http = Probe::Http { url: format!("http://{}/health", main.addr()).parse().unwrap() };
    let rtsp = Probe::Rtsp { url: sim.url(1).parse().unwrap() };
    probe(&tcp, &a, t).await.unwrap();
    probe(&http, &a, t).await.unwrap();
    probe(&rtsp, &a, t).await.unwrap();
    main.down();
    assert!(probe(&tcp, &a, t).await.unwrap_err().contains("connect"));
    assert!(probe(&http, &a, t).await.is_err());
    // An HTTP server answering 503 is not healthy.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 512];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        }
    });
    let e = probe(&Probe::Http { url: format!("http://{addr}/").parse().unwrap() }, &a, t).await.unwrap_err();
    assert!(e.contains("503"), "{e}");
    sim.shutdown().await;
    assert!(probe(&rtsp, &a, t).await.is_err(), "rtsp probe passed with camsim gone");
}

/// Freed channels go to the waiting main with the higher priority, then to the earlier failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_mains_are_served_by_priority() {
    let sim = camsim(&[H264, H264, H264]).await;
    let mut a = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut b = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut c = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = main_toml("nvr-a", &a.addr().to_string(), 1, &[(1, sim.url(1))], "")
        + &main_toml("nvr-b", &b.addr().to_string(), 1, &[(1, sim.url(2))], "priority = 0")
        + &main_toml("nvr-c", &c.addr().to_string(), 1, &[(1, sim.url(3))], "priority = 10");
    let setup = Setup::new(1, "", &text);
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-c").as_deref() == Some("ok")).await);
    a.down();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-a").as_deref() == Some("taken_over")).await);
    // B fails first, C later: C still goes first because of its priority.
    b.down();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-b").as_deref() == Some("waiting")).await);
    c.down();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-c").as_deref() == Some("waiting")).await);
    a.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-c").as_deref() == Some("taken_over")).await, "{:?}", setup.api_get("/api/status"));
    assert_eq!(main_state(&setup, "nvr-b").as_deref(), Some("waiting"));
    c.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(30), || main_state(&setup, "nvr-b").as_deref() == Some("taken_over")).await, "{:?}", setup.api_get("/api/status"));
    sigterm(&mut child);
    sim.shutdown().await;
}
