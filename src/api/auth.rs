//! The guard in front of every route of the API: who is asking (bearer token or session
//! cookie), whether any user exists yet, CSRF on changing requests, `Origin` on WebSocket
//! upgrades, the permission and channel a path needs, audit entries, and security headers.
//! Also `POST /api/login`, `POST /api/logout` and `GET /api/session`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::warn;

use super::{ApiError, ApiState};
use crate::auth::secret::{digest_hex, random_secret, Password, SessionId, Token};
use crate::auth::{audit, password, AuthDb, Perm, Principal, Refusal};

/// The session cookie (`__Host-`: Secure, Path=/, no Domain, so no other host can set it).
pub const COOKIE: &str = "__Host-understudy";
/// The header carrying the session's CSRF token on changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Routes answering without credentials: the operator page (static, no data: it shows the
/// login screen) and the login itself.
pub const PUBLIC: &[(&str, &str)] = &[("GET", "/"), ("HEAD", "/"), ("POST", "/api/login")];

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    ApiError(code, msg.into()).into_response()
}

/// What a path needs: a permission (None: any logged-in user) and the channel it touches.
/// The channel segment must be a plain decimal number (`3`, not `%33` or `+3`): it is read
/// from the raw path here, while axum decodes it for the handler, so anything else is an
/// `Err` the guard refuses.
pub fn requirement(path: &str) -> (Option<Perm>, Option<Result<u32, ()>>) {
    if let Some(rest) = path.strip_prefix("/api/channels/") {
        let (n, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let plain = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        let ch = if plain { n.parse::<u32>().map_err(drop) } else { Err(()) };
        let perm = if tail.starts_with("live") {
            Perm::Live
        } else if tail.starts_with("export") {
            Perm::Export
        } else {
            Perm::Recordings
        };
        return (Some(perm), Some(ch));
    }
    let perm = if path == "/metrics" {
        Some(Perm::Metrics)
    } else if path.starts_with("/api/audit") {
        Some(Perm::Audit)
    } else if path.starts_with("/api/users") || path.starts_with("/api/tokens") {
        Some(Perm::Users)
    } else if path.starts_with("/api/mains") || path.starts_with("/api/config") {
        Some(Perm::Config)
    } else {
        None
    };
    (perm, None)
}

/// The client's address: the peer, or, from a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn db_err(e: crate::auth::db::DbError) -> Response {
    warn!(error = %e, "access-control database");
    err(StatusCode::INTERNAL_SERVER_ERROR, "the access-control database failed; see the server log")
}

/// Writes an audit entry off the async threads; a failure is logged, never lost silently.
pub fn record(db: &Arc<AuthDb>, e: audit::Entry) {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = db.audit(e) {
            warn!(error = %e, "writing the audit trail");
        }
    });
}

fn no_user_yet(st: &ApiState) -> Response {
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no user exists yet: add the first administrator on this machine with `understudy user add --config {} NAME --role admin --password-stdin`",
            st.station.cfg.file.display()
        ),
    )
}

/// The guard; see the module comment. Layered over the whole router, so a route added
/// later is protected without doing anything.
pub async fn guard(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = client_ip(peer, req.headers(), &st.station.cfg.server.trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));
    let path = req.uri().path().to_owned();
    let public = PUBLIC.iter().any(|(m, p)| *m == req.method().as_str() && *p == path);
    let resp = if public && path == "/" {
        next.run(req).await
    } else {
        match authorize(&st, &mut req, ip, public).await {
            Ok(principal) => {
                let query = req.uri().query().unwrap_or("").to_owned();
                let resp = next.run(req).await;
                if let Some(p) = principal {
                    st.audit_request(&p, &path, &query, &resp);
                }
                resp
            }
            Err(resp) => resp,
        }
    };
    with_security_headers(resp, st.station.cfg.server.tls)
}

/// The client address as the guard determined it.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

