//! Cairn's gRPC APIs, generated from the protobuf files under `proto/` at build time.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every Cairn proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));

/// `cairn.eventstore.v1`: read access to the event log.
pub mod eventstore {
    pub mod v1 {
        tonic::include_proto!("cairn.eventstore.v1");
    }
}
