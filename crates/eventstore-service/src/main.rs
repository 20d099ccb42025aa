//! The `eventstore` binary: configuration, logging and traces, start, wait for SIGTERM, flush.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_eventstore_service::Config::parse();
    let telemetry = cairn_telemetry::logging::init("eventstore");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let outcome = match cairn_eventstore_service::start(config, shutdown).await {
        Ok(service) => service.wait().await,
        Err(error) => Err(error),
    };
    // Last, so the spans of the shutdown itself are sent too.
    telemetry.shutdown().await;
    outcome
}
