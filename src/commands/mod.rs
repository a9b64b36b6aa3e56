//! The `understudy` subcommands, one module each.

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
