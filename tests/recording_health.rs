//! Recording health of a main (issue 11, item 3): a main that answers its probe but does not
//! record some channels has exactly those channels taken over, and they return when it records
//! them again. Mains: `SimMain` answering Understudy's own `/api/status` format (src/api,
//! `status`), a Hikvision NVR simulator answering ISAPI `/ISAPI/ContentMgmt/Storage` (Hikvision
//! "ISAPI Core Protocol", `storage`/`hddList`/`hdd`/`status`) behind Digest, and a real
//! `understudy run` as the main over HTTPS with its certificate and a bearer token.

mod common;
mod import_sims;

use std::time::Duration;

use common::*;
use import_sims::HttpDevice;
use serde_json::Value;
use understudy::simmain::SimMain;

fn main_toml(name: &str, probe: &str, health: &str, cams: &[(u32, String)], extra: &str) -> String {
    let mut s = format!(
        "[[main]]\nname = \"{name}\"\nprobe = \"{probe}\"\nhealth = \"{health}\"\ninterval = \"200ms\"\nfail_after = 3\nrecover_after = 3\n{extra}\n"
    );
    for (ch, url) in cams {
        s.push_str(&format!("[[main.camera]]\nchannel = {ch}\nurl = \"{url}\"\n\n"));
    }
    s
}

fn main_status(setup: &Setup, name: &str) -> Option<Value> {
    let st = setup.api_get("/api/status")?;
    st["mains"].as_array()?.iter().find(|m| m["name"] == name).cloned()
}

fn main_state(setup: &Setup, name: &str) -> Option<String> {
    main_status(setup, name).and_then(|m| m["state"].as_str().map(str::to_owned))
}

fn recording_channels(setup: &Setup) -> Vec<u32> {
    let Some(st) = setup.api_get("/api/status") else { return vec![] };
    st["channels"].as_array().unwrap().iter().filter(|c| c["state"] == "recording").map(|c| c["channel"].as_u64().unwrap() as u32).collect()
}

fn channel(setup: &Setup, ch: u32) -> Value {
    let st = setup.api_get("/api/status").unwrap();
    st["channels"].as_array().unwrap().iter().find(|c| c["channel"] == ch).unwrap().clone()
}

fn events(setup: &Setup) -> Vec<Value> {
    setup.api_get("/api/events?since=0").and_then(|v| v["events"].as_array().cloned()).unwrap_or_default()
}

fn events_of(setup: &Setup, kind: &str) -> Vec<Value> {
    events(setup).into_iter().filter(|e| e["kind"] == kind).collect()
}

fn channels_of(e: &Value) -> Vec<u32> {
    e["detail"]["channels"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as u32).collect()
}

