//! Integration tests of the event store: the shared contract against both implementations, and the
//! guarantees that only the PostgreSQL store can prove (gap-free order under concurrent writers and
//! late commits, atomic multi-push transactions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod contract;
mod listen;

use cairn_domain::{AggregateId, InstanceId, Position, StoredEvent};
use cairn_eventstore::{EventFilter, EventStore, ExpectedSequence, MemoryEventStore, PgEventStore, Push};
use cairn_testkit::TestDb;
use contract::{all_events, draft, one, user_type, visible};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct NoGuard;
impl NoGuard {
    async fn finish(self) {}
}

async fn memory_store() -> (MemoryEventStore, NoGuard) {
    (MemoryEventStore::default(), NoGuard)
}

struct DbGuard(TestDb);
impl DbGuard {
    async fn finish(self) {
        self.0.drop_db().await.unwrap();
    }
}

async fn pg_store() -> (PgEventStore, DbGuard) {
    let db = TestDb::new(32).await.unwrap();
    (PgEventStore::new(db.pool.clone()), DbGuard(db))
}

contract_tests!(memory, memory_store);
contract_tests!(postgres, pg_store);

/// A transaction that pushed first but commits last is still read before everything it precedes,
/// and a reader never sees the later events before it. Without the visibility horizon a reader would
/// read B, move its cursor past A's position, and miss A forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_never_lands_behind_a_readers_cursor() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    let instance = InstanceId::new();

    let mut slow = cairn_eventstore::begin(&db.pool).await.unwrap();
    let a = store
        .push_in(
            &mut slow,
            one(instance, AggregateId::new(), ExpectedSequence::Exact(0), 1),
        )
        .await
        .unwrap();
    let b = store
        .push(one(instance, AggregateId::new(), ExpectedSequence::Exact(0), 2))
        .await
        .unwrap();
    assert!(
        a[0].position < b[0].position,
        "the slow transaction started first"
    );

    // B is committed, but A could still commit before it: the reader must not pass A.
    assert!(
        store
            .filter(&EventFilter::after(Position::ZERO, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.head_position(None).await.unwrap(), Position::ZERO);

    slow.commit().await.unwrap();
    visible(&store, b[0].position).await;
    let read = store
        .filter(&EventFilter::after(Position::ZERO, 10))
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a[0].id, b[0].id]
    );

    // An aborted transaction leaves no trace and does not block readers.
    let mut aborted = cairn_eventstore::begin(&db.pool).await.unwrap();
    store
        .push_in(
            &mut aborted,
            one(instance, AggregateId::new(), ExpectedSequence::Exact(0), 3),
        )
        .await
        .unwrap();
    aborted.rollback().await.unwrap();
    let c = store
        .push(one(instance, AggregateId::new(), ExpectedSequence::Exact(0), 4))
        .await
        .unwrap();
    visible(&store, c[0].position).await;
    let tail = store
        .filter(&EventFilter::after(b[0].position, 10))
        .await
        .unwrap();
    assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c[0].id]);
    db.drop_db().await.unwrap();
}

