//! WS-Discovery: `understudy import --discover` inside a network namespace of its own
//! (`unshare -rn`), finding a device published by an independent implementation, the PyPI
//! `wsdiscovery` package (installed by tests/run-all.sh; `UNDERSTUDY_PYTHON` names its
//! interpreter). The namespace's loopback gets multicast, a route for 239.255.255.250 and a
//! non-loopback address, since `wsdiscovery` ignores loopback addresses.

use std::process::Command;

const PUBLISHER: &str = r#"
import sys, time
from wsdiscovery.publishing import ThreadedWSPublishing
from wsdiscovery import QName, Scope
p = ThreadedWSPublishing()
p.start()
p.publishService(types=[QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")],
                 scopes=[Scope("onvif://www.onvif.org/name/simcam")], xAddrs=[sys.argv[1]])
time.sleep(float(sys.argv[2]))
p.stop()
"#;

#[test]
fn discovers_a_published_onvif_device_in_a_network_namespace() {
    let python = std::env::var("UNDERSTUDY_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has = Command::new(&python).args(["-c", "import wsdiscovery"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(has, "{python} cannot import wsdiscovery: run tests/run-all.sh (it installs it) or pip install wsdiscovery==2.1.2");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("publish.py");
    std::fs::write(&script, PUBLISHER).unwrap();
    let config = dir.path().join("understudy.toml");
    std::fs::write(&config, format!("[server]\nname = \"t\"\nchannels = 4\nstate_dir = {:?}\n\n[[volume]]\npath = {:?}\n", dir.path().join("state"), dir.path().join("disk"))).unwrap();
    let xaddr = "http://10.99.0.1:18080/onvif/device_service";
    let sh = format!(
        "set -e; ip link set lo up; ip link set lo multicast on; ip addr add 10.99.0.1/32 dev lo; \
         ip route add 239.255.255.250/32 dev lo; \
         {python} {script} {xaddr} 10 >/dev/null 2>&1 & \
         sleep 2; exec {bin} import --config {config} --main found --discover --discover-for 3s --probe tcp://10.99.0.1:80 --timeout 1s",
        script = script.display(),
        bin = env!("CARGO_BIN_EXE_understudy"),
        config = config.display(),
    );
    let before = std::fs::read_to_string(&config).unwrap();
    let out = Command::new("timeout").args(["60", "unshare", "-rn", "sh", "-c", &sh]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Found over multicast; nothing serves ONVIF at that address inside the namespace, so the
    // camera is listed with that problem and nothing is written.
    assert!(stdout.contains("1 camera(s) from WS-Discovery"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ONVIF at 10.99.0.1:18080 is not reachable from this box: Connection refused"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("no camera could be imported"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
}
