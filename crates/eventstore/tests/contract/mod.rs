//! The contract every `EventStore` implementation passes. Each function takes a fresh, empty store;
//! `contract_tests!` instantiates them all for one implementation.

use cairn_domain::{AggregateId, AggregateType, EventDraft, EventType, InstanceId, Position};
use cairn_eventstore::{
    AggregatePush, EventFilter, EventStore, ExpectedSequence, MAX_PAYLOAD_BYTES, Push, Snapshot, StoreError,
    UniqueOp,
};
use serde_json::json;

pub fn user_type() -> AggregateType {
    AggregateType::parse("user").unwrap()
}

pub fn draft(event_type: &str, n: i64) -> EventDraft {
    EventDraft::new(
        EventType::parse(event_type).unwrap(),
        json!({ "n": n }),
        "system",
        AggregateId::new(),
    )
}

pub fn one(instance: InstanceId, id: AggregateId, expected: ExpectedSequence, n: i64) -> Push {
    Push::single(
        instance,
        user_type(),
        id,
        expected,
        vec![draft("user.changed", n)],
    )
}

/// Waits until a tailing reader can see `position`. In PostgreSQL an event becomes visible to
/// readers once every transaction that started before its own has ended, anywhere in the cluster
/// (other tests run beside this one), so reads after writes wait for the position, with a deadline.
pub async fn visible<S: EventStore>(store: &S, position: Position) {
    cairn_testkit::eventually(
        "the pushed events to become visible",
        std::time::Duration::from_secs(30),
        || async { Ok((store.head_position(None).await? >= position).then_some(())) },
    )
    .await
    .unwrap();
}

pub async fn all_events<S: EventStore>(store: &S) -> Vec<cairn_domain::StoredEvent> {
    let mut out = Vec::new();
    let mut after = Position::ZERO;
    loop {
        let page = store.filter(&EventFilter::after(after, 1000)).await.unwrap();
        let Some(last) = page.last() else { return out };
        after = last.position;
        out.extend(page);
    }
}

fn aggregate(
    instance: InstanceId,
    kind: &str,
    id: AggregateId,
    expected: i64,
    events: Vec<EventDraft>,
) -> AggregatePush {
    AggregatePush {
        instance_id: instance,
        aggregate_type: AggregateType::parse(kind).unwrap(),
        aggregate_id: id,
        expected: ExpectedSequence::Exact(expected),
        events,
    }
}

pub async fn multi_event_push_is_atomic_and_ordered_by_offset<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let (a, b) = (AggregateId::new(), AggregateId::new());
    let push = Push {
        aggregates: vec![
            aggregate(
                instance,
                "user",
                a,
                0,
                vec![draft("user.added", 1), draft("user.changed", 2)],
            ),
            aggregate(instance, "group", b, 0, vec![draft("group.added", 3)]),
        ],
        unique_ops: vec![],
        data_keys: vec![],
    };
    let stored = store.push(push).await.unwrap();
    visible(&store, stored[2].position).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 1]
    );
    let position = stored[0].position.position;
    assert!(
        stored.iter().all(|e| e.position.position == position),
        "one push shares one position"
    );
    assert_eq!(
        stored.iter().map(|e| e.position.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(stored[2].payload, json!({ "n": 3 }));

    let read = all_events(&store).await;
    assert_eq!(read, stored, "what is read back equals what push returned");

    // A push that conflicts on its second aggregate writes nothing for the first.
    let bad = Push {
        aggregates: vec![
            aggregate(instance, "user", a, 2, vec![draft("user.changed", 4)]),
            aggregate(instance, "group", b, 0, vec![draft("group.changed", 5)]),
        ],
        unique_ops: vec![],
        data_keys: vec![],
    };
    match store.push(bad).await {
        Err(StoreError::Conflict {
            aggregate_id,
            expected,
            actual,
            ..
        }) => {
            assert_eq!(aggregate_id, b);
            assert_eq!(expected, Some(0));
            assert_eq!(actual, Some(1));
        }
        other => panic!("expected a conflict naming the group, got {other:?}"),
    }
    assert_eq!(
        all_events(&store).await.len(),
        3,
        "the failed push left nothing behind"
    );
}

pub async fn stale_expected_sequence_is_a_conflict<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let id = AggregateId::new();
    store
        .push(one(instance, id, ExpectedSequence::Exact(0), 1))
        .await
        .unwrap();
    store
        .push(one(instance, id, ExpectedSequence::Exact(1), 2))
        .await
        .unwrap();
    for stale in [0, 1, 5] {
        let err = store
            .push(one(instance, id, ExpectedSequence::Exact(stale), 9))
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "expected {stale}: {err:?}");
    }
    let events = store.load_aggregate(instance, &user_type(), id, 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    // `Any` appends wherever the aggregate is.
    let any = store
        .push(one(instance, id, ExpectedSequence::Any, 3))
        .await
        .unwrap();
    assert_eq!(any[0].sequence, 3);
}

