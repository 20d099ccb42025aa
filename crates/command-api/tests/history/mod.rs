//! Randomized histories: concurrent clients issue random commands on a small set of shared
//! aggregates, with and without idempotency keys (some sent twice, some twice at once), optionally
//! while the projector replica is killed and restarted; afterwards every invariant is checked at
//! once against the write model's own state:
//!
//! - per-aggregate order: for every aggregate, (position, offset) order equals sequence order;
//! - no acknowledged write lost: every acknowledged command's last event is stored at the position
//!   its response named, on the aggregate and sequence it named;
//! - nothing applied twice and nothing written by a failed command: every transaction position in
//!   the store after the setup is the position of an acknowledged response, and a repeated key
//!   returns the first response;
//! - the stream equals the store: the same event ids, in the same order;
//! - each read model equals the write model: the state folded from each aggregate's events in
//!   sequence order (not a replay in position order, which would share a reordering bug).
//!
//! The seed is printed at the start and in every failure; `CAIRN_HISTORY_SEED=<seed>` replays the
//! same operations (the interleaving of concurrent clients is up to the machine).

use super::{Stack, authed};
use async_nats::jetstream::consumer::pull;
use cairn_domain::{
    Aggregate, AggregateId, AggregateType, Group, InstanceId, Position, StoredEvent, User, UserState,
};
use cairn_eventstore::EventStore;
use cairn_proto::common::v1 as common;
use cairn_proto::group::v1 as group;
use cairn_proto::user::v1 as user;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The size and the kind of a history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Concurrent clients.
    pub writers: usize,
    /// Commands per client.
    pub ops_per_writer: usize,
    /// Groups created before the clients start.
    pub groups: usize,
    /// Users created before the clients start (all members of every group at first).
    pub users: usize,
    /// Besides member changes and user removals: renames, profile changes, deactivation,
    /// creation and removal of users and groups.
    pub all_commands: bool,
    /// Kill the projector replica (its tasks aborted, no lease released) and start a new one,
    /// again and again while the clients run.
    pub kill_projector: bool,
}

