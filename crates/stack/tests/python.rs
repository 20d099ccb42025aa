//! The gRPC API from a client not written in Rust: Python `grpcio` with stubs generated from
//! `proto/` at test time (`scripts/test` installs grpcio and grpcio-tools and sets
//! `CAIRN_TEST_PYTHON`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_grpcio_client_adds_and_reads_a_user() {
    let python = std::env::var("CAIRN_TEST_PYTHON")
        .expect("CAIRN_TEST_PYTHON must point at the test venv's python (scripts/test sets it)");
    let stack = Stack::start().await.unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = tokio::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_client.py"))
        .arg(format!("{root}/proto"))
        .arg(stack.grpc.to_string())
        .arg(stack.admin.token.as_str())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["user_name"], "py-user");
    assert_eq!(result["family_name"], "van Rossum");
    assert_eq!(result["email"], "guido@example.com");
    assert_eq!(result["unauthenticated"], "UNAUTHENTICATED");
    assert_eq!(result["invalid"], "INVALID_ARGUMENT");
    stack.stop().await.unwrap();
}
