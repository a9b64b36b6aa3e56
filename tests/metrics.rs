//! `GET /metrics` scraped by a real Prometheus (Debian package `prometheus`) started here on
//! loopback, read back through its HTTP query API; the exposition passes `promtool check metrics`.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use understudy::simmain::SimMain;

/// `prometheus` as a child, killed on drop.
struct Prometheus {
    _child: RunGuard,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` over HTTPS, trusting `ca`, with the bearer token `token`.
    fn start(target: &str, ca: &std::path::Path, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        std::fs::write(&cfg, format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: understudy\n    scheme: https\n    tls_config:\n      ca_file: {:?}\n    authorization:\n      credentials_file: {:?}\n    static_configs:\n      - targets: ['{target}']\n",
            ca.display().to_string(), token_file.display().to_string(),
        )).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()))
            .spawn()
            .expect("prometheus (Debian package `prometheus`) must be installed");
        Prometheus { _child: RunGuard(child), addr, _dir: dir }
    }

    /// An instant query: label-set text → value.
    fn query(&self, q: &str) -> Option<BTreeMap<String, f64>> {
        let enc: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let body = http_get(&self.addr, &format!("/api/v1/query?query={enc}"))?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let mut out = BTreeMap::new();
        for r in v["data"]["result"].as_array()? {
            let labels = r["metric"].as_object()?.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",");
            out.insert(labels, r["value"][1].as_str()?.parse().ok()?);
        }
        Some(out)
    }

    fn frames_by_channel(&self) -> BTreeMap<String, f64> {
        self.query("sum by (channel) (understudy_channel_frames_total)").unwrap_or_default()
    }

    fn takeovers(&self) -> Option<f64> {
        self.query("understudy_main_takeovers_total{main=\"nvr-a\"}")?.into_values().next()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_channels_and_takeovers() {
    let sim = camsim(&[H264, H265, H264, H265]).await;
    let mut main = SimMain::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut text = format!(
        "[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://{}\"\ninterval = \"200ms\"\nfail_after = 3\n",
        main.addr()
    );
    for i in 1..=4 {
        text.push_str(&format!("[[main.camera]]\nchannel = {i}\nurl = \"{}\"\n", sim.url(i)));
    }
    let setup = Setup::new(4, "", &text);
    let mut child = setup.spawn_run();
    // Prometheus scrapes with a token that has only the `metrics` right (its user, an operator,
    // has more), trusting the generated certificate.
    setup.add_user("prometheus", "operator", "all", "prometheus-password");
    let token = setup.create_token(&["--user", "prometheus", "--scope", "metrics"]);
    assert!(wait_until_async(Duration::from_secs(60), || setup.api("GET", "/api/status").is_some_and(|a| a.status == 200)).await, "{}", setup.log());
    let with_token = |path: &str| setup.request("GET", path, &[format!("Authorization: Bearer {token}")], b"").map(|a| a.status);
    assert_eq!(with_token("/metrics"), Some(200));
    for path in ["/api/status", "/api/config/cameras", "/api/channels/1/recordings", "/api/channels/1/play.mp4"] {
        assert_eq!(with_token(path), Some(403), "{path} with the metrics-only token");
    }
    let prom = Prometheus::start(&format!("127.0.0.1:{}", setup.api), &setup.cert(), &token);

    // Prometheus has scraped the healthy main: no takeover yet.
    assert!(wait_until_async(Duration::from_secs(60), || prom.takeovers() == Some(0.0)).await,
        "prometheus never saw understudy_main_takeovers_total = 0\n{}", setup.log());
    assert!(prom.frames_by_channel().is_empty() || prom.frames_by_channel().values().all(|v| *v == 0.0));

    main.down();
    assert!(wait_until_async(Duration::from_secs(60), || prom.takeovers() == Some(1.0)).await,
        "takeover counter did not reach 1: {:?}\n{}", prom.takeovers(), setup.log());
    // Every channel's frame counter rises, as Prometheus stored it.
    let mut first = BTreeMap::new();
    assert!(wait_until_async(Duration::from_secs(60), || {
        first = prom.frames_by_channel();
        first.len() == 4 && first.values().all(|v| *v > 0.0)
    }).await, "frames not seen on 4 channels: {first:?}");
    let mut later = BTreeMap::new();
    assert!(wait_until_async(Duration::from_secs(60), || {
        later = prom.frames_by_channel();
        later.len() == 4 && later.iter().all(|(k, v)| first.get(k).is_some_and(|f| v > f))
    }).await, "frames did not rise on all 4 channels: {first:?} → {later:?}");
    let up = prom.query("up{job=\"understudy\"}").unwrap_or_default();
    assert_eq!(up.values().copied().collect::<Vec<_>>(), vec![1.0], "scrape target not up: {up:?}");

    // The exposition itself passes promtool's checks (format and naming lint).
    let text = setup.api("GET", "/metrics").filter(|a| a.status == 200).expect("GET /metrics").text();
    for want in ["understudy_main_probe_duration_seconds_bucket{main=\"nvr-a\",le=\"+Inf\"}", "understudy_volume_fsync_duration_seconds_count",
                 "understudy_main_state{main=\"nvr-a\",state=\"taken_over\"} 1", "understudy_channel_durable_frames_total{channel=\"1\",owner=\"nvr-a\"}"] {
        assert!(text.contains(want), "/metrics lacks {want}:\n{text}");
    }
    let mut promtool = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}{}\n{text}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    drop(prom);
    sigterm(&mut child);
    sim.shutdown().await;
}
