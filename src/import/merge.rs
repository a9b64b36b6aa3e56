//! Merging imported cameras into the config file with `toml_edit`: the `[[main]]` named on the
//! command line is created or updated, its `[[main.camera]]` entries matched to what was
//! imported (by URL, then by channel), and every other line, comment and hand edit kept; and
//! writing the result without changing who may read the file.

use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

use super::Imported;

/// One difference between the config and the import, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    MainAdded,
    Added { channel: u32, url: String },
    Removed { channel: u32, url: String },
    Moved { from: u32, to: u32, url: String },
    UrlChanged { channel: u32, old: String, new: String },
    Flagged { channel: u32, problem: String },
    Unflagged { channel: u32 },
    Skipped { channel: u32, problem: String },
    /// The channel's URL moved to another host but the entry's hand-set (or earlier imported)
    /// username/password were kept: they were the old host's.
    CredentialsKept { channel: u32, old_host: String, new_host: String },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::MainAdded => write!(f, "+ new [[main]]"),
            Change::Added { channel, url } => write!(f, "+ channel {channel}: {url}"),
            Change::Removed { channel, url } => write!(f, "- channel {channel}: {url} (no longer on the main)"),
            Change::Moved { from, to, url } => write!(f, "~ channel {from} → {to}: {url} (moved)"),
            Change::UrlChanged { channel, old, new } => write!(f, "~ channel {channel}: {old} → {new}"),
            Change::Flagged { channel, problem } => write!(f, "! channel {channel}: {problem}"),
            Change::Unflagged { channel } => write!(f, "✓ channel {channel}: problem resolved"),
            Change::Skipped { channel, problem } => write!(f, "✗ channel {channel}: not written: {problem}"),
            Change::CredentialsKept { channel, old_host, new_host } => {
                write!(f, "! channel {channel}: the camera moved from {old_host} to {new_host}; the username/password kept in its entry were set for {old_host}: check them")
            }
        }
    }
}

/// The identity of a camera: its URL without credentials.
fn key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

fn int(t: &Table, k: &str) -> Option<u32> {
    t.get(k).and_then(Item::as_integer).and_then(|i| u32::try_from(i).ok())
}

fn string<'a>(t: &'a Table, k: &str) -> Option<&'a str> {
    t.get(k).and_then(Item::as_str)
}

