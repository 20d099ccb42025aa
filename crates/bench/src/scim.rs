//! `scim`: the SCIM gateway over HTTP at concurrency 32, with 100,000 users provisioned
//! beforehand (`CAIRN_BENCH_SCIM_USERS` to change): creates, `userName eq` lookups, sorted pages of
//! 100, and member PATCHes on a group of 10,000 members. Beside them, the raw limit of the same
//! run: the `userName` lookup as a plain indexed SQL query (`scim.raw_filter_qps`).

use crate::harness::{Settings, bench, closed_loop};
use cairn_domain::user::{AddHumanUser, Email, HumanProfile, PersonName};
use cairn_domain::{Aggregate, AggregateId, EmailAddress, User, UserName};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_proto::group::v1 as gpb;
use cairn_stack::{Stack, request};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;

async fn seed_users(stack: &Stack, count: usize) -> anyhow::Result<Vec<String>> {
    let store = PgEventStore::new(stack.db.pool.clone());
    let instance = stack.admin.instance_id;
    let org = stack.admin.org_id;
    let mut ids = Vec::with_capacity(count);
    let mut n = 0;
    while n < count {
        let mut push = Push::default();
        for _ in 0..1000.min(count - n) {
            let id = AggregateId::new();
            let decision = User::default().add_human(AddHumanUser {
                org_id: org,
                user_name: UserName::parse(format!("seed{n}"))?,
                profile: HumanProfile {
                    name: PersonName {
                        given_name: Some("Ada".into()),
                        family_name: Some(format!("Lovelace {n}")),
                        ..Default::default()
                    },
                    emails: vec![Email {
                        value: EmailAddress::parse(format!("seed{n}@example.com"))?,
                        kind: Some("work".into()),
                        display: None,
                        primary: true,
                        verified: true,
                    }],
                    ..Default::default()
                },
                password_hash: None,
                active: true,
            })?;
            push = push.and(Push::from_decision(
                instance,
                User::aggregate_type(),
                id,
                ExpectedSequence::Exact(0),
                decision,
                "bench",
                org,
            ));
            ids.push(id.to_string());
            n += 1;
        }
        store.push(push).await?;
    }
    // Wait until the users read model has them all.
    let started = Instant::now();
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projections.users WHERE kind = 'human'")
            .fetch_one(&stack.db.pool)
            .await?;
        if rows as usize >= count {
            return Ok(ids);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the users projection did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // poll_interval while seeding
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let users: usize = std::env::var("CAIRN_BENCH_SCIM_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let stack = Arc::new(Stack::start().await?);
    let seeded = Arc::new(seed_users(&stack, users).await?);
    let token = format!("Bearer {}", stack.scim_token);

    // Raw: the same lookup as plain SQL on the same table and index.
    let pool = stack.db.pool.clone();
    let raw = closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
        let pool = pool.clone();
        async move {
            let n = (worker * 7919 + i as usize * 104_729) % users;
            let _: Option<serde_json::Value> =
                sqlx::query_scalar("SELECT to_jsonb(u) FROM projections.users u WHERE u.instance_id IS NOT NULL AND lower(u.user_name) = lower($1)")
                    .bind(format!("seed{n}"))
                    .fetch_optional(&pool)
                    .await?;
            Ok(())
        }
    })
    .await?;

    let creates = {
        let (stack, token) = (stack.clone(), token.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let (stack, token) = (stack.clone(), token.clone());
            async move {
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("new{worker}-{i}"),
                    "name": {"givenName": "Grace", "familyName": "Hopper"},
                    "emails": [{"value": format!("new{worker}-{i}@example.com"), "primary": true}],
                })
                .to_string();
                let response = request(
                    stack.scim,
                    "POST",
                    "/scim/v2/Users",
                    &[
                        ("authorization", &token),
                        ("content-type", "application/scim+json"),
                    ],
                    Some(&body),
                )
                .await?;
                anyhow::ensure!(
                    response.status == 201,
                    "create: {} {}",
                    response.status,
                    response.body
                );
                Ok(())
            }
        })
        .await?
    };

    let filters = {
        let (stack, token) = (stack.clone(), token.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let (stack, token) = (stack.clone(), token.clone());
            async move {
                let n = (worker * 7919 + i as usize * 104_729) % users;
                let path = format!("/scim/v2/Users?filter=userName%20eq%20%22seed{n}%22");
                let response = request(stack.scim, "GET", &path, &[("authorization", &token)], None).await?;
                anyhow::ensure!(
                    response.status == 200 && response.body.contains("\"totalResults\":1"),
                    "filter: {} {}",
                    response.status,
                    response.body
                );
                Ok(())
            }
        })
        .await?
    };

    let pages = {
        let (stack, token) = (stack.clone(), token.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let (stack, token) = (stack.clone(), token.clone());
            async move {
                let start = 1 + (worker * 7919 + i as usize * 104_729) % users.saturating_sub(100).max(1);
                let path = format!("/scim/v2/Users?sortBy=userName&count=100&startIndex={start}");
                let response = request(stack.scim, "GET", &path, &[("authorization", &token)], None).await?;
                anyhow::ensure!(
                    response.status == 200,
                    "page: {} {}",
                    response.status,
                    response.body
                );
                Ok(())
            }
        })
        .await?
    };

    // A group of 10,000 members, then member PATCHes (add one, remove it) on it.
    let group_size = 10_000.min(users / 2);
    let mut groups =
        gpb::group_service_client::GroupServiceClient::connect(format!("http://{}", stack.grpc)).await?;
    let mut add_group = tonic::Request::new(gpb::AddGroupRequest {
        display_name: "Everyone".into(),
        ..Default::default()
    });
    add_group.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.admin.token.as_str()).parse()?,
    );
    let group_id = groups
        .add_group(add_group)
        .await?
        .into_inner()
        .group
        .map(|g| g.id)
        .unwrap_or_default();
    let mut add_members = tonic::Request::new(gpb::MembersRequest {
        group_id: group_id.clone(),
        user_ids: seeded[..group_size].to_vec(),
        expected_sequence: 0,
    });
    add_members.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.admin.token.as_str()).parse()?,
    );
    groups.add_members(add_members).await?;
    // Four writers PATCH one group: a write that meets another's change is answered 409 (after up to
    // ten server-side retries), and the client sends it again, as a SCIM client must; the latency is
    // the client's, retries included, and the retries are counted.
    let conflicts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let patches = {
        let (stack, token, seeded, group_id, conflicts) = (
            stack.clone(),
            token.clone(),
            seeded.clone(),
            group_id.clone(),
            conflicts.clone(),
        );
        closed_loop(4, settings.phase, move |worker, i| {
            let (stack, token, seeded, group_id, conflicts) = (
                stack.clone(),
                token.clone(),
                seeded.clone(),
                group_id.clone(),
                conflicts.clone(),
            );
            async move {
                let member = &seeded[group_size + (worker * 1000 + i as usize) % (users - group_size)];
                let op = if i % 2 == 0 {
                    json!({"op": "add", "path": "members", "value": [{"value": member}]})
                } else {
                    json!({"op": "remove", "path": format!("members[value eq \"{member}\"]")})
                };
                let body =
                    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]})
                        .to_string();
                let path = format!("/scim/v2/Groups/{group_id}?excludedAttributes=members");
                let mut attempts = 0;
                let response = loop {
                    let response = request(
                        stack.scim,
                        "PATCH",
                        &path,
                        &[
                            ("authorization", &token),
                            ("content-type", "application/scim+json"),
                        ],
                        Some(&body),
                    )
                    .await?;
                    attempts += 1;
                    if response.status == 409 && attempts < 50 {
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    break response;
                };
                anyhow::ensure!(
                    response.status == 200,
                    "patch: {} {}",
                    response.status,
                    response.body
                );
                Ok(())
            }
        })
        .await?
    };

    bench("scim.create_user_rps", creates.ops_per_s());
    bench("scim.create_user_p99_ms", creates.p(0.99));
    bench("scim.filter_get_rps", filters.ops_per_s());
    bench("scim.filter_get_p99_ms", filters.p(0.99));
    bench("scim.raw_filter_qps", raw.ops_per_s());
    bench("scim.list_page_p99_ms", pages.p(0.99));
    bench("scim.group_add_member_p99_ms", patches.p(0.99));
    bench(
        "scim.group_patch_conflict_retries",
        conflicts.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    bench("scim.group_size", group_size as f64);
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.stop().await,
        Err(_) => Ok(()),
    }
}
