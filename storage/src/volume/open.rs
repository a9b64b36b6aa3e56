//! Opening a configured volume: checking its marker against the catalog, creating the marker
//! on first use, and taking the exclusive lock.

use super::{marker, Volume};
use crate::catalog::Catalog;
use crate::config::VolumeConfig;
use crate::error::{Error, Result};
use crate::fsutil;

fn path_str(cfg: &VolumeConfig) -> Result<&str> {
    cfg.path.to_str().ok_or_else(|| {
        Error::Config(format!(
            "volume path {} is not valid UTF-8",
            cfg.path.display()
        ))
    })
}

/// Opens one volume. Refuses a directory that lost its marker while the catalog knows
/// footage there (unmounted disk: we'd be writing to the root filesystem), a marker that
/// belongs to a different volume (swapped disk), and a volume another process holds.
pub(crate) fn open_volume(
    cfg: &VolumeConfig,
    catalog: &Catalog,
    server_name: &str,
) -> Result<Volume> {
    let path = &cfg.path;
    let path_s = path_str(cfg)?;
    let by_path = catalog.volume_by_path(path_s)?;
    let known_segments = match &by_path {
        Some(row) => catalog.segment_count(row.id)?,
        None => 0,
    };

    let exists = path
        .try_exists()
        .map_err(|e| Error::io("checking volume", path, e))?;
    if !exists {
        // A volume the catalog knows whose directory is gone: its disk is not mounted. Never
        // re-create it (that would write into the mount point's parent filesystem).
        if known_segments > 0 || by_path.is_some() {
            return Err(Error::VolumeMarkerMissing {
                path: path.clone(),
                segments: known_segments,
            });
        }
        std::fs::create_dir_all(path)
            .map_err(|e| Error::io("creating volume directory", path, e))?;
        tracing::info!(volume = %path.display(), "created volume directory");
    } else if !path.is_dir() {
        return Err(Error::Config(format!(
            "volume {} is not a directory",
            path.display()
        )));
    }

    let uuid = match marker::read(path)? {
        None => {
            if known_segments > 0 || by_path.is_some() {
                return Err(Error::VolumeMarkerMissing {
                    path: path.clone(),
                    segments: known_segments,
                });
            }
            // First use (the catalog doesn't know this path).
            let uuid = fsutil::random_uuid()
                .map_err(|e| Error::io("generating volume uuid", path, e))?;
            marker::create(path, &uuid, server_name)?;
            tracing::info!(volume = %path.display(), %uuid, "created volume marker");
            uuid
        }
        Some(m) => {
            if m.server_name != server_name {
                tracing::warn!(volume = %path.display(), marker_server = %m.server_name, server = %server_name,
                    "volume marker names another server; using it anyway");
            }
            if let Some(row) = &by_path {
                if row.uuid != m.uuid && known_segments > 0 {
                    return Err(Error::VolumeMarkerMismatch {
                        path: path.clone(),
                        found: m.uuid,
                        expected: row.uuid.clone(),
                    });
                }
            }
            m.uuid
        }
    };

    // Lock before touching the catalog's volume rows, so a second process changes nothing.
    let lock = marker::lock(path)?;

    if let Some(row) = &by_path {
        if row.uuid != uuid {
            // Only reachable when the stale row has no segments (checked above).
            catalog.delete_empty_volume(row.id)?;
        }
    }
    let id = match catalog.volume_by_uuid(&uuid)? {
        Some(row) => {
            if row.path != path_s {
                tracing::info!(volume = %path.display(), old_path = %row.path, %uuid, "volume moved");
                catalog.update_volume_path(row.id, path_s)?;
            }
            row.id
        }
        None => catalog.insert_volume(&uuid, path_s, server_name)?,
    };

    Ok(Volume::with(id, uuid, cfg, Some(lock)))
}