/// Several pushes in one caller transaction share its position and continue its offsets, and
/// become visible together at commit.
#[tokio::test]
async fn pushes_in_one_transaction_share_a_position() {
    let db = TestDb::new(4).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    let instance = InstanceId::new();
    let mut tx = cairn_eventstore::begin(&db.pool).await.unwrap();
    let first = store
        .push_in(
            &mut tx,
            one(instance, AggregateId::new(), ExpectedSequence::Exact(0), 1),
        )
        .await
        .unwrap();
    let second = store
        .push_in(
            &mut tx,
            Push::single(
                instance,
                user_type(),
                AggregateId::new(),
                ExpectedSequence::Exact(0),
                vec![draft("user.added", 2), draft("user.changed", 3)],
            ),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    visible(&store, second[1].position).await;
    let positions: Vec<Position> = first.iter().chain(&second).map(|e| e.position).collect();
    let p = positions[0].position;
    assert_eq!(
        positions,
        vec![Position::new(p, 0), Position::new(p, 1), Position::new(p, 2)]
    );
    assert_eq!(all_events(&store).await.len(), 3);
    db.drop_db().await.unwrap();
}

const WRITERS: usize = 16;
const PUSHES_PER_WRITER: usize = 700;
const HOLD_EVERY: usize = 70;

/// DESIGN.md guarantee 3: 16 writers append more than 20,000 events, some holding their
/// transaction open across several of the reader's polls before committing, while a reader tails
/// by position from a cursor. The reader sees every event exactly once, in strictly increasing
/// position, identical to a final full ordered read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tailing_reader_sees_every_event_once_in_order_under_concurrent_writers() {
    let db = TestDb::new(WRITERS as u32 + 8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    let polls = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);

    let reader = {
        let store = store.clone();
        let polls = polls.clone();
        tokio::spawn(async move {
            let mut cursor = Position::ZERO;
            let mut seen: Vec<StoredEvent> = Vec::new();
            loop {
                let finished = *done_rx.borrow();
                let page = store.filter(&EventFilter::after(cursor, 500)).await.unwrap();
                polls.fetch_add(1, Ordering::SeqCst);
                for event in &page {
                    assert!(
                        event.position > cursor,
                        "position went backwards: {} after {cursor}",
                        event.position
                    );
                    cursor = event.position;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let pool = db.pool.clone();
        let polls = polls.clone();
        writers.spawn(async move {
            let instance = InstanceId::new();
            let aggregates: Vec<AggregateId> = (0..4).map(|_| AggregateId::new()).collect();
            let mut written = Vec::new();
            for i in 0..PUSHES_PER_WRITER {
                let id = aggregates[i % aggregates.len()];
                let events = (0..=(i % 3))
                    .map(|k| draft("user.changed", (w * 100_000 + i * 10 + k) as i64))
                    .collect();
                let push = Push::single(instance, user_type(), id, ExpectedSequence::Any, events);
                let stored = if i % HOLD_EVERY == HOLD_EVERY / 2 {
                    // Hold the transaction open until the reader has polled three more times.
                    let mut tx = cairn_eventstore::begin(&pool).await.unwrap();
                    let stored = store.push_in(&mut tx, push).await.unwrap();
                    let target = polls.load(Ordering::SeqCst) + 3;
                    cairn_testkit::eventually(
                        "the reader to poll while a transaction is open",
                        Duration::from_secs(30),
                        || {
                            let polls = polls.clone();
                            async move { Ok((polls.load(Ordering::SeqCst) >= target).then_some(())) }
                        },
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                    store.announce(stored[0].position);
                    stored
                } else {
                    store.push(push).await.unwrap()
                };
                written.extend(stored.into_iter().map(|e| e.id));
            }
            written
        });
    }
    let mut written = HashSet::new();
    while let Some(ids) = writers.join_next().await {
        for id in ids.unwrap() {
            assert!(written.insert(id));
        }
    }
    done_tx.send(true).unwrap();
    let seen = reader.await.unwrap();

    assert!(
        written.len() >= 20_000,
        "the test must write at least 20,000 events, wrote {}",
        written.len()
    );
    let seen_ids: Vec<_> = seen.iter().map(|e| e.id).collect();
    let unique: HashSet<_> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "the reader saw an event twice");
    assert_eq!(unique, written, "the reader saw exactly the written events");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions"
    );
    let full: Vec<_> = all_events(&store).await.into_iter().map(|e| e.id).collect();
    assert_eq!(seen_ids, full, "the tail equals a final full ordered read");
    db.drop_db().await.unwrap();
}

/// Per-aggregate order (DESIGN.md guarantee 11): a transaction that took its position (its
/// transaction id) before another transaction appended to an aggregate and committed must not
/// append the aggregate's next event: it would stand below its predecessor in position order, and
/// every projection would apply the two in the wrong order. The push is refused, nothing is
/// written, and the same push in a new transaction succeeds above the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregates_next_event_never_lands_below_its_previous_one() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    let instance = InstanceId::new();
    let shared = AggregateId::new();

    // B takes its transaction id first (as a command does when it claims an idempotency key).
    let mut early = cairn_eventstore::begin(&db.pool).await.unwrap();
    let early_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *early)
        .await
        .unwrap();
    // A, started later, appends sequence 1 and commits.
    let a = store
        .push(one(instance, shared, ExpectedSequence::Exact(0), 1))
        .await
        .unwrap();
    assert!(
        a[0].position.position > early_xid,
        "A's transaction started after B's"
    );

    // B now sees sequence 1 and appends sequence 2: with an unpinned and a pinned expectation.
    for expected in [ExpectedSequence::Any, ExpectedSequence::Exact(1)] {
        sqlx::query("SAVEPOINT attempt")
            .execute(&mut *early)
            .await
            .unwrap();
        let result = store
            .push_in(&mut early, one(instance, shared, expected, 2))
            .await;
        sqlx::query("ROLLBACK TO SAVEPOINT attempt")
            .execute(&mut *early)
            .await
            .unwrap();
        let stored = result.as_ref().map(|s| (s[0].sequence, s[0].position));
        assert!(
            matches!(
                result,
                Err(cairn_eventstore::StoreError::TransactionTooOld { latest, own, .. })
                    if latest == a[0].position.position && own == early_xid
            ),
            "a push from a transaction older than the aggregate's last event must be refused \
             ({expected:?}); it gave {stored:?}, A is at {}",
            a[0].position
        );
    }
    early.rollback().await.unwrap();

    // A fresh transaction appends above A.
    let mut fresh = cairn_eventstore::begin(&db.pool).await.unwrap();
    let b = store
        .push_in(&mut fresh, one(instance, shared, ExpectedSequence::Exact(1), 2))
        .await
        .unwrap();
    fresh.commit().await.unwrap();
    assert_eq!(b[0].sequence, 2);
    assert!(b[0].position > a[0].position);
    visible(&store, b[0].position).await;
    let events = all_events(&store).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    db.drop_db().await.unwrap();
}

/// A transaction whose begin is abandoned half-way (a request cancelled by its client's deadline,
/// a task aborted) must leave no open transaction on its connection. Otherwise the pool hands that
/// connection to the next writer, whose autocommit push then runs inside the stray transaction: it
/// is acknowledged, yet never committed (and rolled back with the session), and every reader stalls
/// below it meanwhile. The pool has one connection, so the abandoned one is the next writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_abandoned_half_way_leaves_no_open_transaction_behind() {
    use futures::FutureExt;
    let db = TestDb::new(1).await.unwrap();
    // A pool that hands out its idle connection at once, so the first poll of a begin sends BEGIN.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(&db.url)
        .await
        .unwrap();
    let store = PgEventStore::new(pool.clone());
    let mut observer = db.connect().await.unwrap();
    let instance = InstanceId::new();
    let aggregate = AggregateId::new();
    for round in 0..40_i64 {
        // Poll the begin `polls` times, then drop it wherever it stands.
        let polls = round % 4 + 1;
        let mut begin = Box::pin(cairn_eventstore::begin(&pool));
        for _ in 0..polls {
            if let Some(result) = (&mut begin).now_or_never() {
                drop(result.unwrap()); // begun before the drop: an ordinary rollback
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(begin);
        store
            .push(Push::single(
                instance,
                user_type(),
                aggregate,
                ExpectedSequence::Exact(round),
                vec![draft("user.human.added", round)],
            ))
            .await
            .unwrap();
        let committed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM eventstore.events WHERE aggregate_id = $1")
                .bind(aggregate.as_uuid())
                .fetch_one(&mut observer)
                .await
                .unwrap();
        assert_eq!(
            committed,
            round + 1,
            "round {round}: the push was acknowledged but another connection does not see it \
             committed (it ran inside a transaction left open by the abandoned begin)"
        );
    }
    pool.close().await;
    drop(observer);
    db.drop_db().await.unwrap();
}
