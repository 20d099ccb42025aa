//! Authentication is checked everywhere, not only where a test happened to look: every RPC of every
//! service in `proto/` that the stack serves (listed from the compiled descriptor set, so a new RPC
//! is covered the day it is added), every SCIM route and every REST route, each called without a
//! token and with a malformed one, answers UNAUTHENTICATED / 401 and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_stack::Stack;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// A codec that sends and receives raw protobuf bytes, so any method can be called by path.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// `(path, server streaming)` of every method of the services in `proto/`.
fn methods() -> Vec<(String, String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(cairn_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                methods.push((
                    full.clone(),
                    format!("/{full}/{}", method.name()),
                    method.server_streaming(),
                ));
            }
        }
    }
    methods
}

async fn call(addr: std::net::SocketAddr, path: &str, streaming: bool, token: Option<&str>) -> Code {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // An empty message is a valid encoding of every request type (all fields at their defaults).
    let mut request = tonic::Request::new(Vec::new());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
    }
    let path = path.parse().unwrap();
    let result = if streaming {
        match grpc.server_streaming(request, path, Raw).await {
            Ok(response) => response.into_inner().message().await.map(|_| ()),
            Err(status) => Err(status),
        }
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn event_count(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM eventstore.events")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_and_route_refuses_a_missing_or_malformed_token() {
    let stack = Stack::start().await.unwrap();
    let before = event_count(&stack).await;

    let mut checked = Vec::new();
    for (service, path, streaming) in methods() {
        let addr = if service.starts_with("cairn.eventstore.") {
            stack.eventstore_grpc
        } else if service.starts_with("cairn.notification.") || service.starts_with("cairn.notifier.") {
            // The notifier is not part of this stack; its own tests cover its service.
            continue;
        } else {
            stack.grpc
        };
        for token in [
            None,
            Some("Bearer cairn_pat_not-a-real-token"),
            Some("Basic Zm9vOmJhcg=="),
        ] {
            let code = call(addr, &path, streaming, token).await;
            assert_eq!(code, Code::Unauthenticated, "{path} with token {token:?}");
        }
        checked.push(path);
    }
    assert!(
        checked.len() >= 20,
        "only {} RPCs were found in the descriptor set: {checked:?}",
        checked.len()
    );
    for expected in [
        "/cairn.user.v1.UserService/AddHumanUser",
        "/cairn.eventstore.v1.EventStoreService/SubscribeEvents",
    ] {
        assert!(
            checked.iter().any(|p| p == expected),
            "{expected} was not checked"
        );
    }

    let id = "0190a0b0-0000-7000-8000-000000000001";
    let scim_routes = [
        ("GET", "/Users".to_owned()),
        ("POST", "/Users".to_owned()),
        ("POST", "/Users/.search".to_owned()),
        ("GET", format!("/Users/{id}")),
        ("PUT", format!("/Users/{id}")),
        ("PATCH", format!("/Users/{id}")),
        ("DELETE", format!("/Users/{id}")),
        ("GET", "/Groups".to_owned()),
        ("POST", "/Groups".to_owned()),
        ("POST", "/Groups/.search".to_owned()),
        ("GET", format!("/Groups/{id}")),
        ("PUT", format!("/Groups/{id}")),
        ("PATCH", format!("/Groups/{id}")),
        ("DELETE", format!("/Groups/{id}")),
        ("POST", "/.search".to_owned()),
        ("POST", "/Bulk".to_owned()),
        ("GET", "/Me".to_owned()),
        ("GET", "/ServiceProviderConfig".to_owned()),
        ("GET", "/ResourceTypes".to_owned()),
        ("GET", "/ResourceTypes/User".to_owned()),
        ("GET", "/Schemas".to_owned()),
        (
            "GET",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User".to_owned(),
        ),
    ];
    let body = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"intruder"}"#;
    for (method, path) in &scim_routes {
        for token in [None, Some("Bearer not-a-token")] {
            let mut headers = vec![("content-type", "application/scim+json")];
            if let Some(token) = token {
                headers.push(("authorization", token));
            }
            let response = cairn_stack::request(
                stack.scim,
                method,
                &format!("/scim/v2{path}"),
                &headers,
                Some(body),
            )
            .await
            .unwrap();
            assert_eq!(
                response.status, 401,
                "SCIM {method} {path} with {token:?}: {}",
                response.body
            );
            let error = response.json();
            assert_eq!(error["status"], "401", "SCIM {method} {path}: {error}");
            assert!(
                error["schemas"][0]
                    .as_str()
                    .is_some_and(|s| s.ends_with(":api:messages:2.0:Error")),
                "SCIM {method} {path}: {error}"
            );
        }
    }

    let rest_routes = [
        ("POST", format!("/api/v1/users/{id}/email/verify")),
        ("POST", format!("/api/v1/users/{id}/email/resend-code")),
        ("GET", "/api/v1/admin/projections/health".to_owned()),
        ("GET", "/api/v1/admin/projections/failed-events".to_owned()),
        (
            "POST",
            format!("/api/v1/admin/projections/failed-events/users/{id}/1/0/retry"),
        ),
        (
            "POST",
            format!("/api/v1/admin/projections/failed-events/users/{id}/1/0/skip"),
        ),
    ];
    for (method, path) in &rest_routes {
        for token in [None, Some("Bearer not-a-token")] {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(token) = token {
                headers.push(("authorization", token));
            }
            let response = cairn_stack::request(
                stack.api_http,
                method,
                path,
                &headers,
                Some(r#"{"code":"123456"}"#),
            )
            .await
            .unwrap();
            assert_eq!(
                response.status, 401,
                "REST {method} {path} with {token:?}: {}",
                response.body
            );
            assert_eq!(
                response.header("content-type"),
                Some("application/problem+json"),
                "REST {method} {path}"
            );
        }
    }

    assert_eq!(event_count(&stack).await, before, "a refused call wrote events");
    stack.stop().await.unwrap();
}

/// Every RPC with every kind of token, so that a new RPC cannot ship unguarded: none is refused
/// everywhere; a system token is admitted by the system API only (and refused as PERMISSION_DENIED
/// by every instance API, SCIM and REST route); an instance's admin token is admitted by every
/// instance API and refused by the system API; the event store service takes neither (it has its
/// own service token). "Admitted" means the call got past authentication and authorisation: the
/// empty request may still be invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_admits_exactly_the_token_kinds_it_should() {
    let stack = Stack::start().await.unwrap();
    let system = format!("Bearer {}", stack.system_token().await.unwrap());
    let admin = format!("Bearer {}", stack.admin.token.as_str());
    let refused = |code: Code| matches!(code, Code::Unauthenticated | Code::PermissionDenied);
    let mut checked = 0;
    for (service, path, streaming) in methods() {
        if service.starts_with("cairn.notification.") || service.starts_with("cairn.notifier.") {
            continue; // not served by this stack; the notifier's tests cover its service
        }
        let eventstore = service.starts_with("cairn.eventstore.");
        let addr = if eventstore {
            stack.eventstore_grpc
        } else {
            stack.grpc
        };
        let system_api = service == "cairn.system.v1.SystemService";
        let none = call(addr, &path, streaming, None).await;
        assert_eq!(none, Code::Unauthenticated, "{path} without a token");
        let with_system = call(addr, &path, streaming, Some(&system)).await;
        let with_admin = call(addr, &path, streaming, Some(&admin)).await;
        if eventstore {
            assert_eq!(with_system, Code::Unauthenticated, "{path} with a system token");
            assert_eq!(with_admin, Code::Unauthenticated, "{path} with an instance token");
        } else if system_api {
            assert!(
                !refused(with_system),
                "{path} refuses a system token: {with_system:?}"
            );
            assert_eq!(
                with_admin,
                Code::PermissionDenied,
                "{path} with an instance token"
            );
        } else {
            assert_eq!(with_system, Code::PermissionDenied, "{path} with a system token");
            assert!(
                !refused(with_admin),
                "{path} refuses the instance admin: {with_admin:?}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} RPCs checked");
    for (method, path) in [
        ("GET", "/api/v1/admin/projections/health"),
        ("GET", "/api/v1/admin/projections/failed-events"),
    ] {
        let response =
            cairn_stack::request(stack.api_http, method, path, &[("authorization", &system)], None)
                .await
                .unwrap();
        assert_eq!(
            response.status, 403,
            "REST {method} {path} with a system token: {}",
            response.body
        );
    }
    stack.stop().await.unwrap();
}