/// The acceptance line: two channels not recorded → exactly those two taken over, the rest
/// stay with the main; a blip moves nothing; they return when the main records them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_main_does_not_record_are_taken_over_and_returned() {
    let sim = camsim(&[H264, H265, H264, H265]).await;
    let main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    main.set_channels(4);
    let a = main.addr();
    let cams: Vec<(u32, String)> = (1..=4).map(|i| (i, sim.url(i))).collect();
    let setup = Setup::new(4, "segment_duration = \"60s\"", &main_toml("nvr-a", &format!("tcp://{a}"), &format!("understudy+http://{a}"), &cams, ""));
    let _child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await, "{}", setup.log());
    let m = main_status(&setup, "nvr-a").unwrap();
    assert_eq!(m["health"], format!("understudy+http://{a}"), "{m}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(recording_channels(&setup).is_empty(), "recording while the main records everything");

    // A blip: the main reports three channels not recorded for one check's worth of time.
    main.set_not_recording(&[1, 2, 3]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    main.set_not_recording(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(recording_channels(&setup).is_empty(), "a blip took channels over: {:?}", events(&setup));
    assert!(events_of(&setup, "partial_takeover").is_empty());

    main.set_not_recording(&[2, 3]);
    assert!(
        wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![2, 3]).await,
        "channels 2 and 3 not recording here: {:?}\n{}", setup.api_get("/api/status"), setup.log()
    );
    assert_eq!(main_state(&setup, "nvr-a").as_deref(), Some("ok"), "the main as a whole stays with its probe");
    let m = main_status(&setup, "nvr-a").unwrap();
    let nr: Vec<(u64, &str)> = m["not_recording"].as_array().unwrap().iter().map(|c| (c["channel"].as_u64().unwrap(), c["state"].as_str().unwrap())).collect();
    assert_eq!(nr, vec![(2, "taken_over"), (3, "taken_over")], "{m}");
    assert!(m["not_recording"][0]["reason"].as_str().unwrap().contains("backoff: camera unreachable"), "{m}");
    let ch2 = channel(&setup, 2);
    assert_eq!(ch2["owner"], "nvr-a", "{ch2}");
    assert!(ch2["owner_reason"].as_str().unwrap().starts_with("main not recording it"), "{ch2}");
    assert_eq!(channel(&setup, 1)["owner"], Value::Null);
    let partial = events_of(&setup, "partial_takeover");
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert_eq!(channels_of(&partial[0]), vec![2, 3]);
    assert_eq!(partial[0]["main"], "nvr-a");
    assert_eq!(channels_of(&events_of(&setup, "not_recording")[0]), vec![2, 3]);
    // Let a few fragments become durable.
    assert!(wait_until_async(Duration::from_secs(30), || [2, 3].iter().all(|&c| channel(&setup, c)["durable_frames"].as_u64().unwrap_or(0) > 50)).await);
    assert_eq!(recording_channels(&setup), vec![2, 3], "channels 1 and 4 must stay with the main");

    main.set_not_recording(&[]);
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup).is_empty()).await, "channels did not return: {:?}", setup.api_get("/api/status"));
    assert!(wait_until_async(Duration::from_secs(30), || !events_of(&setup, "channel_returned").is_empty()).await);
    let returned = events_of(&setup, "channel_returned");
    assert_eq!(channels_of(&returned[0]), vec![2, 3], "{returned:?}");
    assert!(main_status(&setup, "nvr-a").unwrap()["not_recording"].as_array().unwrap().is_empty());
    for ch in [1u32, 4] {
        assert!(setup.recordings(ch).is_empty(), "channel {ch} recorded although the main records it");
    }
    for ch in [2u32, 3] {
        let recs = setup.recordings(ch);
        assert!(!recs.is_empty() && recs.iter().all(|r| r["open"] == false), "channel {ch}: {recs:?}");
        for f in setup.segment_files(ch) {
            ffprobe_clean(&f).unwrap();
            assert_eq!(cameras_in(&f), [ch].into_iter().collect(), "channel {ch} holds another camera");
        }
    }
    sim.shutdown().await;
}

/// A main that dies while some of its channels are already recorded here: the whole takeover
/// adds the others without restarting those; when it comes back still not recording one of
/// them, that one stays here and the rest return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_failure_during_a_partial_takeover() {
    let sim = camsim(&[H264, H264, H264]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    main.set_channels(3);
    let a = main.addr();
    let cams: Vec<(u32, String)> = (1..=3).map(|i| (i, sim.url(i))).collect();
    let setup = Setup::new(3, "", &main_toml("nvr-a", &format!("tcp://{a}"), &format!("understudy+http://{a}"), &cams, ""));
    let _child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await, "{}", setup.log());

    main.set_not_recording(&[2]);
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![2]).await, "{:?}", setup.api_get("/api/status"));
    assert!(wait_until_async(Duration::from_secs(30), || channel(&setup, 2)["frames"].as_u64().unwrap_or(0) > 25).await);
    let frames = channel(&setup, 2)["frames"].as_u64().unwrap();
    main.down();
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![1, 2, 3]).await, "{:?}", setup.api_get("/api/status"));
    assert_eq!(main_state(&setup, "nvr-a").as_deref(), Some("taken_over"));
    assert_eq!(channel(&setup, 2)["owner_reason"], "main failed");
    assert!(events_of(&setup, "channel_error").is_empty(), "{:?}", events(&setup));
    // A restarted channel would count its frames from 0 again.
    assert!(channel(&setup, 2)["frames"].as_u64().unwrap() >= frames, "channel 2 was restarted");

    main.up().await.unwrap();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "nvr-a").as_deref() == Some("ok")).await);
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![2]).await, "{:?}", setup.api_get("/api/status"));
    assert!(wait_until_async(Duration::from_secs(30), || !events_of(&setup, "takeover_ended").is_empty()).await);
    let ended = events_of(&setup, "takeover_ended");
    assert_eq!(channels_of(&ended[0]), vec![1, 3], "{ended:?}");
    assert!(channel(&setup, 2)["owner_reason"].as_str().unwrap().starts_with("main not recording it"));

    main.set_not_recording(&[]);
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup).is_empty()).await);
    sim.shutdown().await;
}

const STORAGE: &str = "/ISAPI/ContentMgmt/Storage";
const NVR_PW: &str = "nvr-Secr3t";

/// ISAPI `storage` with one HDD in `status` (Hikvision ISAPI Core Protocol, Storage).
fn storage(status: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<storage version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<hddList size="1"><hdd><id>1</id><hddName>hdd1</hddName><hddPath></hddPath><hddType>SATA</hddType><status>{status}</status>
<capacity>1907729</capacity><freeSpace>0</freeSpace><property>RW</property></hdd></hddList>
<nasList size="0"></nasList></storage>"#
    )
}

