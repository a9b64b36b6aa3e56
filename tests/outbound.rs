//! Outbound connections on loopback: https probes against a main with a self-signed
//! certificate (public roots refuse it; `ca` or `fingerprint` accept it; a wrong fingerprint
//! does not), Digest with qop against lighttpd, RTSP Digest against GStreamer's RTSP server,
//! and takeover events delivered to an https webhook by `understudy run`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use common::*;
use understudy::config::{trust, Probe, Secret, TlsTrust};
use understudy::failover::probe::{probe, ProbeAuth};

/// A self-signed certificate for 127.0.0.1/localhost: (cert PEM, key PEM, SHA-256 of the DER).
fn self_signed() -> (String, String, [u8; 32]) {
    use sha2::Digest;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let fp: [u8; 32] = sha2::Sha256::digest(ck.cert.der()).into();
    (ck.cert.pem(), ck.signing_key.serialize_pem(), fp)
}

/// An HTTPS server on loopback with `router`; the handle stops it.
async fn tls_server(cert: &str, key: &str, router: axum::Router) -> (SocketAddr, axum_server::Handle<SocketAddr>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert.as_bytes().to_vec(), key.as_bytes().to_vec()).await.unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(l, config).unwrap().handle(handle.clone());
    tokio::spawn(async move { server.serve(router.into_make_service()).await });
    (addr, handle)
}

fn health() -> axum::Router {
    axum::Router::new().route("/health", get(|| async { "ok" }))
}

fn auth(tls: TlsTrust) -> ProbeAuth {
    ProbeAuth::new(None, None, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probe_trusts_only_the_configured_certificate() {
    let (cert, key, fp) = self_signed();
    let (addr, _h) = tls_server(&cert, &key, health()).await;
    let p = Probe::Http { url: format!("https://{addr}/health").parse().unwrap() };
    let t = Duration::from_secs(5);

    // The public roots do not know a self-signed certificate; the error says what to do.
    let e = probe(&p, &auth(TlsTrust::Roots), t).await.unwrap_err();
    assert!(e.contains("certificate") && e.contains("fingerprint = "), "{e}");

    // ca = FILE (parsed as the config does).
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("main.pem");
    std::fs::write(&ca, &cert).unwrap();
    let with_ca = trust::parse(Some(&ca), None).unwrap();
    probe(&p, &auth(with_ca), t).await.unwrap();

    // Another CA does not vouch for it.
    let (other, _, other_fp) = self_signed();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, &other).unwrap();
    let e = probe(&p, &auth(trust::parse(Some(&other_file), None).unwrap()), t).await.unwrap_err();
    assert!(e.contains("certificate") && e.contains("other.pem"), "{e}");

    // fingerprint = "sha256:…" as `understudy tls fingerprint` prints it.
    let pinned = trust::parse(None, Some(&trust::format_fingerprint(&fp))).unwrap();
    probe(&p, &auth(pinned), t).await.unwrap();
    let e = probe(&p, &auth(TlsTrust::Fingerprint(other_fp)), t).await.unwrap_err();
    assert!(e.contains("fingerprint") && e.contains(&trust::format_fingerprint(&fp)), "{e}");

    // Plain HTTP to the TLS port is no answer, not a success.
    let plain = Probe::Http { url: format!("http://{addr}/health").parse().unwrap() };
    assert!(probe(&plain, &auth(TlsTrust::Roots), t).await.is_err());
}

/// lighttpd with Digest (qop="auth", SHA-256 and MD5 offered) in front of /health.
struct Lighttpd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Lighttpd {
    fn start(user: &str, password: &str) -> Lighttpd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("www")).unwrap();
        std::fs::write(d.join("www/health"), "ok\n").unwrap();
        std::fs::write(d.join("users"), format!("{user}:{password}\n")).unwrap();
        let port = free_port();
        let conf = format!(
            "server.document-root = {www:?}\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\nserver.errorlog = {log:?}\n\
             server.modules = (\"mod_auth\", \"mod_authn_file\")\nauth.backend = \"plain\"\nauth.backend.plain.userfile = {users:?}\n\
             auth.require = ( \"/\" => ( \"method\" => \"digest\", \"realm\" => \"nvr\", \"require\" => \"valid-user\", \"algorithm\" => \"SHA-256|MD5\" ) )\n",
            www = d.join("www").display().to_string(),
            log = d.join("error.log").display().to_string(),
            users = d.join("users").display().to_string(),
        );
        std::fs::write(d.join("lighttpd.conf"), conf).unwrap();
        let child = std::process::Command::new("lighttpd")
            .args(["-D", "-f"])
            .arg(d.join("lighttpd.conf"))
            .spawn()
            .expect("lighttpd must be installed by tests/run-all.sh");
        assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()), "lighttpd did not start");
        Lighttpd { child, port, _dir: dir }
    }
}

