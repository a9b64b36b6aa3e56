//! `understudy audit` (list and verify the audit trail) and `understudy tls fingerprint`.

use super::CmdResult;
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
            return match db.audit_verify()? {
                Ok(n) => {
                    eprintln!("audit trail intact: {n} entries, hash chain verified");
                    Ok(())
                }
                Err(what) => Err(format!("audit trail tampered with: {what}").into()),
            };
        }
        let mut after = 0;
        loop {
            let page = db.audit_entries(since.as_deref(), after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
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
        Ok(())
    })
    .await?
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
