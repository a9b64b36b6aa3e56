//! User and token management over HTTP for admins (`Perm::Users`, checked by the guard):
//! `GET/POST /api/users`, `PUT/DELETE /api/users/{name}`, `GET/POST /api/tokens`,
//! `DELETE /api/tokens/{id}`. Each change is an audit entry; answers never hold a password or
//! a hash, and a new token's value is shown once, in the answer that creates it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::record;
use super::{bad, internal, ApiError, ApiState};
use crate::auth::db::{self, AuthDb, DbError};
use crate::auth::manage::{check_name, expires_at, token_state};
use crate::auth::secret::Password;
use crate::auth::{password, Channels, Principal, Role, Scope};

/// Runs `f` on the auth database off the async threads.
async fn with_db<T: Send + 'static>(st: &ApiState, f: impl FnOnce(&AuthDb) -> Result<T, DbError> + Send + 'static) -> Result<T, ApiError> {
    let db: Arc<AuthDb> = st.auth.clone();
    tokio::task::spawn_blocking(move || f(&db)).await.map_err(internal)?.map_err(|e| match e {
        DbError::Invalid(m) => ApiError(StatusCode::CONFLICT, m),
        e => internal(e),
    })
}

/// An Argon2id hash of a new password (checked first), within the hashing budget.
async fn hash_new(st: &ApiState, pw: Password) -> Result<String, ApiError> {
    password::check_new(&pw).map_err(|e| bad(format!("password: {e}")))?;
    let _permit = st.hashing.acquire().await.map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    tokio::task::spawn_blocking(move || password::hash(&pw)).await.map_err(internal)?.map_err(internal)
}

fn time_s(t: i64) -> String {
    jiff::Timestamp::from_second(t).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

fn user_json(u: &db::User) -> Value {
    json!({ "name": u.name, "role": u.role.name(), "channels": u.channels.to_string(), "permissions": u.role.perms(), "created": time_s(u.created) })
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).map_err(|e| bad(format!("role: {e}")))
}

fn parse_channels(s: &str) -> Result<Channels, ApiError> {
    Channels::parse(s).map_err(|e| bad(format!("channels: {e}")))
}

/// Refuses (403, saying why) rights beyond the caller's own: an admin limited to some
/// channels, or through a narrowed token, may not grant more than it has, nor manage a user
/// who has more (else it could reset that user's password and log in as them).
fn within_own(p: &Principal, role: Role, scope: Scope, channels: &Channels, what: &str) -> Result<(), ApiError> {
    if p.covers(role, scope, channels) {
        return Ok(());
    }
    let rights = format!("{}{} on channels {channels}", role.name(), scope.name().map_or(String::new(), |s| format!(" (scope {s})")));
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!("{what} would have rights beyond those of {:?} ({}, channels {}): {rights}", p.user, p.perms().join(" "), p.channels),
    ))
}

/// The user `name` (404 if none), checked to have no more rights than the caller.
async fn manageable(st: &ApiState, p: &Principal, name: &str) -> Result<db::User, ApiError> {
    let n = name.to_owned();
    let u = with_db(st, move |db| db.user(&n)).await?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no user {name:?}")))?;
    within_own(p, u.role, Scope::Full, &u.channels, &format!("user {name:?}"))?;
    Ok(u)
}

