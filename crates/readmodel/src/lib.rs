//! The read models of Cairn, each a [`cairn_projection::Projection`]: instances, organisations
//! with their domains, users (human and machine), groups with a row per membership, and
//! milestones. [`all`] is what the projector runs.

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

/// The projections a users query must wait for.
pub const USER_PROJECTIONS: &[&str] = &["users"];
/// The projections a groups query must wait for.
pub const GROUP_PROJECTIONS: &[&str] = &["groups"];
/// The projections a member listing must wait for: it joins the members' user rows.
pub const MEMBER_PROJECTIONS: &[&str] = &["groups", "users"];

pub(crate) fn rejected(error: DomainError) -> ReduceError {
    ReduceError::Rejected(error.to_string())
}

pub(crate) fn types(names: &[&str]) -> Vec<EventType> {
    names.iter().filter_map(|n| EventType::parse(*n).ok()).collect()
}
