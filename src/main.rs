//! The `understudy` binary: parses the command line and runs one command.

use clap::Parser;
use understudy::cli::{Cli, Command};
use understudy::{commands, logging};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.command.prints_only() {
        // Commands that only read local files and print (`recordings … | head -1`) end quietly
        // when the reader goes away, as Unix tools do (status 141), instead of panicking on a
        // failed print. The others serve or open sockets (run, camsim, demo, drill, import) and
        // keep SIGPIPE ignored: a peer closing a socket must never kill them; their prints
        // (`outln!`) drop what a closed stdout can't take.
        // SAFETY: called before any thread is started; restores the default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let format = cli.log_format.or_else(|| cli.command.config_path().and_then(logging::peek_log_format)).unwrap_or_default();
    logging::init(format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("understudy").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(a) => commands::run::run(a).await,
            Command::Recordings(a) => commands::recordings::run(a).await,
            Command::Export(a) => commands::export::run(a).await,
            Command::Verify(a) => commands::evidence::run(a).await,
            Command::Reindex(a) => commands::reindex::run(a).await,
            Command::Check(a) => commands::check::run(a).await,
            Command::Camsim(a) => commands::camsim(a).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Drill(a) => commands::drill::run(a).await,
            Command::Import(a) => commands::import::run(a).await,
            Command::User(a) => commands::users::user(a).await,
            Command::Token(a) => commands::users::token(a).await,
            Command::Audit(a) => commands::audit::run(a).await,
            Command::Tls(a) => commands::audit::tls(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
