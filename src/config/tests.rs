//! Config parsing and validation tests: each mistake must name its field and line.

use super::*;

const GOOD: &str = r#"
[server]
name = "failover-1"
channels = 8
state_dir = "/tmp/understudy-test"
listen = "127.0.0.1:7878"

[[volume]]
path = "/tmp/understudy-test/disk1"
max_bytes = "2 TiB"
reserve = "10 GiB"

[[camera]]
channel = 1
url = "rtsp://admin:s%40cret@10.0.0.11/stream1"

[[main]]
name = "nvr-a"
probe = "tcp://10.0.0.5:80"
interval = "500ms"
fail_after = 3
start_channel = 3
password = "hunter2"
record = [1, 2]

[[main.camera]]
channel = 1
url = "rtsp://10.0.1.11/stream1"

[[main.camera]]
channel = 2
url = "rtsp://10.0.1.12/stream1"

[[main.camera]]
channel = 3
url = "rtsp://10.0.1.13/stream1"
"#;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, Path::new("test.toml"))
}

#[test]
fn good_config_parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.channels, 8);
    assert_eq!(c.server.sync_interval, Duration::from_secs(1));
    assert_eq!(c.volumes[0].max_bytes, Some(2 << 40));
    // Credentials are moved out of the URL and decoded.
    assert_eq!(c.cameras[0].url.as_str(), "rtsp://10.0.0.11/stream1");
    assert_eq!(c.cameras[0].username.as_deref(), Some("admin"));
    assert_eq!(c.cameras[0].password.as_ref().unwrap().expose(), "s@cret");
    let m = &c.mains[0];
    assert_eq!(m.timeout, Duration::from_millis(500));
    assert_eq!(m.recover_after, 3);
    // record = [1, 2]: camera 3 is left out; start_channel 3 maps 1 -> 3, 2 -> 4.
    assert_eq!(m.cameras.iter().map(|c| (c.source_channel, c.channel)).collect::<Vec<_>>(), vec![(1, 3), (2, 4)]);
    assert_eq!(m.probe, Probe::Tcp { host: "10.0.0.5".into(), port: 80 });
}

#[test]
fn secrets_never_debug_print() {
    let c = parse(GOOD).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s@cret") && !dbg.contains("hunter2"), "{dbg}");
}

fn expect_err(text: &str, field: &str, msg_part: &str) {
    let e = parse(text).expect_err("config should be rejected");
    let shown = e.to_string();
    assert!(shown.starts_with("test.toml:"), "{shown}");
    assert!(e.line.is_some(), "no line in {shown}");
    assert!(shown.contains(field), "{shown} should name {field}");
    assert!(shown.contains(msg_part), "{shown} should say {msg_part}");
}

#[test]
fn mistakes_name_field_and_line() {
    expect_err(&GOOD.replace("channels = 8", "channels = 8\nchanels = 3"), "", "unknown field `chanels`");
    expect_err(&GOOD.replace("channel = 1\nurl = \"rtsp://admin", "channel = 9\nurl = \"rtsp://admin"), "camera[0].channel", "outside 1..=8");
    expect_err(&GOOD.replace("start_channel = 3", "start_channel = 8"), "main[0].camera[1].channel", "beyond server.channels");
    expect_err(&GOOD.replace("start_channel = 3", "start_channel = 1"), "main[0].camera[0].channel", "records all the time");
    expect_err(&GOOD.replace("tcp://10.0.0.5:80", "tcp://10.0.0.5"), "main[0].probe", "needs a host and a port");
    expect_err(&GOOD.replace("tcp://10.0.0.5:80", "ftp://10.0.0.5"), "main[0].probe", "not one of");
    expect_err(&GOOD.replace("url = \"rtsp://10.0.1.12/stream1\"", "url = \"http://10.0.1.12/\""), "main[0].camera[1].url", "not rtsp");
    expect_err(&GOOD.replace("record = [1, 2]", "record = [1, 7]"), "main[0].record", "channel 7");
    expect_err(&GOOD.replace("interval = \"500ms\"", "interval = \"500\""), "", "no unit");
    expect_err(&GOOD.replace("fail_after = 3", "fail_after = 0"), "main[0].fail_after", "between 1 and 1000");
    let dup = format!("{GOOD}\n[[main]]\nname = \"nvr-a\"\nprobe = \"tcp://10.0.0.6:80\"\n[[main.camera]]\nchannel = 1\nurl = \"rtsp://x/1\"\n");
    expect_err(&dup, "main[1].name", "used by another");
}

#[test]
fn no_volume_is_an_error() {
    let text = "[server]\nname = \"x\"\nchannels = 4\nstate_dir = \"/tmp/x\"\n";
    let e = parse(text).unwrap_err();
    assert!(e.to_string().contains("[[volume]]"), "{e}");
}

