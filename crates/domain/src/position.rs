//! The global position of an event.
//!
//! A position is the pair (transaction position, offset within that transaction). In the
//! PostgreSQL store the transaction position is the id (`xid8`) of the transaction that pushed
//! the event, which is what makes gap-free tailing possible: see `docs/ARCHITECTURE.md`. Positions
//! order lexicographically, and the text form `"<position>.<offset>"` is the consistency token
//! that commands return and queries accept.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A global position: every event has exactly one, and a reader that tails the store sees events in
/// strictly increasing position order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Position {
    /// The position of the pushing transaction (shared by all events of one push).
    pub position: i64,
    /// The event's index within its push, starting at 0.
    pub offset: i32,
}

impl Position {
    /// Before every event.
    pub const ZERO: Position = Position {
        position: 0,
        offset: 0,
    };

    /// A position from its parts.
    pub const fn new(position: i64, offset: i32) -> Self {
        Self { position, offset }
    }

    /// True for [`Position::ZERO`].
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.position, self.offset)
    }
}

/// A consistency token that is not `"<position>.<offset>"` with two non-negative integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is \"<position>.<offset>\" with two non-negative integers")]
pub struct PositionParseError;

impl FromStr for Position {
    type Err = PositionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (position, offset) = s.split_once('.').unwrap_or((s, "0"));
        let position: i64 = position.parse().map_err(|_| PositionParseError)?;
        let offset: i32 = offset.parse().map_err(|_| PositionParseError)?;
        if position < 0 || offset < 0 {
            return Err(PositionParseError);
        }
        Ok(Self { position, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_position_then_offset() {
        let mut v = vec![
            Position::new(5, 1),
            Position::new(4, 9),
            Position::new(5, 0),
            Position::ZERO,
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                Position::ZERO,
                Position::new(4, 9),
                Position::new(5, 0),
                Position::new(5, 1)
            ]
        );
    }

    #[test]
    fn text_form_round_trips() {
        let p = Position::new(123_456, 7);
        assert_eq!(p.to_string(), "123456.7");
        assert_eq!("123456.7".parse::<Position>(), Ok(p));
        assert_eq!("42".parse::<Position>(), Ok(Position::new(42, 0)));
        for bad in ["", "x", "1.x", "-1.0", "1.-2", "1.2.3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }
}
