//! Access control of the HTTP API, against `understudy run` on loopback: every route refuses
//! anonymous requests, channel sets filter answers, sessions, CSRF, tokens, login back-off,
//! TLS, the audit trail's hash chain, and no secret in any log line or answer.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;

/// Starts `run` and waits until the API answers the admin.
fn start(setup: &Setup) -> RunGuard {
    let child = setup.spawn_run();
    let up = wait_until(Duration::from_secs(60), || setup.api("GET", "/api/status").is_some_and(|a| a.status == 200));
    assert!(up, "the API never answered\n{}", setup.log());
    child
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

fn login(setup: &Setup, from: Option<IpAddr>, user: &str, pw: &str) -> Answer {
    let body = serde_json::json!({ "username": user, "password": pw }).to_string();
    let tls = api::tls_client(&setup.cert());
    api::request_from(from, setup.api, tls, "POST", "/api/login", &["Content-Type: application/json".into()], body.as_bytes()).expect("login answers")
}

/// Acceptance: every route of the router (the list it is built from, so a route added later is
/// walked too), with every method, answers 401 without credentials, except the login and the
/// static page. With no user at all, the API says how to add one.
#[test]
fn every_route_refuses_anonymous_requests() {
    let setup = Setup::new(4, "", "");
    let mut child = start(&setup);
    let paths = understudy::api::route_paths();
    assert!(paths.len() >= 8 && paths.contains(&"/api/channels/{n}/play.mp4"), "{paths:?}");
    // The exemptions, spelled out: exempting another route must change this test too.
    assert_eq!(understudy::api::auth::PUBLIC, &[("GET", "/"), ("HEAD", "/"), ("POST", "/api/login")], "the routes answering without credentials changed");
    let mut walked = 0;
    for path in paths.iter().chain(&["/api/no-such-endpoint", "/metrics"]) {
        let concrete: String = path.split('/').map(|seg| if seg.starts_with('{') { "1" } else { seg }).collect::<Vec<_>>().join("/");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if understudy::api::auth::PUBLIC.contains(&(method, *path)) {
                continue;
            }
            for creds in [vec![], vec!["Authorization: Bearer us_not-a-token".to_owned()], vec!["Authorization: Basic dGVzdDp4".to_owned()], vec!["Cookie: __Host-understudy=forged".to_owned()]] {
                let a = setup.request(method, &concrete, &creds, b"").unwrap_or_else(|| panic!("{method} {concrete}: no answer"));
                assert_eq!(a.status, 401, "{method} {concrete} with {creds:?} answered {}: {}", a.status, a.text());
                assert!(a.header("www-authenticate").is_some(), "{method} {concrete}: {}", a.head);
                walked += 1;
            }
        }
    }
    eprintln!("{walked} anonymous requests refused with 401");
    // The public page holds no data; the login without a body is refused.
    let page = setup.request("GET", "/", &[], b"").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), include_str!("../src/api/ui/index.html"), "the page is static: it embeds no data");
    let empty = setup.request("POST", "/api/login", &["Content-Type: application/json".into()], b"{}").unwrap();
    assert!(empty.status == 422 || empty.status == 400, "{empty:?}");

    // No user left: 503 with the sentence saying how to add the first one.
    setup.cli(&["user", "del", "test"]);
    let a = setup.request("GET", "/api/status", &[bearer(&setup.token)], b"").unwrap();
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.text().contains("understudy user add --config") && a.text().contains("--role admin"), "{}", a.text());
    sigterm(&mut child);
}