pub async fn racing_writers_exactly_one_wins<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let id = AggregateId::new();
    store
        .push(one(instance, id, ExpectedSequence::Exact(0), 0))
        .await
        .unwrap();
    for round in 1..=5_i64 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..24 {
            let store = store.clone();
            tasks.spawn(async move {
                let push = Push::single(
                    instance,
                    user_type(),
                    id,
                    ExpectedSequence::Exact(2 * round - 1),
                    vec![draft("user.changed", n), draft("user.changed", n + 100)],
                );
                store.push(push).await
            });
        }
        let (mut won, mut conflicts) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(events) => {
                    won += 1;
                    assert_eq!(events.len(), 2);
                }
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => panic!("a racing writer must win or conflict, got {e:?}"),
            }
        }
        assert_eq!((won, conflicts), (1, 23), "round {round}");
    }
    let events = store.load_aggregate(instance, &user_type(), id, 0).await.unwrap();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=11).collect::<Vec<_>>(),
        "no partial pushes, no gaps"
    );
}

pub async fn unique_constraints_are_claimed_with_the_push<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let other_instance = InstanceId::new();
    let claim = |instance: InstanceId, value: &str| UniqueOp::Add {
        instance_id: instance,
        unique_type: "user.username".into(),
        value: value.into(),
    };
    let release = |value: &str| UniqueOp::Remove {
        instance_id: instance,
        unique_type: "user.username".into(),
        value: value.into(),
    };
    let alice = AggregateId::new();
    store
        .push(one(instance, alice, ExpectedSequence::Exact(0), 1).with_unique(claim(instance, "alice")))
        .await
        .unwrap();

    let bob = AggregateId::new();
    match store
        .push(one(instance, bob, ExpectedSequence::Exact(0), 2).with_unique(claim(instance, "alice")))
        .await
    {
        Err(StoreError::UniqueViolation { unique_type, value }) => {
            assert_eq!(unique_type, "user.username");
            assert_eq!(value, "alice");
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert!(
        store
            .load_aggregate(instance, &user_type(), bob, 0)
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );

    // The same value in another instance is free.
    store
        .push(
            one(other_instance, bob, ExpectedSequence::Exact(0), 3)
                .with_unique(claim(other_instance, "alice")),
        )
        .await
        .unwrap();

    // Release and re-claim in one push (a rename back and forth), then release and claim apart.
    store
        .push(
            one(instance, alice, ExpectedSequence::Exact(1), 4)
                .with_unique(release("alice"))
                .with_unique(claim(instance, "alice")),
        )
        .await
        .unwrap();
    store
        .push(one(instance, alice, ExpectedSequence::Exact(2), 5).with_unique(release("alice")))
        .await
        .unwrap();
    store
        .push(one(instance, bob, ExpectedSequence::Exact(0), 6).with_unique(claim(instance, "alice")))
        .await
        .unwrap();

    // A push whose events conflict does not claim its value.
    let carol = AggregateId::new();
    let err = store
        .push(one(instance, alice, ExpectedSequence::Exact(0), 7).with_unique(claim(instance, "carol")))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    store
        .push(one(instance, carol, ExpectedSequence::Exact(0), 8).with_unique(claim(instance, "carol")))
        .await
        .unwrap();
}

pub async fn filter_selects_in_global_order<S: EventStore>(store: S) {
    let (i1, i2) = (InstanceId::new(), InstanceId::new());
    let group = AggregateType::parse("group").unwrap();
    let mut ids = Vec::new();
    let mut last = Position::ZERO;
    for n in 0..30_i64 {
        let instance = if n % 3 == 0 { i2 } else { i1 };
        let id = AggregateId::new();
        ids.push(id);
        let (agg_type, event_type) = if n % 2 == 0 {
            (user_type(), "user.added")
        } else {
            (group.clone(), "group.added")
        };
        last = store
            .push(Push::single(
                instance,
                agg_type,
                id,
                ExpectedSequence::Exact(0),
                vec![draft(event_type, n)],
            ))
            .await
            .unwrap()[0]
            .position;
    }
    visible(&store, last).await;
    let all = all_events(&store).await;
    assert_eq!(all.len(), 30);
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions"
    );

    let only_i2 = store
        .filter(&EventFilter::after(Position::ZERO, 100).instance(i2))
        .await
        .unwrap();
    assert_eq!(only_i2.len(), 10);
    assert!(only_i2.iter().all(|e| e.instance_id == i2));

    let groups = store
        .filter(&EventFilter {
            aggregate_types: vec![group.clone()],
            ..EventFilter::after(Position::ZERO, 100)
        })
        .await
        .unwrap();
    assert_eq!(groups.len(), 15);
    let by_type = store
        .filter(&EventFilter {
            event_types: vec![EventType::parse("user.added").unwrap()],
            instance_id: Some(i1),
            ..EventFilter::after(Position::ZERO, 100)
        })
        .await
        .unwrap();
    assert_eq!(by_type.len(), 10);
    let by_id = store
        .filter(&EventFilter {
            aggregate_ids: vec![ids[4], ids[7]],
            ..EventFilter::after(Position::ZERO, 100)
        })
        .await
        .unwrap();
    assert_eq!(
        by_id.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(),
        vec![ids[4], ids[7]]
    );

    // An exclusive cursor and an inclusive upper bound, paged with a limit.
    let middle = store
        .filter(&EventFilter {
            up_to: Some(all[19].position),
            ..EventFilter::after(all[9].position, 5)
        })
        .await
        .unwrap();
    assert_eq!(middle, all[10..15].to_vec());
    let rest = store
        .filter(&EventFilter {
            up_to: Some(all[19].position),
            ..EventFilter::after(all[14].position, 100)
        })
        .await
        .unwrap();
    assert_eq!(rest, all[15..20].to_vec());

    for bad_limit in [0, cairn_eventstore::MAX_FILTER_LIMIT + 1] {
        let err = store
            .filter(&EventFilter::after(Position::ZERO, bad_limit))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
}

pub async fn head_position_per_instance_and_global<S: EventStore>(store: S) {
    assert_eq!(store.head_position(None).await.unwrap(), Position::ZERO);
    let (i1, i2) = (InstanceId::new(), InstanceId::new());
    let a = store
        .push(one(i1, AggregateId::new(), ExpectedSequence::Exact(0), 1))
        .await
        .unwrap();
    let b = store
        .push(one(i2, AggregateId::new(), ExpectedSequence::Exact(0), 2))
        .await
        .unwrap();
    visible(&store, b[0].position).await;
    assert_eq!(store.head_position(Some(i1)).await.unwrap(), a[0].position);
    assert_eq!(store.head_position(Some(i2)).await.unwrap(), b[0].position);
    assert_eq!(store.head_position(None).await.unwrap(), b[0].position);
    assert_eq!(
        store.head_position(Some(InstanceId::new())).await.unwrap(),
        Position::ZERO
    );
}

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counter {
    sum: i64,
    count: i64,
}

impl Counter {
    fn apply(&mut self, event: &cairn_domain::StoredEvent) {
        self.sum += event.payload["n"].as_i64().unwrap();
        self.count += 1;
    }
}

pub async fn snapshot_plus_tail_equals_full_replay<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let id = AggregateId::new();
    for n in 1..=50 {
        store
            .push(one(instance, id, ExpectedSequence::Exact(n - 1), n))
            .await
            .unwrap();
    }
    let events = store.load_aggregate(instance, &user_type(), id, 0).await.unwrap();
    let mut full = Counter::default();
    events.iter().for_each(|e| full.apply(e));
    let mut at_30 = Counter::default();
    events.iter().take(30).for_each(|e| at_30.apply(e));

    let snapshot = |sequence, schema_version, state| Snapshot {
        instance_id: instance,
        aggregate_type: user_type(),
        aggregate_id: id,
        sequence,
        schema_version,
        state,
    };
    store
        .save_snapshot(snapshot(30, 2, serde_json::to_value(&at_30).unwrap()))
        .await
        .unwrap();
    // An older snapshot never replaces a newer one.
    store
        .save_snapshot(snapshot(10, 2, json!({ "sum": -1, "count": -1 })))
        .await
        .unwrap();

    let loaded = store
        .load_snapshot(instance, &user_type(), id, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.sequence, 30);
    let mut state: Counter = serde_json::from_value(loaded.state).unwrap();
    let tail = store
        .load_aggregate(instance, &user_type(), id, loaded.sequence)
        .await
        .unwrap();
    assert_eq!(tail.len(), 20);
    tail.iter().for_each(|e| state.apply(e));
    assert_eq!(state, full, "snapshot + tail == full replay");

    // A reader with another schema version ignores the snapshot and replays everything.
    assert!(
        store
            .load_snapshot(instance, &user_type(), id, 3)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_snapshot(instance, &user_type(), AggregateId::new(), 2)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn bad_input_is_rejected_and_writes_nothing<S: EventStore>(store: S) {
    let instance = InstanceId::new();
    let id = AggregateId::new();
    let single = |events| Push::single(instance, user_type(), id, ExpectedSequence::Exact(0), events);
    let mut cases: Vec<(&str, Push)> = vec![("empty push", Push::default())];
    cases.push(("aggregate without events", single(vec![])));
    for (what, payload) in [
        ("array payload", json!([1, 2])),
        ("string payload", json!("x")),
        ("null payload", serde_json::Value::Null),
        (
            "oversized payload",
            json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES) }),
        ),
    ] {
        let mut event = draft("user.added", 0);
        event.payload = payload;
        cases.push((what, single(vec![event])));
    }
    let mut no_creator = draft("user.added", 0);
    no_creator.creator.clear();
    cases.push(("empty creator", single(vec![no_creator])));
    let twice = one(instance, id, ExpectedSequence::Exact(0), 1);
    let mut twice_push = twice.clone();
    twice_push.aggregates.extend(twice.aggregates);
    cases.push(("aggregate twice", twice_push));
    cases.push((
        "empty unique value",
        one(instance, id, ExpectedSequence::Exact(0), 1).with_unique(UniqueOp::Add {
            instance_id: instance,
            unique_type: "user.username".into(),
            value: String::new(),
        }),
    ));
    for (what, push) in cases {
        match store.push(push).await {
            Err(StoreError::Invalid { field, reason }) => {
                assert!(
                    !field.is_empty() && !reason.is_empty(),
                    "{what}: the error names the field"
                );
            }
            other => panic!("{what}: expected a validation error, got {other:?}"),
        }
    }
    // Names that break the lower-case dotted rule cannot even be built.
    for bad in ["User", "user..added", "user added", ""] {
        assert!(EventType::parse(bad).is_err(), "{bad:?}");
        assert!(AggregateType::parse(bad).is_err(), "{bad:?}");
    }
    // A payload of exactly MAX_PAYLOAD_BYTES is accepted, and it is the only event stored.
    let mut at_limit = draft("user.added", 0);
    let padding = MAX_PAYLOAD_BYTES - serde_json::to_vec(&json!({ "blob": "" })).unwrap().len();
    at_limit.payload = json!({ "blob": "x".repeat(padding) });
    let stored = store.push(single(vec![at_limit])).await.unwrap();
    visible(&store, stored[0].position).await;
    let all = all_events(&store).await;
    assert_eq!(all.len(), 1, "no bad input wrote anything");
    assert_eq!(all[0].id, stored[0].id);
}

/// Instantiates the whole contract for one implementation. `$make` is an async fn that returns
/// `(store, guard)`; the guard's `finish()` runs after the test.
#[macro_export]
macro_rules! contract_tests {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;
            $crate::contract_tests!(@each $make,
                multi_event_push_is_atomic_and_ordered_by_offset,
                stale_expected_sequence_is_a_conflict,
                racing_writers_exactly_one_wins,
                unique_constraints_are_claimed_with_the_push,
                filter_selects_in_global_order,
                head_position_per_instance_and_global,
                snapshot_plus_tail_equals_full_replay,
                bad_input_is_rejected_and_writes_nothing
            );
        }
    };
    (@each $make:path, $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, guard) = $make().await;
                contract::$name(store).await;
                guard.finish().await;
            }
        )*
    };
}
