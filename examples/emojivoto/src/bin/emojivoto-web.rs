//! `emojivoto-web`: the HTTP/1.1 front end on `0.0.0.0:$WEB_PORT`, calling the emoji
//! service at `$EMOJISVC_HOST` and the voting service at `$VOTINGSVC_HOST`.

use std::process::ExitCode;

use emojivoto::{config::WebConfig, process, web};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    process::run(async {
        let shutdown = process::shutdown_signal()?;
        let config = WebConfig::from_env()?;
        let backends = web::Backends::connect_lazy(&config)?;
        let listener = process::listen(config.port).await?;
        tracing::info!(emoji = %config.emoji_addr, voting = %config.voting_addr, "backends");
        web::serve(listener, backends, shutdown).await;
        Ok(())
    })
    .await
}
