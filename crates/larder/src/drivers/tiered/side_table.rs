//! What a replica knows about each key: when its authoritative metadata was last validated
//! (the side table, sharded by key), and the cheap monotonic clock that validation is stamped
//! with.
//!
//! A hot read does one keyed hash of the key (the shard and the slot in it come from the same
//! hash), takes one shard's read lock, and reads the coarse clock: no allocation, and no write
//! to a cache line another thread writes. Each shard's lock is itself sharded by thread
//! (`ShardedLock`): a reader writes only its own thread's lock word, so readers on different
//! CPUs never pass a line between them (a writer takes every thread's lock; writes are rare
//! and follow a write to the authoritative tier). The metadata is borrowed under the lock
//! ([`ShardRead`]) rather than counted, for the same reason.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use hashbrown::HashTable;

use crate::clock::{self, CoarseInstant};
use crate::key::Key;
use crate::meta::Meta;

/// Keys the side table holds before it drops those without a fresh validation.
const KEYS: usize = 1 << 16;

/// Shards: reads of different keys rarely meet on one lock.
const SHARDS: usize = 16;

/// A point on the coarse clock ([`crate::clock`]): cheap to read on every hot read.
pub(super) type Stamp = CoarseInstant;

/// Now, on the coarse clock.
pub(super) fn now() -> Stamp {
    clock::now()
}

/// Whether something stamped `seen` (by [`now`], before the validation it records) is still
/// within `window`, on a clock that lags by up to `lag` nanoseconds. Conservative: `seen` is at
/// or before the true time of the validation, and the lag is added to the time elapsed, so a
/// copy is never served past its window (at worst it is revalidated one clock tick early). A
/// zero window is never fresh.
fn within(seen: Stamp, window: Duration, lag: u64) -> bool {
    let elapsed = now().nanos_since(seen);
    u128::from(elapsed) + u128::from(lag) < window.as_nanos()
}

/// What this replica knows about a key.
#[derive(Debug)]
struct KeyState {
    key: Key,
    /// Renewed (from [`SideTables::epochs`]) by every write, delete and invalidation of the
    /// key, so that a read that began before one does not record what it saw as fresh.
    epoch: u64,
    /// The authoritative metadata and when it was seen.
    /// Shared (`Arc`) so a hot read takes it without copying under the lock.
    fresh: Option<(Arc<Meta>, Stamp)>,
}

/// One shard, on cache lines of its own (its table is read by every thread, and must not
/// share a line with a neighbour's lock words).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(ShardedLock<Table>);

#[derive(Debug, Default)]
struct Table {
    keys: HashTable<KeyState>,
    /// The epoch of every key not in `keys`. Set to a new epoch whenever keys are dropped from
    /// the table, so a read that began before the drop cannot record.
    floor: u64,
}

/// The side table of a tiered store: when each key was last validated against the
/// authoritative tier, and the key's epoch.
#[derive(Debug)]
pub(super) struct SideTables {
    shards: Box<[Shard]>,
    /// Keyed with a random seed per store (keys are chosen by users: a fixed hash would let
    /// them pile keys into one slot).
    hasher: foldhash::fast::RandomState,
    /// Source of epochs: only grows.
    epochs: AtomicU64,
    /// How far the clock may lag, in nanoseconds ([`clock::resolution`], read once).
    lag: u64,
}

/// A key's shard, read-locked ([`SideTables::read_key`]): what it holds about the key is
/// borrowed while it lives. Hold it only for work that does not await, and take no other lock
/// of this table meanwhile.
pub(super) struct ShardRead<'a> {
    table: ShardedLockReadGuard<'a, Table>,
    hash: u64,
    lag: u64,
}

impl ShardRead<'_> {
    /// The key's authoritative metadata, if it was validated within `window` and has not
    /// expired (`key`: the one this shard was locked for).
    pub(super) fn fresh(&self, key: &Key, window: Duration) -> Option<&Arc<Meta>> {
        let s = self.table.keys.find(self.hash, |s| s.key == *key)?;
        let (meta, seen) = s.fresh.as_ref()?;
        // The wall clock is read only for objects with an expiry.
        let expired = meta.expires_at.is_some_and(|_| meta.is_expired());
        (within(*seen, window, self.lag) && !expired).then_some(meta)
    }
}

impl Default for SideTables {
    fn default() -> Self {
        SideTables {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            epochs: AtomicU64::new(0),
            lag: u64::try_from(clock::resolution().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

impl SideTables {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key.as_str())
    }

    /// The shard of a key's hash. The table inside uses the low bits (the slot) and the top
    /// seven (the tag), so the shard is taken from bits in between.
    fn shard(&self, hash: u64) -> &ShardedLock<Table> {
        &self.shards[(hash >> 32) as usize % SHARDS].0
    }

    fn read(&self, hash: u64) -> ShardedLockReadGuard<'_, Table> {
        // Every change under this lock is a single assignment: a poisoned lock is consistent.
        self.shard(hash).read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self, hash: u64) -> ShardedLockWriteGuard<'_, Table> {
        self.shard(hash).write().unwrap_or_else(|p| p.into_inner())
    }

