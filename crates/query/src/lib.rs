//! The read side: row types of the read models ([`rows`]) and read-your-writes ([`wait`]).

pub mod reads;
pub mod rows;
pub mod wait;

pub use wait::{PositionWaiter, WaitError};
