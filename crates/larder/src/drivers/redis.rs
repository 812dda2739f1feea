//! A store in Redis (standalone server, or any server that runs Lua scripts: Valkey, KeyDB).
//!
//! URL: `redis://[user:pass@]host:port/db?prefix=larder&timeout_ms=30000&list_batch=256` (also
//! `rediss://` for TLS). `prefix` namespaces every key this store touches (default `larder`);
//! `timeout_ms` is the response timeout of one command (default 30 s, large bodies travel in one
//! command); `list_batch` is how many index entries a listing reads per script call (default
//! 256). Any other query parameter is handed to the Redis
//! client (e.g. `protocol=resp3`).
//!
//! # Layout
//!
//! ```text
//! {prefix}:m:<key>   hash: m = Meta::encode() JSON, e = ETag opaque (hex), t = Last-Modified
//!                    in whole seconds (what HTTP-date conditions compare), u = in ms
//! {prefix}:b:<key>   string: the body (a separate key so ranges are one GETRANGE)
//! {prefix}:idx       sorted set, every member score 0: the keys, for ordered listing
//! ```
//!
//! `<key>` is the Larder key verbatim (Redis keys are binary-safe, nothing is parsed as a
//! pattern: listing never uses `SCAN MATCH`). The `{prefix}` braces are a Redis Cluster hash tag:
//! every key of one store is in one slot, so the scripts below are legal on a cluster too
//! (at the cost of one store living on one shard).
//!
//! # Atomicity
//!
//! Every mutation is one Lua script run with `EVALSHA` (`redis::Script` loads it on
//! `NOSCRIPT`). Redis runs a script to completion with no other command interleaved, so the
//! read of the current version, the precondition decision and the write are one atomic step, for
//! every client of the server: [`AtomicScope::Cluster`]. No `WATCH`, so the shared multiplexed
//! connection is fine.
//!
//! - `put`: the body is read and hashed in Rust first (nothing is sent until it is complete and
//!   its digest checked). The script reads `e`/`t` of the current version, decides, and writes
//!   meta, body and index entry together, with `PEXPIREAT` on both keys for a TTL (`PERSIST`
//!   otherwise). The preconditions are encoded for the script by [`encode_conditions`]: Rust
//!   can't run the shared evaluator inside Redis, so the script implements
//!   [`Preconditions::evaluate_write`] on the encoding (If-Match: strong comparison, so only
//!   strong tags are passed and a weak tag never matches; If-None-Match: weak comparison, every
//!   tag's opaque value; `*`; If-Unmodified-Since in whole seconds, only when If-Match is
//!   absent). `tests/redis.rs` checks the script against the shared evaluator on every
//!   combination of a table of conditions and states. On failure the script returns the
//!   current meta, so `PreconditionFailed` carries it.
//! - `delete`: the same, then `DEL` of both keys and `ZREM` from the index.
//! - `get`: a plain read (no condition, no range) fetches meta and body in one `MULTI`/`EXEC`.
//!   Otherwise it reads the meta and decides with [`GetOptions::evaluate`], then a script
//!   returns the body (or the `GETRANGE`) only if the ETag is still the one decided on (else the
//!   read starts again). Either way meta and bytes belong to the same version.
//! - Every put, delete and condition is supported; all of them atomic at cluster scope.
//!
//! # TTL
//!
//! `expires_at` is stored in the meta and both keys get `PEXPIREAT` at that same millisecond,
//! so Redis removes the object itself. An expired object is absent for reads and conditions
//! (Redis's own expiry, on the server clock). Its index entry is removed lazily by the next
//! listing that meets it (in a script: checked and removed atomically).
//!
//! # Costs and limits
//!
//! - Listing: `ZRANGEBYLEX` on the index from the prefix or cursor, in batches, with the meta
//!   of each key read in the same script: a page costs `O(log N + page)` plus the keys skipped
//!   inside common prefixes (a batch that ends inside a common prefix jumps past it).
//! - Objects are held in memory while written and read (one Redis value each); the largest
//!   is [`MAX_OBJECT_SIZE`] (Redis's 512 MiB bulk-string limit). A large transfer occupies the
//!   shared connection while it lasts.
//! - Last-Modified is the writing client's clock (in milliseconds), but never goes backwards: a
//!   put stamped earlier than the version it replaces (a slower writer, a clock behind) is told
//!   so by the script and restamped with that version's time, then decided again. The expiry is
//!   enforced by the server's clock.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::{from_millis, now_millis, to_millis, Meta};
use crate::precondition::{http_seconds, ETagCondition, Preconditions};
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Largest object: Redis's limit on one bulk string (`proto-max-bulk-len`, 512 MiB).
pub const MAX_OBJECT_SIZE: u64 = 512 << 20;

