//! Commands under contention for command-api's own resources: more concurrent commands with
//! idempotency keys than its pool has connections. A keyed command holds its transaction's
//! connection from the start; it must not then wait for a second connection from the pool, or the
//! pool's connections all end up held by commands waiting for one more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_proto::user::v1 as user;
use cairn_stack::Stack;

fn with(
    message: user::UpdateProfileRequest,
    token: &str,
    key: &str,
) -> tonic::Request<user::UpdateProfileRequest> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_keyed_commands_than_pooled_connections_all_complete() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    // command-api's pool has 16 connections; 64 keyed commands run at once.
    let mut ids = Vec::new();
    for n in 0..64 {
        let mut request = tonic::Request::new(user::AddHumanUserRequest {
            user_name: format!("busy{n}"),
            profile: Some(user::HumanProfile {
                display_name: format!("Busy {n}"),
                ..Default::default()
            }),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let added = stack.users().add_human_user(request).await.unwrap().into_inner();
        ids.push(added.user.unwrap().id);
    }
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for (n, id) in ids.into_iter().enumerate() {
        let (mut users, token) = (stack.users(), token.clone());
        calls.spawn(async move {
            users
                .update_profile(with(
                    user::UpdateProfileRequest {
                        user_id: id,
                        profile: Some(user::HumanProfile {
                            display_name: format!("Renamed {n}"),
                            ..Default::default()
                        }),
                        fields: vec!["display_name".into()],
                        ..Default::default()
                    },
                    &token,
                    &format!("rename-{n}"),
                ))
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?} {}", status.code(), status.message()))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Err(failure) = joined.unwrap() {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 keyed commands failed after {:?}: {:?}",
        failures.len(),
        started.elapsed(),
        &failures[..failures.len().min(3)]
    );
    stack.stop().await.unwrap();
}

/// Membership commands lock their members in their transaction, then check that the members exist:
/// 64 of them at once (pool of 16), no idempotency keys, must all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_membership_commands_than_pooled_connections_all_complete() {
    use cairn_proto::group::v1 as group;
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let auth = |message| authed(message, &token);
    let auth_group = |message| authed(message, &token);
    let auth_members = |message| authed(message, &token);
    let mut pairs = Vec::new();
    for n in 0..64 {
        let member = stack
            .users()
            .add_human_user(auth(user::AddHumanUserRequest {
                user_name: format!("member{n}"),
                profile: Some(user::HumanProfile {
                    display_name: format!("Member {n}"),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .id;
        let group_id = stack
            .groups()
            .add_group(auth_group(group::AddGroupRequest {
                display_name: format!("team{n}"),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .group
            .unwrap()
            .id;
        pairs.push((group_id, member));
    }
    let mut calls = tokio::task::JoinSet::new();
    for (group_id, member) in pairs {
        let mut groups = stack.groups();
        let request = auth_members(group::MembersRequest {
            group_id,
            user_ids: vec![member],
            ..Default::default()
        });
        calls.spawn(async move {
            groups
                .add_members(request)
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?} {}", status.code(), status.message()))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Err(failure) = joined.unwrap() {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 membership commands failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    stack.stop().await.unwrap();
}

/// A removal locks its user in its transaction, then reads the user's groups once the read model
/// has caught up (through the pool, while it holds the lock): 64 removals at once (an identity
/// provider deprovisioning a department) with a pool of 16 must all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_removals_than_pooled_connections_all_complete() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let authed = |message: user::AddHumanUserRequest| {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let mut ids = Vec::new();
    for n in 0..64 {
        let added = stack
            .users()
            .add_human_user(authed(user::AddHumanUserRequest {
                user_name: format!("leaver{n}"),
                profile: Some(user::HumanProfile {
                    display_name: format!("Leaver {n}"),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        ids.push(added.user.unwrap().id);
    }
    let mut calls = tokio::task::JoinSet::new();
    for id in ids {
        let (mut users, token) = (stack.users(), token.clone());
        calls.spawn(async move {
            let mut request = tonic::Request::new(user::RemoveUserRequest {
                user_id: id,
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            users
                .remove_user(request)
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?} {}", status.code(), status.message()))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Err(failure) = joined.unwrap() {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 removals failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    stack.stop().await.unwrap();
}
