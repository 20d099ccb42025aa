//! Identifiers. Every id is a UUID under a newtype, so an instance id can never be passed where an
//! aggregate id is expected. New ids are UUIDv7: time-ordered, which keeps B-tree inserts local.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// A tenant: every row and every event belongs to exactly one instance.
    InstanceId
);
impl InstanceId {
    /// The nil id: no tenant. It owns nothing but what spans tenants (the deployment-wide claims of
    /// instance domains, the idempotency keys of system calls); no instance can have it.
    pub const SYSTEM: InstanceId = InstanceId(Uuid::nil());
}

uuid_id!(
    /// The id of one aggregate (a user, a group, an organisation, ...).
    AggregateId
);
uuid_id!(
    /// The id of one event; published as `Nats-Msg-Id` so JetStream de-duplicates re-publishes.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings() {
        let id = InstanceId::new();
        let parsed: InstanceId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("not-a-uuid".parse::<AggregateId>().is_err());
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b, "UUIDv7 ids must sort by creation");
    }
}
