//! Another Understudy box as the main (`understudy://`), with two real `understudy run`
//! processes on loopback: box A lists its cameras (`GET /api/config/cameras`, never
//! passwords), box B imports them over HTTPS with A's certificate pinned or trusted, then
//! takes them over when A dies; and the same flow through B's `POST /api/mains/import`
//! (preview, confirm, refusals, audit).

mod cdp;
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const CAM_PW: &str = "cam-Secr3t-pw";

/// A's config: camsim camera 1 on channel 1 (named, with a password), camera 2 on channel 3.
fn box_a(sim_url: impl Fn(u32) -> String, cams: u32) -> Setup {
    let mut extra = format!("[[camera]]\nchannel = 1\nurl = \"{}\"\nname = \"lobby\"\nusername = \"admin\"\npassword = \"{CAM_PW}\"\n", sim_url(1));
    if cams > 1 {
        extra.push_str(&format!("\n[[camera]]\nchannel = 3\nurl = \"{}\"\n", sim_url(2)));
    }
    Setup::new(4, "", &extra)
}

fn start(setup: &Setup) -> RunGuard {
    let child = setup.spawn_run();
    assert!(wait_until(Duration::from_secs(60), || setup.api_get("/api/status").is_some()), "{}", setup.log());
    child
}

/// `understudy import --config B ARGS` with `env`; asserts none of `secrets` is in its output.
fn import(b: &Setup, args: &[&str], env: &[(&str, &str)], secrets: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_understudy"));
    cmd.arg("import").arg("--config").arg(&b.config).args(args).env("RUST_LOG", "debug").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let all = text(&out);
    for s in secrets {
        assert!(!all.contains(s), "a secret appears in the output:\n{all}");
    }
    out
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fingerprint(a: &Setup) -> String {
    a.cli(&["tls", "fingerprint"]).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn understudy_source_import_then_takeover() {
    let sim = camsim(&[H264, H265]).await;
    let a = box_a(|i| sim.url(i), 2);
    let mut a_run = start(&a);

    // A lists its cameras for a user with the config permission: URLs and users, no password.
    let listed = a.api("GET", "/api/config/cameras").unwrap();
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(!listed.text().contains(CAM_PW), "a camera password left the box: {}", listed.text());
    let cams = listed.json()["cameras"].as_array().cloned().unwrap();
    assert_eq!(cams.len(), 2, "{cams:?}");
    assert_eq!((cams[0]["channel"].as_u64(), cams[0]["name"].as_str(), cams[0]["username"].as_str()), (Some(1), Some("lobby"), Some("admin")));
    assert_eq!((cams[0]["owner"].as_str(), cams[0]["password_set"].as_bool()), (Some("local"), Some(true)));
    assert_eq!(cams[1]["url"].as_str(), Some(sim.url(2).as_str()));
    a.add_user("watcher", "viewer", "all", "watcher-password-1");
    let viewer = a.create_token(&["--user", "watcher"]);
    let refused = a.request("GET", "/api/config/cameras", &[format!("Authorization: Bearer {viewer}")], b"").unwrap();
    assert_eq!(refused.status, 403, "a viewer read camera URLs: {}", refused.text());

    let b = Setup::new(8, "", "# B's own comment\n");
    let from = format!("understudy://127.0.0.1:{}", a.api);
    let fp = fingerprint(&a);
    let secrets = [CAM_PW, a.token.as_str(), ADMIN_PASSWORD];
    let tok = [("A_TOKEN", a.token.as_str())];
    let before = std::fs::read_to_string(&b.config).unwrap();

    // A self-signed certificate is never accepted silently; a wrong pin or token is refused.
    let out = import(&b, &["--main", "box-a", "--from", &from, "--token-env", "A_TOKEN"], &tok, &secrets);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&from) && err.contains("not trusted") && err.contains("--fingerprint"), "{}", text(&out));
    let wrong_fp = format!("sha256:{}", ["00"; 32].join(":"));
    let out = import(&b, &["--main", "box-a", "--from", &from, "--token-env", "A_TOKEN", "--fingerprint", &wrong_fp], &tok, &secrets);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not the pinned one"), "{}", text(&out));
    let out = import(&b, &["--main", "box-a", "--from", &from, "--token-env", "A_TOKEN", "--fingerprint", &fp], &[("A_TOKEN", "nonsense")], &secrets);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not accepted"), "{}", text(&out));
    let out = import(&b, &["--main", "box-a", "--from", &from, "--user", "test", "--password-env", "APW", "--fingerprint", &fp], &[("APW", "wrong-password")], &secrets);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wrong user or password"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), before, "a failed import wrote the config");

    // Trusting A's certificate file with a token: a dry run lists both cameras.
    let ca = a.cert();
    let out = import(&b, &["--main", "box-a", "--from", &from, "--token-env", "A_TOKEN", "--ca", ca.to_str().unwrap(), "--dry-run"], &tok, &secrets);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("+ channel 1: {}", sim.url(1))) && stdout.contains(&format!("+ channel 3: {}", sim.url(2))), "{stdout}");
    assert!(stdout.contains("no password known"), "A gives no camera passwords, so they are flagged:\n{stdout}");
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), before, "--dry-run wrote");

    // A password set by hand in B's entry for A's camera 1 is tried first: that camera is not
    // flagged "no password known" (camera 2, without an entry, still is).
    let hand = format!(
        "{before}\n[[main]]\nname = \"box-a\"\nprobe = \"tcp://127.0.0.1:{}\"\n\n[[main.camera]]\nchannel = 1\nurl = \"{}\"\nusername = \"admin\"\npassword = \"{CAM_PW}\"\n",
        a.api,
        sim.url(1)
    );
    std::fs::write(&b.config, &hand).unwrap();
    let out = import(&b, &["--main", "box-a", "--from", &from, "--token-env", "A_TOKEN", "--ca", ca.to_str().unwrap(), "--dry-run"], &tok, &secrets);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("! channel 1:") && stdout.contains("! channel 3: no password known"), "the hand-set password was not used:\n{stdout}");
    std::fs::write(&b.config, &before).unwrap();

    // User and password login with the pinned fingerprint, camera password given, DESCRIBE checked.
    let env = [("APW", ADMIN_PASSWORD), ("CAM", CAM_PW)];
    let args = ["--main", "box-a", "--from", &from, "--user", "test", "--password-env", "APW", "--fingerprint", &fp, "--camera-password-env", "CAM", "--check"];
    let out = import(&b, &args, &env, &secrets);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[H264 640x360]") && stdout.contains("[H265 640x360]"), "{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
    let written = std::fs::read_to_string(&b.config).unwrap();
    assert!(written.contains("# B's own comment") && written.contains(&format!("probe = \"tcp://127.0.0.1:{}\"", a.api)), "{written}");
    assert_eq!(written.matches(&format!("password = \"{CAM_PW}\"")).count(), 2, "{written}");
    assert!(!written.contains(ADMIN_PASSWORD) && !written.contains(&a.token), "A's login was written:\n{written}");
    assert!(written.contains("name = \"lobby\""), "{written}");
    let out = import(&b, &args, &env, &secrets);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes"), "{}", text(&out));

    // B stands by; A dies; B records A's cameras on A's channels.
    std::fs::write(&b.config, written.replace("probe = ", "interval = \"200ms\"\nprobe = ")).unwrap();
    let mut b_run = start(&b);
    sigkill(&mut a_run);
    let recording = |s: &Setup| -> Vec<u64> {
        s.api_get("/api/status").map_or(vec![], |st| st["channels"].as_array().unwrap().iter().filter(|c| c["state"] == "recording").filter_map(|c| c["channel"].as_u64()).collect())
    };
    assert!(wait_until(Duration::from_secs(60), || recording(&b) == vec![1, 3]), "{:?}\n{}", b.api_get("/api/status"), b.log());
    assert!(wait_until(Duration::from_secs(30), || [1, 3].iter().all(|&ch| b.try_recordings(ch).is_some_and(|r| r.iter().any(|s| s["frames"].as_u64().unwrap_or(0) > 25)))), "{}", b.log());
    sigterm(&mut b_run);
    for (ch, cam) in [(1u32, 1u32), (3, 2)] {
        let files = b.segment_files(ch);
        assert!(!files.is_empty(), "channel {ch} recorded nothing");
        for f in files {
            assert_eq!(cameras_in(&f), [cam].into_iter().collect(), "channel {ch} holds another camera");
        }
    }
    assert!(!b.log().contains(CAM_PW) && !a.log().contains(CAM_PW), "password in a log");
    sim.shutdown().await;
}

