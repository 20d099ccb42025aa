//! W3C trace context across process boundaries: the `traceparent` of a span, to put into gRPC
//! metadata, HTTP headers, NATS headers and stored events; and a span's parent taken from one.
//!
//! With no exporter installed spans carry no OpenTelemetry context, [`traceparent`] is `None`, and
//! callers that relay a request pass the caller's own header on unchanged.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, if it is traced.
pub fn traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`, if it is traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the remote span that `traceparent` names. An absent or malformed value
/// leaves `span` a root: a bad header from a client never fails a request.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent else { return };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled, and then there is nothing to link.
        let _ = span.set_parent(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untraced_spans_have_no_traceparent() {
        assert_eq!(traceparent_of(&tracing::Span::none()), None);
        // A malformed header is ignored rather than failing.
        set_parent(&tracing::Span::none(), Some("not-a-traceparent"));
    }
}
