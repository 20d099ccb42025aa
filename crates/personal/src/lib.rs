//! Personal data in an append-only log, erasable: crypto-shredding.
//!
//! Every user has its own random data key ([`cairn_secrets::DataKey`]), stored only sealed under
//! the service keyring in `eventstore.data_keys`. Before a push reaches the store, [`Vault::seal`]
//! moves the personal fields of each user event (everything but
//! [`cairn_domain::personal::READABLE_USER_FIELDS`]) into one AES-256-GCM ciphertext under that
//! key, bound to the instance, the user and the event id; what the store keeps, the relay
//! publishes and backups copy is that ciphertext. Snapshots of users are sealed the same way.
//! [`Vault::open`] is the one way back, for Cairn's own readers (command handling, projections,
//! the notifier): it opens a batch of events with one key lookup. [`Vault::erase`] destroys the
//! key, in the transaction that records `user.erased`; from then on every copy of the user's
//! personal fields, wherever it went, opens as the erased form
//! ([`cairn_domain::personal::erased_form`]) and can never be read again.
//!
//! Unique values that identify a person (user names) are claimed as a blind index ([`Vault::blind`]):
//! an HMAC under a per-instance key that is kept like a data key, so the uniqueness check works
//! without the name being stored.
//!
//! [`present`] shows events to a reader outside the service processes (the event API): sealed
//! fields stay sealed, and an erased user's fields read "erased". [`seal_existing`] is the one-off
//! migration of events written before sealing existed.

mod migrate;

pub use migrate::{SealReport, seal_existing};

use cairn_domain::personal::{self, SEALED};
use cairn_domain::{AggregateId, InstanceId, StoredEvent, UNIQUE_USERNAME};
use cairn_eventstore::{ExpectedSequence, NewDataKey, Push, Snapshot, UniqueOp};
use cairn_secrets::{DataKey, Keyring, Sealed, SealedData, SecretsError, data_key_aad, personal_data_aad};
use serde_json::{Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A column of a stored key (`key_id`, `nonce`, `ciphertext`): `NULL` once the key is destroyed.
type StoredKey = Option<String>;

/// The prefix of a blind-indexed unique value (version 1: HMAC-SHA256, hex).
pub const BLIND_PREFIX: &str = "b1:";

/// What can go wrong with personal data.
#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A key or a ciphertext did not open (a wrong or missing keyring key, tampered data).
    #[error("personal data could not be opened: {0}")]
    Secrets(#[from] SecretsError),
    /// The user's data key was destroyed: nothing can be sealed for it any more.
    #[error("the personal data of user {0} was erased")]
    Erased(AggregateId),
    /// A sealed payload or snapshot is not in the sealed form.
    #[error("malformed sealed data: {0}")]
    Malformed(String),
}

/// Where the vault reads and makes keys: the caller's connection (the transaction its push will
/// commit in), or a pool it takes a connection from only when it needs one: sealing a new user's
/// events with a cached index key needs none, and taking one from the pool costs a round trip (the
/// pool checks a connection before handing it out).
pub enum Db<'a> {
    /// The caller's connection.
    Conn(&'a mut PgConnection),
    /// A pool, and the connection taken from it once one was needed.
    Pool(&'a PgPool, Option<PoolConnection<Postgres>>),
}

impl<'a> Db<'a> {
    /// Connections from `pool`, taken only when needed.
    pub fn pool(pool: &'a PgPool) -> Self {
        Db::Pool(pool, None)
    }

    async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        match self {
            Db::Conn(conn) => Ok(&mut **conn),
            Db::Pool(pool, held) => {
                if held.is_none() {
                    *held = Some(pool.acquire().await?);
                }
                match held {
                    Some(conn) => Ok(&mut **conn),
                    None => Err(sqlx::Error::PoolClosed),
                }
            }
        }
    }
}

/// A subject's data key as stored: usable, destroyed, or never made.
#[derive(Debug, Clone)]
pub enum SubjectKey {
    /// The key, opened.
    Key(Box<DataKey>),
    /// The key was destroyed (erasure).
    Erased,
    /// No key was ever made for the subject.
    Missing,
}

/// Seals and opens personal data with per-user keys kept under a [`Keyring`]. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    keyring: Arc<Keyring>,
    /// Blind-index keys per instance: they are never destroyed while the instance lives, and every
    /// replica reads the same one, so caching them is safe.
    index_keys: Arc<Mutex<HashMap<InstanceId, DataKey>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("keyring", &self.keyring).finish()
    }
}