    /// A new epoch, different from every one handed out before.
    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The key's shard, read-locked, to ask [`ShardRead::fresh`].
    pub(super) fn read_key(&self, key: &Key) -> ShardRead<'_> {
        let hash = self.hash(key);
        ShardRead {
            table: self.read(hash),
            hash,
            lag: self.lag,
        }
    }

    /// The key's authoritative metadata, if it was validated within `window` and has not
    /// expired: [`ShardRead::fresh`], kept past the lock.
    pub(super) fn fresh(&self, key: &Key, window: Duration) -> Option<Arc<Meta>> {
        self.read_key(key).fresh(key, window).cloned()
    }

    /// The key's current epoch: pass it to [`record`](Self::record) after reading the
    /// authoritative tier.
    pub(super) fn epoch(&self, key: &Key) -> u64 {
        let hash = self.hash(key);
        let t = self.read(hash);
        t.keys
            .find(hash, |s| s.key == *key)
            .map_or(t.floor, |s| s.epoch)
    }

    /// Forgets the key's validation and renews its epoch; returns the new epoch.
    pub(super) fn forget(&self, key: &Key) -> u64 {
        let hash = self.hash(key);
        let mut t = self.lock(hash);
        let epoch = self.next_epoch();
        let s = self.state(&mut t, hash, key);
        s.epoch = epoch;
        s.fresh = None;
        epoch
    }

    /// Forgets every validation (nothing is served from a nearer tier before it is
    /// revalidated), and renews every epoch.
    pub(super) fn forget_all(&self) {
        for shard in self.shards.iter() {
            let mut t = shard.0.write().unwrap_or_else(|p| p.into_inner());
            t.floor = self.next_epoch();
            t.keys.clear();
        }
    }

    /// Records `meta` as the validated authoritative metadata, seen at `seen`, unless the key
    /// changed since `epoch`. Returns whether it was recorded.
    pub(super) fn record(&self, key: &Key, epoch: u64, meta: &Meta, seen: Stamp) -> bool {
        let hash = self.hash(key);
        let mut t = self.lock(hash);
        let s = self.state(&mut t, hash, key);
        if s.epoch != epoch {
            return false;
        }
        s.fresh = Some((Arc::new(meta.clone()), seen));
        true
    }

    /// The key's entry in its shard `t`, added (with the shard's floor epoch) if absent.
    fn state<'t>(&self, t: &'t mut Table, hash: u64, key: &Key) -> &'t mut KeyState {
        let present = t.keys.find(hash, |s| s.key == *key).is_some();
        if !present && t.keys.len() >= KEYS / SHARDS {
            self.prune(t);
        }
        let floor = t.floor;
        t.keys
            .entry(hash, |s| s.key == *key, |s| self.hash(&s.key))
            .or_insert_with(|| KeyState {
                key: key.clone(),
                epoch: floor,
                fresh: None,
            })
            .into_mut()
    }

    /// Drops the keys of a full shard that have no fresh validation (all of them if most do).
    fn prune(&self, t: &mut Table) {
        t.floor = self.next_epoch();
        t.keys
            .retain(|s| s.fresh.as_ref().is_some_and(|(m, _)| !m.is_expired()));
        if t.keys.len() >= KEYS / SHARDS / 2 {
            // Mostly fresh: forget them all (they are revalidated on their next read).
            t.keys.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_extends_a_window() {
        let lag = u64::try_from(clock::resolution().as_nanos()).unwrap_or(u64::MAX);
        let seen = now();
        assert!(
            !within(seen, Duration::ZERO, lag),
            "a zero window is never fresh"
        );
        assert!(within(seen, Duration::from_secs(60), lag));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !within(seen, Duration::from_millis(30), lag),
            "served past its window"
        );
    }

    #[test]
    fn full_shards_drop_stale_keys_and_renew_the_floor() {
        let t = SideTables::default();
        let keys: Vec<Key> = (0..KEYS * 2)
            .map(|i| Key::new(format!("k{i}")).unwrap())
            .collect();
        let epoch = t.epoch(&keys[0]);
        for k in &keys {
            t.forget(k);
        }
        let held: usize = t
            .shards
            .iter()
            .map(|s| s.0.read().unwrap().keys.len())
            .sum();
        assert!(held <= KEYS, "{held} keys held");
        // The first key may have been dropped, but never back to the epoch it had.
        assert_ne!(t.epoch(&keys[0]), epoch);
    }
}
