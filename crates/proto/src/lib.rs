//! Cairn's gRPC APIs, generated from the protobuf files under `proto/` at build time.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every Cairn proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));

/// Conversions between `google.protobuf.Timestamp` and `chrono` times, for every service.
pub mod time {
    use chrono::{DateTime, Utc};

    /// A time on the wire.
    pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }
    }

    /// A wire timestamp as a time; `None` when it is out of range.
    pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
    }
}

/// `cairn.eventstore.v1`: read access to the event log.
pub mod eventstore {
    pub mod v1 {
        tonic::include_proto!("cairn.eventstore.v1");
    }
}

/// `cairn.common.v1`: types shared by the APIs.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("cairn.common.v1");
    }
}

/// `cairn.user.v1`: users.
pub mod user {
    pub mod v1 {
        tonic::include_proto!("cairn.user.v1");
    }
}

/// `cairn.group.v1`: groups and members.
pub mod group {
    pub mod v1 {
        tonic::include_proto!("cairn.group.v1");
    }
}

/// `cairn.org.v1`: organisations and domains.
pub mod org {
    pub mod v1 {
        tonic::include_proto!("cairn.org.v1");
    }
}

/// `cairn.admin.v1`: instance administration.
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("cairn.admin.v1");
    }
}

/// `cairn.system.v1`: the deployment's instances, for system tokens only.
pub mod system {
    pub mod v1 {
        tonic::include_proto!("cairn.system.v1");
    }
}

/// `cairn.notification.v1`: the notifier's deliveries and email templates.
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("cairn.notification.v1");
    }
}

/// `cairn.action.v1`: targets, executions and the delivery log of the `actions` service.
pub mod action {
    pub mod v1 {
        tonic::include_proto!("cairn.action.v1");
    }
}
