//! Merging imported cameras into the config file with `toml_edit`: the `[[main]]` named on the
//! command line is created or updated, its `[[main.camera]]` entries matched to what was
//! imported (by URL, then by channel), and every other line, comment and hand edit kept.

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
    for (ci, c) in cams.iter().enumerate() {
        if target[ci].is_some() || c.url.is_none() {
            continue;
        }
        if let Some(j) = (0..n).find(|&j| !taken[j] && old[j].0 == Some(c.channel)) {
            taken[j] = true;
            target[ci] = Some(j);
        }
    }
    for (ci, c) in cams.iter().enumerate() {
        let Some(u) = &c.url else {
            changes.push(Change::Skipped { channel: c.channel, problem: c.problems.join("; ") });
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
        Change::Added { channel, .. } | Change::Removed { channel, .. } | Change::UrlChanged { channel, .. } | Change::Flagged { channel, .. } | Change::Unflagged { channel } | Change::Skipped { channel, .. } => *channel,
        Change::Moved { to, .. } => *to,
    });
    Ok((doc.to_string(), changes))
}

/// Writes `text` to `path` atomically with mode 0600 (the file holds camera passwords).
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".{}.import-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("config"), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
}