/// The seed of this run: `CAIRN_HISTORY_SEED` or a random one.
pub fn seed() -> u64 {
    std::env::var("CAIRN_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// What a history did, for the test's own assertions.
#[derive(Debug, Default)]
pub struct Report {
    /// Commands that returned success and wrote events.
    pub acked_writes: usize,
    /// Commands refused with an expected error (conflicts, taken names, removed targets), by
    /// gRPC code.
    pub refused: BTreeMap<String, usize>,
    /// Times the projector replica was killed.
    pub projector_kills: usize,
    /// Events in the store at the end.
    pub events: usize,
}

#[derive(Clone, Debug)]
enum Op {
    AddMembers(AggregateId, Vec<AggregateId>),
    RemoveMembers(AggregateId, Vec<AggregateId>),
    SetMembers(AggregateId, Vec<AggregateId>),
    RenameGroup(AggregateId, String),
    AddGroup(AggregateId, String, Vec<AggregateId>),
    RemoveGroup(AggregateId),
    SetTitle(AggregateId, String),
    Deactivate(AggregateId),
    Reactivate(AggregateId),
    RenameUser(AggregateId, String),
    RemoveUser(AggregateId),
    AddUser(AggregateId, String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::AddMembers(..) => "AddMembers",
            Op::RemoveMembers(..) => "RemoveMembers",
            Op::SetMembers(..) => "SetMembers",
            Op::RenameGroup(..) => "UpdateGroup",
            Op::AddGroup(..) => "AddGroup",
            Op::RemoveGroup(..) => "RemoveGroup",
            Op::SetTitle(..) => "UpdateProfile",
            Op::Deactivate(..) => "DeactivateUser",
            Op::Reactivate(..) => "ReactivateUser",
            Op::RenameUser(..) => "ChangeUserName",
            Op::RemoveUser(..) => "RemoveUser",
            Op::AddUser(..) => "AddHumanUser",
        }
    }

    /// The aggregate whose sequence the response reports.
    fn target(&self) -> AggregateId {
        match self {
            Op::AddMembers(g, _)
            | Op::RemoveMembers(g, _)
            | Op::SetMembers(g, _)
            | Op::RenameGroup(g, _)
            | Op::AddGroup(g, _, _)
            | Op::RemoveGroup(g) => *g,
            Op::SetTitle(u, _)
            | Op::Deactivate(u)
            | Op::Reactivate(u)
            | Op::RenameUser(u, _)
            | Op::RemoveUser(u)
            | Op::AddUser(u, _) => *u,
        }
    }
}

/// An acknowledged command that wrote events.
#[derive(Clone, Debug)]
struct Ack {
    op: &'static str,
    aggregate: AggregateId,
    position: Position,
    sequence: i64,
}

/// The aggregates the clients pick from.
struct World {
    groups: Vec<AggregateId>,
    users: Vec<AggregateId>,
}

fn ids(values: &[AggregateId]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn request<T>(token: &str, message: T, key: Option<&str>) -> Request<T> {
    let mut request = authed(token, message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    request
}

fn human(id: AggregateId, name: &str) -> user::AddHumanUserRequest {
    user::AddHumanUserRequest {
        user_id: id.to_string(),
        ..super::human(name)
    }
}

/// Sends one command; the response's details.
async fn call(channel: &Channel, token: &str, op: &Op, key: Option<&str>) -> Result<common::Details, Status> {
    let mut users = user::user_service_client::UserServiceClient::new(channel.clone());
    let mut groups = group::group_service_client::GroupServiceClient::new(channel.clone());
    let members = |group: &AggregateId, members: &[AggregateId]| group::MembersRequest {
        group_id: group.to_string(),
        user_ids: ids(members),
        expected_sequence: 0,
    };
    let details = match op {
        Op::AddMembers(g, m) => {
            groups
                .add_members(request(token, members(g, m), key))
                .await?
                .into_inner()
                .details
        }
        Op::RemoveMembers(g, m) => {
            groups
                .remove_members(request(token, members(g, m), key))
                .await?
                .into_inner()
                .details
        }
        Op::SetMembers(g, m) => {
            groups
                .set_members(request(token, members(g, m), key))
                .await?
                .into_inner()
                .details
        }
        Op::RenameGroup(g, name) => {
            groups
                .update_group(request(
                    token,
                    group::UpdateGroupRequest {
                        group_id: g.to_string(),
                        display_name: name.clone(),
                        ..Default::default()
                    },
                    key,
                ))
                .await?
                .into_inner()
                .details
        }
        Op::AddGroup(g, name, m) => {
            groups
                .add_group(request(
                    token,
                    group::AddGroupRequest {
                        group_id: g.to_string(),
                        display_name: name.clone(),
                        member_ids: ids(m),
                        ..Default::default()
                    },
                    key,
                ))
                .await?
                .into_inner()
                .details
        }
        Op::RemoveGroup(g) => {
            groups
                .remove_group(request(
                    token,
                    group::GroupIdRequest {
                        group_id: g.to_string(),
                        expected_sequence: 0,
                    },
                    key,
                ))
                .await?
                .into_inner()
                .details
        }
        Op::SetTitle(u, title) => {
            users
                .update_profile(request(
                    token,
                    user::UpdateProfileRequest {
                        user_id: u.to_string(),
                        profile: Some(user::HumanProfile {
                            title: title.clone(),
                            ..Default::default()
                        }),
                        fields: vec!["title".into()],
                        expected_sequence: 0,
                    },
                    key,
                ))
                .await?
                .into_inner()
                .details
        }
        Op::Deactivate(u) | Op::Reactivate(u) | Op::RemoveUser(u) => {
            let message = user::UserIdRequest {
                user_id: u.to_string(),
                expected_sequence: 0,
            };
            match op {
                Op::Deactivate(_) => {
                    users
                        .deactivate_user(request(token, message, key))
                        .await?
                        .into_inner()
                        .details
                }
                Op::Reactivate(_) => {
                    users
                        .reactivate_user(request(token, message, key))
                        .await?
                        .into_inner()
                        .details
                }
                _ => {
                    let message = user::RemoveUserRequest {
                        user_id: message.user_id,
                        ..Default::default()
                    };
                    users
                        .remove_user(request(token, message, key))
                        .await?
                        .into_inner()
                        .details
                }
            }
        }
        Op::RenameUser(u, name) => {
            users
                .change_user_name(request(
                    token,
                    user::ChangeUserNameRequest {
                        user_id: u.to_string(),
                        user_name: name.clone(),
                        expected_sequence: 0,
                    },
                    key,
                ))
                .await?
                .into_inner()
                .details
        }
        Op::AddUser(u, name) => {
            users
                .add_human_user(request(token, human(*u, name), key))
                .await?
                .into_inner()
                .details
        }
    };
    details.ok_or_else(|| Status::internal("a successful response without details"))
}

/// Errors a correct server may answer to a random command on shared aggregates: a conflict that
/// persisted through the server's retry, a name taken by another client, a target removed or not
/// in a state that allows the command, a member that was removed meanwhile. `RemoveUser` reads the
/// user's groups from the read model and may also answer `DEADLINE_EXCEEDED` while no projector
/// replica runs.
fn expected_refusal(op: &Op, code: Code) -> bool {
    matches!(
        code,
        Code::Aborted
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::InvalidArgument
    ) || (matches!(op, Op::RemoveUser(_)) && code == Code::DeadlineExceeded)
}

fn pick(rng: &mut StdRng, from: &[AggregateId], most: usize) -> Vec<AggregateId> {
    let n = rng.random_range(1..=most.min(from.len()).max(1));
    let mut chosen = BTreeSet::new();
    for _ in 0..n {
        if let Some(id) = from.get(rng.random_range(0..from.len().max(1))) {
            chosen.insert(*id);
        }
    }
    chosen.into_iter().collect()
}

fn next_op(rng: &mut StdRng, world: &World, shape: &Shape) -> Op {
    let group = world.groups[rng.random_range(0..world.groups.len())];
    let a_user = world.users[rng.random_range(0..world.users.len())];
    let roll = rng.random_range(0..100);
    if !shape.all_commands {
        return match roll {
            0..44 => Op::AddMembers(group, pick(rng, &world.users, 3)),
            44..88 => Op::RemoveMembers(group, pick(rng, &world.users, 3)),
            88..95 => Op::SetMembers(group, pick(rng, &world.users, 4)),
            95..97 => Op::RemoveUser(a_user),
            _ => Op::AddUser(
                AggregateId::new(),
                format!("extra-{}", rng.random_range(0..1_000_000)),
            ),
        };
    }
    // Names come from small pools, so clients collide on them.
    match roll {
        0..22 => Op::AddMembers(group, pick(rng, &world.users, 3)),
        22..40 => Op::RemoveMembers(group, pick(rng, &world.users, 3)),
        40..44 => Op::SetMembers(group, pick(rng, &world.users, 4)),
        44..50 => Op::RenameGroup(group, format!("team-{}", rng.random_range(0..8))),
        50..53 => Op::AddGroup(
            AggregateId::new(),
            format!("team-{}", rng.random_range(0..8)),
            pick(rng, &world.users, 2),
        ),
        53..55 => Op::RemoveGroup(group),
        55..68 => Op::SetTitle(a_user, format!("title-{}", rng.random_range(0..1000))),
        68..75 => Op::Deactivate(a_user),
        75..82 => Op::Reactivate(a_user),
        82..88 => Op::RenameUser(a_user, format!("person-{}", rng.random_range(0..24))),
        88..92 => Op::RemoveUser(a_user),
        _ => Op::AddUser(AggregateId::new(), format!("person-{}", rng.random_range(0..24))),
    }
}

/// Runs a history on `stack` and checks every invariant; panics with the seed and every
/// violation found.
pub async fn run(stack: &mut Stack, shape: Shape, seed: u64) -> Report {
    println!("history seed = {seed} (replay with CAIRN_HISTORY_SEED={seed}); {shape:?}");
    let token = stack.admin.token.to_string();
    let instance = stack.admin.instance_id;
    let channel = stack.channel();

    // Setup: users (members of every group) and groups, without keys.
    let mut world = World {
        groups: Vec::new(),
        users: Vec::new(),
    };
    for i in 0..shape.users {
        let id = AggregateId::new();
        call(&channel, &token, &Op::AddUser(id, format!("member-{i}")), None)
            .await
            .unwrap();
        world.users.push(id);
    }
    for i in 0..shape.groups {
        let id = AggregateId::new();
        call(
            &channel,
            &token,
            &Op::AddGroup(id, format!("group-{i}"), world.users.clone()),
            None,
        )
        .await
        .unwrap();
        world.groups.push(id);
    }
    let setup_end = latest_committed(stack, instance).await;

    let world = Arc::new(Mutex::new(world));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let killer = shape.kill_projector.then(|| {
        let replica = stack.projector.take();
        let projectors = stack.projectors();
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
            let mut replica = replica;
            let mut kills = 0;
            while !done.load(Ordering::Relaxed) {
                // The fault's timing is the scenario, not a wait for a condition: a replica lives
                // long enough to take the leases over (TTL 2 s) and work, then dies mid-work.
                tokio::time::sleep(Duration::from_millis(rng.random_range(1500..4000))).await;
                drop(replica.take());
                kills += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..800))).await;
                replica = Some(projectors.start().await.unwrap());
            }
            (replica, kills)
        })
    });

    let mut clients = tokio::task::JoinSet::new();
    for writer in 0..shape.writers {
        let (channel, token) = (channel.clone(), token.clone());
        let (world, acks, violations, refused) =
            (world.clone(), acks.clone(), violations.clone(), refused.clone());
        clients.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(writer as u64 * 7919));
            for i in 0..shape.ops_per_writer {
                let op = {
                    let world = world.lock().unwrap();
                    next_op(&mut rng, &world, &shape)
                };
                let key = rng.random_bool(0.5).then(|| format!("h-{seed}-{writer}-{i}"));
                let twice = key.is_some() && rng.random_bool(0.3);
                let at_once = twice && rng.random_bool(0.5);
                let key = key.as_deref();
                let (first, second) = if at_once {
                    let (a, b) =
                        tokio::join!(call(&channel, &token, &op, key), call(&channel, &token, &op, key));
                    (a, Some(b))
                } else {
                    let a = call(&channel, &token, &op, key).await;
                    let b = if twice {
                        Some(call(&channel, &token, &op, key).await)
                    } else {
                        None
                    };
                    (a, b)
                };
                let mut problems = Vec::new();
                match (&first, &second) {
                    (Ok(a), Some(Ok(b))) if a != b => problems.push(format!(
                        "{} with key {key:?} answered {a:?} and then {b:?}",
                        op.name()
                    )),
                    (Ok(_), Some(Err(e))) if !at_once => problems.push(format!(
                        "{} with key {key:?} succeeded, and its retry failed: {e:?}",
                        op.name()
                    )),
                    _ => {}
                }
                let mut outcome = |result: &Result<common::Details, Status>| match result {
                    Ok(details) => {
                        let position: Position = details.position.parse().unwrap();
                        if position == Position::ZERO {
                            return;
                        }
                        acks.lock().unwrap().push(Ack {
                            op: op.name(),
                            aggregate: op.target(),
                            position,
                            sequence: details.sequence,
                        });
                        // Clients mostly pick aggregates that exist (a few picks still race a
                        // removal, as real clients do).
                        let mut world = world.lock().unwrap();
                        match &op {
                            // Once, however often the call was answered (a replayed key answers
                            // twice): a duplicate would let one removal empty the list.
                            Op::AddGroup(id, ..) if !world.groups.contains(id) => world.groups.push(*id),
                            Op::AddUser(id, _) if !world.users.contains(id) => world.users.push(*id),
                            Op::RemoveGroup(id) if world.groups.len() > 1 => world.groups.retain(|g| g != id),
                            Op::RemoveUser(id) if world.users.len() > 1 => world.users.retain(|u| u != id),
                            _ => {}
                        }
                    }
                    Err(status) if expected_refusal(&op, status.code()) => {
                        *refused
                            .lock()
                            .unwrap()
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                    }
                    Err(status) => problems.push(format!("{} failed unexpectedly: {status:?}", op.name())),
                };
                outcome(&first);
                if let Some(second) = &second {
                    outcome(second);
                }
                violations.lock().unwrap().extend(problems);
            }
        });
    }
    while let Some(joined) = clients.join_next().await {
        joined.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut projector_kills = 0;
    if let Some(killer) = killer {
        let (replica, kills) = killer.await.unwrap();
        stack.projector = replica;
        projector_kills = kills;
    }

    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let mut violations = std::mem::take(&mut *violations.lock().unwrap());
    let events = check(stack, instance, setup_end, &acks, &mut violations).await;
    assert!(
        violations.is_empty(),
        "history seed {seed} (replay with CAIRN_HISTORY_SEED={seed}) broke {} invariant(s):\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .map(|v| format!("  - {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let report = Report {
        acked_writes: acks.len(),
        refused: std::mem::take(&mut *refused.lock().unwrap()),
        projector_kills,
        events,
    };
    println!("history seed = {seed}: {report:?}");
    report
}

async fn latest_committed(stack: &Stack, instance: InstanceId) -> Position {
    stack.api().exec.store.latest_committed(instance).await.unwrap()
}

/// Checks every invariant; returns the number of events in the store.
async fn check(
    stack: &Stack,
    instance: InstanceId,
    setup_end: Position,
    acks: &[Ack],
    violations: &mut Vec<String>,
) -> usize {
    let pool = &stack.db.pool;

    // Per-aggregate order, over the whole store.
    let disorder: Vec<(uuid::Uuid, i64, i64, i32, i64, i32)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, position, in_tx_order, prev_position, prev_offset FROM ( \
           SELECT aggregate_id, sequence, position, in_tx_order, \
                  lag(position) OVER w AS prev_position, lag(in_tx_order) OVER w AS prev_offset \
             FROM eventstore.events \
           WINDOW w AS (PARTITION BY instance_id, aggregate_type, aggregate_id ORDER BY sequence)) t \
         WHERE (position, in_tx_order) <= (prev_position, prev_offset) ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (aggregate, sequence, p, o, pp, po) in &disorder {
        violations.push(format!(
            "aggregate {aggregate}: sequence {sequence} at {p}.{o} stands below sequence {} at {pp}.{po}",
            sequence - 1
        ));
    }

    // Every acknowledged write is stored where its response said.
    let stored: Vec<(uuid::Uuid, i64, i64, i32)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, position, in_tx_order FROM eventstore.events WHERE instance_id = $1",
    )
    .bind(instance.as_uuid())
    .fetch_all(pool)
    .await
    .unwrap();
    let by_sequence: BTreeMap<(uuid::Uuid, i64), Position> = stored
        .iter()
        .map(|(a, s, p, o)| ((*a, *s), Position::new(*p, *o)))
        .collect();
    let at_position: HashSet<Position> = by_sequence.values().copied().collect();
    let acked_transactions: HashSet<i64> = acks.iter().map(|a| a.position.position).collect();
    for ack in acks {
        if !at_position.contains(&ack.position) {
            violations.push(format!(
                "acknowledged {} lost: no event at {}",
                ack.op, ack.position
            ));
        }
        match by_sequence.get(&(ack.aggregate.as_uuid(), ack.sequence)) {
            Some(p) if p.position == ack.position.position => {}
            other => violations.push(format!(
                "acknowledged {} on {} at sequence {} (position {}): the store has {other:?}",
                ack.op, ack.aggregate, ack.sequence, ack.position
            )),
        }
    }
    // Nothing stored that no acknowledged response accounts for (a failed command, or a repeated
    // key applied a second time).
    let mut strays: Vec<Position> = by_sequence
        .values()
        .filter(|p| **p > setup_end && !acked_transactions.contains(&p.position))
        .copied()
        .collect();
    strays.sort();
    strays.dedup_by_key(|p| p.position);
    for stray in strays.iter().take(10) {
        violations.push(format!(
            "events at transaction {} belong to no acknowledged command",
            stray.position
        ));
    }

    // The read models reach the latest committed position, then equal the folded write model.
    let latest = latest_committed(stack, instance).await;
    let reached = cairn_testkit::eventually(
        "the users and groups projections to reach the latest committed position",
        Duration::from_secs(60),
        || async {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (VALUES ('users'), ('groups')) AS p(name) \
                 WHERE NOT EXISTS (SELECT 1 FROM projections.projection_states s \
                                    WHERE s.name = p.name AND s.instance_id = $1 \
                                      AND (s.position, s.position_offset) >= ($2, $3))",
            )
            .bind(instance.as_uuid())
            .bind(latest.position)
            .bind(latest.offset)
            .fetch_one(pool)
            .await?;
            Ok((behind == 0).then_some(()))
        },
    )
    .await;
    if let Err(error) = reached {
        violations.push(error.to_string());
        return stored.len();
    }
    compare_read_models(stack, instance, violations).await;
    compare_stream(stack, violations).await;
    stored.len()
}

