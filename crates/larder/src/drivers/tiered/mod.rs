//! Tiered stores: a list of stores, nearest first, the last one authoritative; and
//! [`MountStore`], which routes key prefixes to different stores.
//!
//! Writes go to the authoritative tier only, with their preconditions passed through, so they
//! are exactly as atomic as that tier's writes. Only after the authoritative write succeeded do
//! nearer tiers get the new object (write-through, same bytes so same ETag) or lose theirs
//! (invalidation); a nearer tier that fails is invalidated, and if even that fails its copy is
//! never served unrevalidated, because serving a nearer copy needs a record in this store's
//! side table saying the authoritative ETag was seen within the freshness window.
//!
//! Reads: a nearer tier answers only while the key's authoritative metadata was validated
//! within that tier's freshness window and the tier's copy has that same ETag; otherwise the
//! authoritative tier is asked (a `head` to revalidate a nearer copy, or the read itself).
//! Conditions (`If-Match`, `If-None-Match`, dates, `If-Range`) are always decided against the
//! authoritative metadata. Backfill happens only from a complete body that hashed to the
//! authoritative ETag, written with `expected_etag` and `If-None-Match: *`, and never from a
//! range.
//!
//! Replicas: each write or delete publishes the key through an [`Invalidator`] before it
//! returns; other replicas drop their side-table record and nearer copies on receipt.

mod config;
mod invalidate;
mod mount;
mod side_table;

pub use config::{
    open_config, open_config_parts, InvalidationConfig, MountConfig, OpenedConfig, TierConfig,
    TierEntry,
};
#[cfg(feature = "tiered-redis")]
pub use invalidate::RedisInvalidator;
pub use invalidate::{Invalidator, MemoryInvalidator, Message};
pub use mount::MountStore;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::etag::ContentHasher;
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::precondition::Preconditions;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
use side_table::SideTables;

/// Counters of one tier (see [`TierStatsSnapshot`]).
#[derive(Debug, Default)]
struct TierStats {
    hits: Counter,
    misses: Counter,
    backfills: Counter,
    invalidations: Counter,
    stale_reads_refused: Counter,
}

/// The counters of one tier. Hits, misses and stale refusals count reads; backfills and
/// invalidations count writes into the tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStatsSnapshot {
    /// Reads this tier answered.
    pub hits: u64,
    /// Reads this tier could not answer (no copy, or no fresh copy).
    pub misses: u64,
    /// Copies written into this tier after a read of a deeper tier.
    pub backfills: u64,
    /// Copies removed from this tier (after writes, disagreements, or remote invalidations).
    pub invalidations: u64,
    /// Copies found but not served because their ETag disagreed with the authoritative one.
    pub stale_reads_refused: u64,
}

impl TierStats {
    fn snapshot(&self) -> TierStatsSnapshot {
        TierStatsSnapshot {
            hits: self.hits.get(),
            misses: self.misses.get(),
            backfills: self.backfills.get(),
            invalidations: self.invalidations.get(),
            stale_reads_refused: self.stale_reads_refused.get(),
        }
    }
}

/// Stripes of a [`Counter`].
const STRIPES: usize = 8;

