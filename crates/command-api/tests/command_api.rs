//! command-api through real tonic clients against the whole system started from `crates/stack`
//! (the relay, a projector and the SCIM gateway beside it) on the real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod history;

use cairn_proto::admin::v1 as admin;
use cairn_proto::group::v1 as group;
use cairn_proto::user::v1 as user;
use cairn_stack::Stack;
use cairn_testkit::TestDb;
use prost::Message;
use sqlx::Connection;
use tonic::{Code, Request};

/// A database URL without the driver's own query parameters, for libpq tools.
fn plain_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn human(name: &str) -> user::AddHumanUserRequest {
    user::AddHumanUserRequest {
        user_name: name.into(),
        profile: Some(user::HumanProfile {
            name: Some(user::Name {
                given_name: "Ada".into(),
                family_name: "Lovelace".into(),
                ..Default::default()
            }),
            display_name: "Ada Lovelace".into(),
            emails: vec![user::Email {
                value: format!("{name}@example.com"),
                r#type: "work".into(),
                primary: true,
                verified: false,
                display: String::new(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A token with `roles` the way a client gets one: a new machine user, and a token of it created
/// through the admin API.
async fn machine_token(stack: &Stack, roles: &[&str]) -> String {
    let machine = stack
        .users()
        .add_machine_user(authed(
            &stack.admin.token,
            user::AddMachineUserRequest {
                user_name: format!("machine-{}", uuid::Uuid::new_v4().simple()),
                name: "Robot".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let principal = machine.user.unwrap().id;
    stack
        .admin_client()
        .create_token(authed(
            &stack.admin.token,
            admin::CreateTokenRequest {
                principal_id: principal,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_user_lifecycle() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut users = stack.users();

    let created = users
        .add_human_user(authed(&token, human("ada")))
        .await
        .unwrap()
        .into_inner();
    let ada = created.user.unwrap();
    let details = created.details.unwrap();
    assert_eq!(ada.user_name, "ada");
    assert_eq!(ada.state, user::UserState::Active as i32);
    assert!(!details.position.is_empty());

    // Read your write with the consistency token.
    let got = users
        .get_user(authed(
            &token,
            user::GetUserRequest {
                user_id: ada.id.clone(),
                min_position: details.position.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(got.user_name, "ada");
    let Some(user::user::Kind::Human(profile)) = got.kind else {
        panic!("a human")
    };
    assert_eq!(profile.name.unwrap().family_name, "Lovelace");

    // userName is unique per instance, case-insensitively.
    let taken = users
        .add_human_user(authed(&token, human("ADA")))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    // Profile, userName, state machine.
    let updated = users
        .update_profile(authed(
            &token,
            user::UpdateProfileRequest {
                user_id: ada.id.clone(),
                profile: Some(user::HumanProfile {
                    title: "Countess".into(),
                    ..Default::default()
                }),
                fields: vec!["title".into()],
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(user::user::Kind::Human(p)) = updated.user.unwrap().kind else {
        panic!()
    };
    assert_eq!(p.title, "Countess");
    users
        .change_user_name(authed(
            &token,
            user::ChangeUserNameRequest {
                user_id: ada.id.clone(),
                user_name: "ada.lovelace".into(),
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap();
    for (call, expected) in [
        ("deactivate", user::UserState::Inactive),
        ("reactivate", user::UserState::Active),
        ("lock", user::UserState::Locked),
        ("unlock", user::UserState::Active),
    ] {
        let request = authed(
            &token,
            user::UserIdRequest {
                user_id: ada.id.clone(),
                expected_sequence: 0,
            },
        );
        let response = match call {
            "deactivate" => users.deactivate_user(request).await,
            "reactivate" => users.reactivate_user(request).await,
            "lock" => users.lock_user(request).await,
            _ => users.unlock_user(request).await,
        }
        .unwrap()
        .into_inner();
        assert_eq!(response.user.unwrap().state, expected as i32, "{call}");
    }
    let twice = users
        .unlock_user(authed(
            &token,
            user::UserIdRequest {
                user_id: ada.id.clone(),
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    // Email: set with the code returned, a wrong code, the right code.
    let set = users
        .set_email(authed(
            &token,
            user::SetEmailRequest {
                user_id: ada.id.clone(),
                email: "ada@analytical.engine".into(),
                verification: user::EmailVerification::ReturnCode as i32,
                url_template: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.verification_code.len(), 6);
    let wrong = if set.verification_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let error = users
        .verify_email(authed(
            &token,
            user::VerifyEmailRequest {
                user_id: ada.id.clone(),
                code: wrong.into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let verified = users
        .verify_email(authed(
            &token,
            user::VerifyEmailRequest {
                user_id: ada.id.clone(),
                code: set.verification_code.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(user::user::Kind::Human(p)) = verified.user.unwrap().kind else {
        panic!()
    };
    assert!(
        p.emails
            .iter()
            .any(|e| e.value == "ada@analytical.engine" && e.verified && e.primary)
    );

    // Remove: gone, and the userName is free again.
    let removed = users
        .remove_user(authed(
            &token,
            user::RemoveUserRequest {
                user_id: ada.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let position = removed.details.unwrap().position;
    let gone = users
        .get_user(authed(
            &token,
            user::GetUserRequest {
                user_id: ada.id.clone(),
                min_position: position,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    users
        .add_human_user(authed(&token, human("ada.lovelace")))
        .await
        .unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_membership_follows_users() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut users = stack.users();
    let mut groups = stack.groups();
    let mut ids = Vec::new();
    for name in ["u1", "u2", "u3"] {
        ids.push(
            users
                .add_human_user(authed(&token, human(name)))
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
                .id,
        );
    }
    let created = groups
        .add_group(authed(
            &token,
            group::AddGroupRequest {
                display_name: "Engineers".into(),
                member_ids: ids[..2].to_vec(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let g = created.group.unwrap();
    assert_eq!(g.member_count, 2);
    let duplicate = groups
        .add_group(authed(
            &token,
            group::AddGroupRequest {
                display_name: "engineers".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let unknown = groups
        .add_members(authed(
            &token,
            group::MembersRequest {
                group_id: g.id.clone(),
                user_ids: vec![uuid::Uuid::new_v4().to_string()],
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    groups
        .add_members(authed(
            &token,
            group::MembersRequest {
                group_id: g.id.clone(),
                user_ids: vec![ids[2].clone()],
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap();
    groups
        .remove_members(authed(
            &token,
            group::MembersRequest {
                group_id: g.id.clone(),
                user_ids: vec![ids[0].clone()],
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap();
    // Removing a user removes its memberships.
    let removed = users
        .remove_user(authed(
            &token,
            user::RemoveUserRequest {
                user_id: ids[1].clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let members = groups
        .list_members(authed(
            &token,
            group::ListMembersRequest {
                group_id: g.id.clone(),
                query: None,
                min_position: removed.details.unwrap().position,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let member_ids: Vec<String> = members.members.iter().map(|m| m.user_id.clone()).collect();
    assert_eq!(member_ids, vec![ids[2].clone()]);
    assert_eq!(members.members[0].user_name, "u3");
    assert_eq!(members.details.unwrap().total_result, 1);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_roles_and_tenants_are_enforced() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut users = stack.users();
    let ada = users
        .add_human_user(authed(&token, human("ada")))
        .await
        .unwrap()
        .into_inner();
    let ada_id = ada.user.unwrap().id;
    let position = ada.details.unwrap().position;

    // No token, a malformed one, a revoked one.
    let none = users
        .get_user(Request::new(user::GetUserRequest {
            user_id: ada_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let bogus = users
        .get_user(authed(
            "cairn_pat_nope",
            user::GetUserRequest {
                user_id: ada_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bogus.code(), Code::Unauthenticated);

    // Roles.
    let reader = machine_token(&stack, &["read_only"]).await;
    users
        .get_user(authed(
            &reader,
            user::GetUserRequest {
                user_id: ada_id.clone(),
                min_position: position.clone(),
            },
        ))
        .await
        .unwrap();
    let denied = users
        .add_human_user(authed(&reader, human("bob")))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let manager = machine_token(&stack, &["user_manager"]).await;
    users
        .add_human_user(authed(&manager, human("bob")))
        .await
        .unwrap();
    let no_admin = stack
        .admin_client()
        .create_token(authed(
            &manager,
            admin::CreateTokenRequest {
                principal_id: ada_id.clone(),
                roles: vec!["read_only".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(no_admin.code(), Code::PermissionDenied);
    let code = users
        .set_email(authed(
            &reader,
            user::SetEmailRequest {
                user_id: ada_id.clone(),
                email: "x@example.com".into(),
                verification: 2,
                url_template: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code.code(), Code::PermissionDenied);

    // Revocation takes effect at once.
    let listed = stack
        .admin_client()
        .list_tokens(authed(&token, admin::ListTokensRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let reader_id = reader
        .trim_start_matches("cairn_pat_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    assert!(listed.tokens.iter().any(|t| t.id == reader_id));
    stack
        .admin_client()
        .revoke_token(authed(&token, admin::RevokeTokenRequest { token_id: reader_id }))
        .await
        .unwrap();
    let revoked = users
        .get_user(authed(
            &reader,
            user::GetUserRequest {
                user_id: ada_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);

    // Another instance sees and changes nothing of this one.
    let other = stack.new_instance("Other").await.unwrap();
    let other_token = other.token.to_string();
    let hidden = users
        .get_user(authed(
            &other_token,
            user::GetUserRequest {
                user_id: ada_id.clone(),
                min_position: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let untouchable = users
        .lock_user(authed(
            &other_token,
            user::UserIdRequest {
                user_id: ada_id.clone(),
                expected_sequence: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(untouchable.code(), Code::NotFound);
    let listed = users
        .list_users(authed(&other_token, user::ListUsersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.users.iter().all(|u| u.user_name != "ada"));
    // ... and may use the same userName.
    users
        .add_human_user(authed(&other_token, human("ada")))
        .await
        .unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_replay_the_first_response() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut users = stack.users();
    let with_key = |key: &str, name: &str| {
        let mut request = authed(&token, human(name));
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let first = users
        .add_human_user(with_key("k-1", "ada"))
        .await
        .unwrap()
        .into_inner();
    let again = users
        .add_human_user(with_key("k-1", "ada"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "the same response, not a second user");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM eventstore.events WHERE event_type = 'user.human.added'")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!(events, 1);
    let mismatch = users.add_human_user(with_key("k-1", "bob")).await.unwrap_err();
    assert_eq!(mismatch.code(), Code::FailedPrecondition);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_are_never_lost() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let created = stack
        .users()
        .add_human_user(authed(&token, human("ada")))
        .await
        .unwrap()
        .into_inner();
    let id = created.user.unwrap().id;
    let sequence = created.details.unwrap().sequence;
    // With a pinned version: exactly one wins, the other is ABORTED.
    let update = |title: &str, expected: i64| user::UpdateProfileRequest {
        user_id: id.clone(),
        profile: Some(user::HumanProfile {
            title: title.into(),
            ..Default::default()
        }),
        fields: vec!["title".into()],
        expected_sequence: expected,
    };
    let (mut first, mut second) = (stack.users(), stack.users());
    let (a, b) = tokio::join!(
        first.update_profile(authed(&token, update("A", sequence))),
        second.update_profile(authed(&token, update("B", sequence)))
    );
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "exactly one pinned update wins"
    );
    let loser = a.err().or(b.err()).unwrap();
    assert_eq!(loser.code(), Code::Aborted);
    // Without one: both apply, re-decided against fresh state; nothing is lost.
    let (mut first, mut second) = (stack.users(), stack.users());
    let (c, d) = tokio::join!(
        first.update_profile(authed(&token, update("C", 0))),
        second.set_phone(authed(
            &token,
            user::SetPhoneRequest {
                user_id: id.clone(),
                phone: "+41 44 000 00 00".into()
            }
        ))
    );
    let positions = [
        c.unwrap().into_inner().details.unwrap().position,
        d.unwrap().into_inner().details.unwrap().position,
    ];
    let latest = positions
        .iter()
        .map(|p| p.parse::<cairn_domain::Position>().unwrap())
        .max()
        .unwrap();
    let got = stack
        .users()
        .get_user(authed(
            &token,
            user::GetUserRequest {
                user_id: id.clone(),
                min_position: latest.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let Some(user::user::Kind::Human(p)) = got.kind else {
        panic!()
    };
    assert_eq!(p.title, "C");
    assert_eq!(p.phone_numbers[0].value, "+41 44 000 00 00");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_invalid_argument_with_field_violations() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut request = human("");
    request.profile.as_mut().unwrap().emails[0].value = "not-an-email".into();
    let error = stack
        .users()
        .add_human_user(authed(&token, request))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    // The details carry google.rpc.BadRequest with both violations.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Violation {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct BadRequest {
        #[prost(message, repeated, tag = "1")]
        field_violations: Vec<Violation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    let status = Status::decode(error.details()).unwrap();
    let detail = |type_url: &str| {
        status
            .details
            .iter()
            .find(|d| d.type_url == type_url)
            .unwrap_or_else(|| panic!("no {type_url} in {:?}", status.details))
    };
    let bad = BadRequest::decode(
        detail("type.googleapis.com/google.rpc.BadRequest")
            .value
            .as_slice(),
    )
    .unwrap();
    // google.rpc.ErrorInfo: reason (1), domain (2).
    #[derive(Clone, PartialEq, prost::Message)]
    struct ErrorInfo {
        #[prost(string, tag = "1")]
        reason: String,
        #[prost(string, tag = "2")]
        domain: String,
    }
    let info = ErrorInfo::decode(
        detail("type.googleapis.com/google.rpc.ErrorInfo")
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_ARGUMENT", "cairn")
    );
    let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"user_name"), "{fields:?}");
    assert!(fields.contains(&"profile.emails[0].value"), "{fields:?}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM eventstore.events WHERE aggregate_type = 'user'",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        events, 1,
        "only the bootstrap admin; the bad request wrote nothing"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consistency_token_makes_the_next_read_see_the_write_1000_times() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let mut users = stack.users();
    for i in 0..1000 {
        let created = users
            .add_human_user(authed(&token, human(&format!("user{i}"))))
            .await
            .unwrap()
            .into_inner();
        let id = created.user.unwrap().id;
        let got = users
            .get_user(authed(
                &token,
                user::GetUserRequest {
                    user_id: id,
                    min_position: created.details.unwrap().position,
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("read {i} after its write: {e:?}"))
            .into_inner();
        assert_eq!(got.user.unwrap().user_name, format!("user{i}"));
    }
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_email_verification_and_projection_health() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let ada = stack
        .users()
        .add_human_user(authed(&token, human("ada")))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let http = stack.api_http;
    let post = |path: String, body: Option<&str>, bearer: Option<&str>| {
        let bearer = bearer.map(str::to_owned);
        let body = body.map(str::to_owned);
        async move {
            let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
            let body = body.unwrap_or_default();
            let auth = bearer
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            let status: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
            (status, response)
        }
    };
    let (status, response) = post(
        format!("/api/v1/users/{ada}/email/resend-code"),
        Some(r#"{"returnCode": true}"#),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let body: serde_json::Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let code = body["code"].as_str().unwrap().to_owned();
    let (status, response) = post(
        format!("/api/v1/users/{ada}/email/verify"),
        Some("{not json"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 400);
    assert!(response.contains("application/problem+json"), "{response}");
    let (status, _) = post(
        format!("/api/v1/users/{ada}/email/verify"),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, response) = post(
        format!("/api/v1/users/{ada}/email/verify"),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let (status, _) = post(
        format!("/api/v1/users/{ada}/email/verify"),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "an already verified email");
    let (status, _) = cairn_testkit::http_get(http, "/api/v1/admin/projections/health")
        .await
        .unwrap();
    assert_eq!(status, 401);
    stack.stop().await.unwrap();
}

/// DESIGN.md guarantees 2, 3, 5 and 11: eight clients change three shared groups at once with
/// member adds, removes and replacements, half of them with idempotency keys (some sent twice,
/// some twice at once), and remove users, which changes the user and every group it is in within
/// one transaction. For every aggregate, position order equals sequence order; every acknowledged
/// change is stored; and each group's and user's read model equals the state folded from its
/// events in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_aggregate_order_holds_when_clients_share_aggregates() {
    let mut stack = Stack::start().await.unwrap();
    let shape = history::Shape {
        writers: 8,
        ops_per_writer: 150,
        groups: 3,
        users: 12,
        all_commands: false,
        kill_projector: false,
    };
    let report = history::run(&mut stack, shape, history::seed()).await;
    // Enough contention to prove something, and an unpinned command is rarely refused for it.
    assert!(
        report.acked_writes > 400,
        "too few writes to prove anything: {report:?}"
    );
    let aborted = report.refused.get("Aborted").copied().unwrap_or(0);
    assert!(aborted * 10 < report.acked_writes, "too many ABORTED: {report:?}");
    assert!(report.events > report.acked_writes, "{report:?}");
    stack.stop().await.unwrap();
}

/// The randomized history test: concurrent clients issue random commands (create, rename, add and
/// remove members, deactivate, reactivate, remove users and groups) on a few shared aggregates,
/// with and without idempotency keys, while the projector replica is killed and restarted; at the
/// end every invariant is checked at once (see `history/mod.rs`). Prints its seed;
/// `CAIRN_HISTORY_SEED` replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_histories_keep_every_invariant_while_the_projector_is_killed() {
    let mut stack = Stack::start().await.unwrap();
    let shape = history::Shape {
        writers: 6,
        ops_per_writer: 120,
        groups: 3,
        users: 10,
        all_commands: true,
        kill_projector: true,
    };
    let report = history::run(&mut stack, shape, history::seed()).await;
    assert!(
        report.acked_writes > 200,
        "too few writes to prove anything: {report:?}"
    );
    assert!(
        report.projector_kills > 0,
        "the projector was never killed: {report:?}"
    );
    stack.stop().await.unwrap();
}

/// DESIGN.md guarantees 3, 4, 5, 7 and 11 across a backup and restore: a populated database is
/// dumped (`pg_dump`) and restored (`pg_restore`) into a new cluster (`initdb` on a free port),
/// whose transaction counter is far below the positions already stored. The stack started on it
/// (the same stream) must place new events above every stored position: they are published to the
/// stream, projected, and read back with their consistency tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_keep_rising_after_a_restore_into_a_new_cluster() {
    // The source: the shared server, its transaction counter well above a new cluster's.
    let mut burn = sqlx::PgConnection::connect(&cairn_testkit::admin_url())
        .await
        .unwrap();
    loop {
        let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(&mut burn)
            .await
            .unwrap();
        if xid > 20_000 {
            break;
        }
    }
    drop(burn);

    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    let instance = stack.admin.instance_id;
    let mut users = stack.users();
    let mut last = String::new();
    for name in ["before-1", "before-2", "before-3"] {
        last = users
            .add_human_user(authed(&token, human(name)))
            .await
            .unwrap()
            .into_inner()
            .details
            .unwrap()
            .position;
    }
    let before: cairn_domain::Position = last.parse().unwrap();
    // Everything up to here is published and projected before the backup is taken.
    let client = async_nats::connect(cairn_testkit::nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let published = |pool: sqlx::PgPool, stream: String| {
        let js = js.clone();
        async move {
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.events")
                .fetch_one(&pool)
                .await?;
            let messages = js.get_stream(&stream).await?.info().await?.state.messages;
            anyhow::Ok((messages == total as u64).then_some(()))
        }
    };
    cairn_testkit::eventually(
        "the events before the backup to reach the stream",
        std::time::Duration::from_secs(30),
        || published(stack.db.pool.clone(), stack.stream().to_owned()),
    )
    .await
    .unwrap();
    cairn_testkit::eventually(
        "the users projection to reach the last write before the backup",
        std::time::Duration::from_secs(30),
        || async {
            let reached: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM projections.projection_states WHERE name = 'users' \
                   AND instance_id = $1 AND (position, position_offset) >= ($2, $3))",
            )
            .bind(instance.as_uuid())
            .bind(before.position)
            .bind(before.offset)
            .fetch_one(&stack.db.pool)
            .await?;
            Ok(reached.then_some(()))
        },
    )
    .await
    .unwrap();
    // An online backup; then the source goes on and publishes two more events that the backup
    // lacks, as happens when a database is restored from its last backup.
    let cluster = cairn_testkit::PrivateCluster::start(&[]).unwrap();
    let dump = std::env::temp_dir().join(format!("{}.dump", stack.db.name));
    let status = std::process::Command::new(cluster.bin().join("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(plain_url(&stack.db.url))
        .status()
        .unwrap();
    assert!(status.success(), "pg_dump failed");
    for name in ["after-backup-1", "after-backup-2"] {
        users.add_human_user(authed(&token, human(name))).await.unwrap();
    }
    cairn_testkit::eventually(
        "the events after the backup to reach the stream",
        std::time::Duration::from_secs(30),
        || published(stack.db.pool.clone(), stack.stream().to_owned()),
    )
    .await
    .unwrap();
    let in_stream = js
        .get_stream(stack.stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    let (source, resume) = stack.stop_services().await.unwrap();

    let target = TestDb::empty_on(&cluster.url, 16).await.unwrap();
    let status = std::process::Command::new(cluster.bin().join("pg_restore"))
        .args(["--no-owner", "-d"])
        .arg(plain_url(&target.url))
        .arg(&dump)
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore failed");
    std::fs::remove_file(&dump).ok();
    source.drop_db().await.unwrap();
    let counter: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&target.pool)
        .await
        .unwrap();
    assert!(
        counter < before.position,
        "the new cluster's counter ({counter}) must start below the stored positions ({before})"
    );

    let restored = Stack::resume_on(target, resume).await.unwrap();
    let mut users = restored.users();
    let created = users
        .add_human_user(authed(&token, human("after-restore")))
        .await
        .unwrap()
        .into_inner();
    let position: cairn_domain::Position = created.details.as_ref().unwrap().position.parse().unwrap();
    assert!(
        position > before,
        "a new event at {position} stands below the restored events (up to {before})"
    );
    // Read back with its token: the read model has it.
    let got = users
        .get_user(authed(
            &token,
            user::GetUserRequest {
                user_id: created.user.as_ref().unwrap().id.clone(),
                min_position: position.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(got.user_name, "after-restore");
    // And it reaches the stream, after everything the stream held, the events the backup lacks
    // included: the relay found the stream ahead of the store and new positions were raised
    // above it.
    let written_since: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.events WHERE position > $1")
        .bind(before.position)
        .fetch_one(&restored.db.pool)
        .await
        .unwrap();
    let stream = js.get_stream(restored.stream()).await.unwrap();
    cairn_testkit::eventually(
        "the events written after the restore to reach the stream",
        std::time::Duration::from_secs(30),
        || {
            let mut stream = stream.clone();
            async move {
                let messages = stream.info().await?.state.messages;
                Ok((messages == in_stream + written_since as u64).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&format!("{}.>", restored.prefix()))
        .await;
    let last_position: i64 = last
        .unwrap()
        .headers
        .get("Cairn-Position")
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    assert_eq!(
        last_position, position.position,
        "the stream ends with the new event"
    );
    restored.stop().await.unwrap();
    drop(cluster);
}

/// A consistency token is parsed once, at the edge: a malformed `min_position` is
/// `INVALID_ARGUMENT` naming the field, never a read that silently skips its wait.
#[tokio::test]
async fn a_malformed_min_position_is_invalid_argument_not_a_skipped_wait() {
    let stack = Stack::start().await.unwrap();
    let token = stack.admin.token.to_string();
    for malformed in ["12.x", "-3.0", "next", "1.2.3"] {
        let error = stack
            .users()
            .get_user(authed(
                &token,
                user::GetUserRequest {
                    user_id: stack.admin.admin_id.to_string(),
                    min_position: malformed.into(),
                },
            ))
            .await
            .expect_err("a malformed position is refused");
        assert_eq!(error.code(), Code::InvalidArgument, "{malformed}: {error:?}");
        let details = cairn_error::Error::from_status(&error);
        assert_eq!(
            details.violations.first().map(|v| v.field.as_str()),
            Some("min_position"),
            "{malformed}: {details:?}"
        );
    }
    stack.stop().await.unwrap();
}
