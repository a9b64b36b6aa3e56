//! Importing mains through the API: `GET /api/config/cameras` (this box's cameras for another
//! box importing it as a main: URLs and users, never passwords) and `POST /api/mains/import`
//! (an administrator's import into this box's config: preview, then `confirm: true` with the
//! preview's digest writes exactly what was previewed, or nothing).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::auth::record;
use super::{bad, ApiError, ApiState};
use crate::auth::{Principal, Role};
use crate::config::Secret;
use crate::import::understudy::Trust;
use crate::import::{self, merge, Credentials, Imported, Options, Source};

/// `GET /api/config/cameras`: every camera of the config on a channel the caller sees: its
/// channel, name, URL (without credentials), user and owner (`local` or the main's name).
/// Passwords never leave the box.
pub async fn cameras(State(st): State<ApiState>, Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    let cfg = &st.station.cfg;
    let all = cfg.cameras.iter().chain(cfg.mains.iter().flat_map(|m| &m.cameras));
    let list: Vec<_> = all
        .filter(|c| p.sees(c.channel))
        .map(|c| {
            let mut url = c.url.clone();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let named = c.label != format!("{}/{}", c.owner, c.source_channel);
            json!({
                "channel": c.channel, "source_channel": c.source_channel, "owner": c.owner,
                "name": named.then(|| c.label.clone()), "url": url.as_str(), "username": c.username,
                "password_set": c.password.is_some(),
            })
        })
        .collect();
    Json(json!({ "server": cfg.server.name, "cameras": list }))
}

/// The body of `POST /api/mains/import`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The `[[main]]` to create or update.
    main: String,
    /// `hikvision://HOST`, `dahua://HOST`, `understudy://HOST[:PORT]`, or `onvif://HOST …`
    /// (several, separated by spaces or commas).
    source: String,
    user: Option<String>,
    password: Option<Secret>,
    camera_user: Option<String>,
    camera_password: Option<Secret>,
    /// `understudy://`: an API token of the other box (else user and password log in).
    token: Option<Secret>,
    /// `understudy://`: the other box's certificate fingerprint (`sha256:…`).
    fingerprint: Option<String>,
    /// The probe of a new main (default: `tcp://HOST:PORT` of an NVR source).
    probe: Option<String>,
    #[serde(default)]
    check: bool,
    /// Write the config (else only preview).
    #[serde(default)]
    confirm: bool,
    /// With `confirm`: the `digest` of the preview being confirmed.
    digest: Option<String>,
}

/// A digest of the config text an import would write, to tie a confirm to its preview: SHA-256
/// keyed with a random per-process key (the text holds camera passwords, so a plain hash could
/// be tested against guesses). Hex.
fn plan_digest(new_text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut h = Sha256::new();
    h.update(key);
    h.update(new_text.as_bytes());
    hex::encode(h.finalize())
}

/// Empty form fields count as absent.
fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn given_secret(s: Option<Secret>) -> Option<Secret> {
    s.filter(|p| !p.expose().is_empty())
}

/// One camera for the preview table: no password, only whether one is known.
fn camera_json(c: &Imported) -> serde_json::Value {
    json!({
        "channel": c.channel, "name": c.name, "url": c.url.as_ref().map(url::Url::as_str),
        "username": c.username, "password_known": c.password.is_some(),
        "problems": c.problems, "described": c.described,
    })
}