/// A counter bumped by every read, from every thread: one cache line per stripe (each thread
/// bumps its own), summed when read, so that threads reading at once do not contend on it.
#[derive(Debug, Default)]
struct Counter([Stripe; STRIPES]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

impl Counter {
    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

fn bump(c: &Counter) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
    c.0[STRIPE.with(|s| *s)].0.fetch_add(1, Ordering::Relaxed);
}

/// One tier of a [`TieredStore`].
#[derive(Clone, Debug)]
pub struct Tier {
    /// The store.
    pub store: Arc<dyn Store>,
    /// How long after a validation against the authoritative tier this tier's copy may be
    /// served without asking it again. Ignored for the authoritative (last) tier.
    pub freshness: Duration,
}

impl Tier {
    /// A tier with the given freshness window.
    pub fn new(store: Arc<dyn Store>, freshness: Duration) -> Self {
        Tier { store, freshness }
    }
}

#[derive(Debug)]
struct Shared {
    tiers: Vec<Tier>,
    stats: Vec<TierStats>,
    /// When each key was last validated against the authoritative tier.
    side: SideTables,
    /// Identifies this replica's own invalidation messages.
    replica_id: String,
    /// Largest object kept in nearer tiers (write-through and backfill).
    max_cached_bytes: u64,
    /// Numbers this replica's invalidation messages.
    seq: AtomicU64,
    /// Acknowledgements counted per message in flight.
    pending: Mutex<HashMap<u64, tokio::sync::watch::Sender<usize>>>,
    /// How long a write waits for every subscriber to acknowledge its invalidation.
    ack_timeout: Duration,
    /// Where writes and deletes are published, if replicas share the authoritative tier.
    invalidator: Option<Arc<dyn Invalidator>>,
}

/// A stack of stores, nearest first, the last one authoritative. See the [module
/// docs](self). Built by [`TieredStore::builder`] (or [`TieredStore::new`] with the default
/// settings); clones share everything.
#[derive(Debug, Clone)]
pub struct TieredStore {
    shared: Arc<Shared>,
}

/// Default [`TieredBuilder::ack_timeout`].
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Default [`TieredBuilder::max_cached_bytes`]: 64 MiB.
pub const DEFAULT_MAX_CACHED_BYTES: u64 = 64 << 20;

/// The settings of a [`TieredStore`], fixed when [`TieredBuilder::build`] makes it (a built
/// store has no setters, so no setting can silently miss a store that is already shared).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> larder::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use larder::drivers::memory::MemoryStore;
/// use larder::tiered::{MemoryInvalidator, Tier, TieredStore};
///
/// let authoritative = Arc::new(MemoryStore::new());
/// let store = TieredStore::builder(vec![
///     Tier::new(Arc::new(MemoryStore::new()), Duration::from_secs(5)),
///     Tier::new(authoritative, Duration::ZERO),
/// ])
/// .max_cached_bytes(1 << 20)
/// .invalidator(MemoryInvalidator::new())
/// .ack_timeout(Duration::from_millis(500))
/// .build()
/// .await?;
/// assert_eq!(store.tiers().len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct TieredBuilder {
    tiers: Vec<Tier>,
    max_cached_bytes: u64,
    ack_timeout: Duration,
    invalidator: Option<Arc<dyn Invalidator>>,
}

impl TieredBuilder {
    /// Limits the objects kept in nearer tiers to `bytes` (bigger ones are only invalidated
    /// there, and read from the authoritative tier). Default [`DEFAULT_MAX_CACHED_BYTES`].
    pub fn max_cached_bytes(mut self, bytes: u64) -> Self {
        self.max_cached_bytes = bytes;
        self
    }

    /// How long a write waits for every subscriber of the invalidation channel to acknowledge
    /// (after invalidating its nearer tiers) before returning anyway. Default
    /// [`DEFAULT_ACK_TIMEOUT`]; used only with an [`invalidator`](Self::invalidator).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Publishes every write and delete through `invalidator`, and invalidates this replica's
    /// nearer tiers on the keys other replicas publish.
    ///
    /// A write returns once every subscription the message reached has acknowledged it (each
    /// replica acknowledges after invalidating), or after the [ack
    /// timeout](Self::ack_timeout): so a read through any replica that started after the write
    /// returned sees the write.
    pub fn invalidator(mut self, invalidator: Arc<dyn Invalidator>) -> Self {
        self.invalidator = Some(invalidator);
        self
    }

    /// The store. With an invalidator, it subscribes before returning, so no message published
    /// after this returns is missed.
    pub async fn build(self) -> Result<TieredStore> {
        let Some(invalidator) = self.invalidator.clone() else {
            return self.assemble();
        };
        let messages = invalidator.subscribe().await?;
        let store = self.assemble()?;
        spawn_subscriber(Arc::downgrade(&store.shared), invalidator, messages);
        Ok(store)
    }

    fn assemble(self) -> Result<TieredStore> {
        let tiers = self.tiers;
        if tiers.is_empty() {
            return Err(Error::InvalidInput(
                "a tiered store needs at least one tier".into(),
            ));
        }
        let stats = tiers.iter().map(|_| TierStats::default()).collect();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        static N: AtomicU64 = AtomicU64::new(0);
        let replica_id = format!(
            "{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Ok(TieredStore {
            shared: Arc::new(Shared {
                tiers,
                stats,
                side: SideTables::default(),
                replica_id,
                max_cached_bytes: self.max_cached_bytes,
                seq: AtomicU64::new(0),
                pending: Mutex::default(),
                ack_timeout: self.ack_timeout,
                invalidator: self.invalidator,
            }),
        })
    }
}