/// Merges `cams` into `text` for main `name`; `probe` is used only when the main is new.
/// Returns the new text and the changes (empty when nothing changed).
pub fn merge(text: &str, name: &str, probe: Option<&str>, cams: &[Imported]) -> Result<(String, Vec<Change>), String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("cannot parse the config as TOML: {e}"))?;
    let mut changes = Vec::new();
    let mains = doc.entry("main").or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let Some(mains) = mains.as_array_of_tables_mut() else { return Err("`main` is not an array of tables ([[main]])".to_owned()) };
    let found = mains.iter().position(|t| string(t, "name") == Some(name));
    let idx = match found {
        Some(i) => i,
        None => {
            let Some(probe) = probe else {
                return Err(format!("main {name:?} is not in the config yet and its address is not known from the source: give --probe (e.g. tcp://HOST:PORT)"));
            };
            let mut t = Table::new();
            t.insert("name", value(name));
            t.insert("probe", value(probe));
            t.decor_mut().set_prefix("\n# Imported by `understudy import`; re-run it to see the main's changes.\n");
            mains.push(t);
            changes.push(Change::MainAdded);
            mains.len() - 1
        }
    };
    let Some(main) = mains.get_mut(idx) else { return Err("internal: main vanished".to_owned()) };
    let cams_item = main.entry("camera").or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let Some(existing) = cams_item.as_array_of_tables_mut() else { return Err(format!("main {name:?}: `camera` is not an array of tables ([[main.camera]])")) };

    // Match each import to an existing entry: same URL first (a camera that moved channel),
    // then same channel (a camera whose URL changed).
    let n = existing.len();
    let old: Vec<(Option<u32>, String)> = existing.iter().map(|t| (int(t, "channel"), string(t, "url").map(key).unwrap_or_default())).collect();
    let mut taken = vec![false; n];
    let mut target: Vec<Option<usize>> = vec![None; cams.len()];
    for (ci, c) in cams.iter().enumerate() {
        let Some(u) = &c.url else { continue };
        let k = key(u.as_str());
        if let Some(j) = (0..n).find(|&j| !taken[j] && old[j].1 == k) {
            taken[j] = true;
            target[ci] = Some(j);
        }
    }
    // Then by channel: cameras with a URL first, then those stage B could not resolve (no URL
    // this time: an ONVIF timeout, a refused password), whose entries must stay, not be removed.
    for with_url in [true, false] {
        for (ci, c) in cams.iter().enumerate() {
            if target[ci].is_some() || c.url.is_some() != with_url {
                continue;
            }
            if let Some(j) = (0..n).find(|&j| !taken[j] && old[j].0 == Some(c.channel)) {
                taken[j] = true;
                target[ci] = Some(j);
            }
        }
    }
    for (ci, c) in cams.iter().enumerate() {
        let Some(u) = &c.url else {
            let problem = c.problems.join("; ");
            match target[ci].and_then(|j| existing.get_mut(j)) {
                // Still on the main but unresolved this time: the entry stays as it is (URL,
                // credentials, hand edits); only its problem says why.
                Some(t) => {
                    let problem = if problem.is_empty() { "the import found no stream URL this time".to_owned() } else { problem };
                    if string(t, "problem") != Some(problem.as_str()) {
                        t["problem"] = value(problem.as_str());
                        changes.push(Change::Flagged { channel: c.channel, problem: format!("{problem} (entry kept as it was)") });
                    }
                }
                None => changes.push(Change::Skipped { channel: c.channel, problem }),
            }
            continue;
        };
        let url = u.to_string();
        let problem = (!c.problems.is_empty()).then(|| c.problems.join("; "));
        match target[ci] {
            Some(j) => {
                let Some(t) = existing.get_mut(j) else { continue };
                if old[j].0 != Some(c.channel) {
                    changes.push(Change::Moved { from: old[j].0.unwrap_or(0), to: c.channel, url: url.clone() });
                    t["channel"] = value(i64::from(c.channel));
                }
                if old[j].1 != key(&url) {
                    changes.push(Change::UrlChanged { channel: c.channel, old: old[j].1.clone(), new: url.clone() });
                    t["url"] = value(url.as_str());
                    let old_host = url::Url::parse(&old[j].1).ok().and_then(|o| o.host_str().map(str::to_owned));
                    let new_host = u.host_str().map(str::to_owned);
                    if old_host != new_host && (t.contains_key("username") || t.contains_key("password")) {
                        changes.push(Change::CredentialsKept { channel: c.channel, old_host: old_host.unwrap_or_default(), new_host: new_host.unwrap_or_default() });
                    }
                }
                // Hand-set credentials stay; only what is missing is filled in.
                if t.get("username").is_none() {
                    if let Some(user) = &c.username {
                        t["username"] = value(user.as_str());
                    }
                }
                if t.get("password").is_none() {
                    if let Some(p) = &c.password {
                        t["password"] = value(p.expose());
                    }
                }
                let had = string(t, "problem").map(str::to_owned);
                match (&problem, had) {
                    (Some(p), had) if had.as_deref() != Some(p.as_str()) => {
                        t["problem"] = value(p.as_str());
                        changes.push(Change::Flagged { channel: c.channel, problem: p.clone() });
                    }
                    (None, Some(_)) => {
                        t.remove("problem");
                        changes.push(Change::Unflagged { channel: c.channel });
                    }
                    _ => {}
                }
            }
            None => {
                let mut t = Table::new();
                t.insert("channel", value(i64::from(c.channel)));
                t.insert("url", value(url.as_str()));
                if let Some(nm) = &c.name {
                    t.insert("name", value(nm.as_str()));
                }
                if let Some(user) = &c.username {
                    t.insert("username", value(user.as_str()));
                }
                if let Some(p) = &c.password {
                    t.insert("password", value(p.expose()));
                }
                changes.push(Change::Added { channel: c.channel, url: url.clone() });
                if let Some(p) = &problem {
                    t.insert("problem", value(p.as_str()));
                    changes.push(Change::Flagged { channel: c.channel, problem: p.clone() });
                }
                existing.push(t);
            }
        }
    }
    // Entries no import matched: the camera left the main.
    for j in (0..n).rev() {
        if !taken[j] {
            changes.push(Change::Removed { channel: old[j].0.unwrap_or(0), url: old[j].1.clone() });
            existing.remove(j);
        }
    }
    changes.sort_by_key(|c| match c {
        Change::MainAdded => 0,
        Change::Added { channel, .. }
        | Change::Removed { channel, .. }
        | Change::UrlChanged { channel, .. }
        | Change::Flagged { channel, .. }
        | Change::Unflagged { channel }
        | Change::Skipped { channel, .. }
        | Change::CredentialsKept { channel, .. } => *channel,
        Change::Moved { to, .. } => *to,
    });
    Ok((doc.to_string(), changes))
}

