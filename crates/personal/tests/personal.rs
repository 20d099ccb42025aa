//! The vault against a real PostgreSQL: key rotation rewraps data keys without touching a
//! ciphertext, a key made by a push is the one its events are sealed under, tampering is refused,
//! and a second key for a subject that has one fails the push instead of replacing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_domain::{AggregateId, AggregateType, EventDraft, EventType, InstanceId, StoredEvent};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push, StoreError};
use cairn_personal::{PersonalError, Vault};
use cairn_secrets::Keyring;
use cairn_testkit::TestDb;
use serde_json::json;

fn key() -> String {
    Keyring::generate_key_string().unwrap().to_string()
}

fn vault(config: &str) -> Vault {
    Vault::new(Keyring::parse(config).unwrap())
}

fn user_push(instance: InstanceId, user: AggregateId, expected: i64, given: &str) -> Push {
    Push::single(
        instance,
        AggregateType::parse("user").unwrap(),
        user,
        ExpectedSequence::Exact(expected),
        vec![EventDraft::new(
            EventType::parse("user.human.profile.changed").unwrap(),
            json!({"name": {"givenName": given}}),
            "test",
            user,
        )],
    )
}

async fn sealed_push(db: &TestDb, vault: &Vault, mut push: Push) -> Result<Vec<StoredEvent>, StoreError> {
    vault
        .seal(&mut cairn_personal::Db::pool(&db.pool), &mut push)
        .await
        .unwrap();
    PgEventStore::new(db.pool.clone()).push(push).await
}

async fn opened(
    db: &TestDb,
    vault: &Vault,
    instance: InstanceId,
    user: AggregateId,
) -> Result<Vec<StoredEvent>, PersonalError> {
    let mut events = PgEventStore::new(db.pool.clone())
        .load_aggregate(instance, &AggregateType::parse("user").unwrap(), user, 0)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    vault.open(&mut conn, &mut events).await.map(|()| events)
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_and_the_old_keyring_key_can_then_go() {
    let db = TestDb::new(4).await.unwrap();
    let (k1, k2) = (key(), key());
    let old = vault(&format!("k1:{k1}"));
    let instance = InstanceId::new();
    let users: Vec<AggregateId> = (0..3).map(|_| AggregateId::new()).collect();
    for user in &users {
        sealed_push(&db, &old, user_push(instance, *user, 0, "Ada"))
            .await
            .unwrap();
    }
    let before: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM eventstore.events ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();

    // k2 added and made active: new seals use it, the stored keys still name k1.
    let both = vault(&format!("k2:{k2},k1:{k1}"));
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        both.reseal_keys(&mut conn, 2).await.unwrap(),
        2,
        "a batch of at most 2"
    );
    assert_eq!(both.reseal_keys(&mut conn, 2).await.unwrap(), 1);
    assert_eq!(
        both.reseal_keys(&mut conn, 2).await.unwrap(),
        0,
        "nothing left under k1"
    );
    let wrapped: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_id FROM eventstore.data_keys")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(wrapped, ["k2"]);
    let after: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM eventstore.events ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(before, after, "no ciphertext was touched");

    // k1 removed from the keyring: everything still opens.
    let new = vault(&format!("k2:{k2}"));
    for user in &users {
        let events = opened(&db, &new, instance, *user).await.unwrap();
        assert_eq!(events[0].payload["name"]["givenName"], "Ada");
    }
    // And without the resealing it would not have: a keyring that lacks the wrapping key fails.
    let stranger = vault(&format!("k3:{}", key()));
    assert!(matches!(
        opened(&db, &stranger, instance, users[0]).await,
        Err(PersonalError::Secrets(_))
    ));
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_tampered_ciphertext_or_a_moved_one_does_not_open() {
    let db = TestDb::new(4).await.unwrap();
    let vault = vault(&format!("k1:{}", key()));
    let instance = InstanceId::new();
    let (ada, bob) = (AggregateId::new(), AggregateId::new());
    sealed_push(&db, &vault, user_push(instance, ada, 0, "Ada"))
        .await
        .unwrap();
    sealed_push(&db, &vault, user_push(instance, bob, 0, "Bob"))
        .await
        .unwrap();
    // Bob's sealed member copied into Ada's event: bound to another user and event, it fails.
    sqlx::query(
        "UPDATE eventstore.events SET payload = (SELECT payload FROM eventstore.events WHERE aggregate_id = $2) \
          WHERE aggregate_id = $1",
    )
    .bind(ada.as_uuid())
    .bind(bob.as_uuid())
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(matches!(
        opened(&db, &vault, instance, ada).await,
        Err(PersonalError::Secrets(_))
    ));
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_second_first_push_for_a_subject_fails_as_a_conflict_and_keeps_the_first_key() {
    let db = TestDb::new(4).await.unwrap();
    let vault = vault(&format!("k1:{}", key()));
    let instance = InstanceId::new();
    let user = AggregateId::new();
    sealed_push(&db, &vault, user_push(instance, user, 0, "Ada"))
        .await
        .unwrap();
    let again = sealed_push(&db, &vault, user_push(instance, user, 0, "Eve")).await;
    assert!(matches!(again, Err(StoreError::Conflict { .. })), "{again:?}");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.data_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
    // Later pushes of the user are sealed under the stored key.
    sealed_push(&db, &vault, user_push(instance, user, 1, "Ada Augusta"))
        .await
        .unwrap();
    let events = opened(&db, &vault, instance, user).await.unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.payload["name"]["givenName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Ada Augusta"]);
    db.drop_db().await.unwrap();
}
