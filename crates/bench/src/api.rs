//! `api`: command-api over gRPC at concurrency 32 — user creations and reads — beside the raw
//! PostgreSQL insert rate of the same run (`api.raw_insert_rps`: single-row autocommit INSERTs of
//! a user-sized row, 32 connections).

use crate::harness::{Settings, bench, closed_loop};
use cairn_proto::user::v1 as pb;
use cairn_proto::user::v1::user_service_client::UserServiceClient;
use cairn_stack::Stack;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

const CONCURRENCY: usize = 32;

fn authed<T>(token: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    // The stack runs in this process, on the machine's two cores, beside the benchmark client.
    let stack = Stack::start().await?;
    let token = stack.admin.token.to_string();
    let channel = Channel::from_shared(format!("http://{}", stack.grpc))?
        .connect()
        .await?;

    // Raw: the same shape of row, plain INSERTs, autocommit, 32 connections.
    sqlx::raw_sql("CREATE TABLE public.raw_users (LIKE projections.users INCLUDING ALL)")
        .execute(&stack.db.pool)
        .await?;
    let pool = stack.db.pool.clone();
    let raw = closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO public.raw_users (instance_id, id, org_id, kind, user_name, state, primary_email, profile, created_at, changed_at, sequence) \
                 VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'human', $1, 'active', $2, $3, now(), now(), 1)",
            )
            .bind(format!("raw{worker}-{i}"))
            .bind(format!("raw{worker}-{i}@example.com"))
            .bind(serde_json::json!({"emails": [{"value": format!("raw{worker}-{i}@example.com"), "primary": true}]}))
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await?;

    let created: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let adds = {
        let (channel, token, created) = (channel.clone(), token.clone(), created.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let mut client = UserServiceClient::new(channel.clone());
            let (token, created) = (token.clone(), created.clone());
            async move {
                let request = pb::AddHumanUserRequest {
                    user_name: format!("user{worker}-{i}"),
                    profile: Some(pb::HumanProfile {
                        name: Some(pb::Name {
                            given_name: "Ada".into(),
                            family_name: format!("Lovelace {i}"),
                            ..Default::default()
                        }),
                        emails: vec![pb::Email {
                            value: format!("user{worker}-{i}@example.com"),
                            primary: true,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let response = client
                    .add_human_user(authed(&token, request)?)
                    .await?
                    .into_inner();
                if let (Some(user), Some(details)) = (response.user, response.details) {
                    created
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((user.id, details.position));
                }
                Ok(())
            }
        })
        .await?
    };
    let created = created.lock().unwrap_or_else(|p| p.into_inner()).clone();
    anyhow::ensure!(!created.is_empty(), "no user was created");
    // Let the read models catch up before measuring reads: one read that waits for the last write.
    let latest = created
        .iter()
        .filter_map(|(_, p)| p.parse::<cairn_domain::Position>().ok())
        .max()
        .unwrap_or_default();
    UserServiceClient::new(channel.clone())
        .get_user(authed(
            &token,
            pb::GetUserRequest {
                user_id: created[0].0.clone(),
                min_position: latest.to_string(),
            },
        )?)
        .await?;
    let ids: Arc<Vec<String>> = Arc::new(created.into_iter().map(|(id, _)| id).collect());
    let last = ids.len();
    let reads = {
        let (channel, token, ids) = (channel.clone(), token.clone(), ids.clone());
        closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let mut client = UserServiceClient::new(channel.clone());
            let (token, ids) = (token.clone(), ids.clone());
            async move {
                let id = ids[(worker * 7919 + i as usize) % last].clone();
                client
                    .get_user(authed(
                        &token,
                        pb::GetUserRequest {
                            user_id: id,
                            min_position: String::new(),
                        },
                    )?)
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    bench("api.add_user_rps", adds.ops_per_s());
    bench("api.add_user_p99_ms", adds.p(0.99));
    bench("api.get_user_rps", reads.ops_per_s());
    bench("api.get_user_p99_ms", reads.p(0.99));
    bench("api.raw_insert_rps", raw.ops_per_s());
    stack.stop().await
}