#[test]
fn health_sources() {
    let with = |h: &str| GOOD.replace("fail_after = 3\n", &format!("fail_after = 3\n{h}\n"));
    let c = parse(&with("health = \"hikvision://10.0.0.5\"")).unwrap();
    assert_eq!(c.mains[0].health.as_ref().unwrap().label(), "hikvision://10.0.0.5");
    let c = parse(&with("health = \"understudy+http://127.0.0.1:7879\"")).unwrap();
    match c.mains[0].health.as_ref().unwrap() {
        HealthSource::Understudy { base, token, ca } => {
            assert_eq!(base.as_str(), "http://127.0.0.1:7879/");
            assert!(token.is_none() && ca.is_none());
        }
        other => panic!("{other:?}"),
    }
    std::env::set_var("UNDERSTUDY_TEST_HEALTH_TOKEN", "tok-123");
    let c = parse(&with("health = \"understudy://10.0.0.5:7878\"\nhealth_token_env = \"UNDERSTUDY_TEST_HEALTH_TOKEN\"")).unwrap();
    let h = c.mains[0].health.as_ref().unwrap();
    assert_eq!(h.label(), "understudy://10.0.0.5:7878");
    assert!(!format!("{h:?}").contains("tok-123"), "token in Debug output");
    assert!(parse(GOOD).unwrap().mains[0].health.is_none());

    expect_err(&with("health = \"ftp://10.0.0.5\""), "main[0].health", "not one of");
    expect_err(&with("health = \"understudy://10.0.0.5\""), "main[0].health", "needs a port");
    expect_err(&with("health = \"hikvision://admin:pw@10.0.0.5\""), "main[0].health", "must not contain credentials");
    expect_err(&with("health = \"hikvision://10.0.0.5/ISAPI\""), "main[0].health", "only the host and port");
    expect_err(&with("health = \"understudy://10.0.0.5:1\"\nhealth_token_env = \"UNDERSTUDY_TEST_NO_SUCH_VAR\""), "main[0].health_token_env", "is not set");
    expect_err(&with("health = \"understudy://10.0.0.5:1\"\nhealth_ca = \"/nonexistent/ca.pem\""), "main[0].health_ca", "cannot read /nonexistent/ca.pem");
    expect_err(&with("health_ca = \"/etc/hostname\""), "main[0].health_ca", "`health` is not");
    expect_err(&with("health = \"hikvision://10.0.0.5\"\nhealth_token_env = \"UNDERSTUDY_TEST_HEALTH_TOKEN\""), "main[0].health_token_env", "only for understudy://");
}

#[test]
fn standby_fields() {
    let c = parse(GOOD).unwrap();
    assert_eq!((c.mains[0].standby, c.mains[0].prebuffer, c.server.prebuffer_memory), (StandbyMode::Cold, Duration::from_secs(10), 2 << 30));
    let hot = GOOD
        .replace("record = [1, 2]", "record = [1, 2]\nstandby = \"hot\"\nprebuffer = \"20s\"")
        .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:7878\"\nprebuffer_memory = \"512 MiB\"")
        .replace("url = \"rtsp://10.0.1.12/stream1\"", "url = \"rtsp://10.0.1.12/stream1\"\nstandby_url = \"rtsp://10.0.1.12/stream2\"");
    let c = parse(&hot).unwrap();
    assert_eq!((c.mains[0].standby, c.mains[0].prebuffer, c.server.prebuffer_memory), (StandbyMode::Hot, Duration::from_secs(20), 512 << 20));
    assert_eq!(c.mains[0].cameras[1].standby_url.as_ref().map(url::Url::as_str), Some("rtsp://10.0.1.12/stream2"));
    expect_err(&GOOD.replace("record = [1, 2]", "standby = \"hott\""), "main[0].standby", "not cold, warm or hot");
    expect_err(&GOOD.replace("record = [1, 2]", "prebuffer = \"1h\""), "main[0].prebuffer", "between 1s and 300s");
    expect_err(&GOOD.replace("url = \"rtsp://10.0.1.12/stream1\"", "url = \"rtsp://10.0.1.12/stream1\"\nstandby_url = \"rtsp://u:p@10.0.1.12/s2\""), "main[0].camera[1].standby_url", "must not contain credentials");
    expect_err(&GOOD.replace("url = \"rtsp://admin:s%40cret@10.0.0.11/stream1\"", "url = \"rtsp://10.0.0.11/stream1\"\nstandby_url = \"rtsp://10.0.0.11/s2\""), "camera[0].standby_url", "only a [[main.camera]]");
}
