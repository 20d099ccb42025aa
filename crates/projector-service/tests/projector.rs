//! The projector service with the relay and JetStream, against real PostgreSQL and NATS: the read
//! models follow the domain's events, read-your-writes holds 1,000 times out of 1,000, and every
//! read model equals a rebuild from zero. The services run as `crates/stack` starts them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_domain::group::AddGroup;
use cairn_domain::user::{AddHumanUser, Email, HumanProfile, PersonName, ProfileChange};
use cairn_domain::{
    Aggregate, AggregateId, DisplayName, EmailAddress, Group, InstanceId, Position, StoredEvent, User,
    UserName,
};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_readmodel::PositionWaiter;
use cairn_stack::Stack;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The whole system from `crates/stack` (relay, this projector, command-api, SCIM gateway) on a fresh
/// database: the test writes to command-api's event store and waits with its position waiter.
async fn start() -> Stack {
    Stack::start().await.unwrap()
}

fn store(stack: &Stack) -> &PgEventStore {
    &stack.api().exec.store
}

fn waiter(stack: &Stack) -> &PositionWaiter {
    &stack.api().waiter
}

async fn load<A: Aggregate>(stack: &Stack, instance: InstanceId, id: AggregateId) -> A {
    let events = store(stack)
        .load_aggregate(instance, &A::aggregate_type(), id, 0)
        .await
        .unwrap();
    cairn_domain::rebuild(&events).unwrap()
}

fn profile(email: &str) -> HumanProfile {
    HumanProfile {
        name: PersonName {
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            ..Default::default()
        },
        display_name: Some(DisplayName::parse("Ada Lovelace").unwrap()),
        emails: vec![Email {
            value: EmailAddress::parse(email).unwrap(),
            kind: Some("work".into()),
            display: None,
            primary: true,
            verified: false,
        }],
        ..Default::default()
    }
}

async fn add_user(
    stack: &Stack,
    instance: InstanceId,
    org: AggregateId,
    name: &str,
) -> (AggregateId, Vec<StoredEvent>) {
    let id = AggregateId::new();
    let decision = User::default()
        .add_human(AddHumanUser {
            org_id: org,
            user_name: UserName::parse(name).unwrap(),
            profile: profile(&format!("{name}@example.com")),
            password_hash: None,
            active: true,
        })
        .unwrap();
    let push = Push::from_decision(
        instance,
        User::aggregate_type(),
        id,
        ExpectedSequence::Exact(0),
        decision,
        "test",
        org,
    );
    (id, store(stack).push(push).await.unwrap())
}