/// Invalidates the nearer tiers of the store behind `weak` on every key another replica
/// publishes, acknowledges every message, and resubscribes (forgetting every validation) when
/// the subscription breaks; ends when the store is dropped.
fn spawn_subscriber(
    weak: std::sync::Weak<Shared>,
    inv: Arc<dyn Invalidator>,
    mut messages: futures::stream::BoxStream<'static, Message>,
) {
    tokio::spawn(async move {
        loop {
            while let Some(msg) = messages.next().await {
                let Some(shared) = weak.upgrade() else {
                    // The store is gone and caches nothing, but the publisher counted this
                    // subscription: acknowledge so it need not wait.
                    if let Message::Key { replica, seq, .. } = msg {
                        let _ = inv.publish(&Message::Ack { replica, seq }.encode()).await;
                    }
                    return;
                };
                match msg {
                    Message::Key { replica, seq, key } => {
                        if replica != shared.replica_id {
                            shared.invalidate_nearer(&key).await;
                        }
                        let ack = Message::Ack { replica, seq }.encode();
                        if let Err(e) = inv.publish(&ack).await {
                            tracing::warn!("tiered: acknowledging an invalidation: {e}");
                        }
                    }
                    Message::Ack { replica, seq } => {
                        if replica == shared.replica_id {
                            if let Some(tx) = shared.pending_lock().get(&seq) {
                                tx.send_modify(|n| *n += 1);
                            }
                        }
                    }
                    // The subscription was interrupted: messages may have been lost, so
                    // nothing this replica saw may be served without revalidation.
                    Message::Gap => shared.side.forget_all(),
                }
            }
            let Some(shared) = weak.upgrade() else { return };
            shared.side.forget_all();
            drop(shared);
            tokio::time::sleep(Duration::from_millis(200)).await;
            match inv.subscribe().await {
                Ok(m) => messages = m,
                Err(e) => tracing::warn!("tiered: resubscribing for invalidations: {e}"),
            }
        }
    });
}

impl TieredStore {
    /// Settings for a tiered store over `tiers` (nearest first, last authoritative).
    pub fn builder(tiers: Vec<Tier>) -> TieredBuilder {
        TieredBuilder {
            tiers,
            max_cached_bytes: DEFAULT_MAX_CACHED_BYTES,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            invalidator: None,
        }
    }

    /// A tiered store over `tiers` (nearest first, last authoritative) with the default
    /// settings and no cross-replica invalidation: [`TieredStore::builder`] for the others.
    pub fn new(tiers: Vec<Tier>) -> Result<Self> {
        Self::builder(tiers).assemble()
    }

    /// Stores nearest first with one freshness window for every nearer tier, default settings.
    pub fn with_stores(stores: Vec<Arc<dyn Store>>, freshness: Duration) -> Result<Self> {
        Self::new(
            stores
                .into_iter()
                .map(|s| Tier::new(s, freshness))
                .collect(),
        )
    }

