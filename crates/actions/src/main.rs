//! The `actions` binary: configuration, logging and traces, start, wait for SIGTERM, flush.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_actions::Config::parse();
    let telemetry = cairn_telemetry::logging::init("actions");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let outcome = match cairn_actions::start(config, shutdown).await {
        Ok(service) => service.wait().await,
        Err(error) => Err(error),
    };
    // Last, so the spans of the shutdown itself are sent too.
    telemetry.shutdown().await;
    outcome
}