/// Default response timeout of one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A read or write that found the object changed this many times in a row gives up with a
/// retryable error.
const MAX_ATTEMPTS: u32 = 100;

/// Default number of index entries a listing reads per script call.
const LIST_BATCH: usize = 256;

/// The precondition decision shared by the put and delete scripts. Mirrors
/// `Preconditions::evaluate_write` on the encoding of [`encode_conditions`]; sets `ok`.
/// ARGV[1] If-Match mode (0 none, 1 `*`, 2 list), ARGV[2] strong opaque tags, space separated,
/// ARGV[3] If-None-Match mode, ARGV[4] opaque tags, ARGV[5] If-Unmodified-Since seconds or "".
const DECIDE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'm', 'e', 't', 'u')
local cur_m, cur_e, cur_t, cur_u = cur[1], cur[2], cur[3], cur[4]
local function has(list, e) return string.find(' ' .. list .. ' ', ' ' .. e .. ' ', 1, true) ~= nil end
local ok = true
if ARGV[1] ~= '0' then
  if not cur_e then ok = false
  elseif ARGV[1] == '2' and not has(ARGV[2], cur_e) then ok = false end
elseif ARGV[5] ~= '' and cur_t then
  if tonumber(cur_t) > tonumber(ARGV[5]) then ok = false end
end
if ok and ARGV[3] ~= '0' and cur_e then
  if ARGV[3] == '1' or has(ARGV[4], cur_e) then ok = false end
end
"#;

/// KEYS: meta hash, body, index. ARGV 1-5: conditions; 6 index member (the key), 7 meta JSON,
/// 8 ETag opaque, 9 Last-Modified seconds, 10 body, 11 expiry in Unix ms or "", 12
/// Last-Modified in ms. Returns {1, created}, {0, current meta or false}, or {3, current
/// Last-Modified ms} when the current version is newer than this write's stamp (the caller
/// restamps and runs the script again, which decides again).
const PUT_BODY: &str = r#"
if not ok then return {0, cur_m or false} end
if cur_u and tonumber(cur_u) > tonumber(ARGV[12]) then return {3, cur_u} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'm', ARGV[7], 'e', ARGV[8], 't', ARGV[9], 'u', ARGV[12])
redis.call('SET', KEYS[2], ARGV[10])
if ARGV[11] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[11])
  redis.call('PEXPIREAT', KEYS[2], ARGV[11])
end
redis.call('ZADD', KEYS[3], 0, ARGV[6])
if cur_m then return {1, 0} else return {1, 1} end
"#;

/// KEYS and ARGV 1-6 as for put. Returns {1} deleted, {0, meta} refused, {2} missing.
const DELETE_BODY: &str = r#"
if not cur_m then return {2} end
if not ok then return {0, cur_m} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[6])
return {1}
"#;

/// KEYS: meta hash, body. ARGV: the ETag opaque decided on, then "" for the whole body or the
/// first and last byte. Returns {1, bytes}, or {0} when the version changed (or is gone).
const READ: &str = r#"
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return {0} end
if ARGV[2] == '' then return {1, redis.call('GET', KEYS[2]) or ''} end
return {1, redis.call('GETRANGE', KEYS[2], ARGV[2], ARGV[3])}
"#;