    /// The tiers, nearest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.shared.tiers
    }

    /// Per-tier counters, nearest first.
    pub fn stats(&self) -> Vec<TierStatsSnapshot> {
        self.shared.stats.iter().map(TierStats::snapshot).collect()
    }

    /// Drops every nearer copy of `key` (the authoritative tier is never touched), and forgets
    /// that it was validated.
    pub async fn invalidate(&self, key: &Key) {
        self.shared.invalidate_nearer(key).await;
    }

    fn auth(&self) -> &Arc<dyn Store> {
        &self.shared.tiers.last().expect("at least one tier").store
    }

    fn nearer(&self) -> usize {
        self.shared.tiers.len() - 1
    }

    /// Publishes the key and waits for every subscription to acknowledge it. Failures are
    /// logged, not returned: the write itself succeeded, and other replicas fall back to their
    /// freshness window.
    async fn publish(&self, key: &Key) {
        let shared = &self.shared;
        let Some(inv) = &shared.invalidator else {
            return;
        };
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = tokio::sync::watch::channel(0usize);
        shared.pending_lock().insert(seq, tx);
        let msg = Message::Key {
            replica: shared.replica_id.clone(),
            seq,
            key: key.clone(),
        };
        match inv.publish(&msg.encode()).await {
            Ok(n) => {
                let acked = rx.wait_for(|acks| *acks >= n);
                if tokio::time::timeout(shared.ack_timeout, acked)
                    .await
                    .is_err()
                {
                    tracing::warn!("tiered: invalidation of {key} not acknowledged by all {n}");
                }
            }
            Err(e) => tracing::warn!("tiered: publishing the invalidation of {key}: {e}"),
        }
        shared.pending_lock().remove(&seq);
    }

    /// Serves from nearer tier `i` using the authoritative metadata `auth`, which is known to be
    /// current. `None`: the tier has no copy with that ETag (it is dropped if it has another).
    async fn serve_from(
        &self,
        i: usize,
        key: &Key,
        opts: &GetOptions,
        auth: &Meta,
    ) -> Result<Option<GetResult>> {
        let (range, tier_opts) = tier_request(opts, auth)?;
        let tier = &self.shared.tiers[i].store;
        let mut r = match tier.get_now(key, tier_opts.as_ref().unwrap_or(opts)) {
            Some(r) => r,
            None => tier.get(key, tier_opts.unwrap_or_default()).await,
        };
        match self.accept(i, key, &mut r, auth, &range) {
            Ok(()) => Ok(r.ok()),
            Err(stale) => {
                if stale {
                    self.shared.drop_copy(i, key).await;
                }
                Ok(None)
            }
        }
    }

    /// Whether tier `i`'s answer `r` to a read whose authoritative metadata is `auth` and
    /// range `range` is this store's answer: `Ok` when it is (`r` is then `Ok`, patched to
    /// the authoritative metadata in place: a result is large, and every move of it a copy),
    /// `Err(stale)` when the tier has no copy of that version (`stale`: it has another one, to
    /// drop).
    fn accept(
        &self,
        i: usize,
        key: &Key,
        r: &mut Result<GetResult>,
        auth: &Meta,
        range: &Option<Range<u64>>,
    ) -> std::result::Result<(), bool> {
        match r {
            Ok(r) if is_copy(r, auth, range) => {
                self.hit(i, r, auth);
                Ok(())
            }
            Ok(_) => {
                bump(&self.shared.stats[i].stale_reads_refused);
                Err(true)
            }
            Err(Error::NotFound { .. }) => Err(false),
            Err(e) => {
                tracing::warn!("tiered: tier {i} read of {key}: {e}");
                Err(false)
            }
        }
    }

    /// Tier `i`'s copy `r` of the version `auth` describes, counted as a hit and patched in
    /// place to the authoritative metadata.
    fn hit(&self, i: usize, r: &mut GetResult, auth: &Meta) {
        bump(&self.shared.stats[i].hits);
        // The authoritative metadata, keeping the key and ETag the tier just built (the same
        // ones: same key, strongly equal ETag) rather than copying them again, and the fields
        // a copy usually has already (written with the same ones) unless they differ.
        let m = &mut r.meta;
        m.size = auth.size;
        m.last_modified = auth.last_modified;
        m.expires_at = auth.expires_at;
        if m.content_type != auth.content_type {
            m.content_type.clone_from(&auth.content_type);
        }
        if !(m.metadata.is_empty() && auth.metadata.is_empty()) && m.metadata != auth.metadata {
            m.metadata.clone_from(&auth.metadata);
        }
    }

    /// A fresh read from tier 0 that tier 0 answers only by awaiting (`auth`, `range` and
    /// `tier_opts` as [`get`](Store::get) decided them).
    async fn get_awaiting_tier0(
        &self,
        key: &Key,
        opts: GetOptions,
        auth: Arc<Meta>,
        range: Option<Range<u64>>,
        tier_opts: Option<GetOptions>,
    ) -> Result<GetResult> {
        let tier_opts = tier_opts.unwrap_or_default();
        let mut r = self.shared.tiers[0].store.get(key, tier_opts).await;
        match self.accept(0, key, &mut r, &auth, &range) {
            Ok(()) => r,
            Err(stale) => self.get_after_miss(stale, key, opts).await,
        }
    }

    /// After nearest tier 0 could not serve a fresh read (`stale`: it had another version),
    /// the deeper tiers.
    async fn get_after_miss(&self, stale: bool, key: &Key, opts: GetOptions) -> Result<GetResult> {
        if stale {
            self.shared.drop_copy(0, key).await;
        }
        bump(&self.shared.stats[0].misses);
        self.get_from(1, vec![0], key, opts).await
    }

    /// A read from nearer tier `start` on, the tiers before it having missed (`missed`).
    async fn get_from(
        &self,
        start: usize,
        mut missed: Vec<usize>,
        key: &Key,
        opts: GetOptions,
    ) -> Result<GetResult> {
        for i in start..self.nearer() {
            if let Some(auth) = self.fresh_for(i, key) {
                if let Some(r) = self.serve_from(i, key, &opts, &auth).await? {
                    return Ok(r);
                }
                bump(&self.shared.stats[i].misses);
                missed.push(i);
                continue;
            }
            // No fresh record: a copy here is served only after the authoritative tier
            // confirms its ETag.
            let copy = match self.shared.tiers[i]
                .store
                .head(key, HeadOptions::default())
                .await
            {
                Ok(m) => m,
                Err(_) => {
                    bump(&self.shared.stats[i].misses);
                    missed.push(i);
                    continue;
                }
            };
            let epoch = self.shared.side.epoch(key);
            let started = side_table::now();
            let auth = match self.auth().head(key, HeadOptions::default()).await {
                Ok(m) => m,
                Err(Error::NotFound { .. }) => {
                    bump(&self.shared.stats[i].stale_reads_refused);
                    self.shared.invalidate_nearer(key).await;
                    return Err(Error::not_found(key));
                }
                Err(e) => return Err(e),
            };
            if auth.etag.strong_eq(&copy.etag) {
                self.shared.side.record(key, epoch, &auth, started);
                if let Some(r) = self.serve_from(i, key, &opts, &auth).await? {
                    return Ok(r);
                }
            } else {
                bump(&self.shared.stats[i].stale_reads_refused);
                self.shared.drop_copy(i, key).await;
            }
            bump(&self.shared.stats[i].misses);
            missed.push(i);
        }
        let epoch = self.shared.side.epoch(key);
        let started = side_table::now();
        let last = self.nearer();
        let r = self.auth().get(key, opts).await?;
        bump(&self.shared.stats[last].hits);
        // Only a whole body is copied nearer; a range never is.
        if r.range.is_some() || missed.is_empty() || r.meta.size > self.shared.max_cached_bytes {
            return Ok(r);
        }
        let backfill = Backfill {
            shared: self.shared.clone(),
            key: key.clone(),
            meta: r.meta.clone(),
            tiers: missed,
            epoch,
            started,
        };
        Ok(GetResult {
            meta: r.meta,
            range: None,
            body: tee(r.body, backfill, self.shared.max_cached_bytes),
        })
    }

    /// The hot read of a key validated within tier 0's window (`auth`, borrowed under the
    /// side table's lock), when it is a plain read (no condition, no range) and tier 0's copy is
    /// that version: served from tier 0's bytes and the authoritative metadata, without tier 0
    /// building metadata of its own to be compared and patched. `None`: anything else, with
    /// nothing counted (the caller goes on to ask tier 0 with `get_now`).
    fn hot_read(&self, key: &Key, opts: &GetOptions, auth: &Meta) -> Option<Result<GetResult>> {
        if !opts.preconditions.is_empty() || opts.range.is_some() {
            return None;
        }
        let data = self.shared.tiers[0]
            .store
            .get_version_now(key, &auth.etag)?;
        bump(&self.shared.stats[0].hits);
        Some(GetResult::from_bytes(auth.clone(), data, opts))
    }

    /// The key's authoritative metadata if validated within tier `i`'s window.
    fn fresh_for(&self, i: usize, key: &Key) -> Option<Arc<Meta>> {
        self.shared.side.fresh(key, self.shared.tiers[i].freshness)
    }
}