/// Acceptance: a viewer of channels 1-2 plays channel 1, is refused channel 3, and channel 3
/// is absent from status and events; a token narrower than its user narrows further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sees_only_their_channels() {
    let sim = camsim(&[H264, H264]).await;
    // Mains whose probes fail, so each has a probe URL and a last error to hide: nvr-a on
    // channels 2 (vera's) and 4 (not hers), nvr-b on channel 5 only. Their cameras refuse.
    let dead = free_port();
    let mains = format!(
        "[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://127.0.0.1:{dead}\"\ninterval = \"200ms\"\nfail_after = 3\n\
         [[main.camera]]\nchannel = 2\nurl = \"rtsp://127.0.0.1:{dead}/cam-a2\"\n[[main.camera]]\nchannel = 4\nurl = \"rtsp://127.0.0.1:{dead}/cam-a4\"\n\n\
         [[main]]\nname = \"nvr-b\"\nprobe = \"tcp://127.0.0.1:{dead}\"\ninterval = \"200ms\"\nfail_after = 3\n\n\
         [[main.camera]]\nchannel = 5\nurl = \"rtsp://127.0.0.1:{dead}/cam-b5\"\n"
    );
    let setup = Setup::new(5, "segment_duration = \"2s\"", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n\n[[camera]]\nchannel = 3\nurl = \"{}\"\n\n{mains}", sim.url(1), sim.url(2)));
    let mut child = start(&setup);
    setup.add_user("vera", "viewer", "1-2", "vera-password");
    let vera = setup.create_token(&["--user", "vera"]);
    let narrow = setup.create_token(&["--user", "vera", "--channels", "2"]);
    setup.add_user("otto", "operator", "1-2", "otto-password");
    let otto = setup.create_token(&["--user", "otto"]);
    let otto_metrics = setup.create_token(&["--user", "otto", "--scope", "metrics"]);
    let ok = wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| r.len() >= 2) && setup.try_recordings(3).is_some_and(|r| !r.is_empty())).await;
    assert!(ok, "no footage\n{}", setup.log());
    let catalog = setup.dir.path().join("state").join("catalog.db");
    let db = rusqlite::Connection::open(&catalog).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    for ch in [1, 3] {
        db.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (0, 'test_event', NULL, ?1, '{}')", [ch]).unwrap();
    }

    let get = |token: &str, path: &str| setup.request("GET", path, &[bearer(token)], b"").unwrap();
    let play = |ch: u32| format!("/api/channels/{ch}/play.mp4?from=now-10m");
    let a = get(&vera, &play(1));
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body.len() > 10_000);
    for path in [play(3), "/api/channels/3/recordings".into(), "/api/audit".into()] {
        let a = get(&vera, &path);
        assert_eq!(a.status, 403, "{path}: {}", a.text());
    }
    // A percent-encoded channel number (decoded by the router, not by the guard) is refused
    // on every channel route, as are other non-decimal spellings.
    for tail in ["play.mp4?from=now-10m", "recordings", "vod.m3u8?from=now-10m", "timeline", "live.m3u8", "live"] {
        for n in ["%33", "%33%33", "+3", "03%00"] {
            let path = format!("/api/channels/{n}/{tail}");
            let a = get(&vera, &path);
            assert!(a.status == 400 || a.status == 403, "{path} answered {}: {}", a.status, a.text());
        }
        let a = get(&vera, &format!("/api/channels/3/{tail}"));
        assert_eq!(a.status, 403, "channel 3 {tail}: {}", a.text());
    }
    let status = get(&vera, "/api/status").json();
    let chans: Vec<u64> = status["channels"].as_array().unwrap().iter().map(|c| c["channel"].as_u64().unwrap()).collect();
    assert_eq!(chans, [1, 2], "{status}");
    // The admin sees both mains with their probes and errors (once the probes failed).
    let mut admin = serde_json::Value::Null;
    let failed = wait_until_async(Duration::from_secs(60), || {
        admin = setup.api_get("/api/status").unwrap_or_default();
        admin["mains"].as_array().is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["last_error"].is_string() && m["probe"].is_string()))
    })
    .await;
    assert!(failed, "the mains' probes never failed: {admin}");
    assert_eq!(admin["channels"].as_array().unwrap().len(), 5);
    let nvr_a = admin["mains"].as_array().unwrap().iter().find(|m| m["name"] == "nvr-a").cloned().unwrap_or_default();
    assert_eq!(nvr_a["channels"], serde_json::json!([2, 4]), "{admin}");
    // Vera sees nvr-a (channel 2) but only her channel of it, and none of its configuration.
    let status = get(&vera, "/api/status").json();
    let mains = status["mains"].as_array().unwrap();
    assert_eq!(mains.len(), 1, "nvr-b records only channel 5: {status}");
    assert_eq!((mains[0]["name"].as_str(), &mains[0]["channels"]), (Some("nvr-a"), &serde_json::json!([2])), "{status}");
    for field in ["probe", "last_error", "health", "health_error"] {
        assert!(mains[0][field].is_null(), "{field} shown to a viewer: {status}");
    }
    assert!(mains[0]["not_recording"].as_array().is_none_or(|l| l.iter().all(|c| c["channel"] == 2)), "{status}");
    assert!(!status.to_string().contains(&format!("127.0.0.1:{dead}")), "the probe or camera address reached a viewer: {status}");
    let ch2 = status["channels"].as_array().unwrap().iter().find(|c| c["channel"] == 2).cloned().unwrap_or_default();
    assert!(ch2["last_error"].as_str().is_none_or(|e| e.contains("<url hidden>")), "{ch2}");
    // An operator (read-config right) of channels 1-2 sees the probe, still not channel 4.
    let ostatus = get(&otto, "/api/status").json();
    assert!(ostatus["mains"][0]["probe"].is_string(), "{ostatus}");
    assert_eq!(ostatus["mains"][0]["channels"], serde_json::json!([2]), "{ostatus}");

    // /metrics: only the series of the channels and mains the caller sees.
    assert_eq!(get(&vera, "/metrics").status, 403, "a viewer lacks the metrics permission");
    let all = setup.api("GET", "/metrics").unwrap().text();
    for want in ["channel=\"3\"", "channel=\"4\"", "channel=\"5\"", "main=\"nvr-b\""] {
        assert!(all.contains(want), "the admin's metrics lack {want}");
    }
    for token in [&otto, &otto_metrics] {
        let m = get(token, "/metrics");
        assert_eq!(m.status, 200, "{}", m.text());
        let text = m.text();
        assert!(text.contains("understudy_channel_frames_total{channel=\"1\"") && text.contains("main=\"nvr-a\""), "{text}");
        for absent in ["channel=\"3\"", "channel=\"4\"", "channel=\"5\"", "main=\"nvr-b\""] {
            assert!(!text.contains(absent), "{absent} exported to a user of channels 1-2:\n{text}");
        }
    }
    // The metrics-scoped token has nothing else.
    let play1 = play(1);
    for path in ["/api/status", "/api/events", "/api/session", "/api/config/cameras", "/api/channels/1/recordings", play1.as_str(), "/api/audit"] {
        let a = get(&otto_metrics, path);
        assert_eq!(a.status, 403, "{path} with a metrics token: {}", a.text());
    }
    assert_eq!(get(&otto, "/api/config/cameras").status, 200, "the same user's full token reads the config");
    let events = get(&vera, "/api/events?since=0").json();
    let evs = events["events"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["kind"] == "test_event" && e["channel"] == 1), "{events}");
    assert!(!evs.iter().any(|e| e["channel"] == 3), "{events}");
    // The narrowed token sees channel 2 only: not even channel 1.
    assert_eq!(get(&narrow, &play(1)).status, 403);
    // Demoting is immediate: delete the user and her tokens stop working.
    setup.cli(&["user", "del", "vera"]);
    assert_eq!(get(&vera, "/api/status").status, 401);
    sigterm(&mut child);
    sim.shutdown().await;
}

