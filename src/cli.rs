//! The command line: `understudy <command>`, parsed with clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "understudy", version, about = "Failover recorder for video surveillance")]
#[command(after_help = "Examples:\n  understudy check --config /etc/understudy/understudy.toml\n  understudy run --config /etc/understudy/understudy.toml --log-format json\n  understudy recordings --config /etc/understudy/understudy.toml --channel 1 --from now-1h\n\nSee `understudy <command> --help` for each command's examples.")]
pub struct Cli {
    /// Log line format on stderr: text (colour only on a terminal) or json (one object per
    /// line, for log shippers). Default: `[server] log_format` of the config, else text.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// The config file the command reads, if it takes one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        match self {
            Command::Run(a) | Command::Reindex(a) | Command::Check(a) => Some(&a.config),
            Command::Recordings(a) => Some(&a.config.config),
            Command::Export(a) => Some(&a.config.config),
            Command::Drill(a) => Some(&a.config),
            Command::Import(a) => Some(&a.config),
            Command::Audit(a) => Some(&a.config.config),
            Command::User(UserCmd::Add { config, .. } | UserCmd::Passwd { config, .. } | UserCmd::Del { config, .. } | UserCmd::List { config }) => Some(&config.config),
            Command::Token(TokenCmd::Create { config, .. } | TokenCmd::List { config } | TokenCmd::Revoke { config, .. }) => Some(&config.config),
            Command::Tls(TlsCmd::Fingerprint(a)) => Some(&a.config),
            Command::Camsim(_) | Command::Demo(_) | Command::Verify(_) => None,
        }
    }

    /// True for the commands that only read local files and print: they may die of SIGPIPE
    /// like any Unix tool. False for those with network sockets (servers, cameras, HTTP
    /// requests), where SIGPIPE stays ignored. No wildcard: a new command must choose.
    pub fn prints_only(&self) -> bool {
        match self {
            Command::Recordings(_)
            | Command::Export(_)
            | Command::Verify(_)
            | Command::Reindex(_)
            | Command::Check(_)
            | Command::User(_)
            | Command::Token(_)
            | Command::Audit(_)
            | Command::Tls(_) => true,
            Command::Run(_) | Command::Camsim(_) | Command::Demo(_) | Command::Drill(_) | Command::Import(_) => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record every [[camera]] of the config (and stand by for its mains) until SIGTERM/SIGINT.
    #[command(after_help = "Examples:\n  understudy run --config /etc/understudy/understudy.toml\n  understudy run -c site.toml --log-format json 2>>/var/log/understudy.json\n\nSIGTERM or Ctrl-C closes every segment. Under systemd (Type=notify) it reports READY=1, STATUS= and WATCHDOG=1.")]
    Run(ConfigArg),
    /// List a channel's recorded segments.
    #[command(after_help = "Examples:\n  understudy recordings -c site.toml --channel 3\n  understudy recordings -c site.toml --channel 3 --from now-1h --to now\n  understudy recordings -c site.toml --channel 3 --from 2026-11-24T18:00:00Z --json | jq '.[].path'")]
    Recordings(RecordingsArgs),
    /// Write one MP4 of a channel's footage between two times.
    #[command(after_help = "Examples:\n  understudy export -c site.toml --channel 3 --from now-10m --to now -o last10.mp4\n  understudy export -c site.toml --channel 3 --from 2026-11-24T18:00:00Z --to 2026-11-24T18:05:00Z -o incident.mp4\n  understudy export -c site.toml --channel 3 --from now-10m --to now -o evidence.mp4 --sign")]
    Export(ExportArgs),
    /// Check a signed export (file, manifest and signature) offline and say what it proves.
    #[command(after_help = "Examples:\n  understudy verify evidence.mp4\n  understudy verify evidence.mp4 --key 1a2b3c4d5e6f7081")]
    Verify(VerifyArgs),
    /// Rebuild the catalog from the segment files on the volumes (repairing torn tails).
    #[command(after_help = "Examples:\n  understudy reindex --config /etc/understudy/understudy.toml")]
    Reindex(ConfigArg),
    /// Validate a config and print the channel map.
    #[command(after_help = "Examples:\n  understudy check --config /etc/understudy/understudy.toml")]
    Check(ConfigArg),
    /// Serve simulated RTSP cameras looping fixture clips.
    #[command(after_help = "Examples:\n  understudy camsim --cameras 4\n  understudy camsim --listen 127.0.0.1:8554 --cameras 2 --user admin --password secret --auth digest\n  understudy camsim --cameras 2 --fault 1:stall@30")]
    Camsim(crate::camsim::CamsimArgs),
    /// Rehearse a takeover of a healthy main for a while and report per-channel latency.
    #[command(after_help = "Examples:\n  understudy drill -c site.toml --main nvr-a --for 60s")]
    Drill(DrillArgs),
    /// Manage the users of the HTTP API.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  printf '%s\\n' \"$PW\" | understudy user add -c site.toml alice --role operator --channels 1-4 --password-stdin\n  understudy user list -c site.toml\n  printf '%s\\n' \"$NEW_PW\" | understudy user passwd -c site.toml alice --password-stdin\n  understudy user del -c site.toml alice\n\nSee `understudy user <command> --help` for each command's examples.")]
    User(UserCmd),
    /// Manage API bearer tokens.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  understudy token create -c site.toml --user alice --expires 30d --channels 1-4\n  understudy token create -c site.toml --user prometheus --scope metrics\n  understudy token list -c site.toml\n  understudy token revoke -c site.toml 3\n\nSee `understudy token <command> --help` for each command's examples.")]
    Token(TokenCmd),
    /// List the audit trail and verify its hash chain.
    #[command(after_help = "Examples:\n  understudy audit -c site.toml --since now-24h\n  understudy audit -c site.toml --verify\n  understudy audit -c site.toml --since 2026-11-24T00:00:00Z --json | jq -c 'select(.action == \"login\")'")]
    Audit(AuditArgs),
    /// TLS of the HTTP API.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  understudy tls fingerprint -c site.toml")]
    Tls(TlsCmd),
    /// Run a self-contained demonstration on a temporary directory: simulated cameras, recording, export.
    #[command(after_help = "Examples:\n  understudy demo\n  understudy demo --cameras 8 --seconds 10 --dir /tmp/understudy-demo")]
    Demo(DemoArgs),
    /// Add or refresh a main's cameras from the main itself (Hikvision, Dahua) or over ONVIF.
    #[command(after_help = "Examples:\n  NVR_PW=… understudy import -c site.toml --main nvr-a --from hikvision://10.0.0.5 --user admin --password-env NVR_PW --check\n  understudy import -c site.toml --main nvr-b --from dahua://10.0.0.6 --user admin --password-stdin --camera-password-env CAM_PW --dry-run\n  understudy import -c site.toml --main lobby --from onvif://10.0.1.11 --from onvif://10.0.1.12 --user admin --password-env PW --probe tcp://10.0.0.7:80\n  understudy import -c site.toml --main lobby --discover --user admin --password-env PW --probe tcp://10.0.0.7:80\n  TOK=… understudy import -c site.toml --main box-a --from understudy://10.0.0.8:7878 --token-env TOK --fingerprint sha256:AB:CD:… --camera-password-env CAM_PW\n\nPasswords come only from the environment or stdin and are never printed; re-run to see what changed on the main.")]
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RecordingsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Failover channel number.
    #[arg(long)]
    pub channel: u32,
    /// Start of the range (RFC 3339, e.g. 2026-11-24T18:00:00Z, or "now-10m").
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range (RFC 3339 or "now").
    #[arg(long)]
    pub to: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long)]
    pub channel: u32,
    /// Start (RFC 3339 or "now-10m"); the export starts at the key frame at or before it.
    #[arg(long)]
    pub from: String,
    /// End (RFC 3339 or "now").
    #[arg(long)]
    pub to: String,
    /// Output MP4 file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Also write OUT.mp4.manifest.json (channel, range, box, SHA-256) and OUT.mp4.sig, an
    /// Ed25519 signature of the manifest by this box's key (made in state_dir on first use).
    #[arg(long)]
    pub sign: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A signed export (its .manifest.json and .sig beside it).
    pub file: PathBuf,
    /// The public key (hex) or fingerprint the signature must be made with.
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated cameras.
    #[arg(long, default_value_t = 4)]
    pub cameras: u32,
    /// Keep the demo's files in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds to record before each step (failure, recovery).
    #[arg(long, default_value_t = 6)]
    pub seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The TOML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The `[[main]]` to take over.
    #[arg(long)]
    pub main: String,
    /// How long to record, e.g. 60s.
    #[arg(long = "for", default_value = "60s")]
    pub r#for: String,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The TOML config file (merged in place: comments and other sections are kept).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The `[[main]]` to create or update.
    #[arg(long)]
    pub main: String,
    /// Where the cameras come from: onvif://HOST[:PORT] (repeatable: one camera each),
    /// hikvision://HOST[:PORT], dahua://HOST[:PORT], understudy://HOST[:PORT] (another
    /// Understudy box; port 7878 by default).
    #[arg(long)]
    pub from: Vec<String>,
    /// Find ONVIF cameras by WS-Discovery on the local network instead of --from.
    #[arg(long)]
    pub discover: bool,
    /// How long --discover listens for answers, e.g. 3s.
    #[arg(long, default_value = "3s")]
    pub discover_for: String,
    /// The main's (or the ONVIF cameras') user.
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_env: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// understudy:// sources: the API token (a user with the config permission) from this
    /// environment variable (else --user and a password log in).
    #[arg(long)]
    pub token_env: Option<String>,
    /// understudy:// sources: the other box's certificate, pinned by its SHA-256 fingerprint
    /// (`understudy tls fingerprint` on that box prints it: sha256:AB:CD:…).
    #[arg(long, conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// understudy:// sources: trust the certificates of this PEM file (e.g. that box's
    /// state_dir/tls/cert.pem) instead of the public roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Camera user when the source gives none (default: --user).
    #[arg(long)]
    pub camera_user: Option<String>,
    /// Camera password from this environment variable, when the source gives none.
    #[arg(long)]
    pub camera_password_env: Option<String>,
    /// The probe of a new main (default for NVR sources: tcp://HOST:PORT of the source).
    #[arg(long)]
    pub probe: Option<String>,
    /// Send one RTSP DESCRIBE per camera: proves URL and password, shows codec and resolution.
    #[arg(long)]
    pub check: bool,
    /// Show what would change without writing the config.
    #[arg(long)]
    pub dry_run: bool,
    /// Per-request timeout, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user; the password is read from stdin (one line).
    #[command(after_help = "Examples:\n  printf '%s\\n' \"$PW\" | understudy user add -c site.toml alice --role operator --channels 1-4 --password-stdin\n  understudy user add -c site.toml admin --role admin --password-stdin < /run/secrets/admin-pw")]
    Add {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// The channels the user sees, e.g. 1-4,7 (default: all).
        #[arg(long, default_value = "all")]
        channels: String,
        /// Read the password from stdin (required: there is no default password).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password (read from stdin); ends every session of the user.
    #[command(after_help = "Examples:\n  printf '%s\\n' \"$NEW_PW\" | understudy user passwd -c site.toml alice --password-stdin")]
    Passwd {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user with their sessions and tokens.
    #[command(after_help = "Examples:\n  understudy user del -c site.toml alice")]
    Del {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// List the users.
    #[command(after_help = "Examples:\n  understudy user list -c site.toml")]
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a bearer token for a user and print it (once: only its hash is kept).
    #[command(after_help = "Examples:\n  understudy token create -c site.toml --user alice --expires 30d --channels 1-4\n  understudy token create -c site.toml --user alice --expires 12h --role viewer > alice.token\n  understudy token create -c site.toml --user prometheus --scope metrics   # GET /metrics only, for Prometheus")]
    Create {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 30d or 12h (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
        /// Narrow the token to these of the user's channels, e.g. 1-4.
        #[arg(long, default_value = "all")]
        channels: String,
        /// Narrow the token to a lesser role's rights (viewer, operator).
        #[arg(long)]
        role: Option<String>,
        /// Narrow the token to one right: `metrics` gives GET /metrics only (for a Prometheus
        /// scraper: no footage, status or configuration). The user needs that right
        /// (operator or admin).
        #[arg(long)]
        scope: Option<String>,
    },
    /// List the tokens (ids, users, limits; never the tokens themselves).
    #[command(after_help = "Examples:\n  understudy token list -c site.toml")]
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a token by id (see `token list`).
    #[command(after_help = "Examples:\n  understudy token revoke -c site.toml 7")]
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only entries at or after this time (RFC 3339 or now-1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Check the hash chain of the whole trail; fails naming the first altered entry.
    #[arg(long)]
    pub verify: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Print the SHA-256 fingerprint of the API's certificate (generating it if needed).
    #[command(after_help = "Examples:\n  understudy tls fingerprint -c /etc/understudy/understudy.toml\n\nGive the fingerprint to the other box's `understudy import … --fingerprint`.")]
    Fingerprint(ConfigArg),
}
