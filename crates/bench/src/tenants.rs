//! `tenants`: what many tenants cost. Gives the stack's own instance 100,000 users, creates 1,000
//! instances through the system API over gRPC at concurrency 16 (`tenants.add_instance_per_s`;
//! `CAIRN_BENCH_TENANTS` to change the count), gives each 100 users (`CAIRN_BENCH_TENANT_USERS`;
//! `tenants.seeded_users_projected_per_s`: pushed and projected, the projector working through one
//! (projection, instance) at a time), then measures SCIM `userName eq` lookups at concurrency 32, alternating in rounds
//! between one instance (`tenants.scim_filter_get_rps_1_instance`, the same figure as
//! `scim.filter_get_rps`, measured in this run beside it) and every instance at random, each with
//! its own token (`tenants.scim_filter_get_rps_1000_instances`). Beside them, the raw limit of the
//! same run: the lookup as a plain indexed SQL query over random instances (`tenants.raw_filter_qps`).

use crate::harness::{Settings, bench, closed_loop, interleaved};
use cairn_domain::user::{AddHumanUser, Email, HumanProfile, PersonName};
use cairn_domain::{Aggregate, AggregateId, EmailAddress, InstanceId, User, UserName};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_proto::system::v1 as sys;
use cairn_proto::system::v1::system_service_client::SystemServiceClient;
use cairn_stack::{Stack, request};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;
const CREATORS: usize = 16;

