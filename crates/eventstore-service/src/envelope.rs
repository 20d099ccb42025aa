//! How an event looks on the stream: subject, headers and body. Shared by the relay, which
//! publishes, and by anyone reading the stream back (tests, the chaos run's reader).

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use cairn_domain::StoredEvent;

/// Header with the event's transaction position.
pub const HEADER_POSITION: &str = "Cairn-Position";
/// Header with the event's offset within its transaction.
pub const HEADER_OFFSET: &str = "Cairn-Offset";
/// Header with the event's aggregate sequence.
pub const HEADER_SEQUENCE: &str = "Cairn-Sequence";
/// Header with the event type.
pub const HEADER_EVENT_TYPE: &str = "Cairn-Event-Type";
/// W3C trace context recorded at push time.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// The subject of `event`: `<prefix>.<instance>.<aggregate_type>.<event_type>`.
pub fn subject(prefix: &str, event: &StoredEvent) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        event.instance_id, event.aggregate_type, event.event_type
    )
}

/// The message of `event`: its JSON envelope, `Nats-Msg-Id` (the event id, for de-duplication),
/// `Nats-Expected-Last-Sequence` (`expected_last`, the stream-level fence), the position, sequence
/// and type headers, and the trace context of the request that wrote it.
pub fn message(event: &StoredEvent, expected_last: u64) -> Result<PublishMessage, String> {
    let body = serde_json::to_vec(event).map_err(|e| format!("cannot encode event: {e}"))?;
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
        expected_last.to_string().as_str(),
    );
    headers.insert(HEADER_POSITION, event.position.position.to_string().as_str());
    headers.insert(HEADER_OFFSET, event.position.offset.to_string().as_str());
    headers.insert(HEADER_SEQUENCE, event.sequence.to_string().as_str());
    headers.insert(HEADER_EVENT_TYPE, event.event_type.as_str());
    if let Some(traceparent) = &event.trace_context {
        // The publication joins the trace of the request that wrote the event; consumers of
        // the stream continue from this span.
        let span = tracing::info_span!(
            "relay.publish",
            otel.kind = "producer",
            cairn.service = "eventstore",
            position = %event.position,
            event_type = %event.event_type,
        );
        cairn_telemetry::propagation::set_parent(&span, Some(traceparent));
        let header =
            cairn_telemetry::propagation::traceparent_of(&span).unwrap_or_else(|| traceparent.clone());
        headers.insert(HEADER_TRACEPARENT, header.as_str());
    }
    Ok(PublishMessage::build().payload(body.into()).headers(headers))
}
