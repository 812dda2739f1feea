//! A store in a NATS JetStream key-value bucket.
//!
//! URL: `nats://[user:pass@]host:port?bucket=larder&replicas=1&timeout_ms=5000&connect_timeout_ms=5000&tls=true`
//! (`tls=true` requires TLS, over rustls). `timeout_ms` bounds each request to the server (a
//! read, a publish's acknowledgement; default 5 s), `connect_timeout_ms` each connection
//! attempt (default 5 s): while the server is down or hung, requests fail within them with a
//! retryable error, and the client reconnects in the background. The bucket
//! is created if missing (a KV bucket: stream `KV_<bucket>`, history 1, file storage,
//! `replicas` copies); an existing bucket is used as it is.
//!
//! # Layout
//!
//! One KV entry per object, an ordinary KV entry that any NATS client can read: the value is
//! the body, and the metadata is in the message header `Larder-Meta`, so a listing reads
//! headers only. A Larder key becomes a KV key segment by segment, joined by `.` (NATS's token
//! separator, so a listing can filter on whole leading segments): bytes `A-Z a-z 0-9 - _`
//! stay, every other byte is `=XX` (upper-case hex). The encoding is reversible and the
//! encoded key uses only characters NATS KV allows.
//!
//! The header is compact text: `1 <etag> <modified_ms>`, then, each only when set,
//! ` e<expires_ms>`, ` t<content type>` and ` m<name>=<value>` per user metadata entry (`%XX`
//! escapes for `%`, `=`, whitespace and controls); the key and the size are the subject's and
//! the payload's, not repeated. Earlier versions wrote it as [`Meta::encode`] JSON (about twice
//! as long; the NATS client checks and copies every header of every message): objects in that
//! form are still read, listed, replaced and deleted, and their next write stores the compact
//! form. Code from before the compact form can't read an object written since (its reads and
//! writes of it fail with a `Backend` error, its listings skip it): don't run such code on a
//! bucket this version writes.
//!
//! # Atomicity
//!
//! Every put and delete is a compare-and-swap on the KV revision (the stream sequence of the
//! key's last message), checked by the JetStream server: read the key's last message (see
//! Reads below), decide with
//! [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) on its meta (a
//! delete marker or an expired object is "no object"), then publish with `Nats-Expected-Last-Subject-Sequence` set
//! to that revision (0 when the key never existed). If another write landed in between, the
//! server refuses the publish (wrong last sequence) and the driver reads and decides again, so a
//! write only ever lands on the version it was decided on; a conditional write is never
//! re-sent without re-reading. This holds for every client of the bucket:
//! [`AtomicScope::Cluster`]. Every condition on put and delete is supported, and unconditional
//! puts use the same loop (so `created` is exact).
//!
//! A delete publishes a KV delete marker (`KV-Operation: DEL`) with the same expected revision.
//!
//! Each store remembers the last revision (and meta) it read or wrote of recently used keys.
//! A write first decides on that remembered state and publishes with its revision: the server
//! accepts it only if the key is still at exactly that revision, which is the state decided on
//! (a message never changes), so this is as atomic as deciding on a fresh read. If the
//! remembered state is stale (the publish is refused, or the conditions fail on it), the write
//! decides again on a state the server confirmed: when a refusal names the key's last revision
//! (`wrong last sequence: N`) and this store remembers revision N or a later one (another
//! write through this store landed it), that remembered state, which was current at some
//! instant of this write; otherwise the key read now. Only a decision on a confirmed state
//! answers 412. A read-modify-write (`get`, then `put` with `If-Match`) so costs two round
//! trips, not three, and a lost race among writers of one store one more (the refusal), as in
//! the KV client's own update loop. (Revisions are stream sequences: deleting the bucket's
//! stream and recreating it under running stores restarts them, so a remembered revision could
//! then name another message; don't recreate a bucket under live stores.)
//!
//! # Reads
//!
//! A read fetches the key's last message whole (meta and body are one message, so always of
//! one version); when the store remembers the key at the revision read, the meta is taken from
//! memory instead of decoding the header again (a message never changes). On a bucket with
//! one replica it is a direct get (`$JS.API.DIRECT.GET`, as the KV client reads): the one
//! server holding the stream answers it from the stream's store, so it sees every
//! acknowledged write. With more replicas a direct get may be answered by a
//! follower that has not caught up, so reads go to the stream leader's message-get API instead
//! (a JSON reply, slower). A mirror of the bucket's stream created with `mirror_direct` would
//! answer direct gets as well, and may lag: don't create one for a bucket a store writes.
//!
//! Durability is the bucket's: `replicas=1` is one server's disk; 3 or 5 replicate through
//! JetStream's Raft, and a write is acknowledged once a quorum has it.
//!
//! # TTL
//!
//! The installed server line this was built against (2.9) has no per-message TTL (that came in
//! 2.11) and a bucket's `max_age` is one TTL for every key, so `expires_at` is kept in the meta:
//! an expired object reads as `NotFound`, is absent for conditions (a create succeeds over it),
//! and is not listed. Its bytes stay in the bucket until the key is written or deleted again;
//! a read that meets an expired object deletes it in the background, conditionally on its
//! revision (so never a newer version).
//!
//! # Costs and limits
//!
//! - Largest object: the server's `max_payload` (1 MiB by default, headers included) less
//!   [`HEADER_RESERVE`] for the headers; larger bodies are `TooLarge`, metadata that does not
//!   fit the reserve is `InvalidInput`.
//! - Listing: an ordered, headers-only consumer over the bucket's last message per key, filtered
//!   on the prefix's complete leading segments, then sorted: a page costs
//!   `O(keys under those segments)` (a prefix with no `/` reads every key of the bucket).
//! - Reads and writes are one message each; a CAS costs a read and a publish, plus one more of
//!   each per lost race. `head` and the read before a write fetch the whole message (see
//!   Reads), at most `max_payload`.
//! - An entry another KV client wrote at an encoded key (no `Larder-Meta` header) is not an
//!   object: listings skip it, reads and writes of that key fail with a `Backend` error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::{HeaderName, HeaderValue, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::Meta;
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Bytes of `max_payload` kept for the message headers (the metadata among them).
pub const HEADER_RESERVE: u64 = 8 << 10;

