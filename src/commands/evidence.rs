//! Signed evidence exports: a manifest beside the MP4 (what it is, where from, its SHA-256)
//! and a detached Ed25519 signature of the manifest by this box's key, kept in `state_dir`.
//! `understudy verify FILE.mp4` checks both offline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CmdResult;

/// The key's file name in `state_dir` (32 random bytes, mode 0600).
pub const KEY_FILE: &str = "export-signing.key";
const FORMAT: &str = "understudy-export-manifest/1";

/// What a signed export states.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    /// The MP4's file name (the manifest sits beside it).
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub box_name: String,
    pub channel: u32,
    /// Who the channel records for ("local" or main names), from the config.
    pub recorded_for: Vec<String>,
    pub requested_from: String,
    pub requested_to: String,
    /// First and last frame actually in the file.
    pub start: String,
    pub end: String,
    pub frames: u64,
    pub exported_at: String,
    /// Who exported: the API user for `play.mp4?sign=1`, the operating-system user running
    /// `understudy export` for the CLI.
    pub user: Option<String>,
    /// The camera(s) that record onto the channel, from the config (no credentials).
    #[serde(default)]
    pub cameras: Vec<ManifestCamera>,
    /// The `ETag` of the virtual file `play.mp4` served (API exports): a download with this
    /// validator is the signed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Ed25519 public key (hex) that signed this manifest.
    pub public_key: String,
}

/// A camera in a manifest: who it belongs to, its channel there, and where it was reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestCamera {
    /// The camera's name or `owner/channel` label.
    pub label: String,
    /// `local` (this box's own camera) or the main recorder it stands in for.
    pub owner: String,
    /// Its channel on the owner.
    pub source_channel: u32,
    /// `host:port` of its stream URL (no user, password, path or query).
    pub host: String,
}

/// The cameras the config puts on `channel`.
pub fn cameras_on(cfg: &crate::config::Config, channel: u32) -> Vec<ManifestCamera> {
    cfg.cameras
        .iter()
        .chain(cfg.mains.iter().flat_map(|m| m.cameras.iter()))
        .filter(|c| c.channel == channel)
        .map(|c| ManifestCamera {
            label: c.label.clone(),
            owner: c.owner.clone(),
            source_channel: c.source_channel,
            host: match (c.url.host_str(), c.url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => String::new(),
            },
        })
        .collect()
}

/// The operating-system user running this process (the account name, else `uid N`).
pub fn os_user() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into the buffers given.
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated, while `buf` lives.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned();
        if !name.is_empty() {
            return name;
        }
    }
    format!("uid {uid}")
}

/// `FILE.mp4` → `FILE.mp4.manifest.json` and `FILE.mp4.sig`.
pub fn paths(mp4: &Path) -> (PathBuf, PathBuf) {
    let name = mp4.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    (mp4.with_file_name(format!("{name}.manifest.json")), mp4.with_file_name(format!("{name}.sig")))
}

