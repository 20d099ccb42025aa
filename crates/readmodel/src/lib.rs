//! Cairn's read models: the tables of the `projections` schema that answer queries (instances,
//! organisations with their domains, users, groups with a row per membership, milestones), and
//! everything that touches them. A column is renamed here and nowhere else.
//!
//! - [`rows`]: the row types, with field names equal to column names.
//! - [`projections`]: the writers, one [`cairn_projection::Projection`] per read model; [`all`]
//!   is what the projector runs.
//! - [`reads`]: the queries behind the gRPC APIs, scoped to one tenant.
//! - [`scim`]: the queries behind the SCIM gateway, with the SCIM attribute → column maps that
//!   the pure filter translator of `cairn-scim` is applied to.
//! - [`wait`]: read-your-writes: which projections each read waits for, and the
//!   [`PositionWaiter`] that waits.
//!
//! The projection framework's own bookkeeping tables (`projection_states`,
//! `projection_failed_events`, `projector_replicas`) are not read models: `cairn-projection` owns
//! them, and with them the waiter's query.

pub mod projections;
pub mod reads;
pub mod rows;
pub mod scim;
pub mod wait;

pub use projections::{
    GroupsProjection, InstancesProjection, MilestonesProjection, OrgsProjection, UsersProjection, all,
};
pub use reads::Scope;
pub use wait::{
    CommitListener, GROUP_PROJECTIONS, MEMBER_PROJECTIONS, PositionWaiter, SCIM_PROJECTIONS,
    USER_PROJECTIONS, USER_WITH_GROUPS_PROJECTIONS, WaitError,
};