/// The plain payloads of the events a [`Vault::seal`] sealed, to give the writer back its own
/// events readable after the push.
#[derive(Debug, Default)]
pub struct Unsealed {
    plain: HashMap<Uuid, Value>,
}

impl Unsealed {
    /// Puts the plain payloads back into the stored events of the sealed push.
    pub fn restore(mut self, events: &mut [StoredEvent]) {
        for event in events {
            if let Some(plain) = self.plain.remove(&event.id.as_uuid()) {
                event.payload = plain;
            }
        }
    }
}

impl Vault {
    /// A vault over `keyring` (the services' `CAIRN_KEYS`).
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: Arc::new(keyring),
            index_keys: Arc::default(),
        }
    }

    /// The keyring the data keys are sealed under.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Seals the personal fields of every user event in `push` under its user's data key and
    /// blind-indexes its user-name claims, in place. A new user's key (a push that expects
    /// sequence 0) is made here and added to the push, which stores it in the statement that stores
    /// the events; an existing user's key is read through `conn` (and made there for a user that
    /// predates sealing).
    ///
    /// [`PersonalError::Erased`] when a user of the push was erased.
    pub async fn seal(&self, db: &mut Db<'_>, push: &mut Push) -> Result<Unsealed, PersonalError> {
        let mut unsealed = Unsealed::default();
        let mut new_keys = Vec::new();
        for aggregate in &mut push.aggregates {
            if !personal::is_personal(aggregate.aggregate_type.as_str()) {
                continue;
            }
            let mut key = None;
            for event in &mut aggregate.events {
                let Some((readable, fields)) = personal::split(&event.payload) else {
                    continue;
                };
                if key.is_none() {
                    let (instance, subject) = (aggregate.instance_id, aggregate.aggregate_id);
                    key = Some(if aggregate.expected == ExpectedSequence::Exact(0) {
                        // A new user: its key goes into the push's own statement.
                        let fresh = DataKey::generate()?;
                        let sealed = fresh.seal_under(
                            &self.keyring,
                            &data_key_aad(
                                instance.as_uuid().as_bytes(),
                                "user",
                                subject.as_uuid().as_bytes(),
                            ),
                        )?;
                        new_keys.push(NewDataKey {
                            instance_id: instance,
                            purpose: "user".into(),
                            subject_id: subject,
                            key_id: sealed.key_id,
                            nonce: sealed.nonce,
                            ciphertext: sealed.ciphertext,
                        });
                        fresh
                    } else {
                        self.subject_key(db.conn().await?, instance, "user", subject.as_uuid())
                            .await?
                            .ok_or(PersonalError::Erased(subject))?
                    });
                }
                let Some(key) = key.as_ref() else { continue };
                let aad = event_aad(aggregate.instance_id, aggregate.aggregate_id, event.id.as_uuid());
                let sealed = seal_fields(key, readable, fields, &aad)?;
                let plain = std::mem::replace(&mut event.payload, sealed);
                unsealed.plain.insert(event.id.as_uuid(), plain);
            }
        }
        push.data_keys.extend(new_keys);
        // A name claimed before sealing existed (and not yet migrated) is held plain: releasing it
        // releases the plain claim too.
        let plain_releases: Vec<UniqueOp> = push
            .unique_ops
            .iter()
            .filter(|op| {
                matches!(op, UniqueOp::Remove { unique_type, value, .. }
                    if unique_type == UNIQUE_USERNAME && !value.starts_with(BLIND_PREFIX))
            })
            .cloned()
            .collect();
        for op in &mut push.unique_ops {
            let (UniqueOp::Add {
                instance_id,
                unique_type,
                value,
            }
            | UniqueOp::Remove {
                instance_id,
                unique_type,
                value,
            }) = op;
            if unique_type == UNIQUE_USERNAME && !value.starts_with(BLIND_PREFIX) {
                *value = self.blind(db, *instance_id, unique_type, value).await?;
            }
        }
        push.unique_ops.extend(plain_releases);
        Ok(unsealed)
    }

    /// The blind index of a unique value: [`BLIND_PREFIX`] and the HMAC of `(kind, value)` under
    /// the instance's index key (made on first use).
    pub async fn blind(
        &self,
        db: &mut Db<'_>,
        instance: InstanceId,
        kind: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        let cached = self.lock_index_keys().get(&instance).cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self
                    .subject_key(db.conn().await?, instance, "index", instance.as_uuid())
                    .await?
                    .ok_or_else(|| {
                        PersonalError::Malformed(format!("the index key of instance {instance} is gone"))
                    })?;
                self.lock_index_keys().insert(instance, key.clone());
                key
            }
        };
        Ok(format!(
            "{BLIND_PREFIX}{}",
            key.blind(&[kind.as_bytes(), value.as_bytes()])?
        ))
    }

    fn lock_index_keys(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, DataKey>> {
        // A panic while holding this lock cannot leave the map half-written: insert and get only.
        self.index_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens every sealed event of `events` in place, with one key lookup for the batch: a user's
    /// events open to their original payload, an erased user's to the erased form. Events that are
    /// not sealed (other aggregates, fields that stay readable, events written before sealing)
    /// are left as they are.
    pub async fn open(
        &self,
        conn: &mut PgConnection,
        events: &mut [StoredEvent],
    ) -> Result<(), PersonalError> {
        let wanted: Vec<(InstanceId, Uuid)> = events
            .iter()
            .filter(|e| personal::is_sealed(&e.payload))
            .map(|e| (e.instance_id, e.aggregate_id.as_uuid()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys = self.user_keys(conn, &wanted).await?;
        for event in events.iter_mut().filter(|e| personal::is_sealed(&e.payload)) {
            let key = keys
                .get(&(event.instance_id, event.aggregate_id.as_uuid()))
                .unwrap_or(&SubjectKey::Missing);
            self.open_event(key, event)?;
        }
        Ok(())
    }

    /// Opens one sealed event with its user's key (see [`Vault::open`]).
    pub fn open_event(&self, key: &SubjectKey, event: &mut StoredEvent) -> Result<(), PersonalError> {
        match key {
            SubjectKey::Key(key) => {
                let aad = event_aad(event.instance_id, event.aggregate_id, event.id.as_uuid());
                event.payload = open_fields(key, &event.payload, &aad)?;
            }
            // No key: erased, or (a key lost from the table) unreadable all the same.
            SubjectKey::Erased | SubjectKey::Missing => {
                event.payload = personal::erased_form(&event.payload);
            }
        }
        Ok(())
    }

    /// The user's data key as stored.
    pub async fn user_key(
        &self,
        conn: &mut PgConnection,
        instance: InstanceId,
        user: AggregateId,
    ) -> Result<SubjectKey, PersonalError> {
        let keys = self.user_keys(conn, &[(instance, user.as_uuid())]).await?;
        Ok(keys.into_values().next().unwrap_or(SubjectKey::Missing))
    }

    /// Seals a user snapshot's state in place under the user's key (made on first use).
    pub async fn seal_snapshot(
        &self,
        conn: &mut PgConnection,
        snapshot: &mut Snapshot,
    ) -> Result<(), PersonalError> {
        if !personal::is_personal(snapshot.aggregate_type.as_str()) {
            return Ok(());
        }
        let key = self
            .subject_key(
                conn,
                snapshot.instance_id,
                "user",
                snapshot.aggregate_id.as_uuid(),
            )
            .await?
            .ok_or(PersonalError::Erased(snapshot.aggregate_id))?;
        let aad = snapshot_aad(snapshot);
        let mut all = Map::new();
        all.insert("state".into(), std::mem::take(&mut snapshot.state));
        snapshot.state = seal_fields(&key, Map::new(), all, &aad)?;
        Ok(())
    }

    /// The state of a user snapshot, opened; `None` when it cannot be (the user was erased, or the
    /// snapshot is not sealed): the caller then replays the events.
    pub async fn open_snapshot(
        &self,
        conn: &mut PgConnection,
        snapshot: &Snapshot,
    ) -> Result<Option<Value>, PersonalError> {
        if !personal::is_personal(snapshot.aggregate_type.as_str()) || !personal::is_sealed(&snapshot.state) {
            return self.open_snapshot_with(&SubjectKey::Missing, snapshot);
        }
        let key = self
            .user_key(conn, snapshot.instance_id, snapshot.aggregate_id)
            .await?;
        self.open_snapshot_with(&key, snapshot)
    }

    /// [`Vault::open_snapshot`] with the user's key already read ([`Vault::user_key`]).
    pub fn open_snapshot_with(
        &self,
        key: &SubjectKey,
        snapshot: &Snapshot,
    ) -> Result<Option<Value>, PersonalError> {
        if !personal::is_personal(snapshot.aggregate_type.as_str()) {
            return Ok(Some(snapshot.state.clone()));
        }
        if !personal::is_sealed(&snapshot.state) {
            return Ok(None);
        }
        match key {
            SubjectKey::Key(key) => {
                let opened = open_fields(key, &snapshot.state, &snapshot_aad(snapshot))?;
                Ok(opened.get("state").cloned())
            }
            SubjectKey::Erased | SubjectKey::Missing => Ok(None),
        }
    }

    /// Destroys the user's data key (leaving a tombstone, so it is never made again) and drops
    /// its snapshots, in the caller's transaction: commit it with the `user.erased` event. Events
    /// of the user still plain (written before sealing, not yet migrated by [`seal_existing`]) are
    /// rewritten to their erased form in the same transaction, so erasure never depends on the
    /// migration having run.
    pub async fn erase(
        &self,
        conn: &mut PgConnection,
        instance: InstanceId,
        user: AggregateId,
    ) -> Result<(), PersonalError> {
        sqlx::query(
            "INSERT INTO eventstore.data_keys (instance_id, purpose, subject_id, erased_at) \
             VALUES ($1, 'user', $2, statement_timestamp()) \
             ON CONFLICT (instance_id, purpose, subject_id) DO UPDATE \
               SET key_id = NULL, nonce = NULL, ciphertext = NULL, \
                   erased_at = coalesce(eventstore.data_keys.erased_at, statement_timestamp())",
        )
        .bind(instance.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *conn)
        .await?;
        let plain: Vec<(i64, Value)> = sqlx::query_as(
            "SELECT sequence, payload FROM eventstore.events \
              WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 \
                AND NOT payload ? $4 AND NOT payload ? $5",
        )
        .bind(instance.as_uuid())
        .bind(personal::PERSONAL_AGGREGATE)
        .bind(user.as_uuid())
        .bind(SEALED)
        .bind(personal::ERASED)
        .fetch_all(&mut *conn)
        .await?;
        for (sequence, payload) in plain {
            let Some(erased) = personal::erase_plain(&payload) else {
                continue;
            };
            rewrite_event(conn, instance, user, sequence, &erased).await?;
        }
        sqlx::query(
            "DELETE FROM eventstore.snapshots WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3",
        )
        .bind(instance.as_uuid())
        .bind(personal::PERSONAL_AGGREGATE)
        .bind(user.as_uuid())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Reseals up to `limit` stored data keys that are sealed under a keyring key other than the
    /// active one, each under the active key (key rotation). Returns how many it resealed; run it
    /// until it returns 0. Safe while services run: a key's value never changes, only its wrapping.
    pub async fn reseal_keys(&self, conn: &mut PgConnection, limit: i64) -> Result<u64, PersonalError> {
        let rows: Vec<(Uuid, String, Uuid, String, String, String)> = sqlx::query_as(
            "SELECT instance_id, purpose, subject_id, key_id, nonce, ciphertext FROM eventstore.data_keys \
              WHERE key_id IS NOT NULL AND key_id <> $1 LIMIT $2",
        )
        .bind(self.keyring.active_key_id())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut resealed = 0;
        for (instance, purpose, subject, key_id, nonce, ciphertext) in rows {
            let aad = data_key_aad(instance.as_bytes(), &purpose, subject.as_bytes());
            let sealed = Sealed {
                key_id: key_id.clone(),
                nonce,
                ciphertext,
            };
            let fresh = self.keyring.reseal(&sealed, &aad)?;
            resealed += sqlx::query(
                "UPDATE eventstore.data_keys SET key_id = $5, nonce = $6, ciphertext = $7 \
                  WHERE instance_id = $1 AND purpose = $2 AND subject_id = $3 AND key_id = $4",
            )
            .bind(instance)
            .bind(&purpose)
            .bind(subject)
            .bind(&key_id)
            .bind(&fresh.key_id)
            .bind(&fresh.nonce)
            .bind(&fresh.ciphertext)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        }
        Ok(resealed)
    }

    /// The stored keys of `subjects` (purpose `user`), in one statement.
    async fn user_keys(
        &self,
        conn: &mut PgConnection,
        subjects: &[(InstanceId, Uuid)],
    ) -> Result<HashMap<(InstanceId, Uuid), SubjectKey>, PersonalError> {
        let (instances, ids): (Vec<Uuid>, Vec<Uuid>) =
            subjects.iter().map(|(i, s)| (i.as_uuid(), *s)).unzip();
        let rows: Vec<(Uuid, Uuid, StoredKey, StoredKey, StoredKey)> = sqlx::query_as(
            "SELECT k.instance_id, k.subject_id, k.key_id, k.nonce, k.ciphertext \
               FROM eventstore.data_keys k \
               JOIN (SELECT DISTINCT i, s FROM unnest($1::uuid[], $2::uuid[]) AS w(i, s)) w \
                 ON k.instance_id = w.i AND k.purpose = 'user' AND k.subject_id = w.s",
        )
        .bind(&instances)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for (instance, subject, key_id, nonce, ciphertext) in rows {
            let instance = InstanceId::from_uuid(instance);
            let key = match self.unwrap_key(instance, "user", subject, (key_id, nonce, ciphertext))? {
                Some(key) => SubjectKey::Key(Box::new(key)),
                None => SubjectKey::Erased,
            };
            keys.insert((instance, subject), key);
        }
        Ok(keys)
    }

    /// The subject's key, made and stored on first use; `None` when it was destroyed.
    async fn subject_key(
        &self,
        conn: &mut PgConnection,
        instance: InstanceId,
        purpose: &str,
        subject: Uuid,
    ) -> Result<Option<DataKey>, PersonalError> {
        // Usually the key exists: read it without making one.
        let stored: Option<(StoredKey, StoredKey, StoredKey)> = sqlx::query_as(
            "SELECT key_id, nonce, ciphertext FROM eventstore.data_keys \
              WHERE instance_id = $1 AND purpose = $2 AND subject_id = $3",
        )
        .bind(instance.as_uuid())
        .bind(purpose)
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(stored) = stored {
            return self.unwrap_key(instance, purpose, subject, stored);
        }
        // Two rounds at most: when a concurrent transaction made the key first, this statement
        // waits for it and inserts nothing, and only the next statement's snapshot sees its row.
        for _ in 0..2 {
            let fresh = DataKey::generate()?;
            let sealed = fresh.seal_under(
                &self.keyring,
                &data_key_aad(instance.as_uuid().as_bytes(), purpose, subject.as_bytes()),
            )?;
            let row: Option<(StoredKey, StoredKey, StoredKey, bool)> = sqlx::query_as(
                "WITH made AS ( \
                   INSERT INTO eventstore.data_keys (instance_id, purpose, subject_id, key_id, nonce, ciphertext) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1) \
                 SELECT NULL::text, NULL::text, NULL::text, true FROM made \
                 UNION ALL \
                 SELECT key_id, nonce, ciphertext, false FROM eventstore.data_keys \
                  WHERE instance_id = $1 AND purpose = $2 AND subject_id = $3 AND NOT EXISTS (SELECT 1 FROM made)",
            )
            .bind(instance.as_uuid())
            .bind(purpose)
            .bind(subject)
            .bind(&sealed.key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some((_, _, _, true)) => return Ok(Some(fresh)),
                Some((key_id, nonce, ciphertext, false)) => {
                    return self.unwrap_key(instance, purpose, subject, (key_id, nonce, ciphertext));
                }
                None => continue,
            }
        }
        Err(PersonalError::Malformed(format!(
            "the {purpose} key of {subject} could neither be made nor read"
        )))
    }

    /// The key of a stored row; `None` for a tombstone (the key was destroyed).
    fn unwrap_key(
        &self,
        instance: InstanceId,
        purpose: &str,
        subject: Uuid,
        (key_id, nonce, ciphertext): (StoredKey, StoredKey, StoredKey),
    ) -> Result<Option<DataKey>, PersonalError> {
        let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
            return Ok(None);
        };
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let aad = data_key_aad(instance.as_uuid().as_bytes(), purpose, subject.as_bytes());
        Ok(Some(DataKey::open_from(&self.keyring, &sealed, &aad)?))
    }
}

fn event_aad(instance: InstanceId, user: AggregateId, event: Uuid) -> Vec<u8> {
    personal_data_aad(
        instance.as_uuid().as_bytes(),
        user.as_uuid().as_bytes(),
        event.as_bytes(),
    )
}

fn snapshot_aad(snapshot: &Snapshot) -> Vec<u8> {
    let record = format!("snapshot/{}", snapshot.sequence);
    personal_data_aad(
        snapshot.instance_id.as_uuid().as_bytes(),
        snapshot.aggregate_id.as_uuid().as_bytes(),
        record.as_bytes(),
    )
}

/// `readable` plus [`SEALED`]: the names of `fields` and their values encrypted as one JSON object.
fn seal_fields(
    key: &DataKey,
    mut readable: Map<String, Value>,
    fields: Map<String, Value>,
    aad: &[u8],
) -> Result<Value, PersonalError> {
    let names: Vec<Value> = fields.keys().map(|k| Value::String(k.clone())).collect();
    let plain = cairn_secrets::Zeroizing::new(
        serde_json::to_vec(&fields).map_err(|e| PersonalError::Malformed(e.to_string()))?,
    );
    let SealedData { nonce, ciphertext } = key.encrypt(&plain, aad)?;
    let mut sealed = Map::new();
    sealed.insert("fields".into(), Value::Array(names));
    sealed.insert("nonce".into(), Value::String(nonce));
    sealed.insert("ciphertext".into(), Value::String(ciphertext));
    readable.insert(SEALED.into(), Value::Object(sealed));
    Ok(Value::Object(readable))
}

/// The inverse of [`seal_fields`].
fn open_fields(key: &DataKey, payload: &Value, aad: &[u8]) -> Result<Value, PersonalError> {
    let object = payload
        .as_object()
        .ok_or_else(|| PersonalError::Malformed("a sealed payload is not an object".into()))?;
    let sealed = object
        .get(SEALED)
        .ok_or_else(|| PersonalError::Malformed("no sealed member".into()))?;
    let data = SealedData {
        nonce: string_member(sealed, "nonce")?,
        ciphertext: string_member(sealed, "ciphertext")?,
    };
    let plain = key.decrypt(&data, aad)?;
    let fields: Map<String, Value> =
        serde_json::from_slice(&plain).map_err(|e| PersonalError::Malformed(e.to_string()))?;
    let mut out: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| k.as_str() != SEALED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(fields);
    Ok(Value::Object(out))
}

fn string_member(sealed: &Value, name: &str) -> Result<String, PersonalError> {
    sealed
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| PersonalError::Malformed(format!("the sealed member has no {name}")))
}

/// Replaces the payload of a user's event, in place: the only rewrite of stored events, for
/// sealing or erasing personal data written before sealing existed.
async fn rewrite_event(
    conn: &mut PgConnection,
    instance: InstanceId,
    user: AggregateId,
    sequence: i64,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE eventstore.events SET payload = $5 \
          WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4",
    )
    .bind(instance.as_uuid())
    .bind(personal::PERSONAL_AGGREGATE)
    .bind(user.as_uuid())
    .bind(sequence)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Destroys every data key of an instance at once (its users' and its blind index's) and drops
/// its user snapshots, in the caller's transaction: every user of the instance is erased. Needs no
/// keyring. Returns how many keys were destroyed.
pub async fn erase_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<u64, sqlx::Error> {
    let erased = sqlx::query(
        "UPDATE eventstore.data_keys SET key_id = NULL, nonce = NULL, ciphertext = NULL, \
                erased_at = statement_timestamp() \
          WHERE instance_id = $1 AND erased_at IS NULL",
    )
    .bind(instance.as_uuid())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM eventstore.snapshots WHERE instance_id = $1 AND aggregate_type = $2")
        .bind(instance.as_uuid())
        .bind(personal::PERSONAL_AGGREGATE)
        .execute(&mut *conn)
        .await?;
    Ok(erased)
}

/// Shows events to a reader outside the service processes (the gRPC event API): sealed personal
/// fields stay sealed, and an erased user's events show their erased form. Needs no keyring.
pub async fn present(conn: &mut PgConnection, events: &mut [StoredEvent]) -> Result<(), PersonalError> {
    let (instances, ids): (Vec<Uuid>, Vec<Uuid>) = events
        .iter()
        .filter(|e| personal::is_sealed(&e.payload))
        .map(|e| (e.instance_id.as_uuid(), e.aggregate_id.as_uuid()))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let live: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT k.instance_id, k.subject_id FROM eventstore.data_keys k \
           JOIN (SELECT DISTINCT i, s FROM unnest($1::uuid[], $2::uuid[]) AS w(i, s)) w \
             ON k.instance_id = w.i AND k.purpose = 'user' AND k.subject_id = w.s \
          WHERE k.erased_at IS NULL",
    )
    .bind(&instances)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let live: std::collections::HashSet<(Uuid, Uuid)> = live.into_iter().collect();
    for event in events.iter_mut().filter(|e| personal::is_sealed(&e.payload)) {
        if !live.contains(&(event.instance_id.as_uuid(), event.aggregate_id.as_uuid())) {
            event.payload = personal::erased_form(&event.payload);
        }
    }
    Ok(())
}