impl Shared {
    fn pending_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, tokio::sync::watch::Sender<usize>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes nearer tier `i`'s copy (a missing one is fine).
    async fn drop_copy(&self, i: usize, key: &Key) {
        match self.tiers[i]
            .store
            .delete(key, DeleteOptions::default())
            .await
        {
            Ok(()) => bump(&self.stats[i].invalidations),
            Err(Error::NotFound { .. }) => {}
            // The copy stays, but without a fresh record it is revalidated before any use.
            Err(e) => tracing::warn!("tiered: invalidating {key} in tier {i}: {e}"),
        }
    }

    /// Invalidates every nearer tier, deepest first, so a concurrent read cannot refill a nearer
    /// tier from a deeper one that still has the old copy.
    async fn invalidate_nearer(&self, key: &Key) {
        self.side.forget(key);
        for i in (0..self.tiers.len() - 1).rev() {
            self.drop_copy(i, key).await;
        }
    }
}

/// What a nearer tier is asked for, on a read with `opts` of a key whose authoritative metadata
/// is `auth`: the range to serve, and the tier's options, `None` when they are `opts` as they
/// are (a plain read, the hot path: no options are built and dropped for it). Conditions and
/// If-Range are decided on the authoritative metadata, never the tier's.
fn tier_request(
    opts: &GetOptions,
    auth: &Meta,
) -> Result<(Option<Range<u64>>, Option<GetOptions>)> {
    if opts.preconditions.is_empty() && opts.range.is_none() {
        // Without a range the tier ignores any If-Range: it answers as to the default options.
        return Ok((None, None));
    }
    let range = opts.evaluate(auth)?;
    let tier_opts = GetOptions {
        range: range.as_ref().and(opts.range),
        ..Default::default()
    };
    Ok((range, Some(tier_opts)))
}

