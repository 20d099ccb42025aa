//! The writers: each read model as a [`cairn_projection::Projection`] that turns events into rows
//! of its tables. They live beside the rows ([`crate::rows`]) and the queries ([`crate::reads`],
//! [`crate::scim`]) so that a table and everything that touches it change in one crate.

mod groups;
mod milestones;
mod orgs;
mod users;

pub use groups::GroupsProjection;
pub use milestones::MilestonesProjection;
pub use orgs::{InstancesProjection, OrgsProjection};
pub use users::UsersProjection;

use cairn_domain::{DomainError, EventType};
use cairn_projection::{Projection, ReduceError};
use std::sync::Arc;

/// Every read model, as the projector runs them.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(InstancesProjection),
        Arc::new(OrgsProjection),
        Arc::new(UsersProjection),
        Arc::new(GroupsProjection),
        Arc::new(MilestonesProjection),
    ]
}

pub(crate) fn rejected(error: DomainError) -> ReduceError {
    ReduceError::Rejected(error.to_string())
}

pub(crate) fn types(names: &[&str]) -> Vec<EventType> {
    names.iter().filter_map(|n| EventType::parse(*n).ok()).collect()
}
