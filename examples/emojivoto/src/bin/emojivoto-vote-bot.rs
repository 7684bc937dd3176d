//! `emojivoto-vote-bot`: votes through the web at `$WEB_HOST`, `$VOTE_BOT_RPS` times a second.

use std::process::ExitCode;

use emojivoto::{bot, config::BotConfig, process};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    process::run(async {
        let shutdown = process::shutdown_signal()?;
        let config = BotConfig::from_env()?;
        bot::run(config, shutdown).await;
        Ok(())
    })
    .await
}