/// Whether a nearer tier's answer `r` is the version `auth` describes, served as `range`.
fn is_copy(r: &GetResult, auth: &Meta, range: &Option<Range<u64>>) -> bool {
    r.meta.etag.strong_eq(&auth.etag) && r.range == *range
}

/// The nearer tiers to backfill after a full read, with what is needed to do it.
struct Backfill {
    shared: Arc<Shared>,
    key: Key,
    meta: Meta,
    tiers: Vec<usize>,
    epoch: u64,
    started: side_table::Stamp,
}

impl Backfill {
    /// Writes the complete, verified body into the tiers that missed, only if absent there.
    async fn run(self, chunks: Vec<Bytes>) {
        let ttl = match self.meta.expires_at {
            None => None,
            Some(t) => match t.duration_since(SystemTime::now()) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => return,
            },
        };
        for &i in self.tiers.iter().rev() {
            let store = &self.shared.tiers[i].store;
            let caps = store.capabilities();
            let opts = PutOptions {
                // Never overwrite: a write-through that got there first is newer.
                preconditions: if caps.put_conditions.if_none_match_any {
                    Preconditions::if_absent()
                } else {
                    Preconditions::none()
                },
                ttl: ttl.filter(|_| caps.ttl),
                content_type: self.meta.content_type.clone(),
                metadata: self.meta.metadata.clone(),
                // The nearer tier hashes the body again and refuses it unless it is exactly the
                // authoritative content.
                expected_etag: Some(self.meta.etag.clone()),
            };
            let body = Body::from_stream(futures::stream::iter(
                chunks.clone().into_iter().map(Ok::<_, Error>),
            ));
            match store.put(&self.key, body, opts).await {
                Ok(_) => bump(&self.shared.stats[i].backfills),
                Err(Error::PreconditionFailed { .. }) => {}
                Err(e) => tracing::warn!("tiered: backfilling {} into tier {i}: {e}", self.key),
            }
        }
        if !self
            .shared
            .side
            .record(&self.key, self.epoch, &self.meta, self.started)
        {
            // A write or invalidation raced this read: what was just copied may be old.
            let opts = DeleteOptions {
                preconditions: Preconditions::if_match(self.meta.etag.clone()),
            };
            for &i in self.tiers.iter().rev() {
                let _ = self.shared.tiers[i]
                    .store
                    .delete(&self.key, opts.clone())
                    .await;
            }
        }
    }
}

struct TeeState {
    body: crate::body::ByteStream,
    hasher: ContentHasher,
    chunks: Vec<Bytes>,
    backfill: Option<Backfill>,
    limit: u64,
}

