//! Leases on (projection, instance) in `projection_locks`, and how replicas share them.
//!
//! Every replica heartbeats into `projections.projector_replicas`. The live replicas (heartbeat
//! within the TTL) agree, by rendezvous hashing capped at a fair share ([`assign`]), on which of
//! them should own each key; a replica
//! takes the keys it should own and gives back keys it holds that another live replica should own.
//! A lease is taken with one upsert that succeeds only on a free or expired row or the replica's
//! own, renewed on a timer for all held keys at once, and checked by every batch transaction
//! (`worker::step`'s fencing). Expiry is judged by PostgreSQL's clock.

use cairn_domain::InstanceId;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// One replica's view of the lease tables.
#[derive(Clone, Debug)]
pub struct Leases {
    pool: PgPool,
    owner: Uuid,
    ttl: Duration,
}

/// A (projection, instance) pair.
pub type Key = (String, InstanceId);

impl Leases {
    /// The lease handle of replica `owner`.
    pub fn new(pool: PgPool, owner: Uuid, ttl: Duration) -> Self {
        Self { pool, owner, ttl }
    }

    /// This replica's id.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Records that this replica is alive and runs `projections`; returns, per projection name,
    /// the live replicas that run it, sorted.
    pub async fn heartbeat(&self, projections: &[&str]) -> Result<HashMap<String, Vec<Uuid>>, sqlx::Error> {
        sqlx::query(
            "INSERT INTO projections.projector_replicas (owner_id, projections, started_at, heartbeat_at) \
             VALUES ($1, $2, clock_timestamp(), clock_timestamp()) \
             ON CONFLICT (owner_id) DO UPDATE SET heartbeat_at = clock_timestamp(), projections = EXCLUDED.projections",
        )
        .bind(self.owner)
        .bind(projections)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT owner_id, projections FROM projections.projector_replicas \
             WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)",
        )
        .bind(self.ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut live: HashMap<String, Vec<Uuid>> = HashMap::new();
        for row in rows {
            let owner: Uuid = row.try_get(0)?;
            let names: Vec<String> = row.try_get(1)?;
            for name in names {
                live.entry(name).or_default().push(owner);
            }
        }
        live.values_mut().for_each(|owners| owners.sort());
        Ok(live)
    }

    /// Takes (or renews) one lease; true when this replica holds it afterwards.
    pub async fn acquire(&self, projection: &str, instance: InstanceId) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO projection_locks (projection_name, instance_id, owner_id, acquired_at, expires_at) \
             VALUES ($1, $2, $3, clock_timestamp(), clock_timestamp() + make_interval(secs => $4)) \
             ON CONFLICT (projection_name, instance_id) DO UPDATE \
               SET owner_id = EXCLUDED.owner_id, expires_at = EXCLUDED.expires_at, \
                   acquired_at = CASE WHEN projection_locks.owner_id = EXCLUDED.owner_id \
                                      THEN projection_locks.acquired_at ELSE EXCLUDED.acquired_at END \
             WHERE projection_locks.owner_id = EXCLUDED.owner_id OR projection_locks.expires_at < clock_timestamp() \
             RETURNING owner_id",
        )
        .bind(projection)
        .bind(instance.as_uuid())
        .bind(self.owner)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Extends every lease this replica still holds; returns the keys it holds.
    pub async fn renew_all(&self) -> Result<HashSet<Key>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE projection_locks SET expires_at = clock_timestamp() + make_interval(secs => $2) \
             WHERE owner_id = $1 AND expires_at > clock_timestamp() \
             RETURNING projection_name, instance_id",
        )
        .bind(self.owner)
        .bind(self.ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, InstanceId::from_uuid(row.try_get(1)?))))
            .collect()
    }

    /// Gives one lease back so its rightful owner can take it at once.
    pub async fn release(&self, projection: &str, instance: InstanceId) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM projection_locks WHERE projection_name = $1 AND instance_id = $2 AND owner_id = $3",
        )
        .bind(projection)
        .bind(instance.as_uuid())
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives every lease back and leaves the replica set (graceful shutdown).
    pub async fn leave(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM projection_locks WHERE owner_id = $1")
            .bind(self.owner)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM projections.projector_replicas WHERE owner_id = $1")
            .bind(self.owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The live replica that should own `key`: the one with the highest hash of (replica, key). Every
/// replica computes the same answer from the same live set, and when a replica joins or leaves only
/// the keys it wins or held move.
pub fn rendezvous(live: &[Uuid], projection: &str, instance: InstanceId) -> Option<Uuid> {
    live.iter()
        .copied()
        .max_by_key(|owner| score(*owner, projection, instance))
}

/// The owner of each of `instances` (for one projection) among `live`: every key goes to the
/// replica that rendezvous hashing prefers, unless that replica already holds its fair share
/// (`ceil(keys / replicas)`), in which case it goes to the next preferred. Every replica computes
/// the same answer from the same live set and keys, no replica holds more than its share, and a
/// replica joining or leaving moves few keys.
pub fn assign(live: &[Uuid], projection: &str, instances: &[InstanceId]) -> HashMap<InstanceId, Uuid> {
    let mut out = HashMap::new();
    if live.is_empty() {
        return out;
    }
    let cap = instances.len().div_ceil(live.len());
    let mut sorted: Vec<InstanceId> = instances.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut held: HashMap<Uuid, usize> = HashMap::new();
    for instance in sorted {
        let mut ranked: Vec<(u64, Uuid)> = live
            .iter()
            .map(|owner| (score(*owner, projection, instance), *owner))
            .collect();
        ranked.sort_by(|a, b| b.cmp(a));
        if let Some((_, owner)) = ranked
            .into_iter()
            .find(|(_, owner)| held.get(owner).copied().unwrap_or(0) < cap)
        {
            *held.entry(owner).or_default() += 1;
            out.insert(instance, owner);
        }
    }
    out
}

fn score(owner: Uuid, projection: &str, instance: InstanceId) -> u64 {
    let mut hash = Fnv::default();
    hash.write(owner.as_bytes());
    hash.write(projection.as_bytes());
    hash.write(instance.as_uuid().as_bytes());
    hash.finish()
}

/// FNV-1a with a final avalanche, stable across processes and versions (unlike `DefaultHasher`).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        // splitmix64's finaliser spreads FNV's weak low bits.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_keys_evenly_and_moves_few_on_change() {
        let live: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let instances: Vec<InstanceId> = (0..300).map(|_| InstanceId::new()).collect();
        let mut counts = std::collections::HashMap::new();
        for instance in &instances {
            for projection in ["users", "groups", "orgs"] {
                *counts
                    .entry(rendezvous(&live, projection, *instance).unwrap())
                    .or_insert(0) += 1;
            }
        }
        for owner in &live {
            let share = counts[owner];
            assert!((200..=400).contains(&share), "uneven share {share} of 900");
        }
        // Removing one replica moves only its keys.
        let survivors = &live[..2];
        for instance in &instances {
            let before = rendezvous(&live, "users", *instance).unwrap();
            let after = rendezvous(survivors, "users", *instance).unwrap();
            if before != live[2] {
                assert_eq!(before, after, "a key of a surviving replica moved");
            }
        }
        assert_eq!(rendezvous(&[], "users", instances[0]), None);
    }

    #[test]
    fn assignment_caps_every_replica_at_its_fair_share() {
        for trial in 0..200 {
            let live: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
            let instances: Vec<InstanceId> = (0..30).map(|_| InstanceId::new()).collect();
            let assignment = assign(&live, "users", &instances);
            assert_eq!(assignment.len(), 30, "trial {trial}: every key has an owner");
            let mut counts: HashMap<Uuid, usize> = HashMap::new();
            for owner in assignment.values() {
                *counts.entry(*owner).or_default() += 1;
            }
            assert!(counts.values().all(|n| *n <= 10), "trial {trial}: {counts:?}");
            // Deterministic: the same inputs in another order give the same answer.
            let mut shuffled = instances.clone();
            shuffled.reverse();
            assert_eq!(assign(&live, "users", &shuffled), assignment);
        }
    }
}