/// Acceptance: cookie flags, CSRF refusal, logout revokes, password change revokes sessions,
/// expired and revoked tokens refused, cross-origin WebSocket upgrades refused; and no
/// password, token or session id in any log line or answer.
#[test]
fn sessions_tokens_and_csrf() {
    let setup = Setup::new(2, "", "");
    let mut child = start(&setup);
    let mut secrets = vec![ADMIN_PASSWORD.to_owned(), setup.token.clone()];
    let mut answers = Vec::new();

    let a = login(&setup, None, "test", ADMIN_PASSWORD);
    assert_eq!(a.status, 200, "{}", a.text());
    let set = a.header("set-cookie").unwrap();
    for flag in ["__Host-understudy=", "Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let cookie = a.cookie();
    secrets.push(cookie.split_once('=').unwrap().1.to_owned());
    let csrf = a.json()["csrf"].as_str().unwrap().to_owned();
    let with_cookie = |path: &str, method: &str, extra: &[String]| {
        let mut h = vec![format!("Cookie: {cookie}")];
        h.extend_from_slice(extra);
        setup.request(method, path, &h, b"").unwrap()
    };
    let s = with_cookie("/api/session", "GET", &[]);
    assert_eq!((s.status, s.json()["user"].as_str()), (200, Some("test")), "{}", s.text());
    answers.push(s.text());
    for h in [vec![], vec!["X-CSRF-Token: wrong".to_owned()]] {
        let r = with_cookie("/api/logout", "POST", &h);
        assert_eq!(r.status, 403, "logout without the right CSRF token: {}", r.text());
    }
    // A WebSocket upgrade from another origin is refused, from our own it is not.
    let ws = |origin: &str| with_cookie("/api/status", "GET", &["Upgrade: websocket".into(), "Connection: Upgrade".into(), format!("Origin: {origin}")]);
    assert_eq!(ws("https://evil.example").status, 403);
    assert_ne!(ws(&format!("https://127.0.0.1:{}", setup.api)).status, 403);
    let r = with_cookie("/api/logout", "POST", &[format!("X-CSRF-Token: {csrf}")]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(with_cookie("/api/session", "GET", &[]).status, 401, "logout revokes the session");

    // A password change ends the sessions of the user.
    let a = login(&setup, None, "test", ADMIN_PASSWORD);
    let cookie2 = a.cookie();
    secrets.push(cookie2.split_once('=').unwrap().1.to_owned());
    answers.push(a.text());
    assert_eq!(setup.request("GET", "/api/session", &[format!("Cookie: {cookie2}")], b"").unwrap().status, 200);
    setup.cli_stdin(&["user", "passwd", "test", "--password-stdin"], "another-password\n");
    secrets.push("another-password".into());
    assert_eq!(setup.request("GET", "/api/session", &[format!("Cookie: {cookie2}")], b"").unwrap().status, 401);
    assert_eq!(login(&setup, None, "test", ADMIN_PASSWORD).status, 401, "the old password no longer works");

    // Tokens: expired and revoked ones are refused, saying why.
    let short = setup.create_token(&["--user", "test", "--expires", "1s"]);
    let revoked = setup.create_token(&["--user", "test"]);
    secrets.extend([short.clone(), revoked.clone()]);
    let list = setup.cli(&["token", "list"]);
    for t in [&short, &revoked, &setup.token] {
        assert!(!list.contains(t.as_str()), "token list shows a token: {list}");
    }
    let id = list.lines().last().unwrap().split_whitespace().next().unwrap().to_owned();
    setup.cli(&["token", "revoke", &id]);
    std::thread::sleep(Duration::from_millis(2100));
    for (t, why) in [(&short, "expired"), (&revoked, "revoked")] {
        let a = setup.request("GET", "/api/status", &[bearer(t)], b"").unwrap();
        assert_eq!(a.status, 401, "{why}: {}", a.text());
        assert!(a.text().contains(why), "{}", a.text());
    }
    let audit = setup.api_get("/api/audit").unwrap();
    answers.push(audit.to_string());
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["user_add", "token_create", "login", "logout", "user_passwd", "token_revoke"] {
        assert!(actions.contains(&a), "no {a} in the audit trail: {actions:?}");
    }
    sigterm(&mut child);

    let log = setup.log();
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret is in the log");
        for a in &answers {
            assert!(!a.contains(s.as_str()), "a secret is in an API answer: {a}");
        }
    }
}

/// Acceptance: wrong passwords in a row answer 429 with Retry-After; the right password from
/// another address still works; a forged X-Forwarded-For from an untrusted peer changes
/// nothing; unknown users cost as much time as wrong passwords.
#[test]
fn login_abuse_backs_off_per_address_and_user() {
    let setup = Setup::new(2, "", "");
    let mut child = start(&setup);
    let mut limited = None;
    for i in 0..20 {
        let a = login(&setup, None, "test", "wrong-password");
        if a.status == 429 {
            limited = Some((i, a));
            break;
        }
        assert_eq!(a.status, 401, "{}", a.text());
    }
    let (n, a) = limited.expect("20 wrong passwords never answered 429");
    let retry: u64 = a.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{a:?}");
    eprintln!("429 after {n} failures, Retry-After {retry}");
    // Even the right password waits from this address; a forged X-Forwarded-For is ignored.
    assert_eq!(login(&setup, None, "test", ADMIN_PASSWORD).status, 429);
    let forged = api::request(setup.api, api::tls_client(&setup.cert()), "POST", "/api/login", &["Content-Type: application/json".into(), "X-Forwarded-For: 10.9.9.9".into()], format!("{{\"username\":\"test\",\"password\":\"{ADMIN_PASSWORD}\"}}").as_bytes()).unwrap();
    assert_eq!(forged.status, 429);
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let a = login(&setup, Some(other), "test", ADMIN_PASSWORD);
    assert_eq!(a.status, 200, "from another address: {}", a.text());

    // Unknown users: as slow as a wrong password (Argon2 runs either way).
    let time = |user: &str| {
        let t0 = Instant::now();
        let a = login(&setup, Some("127.0.0.3".parse().unwrap()), user, "wrong-password");
        assert_eq!(a.status, 401);
        t0.elapsed()
    };
    let mut wrong: Vec<Duration> = (0..3).map(|_| time("test")).collect();
    let mut unknown: Vec<Duration> = (0..3).map(|i| time(&format!("nobody{i}"))).collect();
    wrong.sort();
    unknown.sort();
    eprintln!("login with a wrong password {wrong:?}, with an unknown user {unknown:?}");
    assert!(unknown[1] * 3 > wrong[1], "an unknown user answers much faster: {unknown:?} vs {wrong:?}");
    sigterm(&mut child);
    assert!(setup.log().contains("429") || setup.cli(&["audit"]).contains("backoff"));
}

/// Parallel wrong passwords are counted before they are checked: 40 requests that arrive
/// together (each held back by its last byte, then released at once) cannot all be checked
/// before the first failure is counted; most are answered 429 without a password check.
#[test]
fn parallel_wrong_passwords_are_bounded() {
    use std::io::{Read, Write};
    let setup = Setup::new(2, "tls = false", "");
    let mut child = start(&setup);
    let body = serde_json::json!({ "username": "test", "password": "wrong-password" }).to_string();
    let head = format!("POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", setup.api, body.len());
    let (most, last) = body.as_bytes().split_at(body.len() - 1);
    let mut conns: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", setup.api)).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(most).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut conns {
        s.write_all(last).unwrap();
    }
    let answers: Vec<String> = conns
        .into_iter()
        .map(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)).collect();
    let checked = statuses.iter().filter(|c| **c == 401).count();
    let refused = statuses.iter().filter(|c| **c == 429).count();
    eprintln!("40 parallel wrong passwords: {checked} checked (401), {refused} refused (429)");
    assert_eq!(checked + refused, 40, "{statuses:?}");
    assert!(checked <= 7, "{checked} of 40 parallel attempts had their password checked (5 free failures): {statuses:?}");
    let limited = answers.iter().find(|a| a.starts_with("HTTP/1.1 429")).map(|a| a.to_ascii_lowercase()).unwrap_or_default();
    assert!(limited.contains("\r\nretry-after: "), "a 429 without Retry-After: {limited}");
    sigterm(&mut child);
}

