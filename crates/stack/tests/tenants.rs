//! Tenants made through the system API, end to end over gRPC and SCIM: three instances provisioned
//! with their own admin tokens see only themselves everywhere; a deactivated instance's tokens are
//! refused and work again after reactivation; a removed instance's tokens fail at once, its rows
//! leave every read model once the projections pass its removal, and what it held (a domain, its
//! unique claims) can be used by another instance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_proto::system::v1 as sys;
use cairn_proto::system::v1::system_service_client::SystemServiceClient;
use cairn_proto::user::v1 as user;
use cairn_proto::user::v1::user_service_client::UserServiceClient;
use cairn_stack::{Stack, request, with_token};
use serde_json::json;
use std::time::Duration;
use tonic::Code;

async fn scim(
    stack: &Stack,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> cairn_stack::Response {
    let bearer = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
    request(
        stack.scim,
        method,
        &format!("/scim/v2{path}"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/scim+json"),
        ],
        body.as_deref(),
    )
    .await
    .unwrap()
}

struct Tenant {
    id: String,
    token: String,
    user_id: String,
}

async fn system_token(stack: &Stack) -> String {
    stack.system_token().await.unwrap()
}

async fn rows_of(stack: &Stack, instance: &str) -> i64 {
    let id: uuid::Uuid = instance.parse().unwrap();
    let mut total = 0;
    for table in [
        "projections.users",
        "projections.orgs",
        "projections.instances",
        "projections.groups",
        "projections.group_members",
        "projections.milestones",
        "eventstore.unique_constraints",
        "api.instance_domains",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE instance_id = $1"))
            .bind(id)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
        total += n;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_tenants_made_through_the_system_api_stay_apart_and_removal_lets_go_of_everything() {
    let stack = Stack::start().await.unwrap();
    let system = system_token(&stack).await;
    let mut sys_client = SystemServiceClient::new(stack.channel());
    let mut users = UserServiceClient::new(stack.channel());

    // Three instances; the first one twice under one idempotency key.
    let mut tenants = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let mut add = with_token(
            sys::AddInstanceRequest {
                name: name.into(),
                org_name: format!("{name} HQ"),
                instance_id: String::new(),
            },
            &system,
        );
        add.metadata_mut()
            .insert("idempotency-key", format!("add-{name}").parse().unwrap());
        let added = sys_client.add_instance(add).await.unwrap().into_inner();
        assert!(added.admin_token.starts_with("cairn_pat_"), "{added:?}");
        tenants.push(Tenant {
            id: added.instance_id,
            token: added.admin_token,
            user_id: String::new(),
        });
    }
    let mut again = with_token(
        sys::AddInstanceRequest {
            name: "Alpha".into(),
            org_name: "Alpha HQ".into(),
            instance_id: String::new(),
        },
        &system,
    );
    again
        .metadata_mut()
        .insert("idempotency-key", "add-Alpha".parse().unwrap());
    let replay = sys_client.add_instance(again).await.unwrap().into_inner();
    assert_eq!(
        replay.instance_id, tenants[0].id,
        "the key returns the first instance"
    );
    assert!(
        replay.admin_token.is_empty(),
        "a token is shown once, not on a replay"
    );
    let listed = sys_client
        .list_instances(with_token(
            sys::ListInstancesRequest {
                name_contains: "a".into(),
                ..Default::default()
            },
            &system,
        ))
        .await
        .unwrap()
        .into_inner();
    for tenant in &tenants {
        assert!(listed.instances.iter().any(|i| i.id == tenant.id), "{listed:?}");
    }

    // Token kinds: a system token is refused by instance APIs and the reverse.
    let refused = users
        .list_users(with_token(user::ListUsersRequest::default(), &system))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = sys_client
        .list_instances(with_token(
            sys::ListInstancesRequest::default(),
            &tenants[0].token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let scim_refused = scim(&stack, &system, "GET", "/Users", None).await;
    assert_eq!(scim_refused.status, 403, "{}", scim_refused.body);

    // Each tenant provisions the same userName over SCIM: no clash across tenants.
    for tenant in &mut tenants {
        let created = scim(
            &stack,
            &tenant.token,
            "POST",
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ada",
                "name": {"givenName": "Ada", "familyName": tenant.id.clone()},
                "emails": [{"value": "ada@example.com", "primary": true}],
            })),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.body);
        tenant.user_id = created.json()["id"].as_str().unwrap().to_owned();
    }
    for (i, tenant) in tenants.iter().enumerate() {
        let found = scim(
            &stack,
            &tenant.token,
            "GET",
            "/Users?filter=userName%20eq%20%22ada%22",
            None,
        )
        .await;
        assert_eq!(found.status, 200, "{}", found.body);
        let found = found.json();
        assert_eq!(found["totalResults"], 1, "{found}");
        assert_eq!(found["Resources"][0]["id"], tenant.user_id.as_str());
        let all = scim(&stack, &tenant.token, "GET", "/Users?count=100", None)
            .await
            .json();
        assert!(
            all["Resources"].as_array().unwrap().iter().all(|u| {
                tenants
                    .iter()
                    .enumerate()
                    .all(|(j, other)| j == i || u["id"] != other.user_id.as_str())
            }),
            "tenant {i} lists another tenant's user: {all}"
        );
        for (j, other) in tenants.iter().enumerate().filter(|(j, _)| *j != i) {
            let foreign = scim(
                &stack,
                &tenant.token,
                "GET",
                &format!("/Users/{}", other.user_id),
                None,
            )
            .await;
            assert_eq!(
                foreign.status, 404,
                "tenant {i} reads tenant {j}'s user: {}",
                foreign.body
            );
            let foreign = users
                .get_user(with_token(
                    user::GetUserRequest {
                        user_id: other.user_id.clone(),
                        ..Default::default()
                    },
                    &tenant.token,
                ))
                .await
                .unwrap_err();
            assert_eq!(
                foreign.code(),
                Code::NotFound,
                "tenant {i} reads tenant {j}'s user over gRPC"
            );
            let deleted = scim(
                &stack,
                &tenant.token,
                "DELETE",
                &format!("/Users/{}", other.user_id),
                None,
            )
            .await;
            assert_eq!(
                deleted.status, 404,
                "tenant {i} deletes tenant {j}'s user: {}",
                deleted.body
            );
        }
    }

    // Search, groups, bulk, tokens and gRPC lists: each tenant sees and touches only its own.
    let mut groups = Vec::new();
    for tenant in &tenants {
        let group = scim(
            &stack,
            &tenant.token,
            "POST",
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "staff",
                "members": [{"value": tenant.user_id}],
            })),
        )
        .await;
        assert_eq!(group.status, 201, "{}", group.body);
        groups.push(group.json()["id"].as_str().unwrap().to_owned());
    }
    let mut admin = cairn_proto::admin::v1::admin_service_client::AdminServiceClient::new(stack.channel());
    for (i, tenant) in tenants.iter().enumerate() {
        let searched = scim(
            &stack,
            &tenant.token,
            "POST",
            "/Users/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName sw \"a\"",
            })),
        )
        .await
        .json();
        assert_eq!(searched["totalResults"], 1, "tenant {i} searches: {searched}");
        assert_eq!(searched["Resources"][0]["id"], tenant.user_id.as_str());
        let listed = users
            .list_users(with_token(user::ListUsersRequest::default(), &tenant.token))
            .await
            .unwrap()
            .into_inner();
        let own: std::collections::HashSet<&str> = listed.users.iter().map(|u| u.id.as_str()).collect();
        for (j, other) in tenants.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(
                !own.contains(other.user_id.as_str()),
                "tenant {i} lists tenant {j}'s user over gRPC"
            );
            let foreign_group = scim(
                &stack,
                &tenant.token,
                "GET",
                &format!("/Groups/{}", groups[j]),
                None,
            )
            .await;
            assert_eq!(foreign_group.status, 404, "tenant {i} reads tenant {j}'s group");
            let patch = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "taken over"}],
            });
            let bulk = scim(
                &stack,
                &tenant.token,
                "POST",
                "/Bulk",
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                    "Operations": [
                        {"method": "PATCH", "path": format!("/Groups/{}", groups[j]), "data": patch},
                        {"method": "DELETE", "path": format!("/Users/{}", other.user_id)},
                    ],
                })),
            )
            .await;
            assert_eq!(bulk.status, 200, "{}", bulk.body);
            let statuses: Vec<String> = bulk.json()["Operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["status"].as_str().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(
                statuses,
                ["404", "404"],
                "tenant {i} bulk-changes tenant {j}'s resources"
            );
            let other_token = cairn_secrets::parse_token(&other.token).unwrap().id.to_owned();
            let revoked = admin
                .revoke_token(with_token(
                    cairn_proto::admin::v1::RevokeTokenRequest {
                        token_id: other_token.clone(),
                    },
                    &tenant.token,
                ))
                .await
                .unwrap_err();
            assert_eq!(
                revoked.code(),
                Code::NotFound,
                "tenant {i} revokes tenant {j}'s token"
            );
            let tokens = admin
                .list_tokens(with_token(
                    cairn_proto::admin::v1::ListTokensRequest {
                        include_revoked: true,
                        ..Default::default()
                    },
                    &tenant.token,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(
                tokens.tokens.iter().all(|t| t.id != other_token),
                "tenant {i} lists tenant {j}'s token"
            );
        }
    }
    for (j, group) in groups.iter().enumerate() {
        let unchanged = scim(
            &stack,
            &tenants[j].token,
            "GET",
            &format!("/Groups/{group}"),
            None,
        )
        .await;
        assert_eq!(
            unchanged.json()["displayName"],
            "staff",
            "tenant {j}'s group was changed"
        );
    }

    // Domains are unique across instances.
    let domain = |id: &str, d: &str| sys::AddInstanceDomainRequest {
        instance_id: id.into(),
        domain: d.into(),
    };
    sys_client
        .add_instance_domain(with_token(domain(&tenants[0].id, "Login.Alpha.Example"), &system))
        .await
        .unwrap();
    let taken = sys_client
        .add_instance_domain(with_token(domain(&tenants[1].id, "login.alpha.example"), &system))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    // Deactivation refuses the tenant's tokens at once and keeps its data.
    sys_client
        .deactivate_instance(with_token(
            sys::DeactivateInstanceRequest {
                instance_id: tenants[1].id.clone(),
            },
            &system,
        ))
        .await
        .unwrap();
    let inactive = scim(&stack, &tenants[1].token, "GET", "/Users", None).await;
    assert_eq!(inactive.status, 403, "{}", inactive.body);
    assert!(inactive.body.contains("deactivated"), "{}", inactive.body);
    sys_client
        .reactivate_instance(with_token(
            sys::ReactivateInstanceRequest {
                instance_id: tenants[1].id.clone(),
            },
            &system,
        ))
        .await
        .unwrap();
    let back = scim(
        &stack,
        &tenants[1].token,
        "GET",
        &format!("/Users/{}", tenants[1].user_id),
        None,
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.body);

    // Removal: the tokens fail at once; the rows go when the projections pass the removal.
    assert!(rows_of(&stack, &tenants[0].id).await > 0);
    let removed = sys_client
        .remove_instance(with_token(
            sys::RemoveInstanceRequest {
                instance_id: tenants[0].id.clone(),
                erase_personal_data: true,
            },
            &system,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        removed.instance.unwrap().state,
        sys::InstanceState::Removed as i32
    );
    let gone = scim(&stack, &tenants[0].token, "GET", "/Users", None).await;
    assert_eq!(gone.status, 401, "{}", gone.body);
    let gone = users
        .list_users(with_token(user::ListUsersRequest::default(), &tenants[0].token))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
    let alpha = tenants[0].id.clone();
    cairn_testkit::eventually(
        "the removed tenant's read models are empty",
        Duration::from_secs(30),
        || async { Ok((rows_of(&stack, &alpha).await == 0).then_some(())) },
    )
    .await
    .unwrap();
    let alpha_uuid: uuid::Uuid = alpha.parse().unwrap();
    // Removed with erasure: no data key of the instance is left to open anything.
    let (keys, live): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE erased_at IS NULL) FROM eventstore.data_keys WHERE instance_id = $1",
    )
    .bind(alpha_uuid)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert!(keys > 0, "the tenant's users had data keys");
    assert_eq!(live, 0, "every data key of the removed tenant is destroyed");
    cairn_testkit::eventually(
        "the removed tenant's leases are released",
        Duration::from_secs(30),
        || async {
            let leases: i64 =
                sqlx::query_scalar("SELECT count(*) FROM projection_locks WHERE instance_id = $1")
                    .bind(alpha_uuid)
                    .fetch_one(&stack.db.pool)
                    .await?;
            Ok((leases == 0).then_some(()))
        },
    )
    .await
    .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.events WHERE instance_id = $1")
        .bind(alpha_uuid)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert!(events > 0, "the events stay as the audit trail");
    // The others are untouched.
    for tenant in &tenants[1..] {
        let still = scim(
            &stack,
            &tenant.token,
            "GET",
            &format!("/Users/{}", tenant.user_id),
            None,
        )
        .await;
        assert_eq!(still.status, 200, "{}", still.body);
    }
    // What the removed tenant held is free again.
    sys_client
        .add_instance_domain(with_token(domain(&tenants[2].id, "login.alpha.example"), &system))
        .await
        .unwrap();
    let gone = sys_client
        .get_instance(with_token(
            sys::GetInstanceRequest {
                instance_id: alpha.clone(),
            },
            &system,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.instance.unwrap().state, sys::InstanceState::Removed as i32);
    let again = sys_client
        .remove_instance(with_token(
            sys::RemoveInstanceRequest {
                instance_id: alpha.clone(),
                erase_personal_data: false,
            },
            &system,
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // A rebuild of every instance (`cairn projections reset users`) finishes, removed ones
    // included, and ends where the live model was: nothing of the removed tenant, the others whole.
    let marked = cairn_projection::health::request_rebuild(&stack.db.pool, "users", None)
        .await
        .unwrap();
    assert!(marked >= 4, "{marked} instances marked for the rebuild");
    cairn_testkit::eventually("every users rebuild started", Duration::from_secs(30), || async {
        let pending = cairn_projection::health::rebuilds_pending(&stack.db.pool, "users", None).await?;
        Ok((pending == 0).then_some(()))
    })
    .await
    .unwrap();
    cairn_testkit::eventually("the rebuilt users model", Duration::from_secs(30), || async {
        let mut statuses: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM projections.projection_states WHERE name = 'users' ORDER BY status",
        )
        .fetch_all(&stack.db.pool)
        .await?;
        statuses.dedup();
        Ok((statuses == ["active", "removed"]).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(
        rows_of(&stack, &alpha).await,
        0,
        "the rebuild brought the removed tenant back"
    );
    for tenant in &tenants[1..] {
        let still = scim(
            &stack,
            &tenant.token,
            "GET",
            &format!("/Users/{}", tenant.user_id),
            None,
        )
        .await;
        assert_eq!(still.status, 200, "{}", still.body);
    }

    stack.stop().await.unwrap();
}

/// An instance's own settings beat the deployment's defaults and leave other instances alone:
/// with one attempt allowed, a wrong code voids it; with a 120 s lifetime, the code expires 120 s
/// after it was made; without trust in its identity provider, a SCIM provisioner cannot mark an
/// email verified. The other instance keeps the deployment's defaults (the test stack's: 5
/// attempts, 3,600 s, trusted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_setting_beats_the_default_for_that_instance_only() {
    let stack = Stack::start().await.unwrap();
    let system = system_token(&stack).await;
    let mut sys_client = SystemServiceClient::new(stack.channel());
    let mut users = UserServiceClient::new(stack.channel());
    let mut made = Vec::new();
    for name in ["Strict", "Lenient"] {
        let added = sys_client
            .add_instance(with_token(
                sys::AddInstanceRequest {
                    name: name.into(),
                    ..Default::default()
                },
                &system,
            ))
            .await
            .unwrap()
            .into_inner();
        made.push(added);
    }
    let bad = sys_client
        .update_instance(with_token(
            sys::UpdateInstanceRequest {
                instance_id: made[0].instance_id.clone(),
                settings: Some(sys::InstanceSettings {
                    email_code_ttl_secs: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &system,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let updated = sys_client
        .update_instance(with_token(
            sys::UpdateInstanceRequest {
                instance_id: made[0].instance_id.clone(),
                settings: Some(sys::InstanceSettings {
                    email_code_ttl_secs: Some(120),
                    email_code_max_attempts: Some(1),
                    scim_emails_verified: Some(false),
                    default_language: Some("de".into()),
                    scim_erase_on_delete: Some(true),
                }),
                limits: [("users".to_owned(), 10_i64)].into(),
                set_limits: true,
                ..Default::default()
            },
            &system,
        ))
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    let settings = updated.settings.unwrap();
    assert_eq!(settings.email_code_max_attempts, Some(1));
    assert_eq!(settings.scim_erase_on_delete, Some(true));
    assert_eq!(updated.limits.get("users"), Some(&10));

    let mut verified_after_one_wrong_guess = Vec::new();
    for added in &made {
        let token = &added.admin_token;
        let created = users
            .add_human_user(with_token(
                user::AddHumanUserRequest {
                    user_name: "ada".into(),
                    profile: Some(user::HumanProfile {
                        display_name: "Ada".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let id = created.user.unwrap().id;
        let code = users
            .set_email(with_token(
                user::SetEmailRequest {
                    user_id: id.clone(),
                    email: "ada@example.com".into(),
                    verification: user::EmailVerification::ReturnCode as i32,
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .verification_code;
        let (created_at, expires_at): (chrono::DateTime<chrono::Utc>, String) = sqlx::query_as(
            "SELECT created_at, payload->>'expiresAt' FROM eventstore.events \
              WHERE aggregate_id = $1 AND event_type = 'user.human.email.code.added'",
        )
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
        let lifetime = chrono::DateTime::parse_from_rfc3339(&expires_at)
            .unwrap()
            .to_utc()
            - created_at;
        // A wrong guess: answered, and counted against the code.
        let _wrong = users
            .verify_email(with_token(
                user::VerifyEmailRequest {
                    user_id: id.clone(),
                    code: "not-the-code".into(),
                },
                token,
            ))
            .await;
        let right = users
            .verify_email(with_token(
                user::VerifyEmailRequest {
                    user_id: id.clone(),
                    code: code.clone(),
                },
                token,
            ))
            .await;
        // Whole seconds: the code's expiry is taken from the clock a moment before the commit.
        let seconds = (lifetime.num_milliseconds() as f64 / 1000.0).round() as i64;
        verified_after_one_wrong_guess.push((right.is_ok(), seconds));
    }
    assert_eq!(
        verified_after_one_wrong_guess,
        // The lenient instance keeps the stack's deployment default (3,600 s, 5 attempts).
        [(false, 120), (true, 3600)],
        "(verified after one wrong guess, code lifetime) of the strict and the lenient instance"
    );

    // SCIM: the strict instance's provisioner cannot vouch for an email; the lenient one's can.
    let mut vouched = Vec::new();
    for added in &made {
        let instance: cairn_domain::InstanceId = added.instance_id.parse().unwrap();
        let admin: cairn_domain::AggregateId = added.admin_user_id.parse().unwrap();
        let scim_token = {
            let mut tx = cairn_eventstore::begin(&stack.db.pool).await.unwrap();
            let issued = cairn_auth::tokens::issue(
                &mut tx,
                &cairn_auth::NewToken {
                    instance_id: instance,
                    org_id: None,
                    principal_id: admin,
                    kind: cairn_auth::TokenKind::Scim,
                    roles: vec![cairn_auth::Role::ScimProvisioner],
                    description: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            issued.secret.to_string()
        };
        let created = scim(
            &stack,
            &scim_token,
            "POST",
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "grace",
                "emails": [{"value": "grace@example.com", "primary": true}],
            })),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id: cairn_domain::AggregateId = created.json()["id"].as_str().unwrap().parse().unwrap();
        // The stored payload is sealed: read it as Cairn's own readers do.
        let api = stack.api();
        let mut events = cairn_eventstore::EventStore::load_aggregate(
            &api.exec.store,
            instance,
            &cairn_domain::AggregateType::parse("user").unwrap(),
            id,
            0,
        )
        .await
        .unwrap();
        let mut conn = stack.db.pool.acquire().await.unwrap();
        api.exec.vault.open(&mut conn, &mut events).await.unwrap();
        assert_eq!(events[0].event_type.as_str(), "user.human.added");
        vouched.push(events[0].payload.to_string().contains("\"verified\":true"));
    }
    assert_eq!(
        vouched,
        [false, true],
        "SCIM emails verified in the strict and the lenient instance"
    );
    stack.stop().await.unwrap();
}

/// Instance domains under contention: ten instances race for the same five domains, each claim
/// sent by several clients at once; every domain ends with exactly one instance, the registry and
/// the events agree on which, and the losers got ALREADY_EXISTS (never an internal error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_instances_claim_each_domain_exactly_once() {
    let stack = Stack::start().await.unwrap();
    let system = system_token(&stack).await;
    let mut sys_client = SystemServiceClient::new(stack.channel());
    let mut ids = Vec::new();
    for n in 0..10 {
        let added = sys_client
            .add_instance(with_token(
                sys::AddInstanceRequest {
                    name: format!("Racer {n}"),
                    ..Default::default()
                },
                &system,
            ))
            .await
            .unwrap()
            .into_inner();
        ids.push(added.instance_id);
    }
    let domains: Vec<String> = (0..5).map(|d| format!("d{d}.race.example")).collect();
    let mut racers = tokio::task::JoinSet::new();
    for id in &ids {
        for domain in &domains {
            for _ in 0..2 {
                let (id, domain, system) = (id.clone(), domain.clone(), system.clone());
                let mut client = SystemServiceClient::new(stack.channel());
                racers.spawn(async move {
                    let result = client
                        .add_instance_domain(with_token(
                            sys::AddInstanceDomainRequest {
                                instance_id: id.clone(),
                                domain: domain.clone(),
                            },
                            &system,
                        ))
                        .await;
                    (id, domain, result.map(|_| ()).map_err(|s| s.code()))
                });
            }
        }
    }
    let mut winners: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    while let Some(joined) = racers.join_next().await {
        let (id, domain, result) = joined.unwrap();
        match result {
            Ok(()) => {
                winners.entry(domain).or_default().insert(id);
            }
            // Lost to another instance, or to a concurrent change of the same instance.
            Err(Code::AlreadyExists | Code::Aborted) => {}
            Err(other) => panic!("{id} claiming {domain}: {other:?}"),
        }
    }
    for domain in &domains {
        let holders = winners.get(domain).cloned().unwrap_or_default();
        assert_eq!(holders.len(), 1, "{domain} was granted to {holders:?}");
        let holder = holders.into_iter().next().unwrap();
        let registry: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT instance_id FROM api.instance_domains WHERE domain = $1")
                .bind(domain)
                .fetch_all(&stack.db.pool)
                .await
                .unwrap();
        assert_eq!(
            registry,
            [holder.parse::<uuid::Uuid>().unwrap()],
            "{domain} in the registry"
        );
        let claimed: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT aggregate_id FROM eventstore.events WHERE event_type = 'instance.domain.added' \
               AND payload->>'domain' = $1",
        )
        .bind(domain)
        .fetch_all(&stack.db.pool)
        .await
        .unwrap();
        assert_eq!(
            claimed, registry,
            "{domain}: the events and the registry disagree"
        );
    }
    stack.stop().await.unwrap();
}
