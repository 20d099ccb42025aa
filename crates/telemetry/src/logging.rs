//! JSON logs on stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`). Messages are lower-case and
//! structured; secrets never appear in fields (spans use `skip_all` and name their fields).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing), so
/// tests can start several services in one process.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let installed = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr)
        .try_init();
    if installed.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}