/// This box's signing key, made on first use.
pub fn box_key(state_dir: &Path) -> Result<SigningKey, String> {
    let path = state_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            let seed: [u8; 32] = b.try_into().map_err(|_| format!("{}: not a 32-byte key", path.display()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            std::fs::create_dir_all(state_dir).map_err(|e| format!("creating {}: {e}", state_dir.display()))?;
            let mut f = std::fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
            match f.write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(&seed).and_then(|_| file.sync_all()).map_err(|e| format!("writing {}: {e}", path.display()))?;
                    tracing::info!(path = %path.display(), "made this box's export signing key");
                    Ok(SigningKey::from_bytes(&seed))
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => box_key(state_dir),
                Err(e) => Err(format!("creating {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// A short fingerprint of a public key, for people to compare.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    hex::encode(&d[..8])
}

/// SHA-256 (hex) and length of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Writes the manifest and its signature beside `mp4` (whose hash and length are filled in).
pub fn sign(mp4: &Path, key: &SigningKey, mut m: Manifest) -> Result<PathBuf, String> {
    let (sha256, bytes) = hash_file(mp4)?;
    m.file = mp4.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    m.sha256 = sha256;
    m.bytes = bytes;
    let (text, sig) = seal(key, m)?;
    let (mpath, spath) = paths(mp4);
    std::fs::write(&mpath, &text).map_err(|e| format!("writing {}: {e}", mpath.display()))?;
    std::fs::write(&spath, sig).map_err(|e| format!("writing {}: {e}", spath.display()))?;
    Ok(mpath)
}

/// The manifest's exact bytes (to save as `FILE.mp4.manifest.json`) and its signature file's
/// text (`FILE.mp4.sig`), for a manifest whose file, length and hash are filled in.
pub fn seal(key: &SigningKey, mut m: Manifest) -> Result<(Vec<u8>, String), String> {
    m.format = FORMAT.to_owned();
    m.public_key = hex::encode(key.verifying_key().as_bytes());
    let text = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    let sig = key.sign(&text);
    Ok((text, format!("{}\n", hex::encode(sig.to_bytes()))))
}

/// Checks `mp4` against its manifest and signature; on success, what they prove.
pub fn verify(mp4: &Path, expected_key: Option<&str>) -> Result<String, String> {
    let (mpath, spath) = paths(mp4);
    let text = std::fs::read(&mpath).map_err(|e| format!("reading the manifest {}: {e}", mpath.display()))?;
    let sig_hex = std::fs::read_to_string(&spath).map_err(|e| format!("reading the signature {}: {e}", spath.display()))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| format!("{}: not an export manifest: {e}", mpath.display()))?;
    if m.format != FORMAT {
        return Err(format!("{}: format {:?}, expected {FORMAT:?}", mpath.display(), m.format));
    }
    let key_bytes: [u8; 32] = hex::decode(&m.public_key).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| format!("{}: public_key is not 32 hex bytes", mpath.display()))?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| format!("{}: public_key: {e}", mpath.display()))?;
    let sig_bytes: [u8; 64] = hex::decode(sig_hex.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| format!("{}: not a 64-byte hex signature", spath.display()))?;
    key.verify(&text, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| format!("REJECTED: the signature does not match the manifest {} (the manifest was changed, or signed by another key)", mpath.display()))?;
    if let Some(want) = expected_key {
        let want = want.trim();
        if want != m.public_key && want != fingerprint(&key) {
            return Err(format!("REJECTED: signed by key {} (fingerprint {}), not the expected {want}", m.public_key, fingerprint(&key)));
        }
    }
    let (sha256, bytes) = hash_file(mp4)?;
    if sha256 != m.sha256 || bytes != m.bytes {
        return Err(format!(
            "REJECTED: {} is not the file the manifest describes (SHA-256 {sha256}, {bytes} bytes; manifest says {}, {} bytes)",
            mp4.display(),
            m.sha256,
            m.bytes
        ));
    }
    Ok(format!(
        "OK: {} is byte for byte the file box {:?} (key fingerprint {}) exported at {}: channel {} ({}), {} → {}, {} frames.\n\
         This proves the file and manifest are unchanged since that key signed them. It does not prove the box's clock was right, \
         nor who held the key: compare the fingerprint with the box's (`understudy export --sign` prints it), or pass --key.",
        m.file,
        m.box_name,
        fingerprint(&key),
        m.exported_at,
        m.channel,
        m.recorded_for.join(", "),
        m.start,
        m.end,
        m.frames
    ))
}

/// `understudy verify FILE.mp4 [--key HEX]`.
pub async fn run(args: crate::cli::VerifyArgs) -> CmdResult {
    let file = args.file.clone();
    let report = tokio::task::spawn_blocking(move || verify(&file, args.key.as_deref())).await??;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_reject_changes() {
        let dir = tempfile::tempdir().unwrap();
        let key = box_key(dir.path()).unwrap();
        assert_eq!(box_key(dir.path()).unwrap().to_bytes(), key.to_bytes(), "the key is kept");
        let mp4 = dir.path().join("a.mp4");
        std::fs::write(&mp4, b"not really an mp4").unwrap();
        let m = Manifest {
            format: String::new(), file: String::new(), bytes: 0, sha256: String::new(), box_name: "b".into(), channel: 1,
            recorded_for: vec!["local".into()], requested_from: "x".into(), requested_to: "y".into(), start: "s".into(),
            end: "e".into(), frames: 3, exported_at: "t".into(), user: Some(os_user()), public_key: String::new(),
            cameras: vec![ManifestCamera { label: "door".into(), owner: "local".into(), source_channel: 1, host: "10.0.0.5:554".into() }],
            etag: None,
        };
        sign(&mp4, &key, m).unwrap();
        assert!(verify(&mp4, None).unwrap().starts_with("OK"));
        assert!(verify(&mp4, Some(&fingerprint(&key.verifying_key()))).is_ok());
        assert!(verify(&mp4, Some("00")).is_err());
        let (mpath, _) = paths(&mp4);
        let text = std::fs::read_to_string(&mpath).unwrap();
        assert!(text.contains("\"door\"") && text.contains("10.0.0.5:554") && !text.contains("etag"), "{text}");
        // A manifest from before cameras were listed still reads.
        let old: Manifest = serde_json::from_str(&text.replace("\"cameras\"", "\"x_cameras\"")).unwrap();
        assert!(old.cameras.is_empty());
        std::fs::write(&mp4, b"not really an mp5").unwrap();
        assert!(verify(&mp4, None).unwrap_err().contains("not the file"));
    }

    #[test]
    fn os_user_names_this_account() {
        let me = os_user();
        // The account name when it has one (as `id -un` says), else the uid.
        let id = std::process::Command::new("id").arg("-un").output().unwrap();
        let want = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        if id.status.success() && !want.is_empty() {
            assert_eq!(me, want);
        } else {
            assert!(me.starts_with("uid "), "{me}");
        }
    }
}
