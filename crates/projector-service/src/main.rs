//! The `projector` binary: configuration, logging, start, wait for SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_projector_service::Config::parse();
    cairn_telemetry::logging::init("projector");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let service = cairn_projector_service::start(config, shutdown).await?;
    service.wait().await
}
