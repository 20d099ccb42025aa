//! The `scim-gateway` binary: configuration, logging, start, wait for SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cairn_scim_gateway::Config::parse();
    cairn_telemetry::logging::init("scim-gateway");
    let shutdown = cairn_telemetry::shutdown::on_signal();
    let service = cairn_scim_gateway::start(config, shutdown).await?;
    service.wait().await
}
