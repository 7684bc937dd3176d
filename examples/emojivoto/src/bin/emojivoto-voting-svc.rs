//! `emojivoto-voting-svc`: counts votes over gRPC on `0.0.0.0:$GRPC_PORT`.

use std::process::ExitCode;

use emojivoto::{config::GrpcConfig, process, voting::BallotBox};
use tonic::transport::Server;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    process::run(async {
        let shutdown = process::shutdown_signal()?;
        let config = GrpcConfig::from_env()?;
        let listener = process::listen(config.port).await?;
        Server::builder()
            .add_service(BallotBox::default().into_server())
            .serve_with_incoming_shutdown(process::grpc_incoming(listener), shutdown)
            .await?;
        Ok(())
    })
    .await
}
