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
    // READY came after the store was opened: the catalog and the volume marker exist. (Weak on
    // its own, since the store may have opened between READY and these checks; the run on a
    // store that cannot open, below, is what fails if READY is sent too early.)
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

    // A store that cannot open (its state_dir is under a regular file, so the catalog can't
    // be created; opening the store is the first thing `run` does after reading the config):
    // `run` fails, and never said READY=1 first.
    let blocker = setup.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let state = setup.dir.path().join("state").display().to_string();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    assert!(text.contains(&format!("{state:?}")), "{text}");
    let bad_config = setup.dir.path().join("bad.toml");
    std::fs::write(&bad_config, text.replace(&format!("{state:?}"), &format!("{:?}", blocker.join("state").display().to_string()))).unwrap();
    let bad_sock = setup.dir.path().join("notify-bad.sock");
    let bad_notes = Notes::listen(&bad_sock);
    let out = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "--config"])
        .arg(&bad_config)
        .env("NOTIFY_SOCKET", &bad_sock)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not-a-dir"), "{:?}\n{err}", out.status);
    // Datagrams sent before exit are already queued on the socket: give the reader a moment.
    assert!(!wait_until_async(Duration::from_secs(2), || bad_notes.count("READY=1") > 0).await, "READY=1 before the store opened: {:?}", bad_notes.lines());
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
            && std::fs::read_to_string(&json_log).is_ok_and(|t| t.contains("first_fragment"))
    }).await;
    let metrics = setup.api("GET", "/metrics").filter(|a| a.status == 200).map(|a| a.text()).unwrap_or_default();
    sigterm(&mut child);
    assert!(recorded, "takeover channel never recorded");
    let text = std::fs::read_to_string(&json_log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    // Every line with a `channel` field, whatever its target (recorder, pipeline, station,
    // storage's writer and syncer, failover events), also names its main and camera.
    let with_channel: Vec<_> = lines.iter().filter(|l| !l["channel"].is_null()).collect();
    for ch in [1, 2] {
        let ls: Vec<_> = with_channel.iter().filter(|l| l["channel"] == ch).collect();
        assert!(ls.len() >= 2, "few lines for channel {ch}:\n{text}");
        // Lines from the storage crate (writer, syncer) and the failover events are among them.
        for target in ["understudy_recorder", "understudy::pipeline", "understudy_storage::"] {
            assert!(ls.iter().any(|l| l["target"].as_str().is_some_and(|t| t.starts_with(target))), "no {target} line for channel {ch}:\n{text}");
        }
    }
    assert!(with_channel.iter().any(|l| l["message"] == "event" && l["event"] == "first_fragment"), "no first_fragment event line:\n{text}");
    for l in &with_channel {
        let expected = match l["channel"].as_u64() {
            Some(1) => ("local", "local/1"),
            Some(2) => ("nvr-a", "nvr-a/1"),
            _ => panic!("a line for an unknown channel: {l}"),
        };
        assert!(l["main"] == expected.0 && l["camera"] == expected.1, "a channel line lacks main/camera: {l}");
    }
    // No credential anywhere: logs (both formats), metrics.
    for secret in ["Pw-1n-url-77", "probe-Secret-55", "cam-Secret-99"] {
        assert!(!text.contains(secret) && !log.contains(secret) && !metrics.contains(secret), "{secret} leaked");
    }
    assert!(metrics.contains("understudy_channel_frames_total{channel=\"2\",owner=\"nvr-a\"}"), "{metrics}");

    // The config form, `[server] log_format = "json"`, without the flag; the flag wins over it.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let json_config = setup.dir.path().join("json.toml");
    std::fs::write(&json_config, text.replacen("[server]\n", "[server]\nlog_format = \"json\"\n", 1)).unwrap();
    for (flag, json) in [(None, true), (Some("text"), false)] {
        let out_log = setup.dir.path().join(format!("run-{flag:?}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_understudy"));
        cmd.arg("run");
        if let Some(f) = flag {
            cmd.args(["--log-format", f]);
        }
        let mut child = RunGuard(cmd.arg("--config").arg(&json_config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::from(std::fs::File::create(&out_log).unwrap()))
            .spawn()
            .unwrap());
        let read = || std::fs::read_to_string(&out_log).unwrap_or_default();
        let started = wait_until_async(Duration::from_secs(60), || read().contains("channel started")).await;
        sigterm(&mut child);
        let out = read();
        assert!(started && out.contains("stopped cleanly"), "{flag:?}:\n{out}");
        for l in out.lines() {
            let parsed = serde_json::from_str::<serde_json::Value>(l);
            assert_eq!(parsed.is_ok(), json, "{flag:?}: {l}");
            if let Ok(v) = parsed {
                assert!(v["message"].is_string() && v["level"].is_string(), "{l}");
            }
        }
    }
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
    // As typed by a user (the output may fit in the pipe before `head` exits).
    let out = Command::new("bash").args(["-c", &format!("{bin} recordings --config {cfg} --channel 1 | head -1; echo \"status=${{PIPESTATUS[0]}}\"")])
        .output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("start") && (so.contains("status=0") || so.contains("status=141")) && !se.contains("panicked"), "{so}\n{se}");
    // Certainly on a closed pipe: `head -1` has its line (and is gone, 2 s is ample) before
    // `recordings` starts writing. It dies of SIGPIPE like any Unix tool: 141, no message.
    let out = Command::new("bash")
        .args(["-c", &format!("{{ echo first; sleep 2; exec {bin} recordings --config {cfg} --channel 1; }} | head -1; echo \"status=${{PIPESTATUS[0]}}\"")])
        .output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("first") && so.contains("status=141") && se.is_empty(), "{so}\n{se}");

    // A command with sockets keeps SIGPIPE ignored (a peer closing a connection must not kill
    // it); its prints to a closed stdout are dropped and it ends normally: `demo` records,
    // exports and cleans up, then exits 0.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let stdout = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let demo_dir = setup.dir.path().join("demo");
    let out = Command::new(bin).args(["demo", "--cameras", "1", "--seconds", "2", "--dir"]).arg(&demo_dir)
        .stdout(stdout).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // (Its logs may mention broken pipes of RTSP connections; not a failed print.)
    assert!(out.status.success() && !err.contains("panicked") && !err.contains("failed printing"), "demo: {:?} {err}", out.status);
    assert!(demo_dir.join("takeover-ch1.mp4").exists(), "demo stopped early: {err}");
    sim.shutdown().await;
}

/// Every command and subcommand of clap's tree (so a new one without examples fails here)
/// shows examples of itself in `--help`.
#[test]
fn every_command_and_subcommand_shows_examples() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            path.push(sub.get_name().to_owned());
            out.push(path.clone());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut paths = Vec::new();
    walk(&understudy::cli::Cli::command(), &mut Vec::new(), &mut paths);
    let names: Vec<String> = paths.iter().map(|p| p.join(" ")).collect();
    // The tree is the real one: the commands the audit found without examples are in it.
    for known in ["run", "verify", "user add", "user passwd", "user del", "user list", "token create", "token list", "token revoke", "audit", "tls fingerprint", "import"] {
        assert!(names.iter().any(|n| n == known), "{known} not in {names:?}");
    }
    let bin = env!("CARGO_BIN_EXE_understudy");
    for (path, name) in paths.iter().zip(&names) {
        let out = Command::new(bin).args(path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help.split_once("Examples:").map(|(_, e)| e).unwrap_or("");
        assert!(out.status.success() && examples.contains(&format!("understudy {name}")), "{name} --help has no example of itself:\n{help}");
    }
}