/// Acceptance: curl trusts the generated certificate; plain HTTP to the TLS port fails; the
/// key is 0600 and `tls fingerprint` prints what `run` logged; `tls = false` off loopback is
/// a config error naming the field.
#[test]
fn tls_by_default_with_a_generated_certificate() {
    let setup = Setup::new(2, "", "");
    let mut child = start(&setup);
    let cert = setup.cert();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&cert)
        .args(["-H", &bearer(&setup.token), &format!("https://127.0.0.1:{}/api/status", setup.api)])
        .output()
        .expect("curl (apt-get install curl)");
    assert!(out.status.success(), "curl --cacert: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"server\""));
    let insecure = std::process::Command::new("curl").args(["-sS", "--fail", &format!("https://127.0.0.1:{}/", setup.api)]).output().unwrap();
    assert!(!insecure.status.success(), "curl without the certificate must refuse it");
    let plain = api::request(setup.api, None, "GET", "/api/status", &[bearer(&setup.token)], b"");
    assert!(plain.as_ref().is_none_or(|a| a.status != 200), "plain HTTP answered: {plain:?}");
    let headers = setup.api("GET", "/api/status").unwrap();
    let hsts = headers.header("strict-transport-security").unwrap_or_default();
    let max_age: u64 = hsts.split(';').find_map(|d| d.trim().strip_prefix("max-age=")).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(max_age >= 180 * 24 * 3600, "HSTS without a max-age of at least 180 days: {hsts:?}");
    assert_eq!(headers.header("x-content-type-options").as_deref(), Some("nosniff"), "{}", headers.head);
    let csp = headers.header("content-security-policy").unwrap_or_default();
    assert!(csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'"), "CSP without frame-ancestors 'none': {csp:?}");
    use std::os::unix::fs::PermissionsExt;
    let key = cert.with_file_name("key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let fp = setup.cli(&["tls", "fingerprint"]);
    assert!(fp.starts_with("sha256:") && setup.log().contains(fp.trim()), "{fp} not in the log");
    sigterm(&mut child);

    let bad = Setup::new(2, "tls = false", "");
    let text = std::fs::read_to_string(&bad.config).unwrap().replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(&bad.config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).args(["check", "--config"]).arg(&bad.config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("server.tls") && err.contains("loopback"), "{err}");
}

/// Acceptance: the audit trail is a hash chain; editing a row makes `audit --verify` fail and
/// name the entry.
#[test]
fn audit_verify_names_an_altered_entry() {
    let setup = Setup::new(2, "", "");
    setup.add_user("carl", "operator", "1", "carl-password");
    setup.create_token(&["--user", "carl"]);
    let verify = || std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).args(["audit", "--verify", "--config"]).arg(&setup.config).output().unwrap();
    let ok = verify();
    let said = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success() && said.contains("audit trail intact"), "an untouched trail must verify: {said}");
    let entries: u64 = said.split("intact: ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(entries >= 4, "verified {entries} entries: {said}");
    let listing = setup.cli(&["audit"]);
    assert!(listing.contains("user_add") && listing.contains("token_create"), "{listing}");
    let db = rusqlite::Connection::open(setup.dir.path().join("state").join("catalog.db")).unwrap();
    db.execute("UPDATE auth_audit SET detail = replace(detail, 'carl', 'mallory') WHERE id = 3", []).unwrap();
    let out = verify();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("entry 3"), "{err}");
}