async fn authorize(st: &ApiState, req: &mut Request, ip: IpAddr, public: bool) -> Result<Option<Principal>, Response> {
    let db = st.auth.clone();
    let users = blocking({
        let db = db.clone();
        move || db.user_count()
    })
    .await?
    .map_err(db_err)?;
    if users == 0 {
        return Err(no_user_yet(st));
    }
    if public {
        return Ok(None);
    }
    let h = req.headers();
    let bearer = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(|v| v.strip_prefix("Bearer ").map(|t| Token::new(t.trim())));
    let session = cookie_value(h, COOKIE).map(SessionId::new);
    let ip_s = ip.to_string();
    let found = match (bearer, session) {
        (Some(None), _) => Err(Refusal::Unknown),
        (Some(Some(token)), _) => blocking(move || db.principal_for_token(&token, &ip_s)).await?.map_err(db_err)?,
        (None, Some(sid)) => {
            let limits = st.station.cfg.server.sessions;
            blocking(move || db.principal_for_session(&sid, &ip_s, limits)).await?.map_err(db_err)?
        }
        (None, None) => Err(Refusal::Unknown),
    };
    let p = match found {
        Ok(p) => p,
        Err(r) => {
            let mut resp = err(StatusCode::UNAUTHORIZED, r.sentence());
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"understudy\""));
            return Err(resp);
        }
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(expected)) = (safe, &p.csrf) {
        let given = req.headers().get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or(b"");
        if !bool::from(given.ct_eq(expected.as_bytes())) {
            return Err(err(StatusCode::FORBIDDEN, format!("missing or wrong {CSRF_HEADER} header (GET /api/session gives it)")));
        }
    }
    if is_upgrade(req.headers()) && !origin_ok(req.headers(), st.station.cfg.server.tls) {
        return Err(err(StatusCode::FORBIDDEN, "WebSocket upgrade from another origin refused"));
    }
    let (perm, channel) = requirement(req.uri().path());
    if let Some(Err(())) = channel {
        return Err(err(StatusCode::BAD_REQUEST, "the channel in /api/channels/N/… must be a plain decimal number"));
    }
    if perm.is_none() && p.scope != crate::auth::Scope::Full {
        st.audit_denied(&p, req.uri().path(), None);
        return Err(err(StatusCode::FORBIDDEN, format!("this token of user {:?} is limited to the {} scope", p.user, p.scope.name().unwrap_or("full"))));
    }
    if let Some(perm) = perm.filter(|pm| !p.can(*pm)) {
        st.audit_denied(&p, req.uri().path(), None);
        return Err(err(StatusCode::FORBIDDEN, format!("user {:?} ({}{}) lacks the {} permission", p.user, p.role.name(), p.scope.name().map_or(String::new(), |s| format!(", token scope {s}")), perm.name())));
    }
    if let Some(Ok(ch)) = channel.filter(|c| c.is_ok_and(|ch| !p.sees(ch))) {
        st.audit_denied(&p, req.uri().path(), Some(ch));
        return Err(err(StatusCode::FORBIDDEN, format!("user {:?} may not see channel {ch}", p.user)));
    }
    req.extensions_mut().insert(p.clone());
    Ok(Some(p))
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A browser's WebSocket upgrade must come from a page of this server (Origin = our Host).
fn origin_ok(h: &HeaderMap, tls: bool) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    origin == format!("{}://{host}", if tls { "https" } else { "http" })
}