impl Drop for Lighttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_answers_lighttpd_digest_with_qop() {
    let server = Lighttpd::start("nvr", "s3cret pass");
    let url = format!("http://127.0.0.1:{}/health", server.port);
    // The challenge really asks for qop=auth (RFC 7616), so the probe's answer must carry it.
    let (code, head, _) = http_request(&format!("127.0.0.1:{}", server.port), "/health", &[]).unwrap();
    assert_eq!(code, 401);
    assert!(head.contains("qop=\"auth\""), "{head}");
    let p = Probe::Http { url: url.parse().unwrap() };
    let t = Duration::from_secs(5);
    let good = ProbeAuth::new(Some("nvr".into()), Some(Secret::new("s3cret pass")), TlsTrust::Roots);
    probe(&p, &good, t).await.unwrap();
    let wrong = ProbeAuth::new(Some("nvr".into()), Some(Secret::new("nope")), TlsTrust::Roots);
    let e = probe(&p, &wrong, t).await.unwrap_err();
    assert!(e.contains("401") && !e.contains("nope"), "{e}");
    let e = probe(&p, &ProbeAuth::default(), t).await.unwrap_err();
    assert!(e.contains("username"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_probe_answers_gstreamer_digest() {
    let gst = GstServer::start_args(&["--auth", "cam:pa55", "--digest"]);
    let p = Probe::Rtsp { url: format!("rtsp://127.0.0.1:{}/cam", gst.port).parse().unwrap() };
    let t = Duration::from_secs(5);
    let good = ProbeAuth::new(Some("cam".into()), Some(Secret::new("pa55")), TlsTrust::Roots);
    probe(&p, &good, t).await.unwrap();
    let wrong = ProbeAuth::new(Some("cam".into()), Some(Secret::new("bad")), TlsTrust::Roots);
    let e = probe(&p, &wrong, t).await.unwrap_err();
    assert!(e.contains("401"), "{e}");
    assert!(probe(&p, &ProbeAuth::default(), t).await.unwrap_err().contains("username"));
    // A stream the server does not have is not healthy.
    let missing = Probe::Rtsp { url: format!("rtsp://127.0.0.1:{}/nothing", gst.port).parse().unwrap() };
    assert!(probe(&missing, &good, t).await.is_err());
}

fn main_toml(name: &str, probe: &str, trust: &str, cams: &[(u32, String)], start: u32) -> String {
    let mut s = format!(
        "[[main]]\nname = \"{name}\"\nprobe = \"{probe}\"\n{trust}\ninterval = \"200ms\"\nfail_after = 3\nrecover_after = 3\nstart_channel = {start}\n\n"
    );
    for (ch, url) in cams {
        s.push_str(&format!("[[main.camera]]\nchannel = {ch}\nurl = \"{url}\"\n\n"));
    }
    s
}

fn main_status(setup: &Setup, name: &str) -> Option<serde_json::Value> {
    let st = setup.api_get("/api/status")?;
    st["mains"].as_array()?.iter().find(|m| m["name"] == name).cloned()
}

/// `understudy run`: a main behind a self-signed certificate pinned by fingerprint stays ok
/// until it goes down; one pinned to the wrong certificate fails with the reason in its
/// status; the takeover events reach an https webhook trusted through `ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_events_reach_an_https_webhook() {
    let sim = camsim(&[H264, H264]).await;
    let (main_cert, main_key, main_fp) = self_signed();
    let (main_addr, main_handle) = tls_server(&main_cert, &main_key, health()).await;
    let (hook_cert, hook_key, _) = self_signed();
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = got.clone();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer hook-token"));
                sink.lock().unwrap().push(body.0);
                "ok"
            }
        }),
    );
    let (hook_addr, _hh) = tls_server(&hook_cert, &hook_key, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let hook_ca = dir.path().join("hook.pem");
    std::fs::write(&hook_ca, &hook_cert).unwrap();

    let (_, _, wrong_fp) = self_signed();
    let mains = main_toml("nvr-a", &format!("https://{main_addr}/health"), &format!("fingerprint = \"{}\"", trust::format_fingerprint(&main_fp)), &[(1, sim.url(1))], 1)
        + &main_toml("nvr-b", &format!("https://{main_addr}/health"), &format!("fingerprint = \"{}\"", trust::format_fingerprint(&wrong_fp)), &[(1, sim.url(2))], 2)
        + &format!("[[webhook]]\nurl = \"https://{hook_addr}/hook\"\ntoken = \"hook-token\"\nca = {:?}\n", hook_ca.display().to_string());
    let setup = Setup::new(2, "", &mains);
    let mut child = setup.spawn_run();
    let ok = |s: &Setup| main_status(s, "nvr-a").is_some_and(|m| m["state"] == "ok");
    assert!(wait_until_async(Duration::from_secs(60), || ok(&setup)).await, "{:?}\n{}", setup.api_get("/api/status"), setup.log());
    // The wrongly pinned main is taken over, and says why.
    assert!(
        wait_until_async(Duration::from_secs(60), || main_status(&setup, "nvr-b").is_some_and(|m| m["state"] == "taken_over")).await,
        "{:?}",
        setup.api_get("/api/status")
    );
    let b = main_status(&setup, "nvr-b").unwrap();
    let reason = b["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("fingerprint") && reason.contains(&trust::format_fingerprint(&main_fp)), "{b}");

    main_handle.shutdown();
    assert!(wait_until_async(Duration::from_secs(60), || main_status(&setup, "nvr-a").is_some_and(|m| m["state"] == "taken_over")).await);
    let delivered = |kind: &str, main: &str| got.lock().unwrap().iter().any(|e| e["kind"] == kind && e["main"] == main);
    assert!(wait_until_async(Duration::from_secs(30), || delivered("takeover_started", "nvr-a") && delivered("main_failed", "nvr-b")).await, "{:?}", got.lock().unwrap());
    let probe_failed = got.lock().unwrap().iter().find(|e| e["kind"] == "probe_failed" && e["main"] == "nvr-b").cloned().unwrap();
    assert!(probe_failed["detail"]["error"].as_str().unwrap().contains("fingerprint"), "{probe_failed}");
    assert_eq!(got.lock().unwrap()[0]["server"], "test");
    sigterm(&mut child);
    sim.shutdown().await;
    assert!(!setup.log().contains("hook-token"), "the webhook token was logged");
}

/// `ca`/`fingerprint` are checked when the config is loaded, naming the field.
#[test]
fn trust_settings_are_validated_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = |main_extra: &str, hook: &str| {
        format!(
            "[server]\nname = \"t\"\nchannels = 2\nstate_dir = \"/tmp/x\"\n[[volume]]\npath = \"/tmp/x\"\n[[main]]\nname = \"m\"\nprobe = \"https://127.0.0.1:1/\"\n{main_extra}\n[[main.camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1/1\"\n{hook}"
        )
    };
    let err = |text: String| understudy::config::Config::parse(&text, Path::new("u.toml")).unwrap_err().to_string();
    let missing = dir.path().join("missing.pem");
    assert!(err(base(&format!("ca = {:?}", missing.display().to_string()), "")).contains("main[0].ca"));
    assert!(err(base("fingerprint = \"sha256:12\"", "")).contains("main[0].fingerprint"));
    assert!(err(base("", "[[webhook]]\nurl = \"http://127.0.0.1:1/\"\nfingerprint = \"sha256:12\"")).contains("webhook[0].fingerprint: is only used with https://"));
    assert!(err(base("", "[[webhook]]\nurl = \"ftp://127.0.0.1:1/\"")).contains("webhook[0].url"));
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    assert!(err(base(&format!("ca = {:?}", not_pem.display().to_string()), "")).contains("holds no PEM certificate"));
    let fp = trust::format_fingerprint(&[7u8; 32]);
    let cfg = understudy::config::Config::parse(&base(&format!("fingerprint = \"{fp}\""), "[[webhook]]\nurl = \"https://127.0.0.1:1/\""), Path::new("u.toml")).unwrap();
    assert_eq!(cfg.mains[0].tls, TlsTrust::Fingerprint([7u8; 32]));
    assert_eq!(cfg.webhooks[0].tls, TlsTrust::Roots);
}