/// One import into the config file at a time (preview and confirm both read it).
static CONFIG_FILE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `POST /api/mains/import` (administrators): runs the import like `understudy import`. Without
/// `confirm` it only previews (cameras with their flags, the changes, a `digest` of the file it
/// would write); with `confirm: true` and that digest it imports again and writes the merged
/// config only if it is exactly what was previewed (else 409, nothing written). The running
/// daemon keeps its configuration until restarted. Passwords are never echoed back.
pub async fn import_main(State(st): State<ApiState>, Extension(p): Extension<Principal>, Json(req): Json<ImportRequest>) -> Result<Response, ApiError> {
    if p.role != Role::Admin {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("user {:?} ({}): adding a main needs an administrator", p.user, p.role.name())));
    }
    let main = req.main.trim().to_owned();
    if main.is_empty() {
        return Err(bad("main: give the name of the [[main]] to create or update"));
    }
    let from: Vec<String> = req.source.split([' ', ',', '\n']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let source = Source::parse(&from, false).map_err(|e| bad(format!("source: {}", e.trim_start_matches("--from").trim_start())))?;
    let main_creds = Credentials::pair(given(&req.user), given_secret(req.password), "user", "password").map_err(bad)?;
    let token = given_secret(req.token);
    let trust = match given(&req.fingerprint) {
        Some(f) => Trust::parse_fingerprint(f).map_err(|e| bad(format!("fingerprint: {e}")))?,
        None => Trust::Roots,
    };
    if !matches!(source, Source::Understudy(_)) && (token.is_some() || trust != Trust::Roots) {
        return Err(bad("token and fingerprint are for understudy:// sources"));
    }
    let digest = given(&req.digest).map(str::to_owned);
    if req.confirm && digest.is_none() {
        return Err(bad("digest: confirm needs the digest of the preview it confirms: preview first"));
    }
    let probe = given(&req.probe).map(str::to_owned).or_else(|| source.default_probe());
    // The main's cameras already in the file: their hand-set credentials are tried first.
    let path = st.station.cfg.file.clone();
    let known = match tokio::fs::read_to_string(&path).await {
        Ok(text) => crate::config::Config::parse_structure(&text, &path).map(|c| import::Known::of_main(&c, &main)).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let opts = Options {
        main: main.clone(),
        source,
        main_creds,
        camera_user: given(&req.camera_user).map(str::to_owned),
        camera_password: given_secret(req.camera_password),
        check: req.check,
        timeout: Duration::from_secs(5),
        discover_for: Duration::from_secs(3),
        token,
        trust,
        known,
    };
    let label = opts.source.label();
    let outcome = |result: &str, detail: serde_json::Value| {
        let mut d = json!({ "main": main, "source": label, "confirm": req.confirm });
        if let (Some(o), Some(extra)) = (d.as_object_mut(), detail.as_object()) {
            o.extend(extra.clone());
        }
        record(&st.auth, p.entry("main_import", None, d, result));
    };
    let cams = match import::run(&opts).await {
        Ok(c) => c,
        Err(e) => {
            outcome("failed", json!({ "error": e.to_string() }));
            return Err(ApiError(StatusCode::BAD_GATEWAY, e.to_string()));
        }
    };
    let cameras: Vec<_> = cams.iter().map(camera_json).collect();
    let _file = CONFIG_FILE.lock().await;
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{}: cannot read: {e}", path.display())))?;
    let (new_text, changes) = match import::plan(&text, &path, &main, probe.as_deref(), &opts.source, &cams) {
        Ok(x) => x,
        Err(e) => {
            outcome("refused", json!({ "error": e }));
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": e, "cameras": cameras })) ).into_response());
        }
    };
    let changes: Vec<String> = changes.iter().map(merge::Change::to_string).collect();
    let planned = plan_digest(&new_text);
    if req.confirm && digest.as_deref() != Some(planned.as_str()) {
        // The import, the main or the config file changed since the preview: write nothing.
        let e = "what this import would write now differs from the preview being confirmed (the main's answer, a camera or the config file changed since): nothing written; preview again".to_owned();
        outcome("refused", json!({ "error": "stale preview", "changes": changes.len() }));
        return Ok((StatusCode::CONFLICT, Json(json!({ "error": e, "cameras": cameras, "changes": changes }))).into_response());
    }
    let write = req.confirm && !changes.is_empty();
    let mut mode = 0;
    if write {
        let (p2, t2) = (path.clone(), new_text);
        let written = tokio::task::spawn_blocking(move || merge::write_private(&p2, &t2)).await.map_err(super::internal)?;
        match written {
            Ok(m) => mode = m,
            Err(e) => {
                let msg = format!("{}: cannot write: {e} (a packaged service may not write its config: run `understudy import` as root instead)", path.display());
                outcome("failed", json!({ "error": msg }));
                return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg));
            }
        }
    }
    outcome("ok", json!({ "changes": changes.len(), "written": write }));
    let message = match (req.confirm, write) {
        (_, true) => format!("written to {} (mode {mode:04o}); restart understudy (systemctl restart understudy) to watch main {main:?} with these cameras", path.display()),
        (true, false) => format!("main {main:?}: no changes; nothing written"),
        (false, _) if changes.is_empty() => format!("main {main:?}: no changes"),
        (false, _) => "preview only: nothing written; confirm to write the config".to_owned(),
    };
    Ok(Json(json!({
        "main": main, "source": label, "cameras": cameras, "changes": changes, "digest": planned,
        "written": write, "restart_needed": write, "message": message,
    }))
    .into_response())
}
