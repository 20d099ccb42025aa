//! Running the commands of targets and executions: load the aggregate, let the domain decide,
//! push with the loaded sequence expected, and decide again on a concurrent change. Targets and an
//! instance's executions are small aggregates, so they are loaded whole.

use cairn_domain::{Aggregate, AggregateId, Decision, DomainError, InstanceId, StoredEvent};
use cairn_error::{Code, Error, Violation};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push, StoreError};

/// How often a command decides again after a concurrent change before it answers `ABORTED`.
const DECISIONS: usize = 4;

/// A domain refusal in the protocol's form.
pub fn domain_error(error: DomainError) -> Error {
    match error {
        DomainError::Invalid(violations) => Error::invalid(
            violations
                .into_iter()
                .map(|v| Violation {
                    field: v.field,
                    description: v.description,
                })
                .collect(),
        ),
        DomainError::NotFound => Error::not_found("target"),
        DomainError::AlreadyExists { what } => {
            Error::new(Code::AlreadyExists, format!("{what} already exists"))
        }
        DomainError::FailedPrecondition(message) => Error::new(Code::FailedPrecondition, message),
        other => Error::internal(other),
    }
}

/// A store failure in the protocol's form.
pub fn store_error(error: StoreError) -> Error {
    match error {
        StoreError::Conflict { .. } => Error::new(
            Code::Conflict,
            "the resource was changed concurrently; read it again and retry",
        ),
        StoreError::UniqueViolation { .. } => {
            Error::new(Code::AlreadyExists, "a target with this name exists")
        }
        StoreError::Invalid { field, reason } => Error::invalid_field(field, reason),
        other => Error::unavailable(other),
    }
}

/// Loads `A` `id` of `instance` from its events.
pub async fn load<A: Aggregate>(
    store: &PgEventStore,
    instance: InstanceId,
    id: AggregateId,
) -> Result<A, Error> {
    let events = store
        .load_aggregate(instance, &A::aggregate_type(), id, 0)
        .await
        .map_err(store_error)?;
    let mut state = A::default();
    for event in &events {
        state.apply(event).map_err(domain_error)?;
    }
    Ok(state)
}

/// Runs `decide` against `A` `id` and pushes its events as `creator`; the committed events
/// (none when nothing changed) and the state they were decided on.
pub async fn execute<A: Aggregate>(
    store: &PgEventStore,
    instance: InstanceId,
    id: AggregateId,
    creator: &str,
    decide: impl Fn(&A) -> Result<Decision, Error>,
) -> Result<(A, Vec<StoredEvent>), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let state: A = load(store, instance, id).await?;
        let decision = decide(&state)?;
        if decision.is_empty() {
            return Ok((state, Vec::new()));
        }
        let push = Push::from_decision(
            instance,
            A::aggregate_type(),
            id,
            ExpectedSequence::Exact(state.sequence()),
            decision,
            creator,
            AggregateId::from_uuid(instance.as_uuid()),
        )
        .traced(cairn_telemetry::propagation::traceparent());
        match store.push(push).await {
            Ok(events) => return Ok((state, events)),
            Err(StoreError::Conflict { .. }) if attempt < DECISIONS => continue,
            Err(StoreError::Conflict { .. }) => {
                return Err(Error::new(
                    Code::Conflict,
                    "the resource kept changing concurrently; retry",
                ));
            }
            Err(error) => return Err(store_error(error)),
        }
    }
}
