//! `cairn-auth` against the real PostgreSQL: each statement over `api.tokens` is run here at least
//! once, and the token rules of guarantee 9 (only a hash stored, revocable, expiring, a revocation
//! reaching every process's cache) are checked on a fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_auth::tokens::{self, ListFilter};
use cairn_auth::{AuthError, Authenticator, NewToken, Permission, Role, TokenKind};
use cairn_domain::{AggregateId, InstanceId};
use cairn_testkit::{TestDb, eventually};
use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn new_token(instance: InstanceId, principal: AggregateId, kind: TokenKind, roles: &[Role]) -> NewToken {
    NewToken {
        instance_id: instance,
        org_id: None,
        principal_id: principal,
        kind,
        roles: roles.to_vec(),
        description: Some("test".into()),
        expires_at: None,
    }
}

async fn issue(db: &TestDb, token: &NewToken) -> tokens::Issued {
    let mut tx = cairn_eventstore::begin(&db.pool).await.unwrap();
    let issued = tokens::issue(&mut tx, token).await.unwrap();
    tx.commit().await.unwrap();
    issued
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

fn refused(result: Result<cairn_auth::Caller, AuthError>) -> &'static str {
    match result {
        Err(AuthError::Unauthenticated(reason)) => reason,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[tokio::test]
async fn an_issued_token_resolves_to_its_caller_and_only_its_hash_is_stored() {
    let db = TestDb::new(4).await.unwrap();
    let (instance, org, principal) = (InstanceId::new(), AggregateId::new(), AggregateId::new());
    let issued = issue(
        &db,
        &NewToken {
            org_id: Some(org),
            ..new_token(instance, principal, TokenKind::Scim, &[Role::ScimProvisioner])
        },
    )
    .await;
    assert!(issued.secret.starts_with(cairn_secrets::SCIM_PREFIX));
    assert!(!format!("{issued:?}").contains(issued.secret.as_str()));
    let stored: String = sqlx::query_scalar("SELECT hash FROM api.tokens WHERE id = $1")
        .bind(&issued.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, cairn_secrets::hash_token(&issued.secret));

    let auth = Authenticator::new(db.pool.clone());
    let caller = auth
        .authenticate(Some(&bearer(&issued.secret)), at(0))
        .await
        .unwrap();
    assert_eq!(caller.token_id, issued.id);
    assert_eq!(caller.instance_id, instance);
    assert_eq!(caller.org_id, Some(org));
    assert_eq!(caller.principal_id, principal);
    assert_eq!(caller.roles, vec![Role::ScimProvisioner]);
    assert!(caller.allows(Permission::ManageUsers));
    assert!(!caller.allows(Permission::AdministerInstance));

    let mut conn = db.pool.acquire().await.unwrap();
    let record = tokens::get(&mut conn, instance, &issued.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.kind, TokenKind::Scim);
    assert_eq!(record.roles, vec!["scim_provisioner".to_owned()]);
    assert_eq!(record.description.as_deref(), Some("test"));
    assert!(record.revoked_at.is_none());
    assert!(
        tokens::get(&mut conn, InstanceId::new(), &issued.id)
            .await
            .unwrap()
            .is_none(),
        "another instance's token is not found"
    );
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_are_refused() {
    let db = TestDb::new(4).await.unwrap();
    let issued = issue(
        &db,
        &NewToken {
            expires_at: Some(at(60)),
            ..new_token(
                InstanceId::new(),
                AggregateId::new(),
                TokenKind::Api,
                &[Role::ReadOnly],
            )
        },
    )
    .await;
    for auth in [
        Authenticator::new(db.pool.clone()),
        Authenticator::cached(db.pool.clone(), CancellationToken::new()),
    ] {
        assert_eq!(
            refused(auth.authenticate(None, at(0)).await),
            "missing bearer token"
        );
        assert_eq!(
            refused(auth.authenticate(Some("Basic YWRtaW46YWRtaW4="), at(0)).await),
            "missing bearer token"
        );
        assert_eq!(
            refused(auth.authenticate(Some("Bearer nonsense"), at(0)).await),
            "invalid token"
        );
        // The right id with another secret: found by id, refused by the hash.
        let forged = format!("{}{}_{}", cairn_secrets::PAT_PREFIX, issued.id, "A".repeat(43));
        assert_eq!(
            refused(auth.authenticate(Some(&bearer(&forged)), at(0)).await),
            "invalid token"
        );
        assert!(
            auth.authenticate(Some(&bearer(&issued.secret)), at(59))
                .await
                .is_ok()
        );
        // Expired, also when the token is served from the cache.
        assert_eq!(
            refused(auth.authenticate(Some(&bearer(&issued.secret)), at(60)).await),
            "the token is revoked or expired"
        );
        let lower = format!("bearer {}", issued.secret.as_str());
        assert!(auth.authenticate(Some(&lower), at(0)).await.is_ok());
    }
}

#[tokio::test]
async fn a_revocation_reaches_the_cache_of_another_process() {
    let db = TestDb::new(8).await.unwrap();
    let shutdown = CancellationToken::new();
    let instance = InstanceId::new();
    let issued = issue(
        &db,
        &new_token(
            instance,
            AggregateId::new(),
            TokenKind::Api,
            &[Role::InstanceAdmin],
        ),
    )
    .await;
    let header = bearer(&issued.secret);
    // Two caches, as in two processes: the revoking one and another that only hears of it.
    let here = Authenticator::cached(db.pool.clone(), shutdown.clone());
    let there = Authenticator::cached(db.pool.clone(), shutdown.clone());
    here.authenticate(Some(&header), at(0)).await.unwrap();
    there.authenticate(Some(&header), at(0)).await.unwrap();

    let mut tx = cairn_eventstore::begin(&db.pool).await.unwrap();
    assert!(
        tokens::revoke(&mut tx, Some(InstanceId::new()), &issued.id)
            .await
            .unwrap()
            .is_none(),
        "another instance cannot revoke it"
    );
    let record = tokens::revoke(&mut tx, Some(instance), &issued.id)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    here.forget(&issued.id);
    let first = record.revoked_at.unwrap();
    assert_eq!(
        refused(here.authenticate(Some(&header), at(0)).await),
        "the token is revoked or expired"
    );
    eventually(
        "the other cache to hear of the revocation",
        std::time::Duration::from_secs(5),
        || {
            let (there, header) = (there.clone(), header.clone());
            async move {
                Ok(there
                    .authenticate(Some(&header), at(0))
                    .await
                    .is_err()
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();

    // Revoking again (the operator's command line: any instance) keeps the first time.
    let mut tx = cairn_eventstore::begin(&db.pool).await.unwrap();
    let again = tokens::revoke(&mut tx, None, &issued.id).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.revoked_at, Some(first));
    shutdown.cancel();
}

#[tokio::test]
async fn personal_tokens_are_revoked_one_by_one_or_all_with_their_user() {
    let db = TestDb::new(4).await.unwrap();
    let (instance, alice, bob) = (InstanceId::new(), AggregateId::new(), AggregateId::new());
    let first = issue(
        &db,
        &new_token(instance, alice, TokenKind::Pat, &[Role::ReadOnly]),
    )
    .await;
    let second = issue(
        &db,
        &new_token(instance, alice, TokenKind::Pat, &[Role::ReadOnly]),
    )
    .await;
    let bobs = issue(&db, &new_token(instance, bob, TokenKind::Pat, &[Role::ReadOnly])).await;
    let elsewhere = issue(
        &db,
        &new_token(InstanceId::new(), alice, TokenKind::Api, &[Role::ReadOnly]),
    )
    .await;

    let mut tx = cairn_eventstore::begin(&db.pool).await.unwrap();
    assert!(
        !tokens::revoke_active(&mut tx, instance, bob, &first.id)
            .await
            .unwrap()
    );
    assert!(
        tokens::revoke_active(&mut tx, instance, alice, &first.id)
            .await
            .unwrap()
    );
    assert!(
        !tokens::revoke_active(&mut tx, instance, alice, &first.id)
            .await
            .unwrap(),
        "a revoked token is not revoked twice"
    );
    assert_eq!(tokens::revoke_all_of(&mut tx, instance, alice).await.unwrap(), 1);
    tx.commit().await.unwrap();

    let ids = |records: Vec<cairn_auth::TokenRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let active = tokens::list(
        &db.pool,
        ListFilter {
            instance: Some(instance),
            ..ListFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(active), vec![bobs.id.clone()]);
    let alices = tokens::list(
        &db.pool,
        ListFilter {
            instance: Some(instance),
            principal: Some(alice),
            include_revoked: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(alices), vec![first.id.clone(), second.id.clone()]);
    let everywhere = tokens::list(&db.pool, ListFilter::default()).await.unwrap();
    assert_eq!(ids(everywhere), vec![bobs.id, elsewhere.id]);

    let auth = Authenticator::new(db.pool.clone());
    for revoked in [&first, &second] {
        assert_eq!(
            refused(auth.authenticate(Some(&bearer(&revoked.secret)), at(0)).await),
            "the token is revoked or expired"
        );
    }
}
