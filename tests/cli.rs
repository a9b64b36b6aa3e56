//! The commands an installer types: `demo` (the README's first command), `drill`, `reindex`,
//! and webhooks receiving events.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn understudy(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_understudy")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

#[test]
fn demo_shows_takeover_and_leaves_playable_footage() {
    let dir = tempfile::tempdir().unwrap();
    let out = understudy(&["demo", "--cameras", "2", "--seconds", "4", "--dir", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in ["loses power", "takeover declared", "returned to standby", "first_fragment", "understudy export --config", "log in as \"demo\" with password", "https://127.0.0.1:"] {
        assert!(text.contains(want), "demo output lacks {want:?}:\n{text}");
    }
    // The takeover's totals are what its own footage listing shows (it once reported the
    // frames durable before the last segment was closed: 150 against 188).
    let ended = text.lines().find(|l| l.contains("takeover_ended") && !l.contains(" INFO ")).unwrap_or_else(|| panic!("no takeover_ended:\n{text}"));
    let ended: serde_json::Value = serde_json::from_str(&ended[ended.find('{').unwrap()..]).unwrap();
    for ch in 1..=2u64 {
        let listed: u64 = text
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("ch{ch} ")) && l.contains(" frames "))
            .map(|l| l.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap())
            .sum();
        let reported = ended["per_channel"].as_array().unwrap().iter().find(|c| c["channel"] == ch).unwrap()["frames"].as_u64();
        assert!(listed > 0, "channel {ch}: no footage listed:\n{text}");
        assert_eq!(reported, Some(listed), "channel {ch}: takeover_ended vs the footage listing:\n{text}");
    }
    let export = dir.path().join("takeover-ch1.mp4");
    ffprobe_clean(&export).unwrap();
    ffmpeg_decodes(&export).unwrap();
    assert!(probe(&export).0 >= 50, "demo export is too short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_reports_latency_per_channel() {
    let sim = camsim(&[H264, H265]).await;
    let text = format!(
        "[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://127.0.0.1:9\"\n[[main.camera]]\nchannel = 1\nurl = \"{}\"\n[[main.camera]]\nchannel = 2\nurl = \"{}\"\n",
        sim.url(1), sim.url(2)
    );
    let setup = Setup::new(2, "", &text);
    let cfg = setup.config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || understudy(&["drill", "--config", &cfg, "--main", "nvr-a", "--for", "5s"])).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drill failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2 of 2 channels recorded"), "{text}");
    for ch in 1..=2 {
        assert!(!setup.segment_files(ch).is_empty(), "drill left no footage on channel {ch}");
    }
    let bad = understudy(&["drill", "--config", setup.config.to_str().unwrap(), "--main", "nvr-z", "--for", "1s"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("nvr-a"), "unknown main should list the real ones");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_a_lost_catalog_from_the_files() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "segment_duration = \"3s\"", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| r.len() >= 3)).await);
    sigterm(&mut child);
    let before = setup.recordings(1);
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(setup.dir.path().join("state").join(f));
    }
    setup.cli(&["reindex"]);
    let after = setup.recordings(1);
    let key = |v: &Vec<serde_json::Value>| v.iter().map(|r| (r["path"].clone(), r["frames"].clone(), r["start_90k"].clone(), r["bytes"].clone())).collect::<Vec<_>>();
    assert_eq!(key(&before), key(&after), "reindexed catalog differs");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_events_as_json_with_retries() {
    // A receiver that fails the first request (to exercise the retry) and records the rest.
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let g = got.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read head + body (Content-Length).
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
                    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    if buf.len() >= h + 4 + len {
                        if first {
                            first = false;
                            let _ = s.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
                        } else {
                            if let Ok(v) = serde_json::from_slice(&buf[h + 4..h + 4 + len]) {
                                g.lock().unwrap().push(v);
                            }
                            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                        }
                        break;
                    }
                }
            }
        }
    });
    let sim = camsim(&[H264]).await;
    let mut main = understudy::simmain::SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = format!(
        "[[webhook]]\nurl = \"http://127.0.0.1:{hook_port}/events\"\ntoken = \"tok-secret\"\n\n[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://{}\"\ninterval = \"200ms\"\n[[main.camera]]\nchannel = 1\nurl = \"{}\"\n",
        main.addr(), sim.url(1)
    );
    let setup = Setup::new(1, "", &text);
    let mut child = setup.spawn_run();
    tokio::time::sleep(Duration::from_secs(2)).await;
    main.down();
    let ok = wait_until_async(Duration::from_secs(60), || got.lock().unwrap().iter().any(|e| e["kind"] == "first_fragment")).await;
    sigterm(&mut child);
    let evs = got.lock().unwrap().clone();
    assert!(ok, "webhook did not get the takeover events: {evs:?}");
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["kind"].as_str()).collect();
    // The first POST (the "started" event) was refused once and retried.
    assert!(kinds.contains(&"started") && kinds.contains(&"main_failed") && kinds.contains(&"takeover_started"), "{kinds:?}");
    assert!(evs.iter().all(|e| e["server"] == "test" && e["id"].is_i64()), "{evs:?}");
    assert!(!setup.log().contains("tok-secret"), "webhook token in the log");
    sim.shutdown().await;
}