/// KEYS: index. ARGV: min, max (ZRANGEBYLEX specs), count, meta key prefix.
/// Returns {scanned, last member or "", meta...}; index entries whose object expired are removed.
const LIST: &str = r#"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {#members, members[#members] or ''}
for _, k in ipairs(members) do
  local m = redis.call('HGET', ARGV[4] .. k, 'm')
  if m then out[#out + 1] = m else redis.call('ZREM', KEYS[1], k) end
end
return out
"#;

/// Preconditions as the put and delete scripts take them (ARGV 1-5), see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedConditions {
    /// If-Match: `0` absent, `1` `*`, `2` the list in `if_match_tags`.
    pub if_match_mode: &'static str,
    /// The opaque values of the strong tags of If-Match (weak ones never match), space
    /// separated (an opaque value has no space).
    pub if_match_tags: String,
    /// If-None-Match: `0` absent, `1` `*`, `2` the list in `if_none_match_tags`.
    pub if_none_match_mode: &'static str,
    /// The opaque values of every If-None-Match tag (weak comparison), space separated.
    pub if_none_match_tags: String,
    /// If-Unmodified-Since in whole seconds since the epoch, or empty.
    pub if_unmodified_since: String,
}

/// Encodes `p` for the scripts. If-Modified-Since is not encoded: writes ignore it.
pub fn encode_conditions(p: &Preconditions) -> EncodedConditions {
    let mode = |c: &Option<ETagCondition>| match c {
        None => "0",
        Some(ETagCondition::Any) => "1",
        Some(ETagCondition::Tags(_)) => "2",
    };
    let join = |c: &Option<ETagCondition>, strong_only: bool| match c {
        Some(ETagCondition::Tags(tags)) => tags
            .iter()
            .filter(|t| !(strong_only && t.is_weak()))
            .map(|t| t.opaque())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    EncodedConditions {
        if_match_mode: mode(&p.if_match),
        if_match_tags: join(&p.if_match, true),
        if_none_match_mode: mode(&p.if_none_match),
        if_none_match_tags: join(&p.if_none_match, false),
        if_unmodified_since: p
            .if_unmodified_since
            .map(|t| http_seconds(t).to_string())
            .unwrap_or_default(),
    }
}

/// A store in Redis. See the [module docs](self).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    list_batch: usize,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    put: Script,
    delete: Script,
    read: Script,
    list: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Maps a Redis error: connection trouble and server busy states may pass on a retry.
fn backend(e: redis::RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let retryable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::TryAgain
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
            )
        );
    Error::Backend {
        source: Box::new(e),
        retryable,
    }
}

