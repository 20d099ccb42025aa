//! One SCIM request is one trace: spans of the SCIM gateway, command-api, the relay and the
//! projector, exported over OTLP/gRPC to a collector started by this test, share one trace id and
//! form one tree whose root is the gateway's request.
//!
//! The whole stack runs in this process, so one exporter sends the spans of every component; each
//! span says which component made it (`cairn.service` on request spans, its own name otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_stack::Stack;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_scim_create_is_one_trace_across_gateway_api_relay_and_projector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let telemetry = cairn_telemetry::logging::init_with("cairn-stack", Some(&endpoint));
    assert!(telemetry.exporting(), "the exporter was not installed");

    let stack = Stack::start().await.unwrap();
    let created = stack
        .scim(
            "POST",
            "/Users",
            Some(&serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "traced.user",
                "name": {"givenName": "Traced", "familyName": "User"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);

    // Wait (bounded) until the collector holds the gateway's span and, in its trace, the spans of
    // command-api, the relay and the users projection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (root, trace) = loop {
        telemetry.flush().await;
        let found = {
            let spans = collector.spans.lock().unwrap();
            spans
                .iter()
                .find(|s| s.name == "POST /scim/v2/Users")
                .map(|root| {
                    let trace: Vec<Span> = spans
                        .iter()
                        .filter(|s| s.trace_id == root.trace_id)
                        .cloned()
                        .collect();
                    (root.clone(), trace)
                })
        };
        if let Some((root, trace)) = found {
            let has = |pred: &dyn Fn(&Span) -> bool| trace.iter().any(pred);
            if has(&|s| attribute(s, "cairn.service") == Some("command-api"))
                && has(&|s| s.name == "relay.publish")
                && has(&|s| s.name == "projection.apply" && attribute(s, "projection") == Some("users"))
            {
                break (root, trace);
            }
        }
        if Instant::now() > deadline {
            let spans = collector.spans.lock().unwrap();
            let seen: Vec<String> = spans
                .iter()
                .map(|s| {
                    format!(
                        "{} trace={} parent={}",
                        s.name,
                        hex(&s.trace_id),
                        hex(&s.parent_span_id)
                    )
                })
                .collect();
            panic!(
                "the trace did not reach every component within 30 s; spans seen:\n{}",
                seen.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval of the bounded wait
    };

    // The gateway's request is the root: the client sent no trace context.
    assert!(root.parent_span_id.is_empty(), "the gateway span has a parent");
    assert_eq!(attribute(&root, "cairn.service"), Some("scim-gateway"));
    // Every other span of the trace hangs below a span of the same trace: one tree, no orphans.
    let ids: Vec<&[u8]> = trace.iter().map(|s| s.span_id.as_slice()).collect();
    for span in trace.iter().filter(|s| s.span_id != root.span_id) {
        assert!(
            ids.contains(&span.parent_span_id.as_slice()),
            "{} has a parent outside the trace",
            span.name
        );
    }
    // command-api's request span is a direct child of the gateway's (the traceparent crossed the
    // gRPC call), and the relay's and projector's spans continue from command-api's side.
    let api = trace
        .iter()
        .find(|s| attribute(s, "cairn.service") == Some("command-api"))
        .unwrap();
    assert_eq!(api.parent_span_id, root.span_id);
    assert!(
        api.name.contains("UserService/"),
        "command-api span named {}",
        api.name
    );
    for name in ["relay.publish", "projection.apply"] {
        let span = trace.iter().find(|s| s.name == name).unwrap();
        assert_ne!(
            span.parent_span_id, root.span_id,
            "{name} hangs directly off the gateway"
        );
    }

    // The same request, counted per route on both sides.
    let scim_metrics = cairn_stack::request(stack.scim, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert!(
        scim_metrics
            .body
            .contains(r#"cairn_scim_http_requests_total{route="/scim/v2/Users",status="201"} 1"#),
        "{}",
        scim_metrics.body
    );
    assert!(
        scim_metrics
            .body
            .contains("cairn_scim_http_request_duration_seconds_bucket")
    );
    let api_metrics = cairn_stack::request(stack.api_http, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert!(
        api_metrics.body.contains(
            r#"cairn_api_grpc_requests_total{route="/cairn.user.v1.UserService/AddHumanUser",status="0"} 1"#
        ),
        "{}",
        api_metrics.body
    );

    stack.stop().await.unwrap();
    telemetry.shutdown().await;
}