/// Passes the authoritative body through to the reader, hashing it and keeping its chunks;
/// after the last chunk, if the digest is the authoritative ETag, backfills before ending.
fn tee(body: crate::body::ByteStream, backfill: Backfill, limit: u64) -> crate::body::ByteStream {
    let state = TeeState {
        body,
        hasher: ContentHasher::new(),
        chunks: Vec::new(),
        backfill: Some(backfill),
        limit,
    };
    futures::stream::unfold(state, |mut st| async move {
        match st.body.next().await {
            Some(Ok(chunk)) => {
                if st.backfill.is_some() {
                    if st.hasher.size() + chunk.len() as u64 > st.limit {
                        st.backfill = None;
                        st.chunks = Vec::new();
                    } else {
                        st.hasher.update(&chunk);
                        st.chunks.push(chunk.clone());
                    }
                }
                // Backfill as soon as the last byte has arrived: a reader that knows the
                // length (an HTTP response with Content-Length) never polls for the end.
                if st
                    .backfill
                    .as_ref()
                    .is_some_and(|bf| st.hasher.size() == bf.meta.size)
                {
                    st.finish_backfill().await;
                }
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                // A broken body is never cached.
                st.backfill = None;
                st.chunks = Vec::new();
                Some((Err(e), st))
            }
            None => {
                st.finish_backfill().await;
                None
            }
        }
    })
    .boxed()
}

impl TeeState {
    /// Backfills from the chunks kept, if they hash to the authoritative ETag and size.
    async fn finish_backfill(&mut self) {
        if let Some(bf) = self.backfill.take() {
            let (etag, size) = std::mem::take(&mut self.hasher).finish();
            if etag.strong_eq(&bf.meta.etag) && size == bf.meta.size {
                bf.run(std::mem::take(&mut self.chunks)).await;
            }
        }
    }
}

