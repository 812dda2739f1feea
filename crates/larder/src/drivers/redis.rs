//! A store in Redis (standalone server, or any server that runs Lua scripts: Valkey, KeyDB).
//!
//! URL: `redis://[user:pass@]host:port/db?prefix=larder&timeout_ms=5000&connect_timeout_ms=5000&list_batch=256`
//! (also `rediss://` for TLS). `prefix` namespaces every key this store touches (default
//! `larder`); `timeout_ms` is the response timeout of one command (default 5 s, so a hung
//! server fails a request fast, with a retryable error);
//! `connect_timeout_ms` bounds each connection attempt (default 5 s, 3 attempts); `list_batch`
//! is how many index entries a listing reads per script call (default 256). Any other query
//! parameter is handed to the Redis client (e.g. `protocol=resp3`).
//!
//! # Layout
//!
//! ```text
//! {prefix}:m:<key>   hash: m = the meta, packed (see below), e = ETag opaque (hex),
//!                    u = Last-Modified in ms, x = expiry in Unix ms or "" (none)
//! {prefix}:b:<key>   string: the body (a separate key so ranges are one GETRANGE)
//! {prefix}:idx       sorted set, every member score 0: the keys, for ordered listing
//! ```
//!
//! `m` is this store's own compact encoding of the meta (a version byte, then length-prefixed
//! fields: `packed.rs`), cheap to write and to read on every CAS attempt. Objects written by
//! earlier versions of this store are read as they are: their `m` is [`Meta::encode`]'s JSON
//! (told apart by its first byte), they have no `x` (the put script then clears an expiry it
//! can't rule out) and a `t` (Last-Modified in seconds) that is no longer read or written.
//!
//! `<key>` is the Larder key verbatim (Redis keys are binary-safe, nothing is parsed as a
//! pattern: listing never uses `SCAN MATCH`). The `{prefix}` braces are a Redis Cluster hash tag:
//! every key of one store is in one slot, so the scripts below are legal on a cluster too
//! (at the cost of one store living on one shard).
//!
//! # Atomicity
//!
//! Every mutation is one Lua script run with `EVALSHA` (the script is loaded on `NOSCRIPT`;
//! the command is built straight into one buffer, not through `redis::ScriptInvocation`, and
//! the reply is read as it is). Redis runs a script to completion with no other command
//! interleaved, so the read of the current version, the precondition decision and the write
//! are one atomic step, for every client of the server: [`AtomicScope::Cluster`]. No `WATCH`, so the shared multiplexed
//! connection is fine.
//!
//! - `put`: the body is read and hashed in Rust first. Up to [`STAGE_OVER`] bytes are held in
//!   memory and sent as a script argument; a longer body is appended, as it arrives, to a
//!   staging key `{prefix}:t:<random>` (expiring after [`STAGING_TTL`] unless refreshed, and
//!   removed on failure), which the script renames into place. Nothing is visible until the
//!   body is complete and its digest checked. The script reads `e`/`u` of the current version, decides, and writes
//!   meta, body and index entry together, with `PEXPIREAT` on both keys for a TTL (`PERSIST`
//!   otherwise). The preconditions are encoded for the script by `Conditions`: Rust
//!   can't run the shared evaluator inside Redis, so the script implements
//!   [`Preconditions::evaluate_write`] on the encoding (If-Match: strong comparison, so only
//!   strong tags are passed and a weak tag never matches; If-None-Match: weak comparison, every
//!   tag's opaque value; `*`; If-Unmodified-Since in whole seconds of `u`, only when If-Match
//!   is absent). `tests/redis.rs` checks the script against the shared evaluator on every
//!   combination of a table of conditions and states. On failure the script returns the
//!   current meta, so `PreconditionFailed` carries it.
//! - `delete`: the same, then `DEL` of both keys and `ZREM` from the index.
//! - `get`: a plain read (no condition, no range) of an object of at most 16 KiB fetches the
//!   meta and its bytes in one pipelined round trip without a transaction, and serves them
//!   only if the bytes hash to the meta's content ETag (so they are that version's); any other
//!   plain read (or a pair from two versions) fetches the meta and the first chunk in one
//!   `MULTI`/`EXEC` transaction. Otherwise it reads the meta and decides with [`GetOptions::evaluate`], then a
//!   script returns the first chunk (`GETRANGE`) only if the ETag is still the one decided on
//!   (else the read starts again). The rest of the body streams in chunks of [`READ_CHUNK`],
//!   each read by that script on the same condition: meta and bytes always belong to one
//!   version, and a body replaced mid-stream ends the stream with a retryable error rather than
//!   mixing two versions.
//! - Every put, delete and condition is supported; all of them atomic at cluster scope.
//! - Durability is the deployment's: with asynchronous replication a failover can lose
//!   acknowledged writes, and with persistence off a server restart loses everything.
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
//! - Listing: [`scan_page`] over `ZRANGEBYLEX` on the index, in batches, with the meta of each
//!   key read in the same script (by names taken from the index, not passed as `KEYS`:
//!   standalone Redis allows it, and on a cluster they share the store's hash slot): a page
//!   costs `O(log N + page)`; a common prefix is one range read that jumps past it.
//! - The largest object is [`MAX_OBJECT_SIZE`] (Redis's 512 MiB string limit). Bodies stream in
//!   and out in chunks (see above), so neither side holds a large one whole in memory.
//! - Last-Modified is the writing client's clock (in milliseconds), but never goes backwards: a
//!   put stamped earlier than the version it replaces (a slower writer, a clock behind) is told
//!   so by the script and restamped with that version's time, then decided again. The expiry is
//!   enforced by the server's clock.

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisWrite, Script, ToRedisArgs, Value};

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{scan_page, ListOptions, ListPage, ScanFrom};
use crate::meta::{from_millis, to_millis, Meta};