async fn fold<A: Aggregate>(stack: &Stack, instance: InstanceId, id: AggregateId) -> A {
    let mut events: Vec<StoredEvent> = stack
        .api()
        .exec
        .store
        .load_aggregate(instance, &A::aggregate_type(), id, 0)
        .await
        .unwrap();
    // Users' personal data is sealed in the store; opened as every reader inside Cairn opens it.
    let mut conn = stack.db.pool.acquire().await.unwrap();
    stack.api().exec.vault.open(&mut conn, &mut events).await.unwrap();
    let mut state = A::default();
    for event in &events {
        state.apply(event).unwrap();
    }
    state
}

async fn aggregates(stack: &Stack, instance: InstanceId, kind: &AggregateType) -> Vec<AggregateId> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM eventstore.events WHERE instance_id = $1 AND aggregate_type = $2",
    )
    .bind(instance.as_uuid())
    .bind(kind.as_str())
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    ids.into_iter().map(AggregateId::from_uuid).collect()
}

async fn compare_read_models(stack: &Stack, instance: InstanceId, violations: &mut Vec<String>) {
    let pool = &stack.db.pool;
    let mut removed_users = HashSet::new();
    for id in aggregates(stack, instance, &User::aggregate_type()).await {
        let user: User = fold(stack, instance, id).await;
        if user.state() == UserState::Removed {
            removed_users.insert(id);
        }
    }
    for id in aggregates(stack, instance, &Group::aggregate_type()).await {
        let group: Group = fold(stack, instance, id).await;
        // The domain's own rule: removing a user takes it out of every group.
        if group.exists() {
            let stale: Vec<&AggregateId> = group
                .members()
                .iter()
                .filter(|m| removed_users.contains(*m))
                .collect();
            if !stale.is_empty() {
                violations.push(format!(
                    "group {id} still has removed users as members: {stale:?}"
                ));
            }
        }
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT display_name, member_count, sequence FROM projections.groups WHERE instance_id = $1 AND id = $2",
        )
        .bind(instance.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await
        .unwrap();
        let members: BTreeSet<uuid::Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM projections.group_members WHERE instance_id = $1 AND group_id = $2",
        )
        .bind(instance.as_uuid())
        .bind(id.as_uuid())
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let want_members: BTreeSet<uuid::Uuid> = group.members().iter().map(|m| m.as_uuid()).collect();
        let want = group.exists().then(|| {
            (
                group.display_name().map(|d| d.to_string()).unwrap_or_default(),
                want_members.len() as i64,
                group.sequence(),
            )
        });
        if row != want {
            violations.push(format!("group {id}: read model {row:?}, write model {want:?}"));
        }
        let want_members = if group.exists() {
            want_members
        } else {
            BTreeSet::new()
        };
        if members != want_members {
            violations.push(format!(
                "group {id}: read model members {} (extra {:?}, missing {:?}), write model {}",
                members.len(),
                members.difference(&want_members).collect::<Vec<_>>(),
                want_members.difference(&members).collect::<Vec<_>>(),
                want_members.len()
            ));
        }
    }
    for id in aggregates(stack, instance, &User::aggregate_type()).await {
        let user: User = fold(stack, instance, id).await;
        let row: Option<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT user_name, state, title, sequence FROM projections.users WHERE instance_id = $1 AND id = $2",
        )
        .bind(instance.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await
        .unwrap();
        let state = match user.state() {
            UserState::Active => Some("active"),
            UserState::Inactive => Some("inactive"),
            UserState::Locked => Some("locked"),
            UserState::Absent | UserState::Removed => None,
        };
        let want = state.map(|state| {
            (
                user.user_name().map(|n| n.to_string()).unwrap_or_default(),
                state.to_owned(),
                user.human().and_then(|h| h.title.clone()),
                user.sequence(),
            )
        });
        if row != want {
            violations.push(format!("user {id}: read model {row:?}, write model {want:?}"));
        }
    }
}

