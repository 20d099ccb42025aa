//! Read-your-writes, from the reader's side: which projections each read must wait for before it
//! runs, named here beside the queries that read their tables, and the [`PositionWaiter`] that
//! waits.
//!
//! The waiter itself lives in `cairn-projection` (`cairn_projection::wait`): it reads
//! `projections.projection_states` and listens on the commit channel, both of which the projection
//! framework writes, so the table, the channel and the one query over them stay in one crate. It
//! is re-exported here so that a service reads read models through this crate alone.

pub use cairn_projection::wait::{CommitListener, PositionWaiter, WaitError};

/// The projections a users query must wait for.
pub const USER_PROJECTIONS: &[&str] = &["users"];
/// The projections a groups query must wait for.
pub const GROUP_PROJECTIONS: &[&str] = &["groups"];
/// The projections a member listing must wait for: it joins the members' user rows.
pub const MEMBER_PROJECTIONS: &[&str] = &["groups", "users"];
/// The projections a user read with the groups it belongs to must wait for.
pub const USER_WITH_GROUPS_PROJECTIONS: &[&str] = &["users", "groups"];
/// The projections every SCIM read waits for: users with their groups, groups with their members.
pub const SCIM_PROJECTIONS: &[&str] = &["users", "groups"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_awaited_projection_is_one_the_projector_runs() {
        let names: Vec<&str> = crate::all().iter().map(|p| p.name()).collect();
        for set in [
            USER_PROJECTIONS,
            GROUP_PROJECTIONS,
            MEMBER_PROJECTIONS,
            USER_WITH_GROUPS_PROJECTIONS,
            SCIM_PROJECTIONS,
        ] {
            for name in set {
                assert!(names.contains(name), "{name} is not a projection: {names:?}");
            }
        }
    }
}
