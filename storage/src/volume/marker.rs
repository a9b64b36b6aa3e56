//! The `.understudy-volume` marker: proves a directory is the volume the catalog thinks it is,
//! and carries the `flock` that keeps a second process off it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

pub const MARKER_NAME: &str = ".understudy-volume";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub uuid: String,
    pub server_name: String,
    /// RFC 3339.
    pub created: String,
}

pub fn marker_path(volume: &Path) -> PathBuf {
    volume.join(MARKER_NAME)
}

/// Reads the marker; None if there is none.
pub fn read(volume: &Path) -> Result<Option<Marker>> {
    let path = marker_path(volume);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading volume marker", &path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::VolumeMarkerInvalid {
            path: volume.to_path_buf(),
            marker: path,
            reason: e.to_string(),
        })
}

/// Writes a new marker atomically (temporary file, fsync, rename, fsync of the directory).
pub fn create(volume: &Path, uuid: &str, server_name: &str) -> Result<Marker> {
    let marker = Marker {
        uuid: uuid.to_owned(),
        server_name: server_name.to_owned(),
        created: jiff::Timestamp::now().to_string(),
    };
    let path = marker_path(volume);
    let tmp = volume.join(format!("{MARKER_NAME}.tmp"));
    let body = serde_json::to_vec_pretty(&marker)
        .map_err(|e| Error::Config(format!("serializing marker: {e}")))?;
    (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        fsutil::fsync_dir(volume)
    })()
    .map_err(|e| Error::io("writing volume marker", &path, e))?;
    Ok(marker)
}

/// Opens the marker and takes an exclusive `flock` on it, held as long as the file stays open.
pub fn lock(volume: &Path) -> Result<File> {
    let path = marker_path(volume);
    let f = File::open(&path).map_err(|e| Error::io("opening volume marker", &path, e))?;
    match fsutil::try_lock_exclusive(&f) {
        Ok(true) => Ok(f),
        Ok(false) => Err(Error::VolumeLocked {
            path: volume.to_path_buf(),
            marker: path,
        }),
        Err(e) => Err(Error::io("locking volume marker", &path, e)),
    }
}