/// The header carrying the object's metadata.
pub const META_HEADER: &str = "Larder-Meta";

/// Default timeout of one request (read, publish acknowledgement).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on one connection attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

mod header;

/// Remembered revisions: key → (revision, meta at that revision, `None` for no object).
type Revisions = HashMap<Key, (u64, Option<Meta>)>;

/// Keys whose last seen revision is remembered (the map is cleared when it is full).
const REVISION_CACHE: usize = 4096;

/// A write that lost this many races in a row gives up with a retryable error.
const MAX_ATTEMPTS: u32 = 1000;

// Header names from static text: a name given as `&str` is validated, matched against the
// standard names and copied on every insert and lookup.
fn kv_operation() -> HeaderName {
    HeaderName::from_static("KV-Operation")
}

fn meta_header() -> HeaderName {
    HeaderName::from_static(META_HEADER)
}

/// The payload's size, on a message of a headers-only consumer.
fn msg_size() -> HeaderName {
    HeaderName::from_static("Nats-Msg-Size")
}

/// Encodes a Larder key as a NATS KV key (see the [module docs](self)).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    push_encoded_key(key, &mut out);
    out
}

/// Appends [`encode_key`]`(key)` to `out`.
fn push_encoded_key(key: &str, out: &mut String) {
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        encode_segment(seg, out);
    }
}

