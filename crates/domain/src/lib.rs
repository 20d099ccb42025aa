//! The bottom of Cairn's crate graph: identifiers, the event envelope, global positions and the
//! clock. Nothing here performs I/O; every type parses its input at the edge so that the rest of the
//! system cannot hold a malformed name or id.

pub mod clock;
pub mod event;
pub mod ids;
pub mod names;
pub mod position;

pub use clock::{Clock, FixedClock, SystemClock};
pub use event::{EventDraft, StoredEvent};
pub use ids::{AggregateId, EventId, InstanceId};
pub use names::{AggregateType, EventType, NameError};
pub use position::{Position, PositionParseError};
