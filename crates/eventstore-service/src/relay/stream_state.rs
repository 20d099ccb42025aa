//! The relay's view of the stream: creating it with the wanted settings, and reconciling the
//! recorded cursor with what the stream really holds at every (re)start of leadership (the
//! decisions themselves are in [`crate::reconcile`]).

use super::Relay;
use crate::envelope::{HEADER_OFFSET, HEADER_POSITION};
use crate::lease::Recorded;
use crate::reconcile::{Finding, LastMessage, lookup_found_nothing, plan};
use async_nats::jetstream::stream;
use cairn_domain::Position;

impl Relay {
    /// Creates the stream, or brings an existing one's settings up to date.
    pub(super) async fn ensure_stream(&self) -> Result<stream::Stream, String> {
        let wanted = stream::Config {
            name: self.config.stream_name.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: self.config.max_age,
            duplicate_window: self.config.duplicate_window,
            description: Some("Every committed Cairn event, in global order".to_owned()),
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| format!("cannot create stream {}: {e}", wanted.name))?;
        let current = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream info: {e}"))?
            .config
            .clone();
        if current.subjects != wanted.subjects
            || current.max_age != wanted.max_age
            || current.duplicate_window != wanted.duplicate_window
        {
            tracing::info!(stream = %wanted.name, "updating the stream's settings");
            self.js
                .update_stream(wanted)
                .await
                .map_err(|e| format!("cannot update the stream: {e}"))?;
        }
        Ok(stream)
    }

    /// Compares the stream with the recorded cursor (see [`plan`]) and returns where publishing
    /// resumes: after which event, and on which stream sequence.
    pub(super) async fn reconcile(
        &self,
        mut stream: stream::Stream,
        recorded: Recorded,
    ) -> Result<Recorded, String> {
        let stream_last = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream info: {e}"))?
            .state
            .last_sequence;
        let last = self.last_message(&stream, stream_last).await?;
        let plan = plan(recorded, stream_last, last);
        match plan.finding {
            Finding::InStep => {}
            Finding::CaughtUp => tracing::info!(
                cursor = %recorded.position,
                stream_position = %plan.resume.position,
                "cursor behind the stream; catching up"
            ),
            Finding::TailGone => tracing::warn!(
                recorded_sequence = recorded.stream_sequence,
                stream_last,
                "the stream's last message expired or was deleted and the cursor does not record \
                 it; events between the cursor and the stream's end may be published again"
            ),
            Finding::Regressed { republish } => {
                self.metrics.stream_regressions.inc();
                let lost = recorded.stream_sequence - stream_last;
                if republish {
                    tracing::error!(
                        stream = %self.config.stream_name,
                        recorded_sequence = recorded.stream_sequence,
                        stream_last,
                        lost,
                        from = %plan.resume.position,
                        "the stream lost acknowledged messages; publishing them again after its \
                         last message"
                    );
                } else {
                    tracing::error!(
                        stream = %self.config.stream_name,
                        recorded_sequence = recorded.stream_sequence,
                        stream_last,
                        lost,
                        cursor = %plan.resume.position,
                        "the stream is behind what it acknowledged (lost messages, or deleted and \
                         recreated) and its last message cannot be found; publishing resumes after \
                         the cursor, the missing events are not published again (consumers catch \
                         up from PostgreSQL)"
                    );
                }
            }
        }
        Ok(plan.resume)
    }

    /// The event position that the stream's last message carries.
    async fn last_message(&self, stream: &stream::Stream, stream_last: u64) -> Result<LastMessage, String> {
        if stream_last == 0 {
            return Ok(LastMessage::Empty);
        }
        let message = match stream.get_raw_message(stream_last).await {
            Ok(message) => message,
            Err(error) => {
                return if lookup_found_nothing(&error.kind()) {
                    tracing::info!(%error, stream_last, "the stream's last message is gone");
                    Ok(LastMessage::Gone)
                } else {
                    // Not an answer about the message (a timeout, a lost connection, a refusal):
                    // guessing here could publish events the stream already holds.
                    Err(format!(
                        "cannot read the stream's last message (sequence {stream_last}): {error}"
                    ))
                };
            }
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let position = match (header(HEADER_POSITION), header(HEADER_OFFSET)) {
            (Some(p), Some(o)) => Position::new(
                p.parse().map_err(|_| "bad position header")?,
                o.parse().map_err(|_| "bad offset header")?,
            ),
            _ => return Err("the stream's last message has no position".to_owned()),
        };
        let id = header(async_nats::header::NATS_MESSAGE_ID.as_ref())
            .and_then(|v| v.parse::<uuid::Uuid>().ok())
            .ok_or("the stream's last message has no event id")?;
        let stored: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM eventstore.events WHERE position = $1 AND in_tx_order = $2 AND id = $3)",
        )
        .bind(position.position)
        .bind(position.offset)
        .bind(id)
        .fetch_one(self.store.pool())
        .await
        .map_err(|e| format!("cannot look up the stream's last event in the store: {e}"))?;
        if stored {
            return Ok(LastMessage::At(position));
        }
        // The stream ends with an event the store does not hold: the database was restored from a
        // backup older than the stream. New events must land above what the stream holds (or a
        // cursor moved up to the stream's end would pass them), and the cursor must not move up to
        // a position the store never published from: resume after the recorded cursor, as when
        // the last message is gone (events the stream already holds may be published again;
        // none is lost).
        let base = cairn_migrations::raise_position_base(self.store.pool(), position.position)
            .await
            .map_err(|e| format!("cannot raise the position base: {e}"))?;
        tracing::error!(
            stream_position = %position,
            event_id = %id,
            base_before = base.before,
            base_after = base.after,
            "the stream ends with an event the store does not hold (a restore from a backup older \
             than the stream?); new events are placed above it and publishing resumes after the \
             relay's recorded cursor"
        );
        self.metrics.stream_regressions.inc();
        Ok(LastMessage::Gone)
    }
}