/// The bytes a key segment keeps as they are: `A-Z a-z 0-9 - _` (a table: every read and
/// write encodes its key, and a lookup is one load where the tests were several branches).
const KEPT: [bool; 256] = {
    let mut kept = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        kept[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    kept
};

fn encode_segment(seg: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Runs of kept bytes are copied whole, not a char at a time (every read and write builds
    // a subject). Kept bytes are ASCII, so a run starts and ends on char boundaries.
    let mut run = 0;
    for (i, &b) in seg.as_bytes().iter().enumerate() {
        if !KEPT[usize::from(b)] {
            if run < i {
                out.push_str(&seg[run..i]);
            }
            out.push('=');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
            run = i + 1;
        }
    }
    if run < seg.len() {
        out.push_str(&seg[run..]);
    }
}

/// The inverse of [`encode_key`]; `None` for a KV key this encoding never makes.
pub fn decode_key(encoded: &str) -> Option<String> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'.' => out.push(b'/'),
            b'=' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// A store in a NATS JetStream KV bucket. See the [module docs](self).
#[derive(Clone)]
pub struct NatsStore {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    bucket: String,
    /// `$KV.<bucket>.`
    subject_prefix: String,
    max_object_size: u64,
    /// Reads by direct get (the bucket has one replica and allows direct gets).
    direct_reads: bool,
    /// The last revision seen of recently used keys, with its meta (`None`: no object).
    revisions: Arc<Mutex<Revisions>>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bucket names the store; the rest is the connection and a cache.
        write!(f, "NatsStore({:?})", self.bucket)
    }
}

/// The headers of a KV delete marker.
fn delete_marker() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(kv_operation(), "DEL");
    headers
}

/// What a write decides on.
#[derive(Clone, Copy, Debug)]
enum Basis {
    /// The remembered state of the key if there is one (it may be stale: a decision against
    /// it is not an answer), else a fresh read.
    Remembered,
    /// The server refused a publish saying the key was at this revision: the remembered state
    /// if it is at this revision or later (current at some instant of this write, a message
    /// never changes), else a fresh read.
    AtLeast(u64),
    /// A fresh read.
    Fresh,
}

/// The outcome of a revision-checked publish.
enum Published {
    /// Stored, at this revision.
    At(u64),
    /// Refused: the key was at another revision (the one the server named, if it did).
    Refused(Option<u64>),
}

/// The last message of a key: its revision and, when it is a live object, its meta and body.
struct Latest {
    revision: u64,
    current: Option<(Meta, Bytes)>,
    /// The object expired (counts as absent).
    expired: bool,
}

fn transient(what: &str, e: impl std::fmt::Display) -> Error {
    Error::transient(format!("nats {what}: {e}"))
}

fn permanent(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("nats {what}: {e}"))
}

fn is_deleted(headers: &HeaderMap) -> bool {
    headers
        .get(kv_operation())
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}

/// The meta of the object at `key` (made only when the header does not carry it) with `size`
/// bytes, from the message's headers.
fn meta_of(
    headers: &HeaderMap,
    subject: &str,
    key: impl FnOnce() -> Result<Key>,
    size: u64,
) -> Result<Meta> {
    let raw = headers
        .get(meta_header())
        .ok_or_else(|| permanent("entry", format!("{subject} has no {META_HEADER} header")))?;
    header::decode(raw.as_str(), key, size)
}

/// Settings of a [`NatsStore`].
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// The server: `nats://[user:pass@]host:port`.
    pub server: String,
    /// The KV bucket (letters, digits, `-`, `_`; default `larder`), created if missing.
    pub bucket: String,
    /// Copies of a bucket this store creates (1 to 5; default 1).
    pub replicas: usize,
    /// Bound on each request to the server (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Bound on the connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Require TLS (over rustls; default `false`).
    pub tls: bool,
}

impl Default for NatsConfig {
    /// A server on `nats://127.0.0.1:4222`, bucket `larder`, one replica, default timeouts.
    fn default() -> Self {
        NatsConfig {
            server: "nats://127.0.0.1:4222".into(),
            bucket: "larder".into(),
            replicas: 1,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: false,
        }
    }
}

