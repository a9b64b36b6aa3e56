//! Acceptance 2: SIGKILL at random moments, ten times, restarting each time. Every file stays
//! clean, the catalog matches the files, and each kill loses at most `sync_interval` plus one
//! fragment of footage per channel.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::*;
use understudy::commands::time::now_90k;

const SYNC_S: f64 = 1.0;
const FRAGMENT_S: f64 = 1.0;
/// Scheduling slack on a loaded 2-core machine (frames reach the writer a little late).
const SLACK_S: f64 = 1.5;

fn durable_frames(setup: &Setup, ch: u32) -> u64 {
    setup
        .api_get("/api/status")
        .and_then(|s| s["channels"].as_array().and_then(|a| a.iter().find(|c| c["channel"] == ch).cloned()))
        .and_then(|c| c["durable_frames"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_at_most_sync_interval_plus_a_fragment() {
    let sim = camsim(&[H264, H265]).await;
    let cams: String = (1..=2).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect();
    let setup = Setup::new(2, "segment_duration = \"5s\"\nsync_interval = \"1s\"\nfragment_duration = \"1s\"", &cams);
    let mut seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = Vec::new();
    for round in 0..10 {
        let mut child = setup.spawn_run();
        let up = wait_until_async(Duration::from_secs(60), || (1..=2).all(|c| durable_frames(&setup, c) > 0)).await;
        assert!(up, "round {round}: channels never became durable: {}", setup.log());
        // Kill somewhere in the next 0.2–3.2 s: inside fragments, during syncs, during rotation.
        tokio::time::sleep(Duration::from_millis(200 + rand() % 3000)).await;
        let k = now_90k();
        sigkill(&mut child);
        kills.push(k);
    }
    // One last start repairs and indexes what the last kill left; then a clean stop.
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.api_get("/api/status").is_some()).await);
    sigterm(&mut child);

    for ch in 1..=2u32 {
        let files = setup.segment_files(ch);
        let recs = setup.recordings(ch);
        // The catalog matches the files, one for one, frame for frame.
        let cataloged: BTreeMap<String, u64> =
            recs.iter().map(|r| (r["path"].as_str().unwrap().to_owned(), r["frames"].as_u64().unwrap())).collect();
        let on_disk: BTreeMap<String, u64> = files.iter().map(|f| (f.display().to_string(), probe(f).0)).collect();
        assert_eq!(cataloged, on_disk, "channel {ch}: catalog and files differ");
        for f in &files {
            ffprobe_clean(f).unwrap();
            ffmpeg_decodes(f).unwrap();
        }
        // Footage lost per kill: the recording that reaches closest to the kill must reach
        // within sync_interval + one fragment of it.
        for (i, &k) in kills.iter().enumerate() {
            let reached = recs
                .iter()
                .filter(|r| r["start_90k"].as_i64().unwrap() < k)
                .map(|r| r["end_90k"].as_i64().unwrap())
                .max()
                .unwrap_or(0);
            let lost = (k - reached) as f64 / 90_000.0;
            assert!(lost <= SYNC_S + FRAGMENT_S + SLACK_S, "channel {ch} kill {i}: {lost:.2} s lost before the kill");
        }
    }
    sim.shutdown().await;
}
