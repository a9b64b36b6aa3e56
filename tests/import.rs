//! `understudy import` against simulated devices on loopback: ONVIF cameras (the third-party
//! `onvif-server` crate), Hikvision and Dahua NVRs (tests/import_sims), all pointing at camsim;
//! then a takeover records every imported camera on its channel.

mod common;
mod import_sims;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use import_sims::{dahua, hikvision, onvif::OnvifCam, HttpDevice};
use understudy::camsim::{AuthConfig, AuthScheme, CamSim, CamSimConfig, CameraSpec, Pacing};
use understudy::simmain::SimMain;

const NVR_PW: &str = "nvr-Secr3t";
const CAM_PW: &str = "cam-Secr3t";

/// Runs `understudy import --config C ARGS` with `env`; asserts no password is in its output.
fn import(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    import_stdin(setup, args, env, "")
}

fn import_stdin(setup: &Setup, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_understudy"));
    cmd.arg("import").arg("--config").arg(&setup.config).args(args).env("RUST_LOG", "debug");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for pw in [NVR_PW, CAM_PW] {
        assert!(!all.contains(pw), "a password appears in the output:\n{all}");
    }
    out
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn recording_channels(setup: &Setup) -> Vec<u32> {
    let Some(st) = setup.api_get("/api/status") else { return vec![] };
    st["channels"].as_array().unwrap().iter().filter(|c| c["state"] == "recording").map(|c| c["channel"].as_u64().unwrap() as u32).collect()
}

/// Acceptance: ONVIF against an independent implementation, then a takeover records every
/// imported camera on the right channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onvif_import_then_takeover_records_each_camera_on_its_channel() {
    let sim = camsim(&[H264, H265, H264]).await;
    let mut cams = Vec::new();
    for i in 1..=3 {
        cams.push(OnvifCam::start("127.0.0.1", NVR_PW, sim.url(i)).await);
    }
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let setup = Setup::new(8, "", "# operator's comment stays\n");
    let mode_before = mode(&setup.config);
    // Cameras become channels 1, 2, 3 in --from order.
    let probe = format!("tcp://{}", main.addr());
    let mut args = vec!["--main", "lobby-nvr", "--user", "admin", "--password-env", "NVR_PW", "--probe", &probe, "--check"];
    let sources: Vec<String> = cams.iter().map(|c| c.source()).collect();
    for s in &sources {
        args.extend_from_slice(&["--from", s]);
    }
    let out = import(&setup, &args, &[("NVR_PW", NVR_PW)]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[H264 640x360]") && stdout.contains("[H265 640x360]"), "codec and resolution from DESCRIBE:\n{stdout}");
    for i in 1..=3 {
        assert!(stdout.contains(&format!("+ channel {i}: {}", sim.url(i))), "{stdout}");
    }
    // Owner read/write, group read kept if it was there, never others.
    assert_eq!(mode(&setup.config), 0o600 | (mode_before & 0o040));
    let written = std::fs::read_to_string(&setup.config).unwrap();
    assert!(written.contains("# operator's comment stays"), "{written}");
    assert!(!written.contains("problem"), "a usable camera was flagged:\n{written}");
    // The same import again changes nothing.
    let again = import(&setup, &args, &[("NVR_PW", NVR_PW)]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no changes"), "{}", text(&again));

    // Shorten the probe interval by hand (a hand edit the import must not undo), then fail the main.
    let edited = written.replace("probe = ", "interval = \"200ms\"\nprobe = ");
    std::fs::write(&setup.config, edited).unwrap();
    let mut child = setup.spawn_run();
    assert!(wait_until_async(Duration::from_secs(60), || setup.api_get("/api/status").is_some()).await, "{}", setup.log());
    main.down();
    assert!(wait_until_async(Duration::from_secs(60), || recording_channels(&setup) == vec![1, 2, 3]).await, "{:?}\n{}", setup.api_get("/api/status"), setup.log());
    assert!(wait_until_async(Duration::from_secs(30), || (1..=3).all(|ch| setup.try_recordings(ch).is_some_and(|r| r.iter().any(|s| s["frames"].as_u64().unwrap_or(0) > 25)))).await, "{}", setup.log());
    sigterm(&mut child);
    for ch in 1..=3u32 {
        let files = setup.segment_files(ch);
        assert!(!files.is_empty(), "channel {ch} recorded nothing");
        for f in files {
            assert_eq!(cameras_in(&f), [ch].into_iter().collect(), "channel {ch} holds another camera");
        }
    }
    assert!(!setup.log().contains(NVR_PW), "password in the run log");
    sim.shutdown().await;
}

/// The NVR's channels: the ONVIF cameras on 1, 2, …, and an unreachable Hikvision camera on 3.
fn hik_channels(onvif: &[OnvifCam]) -> Vec<String> {
    let mut chans: Vec<String> = onvif.iter().enumerate().map(|(i, c)| hikvision::channel(i as u32 + 1, &format!("Cam {}", i + 1), "ONVIF", "127.0.0.1", c.addr.port())).collect();
    // A Hikvision camera on the NVR's own PoE network: its address is not reachable from here.
    chans.push(hikvision::channel(3, "PoE cam", "HIKVISION", "192.0.2.33", 8000));
    chans
}

/// Acceptance: Hikvision import with Digest, merge after the main changed, wrong password and
/// malformed answers leave the config untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikvision_import_merge_and_bad_answers() {
    let sim = camsim(&[H264, H264, H264]).await;
    let onvif = [
        OnvifCam::start("127.0.0.1", NVR_PW, sim.url(1)).await,
        OnvifCam::start("127.0.0.1", NVR_PW, sim.url(2)).await,
        OnvifCam::start("127.0.0.1", NVR_PW, sim.url(3)).await,
    ];
    let chans = hik_channels(&onvif[..2]);
    let nvr = HttpDevice::start("127.0.0.2", hikvision::PATH, "application/xml", NVR_PW, hikvision::list(&chans)).await;
    let setup = Setup::new(16, "", "");
    let from = format!("hikvision://{}", nvr.addr);
    let env = [("NVR_PW", NVR_PW)];
    let base = ["--main", "hik", "--from", &from, "--user", "admin", "--password-env", "NVR_PW", "--timeout", "2s"];

    // Wrong password: a clear error naming the source; nothing written.
    let before = std::fs::read_to_string(&setup.config).unwrap();
    let out = import(&setup, &base, &[("NVR_PW", "wrong")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&from) && err.contains("wrong user or password"), "{err}");
    assert_eq!(std::fs::read_to_string(&setup.config).unwrap(), before);

    // The password from stdin this time.
    let stdin_args = ["--main", "hik", "--from", &from, "--user", "admin", "--password-stdin", "--timeout", "2s"];
    let out = import_stdin(&setup, &stdin_args, &[], &format!("{NVR_PW}\n"));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("+ channel 1: {}", sim.url(1))) && stdout.contains(&format!("+ channel 2: {}", sim.url(2))), "{stdout}");
    assert!(stdout.contains("! channel 3:") && stdout.contains("192.0.2.33:554 is not reachable"), "PoE camera not flagged:\n{stdout}");
    let written = std::fs::read_to_string(&setup.config).unwrap();
    assert!(written.contains(&format!("probe = \"tcp://{}\"", nvr.addr)), "{written}");
    assert!(written.contains("url = \"rtsp://192.0.2.33:554/Streaming/Channels/101\""), "{written}");
    assert!(!written.lines().any(|l| l.trim_start().starts_with('#') && l.contains(NVR_PW)), "password in a comment");
    let check = setup.cli(&["check"]);
    assert!(check.contains("warning: hik channel 3 (PoE cam): address 192.0.2.33:554 is not reachable"), "{check}");
    assert!(!check.contains("warning: hik channel 1"), "{check}");

    // Hand edits, then the NVR loses camera 1 and gains camera 3 (on channel 4).
    let edited = written.replacen(&format!("url = \"{}\"", sim.url(2)), &format!("# the loading dock\nurl = \"{}\"\ntransport = \"udp\"", sim.url(2)), 1);
    std::fs::write(&setup.config, &edited).unwrap();
    let mut chans2 = hik_channels(&onvif[..2]);
    chans2.remove(0);
    chans2.push(hikvision::channel(4, "Cam 3", "ONVIF", "127.0.0.1", onvif[2].addr.port()));
    nvr.set_body(hikvision::list(&chans2));
    let out = import(&setup, &base, &env);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("- channel 1: {}", sim.url(1))), "{stdout}");
    assert!(stdout.contains(&format!("+ channel 4: {}", sim.url(3))), "{stdout}");
    assert!(!stdout.contains("channel 2:"), "channel 2 did not change:\n{stdout}");
    let merged = std::fs::read_to_string(&setup.config).unwrap();
    assert!(merged.contains("# the loading dock") && merged.contains("transport = \"udp\""), "hand edits lost:\n{merged}");
    assert!(!merged.contains(&sim.url(1)), "{merged}");

    // Malformed answers: a clear error, nothing written.
    let good = merged.clone();
    let huge: Vec<String> = (1..=10_000).map(|i| hikvision::channel(i, "c", "ONVIF", "127.0.0.1", 80)).collect();
    let full = hikvision::list(&chans2);
    let missing = full.replacen("<ipAddress>127.0.0.1</ipAddress>", "", 1);
    for (what, body, expect) in [
        ("truncated", full[..full.len() / 2].to_owned(), "truncated XML"),
        ("missing ipAddress", missing, "missing <ipAddress>"),
        ("10,000 channels", hikvision::list(&huge), "beyond 4096"),
        ("not ISAPI", "<html>login</html>".to_owned(), "expected <InputProxyChannelList>"),
    ] {
        nvr.set_body(body);
        let out = import(&setup, &base, &env);
        assert!(!out.status.success(), "{what}: accepted\n{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&from) && err.contains(expect), "{what}: {err}");
        assert_eq!(std::fs::read_to_string(&setup.config).unwrap(), good, "{what}: config changed");
    }
    sim.shutdown().await;
}

