//! `understudy import`: fill in a main's cameras from the main itself or over ONVIF, merge them
//! into the config (its owner and group kept, never readable by others) and print what changed.

use std::io::BufRead as _;

use super::CmdResult;
use crate::cli::ImportArgs;
use crate::config::{units::parse_duration, Config, Secret};
use crate::import::understudy::Trust;
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
    let main_creds = Credentials::pair(args.user.as_deref(), password, "--user", "--password-env VAR or --password-stdin")?;
    let camera_password = args.camera_password_env.as_deref().map(|v| env_secret(v, "--camera-password-env")).transpose()?;
    let token = args.token_env.as_deref().map(|v| env_secret(v, "--token-env")).transpose()?;
    let trust = match (&args.fingerprint, &args.ca) {
        (Some(f), _) => Trust::parse_fingerprint(f).map_err(|e| format!("--fingerprint: {e}"))?,
        (None, Some(ca)) => Trust::Ca(ca.clone()),
        (None, None) => Trust::Roots,
    };
    if !matches!(source, Source::Understudy(_)) && (token.is_some() || trust != Trust::Roots) {
        return Err("--token-env, --fingerprint and --ca are for understudy:// sources".into());
    }

    // The config must be readable and valid before anything is asked of the network; secrets
    // the daemon reads from its environment (health_token_env) are not needed here.
    let text = std::fs::read_to_string(&args.config).map_err(|e| format!("{}: cannot read: {e}", args.config.display()))?;
    let cfg = Config::parse_structure(&text, &args.config)?;
    let known = import::Known::of_main(&cfg, &args.main);

    let probe = args.probe.clone().or_else(|| source.default_probe());
    let opts = Options { main: args.main.clone(), source, main_creds, camera_user: args.camera_user.clone(), camera_password, check: args.check, timeout, discover_for, token, trust, known };
    eprintln!("import: asking {} for its cameras…", opts.source.label());
    let cams = import::run(&opts).await?;

    outln!("{} camera(s) from {}:", cams.len(), opts.source.label());
    for c in &cams {
        let url = c.url.as_ref().map_or("(no URL)".to_owned(), |u| u.to_string());
        let status = if c.problems.is_empty() { "ok".to_owned() } else { format!("PROBLEM: {}", c.problems.join("; ")) };
        let described = c.described.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default();
        outln!("  channel {:>4}  {url}{described}  {status}", c.channel);
    }
    let (new_text, changes) = import::plan(&text, &args.config, &args.main, probe.as_deref(), &opts.source, &cams)?;
    if changes.is_empty() {
        outln!("main {:?}: no changes", args.main);
        return Ok(());
    }
    outln!("main {:?}:", args.main);
    for ch in &changes {
        outln!("  {ch}");
    }
    if args.dry_run {
        outln!("--dry-run: {} not written", args.config.display());
    } else {
        let mode = merge::write_private(&args.config, &new_text).map_err(|e| format!("{}: cannot write: {e}", args.config.display()))?;
        outln!("written to {} (mode {mode:04o}, owner and group kept)", args.config.display());
    }
    Ok(())
}