/// `GET /api/users`.
pub async fn list(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let users = with_db(&st, |db| db.users()).await?;
    Ok(Json(json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    role: String,
    #[serde(default)]
    channels: Option<String>,
    password: Password,
}

/// `POST /api/users {name, role, channels?, password}`: 201 with the user.
pub async fn add(State(st): State<ApiState>, Extension(p): Extension<Principal>, Json(n): Json<NewUser>) -> Result<Response, ApiError> {
    check_name(&n.name).map_err(bad)?;
    let role = parse_role(&n.role)?;
    let channels = parse_channels(n.channels.as_deref().unwrap_or("all"))?;
    within_own(&p, role, Scope::Full, &channels, &format!("user {:?}", n.name))?;
    let hash = hash_new(&st, n.password).await?;
    let name = n.name.clone();
    let ch = channels.clone();
    let user = with_db(&st, move |db| {
        db.add_user(&name, role, &ch, &hash)?;
        db.user(&name)?.ok_or_else(|| DbError::Invalid(format!("user {name:?} vanished")))
    })
    .await?;
    record(&st.auth, p.entry("user_add", None, json!({ "name": n.name, "role": role.name(), "channels": channels.to_string() }), "ok"));
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    channels: Option<String>,
    #[serde(default)]
    password: Option<Password>,
}

/// `PUT /api/users/{name} {role?, channels?, password?}`: a new password ends the user's
/// sessions; the last admin keeps the admin role.
pub async fn change(State(st): State<ApiState>, Extension(p): Extension<Principal>, Path(name): Path<String>, Json(c): Json<UserChange>) -> Result<Json<Value>, ApiError> {
    let role = c.role.as_deref().map(parse_role).transpose()?;
    let channels = c.channels.as_deref().map(parse_channels).transpose()?;
    if role.is_none() && channels.is_none() && c.password.is_none() {
        return Err(bad("nothing to change: give role, channels or password"));
    }
    let current = manageable(&st, &p, &name).await?;
    within_own(&p, role.unwrap_or(current.role), Scope::Full, channels.as_ref().unwrap_or(&current.channels), &format!("user {name:?}"))?;
    let password_changed = c.password.is_some();
    let hash = match c.password {
        Some(pw) => Some(hash_new(&st, pw).await?),
        None => None,
    };
    let n = name.clone();
    let user = with_db(&st, move |db| {
        let Some(u) = db.user(&n)? else { return Ok(None) };
        let new_role = role.unwrap_or(u.role);
        if new_role != Role::Admin && db.is_last_admin(&n)? {
            return Err(DbError::Invalid(format!("{n:?} is the only admin: make another user admin first")));
        }
        db.update_user(&n, new_role, channels.as_ref().unwrap_or(&u.channels))?;
        if let Some(h) = &hash {
            db.set_password(&n, h)?;
        }
        db.user(&n)
    })
    .await?
    .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no user {name:?}")))?;
    let detail = json!({ "name": name, "role": user.role.name(), "channels": user.channels.to_string(), "password_changed": password_changed });
    record(&st.auth, p.entry("user_change", None, detail, "ok"));
    Ok(Json(user_json(&user)))
}

/// `DELETE /api/users/{name}`: the user with their sessions and tokens (not the last admin).
pub async fn delete(State(st): State<ApiState>, Extension(p): Extension<Principal>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    manageable(&st, &p, &name).await?;
    let n = name.clone();
    let gone = with_db(&st, move |db| {
        if db.is_last_admin(&n)? {
            return Err(DbError::Invalid(format!("{n:?} is the only admin: make another user admin first")));
        }
        db.del_user(&n)
    })
    .await?;
    if !gone {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no user {name:?}")));
    }
    record(&st.auth, p.entry("user_del", None, json!({ "name": name }), "ok"));
    Ok(StatusCode::NO_CONTENT)
}

fn token_json(t: &db::TokenRow, now: i64) -> Value {
    json!({
        "id": t.id, "user": t.user, "role": t.role.map(Role::name), "scope": t.scope.name(), "channels": t.channels.to_string(),
        "created": time_s(t.created), "expires": t.expires.map(time_s), "state": token_state(t, now),
    })
}

/// `GET /api/tokens`: every token's id, owner, scope and state (never the token).
pub async fn tokens(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let list = with_db(&st, |db| db.tokens()).await?;
    let now = db::now_s();
    Ok(Json(json!({ "tokens": list.iter().map(|t| token_json(t, now)).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    user: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    channels: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /api/tokens {user, expires?, channels?, role?, scope?}`: 201 with `token`, shown only
/// here. The token's rights (the user's, narrowed) must be within the caller's own.
pub async fn create_token(State(st): State<ApiState>, Extension(p): Extension<Principal>, Json(n): Json<NewToken>) -> Result<Response, ApiError> {
    let channels = parse_channels(n.channels.as_deref().unwrap_or("all"))?;
    let role = n.role.as_deref().map(parse_role).transpose()?;
    let scope = n.scope.as_deref().map(Scope::parse).transpose().map_err(|e| bad(format!("scope: {e}")))?.unwrap_or_default();
    let expires = n.expires.as_deref().map(expires_at).transpose().map_err(|e| bad(format!("expires: {e}")))?;
    let u = n.user.clone();
    let owner = with_db(&st, move |db| db.user(&u)).await?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no user {:?}", n.user)))?;
    let effective = role.map_or(owner.role, |r| r.min(owner.role));
    if let Some(name) = scope.name().filter(|_| !scope.usable_by(effective)) {
        return Err(bad(format!("scope: user {:?} ({}) lacks the {name} permission", n.user, effective.name())));
    }
    within_own(&p, effective, scope, &owner.channels.intersect(&channels), &format!("a token of user {:?}", n.user))?;
    let (user, ch) = (n.user.clone(), channels.clone());
    let (id, token) = with_db(&st, move |db| db.issue_token(&user, role, scope, &ch, expires)).await?;
    let detail = json!({ "id": id, "user": n.user, "channels": channels.to_string(), "role": role.map(Role::name), "scope": scope.name(), "expires": expires.map(time_s) });
    record(&st.auth, p.entry("token_create", None, detail.clone(), "ok"));
    let mut answer = detail;
    answer["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /api/tokens/{id}`: revokes it (kept in the list as `revoked`).
pub async fn revoke_token(State(st): State<ApiState>, Extension(p): Extension<Principal>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    if !with_db(&st, move |db| db.revoke_token(id)).await? {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no active token {id}")));
    }
    record(&st.auth, p.entry("token_revoke", None, json!({ "id": id }), "ok"));
    Ok(StatusCode::NO_CONTENT)
}