mod packed;
use crate::precondition::{http_seconds, ETagCondition, Preconditions};
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Largest object: Redis's limit on one bulk string (`proto-max-bulk-len`, 512 MiB).
pub const MAX_OBJECT_SIZE: u64 = 512 << 20;

/// Default response timeout of one command: a hung server fails a request in seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on one connection attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A read or write that found the object changed this many times in a row gives up with a
/// retryable error.
const MAX_ATTEMPTS: u32 = 100;

/// Bytes read per round trip when a body is streamed out.
pub const READ_CHUNK: u64 = 4 << 20;

/// The largest object a plain read takes without a transaction, checking its bytes against
/// its content ETag instead (hashing more would cost more than the transaction saves).
const OPTIMISTIC_READ: u64 = 16 << 10;

/// Bodies larger than this are streamed into a staging key as they arrive (instead of being
/// held in memory and sent as a script argument), then renamed into place by the put script.
pub const STAGE_OVER: u64 = 1 << 20;

/// A staging key left by a writer that died (or was cancelled) expires after this.
pub const STAGING_TTL: Duration = Duration::from_secs(3600);

/// Where a put's body is: in memory, or in a staging key.
enum Staged {
    Inline(Bytes),
    Key(String),
}

/// Default number of index entries a listing reads per script call.
const LIST_BATCH: usize = 256;

/// The precondition decision shared by the put and delete scripts. Mirrors
/// `Preconditions::evaluate_write` on the encoding of [`Conditions`]; sets `ok`.
/// KEYS[1] the meta hash. `im` If-Match, `inm` If-None-Match: each `""` absent, `*`, or the
/// opaque tags each after a space (If-Match: the strong ones only); `ius` If-Unmodified-Since
/// in seconds, or "" (set by the script before this part, from its arguments). Every argument
/// costs the server time on every call (some 1,300 instructions each: it is parsed, becomes a
/// Lua string and grows the ARGV table), so the scripts take as few as they can: trailing
/// empty ones are left out.
const DECIDE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'm', 'e', 'u', 'x')
local cur_m, cur_e, cur_u, cur_x = cur[1], cur[2], cur[3], cur[4]
-- Whether the list (" t1 t2") has the tag e, found in place (no string built per call).
local function has(list, e)
  if e == '' then return false end -- a stored tag is never empty
  local from = 1
  while true do
    local i, j = string.find(list, e, from, true)
    if not i then return false end
    if string.byte(list, i - 1) == 32 and (j == #list or string.byte(list, j + 1) == 32) then
      return true
    end
    from = i + 1
  end
end
local ok = true
if im ~= '' then
  if not cur_e then ok = false
  elseif im ~= '*' and not has(im, cur_e) then ok = false end
elseif ius ~= '' and cur_u then
  -- Last-Modified in whole seconds (before the epoch: 0), as `http_seconds` truncates it.
  if math.max(0, math.floor(tonumber(cur_u) / 1000)) > tonumber(ius) then ok = false end
end
if ok and inm ~= '' and cur_e then
  if inm == '*' or has(inm, cur_e) then ok = false end
end
-- The index member: the key, after "{prefix}:m:" (a prefix has no braces).
local function member() return string.sub(KEYS[1], string.find(KEYS[1], '}', 1, true) + 4) end
-- The index, "{prefix}:idx": named from KEYS[1], not passed (only a create or a delete
-- touches it; on a cluster it is in the same hash slot).
local function index() return string.sub(KEYS[1], 1, string.find(KEYS[1], '}', 1, true)) .. ':idx' end
"#;

/// What the put script runs before [`DECIDE`]: its conditions, from ARGV 5-7.
const PUT_HEAD: &str = r#"
local im, inm, ius = ARGV[5] or '', ARGV[6] or '', ARGV[7] or ''
"#;

/// KEYS: meta hash, body, and the staging key when the body is in one.
/// ARGV: 1 the packed meta, 2 ETag opaque, 3 Last-Modified in ms, 4 the body (inline) or its
/// size (staged), 5-7 the conditions (see [`DECIDE`]), 8 expiry in Unix ms; from 5 on, absent
/// ones at the end are left out (read as "").
/// Returns {1, created}, {0, current meta or false}, {3, current Last-Modified ms} when the
/// current version is newer than this write's stamp (the caller restamps and runs the script
/// again, which decides again), or {4} when the staging key is gone or not the right size.
const PUT_BODY: &str = r#"
local staged = KEYS[3] ~= nil
if not ok then
  if staged then redis.call('DEL', KEYS[3]) end
  return {0, cur_m or false}
end
if cur_u and tonumber(cur_u) > tonumber(ARGV[3]) then return {3, cur_u} end
if staged and redis.call('STRLEN', KEYS[3]) ~= tonumber(ARGV[4]) then return {4} end
local x = ARGV[8] or ''
-- Every field the script reads is set (`x` only when it changes), and SET (or RENAME, then
-- PERSIST) replaces the body with its expiry: only an expiry of the hash's previous version is
-- left to clear.
if cur_x == x then
  redis.call('HSET', KEYS[1], 'm', ARGV[1], 'e', ARGV[2], 'u', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'm', ARGV[1], 'e', ARGV[2], 'u', ARGV[3], 'x', x)
end
if staged then
  redis.call('RENAME', KEYS[3], KEYS[2])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[4])
