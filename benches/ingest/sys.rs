//! What the bench reads from the kernel: CPU time (getrusage, /proc/PID/stat), memory
//! (VmHWM, Pss), the filesystem under a directory, and fdatasync/fsync counts through perf.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// User and system CPU seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.sys
    }
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
    pub fn plus(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user + o.user,
            sys: self.sys + o.sys,
        }
    }
    pub fn json(self) -> serde_json::Value {
        serde_json::json!({ "user_s": round3(self.user), "sys_s": round3(self.sys), "total_s": round3(self.total()) })
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// CPU used so far by every thread of this process.
pub fn cpu_self() -> Cpu {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Cpu::default();
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU used so far by process `pid` (utime + stime of /proc/PID/stat); None once it is gone.
pub fn cpu_of(pid: u32) -> Option<Cpu> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = clock_ticks();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(Cpu {
        user: utime / ticks,
        sys: stime / ticks,
    })
}

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    kib_field(&std::fs::read_to_string(path).ok()?, field)
}

/// Proportional set size (shared pages split among the processes mapping them), KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resets this process's peak RSS (VmHWM) to its current RSS (`clear_refs` 5, Linux ≥ 4.0).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The filesystem type under `dir` and whether it is RAM-backed (tmpfs/ramfs).
pub fn fs_type(dir: &Path) -> (String, bool) {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output();
    let name = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    let ram = matches!(name.as_str(), "tmpfs" | "ramfs");
    (name, ram)
}

/// Bytes available to us on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs reads a NUL-terminated path and writes only the struct it is given.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Every file under `dir` whose name ends with `ext`, sorted by path.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The executable `name` on PATH, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; a stale pid only yields ESRCH.
        unsafe { libc::kill(p, sig) };
    }
}

/// Waits up to `secs` for `child` to exit; then SIGKILLs it. True if it exited by itself.
pub fn wait_or_kill(child: &mut Child, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Counts this process's fdatasync and fsync calls with `perf stat` on the syscall
/// tracepoints (in-kernel counting, no per-call stop). Absent if perf cannot attach.
pub struct SyncCounter {
    child: Child,
}

/// Calls counted by [`SyncCounter`].
#[derive(Clone, Copy, Debug)]
pub struct SyncCounts {
    pub fdatasync: u64,
    pub fsync: u64,
}

impl SyncCounter {
    pub fn start() -> Option<SyncCounter> {
        let perf = which("perf")?;
        let child = Command::new(perf)
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync",
                "-p",
            ])
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // perf needs a moment to open its counters on every thread.
        std::thread::sleep(std::time::Duration::from_millis(800));
        let mut c = SyncCounter { child };
        match c.child.try_wait() {
            Ok(None) => Some(c),
            _ => {
                c.stop();
                None
            }
        }
    }

    /// Stops perf and reads its counts; None if it reported none.
    pub fn stop(mut self) -> Option<SyncCounts> {
        signal(self.child.id(), libc::SIGINT);
        let _ = wait_or_kill(&mut self.child, 10);
        let mut err = String::new();
        self.child.stderr.take()?.read_to_string(&mut err).ok()?;
        let count = |event: &str| -> Option<u64> {
            err.lines()
                .find(|l| l.contains(event))
                .and_then(|l| l.split(',').next()?.trim().parse().ok())
        };
        Some(SyncCounts {
            fdatasync: count("sys_enter_fdatasync")?,
            fsync: count("sys_enter_fsync")?,
        })
    }
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
