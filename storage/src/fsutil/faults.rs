//! The file-operations seam tests inject disk faults through; a no-op unless the crate is built
//! with the `fault-injection` feature (only its own tests enable it).
//!
//! A fault applies to every path under a prefix (a volume): `WriteEio` fails writes and file
//! or directory creation with EIO, `SyncEio` fails `fdatasync`/directory fsync with EIO (as a
//! disk losing cached pages does), `DirSyncEio` fails only directory fsyncs, `ReadOnly` fails
//! writes and creation with EROFS (a filesystem remounted read-only after errors).
//! `SyncEioDuringWrite` stages the race between a failed `fdatasync` and a fragment write: the
//! first `fdatasync` under the prefix waits (bounded) until a write has begun there, then
//! fails with EIO; that write waits until the failure is reported and a little longer, then
//! goes ahead (later syncs fail at once, later writes pass). A vanished volume needs no seam:
//! tests unmount or remove the real directory.
//!
//! A seam rather than an `LD_PRELOAD` shim: the storage tests run in-process, the seam names
//! exactly the operations that matter (fragment writes, `fdatasync`, directory fsync, file
//! creation) by path, and a shim would need a C build step plus fd-to-path tracking for
//! `writev`/`fdatasync`, with nothing more to show for it.

use std::io;
use std::path::Path;

/// Which kind of operation is being attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writing data, creating a file or directory.
    Write,
    /// fdatasync / fsync of a file.
    Sync,
    /// fsync of a directory (making new entries durable).
    DirSync,
}

/// A fault to inject.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    WriteEio,
    SyncEio,
    DirSyncEio,
    ReadOnly,
    SyncEioDuringWrite,
}

#[cfg(feature = "fault-injection")]
mod plan {
    use super::*;
    use std::path::PathBuf;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    static PLAN: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

    /// `SyncEioDuringWrite`'s meeting point, per prefix.
    #[derive(Default)]
    struct Meet {
        sync_waiting: bool,
        write_arrived: bool,
        failed: bool,
    }
    static MEET: Mutex<Vec<(PathBuf, Meet)>> = Mutex::new(Vec::new());
    static MEET_CHANGED: Condvar = Condvar::new();
    /// How long either side waits for the other.
    const MEET_WAIT: Duration = Duration::from_secs(5);
    /// How much longer the write waits after the failed sync, so the syncer acts on it first.
    const WRITE_AFTER_FAIL: Duration = Duration::from_millis(300);

    /// Waits on `MEET` until `done` holds for the prefix's entry, or `MEET_WAIT` passes.
    fn meet_wait(prefix: &Path, mut done: impl FnMut(&mut Meet) -> bool) {
        let deadline = Instant::now() + MEET_WAIT;
        let mut meets = MEET.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let m = match meets.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, m)) => m,
                None => {
                    meets.push((prefix.to_path_buf(), Meet::default()));
                    continue;
                }
            };
            let now = Instant::now();
            if done(m) || now >= deadline {
                MEET_CHANGED.notify_all();
                return;
            }
            meets = match MEET_CHANGED.wait_timeout(meets, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// The syncer's side: wait for a write to begin, then fail (at once, after the first time).
    fn meet_sync(prefix: &Path) -> io::Result<()> {
        let mut first = true;
        meet_wait(prefix, |m| {
            if m.failed {
                return true;
            }
            if first {
                m.sync_waiting = true;
                first = false;
                MEET_CHANGED.notify_all();
            }
            if m.write_arrived {
                m.failed = true;
            }
            m.failed
        });
        // Timed out without a write: fail anyway (a plain fsync EIO).
        meet_wait(prefix, |m| {
            m.failed = true;
            true
        });
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    /// The writer's side: when a sync is waiting, arrive, wait for its failure, then a little
    /// longer before writing.
    fn meet_write(prefix: &Path) {
        let mut arrived = false;
        meet_wait(prefix, |m| {
            if (m.failed && !arrived) || !m.sync_waiting {
                return true; // nothing staged (yet, or any more): a plain write
            }
            if !arrived {
                m.write_arrived = true;
                arrived = true;
                MEET_CHANGED.notify_all();
            }
            m.failed
        });
        if arrived {
            std::thread::sleep(WRITE_AFTER_FAIL);
        }
    }

    /// Makes `fault` apply to every path under `prefix` from now on.
    pub fn inject(prefix: &Path, fault: Fault) {
        PLAN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((prefix.to_path_buf(), fault));
    }

    /// Removes every fault under `prefix`.
    pub fn clear(prefix: &Path) {
        PLAN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _)| !p.starts_with(prefix));
        MEET.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _)| !p.starts_with(prefix));
    }

    pub(crate) fn check(path: &Path, op: Op) -> io::Result<()> {
        let staged = {
            let plan = PLAN.lock().unwrap_or_else(|p| p.into_inner());
            let mut staged = None;
            for (prefix, fault) in plan.iter() {
                if !path.starts_with(prefix) {
                    continue;
                }
                let errno = match (fault, op) {
                    (Fault::WriteEio, Op::Write)
                    | (Fault::SyncEio, Op::Sync | Op::DirSync)
                    | (Fault::DirSyncEio, Op::DirSync) => libc::EIO,
                    (Fault::ReadOnly, Op::Write) => libc::EROFS,
                    (Fault::SyncEioDuringWrite, Op::Sync | Op::Write) => {
                        staged = Some(prefix.clone());
                        break;
                    }
                    _ => continue,
                };
                return Err(io::Error::from_raw_os_error(errno));
            }
            staged
        };
        // Staged faults wait without holding the plan.
        match (staged, op) {
            (Some(prefix), Op::Sync) => meet_sync(&prefix),
            (Some(prefix), _) => {
                meet_write(&prefix);
                Ok(())
            }
            (None, _) => Ok(()),
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use plan::{clear, inject};
#[cfg(feature = "fault-injection")]
pub(crate) use plan::check;

/// Without the feature, no fault is ever injected.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn check(_path: &Path, _op: Op) -> io::Result<()> {
    Ok(())
}