/// The newest entries are anchored outside the database (`state_dir/audit.head`): deleting the
/// newest row makes `audit --verify` fail and say how many are gone, and appending on does not
/// hide it. Reading the trail with the CLI is itself an entry, as `GET /api/audit` is.
#[test]
fn audit_anchor_names_removed_newest_entries_and_cli_reads_are_recorded() {
    let setup = Setup::new(2, "", "");
    setup.add_user("dora", "viewer", "1", "dora-password");
    setup.cli(&["audit"]);
    let entries = |setup: &Setup| -> Vec<serde_json::Value> { setup.cli(&["audit", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let audit = entries(&setup);
    let read = audit.iter().find(|e| e["action"] == "audit_read").unwrap_or_else(|| panic!("the CLI's read is not in the trail: {audit:#?}"));
    assert!(read["user"].as_str().is_some_and(|u| u.starts_with("cli:") && u.len() > 4) && read["detail"]["source"] == "cli" && read["ip"] == "local", "{read}");
    let ok = setup.cli_stdin(&["audit", "--verify"], "");
    assert!(ok.is_empty());

    let db = rusqlite::Connection::open(setup.dir.path().join("state").join("catalog.db")).unwrap();
    let rows: i64 = db.query_row("SELECT count(*) FROM auth_audit", [], |r| r.get(0)).unwrap();
    db.execute("DELETE FROM auth_audit WHERE id = (SELECT max(id) FROM auth_audit)", []).unwrap();
    let verify = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy")).args(["audit", "--verify", "--config"]).arg(&setup.config).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = verify();
    let said = format!("the newest 1 entries were removed: the anchor says {rows} entries, the table has {}", rows - 1);
    assert!(!ok && err.contains(&said), "{err}");
    // That verify appended its own entry; the finding stays.
    let (ok, err) = verify();
    assert!(!ok && err.contains(&said) && err.contains("found when appending"), "{err}");
}

/// A playback's entry counts the bytes actually served over all its Range requests (not the
/// file's size), and a signed export (`sign=1`) is recorded as `export`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_counts_bytes_served_and_names_exports() {
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(2, "segment_duration = \"2s\"", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let mut child = start(&setup);
    let ok = wait_until_async(Duration::from_secs(60), || setup.try_recordings(1).is_some_and(|r| r.len() >= 2)).await;
    assert!(ok, "no footage\n{}", setup.log());
    let path = "/api/channels/1/play.mp4?from=now-10m";
    let mut total = 0;
    for range in ["bytes=0-999", "bytes=1000-1999"] {
        let a = setup.request("GET", path, &[bearer(&setup.token), format!("Range: {range}")], b"").unwrap();
        assert_eq!((a.status, a.body.len()), (206, 1000), "{}", a.head);
        total = a.header("content-range").and_then(|v| v.rsplit('/').next()?.parse::<u64>().ok()).unwrap();
    }
    assert!(total > 2000, "the file is larger than what was asked: {total}");
    // A signed export needs an explicit end no later than the durable footage: the first
    // (closed) segment's end.
    let to = understudy::commands::time::format_90k(setup.recordings(1)[0]["end_90k"].as_i64().unwrap());
    let export = setup.request("GET", &format!("{path}&to={to}&sign=1"), &[bearer(&setup.token)], b"").unwrap();
    assert_eq!(export.status, 200, "{}", export.text());
    sigterm(&mut child);
    sim.shutdown().await;

    let audit: Vec<serde_json::Value> = setup.cli(&["audit", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let plays: Vec<_> = audit.iter().filter(|e| e["action"] == "playback").collect();
    assert_eq!(plays.len(), 1, "one playback entry for both Range requests: {audit:#?}");
    assert_eq!((plays[0]["bytes"].as_u64(), plays[0]["detail"]["requests"].as_u64()), (Some(2000), Some(2)), "{}", plays[0]);
    let exports: Vec<_> = audit.iter().filter(|e| e["action"] == "export").collect();
    assert_eq!(exports.len(), 1, "{audit:#?}");
    let e = exports[0];
    assert_eq!((e["channel"].as_u64(), e["detail"]["from"].as_str(), e["result"].as_str()), (Some(1), Some("now-10m"), Some("ok")), "{e}");
    setup.cli(&["audit", "--verify"]);
}
