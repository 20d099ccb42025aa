//! The `eventstore` binary: configuration, logging, start, wait for SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_eventstore_service::Config::parse();
    cairn_telemetry::logging::init("eventstore");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let service = cairn_eventstore_service::start(config, shutdown).await?;
    service.wait().await
}
