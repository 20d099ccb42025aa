//! Reconciliation's decisions, pure and unit-tested: what the stream's last message says
//! ([`LastMessage`]), what that means next to the relay's recorded cursor ([`Finding`]), and where
//! publishing resumes ([`plan`]). The relay ([`crate::relay`]) does the I/O around them.

use crate::lease::Recorded;
use async_nats::jetstream::stream::RawMessageErrorKind;
use cairn_domain::Position;

/// True when a failed lookup of a message by sequence is JetStream's answer "no such message"
/// (it expired or was deleted); every other failure (a timeout, no responders, a refused request,
/// any other JetStream error) says nothing about the message.
pub(crate) fn lookup_found_nothing(kind: &RawMessageErrorKind) -> bool {
    matches!(kind, RawMessageErrorKind::NoMessageFound)
}

/// The stream's last message, as reconciliation found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastMessage {
    /// The stream never held a message (its last sequence is 0).
    Empty,
    /// The last message is there and carries this event position.
    At(Position),
    /// The stream's last sequence is not 0 but the message is gone (expired or deleted).
    Gone,
}

/// What reconciliation noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The stream ends where the cursor says.
    InStep,
    /// The stream holds events after the cursor (acknowledged, not recorded before a crash); the
    /// cursor moves up to them.
    CaughtUp,
    /// The stream holds messages after the recorded sequence but its last one is gone, so where
    /// they end is unknown; publishing resumes after the cursor.
    TailGone,
    /// The stream's last sequence is below the recorded one: it lost acknowledged messages or was
    /// deleted and recreated. `republish`: its last message was found and is behind the cursor, so
    /// the cursor goes back to it and the lost tail is published again.
    Regressed {
        /// Whether the cursor goes back so that the lost events are published again.
        republish: bool,
    },
}

/// Where publishing resumes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The cursor to publish after, and the stream sequence the next publish expects.
    pub resume: Recorded,
    /// What was noticed.
    pub finding: Finding,
}

/// Reconciliation's decision: `recorded` is the durable cursor, `stream_last` the stream's last
/// sequence (from its info), `last` what its last message says. The next publish always expects
/// `stream_last`, the stream's own state, so the fence holds whatever the cursor says; only the
/// position to resume after is decided here.
pub fn plan(recorded: Recorded, stream_last: u64, last: LastMessage) -> Plan {
    let resume = |position: Position| Recorded {
        position,
        stream_sequence: stream_last,
    };
    if stream_last < recorded.stream_sequence {
        return match last {
            LastMessage::At(position) if position < recorded.position => Plan {
                resume: resume(position),
                finding: Finding::Regressed { republish: true },
            },
            LastMessage::At(position) => Plan {
                resume: resume(position.max(recorded.position)),
                finding: Finding::Regressed { republish: false },
            },
            LastMessage::Empty | LastMessage::Gone => Plan {
                resume: resume(recorded.position),
                finding: Finding::Regressed { republish: false },
            },
        };
    }
    match last {
        LastMessage::At(position) if position > recorded.position => Plan {
            resume: resume(position),
            finding: Finding::CaughtUp,
        },
        LastMessage::Gone if stream_last > recorded.stream_sequence => Plan {
            resume: resume(recorded.position),
            finding: Finding::TailGone,
        },
        LastMessage::At(_) | LastMessage::Empty | LastMessage::Gone => Plan {
            resume: resume(recorded.position),
            finding: Finding::InStep,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64, stream_sequence: u64) -> Recorded {
        Recorded {
            position: Position::new(position, 0),
            stream_sequence,
        }
    }

    #[test]
    fn only_no_message_found_means_the_last_message_is_gone() {
        assert!(lookup_found_nothing(&RawMessageErrorKind::NoMessageFound));
        // A timed-out or failed request (what a restart, a partition or a refused permission
        // looks like) is not an answer about the message.
        assert!(!lookup_found_nothing(&RawMessageErrorKind::Other));
        assert!(!lookup_found_nothing(&RawMessageErrorKind::InvalidSubject));
        let unavailable: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#,
        )
        .unwrap();
        assert!(!lookup_found_nothing(&RawMessageErrorKind::JetStream(
            unavailable
        )));
    }

    #[test]
    fn a_stream_in_step_with_the_cursor_resumes_at_the_cursor_on_the_streams_sequence() {
        let recorded = at(50, 7);
        for last in [LastMessage::At(Position::new(50, 0)), LastMessage::Gone] {
            assert_eq!(
                plan(recorded, 7, last),
                Plan {
                    resume: recorded,
                    finding: Finding::InStep
                }
            );
        }
        assert_eq!(
            plan(at(0, 0), 0, LastMessage::Empty),
            Plan {
                resume: at(0, 0),
                finding: Finding::InStep
            }
        );
    }

    #[test]
    fn acknowledged_but_unrecorded_events_move_the_cursor_up() {
        assert_eq!(
            plan(at(50, 7), 9, LastMessage::At(Position::new(70, 0))),
            Plan {
                resume: at(70, 9),
                finding: Finding::CaughtUp
            }
        );
        // A row from before the stream sequence was recorded (0) behaves the same.
        assert_eq!(
            plan(at(50, 0), 9, LastMessage::At(Position::new(70, 0))),
            Plan {
                resume: at(70, 9),
                finding: Finding::CaughtUp
            }
        );
    }

    #[test]
    fn a_gone_tail_after_the_record_resumes_at_the_cursor_but_keeps_the_fence() {
        assert_eq!(
            plan(at(50, 7), 9, LastMessage::Gone),
            Plan {
                resume: at(50, 9),
                finding: Finding::TailGone
            }
        );
    }

    #[test]
    fn a_stream_behind_its_acknowledgements_gets_the_lost_tail_again_when_its_end_is_known() {
        assert_eq!(
            plan(at(50, 9), 7, LastMessage::At(Position::new(30, 0))),
            Plan {
                resume: at(30, 7),
                finding: Finding::Regressed { republish: true }
            }
        );
        // Recreated empty, or its last message gone: where it ends is unknown; resume at the
        // cursor on the stream's own sequence.
        assert_eq!(
            plan(at(50, 9), 0, LastMessage::Empty),
            Plan {
                resume: at(50, 0),
                finding: Finding::Regressed { republish: false }
            }
        );
        assert_eq!(
            plan(at(50, 9), 7, LastMessage::Gone),
            Plan {
                resume: at(50, 7),
                finding: Finding::Regressed { republish: false }
            }
        );
    }
}