end
if x ~= '' then
  redis.call('PEXPIREAT', KEYS[1], x)
  redis.call('PEXPIREAT', KEYS[2], x)
elseif cur_m and cur_x ~= '' then
  -- `x` is the previous version's expiry ("" none); a hash written before `x` existed
  -- (cur_x false) may have one.
  redis.call('PERSIST', KEYS[1])
end
-- A live object is in the index already (an entry goes only once its hash is gone).
if cur_m then return {1, 0} end
redis.call('ZADD', index(), 0, member())
return {1, 1}
"#;

/// What the delete script runs before [`DECIDE`]: its conditions, ARGV 1-3 (absent ones at
/// the end left out).
const DELETE_HEAD: &str = r#"
local im, inm, ius = ARGV[1] or '', ARGV[2] or '', ARGV[3] or ''
"#;

/// KEYS as for put (no staging key). Returns {1} deleted, {0, meta} refused, {2} missing (an
/// index entry left by an expired object goes too).
const DELETE_BODY: &str = r#"
if not cur_m then
  redis.call('ZREM', index(), member())
  return {2}
end
if not ok then return {0, cur_m} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', index(), member())
return {1}
"#;

/// KEYS: meta hash, body. ARGV: the ETag opaque decided on, the first and last byte.
/// Returns {1, bytes}, or {0} when the version changed (or is gone).
const READ: &str = r#"
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return {0} end
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

/// An If-Match (`strong_only`) or If-None-Match list as the scripts take it: empty when
/// absent, `*`, or the opaque values of its tags (If-Match: the strong ones only, weak ones
/// never match) each after a space (an opaque value has no space).
fn write_list(out: &mut impl std::io::Write, c: &Option<ETagCondition>, strong_only: bool) {
    // Writes go to a command's (or a Vec's) buffer: they cannot fail.
    match c {
        None => {}
        Some(ETagCondition::Any) => {
            let _ = out.write_all(b"*");
        }
        Some(ETagCondition::Tags(tags)) => {
            let mut any = false;
            for t in tags.iter().filter(|t| !(strong_only && t.is_weak())) {
                let _ = out.write_all(b" ");
                let _ = out.write_all(t.opaque().as_bytes());
                any = true;
            }
            // A list of only weak tags (If-Match) is " ": present, and matches nothing.
            if !any {
                let _ = out.write_all(b" ");
            }
        }
    }
}

/// The conditions of `p` as the scripts take them (see [`DECIDE`]): If-Match and
/// If-None-Match lists ([`write_list`]), If-Unmodified-Since in whole seconds or empty;
/// If-Modified-Since is not passed (writes ignore it). Written straight into a command's
/// buffer (no string per argument): all three, or (`all` false) up to the last present one,
/// since the scripts read an absent one as "".
struct Conditions<'a> {
    p: &'a Preconditions,
    all: bool,
}

impl Conditions<'_> {
    fn count(&self) -> usize {
        let p = self.p;
        if self.all || p.if_unmodified_since.is_some() {
            3
        } else if p.if_none_match.is_some() {
            2
        } else {
            usize::from(p.if_match.is_some())
        }
    }
}

