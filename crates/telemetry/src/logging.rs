//! JSON logs on stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`), and OpenTelemetry traces
//! exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Messages are lower-case and
//! structured; secrets never appear in fields (spans use `skip_all` and name their fields).
//!
//! The two outputs are filtered apart: `RUST_LOG` chooses what is logged, while every span at
//! `INFO` or above is exported whatever `RUST_LOG` says, so turning logs down never breaks a trace.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variable naming the OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// What [`init`] installed. Keep it for the life of the service and call [`Telemetry::shutdown`]
/// last, so the spans still buffered are sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every finished span now (tests use it before they look at what a collector got).
    pub async fn flush(&self) {
        if let Some(provider) = self.provider.clone() {
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "flushing traces failed");
            }
        }
    }

    /// Flushes and stops the exporter. Export is bounded by the SDK's own timeout, so a collector
    /// that is gone cannot hold the shutdown.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The processor's shutdown blocks on its export task, which runs on this runtime.
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = stopped {
                eprintln!("stopping the trace exporter failed: {error}");
            }
        }
    }
}

/// Installs the global subscriber, exporting traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
/// Must run inside the tokio runtime. Calling it again is harmless (later calls install nothing),
/// so tests can start several services in one process.
pub fn init(service: &'static str) -> Telemetry {
    let endpoint = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty());
    init_with(service, endpoint.as_deref())
}

/// [`init`] with an explicit collector endpoint (`None`: no export).
pub fn init_with(service: &'static str, endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let (provider, problem) = match endpoint.map(|e| exporter(service, e)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(problem)) => (None, Some(problem)),
        None => (None, None),
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cairn"))
            .with_filter(LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    if installed.is_err() {
        // Another service of this process installed the subscriber (and its exporter) first.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Telemetry::default();
    }
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        traces = endpoint.filter(|_| provider.is_some()).unwrap_or("off"),
        "starting"
    );
    if let Some(problem) = problem {
        tracing::error!(%problem, "traces are not exported");
    }
    Telemetry { provider }
}

fn exporter(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(service)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build())
}