/// The stream holds exactly the store's events, in the store's order.
async fn compare_stream(stack: &Stack, violations: &mut Vec<String>) {
    let store_ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM eventstore.events ORDER BY position, in_tx_order")
            .fetch_all(&stack.db.pool)
            .await
            .unwrap();
    let client = async_nats::connect(cairn_testkit::nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let count = cairn_testkit::eventually(
        "the stream to hold as many messages as the store has events",
        Duration::from_secs(60),
        || async {
            let mut stream = js.get_stream(stack.stream()).await?;
            let messages = stream.info().await?.state.messages;
            Ok((messages >= store_ids.len() as u64).then_some(messages))
        },
    )
    .await;
    let count = match count {
        Ok(count) => count,
        Err(error) => {
            violations.push(error.to_string());
            return;
        }
    };
    if count != store_ids.len() as u64 {
        violations.push(format!(
            "the stream holds {count} messages, the store {} events",
            store_ids.len()
        ));
    }
    let stream = js.get_stream(stack.stream()).await.unwrap();
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut stream_ids = Vec::with_capacity(count as usize);
    while stream_ids.len() < count as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("reading the stream timed out")
            .expect("the stream ended")
            .unwrap();
        let id: uuid::Uuid = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().parse().unwrap())
            .expect("a message without Nats-Msg-Id");
        stream_ids.push(id);
    }
    if stream_ids != store_ids {
        let first = stream_ids
            .iter()
            .zip(&store_ids)
            .position(|(a, b)| a != b)
            .unwrap_or(stream_ids.len().min(store_ids.len()));
        violations.push(format!(
            "the stream differs from the store from message {first} on ({} messages, {} events)",
            stream_ids.len(),
            store_ids.len()
        ));
    }
}
