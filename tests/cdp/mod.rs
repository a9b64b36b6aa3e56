//! A headless Chromium driven over the DevTools protocol on `--remote-debugging-pipe`
//! (NUL-separated JSON, commands on fd 3, answers and events on fd 4): navigate, evaluate,
//! click like a user, screenshot. `chromium_command`/`Chromium` are the launch and clean-up
//! shared with tests/browser.rs: same flags, its own process group (killed as a whole on drop),
//! a fresh profile.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// Where Chromium is: `$CHROMIUM`, else Debian's `/usr/bin/chromium`. A missing browser is a
/// failure, not a skip: the test would otherwise pass without proving anything.
pub fn chromium_path() -> PathBuf {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "Chromium not found at {} (set $CHROMIUM to override). The browser tests need it: \
         run `bash tests/run-all.sh`, which installs Debian's `chromium` package, or `apt-get install -y chromium`.",
        p.display()
    );
    p
}

/// The headless flags every browser test uses (no background networking on this closed
/// network), a fresh profile, stdout+stderr to `log`, and its own process group so the whole
/// browser can be killed at once.
pub fn chromium_command(extra: &[&str], log: &Path) -> (Command, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium_path());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        // The API's certificate is the self-signed one `run` generates for the test.
        "--ignore-certificate-errors",
    ])
    .args(extra)
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .stdin(Stdio::null())
    .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
    .stderr(Stdio::from(
        std::fs::OpenOptions::new().append(true).open(log).unwrap(),
    ))
    .process_group(0);
    (cmd, profile)
}

/// A running Chromium from `chromium_command`; the whole process group (browser, zygote,
/// renderers, GPU/utility helpers) is killed on drop.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    log: PathBuf,
}

impl Chromium {
    pub fn spawn(mut cmd: Command, profile: tempfile::TempDir, log: &Path) -> Chromium {
        let child = cmd.spawn().expect("spawn chromium");
        Chromium { child, _profile: profile, log: log.to_owned() }
    }

    /// The last 30 lines of the browser's log, without its D-Bus noise.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Without a D-Bus, Chromium logs a complaint per lookup; they say nothing about the page.
        let lines: Vec<_> = s.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group id is the browser's pid (process_group(0)); only what we started is in it.
        let pgid = self.child.id() as i32;
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// How long one DevTools call may take on a loaded machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium in its own process group (killed as a group on drop), with a DevTools
/// session attached to its page.
pub struct Browser {
    chromium: Chromium,
    to_browser: std::io::PipeWriter,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// Uncaught exceptions and console errors of the page.
    pub page_errors: Vec<String>,
}

impl Browser {
    pub fn open(log: &Path) -> Browser {
        Browser::open_with(&[], log)
    }

    /// [`Browser::open`] with more command-line switches.
    pub fn open_with(extra: &[&str], log: &Path) -> Browser {
        // fd 3: what the browser reads; fd 4: what it writes.
        let (cmd_r, cmd_w) = std::io::pipe().unwrap();
        let (ev_r, ev_w) = std::io::pipe().unwrap();
        let (fd3, fd4) = (cmd_r.as_raw_fd(), ev_w.as_raw_fd());
        let mut args = vec!["--window-size=1280,1000", "--remote-debugging-pipe"];
        args.extend_from_slice(extra);
        let (mut cmd, profile) = chromium_command(&args, log);
        cmd.arg("about:blank");
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. Both ends
        // are first copied above 10, so placing one on 3 cannot clobber the other; the copies
        // lack FD_CLOEXEC, so 3 and 4 survive exec.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(fd3, libc::F_DUPFD, 10);
                let b = libc::fcntl(fd4, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let chromium = Chromium::spawn(cmd, profile, log);
        drop((cmd_r, ev_w));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(ev_r);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        msg.pop_if(|b| *b == 0);
                        if let Ok(v) = serde_json::from_slice(&msg) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            chromium,
            to_browser: cmd_w,
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            page_errors: Vec::new(),
        };
        // The first page target (about:blank) may take a moment to appear.
        let t0 = Instant::now();
        let target = loop {
            let targets = b
                .call("Target.getTargets", json!({}))
                .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == "page").cloned());
            if let Some(p) = page {
                break p["targetId"].clone();
            }
            assert!(
                t0.elapsed() < CALL_TIMEOUT,
                "Chromium shows no page: {targets}\n{}",
                b.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .unwrap();
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Runtime.enable", json!({})).unwrap();
        b.call("Page.enable", json!({})).unwrap();
        b
    }

    /// One DevTools call (on the page's session once attached); events met while waiting are
    /// scanned for page errors.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: writing to Chromium: {e}"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .from_browser
                .recv_timeout(left)
                .map_err(|e| format!("{method}: no answer from Chromium: {e}"))?;
            if m["id"] == id {
                return match m.get("error") {
                    Some(e) => Err(format!("{method}: {e}")),
                    None => Ok(m["result"].clone()),
                };
            }
            self.note_event(&m);
        }
    }

    fn note_event(&mut self, m: &Value) {
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .page_errors
                .push(format!("exception: {}", m["params"]["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if m["params"]["type"] == "error" => self
                .page_errors
                .push(format!("console.error: {}", m["params"]["args"])),
            _ => {}
        }
    }

    /// Evaluates an expression in the page (promises awaited, as a user gesture).
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true, "userGesture": true }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` every 250 ms until it yields something truthy (returned), or panics with
    /// `what` and the last value after `limit`.
    pub fn wait_for(&mut self, what: &str, limit: Duration, expr: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self
                .eval(expr)
                .unwrap_or_else(|e| json!({ "eval_error": e }));
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v.get("eval_error").is_none();
            if truthy {
                return v;
            }
            assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; last: {v}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A real left click (mouse pressed and released) at the middle of the element.
    pub fn click(&mut self, selector: &str) {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; e.scrollIntoView({{ block: 'center' }}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let at = self.eval(&expr).unwrap();
        let (x, y) = (at[0].as_f64(), at[1].as_f64());
        let (Some(x), Some(y)) = (x, y) else {
            panic!("nothing to click at {selector}: {at}")
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .unwrap();
        }
    }

    pub fn screenshot(&mut self, to: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .unwrap();
        std::fs::write(to, png).unwrap();
    }

    pub fn log_tail(&self) -> String {
        self.chromium.log_tail()
    }
}