fn post_import(b: &Setup, token: &str, body: &serde_json::Value) -> Answer {
    let headers = [format!("Authorization: Bearer {token}"), "Content-Type: application/json".to_owned()];
    b.request("POST", "/api/mains/import", &headers, body.to_string().as_bytes()).expect("B answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_import_preview_confirm_and_refusals() {
    let sim = camsim(&[H264]).await;
    let a = box_a(|i| sim.url(i), 1);
    let _a_run = start(&a);
    let b = Setup::new(8, "", "");
    let _b_run = start(&b);
    let from = format!("understudy://127.0.0.1:{}", a.api);
    let mut body = serde_json::json!({
        "main": "box-a", "source": from, "token": a.token, "fingerprint": fingerprint(&a),
        "camera_password": CAM_PW, "check": true,
    });
    let secrets = [CAM_PW, a.token.as_str()];
    let clean = |ans: &Answer| {
        for s in secrets {
            assert!(!ans.text().contains(s), "a secret was echoed back: {}", ans.text());
        }
    };
    let before = std::fs::read_to_string(&b.config).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode_before = std::fs::metadata(&b.config).unwrap().permissions().mode();

    // Preview: the cameras with their flags and the changes; nothing written.
    let ans = post_import(&b, &b.token, &body);
    clean(&ans);
    assert_eq!(ans.status, 200, "{}", ans.text());
    let v = ans.json();
    assert_eq!(v["written"], false);
    let changes: Vec<&str> = v["changes"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    assert!(changes.contains(&"+ new [[main]]") && changes.contains(&format!("+ channel 1: {}", sim.url(1)).as_str()), "{changes:?}");
    let cam = &v["cameras"][0];
    assert_eq!((cam["password_known"].as_bool(), cam["described"].as_str(), cam["name"].as_str()), (Some(true), Some("H264 640x360"), Some("lobby")), "{v}");
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), before, "a preview wrote the config");
    let digest = v["digest"].as_str().unwrap_or_default().to_owned();
    assert_eq!(digest.len(), 64, "the preview's digest: {v}");

    // Refusals: an operator, a bad source, a wrong token, unknown fields.
    b.add_user("op", "operator", "all", "operator-password-1");
    let op = b.create_token(&["--user", "op"]);
    let ans = post_import(&b, &op, &body);
    assert_eq!(ans.status, 403, "{}", ans.text());
    let mut bad = body.clone();
    bad["source"] = "ftp://10.0.0.1".into();
    let ans = post_import(&b, &b.token, &bad);
    assert!(ans.status == 400 && ans.text().contains("source") && ans.text().contains("ftp"), "{} {}", ans.status, ans.text());
    let mut bad = body.clone();
    bad["token"] = "not-a-token".into();
    let ans = post_import(&b, &b.token, &bad);
    assert!(ans.status == 502 && ans.text().contains(&from) && ans.text().contains("not accepted"), "{} {}", ans.status, ans.text());
    let mut bad = body.clone();
    bad["pasword"] = "x".into();
    let ans = post_import(&b, &b.token, &bad);
    assert!(ans.status >= 400 && ans.text().contains("pasword"), "{} {}", ans.status, ans.text());
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), before, "a refused import wrote the config");

    // Confirm needs the preview's digest, and writes only what that preview showed.
    body["confirm"] = true.into();
    let ans = post_import(&b, &b.token, &body);
    assert!(ans.status == 400 && ans.text().contains("digest"), "{} {}", ans.status, ans.text());
    body["digest"] = "00".repeat(32).into();
    let ans = post_import(&b, &b.token, &body);
    assert!(ans.status == 409 && ans.text().contains("differs from the preview"), "{} {}", ans.status, ans.text());
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), before, "a confirm of another plan wrote the config");
    // The config changed after the preview: what would be written now differs, nothing is.
    let edited = format!("{before}\n# edited after the preview\n");
    std::fs::write(&b.config, &edited).unwrap();
    body["digest"] = digest.clone().into();
    let ans = post_import(&b, &b.token, &body);
    clean(&ans);
    assert!(ans.status == 409 && ans.text().contains("preview again"), "{} {}", ans.status, ans.text());
    assert_eq!(std::fs::read_to_string(&b.config).unwrap(), edited, "a stale confirm wrote the config");
    std::fs::write(&b.config, &before).unwrap();

    // Confirm with the preview's digest: the config is written (owner and group kept, never
    // readable by others) and a restart is asked for; again: no changes.
    let ans = post_import(&b, &b.token, &body);
    clean(&ans);
    assert_eq!(ans.status, 200, "{}", ans.text());
    let v = ans.json();
    assert_eq!((v["written"].as_bool(), v["restart_needed"].as_bool()), (Some(true), Some(true)), "{v}");
    assert!(v["message"].as_str().unwrap().contains("restart"), "{v}");
    let written = std::fs::read_to_string(&b.config).unwrap();
    assert!(written.contains("name = \"box-a\"") && written.contains(&sim.url(1)) && written.contains(&format!("password = \"{CAM_PW}\"")), "{written}");
    assert_eq!(std::fs::metadata(&b.config).unwrap().permissions().mode() & 0o777, 0o600 | (mode_before & 0o040));
    understudy::config::Config::load(&b.config).unwrap();
    let ans = post_import(&b, &b.token, &body);
    assert!(ans.status == 200 && ans.json()["changes"].as_array().is_some_and(|c| c.is_empty()) && ans.json()["written"] == false, "{}", ans.text());

    // Every attempt is in the audit trail, without secrets.
    let import_entries = || -> Vec<serde_json::Value> {
        b.api_get("/api/audit").map_or(vec![], |a| a["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "main_import").cloned().collect())
    };
    // Preview, wrong token, confirm, confirm again (entries are written off the request path).
    assert!(wait_until(Duration::from_secs(10), || import_entries().len() >= 4), "{:?}", import_entries());
    let audit = b.api_get("/api/audit").unwrap();
    let imports = import_entries();
    assert!(imports.iter().any(|e| e["result"] == "ok" && e["detail"]["written"] == true), "{imports:?}");
    assert!(imports.iter().any(|e| e["result"] == "failed"), "{imports:?}");
    assert!(!audit.to_string().contains(CAM_PW) && !audit.to_string().contains(&a.token), "secret in the audit trail");
    sim.shutdown().await;
}

/// The operator page's "Add main" form in headless Chromium: shown to an administrator,
/// preview (nothing written), confirm (written); hidden from a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_main_form_in_chromium() {
    let sim = camsim(&[H264]).await;
    let a = box_a(|i| sim.url(i), 1);
    let _a_run = start(&a);
    let b = Setup::new(8, "", "");
    b.add_user("watcher", "viewer", "all", "watcher-password-1");
    let _b_run = start(&b);
    let before = std::fs::read_to_string(&b.config).unwrap();
    let (url, log) = (format!("https://127.0.0.1:{}/", b.api), b.dir.path().join("chromium.log"));
    let (source, token, fp, config) = (format!("understudy://127.0.0.1:{}", a.api), a.token.clone(), fingerprint(&a), b.config.clone());
    let sim_url = sim.url(1);
    let errors = tokio::task::spawn_blocking(move || {
        const LIMIT: Duration = Duration::from_secs(60);
        let mut br = cdp::Browser::open(&log);
        br.call("Page.navigate", serde_json::json!({ "url": url })).unwrap();
        let login = |br: &mut cdp::Browser, user: &str, pw: &str| {
            br.wait_for("the login screen", LIMIT, "document.getElementById('login').hidden ? null : true");
            br.eval(&format!("document.getElementById('login-user').value = {user:?}; document.getElementById('login-password').value = {pw:?}; true")).unwrap();
            br.click("#login-btn");
        };
        login(&mut br, "test", ADMIN_PASSWORD);
        br.wait_for("the Add main form for an admin", LIMIT, "document.getElementById('add-main').hidden ? null : true");
        let fill = format!(
            "(() => {{ const s = (id, v) => document.getElementById(id).value = v; s('am-main', 'box-a'); s('am-source', {source:?}); \
             s('am-token', {token:?}); s('am-fingerprint', {fp:?}); s('am-camera-password', {CAM_PW:?}); return true; }})()"
        );
        br.eval(&fill).unwrap();
        br.click("#am-preview");
        let changes = br.wait_for(
            "the preview's changes",
            LIMIT,
            "(() => { const t = document.getElementById('am-changes').textContent; return t.includes('+ channel 1') && !document.getElementById('am-confirm').disabled ? t : null; })()",
        );
        assert!(changes.as_str().unwrap().contains(&sim_url), "{changes}");
        let row = br.eval("document.getElementById('am-cameras').tBodies[0].rows[0].textContent").unwrap();
        assert!(row.as_str().unwrap().contains("H264 640x360") && row.as_str().unwrap().contains("known"), "{row}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), before, "a preview wrote the config");
        br.click("#am-confirm");
        let status = br.wait_for("the write", LIMIT, "(() => { const t = document.getElementById('am-status').textContent; return t.includes('written') ? t : null; })()");
        assert!(status.as_str().unwrap().contains("restart"), "{status}");
        let written = std::fs::read_to_string(&config).unwrap();
        assert!(written.contains("name = \"box-a\"") && written.contains(&sim_url), "{written}");
        let shown = br.eval("document.body.innerText").unwrap();
        assert!(!shown.as_str().unwrap().contains(CAM_PW), "the page shows a password");
        // A viewer never sees the form.
        br.click("#logout-btn");
        login(&mut br, "watcher", "watcher-password-1");
        br.wait_for("the page for the viewer", LIMIT, "document.getElementById('app').hidden ? null : true");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(br.eval("document.getElementById('add-main').hidden").unwrap(), serde_json::json!(true), "a viewer sees Add main");
        br.page_errors.clone()
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert!(errors.is_empty(), "script errors: {errors:#?}");
    sim.shutdown().await;
}