/// A Hikvision NVR answering HDD error: every channel taken over; back when the disk is ok. A
/// second main with a wrong password gets no verdict: an error in its status, nothing taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikvision_hdd_error_takes_over_every_channel() {
    let sim = camsim(&[H264, H264, H264]).await;
    let nvr = HttpDevice::start("127.0.0.1", STORAGE, "application/xml", NVR_PW, storage("ok")).await;
    let a = nvr.addr;
    let creds = format!("username = \"admin\"\npassword = \"{NVR_PW}\"");
    let text = main_toml("hik", &format!("tcp://{a}"), &format!("hikvision://{a}"), &[(1, sim.url(1)), (2, sim.url(2))], &creds)
        + &main_toml("hik-wrong", &format!("tcp://{a}"), &format!("hikvision://{a}"), &[(1, sim.url(3))], "username = \"admin\"\npassword = \"nope\"\nstart_channel = 3");
    let setup = Setup::new(3, "", &text);
    let _child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main_state(&setup, "hik").as_deref() == Some("ok")).await, "{}", setup.log());
    assert!(
        wait_until_async(Duration::from_secs(30), || main_status(&setup, "hik-wrong").is_some_and(|m| m["health_error"].as_str().is_some_and(|e| e.contains("wrong user or password")))).await,
        "{:?}", main_status(&setup, "hik-wrong")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(recording_channels(&setup).is_empty());
    assert!(main_status(&setup, "hik").unwrap()["health_error"].is_null());

    *nvr.body.lock().unwrap() = storage("error");
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup) == vec![1, 2]).await, "{:?}\n{}", setup.api_get("/api/status"), setup.log());
    let m = main_status(&setup, "hik").unwrap();
    assert!(m["not_recording"][0]["reason"].as_str().unwrap().contains("hdd 1: error"), "{m}");
    assert_eq!(channels_of(&events_of(&setup, "partial_takeover")[0]), vec![1, 2]);
    let failed = events_of(&setup, "health_check_failed");
    assert!(failed.iter().any(|e| e["main"] == "hik-wrong") && !failed.iter().any(|e| e["main"] == "hik"), "{failed:?}");
    assert!(!serde_json::to_string(&events(&setup)).unwrap().contains(NVR_PW), "password in events");

    *nvr.body.lock().unwrap() = storage("ok");
    assert!(wait_until_async(Duration::from_secs(30), || recording_channels(&setup).is_empty()).await);
    // The channels leave the status at once; the event follows once their segments are closed.
    assert!(wait_until_async(Duration::from_secs(30), || !events_of(&setup, "channel_returned").is_empty()).await);
    assert_eq!(channels_of(&events_of(&setup, "channel_returned")[0]), vec![1, 2]);
    assert!(!setup.log().contains(NVR_PW), "password in the log");
    sim.shutdown().await;
}

/// A real Understudy box as the main, over HTTPS trusting its certificate, with a token from
/// the environment: its channel 2 cannot reach its camera, so only channel 2 is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn understudy_main_over_https_with_a_token() {
    let sim = camsim(&[H264, H264]).await;
    let dead = free_port();
    let main = Setup::new(2, "", &format!(
        "[[camera]]\nchannel = 1\nurl = \"{}\"\n\n[[camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:{dead}/gone\"\n", sim.url(1)
    ));
    let _main_child = main.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || main.api_get("/api/status").is_some()).await, "{}", main.log());
    // The token reaches `understudy run` only through its environment.
    std::env::set_var("RH_MAIN_TOKEN", &main.token);
    let text = main_toml(
        "box-a", &format!("tcp://127.0.0.1:{}", main.api), &format!("understudy://127.0.0.1:{}", main.api),
        &[(1, sim.url(1)), (2, sim.url(2))],
        &format!("health_token_env = \"RH_MAIN_TOKEN\"\nhealth_ca = {:?}", main.cert().display().to_string()),
    );
    let setup = Setup::new(2, "", &text);
    let _child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || recording_channels(&setup) == vec![2]).await, "{:?}\n{}", setup.api_get("/api/status"), setup.log());
    let m = main_status(&setup, "box-a").unwrap();
    assert_eq!(m["state"], "ok", "{m}");
    assert!(m["health_error"].is_null(), "{m}");
    assert_eq!(m["not_recording"].as_array().unwrap().len(), 1, "{m}");
    // Channel 1 stays with the main, which records it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recording_channels(&setup), vec![2]);
    assert_eq!(recording_channels(&main), vec![1]);
    assert!(!setup.log().contains(&main.token), "token in the log");
    sim.shutdown().await;
}
