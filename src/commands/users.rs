//! `understudy user add|passwd|del|list` and `understudy token create|list|revoke`: manage who
//! may use the HTTP API, directly in the catalog database (works while `run` runs).

use std::io::BufRead;

use serde_json::json;

use super::CmdResult;
use crate::auth::secret::Password;
use crate::auth::manage::{check_name, expires_at, token_state};
use crate::auth::{audit, db, password, AuthDb, Channels, Role, Scope};
use crate::cli::{ConfigArg, TokenCmd, UserCmd};
use crate::config::Config;

fn open(config: &ConfigArg) -> Result<(Config, AuthDb), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = Config::load(&config.config)?;
    let db = AuthDb::open(&cfg.server.state_dir)?;
    Ok((cfg, db))
}

/// An audit entry for a change made on this machine with the CLI.
fn local(action: &str, detail: serde_json::Value) -> audit::Entry {
    let who = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).ok();
    audit::Entry { user: who.map(|u| format!("cli:{u}")), ip: Some("local".into()), action: action.into(), detail, result: "ok".into(), ..Default::default() }
}

fn read_password(password_stdin: bool) -> Result<Password, String> {
    if !password_stdin {
        return Err("give the password on stdin with --password-stdin (e.g. `printf '%s\\n' \"$PW\" | understudy user add … --password-stdin`); there is no default password".into());
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
    let pw = Password::new(line.trim_end_matches(['\n', '\r']));
    password::check_new(&pw)?;
    Ok(pw)
}

fn time_s(t: i64) -> String {
    jiff::Timestamp::from_second(t).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

pub async fn user(cmd: UserCmd) -> CmdResult {
    tokio::task::spawn_blocking(move || user_blocking(cmd)).await?
}

fn user_blocking(cmd: UserCmd) -> CmdResult {
    match cmd {
        UserCmd::Add { config, name, role, channels, password_stdin } => {
            check_name(&name)?;
            let role = Role::parse(&role)?;
            let channels = Channels::parse(&channels)?;
            let pw = read_password(password_stdin)?;
            let (_, db) = open(&config)?;
            db.add_user(&name, role, &channels, &password::hash(&pw)?)?;
            db.audit(local("user_add", json!({ "name": name, "role": role.name(), "channels": channels.to_string() })))?;
            eprintln!("user {name:?} added: {}, channels {channels}", role.name());
        }
        UserCmd::Passwd { config, name, password_stdin } => {
            let pw = read_password(password_stdin)?;
            let (_, db) = open(&config)?;
            if !db.set_password(&name, &password::hash(&pw)?)? {
                return Err(format!("no user {name:?} (see `user list`)").into());
            }
            db.audit(local("user_passwd", json!({ "name": name })))?;
            eprintln!("password of {name:?} changed; their sessions are ended");
        }
        UserCmd::Del { config, name } => {
            let (_, db) = open(&config)?;
            if !db.del_user(&name)? {
                return Err(format!("no user {name:?} (see `user list`)").into());
            }
            db.audit(local("user_del", json!({ "name": name })))?;
            eprintln!("user {name:?} deleted with their sessions and tokens");
        }
        UserCmd::List { config } => {
            let (_, db) = open(&config)?;
            println!("{:<24} {:<9} {:<16} created", "name", "role", "channels");
            for u in db.users()? {
                println!("{:<24} {:<9} {:<16} {}", u.name, u.role.name(), u.channels.to_string(), time_s(u.created));
            }
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> CmdResult {
    tokio::task::spawn_blocking(move || token_blocking(cmd)).await?
}

fn token_blocking(cmd: TokenCmd) -> CmdResult {
    match cmd {
        TokenCmd::Create { config, user, expires, channels, role, scope } => {
            let channels = Channels::parse(&channels)?;
            let role = role.as_deref().map(Role::parse).transpose()?;
            let scope = scope.as_deref().map(Scope::parse).transpose().map_err(|e| format!("--scope: {e}"))?.unwrap_or_default();
            let expires = expires.as_deref().map(expires_at).transpose().map_err(|e| format!("--expires: {e}"))?;
            let (_, db) = open(&config)?;
            let (id, token) = db.issue_token(&user, role, scope, &channels, expires)?;
            let detail = json!({ "id": id, "user": user, "channels": channels.to_string(), "role": role.map(Role::name), "scope": scope.name(), "expires": expires.map(time_s) });
            db.audit(local("token_create", detail))?;
            eprintln!("token {id} for {user:?} (shown once; send it as `Authorization: Bearer TOKEN`):");
            println!("{token}");
        }
        TokenCmd::List { config } => {
            let (_, db) = open(&config)?;
            println!("{:<5} {:<20} {:<9} {:<8} {:<12} {:<22} {:<22} state", "id", "user", "role", "scope", "channels", "created", "expires");
            let now = db::now_s();
            for t in db.tokens()? {
                let state = token_state(&t, now);
                let role = t.role.map_or("(user's)", Role::name);
                let expires = t.expires.map_or("never".to_owned(), time_s);
                let scope = t.scope.name().unwrap_or("full");
                println!("{:<5} {:<20} {:<9} {:<8} {:<12} {:<22} {:<22} {state}", t.id, t.user, role, scope, t.channels.to_string(), time_s(t.created), expires);
            }
        }
        TokenCmd::Revoke { config, id } => {
            let (_, db) = open(&config)?;
            if !db.revoke_token(id)? {
                return Err(format!("no active token {id} (see `token list`)").into());
            }
            db.audit(local("token_revoke", json!({ "id": id })))?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}
