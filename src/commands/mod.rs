//! The `understudy` subcommands, one module each.

/// `println!` for the commands that keep SIGPIPE ignored because they also serve or make
/// network connections (`demo`, `drill`, `import`; see `Command::prints_only`): when stdout's
/// reader has gone (`… | head -1`), the line is dropped and the command carries on with its
/// work and cleanup and exits 0, where `println!` would panic ("failed printing to stdout").
macro_rules! outln {
    ($($arg:tt)*) => { $crate::commands::print_line(format_args!($($arg)*)) };
}

pub mod audit;
pub mod demo;
pub mod drill;
pub mod evidence;
pub mod export;
pub mod import;
pub mod recordings;
pub mod reindex;
pub mod run;
pub mod time;
pub mod users;

/// Writes one line to stdout (see `outln!`). A reader gone away drops it silently; any other
/// write error (a full disk behind a redirection) is reported once on stderr, and the command
/// goes on: its output is a report, not its work.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() != std::io::ErrorKind::BrokenPipe && !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("warning: cannot write to stdout: {e}");
        }
    }
}

/// What a command failing tells the user (printed once by `main`).
pub type CmdResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub mod check;

/// `understudy camsim`: serve until SIGTERM/SIGINT.
pub async fn camsim(args: crate::camsim::CamsimArgs) -> CmdResult {
    let token = tokio_util::sync::CancellationToken::new();
    crate::signals::cancel_on_signal(token.clone())?;
    crate::camsim::run_cli(args, token).await?;
    Ok(())
}
