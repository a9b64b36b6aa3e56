//! `understudy import`: fill in a main's cameras from the main itself or over ONVIF, merge them
//! into the config (mode 0600) and print what changed.

use std::io::BufRead as _;

use super::CmdResult;
use crate::cli::ImportArgs;
use crate::config::{units::parse_duration, Config, Secret};
use crate::import::{self, merge, Credentials, Options, Source};

fn env_secret(var: &str, flag: &str) -> Result<Secret, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(format!("{flag} {var}: the environment variable is not set or empty")),
    }
}

pub async fn run(args: ImportArgs) -> CmdResult {
    let source = Source::parse(&args.from, args.discover)?;
    let timeout = parse_duration(&args.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let discover_for = parse_duration(&args.discover_for).map_err(|e| format!("--discover-for: {e}"))?;
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("--password-stdin: {e}"))?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        if p.is_empty() {
            return Err("--password-stdin: stdin gave an empty line".into());
        }
        Some(Secret::new(p))
    } else {
        args.password_env.as_deref().map(|v| env_secret(v, "--password-env")).transpose()?
    };
    let main_creds = match (&args.user, password) {
        (Some(u), Some(p)) => Some(Credentials { user: u.clone(), password: p }),
        (None, Some(_)) => return Err("a password was given without --user".into()),
        (Some(_), None) => return Err("--user needs --password-env VAR or --password-stdin".into()),
        (None, None) => None,
    };
    let camera_password = args.camera_password_env.as_deref().map(|v| env_secret(v, "--camera-password-env")).transpose()?;

    // The config must be readable and valid before anything is asked of the network.
    let text = std::fs::read_to_string(&args.config).map_err(|e| format!("{}: cannot read: {e}", args.config.display()))?;
    Config::parse(&text, &args.config)?;

    let probe = args.probe.clone().or_else(|| source.main_address().map(|(h, p)| {
        if h.contains(':') { format!("tcp://[{h}]:{p}") } else { format!("tcp://{h}:{p}") }
    }));
    let opts = Options { main: args.main.clone(), source, main_creds, camera_user: args.camera_user.clone(), camera_password, check: args.check, timeout, discover_for };
    eprintln!("import: asking {} for its cameras…", opts.source.label());
    let cams = import::run(&opts).await?;

    println!("{} camera(s) from {}:", cams.len(), opts.source.label());
    for c in &cams {
        let url = c.url.as_ref().map_or("(no URL)".to_owned(), |u| u.to_string());
        let status = if c.problems.is_empty() { "ok".to_owned() } else { format!("PROBLEM: {}", c.problems.join("; ")) };
        let described = c.described.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default();
        println!("  channel {:>4}  {url}{described}  {status}", c.channel);
    }
    if cams.iter().all(|c| c.url.is_none()) {
        return Err(format!("{}: no camera could be imported (see the problems above); nothing written", opts.source.label()).into());
    }
    let (new_text, changes) = merge::merge(&text, &args.main, probe.as_deref(), &cams).map_err(|e| format!("{}: {e}", args.config.display()))?;
    // The merged file must still be a valid config: otherwise nothing is written.
    Config::parse(&new_text, &args.config).map_err(|e| format!("the merged config would be invalid, nothing written: {e}"))?;
    if changes.is_empty() {
        println!("main {:?}: no changes", args.main);
        return Ok(());
    }
    println!("main {:?}:", args.main);
    for ch in &changes {
        println!("  {ch}");
    }
    if args.dry_run {
        println!("--dry-run: {} not written", args.config.display());
    } else {
        merge::write_private(&args.config, &new_text).map_err(|e| format!("{}: cannot write: {e}", args.config.display()))?;
        println!("written to {} (mode 0600)", args.config.display());
    }
    Ok(())
}
