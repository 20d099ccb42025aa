//! The gRPC event API (`cairn.eventstore.v1.EventStoreService`): `ListEvents`, `GetHeadPosition`
//! and `SubscribeEvents`, authenticated with the service token from configuration.

use cairn_domain::{AggregateId, AggregateType, EventType, InstanceId, Position, StoredEvent};
use cairn_error::{Code, Error};
use cairn_eventstore::{EventFilter, EventStore, MAX_FILTER_LIMIT, PgEventStore, StoreError};
use cairn_proto::eventstore::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The service implementation.
#[derive(Clone)]
pub struct EventApi {
    store: PgEventStore,
    commits: watch::Receiver<i64>,
    shutdown: CancellationToken,
    fallback_poll: Duration,
}

impl EventApi {
    /// The API over `store`; subscriptions are woken by `commits` and end on `shutdown`.
    pub fn new(
        store: PgEventStore,
        commits: watch::Receiver<i64>,
        shutdown: CancellationToken,
        fallback_poll: Duration,
    ) -> Self {
        Self {
            store,
            commits,
            shutdown,
            fallback_poll,
        }
    }
}

/// An interceptor that admits only `authorization: Bearer <token>` with the configured token,
/// compared in constant time.
pub fn authenticate(token: Arc<str>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::new(Code::Unauthenticated, "missing bearer token")
                    .with_reason("TOKEN_MISSING")
                    .to_status()
            })?;
        // Constant time in the token's content (its length is not secret).
        if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            Ok(request)
        } else {
            Err(Error::new(Code::Unauthenticated, "invalid token")
                .with_reason("TOKEN_INVALID")
                .to_status())
        }
    }
}

fn status(error: StoreError) -> Status {
    match error {
        StoreError::Invalid { field, reason } => invalid(field, reason),
        other => Error::unavailable(format!("event store failed: {other}")).to_status(),
    }
}

/// `INVALID_ARGUMENT` with one field violation.
fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Status {
    Error::invalid_field(field, reason).to_status()
}

fn position_from(p: Option<&pb::Position>) -> Position {
    p.map_or(Position::ZERO, |p| Position::new(p.position, p.offset))
}

fn position_to(p: Position) -> pb::Position {
    pb::Position {
        position: p.position,
        offset: p.offset,
    }
}

fn parse_filter(filter: Option<pb::EventFilter>) -> Result<EventFilter, Status> {
    let filter = filter.unwrap_or_default();
    let bad = |field: &str, reason: String| invalid(format!("filter.{field}"), reason);
    let instance_id = if filter.instance_id.is_empty() {
        None
    } else {
        Some(
            filter
                .instance_id
                .parse::<InstanceId>()
                .map_err(|e| bad("instance_id", e.to_string()))?,
        )
    };
    let aggregate_types = filter
        .aggregate_types
        .into_iter()
        .map(|t| AggregateType::parse(t).map_err(|e| bad("aggregate_types", e.to_string())))
        .collect::<Result<_, _>>()?;
    let event_types = filter
        .event_types
        .into_iter()
        .map(|t| EventType::parse(t).map_err(|e| bad("event_types", e.to_string())))
        .collect::<Result<_, _>>()?;
    let aggregate_ids = filter
        .aggregate_ids
        .iter()
        .map(|id| {
            id.parse::<AggregateId>()
                .map_err(|e| bad("aggregate_ids", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(EventFilter {
        instance_id,
        aggregate_types,
        aggregate_ids,
        event_types,
        after: position_from(filter.after.as_ref()),
        up_to: None,
        limit: 1000,
    })
}

/// Converts a stored event to its wire form.
pub fn event_to_proto(event: &StoredEvent) -> pb::Event {
    pb::Event {
        id: event.id.to_string(),
        instance_id: event.instance_id.to_string(),
        aggregate_type: event.aggregate_type.to_string(),
        aggregate_id: event.aggregate_id.to_string(),
        sequence: event.sequence,
        event_type: event.event_type.to_string(),
        revision: i32::from(event.revision),
        payload_json: event.payload.to_string(),
        creator: event.creator.clone(),
        resource_owner: event.resource_owner.to_string(),
        created_at: Some(cairn_proto::time::timestamp(event.created_at)),
        position: Some(position_to(event.position)),
        trace_context: event.trace_context.clone().unwrap_or_default(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::event_store_service_server::EventStoreService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let request = request.into_inner();
        let mut filter = parse_filter(request.filter)?;
        filter.up_to = request.up_to.as_ref().map(|p| position_from(Some(p)));
        filter.limit = match request.limit {
            0 => 1000,
            n if n > MAX_FILTER_LIMIT => {
                return Err(invalid("limit", format!("at most {MAX_FILTER_LIMIT}")));
            }
            n => n,
        };
        let mut events = self.store.filter(&filter).await.map_err(status)?;
        self.present(&mut events).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
        }))
    }

    async fn get_head_position(
        &self,
        request: Request<pb::GetHeadPositionRequest>,
    ) -> Result<Response<pb::GetHeadPositionResponse>, Status> {
        let request = request.into_inner();
        let instance = if request.instance_id.is_empty() {
            None
        } else {
            Some(
                request
                    .instance_id
                    .parse::<InstanceId>()
                    .map_err(|e| invalid("instance_id", e.to_string()))?,
            )
        };
        let head = self.store.head_position(instance).await.map_err(status)?;
        Ok(Response::new(pb::GetHeadPositionResponse {
            position: Some(position_to(head)),
        }))
    }

    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        request: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        let filter = parse_filter(request.into_inner().filter)?;
        let (tx, rx) = mpsc::channel(256);
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(status) = api.feed(filter, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl EventApi {
    /// Events as this API shows them: personal fields stay sealed (this service holds no keys),
    /// and those of an erased user read "erased".
    async fn present(&self, events: &mut [StoredEvent]) -> Result<(), Status> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        cairn_personal::present(&mut conn, events)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    /// Sends every matching event after the filter's cursor, catching up from the store and then
    /// following commits, until the client goes away or the service shuts down. The cursor moves
    /// over non-matching stretches up to the head read *before* each page, so every event at or
    /// below it was visible to that page's read: nothing is skipped at the switch to live.
    async fn feed(
        &self,
        mut filter: EventFilter,
        tx: &mpsc::Sender<Result<pb::Event, Status>>,
    ) -> Result<(), Status> {
        let mut commits = self.commits.clone();
        loop {
            commits.borrow_and_update();
            let head = self
                .store
                .head_position(filter.instance_id)
                .await
                .map_err(status)?;
            filter.up_to = Some(head);
            let mut page = self.store.filter(&filter).await.map_err(status)?;
            self.present(&mut page).await?;
            let full = page.len() == filter.limit as usize;
            for event in &page {
                if tx.send(Ok(event_to_proto(event))).await.is_err() {
                    return Ok(()); // the client went away
                }
                filter.after = event.position;
            }
            if full {
                continue;
            }
            filter.after = filter.after.max(head);
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(self.fallback_poll) => {} // poll_interval: a lost notification only delays
                _ = tx.closed() => return Ok(()),
                _ = self.shutdown.cancelled() => return Err(Error::new(Code::Unavailable, "the service is shutting down").with_reason("SHUTTING_DOWN").to_status()),
            }
        }
    }
}