fn with_security_headers(mut resp: Response, tls: bool) -> Response {
    let h = resp.headers_mut();
    let mut set = |k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    if tls {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    resp
}

#[derive(Deserialize)]
pub struct Login {
    username: String,
    password: Password,
}

fn session_json(p: &Principal) -> serde_json::Value {
    json!({
        "user": p.user, "role": p.role.name(), "channels": p.channels.to_string(),
        "permissions": p.perms(), "scope": p.scope.name(), "csrf": p.csrf, "token": p.token,
    })
}

/// `POST /api/login {username, password}`: a session cookie and the CSRF token.
pub async fn login(State(st): State<ApiState>, Extension(ClientIp(ip)): Extension<ClientIp>, Json(l): Json<Login>) -> Response {
    // Reserved before the password is checked, so parallel attempts count against the limit.
    let attempt = match st.backoff.begin(ip, &l.username) {
        Ok(a) => a,
        Err(wait) => {
            let secs = wait.as_secs().max(1);
            record(&st.auth, audit::Entry { user: Some(l.username.clone()), ip: Some(ip.to_string()), action: "login".into(), detail: json!({}), result: "backoff".into(), ..Default::default() });
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, format!("too many failed or parallel logins: try again in {secs} s"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    };
    let Ok(_permit) = st.hashing.acquire().await else { return err(StatusCode::SERVICE_UNAVAILABLE, "shutting down") };
    let db = st.auth.clone();
    let name = l.username.clone();
    let checked = blocking(move || -> Result<Option<crate::auth::db::User>, crate::auth::db::DbError> {
        match db.user(&name)? {
            Some(u) if password::verify(&l.password, &u.password_hash) => Ok(Some(u)),
            Some(_) => Ok(None),
            None => {
                password::verify_dummy(&l.password);
                Ok(None)
            }
        }
    })
    .await;
    let user = match checked {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return db_err(e),
        Err(r) => return r,
    };
    let Some(u) = user else {
        attempt.failed();
        record(&st.auth, audit::Entry { user: Some(l.username), ip: Some(ip.to_string()), action: "login".into(), detail: json!({}), result: "bad_credentials".into(), ..Default::default() });
        return err(StatusCode::UNAUTHORIZED, "wrong user name or password");
    };
    attempt.succeeded();
    let sid = SessionId::new(random_secret(""));
    let csrf = random_secret("");
    let p = Principal { user: u.name.clone(), role: u.role, channels: u.channels.clone(), scope: crate::auth::Scope::Full, token: None, csrf: Some(csrf.clone()), ip: ip.to_string() };
    let db = st.auth.clone();
    let (hash, ip_s) = (digest_hex(sid.expose()), ip.to_string());
    match blocking(move || db.create_session(u.id, &hash, &csrf, &ip_s)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return db_err(e),
        Err(r) => return r,
    }
    record(&st.auth, p.entry("login", None, json!({}), "ok"));
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}", sid.expose(), st.station.cfg.server.sessions.max_s);
    let mut r = Json(session_json(&p)).into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Err(_) => return err(StatusCode::INTERNAL_SERVER_ERROR, "could not build the session cookie"),
    }
    r
}

/// `POST /api/logout`: ends the session of the cookie (the cookie is cleared too).
pub async fn logout(State(st): State<ApiState>, Extension(p): Extension<Principal>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie_value(&headers, COOKIE).map(SessionId::new) {
        let db = st.auth.clone();
        let hash = digest_hex(sid.expose());
        match blocking(move || db.delete_session(&hash)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return db_err(e),
            Err(r) => return r,
        }
    }
    record(&st.auth, p.entry("logout", None, json!({}), "ok"));
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("__Host-understudy=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"));
    r
}

/// `GET /api/session`: who is logged in, their rights, and the CSRF token of the session.
pub async fn session(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(session_json(&p))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    since: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/audit?since=T&after=ID&limit=N`: the audit trail (admins).
pub async fn audit_list(State(st): State<ApiState>, Extension(p): Extension<Principal>, axum::extract::Query(q): axum::extract::Query<AuditQuery>) -> Result<Response, ApiError> {
    let since = q.since.as_deref().map(|s| crate::commands::time::parse_time_90k(s, "since").map(crate::commands::time::format_90k)).transpose().map_err(super::bad)?;
    let db = st.auth.clone();
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let entries = tokio::task::spawn_blocking(move || db.audit_entries(since.as_deref(), after, limit)).await.map_err(super::internal)?.map_err(super::internal)?;
    record(&st.auth, p.entry("audit_read", None, json!({ "after": after, "count": entries.len() }), "ok"));
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// The body type every handler answers with, for the guard's signature.
pub type Resp = Response<Body>;
