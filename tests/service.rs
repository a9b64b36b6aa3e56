//! Running like a service: the sd_notify protocol as systemd would see it (READY, WATCHDOG,
//! STATUS, STOPPING, and no petting while a syncer hangs), log formats (no colour codes in a
//! file, JSON lines with channel/main/camera, no credentials), and the CLI on a closed pipe.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Every datagram `understudy run` sends to NOTIFY_SOCKET, with its arrival time.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notes {
    fn listen(path: &std::path::Path) -> Notes {
        let sock = UnixDatagram::bind(path).unwrap();
        let notes = Notes::default();
        let n = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(len) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                n.0.lock().unwrap().push((Instant::now(), text));
            }
        });
        notes
    }
    /// (time, line) of every `KEY=…` line received.
    fn lines(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().iter().flat_map(|(t, m)| m.lines().map(|l| (*t, l.to_owned())).collect::<Vec<_>>()).collect()
    }
    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|(_, l)| l == line).count()
    }
    fn last(&self, line: &str) -> Option<Instant> {
        self.lines().iter().filter(|(_, l)| l == line).map(|(t, _)| *t).next_back()
    }
    fn statuses(&self) -> Vec<String> {
        self.lines().into_iter().filter_map(|(_, l)| l.strip_prefix("STATUS=").map(str::to_owned)).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_stopping_and_no_petting_while_a_syncer_hangs() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let sock = setup.dir.path().join("notify.sock");
    let hang = setup.dir.path().join("hang-syncer");
    let notes = Notes::listen(&sock);
    let mut child = RunGuard(Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "--config"])
        .arg(&setup.config)
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "2000000")
        .env("UNDERSTUDY_TEST_HANG_SYNCER", &hang)
        .stderr(Stdio::from(std::fs::File::create(setup.dir.path().join("run.log")).unwrap()))
        .spawn()
        .unwrap());

    assert!(wait_until_async(Duration::from_secs(60), || notes.count("READY=1") == 1).await, "no READY=1\n{}", setup.log());
    // READY came after the store was opened: the catalog and the volume marker exist.
    assert!(setup.dir.path().join("state/catalog.db").exists());
    assert!(setup.volume().join(understudy_storage::VOLUME_MARKER).exists());
    // Regular petting (every ~1 s for WATCHDOG_USEC = 2 s) and a summary line.
    assert!(wait_until_async(Duration::from_secs(30), || notes.count("WATCHDOG=1") >= 5).await, "{:?}", notes.lines());
    assert!(wait_until_async(Duration::from_secs(30), || notes.statuses().iter().any(|s| s.starts_with("1/1 channels recording"))).await,
        "{:?}", notes.statuses());

    // A syncer that stops making progress stops the petting (systemd would restart us).
    std::fs::write(&hang, b"").unwrap();
    let hung_at = Instant::now();
    let stopped = wait_until_async(Duration::from_secs(60), || {
        notes.last("WATCHDOG=1").is_some_and(|t| t.elapsed() > Duration::from_secs(5))
    }).await;
    assert!(stopped, "still petting {:?} after the syncer hung", hung_at.elapsed());
    assert!(notes.statuses().iter().any(|s| s.starts_with("stalled:") && s.contains("syncer")), "{:?}", notes.statuses());
    assert!(setup.log().contains("no longer petting"), "{}", setup.log());

    // Once it goes round again, petting resumes.
    std::fs::remove_file(&hang).unwrap();
    let before = notes.count("WATCHDOG=1");
    assert!(wait_until_async(Duration::from_secs(30), || notes.count("WATCHDOG=1") > before + 1).await, "petting did not resume");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_until_async(Duration::from_secs(30), || notes.count("STOPPING=1") == 1).await, "no STOPPING=1 on SIGTERM");
    let st = wait_exit(&mut child, Duration::from_secs(60));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", setup.log());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_in_files_json_lines_carry_channel_main_camera_and_no_credentials() {
    let sim = camsim(&[H264, H264]).await;
    let mut main = understudy::simmain::SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Credentials in the URL (camsim has no auth and ignores them): they must never be logged.
    let url = |i: u32| sim.url(i).replace("rtsp://", "rtsp://admin:Pw-1n-url-77@");
    let text = format!(
        "[[camera]]\nchannel = 1\nurl = \"{}\"\n\n[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://{}\"\ninterval = \"200ms\"\nstart_channel = 2\npassword = \"probe-Secret-55\"\nusername = \"u\"\n[[main.camera]]\nchannel = 1\nurl = \"{}\"\npassword = \"cam-Secret-99\"\nusername = \"admin\"\n",
        url(1), main.addr(), sim.url(2)
    );
    let setup = Setup::new(2, "", &text);

    // Text format to a file: no escape characters.
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| !r.is_empty())).await, "{}", setup.log());
    sigterm(&mut child);
    let log = setup.log();
    assert!(log.contains("channel started") && !log.contains('\x1b'), "escape codes in a log file:\n{log}");

    // JSON: every line parses; the channel's lines carry channel, main, camera.
    let json_log = setup.dir.path().join("run.json");
    let mut child = RunGuard(Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&setup.config)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::from(std::fs::File::create(&json_log).unwrap()))
        .spawn()
        .unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    main.down();
    let recorded = wait_until_async(Duration::from_secs(60), || {
        setup.api_get("/api/status").is_some_and(|s| s["channels"].as_array().is_some_and(|c| c.iter().all(|c| c["state"] == "recording")))
    }).await;
    let metrics = setup.api("GET", "/metrics").filter(|a| a.status == 200).map(|a| a.text()).unwrap_or_default();
    sigterm(&mut child);
    assert!(recorded, "takeover channel never recorded");
    let text = std::fs::read_to_string(&json_log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let of_channel = |ch: u64| lines.iter().filter(move |l| l["channel"] == ch && l["target"].as_str().is_some_and(|t| t.starts_with("understudy_recorder") || t == "understudy::pipeline")).collect::<Vec<_>>();
    for (ch, main_name, camera) in [(1, "local", "local/1"), (2, "nvr-a", "nvr-a/1")] {
        let ls = of_channel(ch);
        assert!(ls.len() >= 2, "few lines for channel {ch}:\n{text}");
        for l in ls {
            assert!(l["main"] == main_name && l["camera"] == camera, "channel {ch} line lacks main/camera: {l}");
        }
    }
    // No credential anywhere: logs (both formats), metrics.
    for secret in ["Pw-1n-url-77", "probe-Secret-55", "cam-Secret-99"] {
        assert!(!text.contains(secret) && !log.contains(secret) && !metrics.contains(secret), "{secret} leaked");
    }
    assert!(metrics.contains("understudy_channel_frames_total{channel=\"2\",owner=\"nvr-a\"}"), "{metrics}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_commands_end_quietly_on_a_closed_pipe_and_show_examples() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "segment_duration = \"2s\"", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| r.len() >= 2)).await, "{}", setup.log());
    sigterm(&mut child);
    let cfg = setup.config.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_understudy");

    // The reader is gone before the first write: a certain EPIPE.
    for args in [vec!["recordings", "--config", cfg, "--channel", "1"], vec!["recordings", "--config", cfg, "--channel", "1", "--json"], vec!["check", "--config", cfg]] {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        unsafe { libc::close(fds[0]) };
        let stdout = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let out = Command::new(bin).args(&args).stdout(stdout).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert!(out.status.success() || out.status.signal() == Some(libc::SIGPIPE), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
    // As typed by a user.
    let out = Command::new("bash").args(["-c", &format!("{bin} recordings --config {cfg} --channel 1 | head -1; echo \"status=${{PIPESTATUS[0]}}\"")])
        .output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("start") && (so.contains("status=0") || so.contains("status=141")) && !se.contains("panicked"), "{so}\n{se}");

    for cmd in ["run", "check", "recordings", "export", "reindex", "drill", "camsim", "demo", "import"] {
        let out = Command::new(bin).args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Examples:") && help.contains(&format!("understudy {cmd}")), "{cmd} --help:\n{help}");
    }
    sim.shutdown().await;
}