/// Re-running a Hikvision import when one camera's stage B fails (its ONVIF service is gone):
/// the camera is still on the main, so its entry and hand edits stay and it is only flagged.
/// The rewritten file keeps its owner, group and group-read bit (a packaged config is
/// root:understudy 0640), and a config whose other main reads a health token from the
/// environment imports without that variable set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikvision_rerun_keeps_a_camera_whose_onvif_fails_and_the_files_owner() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let sim = camsim(&[H264, H264]).await;
    let onvif = [OnvifCam::start("127.0.0.1", NVR_PW, sim.url(1)).await, OnvifCam::start("127.0.0.1", NVR_PW, sim.url(2)).await];
    let chans = hik_channels(&onvif);
    let nvr = HttpDevice::start("127.0.0.2", hikvision::PATH, "application/xml", NVR_PW, hikvision::list(&chans)).await;
    let setup = Setup::new(16, "", "");
    let unset = "UNDERSTUDY_TEST_IMPORT_UNSET_HEALTH_TOKEN";
    assert!(std::env::var_os(unset).is_none());
    let other = format!("\n[[main]]\nname = \"other\"\nprobe = \"tcp://127.0.0.1:9\"\nhealth = \"understudy://127.0.0.1:9\"\nhealth_token_env = \"{unset}\"\nstart_channel = 16\n\n[[main.camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:9/1\"\n");
    let mut cfg = std::fs::read_to_string(&setup.config).unwrap();
    cfg.push_str(&other);
    std::fs::write(&setup.config, &cfg).unwrap();
    let from = format!("hikvision://{}", nvr.addr);
    let env = [("NVR_PW", NVR_PW)];
    let args = ["--main", "hik", "--from", &from, "--user", "admin", "--password-env", "NVR_PW", "--timeout", "2s"];

    let out = import(&setup, &args, &env);
    assert!(out.status.success(), "health_token_env without its variable stopped the import:\n{}", text(&out));
    let written = std::fs::read_to_string(&setup.config).unwrap();
    assert!(written.contains(&format!("url = \"{}\"", sim.url(2))) && written.contains(&format!("health_token_env = \"{unset}\"")), "{written}");

    // Hand edits on channel 2; the file as the Debian package keeps it: another owner, 0640.
    let edited = written.replacen(&format!("url = \"{}\"", sim.url(2)), &format!("# the loading dock\nurl = \"{}\"\ntransport = \"udp\"", sim.url(2)), 1);
    std::fs::write(&setup.config, &edited).unwrap();
    std::os::unix::fs::chown(&setup.config, Some(4243), Some(4242)).expect("tests run as root: chown");
    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o640)).unwrap();

    // Channel 2's ONVIF service stops answering (nothing listens at its port any more).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut gone = hik_channels(&onvif);
    gone[1] = hikvision::channel(2, "Cam 2", "ONVIF", "127.0.0.1", closed);
    nvr.set_body(hikvision::list(&gone));
    let out = import(&setup, &args, &env);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("- channel 2") && !stdout.contains("✗ channel 2"), "a camera still on the main was removed:\n{stdout}");
    assert!(stdout.contains("! channel 2: ONVIF at 127.0.0.1:") && stdout.contains("entry kept as it was"), "{stdout}");
    let merged = std::fs::read_to_string(&setup.config).unwrap();
    for keep in [format!("url = \"{}\"", sim.url(2)), "# the loading dock".to_owned(), "transport = \"udp\"".to_owned(), format!("problem = \"ONVIF at 127.0.0.1:{closed}")] {
        assert!(merged.contains(&keep), "{keep} lost:\n{merged}");
    }
    let m = std::fs::metadata(&setup.config).unwrap();
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o777), (4243, 4242, 0o640), "owner, group or mode changed");
    assert!(stdout.contains("mode 0640"), "{stdout}");

    // It answers again: the flag goes, the hand edits stay.
    nvr.set_body(hikvision::list(&chans));
    let out = import(&setup, &args, &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("✓ channel 2: problem resolved"), "{}", text(&out));
    let fixed = std::fs::read_to_string(&setup.config).unwrap();
    assert!(fixed.contains("# the loading dock") && fixed.contains("transport = \"udp\"") && !fixed.contains(&format!("127.0.0.1:{closed}")), "{fixed}");
    sim.shutdown().await;
}

