//! Small filesystem helpers: directory fsync, tracked directory creation, vectored writes,
//! statvfs, random ids; and the file-operations seam tests inject faults through (`faults`).

pub mod faults;

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};

/// Makes a directory's entries durable (new or removed files/subdirectories in it).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    faults::check(dir, faults::Op::DirSync)?;
    File::open(dir)?.sync_all()
}

/// `fdatasync` of a segment file (through the fault seam).
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    faults::check(path, faults::Op::Sync)?;
    file.sync_data()
}

/// Writes every byte of every slice to the segment file at `path` (through the fault seam).
pub fn write_segment(file: &File, path: &Path, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    faults::check(path, faults::Op::Write)?;
    write_all_vectored(file, bufs)
}

/// Creates `dir` and any missing parents below `root` (which must exist), returning the
/// directories whose entries changed (the parent of each created directory), so the caller
/// can fsync them before relying on the new entries.
pub fn create_dirs_tracked(root: &Path, dir: &Path) -> io::Result<Vec<PathBuf>> {
    faults::check(dir, faults::Op::Write)?;
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "directory outside its volume"))?;
    let mut changed = Vec::new();
    let mut cur = root.to_path_buf();
    for part in rel.iter() {
        let parent = cur.clone();
        cur.push(part);
        match std::fs::create_dir(&cur) {
            Ok(()) => changed.push(parent),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

/// Writes every byte of every slice, without copying them into one buffer.
pub fn write_all_vectored(mut w: impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    // Skip leading empty slices so a zero-length write is never mistaken for "no progress".
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A random (version 4) UUID string from the kernel's CSPRNG.
pub fn random_uuid() -> io::Result<String> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Takes an exclusive, non-blocking `flock` on an open file. `Ok(false)` if someone else holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a valid, open descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Free bytes available to an unprivileged user on the filesystem holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = statvfs(path)?;
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Total bytes of the filesystem holding `path` (statvfs `f_blocks`).
pub fn fs_bytes(path: &Path) -> io::Result<u64> {
    let st = statvfs(path)?;
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs writes into the zeroed struct; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// (device, inode) of an open file.
pub fn file_id(f: &File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// True for "the filesystem is full" (ENOSPC, EDQUOT): retention can help, the disk is fine.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, b);
    }

    #[test]
    fn tracked_dirs() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        let changed = create_dirs_tracked(t.path(), &d).unwrap();
        assert_eq!(
            changed,
            vec![
                t.path().to_path_buf(),
                t.path().join("a"),
                t.path().join("a/b")
            ]
        );
        assert!(create_dirs_tracked(t.path(), &d).unwrap().is_empty());
    }

    #[test]
    fn vectored_writes_everything() {
        let mut out = Vec::new();
        let a = vec![1u8; 10];
        let b: Vec<u8> = vec![];
        let c = vec![2u8; 5000];
        write_all_vectored(
            &mut out,
            &mut [IoSlice::new(&b), IoSlice::new(&a), IoSlice::new(&c)],
        )
        .unwrap();
        assert_eq!(out.len(), 5010);
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }
}