impl ToRedisArgs for Conditions<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let n = self.count();
        if n >= 1 {
            write_list(&mut out.writer_for_next_arg(), &self.p.if_match, true);
        }
        if n >= 2 {
            write_list(&mut out.writer_for_next_arg(), &self.p.if_none_match, false);
        }
        if n >= 3 {
            match self.p.if_unmodified_since {
                Some(t) => http_seconds(t).write_redis_args(out),
                None => out.write_arg(b""),
            }
        }
    }

    fn num_of_args(&self) -> usize {
        self.count()
    }
}

/// One argument of two parts (a Redis key: the store's prefix, then the Larder key), written
/// into the command without joining them first.
struct Joined<'a>(&'a str, &'a str);

impl ToRedisArgs for Joined<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        let _ = w.write_all(self.0.as_bytes());
        let _ = w.write_all(self.1.as_bytes());
    }
}

/// A store in Redis. See the [module docs](self).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    list_batch: usize,
    shared: std::sync::Arc<Shared>,
}

/// What every clone of a store uses: the scripts, and the names of its Redis keys (see the
/// module docs' layout), made once.
struct Shared {
    put: Script,
    delete: Script,
    read: Script,
    list: Script,
    /// `{prefix}:m:`
    meta_prefix: String,
    /// `{prefix}:b:`
    body_prefix: String,
    /// `{prefix}:idx`
    index_key: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Server states that pass: loading the dataset after a restart, a cluster or replica in
/// failover.
fn transient_server_error(kind: redis::ServerErrorKind) -> bool {
    use redis::ServerErrorKind::*;
    matches!(
        kind,
        TryAgain | BusyLoading | ClusterDown | MasterDown | ReadOnly
    )
}

/// Maps a Redis error: connection trouble and server busy states may pass on a retry. A
/// `MULTI`/`EXEC` refused with `EXECABORT` is as retryable as the errors that aborted it (a
/// server still loading its dataset answers `LOADING` to each queued command).
fn backend(e: redis::RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let retryable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || match e.kind() {
            ErrorKind::Server(ServerErrorKind::ExecAbort) => {
                e.clone().into_server_errors().is_some_and(|errors| {
                    errors
                        .iter()
                        .any(|(_, se)| se.kind().is_some_and(transient_server_error))
                })
            }
            ErrorKind::Server(kind) => transient_server_error(kind),
            _ => false,
        };
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

fn array_of(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// A reply that is an error as the error (the scripts' replies hold none deeper down).
fn no_error(v: Value) -> redis::RedisResult<Value> {
    match v {
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The server, as the `redis` crate reads it: `redis://[user:pass@]host:port/db` or
    /// `rediss://…` (TLS), with any of that crate's own query options but none of Larder's.
    pub server: String,
    /// Prefix of every Redis key the store uses (non-empty, no braces; default `larder`).
    pub prefix: String,
    /// Response timeout of one command (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Bound on each connection attempt (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Index entries read per script call while listing (default 256).
    pub list_batch: usize,
}

impl Default for RedisConfig {
    /// A server on `redis://127.0.0.1:6379`, prefix `larder`, default timeouts.
    fn default() -> Self {
        RedisConfig {
            server: "redis://127.0.0.1:6379".into(),
            prefix: "larder".into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            list_batch: LIST_BATCH,
        }
    }
}

impl RedisConfig {
    /// From a store URL (see the [module docs](self) for its options); query options that are
    /// not Larder's stay in [`RedisConfig::server`] for the `redis` crate.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = crate::open::parse_store_url(url, "redis store", &["redis", "rediss"])?;
        let mut config = RedisConfig::default();
        let mut rest = parsed.clone();
        rest.set_query(None);
        {
            let mut q = rest.query_pairs_mut();
            for (k, v) in parsed.query_pairs() {
                match &*k {
                    "prefix" => config.prefix = v.into_owned(),
                    "timeout_ms" => {
                        let ms: u64 = v.parse().map_err(|_| {
                            Error::InvalidInput(format!("redis store: timeout_ms={v}"))
                        })?;
                        config.timeout = Duration::from_millis(ms);
                    }
                    "connect_timeout_ms" => {
                        let ms: u64 = v.parse().map_err(|_| {
                            Error::InvalidInput(format!("redis store: connect_timeout_ms={v}"))
                        })?;
                        config.connect_timeout = Duration::from_millis(ms);
                    }
                    "list_batch" => {
                        config.list_batch = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
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
        config.server = rest.into();
        Ok(config)
    }
}

impl RedisStore {
    /// Connects to the server in `config`.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use std::time::Duration;
    /// use larder::drivers::redis::{RedisConfig, RedisStore};
    ///
    /// let store = RedisStore::open(RedisConfig {
    ///     server: "redis://127.0.0.1:6379/0".into(),
    ///     prefix: "myapp".into(),
    ///     timeout: Duration::from_secs(2),
    ///     ..RedisConfig::default()
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(config: RedisConfig) -> Result<Self> {
        let RedisConfig {
            server,
            prefix,
            timeout,
            connect_timeout,
            list_batch,
        } = config;
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(Error::InvalidInput(format!(
                "redis store: prefix {prefix:?} must be non-empty, without braces"
            )));
        }
        if list_batch == 0 {
            return Err(Error::InvalidInput(
                "redis store: list_batch must be positive".into(),
            ));
        }
        crate::drivers::tls::ensure_crypto_provider();
        let client = redis::Client::open(server.as_str())
            .map_err(|e| Error::InvalidInput(format!("redis store URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Ok(RedisStore {
            conn,
            list_batch,
            shared: std::sync::Arc::new(Shared {
                put: Script::new(&format!("{PUT_HEAD}{DECIDE}{PUT_BODY}")),
                delete: Script::new(&format!("{DELETE_HEAD}{DECIDE}{DELETE_BODY}")),
                read: Script::new(READ),
                list: Script::new(LIST),
                meta_prefix: format!("{{{prefix}}}:m:"),
                body_prefix: format!("{{{prefix}}}:b:"),
                index_key: format!("{{{prefix}}}:idx"),
            }),
            prefix,
        })
    }

    /// Connects to the server a store URL names, as [`RedisConfig::from_url`] reads it.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::redis::RedisStore;
    ///
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379/0?prefix=myapp&timeout_ms=2000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?).await
    }

    /// The key prefix (the `prefix` URL option).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn meta_key<'a>(&'a self, key: &'a Key) -> Joined<'a> {
        Joined(&self.shared.meta_prefix, key.as_str())
    }

    fn body_key<'a>(&'a self, key: &'a Key) -> Joined<'a> {
        Joined(&self.shared.body_prefix, key.as_str())
    }

    /// `EVALSHA` of `script` on `key`: KEYS meta hash, body (and `staging`, when there is
    /// one), in one buffer with room for `more` bytes of arguments. Built by hand, not by
    /// `redis::ScriptInvocation`, which makes a vector per argument and copies them all again
    /// into the command.
    fn script_cmd(&self, script: &Script, key: &Key, staging: Option<&str>, more: usize) -> Cmd {
        let s = &self.shared;
        let k = key.as_str().len();
        let mut cmd = Cmd::with_capacity(
            16,
            120 + s.meta_prefix.len() + s.body_prefix.len() + 2 * k + more,
        );
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(if staging.is_some() { 3 } else { 2 })
            .arg(self.meta_key(key))
            .arg(self.body_key(key));
        if let Some(name) = staging {
            cmd.arg(name);
        }
        cmd
    }

    /// Sends a script's `EVALSHA`, loading the script first when the server doesn't have it
    /// (`NOSCRIPT`: a restarted or flushed server), as `redis::Script` would.
    async fn run(&self, script: &Script, cmd: &Cmd) -> Result<Value> {
        let mut conn = self.conn.clone();
        match conn.send_packed_command(cmd).await.and_then(no_error) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load_async(&mut conn).await.map_err(backend)?;
                conn.send_packed_command(cmd)
                    .await
                    .and_then(no_error)
                    .map_err(backend)
            }
            r => r.map_err(backend),
        }
    }

    /// Test seam (feature `test-util`): the Redis keys holding `key`'s meta and body.
    #[cfg(any(test, feature = "test-util"))]
    pub fn redis_keys(&self, key: &Key) -> (String, String) {
        let s = &self.shared;
        (
            [&s.meta_prefix, key.as_str()].concat(),
            [&s.body_prefix, key.as_str()].concat(),
        )
    }

    async fn read_meta(&self, key: &Key) -> Result<Option<Meta>> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = self
            .hget_meta(key)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        raw.map(|m| packed::decode(&m, Some(key))).transpose()
    }

    /// The packed meta (`None`: no object) and the first `len` bytes of the body, in one
    /// pipelined round trip: in a `MULTI`/`EXEC` transaction when `atomic`.
    async fn meta_and_head(
        &self,
        key: &Key,
        len: u64,
        atomic: bool,
    ) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
        let mut conn = self.conn.clone();
        let mut getrange =
            Cmd::with_capacity(4, 32 + self.shared.body_prefix.len() + key.as_str().len());
        getrange
            .arg("GETRANGE")
            .arg(self.body_key(key))
            .arg(0)
            .arg(len - 1);
        let mut pipeline = redis::Pipeline::with_capacity(2);
        if atomic {
            pipeline.atomic();
        }
        pipeline
            .add_command(self.hget_meta(key))
            .add_command(getrange)
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    /// A plain read of an object of at most [`OPTIMISTIC_READ`] bytes, without `MULTI`/`EXEC`:
    /// the meta and the bytes in one pipelined round trip (2 server commands instead of 4).
    /// Another write may land between the two, so the pair is served only when the bytes are
    /// whole and hash to the meta's content ETag, which makes them that version's bytes (or
    /// bytes equal to them). `None`: a larger object, a tag that is not a content ETag, or a
    /// pair from two versions; the caller reads in a transaction.
    async fn read_small(&self, key: &Key) -> Result<Option<GetResult>> {
        let (meta, first) = self.meta_and_head(key, OPTIMISTIC_READ, false).await?;
        let meta = packed::decode(&meta.ok_or_else(|| Error::not_found(key))?, Some(key))?;
        let whole = meta.size <= OPTIMISTIC_READ && first.len() as u64 == meta.size;
        if !(whole && meta.etag.is_content_of(&first)) {
            return Ok(None);
        }
        let first = Bytes::from(first);
        let body = self.body_stream(key, &meta, first, 0..meta.size);
        Ok(Some(GetResult {
            meta,
            range: None,
            body,
        }))
    }

    /// `HGET` of `key`'s packed meta, in a buffer of the right size.
    fn hget_meta(&self, key: &Key) -> Cmd {
        let mut cmd = Cmd::with_capacity(3, 8 + self.shared.meta_prefix.len() + key.as_str().len());
        cmd.arg("HGET").arg(self.meta_key(key)).arg("m");
        cmd
    }

    /// The bytes `span` of `key`'s body if its ETag is still `meta`'s (`None`: it changed).
    async fn read_chunk(
        &self,
        key: &Key,
        meta: &Meta,
        span: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        if span.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        let script = &self.shared.read;
        let mut cmd = self.script_cmd(script, key, None, meta.etag.opaque().len());
        cmd.arg(meta.etag.opaque())
            .arg(span.start)
            .arg(span.end - 1);
        let reply = self.run(script, &cmd).await?;
        match array_of(&reply) {
            Some([flag, data]) if int_of(flag) == Some(1) => {
                let data = bytes_of(data).ok_or_else(|| unexpected("read", data))?;
                check_len(key, data, span.end - span.start)?;
                Ok(Some(Bytes::copy_from_slice(data)))
            }
            Some([flag]) if int_of(flag) == Some(0) => Ok(None),
            _ => Err(unexpected("read", &reply)),
        }
    }

    /// The body stream of `span`, whose first chunk is `first`: later chunks are read as the
    /// stream is consumed, each only if the object is still the version of `meta` (otherwise
    /// the stream ends with a retryable error: the object was replaced mid-read).
    fn body_stream(
        &self,
        key: &Key,
        meta: &Meta,
        first: Bytes,
        span: std::ops::Range<u64>,
    ) -> crate::body::ByteStream {
        let next = span.start + first.len() as u64;
        let head = futures::stream::once(async move { Ok(first) });
        if next >= span.end {
            return head.boxed();
        }
        let (store, key, meta) = (self.clone(), key.clone(), meta.clone());
        let rest = futures::stream::try_unfold(next, move |at| {
            let (store, key, meta) = (store.clone(), key.clone(), meta.clone());
            async move {
                if at >= span.end {
                    return Ok(None);
                }
                let end = span.end.min(at + READ_CHUNK);
                match store.read_chunk(&key, &meta, at..end).await? {
                    Some(chunk) => Ok(Some((chunk, end))),
                    None => Err(Error::transient(format!(
                        "redis store: {key} was replaced while it was being read"
                    ))),
                }
            }
        });
        head.chain(rest).boxed()
    }

    /// The put script, run until it decides (restamping when the current version is newer).
    async fn put_staged(
        &self,
        key: &Key,
        staged: &Staged,
        etag: ETag,
        size: u64,
        opts: PutOptions,
    ) -> Result<PutResult> {
        // The Last-Modified of the current version, once the script has said it is newer.
        let mut replaces = None;
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let meta = Meta::next_version(key, etag.clone(), size, replaces, &opts)?;
            let now = meta.last_modified;
            let packed = packed::encode(&meta);
            let (staging, inline) = match staged {
                Staged::Inline(data) => (None, &data[..]),
                Staged::Key(name) => (Some(name.as_str()), &[][..]),
            };
            let script = &self.shared.put;
            let mut cmd = self.script_cmd(
                script,
                key,
                staging,
                packed.len() + meta.etag.opaque().len() + inline.len(),
            );
            cmd.arg(&packed[..])
                .arg(meta.etag.opaque())
                .arg(to_millis(now));
            match staging {
                None => cmd.arg(inline),
                Some(_) => cmd.arg(size),
            };
            cmd.arg(Conditions {
                p: &opts.preconditions,
                all: meta.expires_at.is_some(),
            });
            if let Some(t) = meta.expires_at {
                cmd.arg(to_millis(t));
            }
            let reply = self.run(script, &cmd).await?;
            match array_of(&reply).unwrap_or_default() {
                [ok, created] if int_of(ok) == Some(1) => {
                    return Ok(PutResult {
                        meta,
                        created: int_of(created) == Some(1),
                    })
                }
                [ok, current] if int_of(ok) == Some(0) => return Err(refused(key, current)?),
                [ok] if int_of(ok) == Some(0) => return Err(Error::precondition_failed(None)),
                [ok, ms] if int_of(ok) == Some(3) => {
                    let ms = bytes_of(ms)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| unexpected("put", ms))?;
                    replaces = Some(from_millis(ms));
                }
                [ok] if int_of(ok) == Some(4) => {
                    return Err(Error::transient(format!(
                        "redis store: the staged body of {key} expired or was removed \
                         before the write (staging keys live {STAGING_TTL:?})"
                    )))
                }
                _ => return Err(unexpected("put", &reply)),
            }
        }
        attempts.exhausted(format_args!("redis store: {key} changed"))
    }

    /// A fresh name for a staging key (in the store's hash slot).
    fn staging_key(&self) -> String {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // Random per call (RandomState is seeded randomly), plus pid, time and a counter.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{{{}}}:t:{:x}-{nanos:x}-{:016x}",
            self.prefix,
            std::process::id(),
            h.finish()
        )
    }

    /// Appends `data` to the staging key, keeping it alive for [`STAGING_TTL`].
    async fn stage(&self, staging: &str, data: &[u8]) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("APPEND")
            .arg(staging)
            .arg(data)
            .ignore()
            .cmd("PEXPIRE")
            .arg(staging)
            .arg(STAGING_TTL.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    /// Reads the body: kept in memory up to [`STAGE_OVER`], streamed into a staging key beyond.
    async fn take_body(&self, body: Body, opts: &PutOptions) -> Result<(Staged, ETag, u64)> {
        let mut staging: Option<String> = None;
        let r = self.take_body_into(body, opts, &mut staging).await;
        if let (Err(_), Some(name)) = (&r, &staging) {
            // A failed or refused body: its staged part goes now (a cancelled put's part
            // expires with the staging TTL).
            let mut conn = self.conn.clone();
            let _: std::result::Result<(), _> =
                redis::cmd("DEL").arg(name).query_async(&mut conn).await;
        }
        r
    }

    async fn take_body_into(
        &self,
        body: Body,
        opts: &PutOptions,
        staging: &mut Option<String>,
    ) -> Result<(Staged, ETag, u64)> {
        let mut reader = body.reader(Some(MAX_OBJECT_SIZE));
        let mut buf = BytesMut::new();
        while let Some(chunk) = reader.next_chunk().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 >= STAGE_OVER {
                let name = staging.get_or_insert_with(|| self.staging_key()).clone();
                self.stage(&name, &buf).await?;
                buf.clear();
            }
        }
        let (etag, size) = reader.finish(opts.expected_etag.as_ref())?;
        match staging {
            None => Ok((Staged::Inline(buf.freeze()), etag, size)),
            Some(name) => {
                if !buf.is_empty() {
                    self.stage(name, &buf).await?;
                }
                Ok((Staged::Key(name.clone()), etag, size))
            }
        }
    }
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
        opts.answer(key, self.read_meta(key).await?)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        // A plain read (no condition that could make the body unneeded, no range): the meta
        // and the first bytes in one round trip.
        if opts.range.is_none() && opts.preconditions.is_empty() {
            // A small object: first without the transaction (see `read_small`).
            if let Some(got) = self.read_small(key).await? {
                return Ok(got);
            }
            // MULTI/EXEC, not a script: as atomic, and a third of the server's time.
            let (meta, first) = self.meta_and_head(key, READ_CHUNK, true).await?;
            let meta = packed::decode(&meta.ok_or_else(|| Error::not_found(key))?, Some(key))?;
            let first = Bytes::from(first);
            let range = opts.evaluate(&meta)?;
            check_len(key, &first, meta.size.min(READ_CHUNK))?;
            let body = self.body_stream(key, &meta, first, 0..meta.size);
            return Ok(GetResult { meta, range, body });
        }
        // A version can be replaced between reading its meta and its bytes: the byte read
        // checks the ETag inside a script, and the read starts again if it changed before the
        // first byte was served.
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let meta = self
                .read_meta(key)
                .await?
                .ok_or_else(|| Error::not_found(key))?;
            let range = opts.evaluate(&meta)?;
            let span = range.clone().unwrap_or(0..meta.size);
            let first_end = span.end.min(span.start + READ_CHUNK);
            let Some(first) = self.read_chunk(key, &meta, span.start..first_end).await? else {
                continue;
            };
            let body = self.body_stream(key, &meta, first, span);
            return Ok(GetResult { meta, range, body });
        }
        attempts.exhausted(format_args!("redis store: {key} changed while being read"))
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        // Bytes in memory that go as a script argument are hashed where they are (no copy, no
        // reading loop).
        let small = matches!(&body, Body::Bytes(b) if (b.len() as u64) < STAGE_OVER);
        let taken = match small {
            true => body.collect_digest_now(Some(MAX_OBJECT_SIZE), opts.expected_etag.as_ref()),
            false => Err(body),
        };
        let (staged, etag, size) = match taken {
            Ok(r) => {
                let (data, etag, _, size) = r?;
                (Staged::Inline(data), etag, size)
            }
            Err(body) => self.take_body(body, &opts).await?,
        };
        let r = self.put_staged(key, &staged, etag, size, opts).await;
        if let (Err(_), Staged::Key(name)) = (&r, &staged) {
            // The script removes it on 412; on any other failure it would wait for its TTL.
            let mut conn = self.conn.clone();
            let _: std::result::Result<(), _> =
                redis::cmd("DEL").arg(name).query_async(&mut conn).await;
        }
        r
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let script = &self.shared.delete;
        let mut cmd = self.script_cmd(script, key, None, 0);
        cmd.arg(Conditions {
            p: &opts.preconditions,
            all: false,
        });
        let reply = self.run(script, &cmd).await?;
        match array_of(&reply).unwrap_or_default() {
            [ok] if int_of(ok) == Some(1) => Ok(()),
            [ok] if int_of(ok) == Some(2) => Err(Error::not_found(key)),
            [ok, current] if int_of(ok) == Some(0) => Err(refused(key, current)?),
            _ => Err(unexpected("delete", &reply)),
        }
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        scan_page(&opts, |from, end, n| self.scan(from, end, n)).await
    }
}