/// Acceptance: Dahua with Digest; camera passwords from the source, else
/// --camera-password-env, checked by DESCRIBE against a camsim that demands them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dahua_import_passwords_checked_by_describe() {
    let sim = CamSim::start(CamSimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cameras: (1..=2).map(|id| CameraSpec::new(id, fixture(H264))).collect(),
        pacing: Pacing::Realtime,
        auth: Some(AuthConfig { username: "admin".into(), password: CAM_PW.into(), scheme: AuthScheme::Digest }),
        session_timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let body = format!("{}{}", dahua::device(0, "127.0.0.1", &sim.url(1), CAM_PW), dahua::device(1, "127.0.0.1", &sim.url(2), "******"));
    // A third device re-streamed by the NVR itself (127.0.0.2): flagged as useless once it fails.
    let nvr = HttpDevice::start("127.0.0.2", dahua::PATH, "text/plain", NVR_PW, String::new()).await;
    let own = format!("rtsp://127.0.0.2:{}/cam/realmonitor?channel=3", nvr.addr.port());
    nvr.set_body(format!("{body}{}", dahua::device(2, "127.0.0.1", &own, "******")));
    let setup = Setup::new(8, "", "");
    let from = format!("dahua://{}", nvr.addr);
    let base = ["--main", "dh", "--from", &from, "--user", "admin", "--password-env", "NVR_PW", "--check"];

    // Without a camera password, channel 2 (masked) falls back to the NVR's: DESCRIBE says no.
    let out = import(&setup, &[&base[..], &["--dry-run"]].concat(), &[("NVR_PW", NVR_PW)]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("! channel 2: DESCRIBE: no known password works (401)"), "{stdout}");
    assert!(stdout.contains("! channel 3: the URL is served by the main itself (127.0.0.2)"), "{stdout}");
    assert!(stdout.contains("not written"), "{stdout}");
    assert!(!std::fs::read_to_string(&setup.config).unwrap().contains("[[main"), "--dry-run wrote the config");
    nvr.set_body(body.clone());

    let out = import(&setup, &[&base[..], &["--camera-password-env", "CAM_PW"]].concat(), &[("NVR_PW", NVR_PW), ("CAM_PW", CAM_PW)]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("[H264 640x360]").count(), 2, "{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
    let written = std::fs::read_to_string(&setup.config).unwrap();
    assert_eq!(written.matches(&format!("password = \"{CAM_PW}\"")).count(), 2, "{written}");
    assert!(!written.contains(NVR_PW), "the NVR's password was written:\n{written}");
    understudy::config::Config::load(&setup.config).unwrap();
    // Again without --camera-password-env: the passwords now in the entries are tried first, so
    // channel 2 (masked by the NVR) still passes DESCRIBE instead of getting the NVR's and a 401.
    let out = import(&setup, &base, &[("NVR_PW", NVR_PW)]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("[H264 640x360]").count(), 2, "{stdout}");
    assert!(!stdout.contains("PROBLEM") && stdout.contains("no changes"), "the entry's password was not tried:\n{stdout}");
    assert_eq!(std::fs::read_to_string(&setup.config).unwrap(), written);

    // A wrong NVR password and a truncated answer are clear errors.
    let before = written;
    let out = import(&setup, &base, &[("NVR_PW", "wrong")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{from}: RemoteDevice: wrong user or password")), "{}", text(&out));
    // Truncated in the middle of the last line's key.
    let cut = body.rfind("Password=").unwrap() - 5;
    nvr.set_body(body[..cut].to_owned());
    let out = import(&setup, &base, &[("NVR_PW", NVR_PW)]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no `=` (truncated answer?)"), "{}", text(&out));
    nvr.set_body(body.replace("table.RemoteDevice.System_CONFIG_NETCAMERA_INFO_1.Address=127.0.0.1\r\n", ""));
    let out = import(&setup, &base, &[("NVR_PW", NVR_PW)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("System_CONFIG_NETCAMERA_INFO_1: missing Address"), "{}", text(&out));
    let huge: String = (0..10_000).map(|i| dahua::device(i, "127.0.0.1", &sim.url(1), "x")).collect();
    nvr.set_body(huge);
    let out = import(&setup, &base, &[("NVR_PW", NVR_PW)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 4096 devices"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&setup.config).unwrap(), before);
    sim.shutdown().await;
}