impl NatsConfig {
    /// From a store URL (see the [module docs](self) for its options).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut server = crate::open::parse_store_url(url, "nats store", &["nats"])?;
        let options: Vec<(String, String)> = server.query_pairs().into_owned().collect();
        server.set_query(None);
        let mut config = NatsConfig {
            server: server.into(),
            ..NatsConfig::default()
        };
        for (k, v) in options {
            let bad = || Error::InvalidInput(format!("nats store: {k}={v}"));
            let ms = |v: &str| v.parse().map(Duration::from_millis).map_err(|_| bad());
            match k.as_str() {
                "bucket" => config.bucket = v.clone(),
                "replicas" => config.replicas = v.parse().map_err(|_| bad())?,
                "timeout_ms" => config.timeout = ms(&v)?,
                "connect_timeout_ms" => config.connect_timeout = ms(&v)?,
                "tls" => config.tls = v.parse().map_err(|_| bad())?,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "nats store: unknown option {k}"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Refuses a bucket name NATS does not allow, or a replica count outside 1 to 5.
    fn check(&self) -> Result<()> {
        let bucket = &self.bucket;
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidInput(format!(
                "nats store: bucket {bucket:?} must be letters, digits, '-' or '_'"
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::InvalidInput(format!(
                "nats store: replicas={} (1 to 5)",
                self.replicas
            )));
        }
        Ok(())
    }
}

impl NatsStore {
    /// Connects to the server in `config`, creating the bucket if it is missing.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::nats::{NatsConfig, NatsStore};
    ///
    /// let store = NatsStore::open(NatsConfig {
    ///     server: "nats://127.0.0.1:4222".into(),
    ///     bucket: "myapp".into(),
    ///     replicas: 3,
    ///     ..NatsConfig::default()
    /// })
    /// .await?;
    /// assert_eq!(store.bucket(), "myapp");
    /// # Ok(()) }
    /// ```
    pub async fn open(config: NatsConfig) -> Result<Self> {
        config.check()?;
        let NatsConfig {
            server,
            bucket,
            replicas,
            timeout,
            connect_timeout,
            tls,
        } = config;
        crate::drivers::tls::ensure_crypto_provider();
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(timeout))
            .connection_timeout(connect_timeout)
            .require_tls(tls)
            .connect(server.as_str())
            .await
            .map_err(|e| transient("connect", e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        // The bucket's stream, made as `create_key_value` makes it (so KV clients and tools see
        // an ordinary bucket), but directly: the client's account-info check that precedes
        // `create_key_value` cannot parse a 2.9 server's reply.
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("Larder objects".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| permanent("opening or creating the bucket", e))?;
        let info = &stream.cached_info().config;
        let direct_reads = info.allow_direct && info.num_replicas <= 1;
        let max_payload = client.server_info().max_payload as u64;
        if max_payload <= HEADER_RESERVE {
            return Err(permanent(
                "server",
                format!("max_payload {max_payload} leaves no room for a body"),
            ));
        }
        Ok(NatsStore {
            js,
            stream,
            subject_prefix: format!("$KV.{bucket}."),
            bucket,
            max_object_size: max_payload - HEADER_RESERVE,
            direct_reads,
            revisions: Arc::default(),
        })
    }

    /// Connects to the server a store URL names, as [`NatsConfig::from_url`] reads it.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::nats::NatsStore;
    ///
    /// let store = NatsStore::from_url("nats://127.0.0.1:4222?bucket=myapp&timeout_ms=2000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(NatsConfig::from_url(url)?).await
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Test seam (feature `test-util`): this store reading from the stream leader, as it does
    /// on a bucket with more than one replica, even if the bucket has one.
    #[cfg(any(test, feature = "test-util"))]
    pub fn reading_from_the_leader(self) -> Self {
        NatsStore {
            direct_reads: false,
            ..self
        }
    }

    fn subject(&self, key: &Key) -> String {
        let mut subject = String::with_capacity(self.subject_prefix.len() + key.as_str().len());
        subject.push_str(&self.subject_prefix);
        push_encoded_key(key.as_str(), &mut subject);
        subject
    }

    /// The Larder key of a message's subject in this bucket.
    fn key_of(&self, subject: &str) -> Result<Key> {
        subject
            .strip_prefix(&self.subject_prefix)
            .and_then(decode_key)
            .ok_or_else(|| permanent("entry", format!("{subject} is not a Larder key")))
            .and_then(Key::new)
    }

    /// Reads the key's last message, and remembers its revision.
    async fn latest(&self, key: &Key) -> Result<Latest> {
        let gone = |revision, expired| Latest {
            revision,
            current: None,
            expired,
        };
        let Some(msg) = self.read_last(key).await? else {
            self.remember(key, 0, None);
            return Ok(gone(0, false));
        };
        let revision = msg.sequence;
        if is_deleted(&msg.headers) {
            self.remember(key, revision, None);
            return Ok(gone(revision, false));
        }
        // A message never changes: the meta remembered at this very revision is the one it
        // carries (decoding it again was 8 % of a read-modify-write's client instructions).
        let (meta, known) = match self.remembered_meta(key, revision) {
            Some(meta) => (meta, true),
            None => {
                let size = msg.payload.len() as u64;
                (
                    meta_of(&msg.headers, &msg.subject, || Ok(key.clone()), size)?,
                    false,
                )
            }
        };
        if meta.is_expired() {
            self.remember(key, revision, None);
            return Ok(gone(revision, true));
        }
        if meta.size != msg.payload.len() as u64 {
            return Err(permanent(
                "entry",
                format!(
                    "{key} has {} bytes where its meta says {}",
                    msg.payload.len(),
                    meta.size
                ),
            ));
        }
        if !known {
            self.remember(key, revision, Some(meta.clone()));
        }
        Ok(Latest {
            revision,
            current: Some((meta, msg.payload)),
            expired: false,
        })
    }

    /// The meta remembered of `key` at exactly `revision`, if any.
    fn remembered_meta(&self, key: &Key, revision: u64) -> Option<Meta> {
        let map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((seen, Some(meta))) if *seen == revision => Some(meta.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: &Key, revision: u64, meta: Option<Meta>) {
        let mut map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        // A known key is updated in place: one lookup and no copy of the key (every read and
        // write of a hot key comes here).
        if let Some(entry) = map.get_mut(key) {
            // Never replace a later revision with an earlier one (reads and writes race).
            if entry.0 <= revision {
                *entry = (revision, meta);
            }
            return;
        }
        if map.len() >= REVISION_CACHE {
            map.clear();
        }
        map.insert(key.clone(), (revision, meta));
    }

    fn forget(&self, key: &Key) {
        let mut map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// The state a conditional write is decided on, and whether it may be stale (remembered
    /// and not confirmed by the server) rather than current at some instant of this call. See
    /// [`Basis`]. An expired object is "none".
    async fn state(&self, key: &Key, basis: Basis) -> Result<(u64, Option<Meta>, bool)> {
        let remembered = match basis {
            Basis::Fresh => None,
            Basis::Remembered | Basis::AtLeast(_) => {
                let map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
                map.get(key).cloned()
            }
        };
        match (basis, remembered) {
            (Basis::Remembered, Some((revision, meta))) => {
                return Ok((revision, meta.filter(|m| !m.is_expired()), true))
            }
            // The server said the key was at `last` during this call, so a message at `last`
            // or later (written after that, and seen since) was current during this call too.
            (Basis::AtLeast(last), Some((revision, meta))) if revision >= last => {
                return Ok((revision, meta.filter(|m| !m.is_expired()), false))
            }
            _ => {}
        }
        let latest = self.latest(key).await?;
        Ok((latest.revision, latest.current.map(|(m, _)| m), false))
    }

    /// Reads the key's last message (`None`: the key never existed): by a direct get when the
    /// bucket has one replica (the one server holding it answers), from the stream leader
    /// otherwise.
    async fn read_last(&self, key: &Key) -> Result<Option<jetstream::message::StreamMessage>> {
        if self.direct_reads {
            use jetstream::stream::DirectGetErrorKind as K;
            match self
                .stream
                .direct_get_last_for_subject(self.subject(key))
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == K::NotFound => Ok(None),
                Err(e) if e.kind() == K::InvalidSubject => Err(permanent("read", e)),
                Err(e) => Err(transient("read", e)),
            }
        } else {
            use jetstream::stream::LastRawMessageErrorKind as K;
            match self
                .stream
                .get_last_raw_message_by_subject(&self.subject(key))
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == K::NoMessageFound => Ok(None),
                Err(e) if e.kind() == K::InvalidSubject => Err(permanent("read", e)),
                Err(e) => Err(transient("read", e)),
            }
        }
    }

    /// The live object at `key`; an expired one is deleted in the background.
    async fn live(&self, key: &Key) -> Result<(Meta, Bytes)> {
        let latest = self.latest(key).await?;
        if latest.expired {
            let (store, key) = (self.clone(), key.clone());
            tokio::spawn(async move {
                // Conditional on the expired revision, so it never removes a newer version.
                let subject = store.subject(&key);
                let marker = store.publish_if(
                    &key,
                    subject,
                    delete_marker(),
                    Bytes::new(),
                    latest.revision,
                );
                if let Ok(Published::At(new)) = marker.await {
                    store.remember(&key, new, None);
                }
            });
        }
        latest.current.ok_or_else(|| Error::not_found(key))
    }

    /// Publishes `payload` with `headers` to `subject`, the key's, only if the key's last
    /// revision is still `revision`.
    async fn publish_if(
        &self,
        key: &Key,
        subject: String,
        mut headers: HeaderMap,
        payload: Bytes,
        revision: u64,
    ) -> Result<Published> {
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            HeaderValue::from(revision),
        );
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| publish_error(&e))?;
        match ack.await {
            Ok(ack) => Ok(Published::At(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Ok(Published::Refused(reported_last_sequence(&e)))
            }
            Err(e) => {
                self.forget(key);
                Err(publish_error(&e))
            }
        }
    }

    /// The compare-and-swap of every put and delete: `decide` gets the key's live object (or
    /// `None`) and returns the message to publish, or the error to answer (a
    /// `PreconditionFailed` or `NotFound` only on a state the server confirmed: see [`Basis`]);
    /// the message is published only if the key is still at the revision decided on, else the
    /// write decides again. Returns the new revision and what `decide` returned with the
    /// message.
    async fn write_if<T: Send>(
        &self,
        key: &Key,
        mut decide: impl FnMut(Option<&Meta>) -> Result<(HeaderMap, Bytes, T)> + Send,
    ) -> Result<(u64, T)> {
        let mut basis = Basis::Remembered;
        let subject = self.subject(key);
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let (revision, current, may_be_stale) = self.state(key, basis).await?;
            basis = Basis::Fresh;
            let (headers, payload, out) = match decide(current.as_ref()) {
                Ok(decided) => decided,
                // A remembered state may be stale: only a confirmed one can refuse.
                Err(Error::PreconditionFailed { .. } | Error::NotFound { .. }) if may_be_stale => {
                    continue
                }
                Err(e) => return Err(e),
            };
            // The server accepts this only if the key is still at `revision`: exactly the
            // state just decided on (a message never changes).
            let published = self.publish_if(key, subject.clone(), headers, payload, revision);
            match published.await? {
                Published::At(new) => return Ok((new, out)),
                Published::Refused(Some(last)) => basis = Basis::AtLeast(last),
                Published::Refused(None) => {}
            }
        }
        attempts.exhausted(format_args!("nats store: {key} changed"))
    }
}

/// The key's last revision as the server gave it when refusing a publish ("wrong last
/// sequence: N"), if the message says it.
fn reported_last_sequence(e: &jetstream::context::PublishError) -> Option<u64> {
    use std::error::Error as _;
    use std::fmt::Write as _;
    const MARK: &[u8] = b"wrong last sequence: ";
    // The server's error (the description comes first), written into a buffer on the stack:
    // this runs on every lost race, and the whole error as a `String` was 4k instructions.
    let mut text = Head::default();
    let _ = match e.source() {
        Some(server) => write!(text, "{server}"),
        None => write!(text, "{e}"),
    };
    let text = &text.buf[..text.len];
    let at = text.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if at + digits == HEAD {
        return None; // the number may go on past what was kept
    }
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Bytes of an error's text kept by [`Head`].
const HEAD: usize = 128;

/// The first [`HEAD`] bytes of a text written with `write!`; the rest is dropped.
struct Head {
    buf: [u8; HEAD],
    len: usize,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            buf: [0; HEAD],
            len: 0,
        }
    }
}

