//! The `notifier` binary: configuration, logging, start, wait for SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_notifier::Config::parse();
    cairn_telemetry::logging::init("notifier");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let service = cairn_notifier::start(config, shutdown).await?;
    service.wait().await
}