async fn user_row(
    stack: &Stack,
    instance: InstanceId,
    id: AggregateId,
) -> Option<cairn_readmodel::rows::UserRow> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(u) FROM projections.users u WHERE instance_id = $1 AND id = $2")
            .bind(instance.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&stack.db.pool)
            .await
            .unwrap();
    row.map(|r| serde_json::from_value(r).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_is_readable_after_waiting_for_its_position_1000_times_out_of_1000() {
    let stack = start().await;
    let instance = InstanceId::new();
    let org = AggregateId::new();
    let mut waits = Vec::with_capacity(1000);
    for i in 0..1000 {
        let (id, events) = add_user(&stack, instance, org, &format!("user{i}")).await;
        let started = std::time::Instant::now();
        waiter(&stack)
            .wait_for_position(&["users"], instance, events.last().unwrap().position, WAIT)
            .await
            .unwrap();
        waits.push(started.elapsed());
        let row = user_row(&stack, instance, id).await;
        assert_eq!(
            row.map(|r| r.user_name),
            Some(format!("user{i}")),
            "write {i} not visible after its wait"
        );
    }
    waits.sort();
    eprintln!(
        "read-your-writes wait: p50 {:?}, p99 {:?}",
        waits[500], waits[990]
    );
    // A position that will never be reached times out with a typed error, promptly.
    let far = Position::new(i64::MAX, 0);
    let error = waiter(&stack)
        .wait_for_position(&["users"], instance, far, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(error, cairn_readmodel::WaitError::Timeout { .. }),
        "{error}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_follow_the_domain_and_equal_a_rebuild_from_zero() {
    let stack = start().await;
    let instance = InstanceId::new();
    let org = AggregateId::new();
    let (ada, _) = add_user(&stack, instance, org, "Ada").await;
    let (bob, _) = add_user(&stack, instance, org, "bob").await;

    // Profile change, email change and verification, deactivation.
    let user: User = load(&stack, instance, ada).await;
    let change = ProfileChange {
        title: Some(Some("Countess".into())),
        ..Default::default()
    };
    let push = Push::from_decision(
        instance,
        User::aggregate_type(),
        ada,
        ExpectedSequence::Exact(user.sequence()),
        user.change_profile(change).unwrap(),
        "test",
        org,
    );
    store(&stack).push(push).await.unwrap();
    let user: User = load(&stack, instance, ada).await;
    let decision = user
        .set_email(EmailAddress::parse("ada@analytical.engine").unwrap(), true)
        .unwrap();
    let push = Push::from_decision(
        instance,
        User::aggregate_type(),
        ada,
        ExpectedSequence::Exact(user.sequence()),
        decision,
        "test",
        org,
    );
    store(&stack).push(push).await.unwrap();
    let user: User = load(&stack, instance, bob).await;
    let push = Push::from_decision(
        instance,
        User::aggregate_type(),
        bob,
        ExpectedSequence::Exact(user.sequence()),
        user.deactivate().unwrap(),
        "test",
        org,
    );
    store(&stack).push(push).await.unwrap();

    // A group with both as members; then Bob is removed together with his membership.
    let group_id = AggregateId::new();
    let decision = Group::default()
        .add(AddGroup {
            org_id: org,
            display_name: DisplayName::parse("Engineers").unwrap(),
            external_id: Some("g-1".into()),
            description: None,
        })
        .unwrap();
    store(&stack)
        .push(Push::from_decision(
            instance,
            Group::aggregate_type(),
            group_id,
            ExpectedSequence::Exact(0),
            decision,
            "test",
            org,
        ))
        .await
        .unwrap();
    let group: Group = load(&stack, instance, group_id).await;
    let push = Push::from_decision(
        instance,
        Group::aggregate_type(),
        group_id,
        ExpectedSequence::Exact(group.sequence()),
        group.add_members(&[ada, bob]).unwrap(),
        "test",
        org,
    );
    store(&stack).push(push).await.unwrap();
    let group: Group = load(&stack, instance, group_id).await;
    let user: User = load(&stack, instance, bob).await;
    let push = Push::from_decision(
        instance,
        User::aggregate_type(),
        bob,
        ExpectedSequence::Exact(user.sequence()),
        user.remove().unwrap(),
        "test",
        org,
    )
    .and(Push::from_decision(
        instance,
        Group::aggregate_type(),
        group_id,
        ExpectedSequence::Exact(group.sequence()),
        group.remove_members(&[bob]).unwrap(),
        "test",
        org,
    ));
    let last = store(&stack).push(push).await.unwrap();
    let position = last.last().unwrap().position;
    waiter(&stack)
        .wait_for_position(&["users", "groups", "milestones"], instance, position, WAIT)
        .await
        .unwrap();

    let ada_row = user_row(&stack, instance, ada).await.unwrap();
    assert_eq!(ada_row.title.as_deref(), Some("Countess"));
    assert_eq!(ada_row.primary_email.as_deref(), Some("ada@analytical.engine"));
    assert!(ada_row.email_verified);
    assert_eq!(ada_row.state, "active");
    assert_eq!(ada_row.given_name.as_deref(), Some("Ada"));
    assert!(
        user_row(&stack, instance, bob).await.is_none(),
        "a removed user has no row"
    );
    let (count, members): (i64, i64) = sqlx::query_as(
        "SELECT g.member_count, (SELECT count(*) FROM projections.group_members m WHERE m.group_id = g.id) \
         FROM projections.groups g WHERE g.id = $1",
    )
    .bind(group_id.as_uuid())
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!((count, members), (1, 1));
    let milestones: Vec<String> = sqlx::query_scalar(
        "SELECT milestone FROM projections.milestones WHERE instance_id = $1 ORDER BY milestone",
    )
    .bind(instance.as_uuid())
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        milestones,
        vec!["email_verified", "group_created", "user_created"]
    );

    // Every read model equals a rebuild from zero.
    let live = cairn_stack::read_model_checksums(&stack.db.pool).await.unwrap();
    cairn_stack::rebuild_read_models(&stack.db.pool, WAIT * 3)
        .await
        .unwrap();
    waiter(&stack)
        .wait_for_position(
            &["users", "groups", "milestones", "orgs", "instances"],
            instance,
            position,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        cairn_stack::read_model_checksums(&stack.db.pool).await.unwrap(),
        live,
        "rebuilt read models differ from the live ones"
    );
    stack.stop().await.unwrap();
}