/// The mode a rewritten config gets: owner read/write, group read when the old file had it
/// (the Debian package keeps it `root:understudy 0640` for the service to read), never any
/// access for others; a new file is 0600 (it holds camera passwords).
pub fn private_mode(old: Option<u32>) -> u32 {
    0o600 | old.map_or(0, |m| m & 0o040)
}

/// Writes `text` to `path` atomically (a new file renamed over the old one). The new file keeps
/// the old one's owner and group and its group-read bit (see [`private_mode`]); if the owner
/// cannot be kept (not root), nothing is written. Returns the mode written.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<u32> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let old = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mode = private_mode(old.as_ref().map(|m| m.mode()));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".{}.import-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("config"), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        if let Some(m) = &old {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot keep the file's owner {}:{} ({e}); nothing written: run the import as root or as that user", m.uid(), m.gid()))
            })?;
        }
        // After the chown (which may clear mode bits), and not subject to the umask.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(ch: u32, url: &str) -> Imported {
        Imported { channel: ch, name: None, url: Some(url::Url::parse(url).unwrap()), username: Some("admin".into()), password: Some(crate::config::Secret::new("pw")), problems: vec![], described: None }
    }

    const BASE: &str = r#"# site config
[server]
name = "fo"   # the box

[[main]]
name = "nvr-a"
probe = "tcp://10.0.0.5:80"
# keep me
fail_after = 5

[[main.camera]]
channel = 1
url = "rtsp://10.0.1.11/s"
name = "lobby"  # hand edit
transport = "udp"

[[main.camera]]
channel = 2
url = "rtsp://10.0.1.12/s"