#[async_trait]
impl Store for TieredStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "tiered",
            ..self.auth().capabilities()
        }
    }

    /// Every tier, concurrently; the first failing one is named (`tier 2 of 3 (redis)`).
    async fn check(&self) -> Result<()> {
        let tiers = &self.shared.tiers;
        let results = futures::future::join_all(tiers.iter().map(|t| t.store.check())).await;
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                let name = tiers[i].store.capabilities().name;
                let part = format!("tier {} of {} ({name})", i + 1, tiers.len());
                return Err(crate::PartError::wrap(part, e));
            }
        }
        Ok(())
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        for i in 0..self.nearer() {
            if let Some(meta) = self.fresh_for(i, key) {
                bump(&self.shared.stats[i].hits);
                opts.preconditions.evaluate_read(&meta)?;
                return Ok(Meta::clone(&meta));
            }
            bump(&self.shared.stats[i].misses);
        }
        let epoch = self.shared.side.epoch(key);
        let started = side_table::now();
        match self.auth().head(key, HeadOptions::default()).await {
            Ok(meta) => {
                self.shared.side.record(key, epoch, &meta, started);
                opts.preconditions.evaluate_read(&meta)?;
                Ok(meta)
            }
            Err(e) => Err(e),
        }
    }

    /// The hot read, a fresh copy in the nearest tier that it gives without awaiting, is
    /// decided when `get` is called and answered by a ready future: no state machine is built,
    /// moved or polled around it (a read's future is allocated per call). Everything else is an
    /// async function's future, boxed as `async_trait` would box it.
    fn get<'life0, 'life1, 'async_trait>(
        &'life0 self,
        key: &'life1 Key,
        opts: GetOptions,
    ) -> Pin<Box<dyn Future<Output = Result<GetResult>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if self.nearer() > 0 {
            // Locked while tier 0 answers without awaiting, as in `get_now`.
            let shard = self.shared.side.read_key(key);
            if let Some(auth) = shard.fresh(key, self.shared.tiers[0].freshness) {
                if let Some(r) = self.hot_read(key, &opts, auth) {
                    return Box::pin(std::future::ready(r));
                }
                let (range, tier_opts) = match tier_request(&opts, auth) {
                    Ok(x) => x,
                    Err(e) => return Box::pin(std::future::ready(Err(e))),
                };
                let asked = tier_opts.as_ref().unwrap_or(&opts);
                let Some(mut r) = self.shared.tiers[0].store.get_now(key, asked) else {
                    let auth = auth.clone();
                    drop(shard);
                    return Box::pin(self.get_awaiting_tier0(key, opts, auth, range, tier_opts));
                };
                let accepted = self.accept(0, key, &mut r, auth, &range);
                drop(shard);
                return match accepted {
                    Ok(()) => Box::pin(std::future::ready(r)),
                    Err(stale) => Box::pin(self.get_after_miss(stale, key, opts)),
                };
            }
        }
        Box::pin(self.get_from(0, Vec::new(), key, opts))
    }

    /// The hot read only: a fresh copy in tier 0 that tier 0 can serve without awaiting,
    /// decided exactly as [`get`](Store::get) decides it. Anything else (no fresh record, no
    /// copy or another version in tier 0, a tier that must await) is `None`, with nothing
    /// counted or dropped: `get` then does all of it.
    fn get_now(&self, key: &Key, opts: &GetOptions) -> Option<Result<GetResult>> {
        if self.nearer() == 0 {
            return None;
        }
        // The shard stays read-locked while tier 0 answers (it does not await, and takes no lock
        // of this store's), so the authoritative metadata is borrowed, not counted.
        let shard = self.shared.side.read_key(key);
        let auth = shard.fresh(key, self.shared.tiers[0].freshness)?;
        if let Some(r) = self.hot_read(key, opts, auth) {
            return Some(r);
        }
        let (range, tier_opts) = match tier_request(opts, auth) {
            Ok(x) => x,
            // Decided on the authoritative metadata, as `get` decides it, before any tier.
            Err(e) => return Some(Err(e)),
        };
        // Patched where it lies and returned as it came (each move of a result is a copy).
        let asked = tier_opts.as_ref().unwrap_or(opts);
        let mut answer = self.shared.tiers[0].store.get_now(key, asked);
        match &mut answer {
            Some(Ok(r)) if is_copy(r, auth, &range) => self.hit(0, r, auth),
            _ => return None,
        }
        answer
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        let through = match &body {
            Body::Bytes(b) if (b.len() as u64) <= self.shared.max_cached_bytes => Some(b.clone()),
            _ => None,
        };
        let (content_type, metadata) = (opts.content_type.clone(), opts.metadata.clone());
        // Stop serving nearer copies while the write is in flight.
        self.shared.side.forget(key);
        let res = match self.auth().put(key, body, opts).await {
            Ok(r) => r,
            // These change nothing in the authoritative tier.
            Err(
                e @ (Error::PreconditionFailed { .. }
                | Error::InvalidInput(_)
                | Error::InvalidKey { .. }
                | Error::TooLarge { .. }
                | Error::Unsupported { .. }),
            ) => return Err(e),
            Err(e) => {
                // The write may or may not have happened: no nearer copy may survive.
                self.shared.invalidate_nearer(key).await;
                self.publish(key).await;
                return Err(e);
            }
        };
        let epoch = self.shared.side.forget(key);
        self.publish(key).await;
        let ttl = res
            .meta
            .expires_at
            .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
        let mut all_through = through.is_some();
        for i in (0..self.nearer()).rev() {
            let store = &self.shared.tiers[i].store;
            let caps = store.capabilities();
            let fits = caps.max_object_size.is_none_or(|m| res.meta.size <= m)
                && (ttl.is_none() || caps.ttl)
                && ttl.is_none_or(|t| !t.is_zero());
            let written = match (&through, fits) {
                (Some(data), true) => {
                    let o = PutOptions {
                        ttl,
                        content_type: content_type.clone(),
                        metadata: metadata.clone(),
                        expected_etag: Some(res.meta.etag.clone()),
                        ..Default::default()
                    };
                    match store.put(key, Body::Bytes(data.clone()), o).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!("tiered: write-through of {key} to tier {i}: {e}");
                            false
                        }
                    }
                }
                _ => false,
            };
            if !written {
                all_through = false;
                self.shared.drop_copy(i, key).await;
            }
        }
        if all_through {
            self.shared
                .side
                .record(key, epoch, &res.meta, side_table::now());
        }
        Ok(res)
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        self.shared.side.forget(key);
        let r = self.auth().delete(key, opts).await;
        if matches!(r, Err(Error::PreconditionFailed { .. })) {
            return r;
        }
        // Deleted (or already gone, or unknown): nearer tiers must not keep a copy. Deepest
        // first, so no nearer tier is refilled from a deeper one still holding it.
        self.shared.invalidate_nearer(key).await;
        self.publish(key).await;
        r
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        self.auth().list(opts).await
    }
}
