//! `understudy audit` (list and verify the audit trail) and `understudy tls fingerprint`.

use serde_json::json;

use super::CmdResult;
use crate::auth::audit::Entry;
use crate::auth::AuthDb;
use crate::cli::{AuditArgs, TlsCmd};
use crate::commands::time::{format_90k, parse_time_90k};
use crate::config::Config;

pub async fn run(args: AuditArgs) -> CmdResult {
    tokio::task::spawn_blocking(move || -> CmdResult {
        let cfg = Config::load(&args.config.config)?;
        let since = args.since.as_deref().map(|s| parse_time_90k(s, "--since").map(format_90k)).transpose()?;
        let db = AuthDb::open(&cfg.server.state_dir)?;
        if args.verify {
            let verdict = db.audit_verify()?;
            let result = if verdict.is_ok() { "ok" } else { "tampered" };
            db.audit(reader("audit_read", json!({ "source": "cli", "verify": true }), result))?;
            return match verdict {
                Ok(what) => {
                    eprintln!("audit trail intact: {what}");
                    Ok(())
                }
                Err(what) => Err(format!("audit trail tampered with: {what}").into()),
            };
        }
        let (mut after, mut count) = (0, 0usize);
        loop {
            let page = db.audit_entries(since.as_deref(), after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            count += page.len();
            for e in &page {
                if args.json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    let ch = e.channel.map_or(String::new(), |c| format!("ch{c}"));
                    let bytes = e.bytes.map_or(String::new(), |b| format!("{b} B"));
                    let token = e.token.map_or(String::new(), |t| format!("token {t}"));
                    println!(
                        "{:>6} {} {:<16} {:<8} {:<15} {:<12} {:<5} {:<8} {} {}",
                        e.id, e.time, e.user.as_deref().unwrap_or("-"), token, e.ip.as_deref().unwrap_or("-"), e.action, ch, e.result, bytes, e.detail
                    );
                }
            }
        }
        // Reading the trail is itself an entry, as `GET /api/audit` records one.
        db.audit(reader("audit_read", json!({ "source": "cli", "since": since, "count": count }), "ok"))?;
        Ok(())
    })
    .await?
}

/// An entry for the trail read on this machine, by the OS user running the command (the one
/// `sudo` was run by, if any), in the form the user and token commands use.
fn reader(action: &str, detail: serde_json::Value, result: &str) -> Entry {
    Entry { user: Some(format!("cli:{}", os_user())), ip: Some("local".into()), action: action.into(), detail, result: result.into(), ..Default::default() }
}

fn os_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid cannot fail and touches no memory.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

pub async fn tls(cmd: TlsCmd) -> CmdResult {
    match cmd {
        TlsCmd::Fingerprint(c) => {
            let cfg = Config::load(&c.config)?;
            let files = crate::api::tls::cert_files(&cfg.server)?;
            println!("{}", crate::api::tls::fingerprint(&files.cert)?);
            Ok(())
        }
    }
}
