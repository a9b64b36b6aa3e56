//! The file-operations seam tests inject disk faults through; a no-op unless the crate is built
//! with the `fault-injection` feature (only its own tests enable it).
//!
//! A fault applies to every path under a prefix (a volume): `WriteEio` fails writes and file
//! or directory creation with EIO, `SyncEio` fails `fdatasync`/directory fsync with EIO (as a
//! disk losing cached pages does), `ReadOnly` fails writes and creation with EROFS (a
//! filesystem remounted read-only after errors). A vanished volume needs no seam: tests
//! unmount or remove the real directory.
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
    /// fdatasync / fsync.
    Sync,
}

/// A fault to inject.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    WriteEio,
    SyncEio,
    ReadOnly,
}

#[cfg(feature = "fault-injection")]
mod plan {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Mutex;

    static PLAN: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

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
    }

    pub(crate) fn check(path: &Path, op: Op) -> io::Result<()> {
        let plan = PLAN.lock().unwrap_or_else(|p| p.into_inner());
        for (prefix, fault) in plan.iter() {
            if !path.starts_with(prefix) {
                continue;
            }
            let errno = match (fault, op) {
                (Fault::WriteEio, Op::Write) | (Fault::SyncEio, Op::Sync) => libc::EIO,
                (Fault::ReadOnly, Op::Write) => libc::EROFS,
                _ => continue,
            };
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
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