[[webhook]]
url = "http://x/"
"#;

    #[test]
    fn keeps_comments_and_hand_edits_and_reports_each_change() {
        let cams = [cam(1, "rtsp://10.0.1.11/s"), cam(3, "rtsp://10.0.1.12/s"), cam(4, "rtsp://10.0.1.14/s")];
        let (out, changes) = merge(BASE, "nvr-a", None, &cams).unwrap();
        for keep in ["# site config", "# the box", "# keep me", "fail_after = 5", "# hand edit", "transport = \"udp\"", "[[webhook]]"] {
            assert!(out.contains(keep), "{keep} lost:\n{out}");
        }
        assert!(changes.contains(&Change::Moved { from: 2, to: 3, url: "rtsp://10.0.1.12/s".into() }), "{changes:?}");
        assert!(changes.contains(&Change::Added { channel: 4, url: "rtsp://10.0.1.14/s".into() }), "{changes:?}");
        assert_eq!(changes.len(), 2, "{changes:?}");
        // Running it again changes nothing.
        let (again, changes) = merge(&out, "nvr-a", None, &cams).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(again, out);
        // Losing a camera removes it.
        let (_, changes) = merge(&out, "nvr-a", None, &cams[..2]).unwrap();
        assert_eq!(changes, vec![Change::Removed { channel: 4, url: "rtsp://10.0.1.14/s".into() }]);
    }

    #[test]
    fn a_new_main_needs_a_probe() {
        assert!(merge(BASE, "nvr-b", None, &[cam(1, "rtsp://h/1")]).unwrap_err().contains("--probe"));
        let (out, ch) = merge(BASE, "nvr-b", Some("tcp://10.0.0.6:80"), &[cam(1, "rtsp://h/1")]).unwrap();
        assert_eq!(ch[0], Change::MainAdded);
        assert!(out.contains("name = \"nvr-b\""));
        assert!(out.contains("[[main.camera]]"));
    }

    #[test]
    fn a_camera_unresolved_this_time_keeps_its_entry_and_is_only_flagged() {
        let mut failed = cam(2, "rtsp://x/");
        failed.url = None;
        failed.problems = vec!["ONVIF at 10.0.1.12:80 is not reachable from this box: timed out".into()];
        let cams = [cam(1, "rtsp://10.0.1.11/s"), failed.clone()];
        let edited = BASE.replace("url = \"rtsp://10.0.1.12/s\"", "url = \"rtsp://10.0.1.12/s\"\n# dock camera\npassword = \"hand-set\"\ntransport = \"tcp\"");
        let (out, changes) = merge(&edited, "nvr-a", None, &cams).unwrap();
        assert!(!changes.iter().any(|c| matches!(c, Change::Removed { .. } | Change::Skipped { .. })), "{changes:?}");
        assert!(matches!(&changes[..], [Change::Flagged { channel: 2, problem }] if problem.contains("not reachable")), "{changes:?}");
        for keep in ["url = \"rtsp://10.0.1.12/s\"", "# dock camera", "password = \"hand-set\"", "transport = \"tcp\"", "problem = \"ONVIF at 10.0.1.12:80"] {
            assert!(out.contains(keep), "{keep} lost:\n{out}");
        }
        // The same failure again: nothing to report; resolved later: the flag goes, the rest stays.
        let (again, changes) = merge(&out, "nvr-a", None, &cams).unwrap();
        assert!(changes.is_empty() && again == out, "{changes:?}");
        let (fixed, changes) = merge(&out, "nvr-a", None, &[cam(1, "rtsp://10.0.1.11/s"), cam(2, "rtsp://10.0.1.12/s")]).unwrap();
        assert_eq!(changes, vec![Change::Unflagged { channel: 2 }]);
        assert!(!fixed.contains("problem") && fixed.contains("password = \"hand-set\""), "{fixed}");
        // A camera with no URL and no entry is still only reported, not written.
        let mut new = failed;
        new.channel = 7;
        let (_, changes) = merge(BASE, "nvr-a", None, &[cam(1, "rtsp://10.0.1.11/s"), cam(2, "rtsp://10.0.1.12/s"), new]).unwrap();
        assert!(matches!(&changes[..], [Change::Skipped { channel: 7, .. }]), "{changes:?}");
    }

    #[test]
    fn credentials_kept_across_a_change_of_host_are_reported() {
        let edited = BASE.replace("url = \"rtsp://10.0.1.12/s\"", "url = \"rtsp://10.0.1.12/s\"\nusername = \"dock\"\npassword = \"hand-set\"");
        let (out, changes) = merge(&edited, "nvr-a", None, &[cam(1, "rtsp://10.0.1.11/s"), cam(2, "rtsp://10.0.1.99/s")]).unwrap();
        assert!(changes.contains(&Change::CredentialsKept { channel: 2, old_host: "10.0.1.12".into(), new_host: "10.0.1.99".into() }), "{changes:?}");
        assert!(changes.iter().any(|c| c.to_string().contains("set for 10.0.1.12: check them")), "{changes:?}");
        assert!(out.contains("password = \"hand-set\""), "{out}");
        // Same host, new path: nothing to say about credentials.
        let (_, changes) = merge(&edited, "nvr-a", None, &[cam(1, "rtsp://10.0.1.11/s"), cam(2, "rtsp://10.0.1.12/t")]).unwrap();
        assert!(!changes.iter().any(|c| matches!(c, Change::CredentialsKept { .. })), "{changes:?}");
    }

    #[test]
    fn a_rewritten_config_keeps_its_owner_group_and_group_read() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("understudy.toml");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // New file: 0600.
        assert_eq!(write_private(&path, "a = 1\n").unwrap(), 0o600);
        assert_eq!(mode(&path), 0o600);
        // root:understudy 0640 as the Debian package keeps it (tests run as root, so chown works).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let chowned = std::os::unix::fs::chown(&path, Some(4243), Some(4242)).is_ok();
        // SAFETY: geteuid has no preconditions.
        assert!(chowned || unsafe { libc::geteuid() } != 0, "root could not chown");
        assert_eq!(write_private(&path, "a = 2\n").unwrap(), 0o640);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.mode() & 0o7777, std::fs::read_to_string(&path).unwrap().as_str()), (0o640, "a = 2\n"));
        if chowned {
            assert_eq!((m.uid(), m.gid()), (4243, 4242), "owner or group changed");
        }
        // Never readable by others, whatever the old file allowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        write_private(&path, "a = 3\n").unwrap();
        assert_eq!(mode(&path), 0o640);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        write_private(&path, "a = 4\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left");
    }
}
