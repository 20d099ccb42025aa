//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the descriptor set that
//! server reflection serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "cairn/eventstore/v1/eventstore.proto",
        "cairn/common/v1/common.proto",
        "cairn/user/v1/user.proto",
        "cairn/group/v1/group.proto",
        "cairn/org/v1/org.proto",
        "cairn/admin/v1/admin.proto",
        "cairn/notification/v1/notification.proto",
        "cairn/system/v1/system.proto",
        "cairn/action/v1/action.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("cairn_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