fn unexpected(what: &str, v: &Value) -> Error {
    Error::backend(format!("unexpected Redis reply to {what}: {v:?}"))
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` (see the [module docs](self) for its options).
    pub async fn open(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("redis store URL {url:?}: {e}")))?;
        Self::from_url(&parsed).await
    }

    /// Connects from a parsed URL.
    pub async fn from_url(url: &url::Url) -> Result<Self> {
        let mut prefix = "larder".to_owned();
        let mut timeout = DEFAULT_TIMEOUT;
        let mut list_batch = LIST_BATCH;
        let mut rest = url.clone();
        rest.set_query(None);
        {
            let mut q = rest.query_pairs_mut();
            for (k, v) in url.query_pairs() {
                match &*k {
                    "prefix" => prefix = v.into_owned(),
                    "timeout_ms" => {
                        let ms: u64 = v.parse().map_err(|_| {
                            Error::InvalidInput(format!("redis store: timeout_ms={v}"))
                        })?;
                        timeout = Duration::from_millis(ms);
                    }
                    "list_batch" => {
                        list_batch = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            Error::InvalidInput(format!("redis store: list_batch={v}"))
                        })?;
                    }
                    _ => {
                        q.append_pair(&k, &v);
                    }
                }
            }
        }
        if rest.query() == Some("") {
            rest.set_query(None);
        }
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(Error::InvalidInput(format!(
                "redis store: prefix {prefix:?} must be non-empty, without braces"
            )));
        }
        let client = redis::Client::open(rest.as_str())
            .map_err(|e| Error::InvalidInput(format!("redis store URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Ok(RedisStore {
            conn,
            prefix,
            list_batch,
            scripts: std::sync::Arc::new(Scripts {
                put: Script::new(&format!("{DECIDE}{PUT_BODY}")),
                delete: Script::new(&format!("{DECIDE}{DELETE_BODY}")),
                read: Script::new(READ),
                list: Script::new(LIST),
            }),
        })
    }

    /// The key prefix (the `prefix` URL option).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn meta_key(&self, key: &Key) -> String {
        format!("{}{}", self.meta_prefix(), key.as_str())
    }

    fn meta_prefix(&self) -> String {
        format!("{{{}}}:m:", self.prefix)
    }

    fn body_key(&self, key: &Key) -> String {
        format!("{{{}}}:b:{}", self.prefix, key.as_str())
    }

    fn index_key(&self) -> String {
        format!("{{{}}}:idx", self.prefix)
    }

    /// The Redis keys holding `key`'s meta and body (for tests and inspection).
    pub fn redis_keys(&self, key: &Key) -> (String, String) {
        (self.meta_key(key), self.body_key(key))
    }

    async fn read_meta(&self, key: &Key) -> Result<Option<Meta>> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.meta_key(key))
            .arg("m")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        raw.map(|m| Meta::decode(&m)).transpose()
    }
}

/// Adds the three keys and the condition arguments of a put or delete.
fn prepare<'a>(
    inv: &mut redis::ScriptInvocation<'a>,
    keys: [String; 3],
    p: &Preconditions,
    member: &str,
) {
    let c = encode_conditions(p);
    for k in keys {
        inv.key(k);
    }
    inv.arg(c.if_match_mode)
        .arg(c.if_match_tags)
        .arg(c.if_none_match_mode)
        .arg(c.if_none_match_tags)
        .arg(c.if_unmodified_since)
        .arg(member);
}

#[async_trait]
impl Store for RedisStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: Some(MAX_OBJECT_SIZE),
            ..Capabilities::full("redis", AtomicScope::Cluster, true)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let meta = self
            .read_meta(key)
            .await?
            .ok_or_else(|| Error::not_found(key))?;
        opts.preconditions.evaluate_read(&meta)?;
        Ok(meta)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        // A plain read of the whole object (no condition that could make the body unneeded, no
        // range): meta and body in one MULTI/EXEC, one round trip.
        if opts.range.is_none() && opts.preconditions.is_empty() {
            let mut conn = self.conn.clone();
            let (meta, data): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
                .atomic()
                .hget(self.meta_key(key), "m")
                .get(self.body_key(key))
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            let (Some(meta), Some(data)) = (meta, data) else {
                return Err(Error::not_found(key));
            };
            let meta = Meta::decode(&meta)?;
            let range = opts.evaluate(&meta)?;
            let data = Bytes::from(data);
            check_len(key, &data, meta.size)?;
            return Ok(GetResult {
                meta,
                range,
                body: futures::stream::once(async move { Ok(data) }).boxed(),
            });
        }
        // A version can be replaced between reading its meta and its bytes; the byte read
        // checks the ETag inside a script and the whole read starts again if it changed.
        for _ in 0..MAX_ATTEMPTS {
            let meta = self
                .read_meta(key)
                .await?
                .ok_or_else(|| Error::not_found(key))?;
            let range = opts.evaluate(&meta)?;
            let mut inv = self.scripts.read.prepare_invoke();
            inv.key(self.meta_key(key))
                .key(self.body_key(key))
                .arg(meta.etag.opaque());
            match &range {
                Some(r) => inv.arg(r.start).arg(r.end - 1),
                None => inv.arg("").arg(""),
            };
            let mut conn = self.conn.clone();
            let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(backend)?;
            match reply.as_slice() {
                [flag, data] if int_of(flag) == Some(1) => {
                    let data = Bytes::copy_from_slice(
                        bytes_of(data).ok_or_else(|| unexpected("read", data))?,
                    );
                    check_len(
                        key,
                        &data,
                        range.as_ref().map_or(meta.size, |r| r.end - r.start),
                    )?;
                    return Ok(GetResult {
                        meta,
                        range,
                        body: futures::stream::once(async move { Ok(data) }).boxed(),
                    });
                }
                [flag] if int_of(flag) == Some(0) => continue,
                _ => return Err(unexpected("read", &Value::Array(reply))),
            }
        }
        Err(Error::transient(format!(
            "redis store: {key} changed under {MAX_ATTEMPTS} reads in a row"
        )))
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        let caps = self.capabilities();
        caps.check_put(&opts)?;
        let (data, etag, size) = body
            .reader(caps.max_object_size)
            .collect(opts.expected_etag.as_ref())
            .await?;
        let mut now = now_millis();
        for _ in 0..MAX_ATTEMPTS {
            let meta = Meta {
                key: key.clone(),
                etag: etag.clone(),
                size,
                last_modified: now,
                expires_at: opts.ttl.map(|t| now + t),
                content_type: opts.content_type.clone(),
                metadata: opts.metadata.clone(),
            };
            let mut inv = self.scripts.put.prepare_invoke();
            prepare(
                &mut inv,
                [self.meta_key(key), self.body_key(key), self.index_key()],
                &opts.preconditions,
                key.as_str(),
            );
            inv.arg(meta.encode())
                .arg(meta.etag.opaque())
                .arg(http_seconds(now))
                .arg(&data[..])
                .arg(
                    meta.expires_at
                        .map(|t| to_millis(t).to_string())
                        .unwrap_or_default(),
                )
                .arg(to_millis(now));
            let mut conn = self.conn.clone();
            let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(backend)?;
            match reply.as_slice() {
                [ok, created] if int_of(ok) == Some(1) => {
                    return Ok(PutResult {
                        meta,
                        created: int_of(created) == Some(1),
                    })
                }
                [ok, current] if int_of(ok) == Some(0) => return Err(refused(current)?),
                [ok] if int_of(ok) == Some(0) => return Err(Error::precondition_failed(None)),
                [ok, ms] if int_of(ok) == Some(3) => {
                    let ms = bytes_of(ms)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| unexpected("put", ms))?;
                    now = now.max(from_millis(ms));
                }
                _ => return Err(unexpected("put", &Value::Array(reply))),
            }
        }
        Err(Error::transient(format!(
            "redis store: {key} changed under {MAX_ATTEMPTS} attempts in a row"
        )))
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let mut inv = self.scripts.delete.prepare_invoke();
        prepare(
            &mut inv,
            [self.meta_key(key), self.body_key(key), self.index_key()],
            &opts.preconditions,
            key.as_str(),
        );
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(backend)?;
        match reply.as_slice() {
            [ok] if int_of(ok) == Some(1) => Ok(()),
            [ok] if int_of(ok) == Some(2) => Err(Error::not_found(key)),
            [ok, current] if int_of(ok) == Some(0) => Err(refused(current)?),
            _ => Err(unexpected("delete", &Value::Array(reply))),
        }
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let prefix = opts.prefix.as_bytes();
        // Lex bounds: keys are UTF-8, which never contains 0xFF, so `prefix + 0xFF` is above
        // every key under the prefix.
        let max: Vec<u8> = if prefix.is_empty() {
            b"+".to_vec()
        } else {
            [b"(", prefix, b"\xff"].concat()
        };
        let mut min: Vec<u8> = match &opts.cursor {
            Some(c) if c.as_str() >= opts.prefix.as_str() => exclusive_after(c.as_bytes(), &opts),
            _ if prefix.is_empty() => b"-".to_vec(),
            _ => [b"[", prefix].concat(),
        };
        let batch = self.list_batch;
        let meta_prefix = self.meta_prefix();
        let mut collected: Vec<Meta> = Vec::new();
        loop {
            let mut inv = self.scripts.list.prepare_invoke();
            inv.key(self.index_key())
                .arg(&min[..])
                .arg(&max[..])
                .arg(batch)
                .arg(&meta_prefix);
            let mut conn = self.conn.clone();
            let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(backend)?;
            let (scanned, last) = match reply.get(..2) {
                Some([n, last]) => (
                    int_of(n).ok_or_else(|| unexpected("list", n))?,
                    bytes_of(last).ok_or_else(|| unexpected("list", last))?,
                ),
                _ => return Err(unexpected("list", &Value::Array(reply))),
            };
            for m in &reply[2..] {
                collected.push(Meta::decode(
                    bytes_of(m).ok_or_else(|| unexpected("list", m))?,
                )?);
            }
            let page = paginate(collected.iter().cloned(), &opts);
            if page.next_cursor.is_some() || (scanned as usize) < batch {
                return Ok(page);
            }
            // Jump past a common prefix only once one of its live keys was collected (a group
            // whose scanned keys had all expired may still have live keys further on).
            min = match exclusive_after(last, &opts) {
                jump if group_seen(&jump, &collected) => jump,
                _ => [b"(", last].concat(),
            };
        }
    }
}

/// The ZRANGEBYLEX start strictly after `last` (a key or a cursor); when `last` lies inside a
/// common prefix of the listing, after every key of that prefix.
fn exclusive_after(last: &[u8], opts: &ListOptions) -> Vec<u8> {
    let mut out = vec![b'('];
    let group = opts.delimiter.and_then(|d| {
        let s = std::str::from_utf8(last).ok()?;
        let rest = s.strip_prefix(opts.prefix.as_str())?;
        let pos = rest.find(d)?;
        Some(opts.prefix.len() + pos + d.len_utf8())
    });
    match group {
        Some(end) => {
            out.extend_from_slice(&last[..end]);
            out.push(0xff);
        }
        None => out.extend_from_slice(last),
    }
    out
}

/// Whether `jump` (from [`exclusive_after`]) skips a common prefix some collected key is in.
fn group_seen(jump: &[u8], collected: &[Meta]) -> bool {
    match jump.strip_suffix(b"\xff") {
        Some(group) => collected
            .last()
            .is_some_and(|m| m.key.as_str().as_bytes().starts_with(&group[1..])),
        None => true,
    }
}

/// A body whose length is not what the meta says is corruption, never served.
fn check_len(key: &Key, data: &[u8], want: u64) -> Result<()> {
    if data.len() as u64 != want {
        return Err(Error::backend(format!(
            "redis store: {key} has {} bytes where its meta says {want}",
            data.len()
        )));
    }
    Ok(())
}

/// `PreconditionFailed` carrying the meta a script returned (or none).
fn refused(current: &Value) -> Result<Error> {
    match current {
        Value::Nil => Ok(Error::precondition_failed(None)),
        v => {
            let meta = Meta::decode(bytes_of(v).ok_or_else(|| unexpected("a write", v))?)?;
            Ok(Error::precondition_failed(Some(&meta)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;

    #[test]
    fn encodes_conditions() {
        let a = ETag::of(b"a");
        let w = ETag::weak("w").unwrap();
        let p = Preconditions {
            if_match: Some(ETagCondition::Tags(vec![a.clone(), w.clone()])),
            if_none_match: Some(ETagCondition::Tags(vec![w.clone(), a.clone()])),
            if_unmodified_since: Some(crate::meta::from_millis(1_999)),
            ..Default::default()
        };
        let c = encode_conditions(&p);
        assert_eq!(c.if_match_mode, "2");
        assert_eq!(
            c.if_match_tags,
            a.opaque(),
            "weak tags never match If-Match"
        );
        assert_eq!(c.if_none_match_mode, "2");
        assert_eq!(c.if_none_match_tags, format!("w {}", a.opaque()));
        assert_eq!(c.if_unmodified_since, "1");
        let c = encode_conditions(&Preconditions::if_absent());
        assert_eq!((c.if_match_mode, c.if_none_match_mode), ("0", "1"));
        assert_eq!(c.if_unmodified_since, "");
    }

    #[test]
    fn cursor_skips_a_common_prefix() {
        let opts = ListOptions {
            prefix: "p/".into(),
            delimiter: Some('/'),
            ..Default::default()
        };
        assert_eq!(exclusive_after(b"p/a/", &opts), b"(p/a/\xff");
        assert_eq!(exclusive_after(b"p/a/b/c", &opts), b"(p/a/\xff");
        assert_eq!(exclusive_after(b"p/b", &opts), b"(p/b");
        assert_eq!(
            exclusive_after(b"p/a/b", &ListOptions::prefix("p/")),
            b"(p/a/b"
        );
    }
}
