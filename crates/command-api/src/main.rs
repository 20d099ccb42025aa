//! The `command-api` binary: configuration, logging, start, wait for SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_command_api::Config::parse();
    cairn_telemetry::logging::init("command-api");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let service = cairn_command_api::start(config, shutdown).await?;
    service.wait().await
}