/// One tenant of the run: its id, its default organisation and its admin token.
#[derive(Clone)]
struct Tenant {
    id: InstanceId,
    org: AggregateId,
    bearer: String,
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `users` human users `t{n}` in `tenant`, pushed in batches of up to 1,000.
async fn seed(store: &PgEventStore, tenant: &Tenant, users: usize) -> anyhow::Result<()> {
    let mut n = 0;
    while n < users {
        let mut push = Push::default();
        for _ in 0..1000.min(users - n) {
            let decision = User::default().add_human(AddHumanUser {
                org_id: tenant.org,
                user_name: UserName::parse(format!("t{n}"))?,
                profile: HumanProfile {
                    name: PersonName {
                        given_name: Some("Ada".into()),
                        family_name: Some(format!("Lovelace {n}")),
                        ..Default::default()
                    },
                    emails: vec![Email {
                        value: EmailAddress::parse(format!("t{n}@example.com"))?,
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
                tenant.id,
                User::aggregate_type(),
                AggregateId::new(),
                ExpectedSequence::Exact(0),
                decision,
                "bench",
                tenant.org,
            ));
            n += 1;
        }
        store.push(push).await?;
    }
    Ok(())
}

/// Waits until the users read model holds `expected` human users.
async fn projected(stack: &Stack, expected: i64) -> anyhow::Result<()> {
    let waiting = Instant::now();
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM projections.users WHERE kind = 'human'")
            .fetch_one(&stack.db.pool)
            .await?;
        if rows >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(1800),
            "the users projection did not catch up ({rows} of {expected})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // poll_interval while seeding
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let instances = count("CAIRN_BENCH_TENANTS", 1000);
    let per_tenant = count("CAIRN_BENCH_TENANT_USERS", 100);
    let stack = Arc::new(Stack::start().await?);
    let system = format!("Bearer {}", stack.system_token().await?);

    // Users: first as many in the stack's own instance as all tenants will hold together (projected
    // by one worker per projection, quickly), then 100 in each tenant.
    let store = PgEventStore::new(stack.db.pool.clone());
    let single = Tenant {
        id: stack.admin.instance_id,
        org: stack.admin.org_id,
        bearer: format!("Bearer {}", stack.scim_token),
    };
    let single_users = instances * per_tenant;
    seed(&store, &single, single_users).await?;
    projected(&stack, single_users as i64).await?;

    // Instances through the system API, as an operator's automation would make them.
    let made = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for _ in 0..CREATORS {
        let (made, system, channel) = (made.clone(), system.clone(), stack.channel());
        creators.spawn(async move {
            let mut client = SystemServiceClient::new(channel);
            let mut tenants = Vec::new();
            while made.fetch_add(1, Ordering::SeqCst) < instances {
                let mut request = tonic::Request::new(sys::AddInstanceRequest {
                    name: format!("Tenant {}", tenants.len()),
                    ..Default::default()
                });
                request.metadata_mut().insert("authorization", system.parse()?);
                let added = client.add_instance(request).await?.into_inner();
                tenants.push(Tenant {
                    id: added.instance_id.parse()?,
                    org: added.org_id.parse()?,
                    bearer: format!("Bearer {}", added.admin_token),
                });
            }
            anyhow::Ok(tenants)
        });
    }
    let mut tenants = Vec::with_capacity(instances);
    while let Some(made) = creators.join_next().await {
        tenants.extend(made??);
    }
    let add_rate = tenants.len() as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(tenants.len() == instances, "made {} instances", tenants.len());

    // Seeding the tenants: from the first push until every user is in the read model, the
    // projector working one (projection, instance) at a time over all tenants.
    let seeding = Instant::now();
    for tenant in &tenants {
        seed(&store, tenant, per_tenant).await?;
    }
    projected(&stack, (single_users + instances * per_tenant) as i64).await?;
    let tenant_users_per_s = (instances * per_tenant) as f64 / seeding.elapsed().as_secs_f64();
    let tenants = Arc::new(tenants);

    // Raw: the same lookup as plain SQL, over random tenants.
    let raw = {
        let (pool, tenants) = (stack.db.pool.clone(), tenants.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let (pool, tenants) = (pool.clone(), tenants.clone());
            async move {
                let pick = worker * 7919 + i as usize * 104_729;
                let tenant = &tenants[pick % tenants.len()];
                let _: Option<serde_json::Value> = sqlx::query_scalar(
                    "SELECT to_jsonb(u) FROM projections.users u WHERE u.instance_id = $1 AND lower(u.user_name) = lower($2)",
                )
                .bind(tenant.id.as_uuid())
                .bind(format!("t{}", pick % per_tenant))
                .fetch_optional(&pool)
                .await?;
                Ok(())
            }
        })
        .await?
    };

    let lookup = |stack: Arc<Stack>, tenant: Tenant, user: usize| async move {
        let path = format!("/scim/v2/Users?filter=userName%20eq%20%22t{user}%22");
        let response = request(
            stack.scim,
            "GET",
            &path,
            &[("authorization", &tenant.bearer)],
            None,
        )
        .await?;
        anyhow::ensure!(
            response.status == 200 && response.body.contains("\"totalResults\":1"),
            "filter: {} {}",
            response.status,
            response.body
        );
        Ok(())
    };
    let (one, many) = interleaved(
        CONCURRENCY,
        settings.phase,
        4,
        {
            let (stack, single) = (stack.clone(), single.clone());
            move |worker, i| {
                let n = (worker * 7919 + i as usize * 104_729) % single_users;
                lookup(stack.clone(), single.clone(), n)
            }
        },
        {
            let (stack, tenants) = (stack.clone(), tenants.clone());
            move |worker, i| {
                let pick = worker * 7919 + i as usize * 104_729;
                let tenant = tenants[pick % tenants.len()].clone();
                lookup(stack.clone(), tenant, pick % per_tenant)
            }
        },
    )
    .await?;

    bench("tenants.add_instance_per_s", add_rate);
    bench("tenants.instances", instances as f64);
    bench("tenants.scim_filter_get_rps_1_instance", one.ops_per_s());
    bench(
        &format!("tenants.scim_filter_get_rps_{instances}_instances"),
        many.ops_per_s(),
    );
    bench("tenants.scim_filter_get_p99_ms_1_instance", one.p(0.99));
    bench(
        &format!("tenants.scim_filter_get_p99_ms_{instances}_instances"),
        many.p(0.99),
    );
    bench("tenants.raw_filter_qps", raw.ops_per_s());
    bench("tenants.seeded_users_projected_per_s", tenant_users_per_s);
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.stop().await,
        Err(_) => Ok(()),
    }
}