impl std::fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn publish_error(e: &jetstream::context::PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => transient("publish", e),
        PublishErrorKind::MaxPayloadExceeded => {
            Error::InvalidInput(format!("nats store: the message is too large: {e}"))
        }
        _ => permanent("publish", e),
    }
}

#[async_trait]
impl Store for NatsStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: Some(self.max_object_size),
            ..Capabilities::full("nats", AtomicScope::Cluster, true)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let (meta, _) = self.live(key).await?;
        opts.preconditions.evaluate_read(&meta)?;
        Ok(meta)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        // Meta and body are one message, so they are always of the same version.
        let (meta, data) = self.live(key).await?;
        GetResult::from_bytes(meta, data, &opts)
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        let (data, etag, size) = self.capabilities().collect_put(body, &opts).await?;
        let (new, (meta, created)) = self
            .write_if(key, |current| {
                opts.preconditions.evaluate_write(current)?;
                // Last-Modified never goes backwards, even if this writer's clock is behind.
                let replaces = current.map(|c| c.last_modified);
                let meta = Meta::next_version(key, etag.clone(), size, replaces, &opts)?;
                let encoded = header::encode(&meta);
                if encoded.len() as u64 + 256 > HEADER_RESERVE {
                    return Err(Error::InvalidInput(format!(
                        "nats store: metadata of {} bytes is over the {} reserved for headers",
                        encoded.len(),
                        HEADER_RESERVE - 256
                    )));
                }
                let mut headers = HeaderMap::new();
                headers.insert(meta_header(), HeaderValue::from(encoded));
                Ok((headers, data.clone(), (meta, current.is_none())))
            })
            .await?;
        self.remember(key, new, Some(meta.clone()));
        Ok(PutResult { meta, created })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let (new, ()) = self
            .write_if(key, |current| {
                let current = current.ok_or_else(|| Error::not_found(key))?;
                opts.preconditions.evaluate_write(Some(current))?;
                Ok((delete_marker(), Bytes::new(), ()))
            })
            .await?;
        self.remember(key, new, None);
        Ok(())
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        // Filter on the prefix's complete segments; the partial last one is matched below.
        let filter = match opts.prefix.rfind('/') {
            Some(end) => format!(
                "{}{}.>",
                self.subject_prefix,
                encode_key(&opts.prefix[..end])
            ),
            None => format!("{}>", self.subject_prefix),
        };
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: filter,
                headers_only: true,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| transient("list", e))?;
        let mut metas = Vec::new();
        if consumer.cached_info().num_pending > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| transient("list", e))?;
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(|e| transient("list", e))?;
                let pending = msg.info().map_err(|e| transient("list", e))?.pending;
                let headers = msg.headers.clone().unwrap_or_default();
                if !is_deleted(&headers) {
                    // An entry another KV client wrote (no Larder meta) is not an object of
                    // this store: skipped, not a failed listing.
                    let key = || self.key_of(&msg.subject);
                    // A headers-only message says its payload's size in a header (a 2.9
                    // server always sends it).
                    let size = headers
                        .get(msg_size())
                        .and_then(|n| n.as_str().parse().ok())
                        .unwrap_or(0);
                    match meta_of(&headers, &msg.subject, key, size) {
                        Ok(meta) if meta.key.starts_with(&opts.prefix) => metas.push(meta),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(subject = %msg.subject, "nats store: {e}"),
                    }
                }
                if pending == 0 {
                    break;
                }
            }
        }
        metas.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(paginate(metas, &opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_keys() {
        assert_eq!(encode_key("a/b-c_D"), "a.b-c_D");
        assert_eq!(encode_key(".x/a.b/*/>"), "=2Ex.a=2Eb.=2A.=3E");
        assert_eq!(encode_key("é"), "=C3=A9");
        assert_eq!(decode_key("a.b=2F"), Some("a/b/".into()));
        for bad in ["a b", "=2", "=zz", "=2e", "a*"] {
            assert_eq!(decode_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_the_last_revision() {
        use jetstream::context::PublishError;
        // What a 2.9 server answers to a publish at a stale expected sequence.
        let server: jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 78024"}"#,
        )
        .unwrap();
        let e = PublishError::with_source(PublishErrorKind::WrongLastSequence, server);
        assert_eq!(reported_last_sequence(&e), Some(78024));
        let bare = PublishError::new(PublishErrorKind::WrongLastSequence);
        assert_eq!(reported_last_sequence(&bare), None);
        // Digits cut off by the buffer's end are not taken for the whole number.
        let long = format!("{} wrong last sequence: 12345", "x".repeat(103));
        let server: jetstream::Error = serde_json::from_value(serde_json::json!(
            {"code": 400, "err_code": 10071, "description": long}
        ))
        .unwrap();
        let e = PublishError::with_source(PublishErrorKind::WrongLastSequence, server);
        assert_eq!(reported_last_sequence(&e), None);
    }

    /// Objects whose header is the JSON an earlier version wrote (published here by hand, as
    /// that version did) are read by a store that never saw them, listed, replaced and
    /// deleted; a replacement is written in the compact form.
    #[cfg(feature = "conformance")]
    #[tokio::test]
    async fn json_headers_of_earlier_versions_are_still_objects() {
        use crate::conformance::{env_url, fresh_prefix, key, ok_or_skip, with_query};
        use crate::etag::ETag;
        use crate::meta::from_millis;
        use crate::{Preconditions, StoreExt};

        let Some(url) = env_url("nats", "LARDER_TEST_NATS_URL") else {
            return;
        };
        let url = with_query(&url, "bucket=larder-test");
        let Some(writer) = ok_or_skip("nats", NatsStore::from_url(&url).await) else {
            return;
        };
        let p = fresh_prefix("nats_json");
        let old = |name: &str, body: &'static str| Meta {
            key: key(&p, name),
            etag: ETag::of(body.as_bytes()),
            size: body.len() as u64,
            last_modified: from_millis(1_700_000_000_123),
            expires_at: Some(from_millis(4_102_444_800_000)),
            content_type: Some("text/plain; charset=utf-8".into()),
            metadata: [("owner".to_string(), "zoë \"q\"".to_string())].into(),
        };
        let publish_json = |meta: Meta, body: &'static str| {
            let writer = writer.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(meta_header(), HeaderValue::from(meta.encode()));
                let subject = writer.subject(&meta.key);
                let ack = writer
                    .js
                    .publish_with_headers(subject, headers, body.into());
                ack.await.unwrap().await.unwrap();
            }
        };
        let (a, b) = (old("a ü.x", "old a"), old("b", "old b"));
        publish_json(a.clone(), "old a").await;
        publish_json(b.clone(), "old b").await;

        let store = NatsStore::from_url(&url).await.unwrap();
        assert_eq!(
            store.get_bytes(&a.key).await.unwrap(),
            (Bytes::from("old a"), a.clone())
        );
        assert_eq!(store.head(&b.key, HeadOptions::default()).await.unwrap(), b);
        let listed = store.list(ListOptions::prefix(format!("{p}/"))).await;
        assert_eq!(listed.unwrap().objects, [a.clone(), b.clone()]);

        let new = store.swap(&a.key, &a.etag, "new a".into()).await.unwrap();
        let raw = writer.read_last(&a.key).await.unwrap().unwrap();
        let value = raw.headers.get(meta_header()).unwrap().as_str().to_owned();
        assert_eq!(value, header::encode(&new), "rewritten in the compact form");
        assert!(value.len() < a.encode().len() / 2, "{value}");
        assert_eq!(
            writer.get_bytes(&a.key).await.unwrap(),
            (Bytes::from("new a"), new)
        );

        let stale = DeleteOptions {
            preconditions: Preconditions::if_match(a.etag.clone()),
        };
        let r = store.delete(&b.key, stale).await;
        assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
        let current = DeleteOptions {
            preconditions: Preconditions::if_match(b.etag.clone()),
        };
        store.delete(&b.key, current).await.unwrap();
        assert!(store.stat(&b.key).await.unwrap().is_none());
        store.remove(&a.key).await.unwrap();

        // An earlier version's record whose size is not the payload's is still refused.
        let lying = Meta {
            size: 99,
            ..old("c", "old c")
        };
        publish_json(lying.clone(), "old c").await;
        let r = store.get_bytes(&lying.key).await;
        assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
        writer
            .js
            .publish_with_headers(writer.subject(&lying.key), delete_marker(), Bytes::new())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    proptest! {
        /// Every valid key encodes to a valid NATS KV key and decodes back to itself.
        #[test]
        fn key_encoding_round_trips(s in "[a-zA-Z0-9 ./=*>%é_-]{1,20}") {
            if let Ok(k) = Key::new(s) {
                let e = encode_key(k.as_str());
                prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)));
                prop_assert!(!e.starts_with('.') && !e.ends_with('.') && !e.contains(".."));
                let back = decode_key(&e);
                prop_assert_eq!(back.as_deref(), Some(k.as_str()));
            }
        }
    }
}