impl RedisStore {
    /// Up to `n` live objects of the index from `from` and below `end`, in key order, read in
    /// batches of at most `list_batch` index entries (one script call each).
    async fn scan(&self, from: ScanFrom, end: Option<String>, n: usize) -> Result<Vec<Meta>> {
        let max: Vec<u8> = match end {
            Some(e) => [b"(", e.as_bytes()].concat(),
            None => b"+".to_vec(),
        };
        let mut min: Vec<u8> = match from {
            ScanFrom::After(k) => [b"(", k.as_bytes()].concat(),
            ScanFrom::At(k) => [b"[", k.as_bytes()].concat(),
        };
        let mut found: Vec<Meta> = Vec::new();
        while found.len() < n {
            let batch = (n - found.len()).min(self.list_batch);
            let mut inv = self.shared.list.prepare_invoke();
            inv.key(&self.shared.index_key)
                .arg(&min[..])
                .arg(&max[..])
                .arg(batch)
                .arg(&self.shared.meta_prefix);
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
                found.push(packed::decode(
                    bytes_of(m).ok_or_else(|| unexpected("list", m))?,
                    None,
                )?);
            }
            // Entries whose object expired were dropped: scan on until `n` or the end.
            if (scanned as usize) < batch {
                break;
            }
            min = [b"(", last].concat();
        }
        Ok(found)
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

/// `PreconditionFailed` carrying the meta a script returned for `key` (or none).
fn refused(key: &Key, current: &Value) -> Result<Error> {
    match current {
        Value::Nil | Value::Boolean(false) => Ok(Error::precondition_failed(None)),
        v => {
            let meta = packed::decode(
                bytes_of(v).ok_or_else(|| unexpected("a write", v))?,
                Some(key),
            )?;
            Ok(Error::precondition_failed(Some(&meta)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;

    /// The script arguments `Conditions` writes, as text.
    fn encoded(p: &Preconditions, all: bool) -> Vec<String> {
        Conditions { p, all }
            .to_redis_args()
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

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
        assert_eq!(
            encoded(&p, false),
            [
                format!(" {}", a.opaque()), // weak tags never match If-Match
                format!(" w {}", a.opaque()),
                "1".into()
            ]
        );
        let absent = Preconditions::if_absent();
        assert_eq!(
            encoded(&absent, false),
            ["", "*"],
            "trailing absent ones left out"
        );
        assert_eq!(encoded(&absent, true), ["", "*", ""]);
        let only_weak = Preconditions {
            if_match: Some(ETagCondition::Tags(vec![w.clone()])),
            ..Default::default()
        };
        assert_eq!(
            encoded(&only_weak, false),
            [" "],
            "present, matching nothing"
        );
        assert!(encoded(&Preconditions::default(), false).is_empty());
        assert_eq!(encoded(&Preconditions::default(), true), ["", "", ""]);
    }
}
