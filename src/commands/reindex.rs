//! `understudy reindex`: rebuild the catalog from the files on the volumes.

use indicatif::{ProgressBar, ProgressStyle};

use super::CmdResult;
use crate::cli::ConfigArg;
use crate::config::Config;
use crate::station::storage_config;

pub async fn run(args: ConfigArg) -> CmdResult {
    let cfg = Config::load(&args.config)?;
    let sc = storage_config(&cfg);
    let summary = tokio::task::spawn_blocking(move || -> Result<_, understudy_storage::Error> {
        let store = understudy_storage::Store::open(sc)?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("reindexing [{bar:40}] {pos}/{len} files eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let s = store.reindex(&mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        store.shutdown()?;
        s
    })
    .await??;
    eprintln!("reindex done: {summary:?}");
    Ok(())
}
