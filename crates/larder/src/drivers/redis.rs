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
//! {prefix}:o:<key>   string: the object's value: its body, then its meta (packed, see
//!                    below), its ETag's opaque value and a fixed 60-byte footer
//!                    (Last-Modified ms, expiry ms, the two lengths): `value.rs`
//! {prefix}:idx       sorted set, every member score 0: the keys, for ordered listing
//! {prefix}:layout    "2": the layout this store is in
//! ```
//!
//! One key per object, the way a hand-written CAS on Redis keeps a value: a read of one key is
//! one version (meta and bytes together, no transaction), and a conditional write reads and
//! writes that one key. The body comes first so that a range of it is one `GETRANGE` at its own
//! offsets; everything else is found from the end.
//!
//! The meta is this store's own compact encoding (a version byte, then length-prefixed
//! fields: `packed.rs`), cheap to write and to read on every CAS attempt; a meta written as
//! [`Meta::encode`]'s JSON by earlier versions is still read (told apart by its first byte).
//!
//! Earlier versions of this store kept an object in two keys (a hash `{prefix}:m:<key>` of
//! the meta, ETag, Last-Modified and expiry, beside the body in `{prefix}:b:<key>`), and wrote
//! no `{prefix}:layout`. The first store opened without it converts every object in the index
//! to the one value, each in one atomic script step keeping its bytes and expiry, then records
//! the layout; a layout this build does not know is refused, never misread. Older processes
//! must be stopped first: they neither read nor write the new layout.
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
//!   memory and sent, as the whole new value, as a script argument; a longer body is appended,
//!   as it arrives, to a staging key `{prefix}:t:<random>` (expiring after [`STAGING_TTL`]
//!   unless refreshed, and removed on failure), to which the script appends the rest of the
//!   value and which it renames into place. Nothing is visible until the body is complete and
//!   its digest checked. The script reads the current value's tail, decides, and writes the
//!   value with its expiry (`SET … PXAT`, or a plain `SET`, which clears the old one) and, for
//!   a new key, the index entry. The preconditions are encoded for the script by `Conditions`:
//!   Rust can't run the shared evaluator inside Redis, so the script implements
//!   [`Preconditions::evaluate_write`] on the encoding (If-Match: strong comparison, so only
//!   strong tags are passed and a weak tag never matches; If-None-Match: weak comparison, every
//!   tag's opaque value; `*`; If-Unmodified-Since in whole seconds of Last-Modified, only when
//!   If-Match is absent). `tests/redis.rs` checks the script against the shared evaluator on
//!   every combination of a table of conditions and states. On failure the script returns the
//!   current meta, so `PreconditionFailed` carries it.
//! - `delete`: the same, then `DEL` of the value and `ZREM` from the index.
//! - `get` without a range: one `GETRANGE` of the value's first 16 KiB (a conditional get
//!   pipelines the value's tail with it): a smaller object is read whole by it (one version's
//!   meta and bytes), and its conditions are decided on it. A larger plain read takes the meta
//!   and the first chunk in one script call. Any other read (a range, or a condition on a
//!   larger object) takes the meta from the value's tail, decides with
//!   [`GetOptions::evaluate`], then a script returns the first chunk (`GETRANGE`) only if the
//!   ETag is still the one decided on (else the read starts again).
//!   The rest of the body streams in chunks of [`READ_CHUNK`], each read by that script on the
//!   same condition: meta and bytes always belong to one version, and a body replaced
//!   mid-stream ends the stream with a retryable error rather than mixing two versions.
//! - Every put, delete and condition is supported; all of them atomic at cluster scope.
//! - Durability is the deployment's: with asynchronous replication a failover can lose
//!   acknowledged writes, and with persistence off a server restart loses everything.
//!
//! # TTL
//!
//! `expires_at` is stored in the meta and the footer, and the value's key expires at that same
//! millisecond, so Redis removes the object itself. An expired object is absent for reads and conditions
//! (Redis's own expiry, on the server clock). Its index entry is removed lazily by the next
//! listing that meets it (in a script: checked and removed atomically).
//!
//! # Costs and limits
//!
//! - Listing: [`scan_page`] over `ZRANGEBYLEX` on the index, in batches, with the meta of each
//!   key read in the same script (by names taken from the index, not passed as `KEYS`:
//!   standalone Redis allows it, and on a cluster they share the store's hash slot): a page
//!   costs `O(log N + page)`; a common prefix is one range read that jumps past it.
//! - A get of an object whose value is over 16 KiB costs one round trip more than a small
//!   one's (the first `GETRANGE` finds it is larger); its transfer dominates.
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
use crate::meta::{from_millis, Meta};

mod packed;
mod value;
use crate::precondition::{http_seconds, ETagCondition, Preconditions};
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
use value::{read_tail, Tail, TAIL_READ};

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

/// A get first reads this many bytes of the object's value: an object whose value is shorter
/// is read whole by that one command (the body comes first, so for a larger one these are
/// bytes of the body, which the read then takes again with the meta, atomically).
const WHOLE_READ: u64 = 16 << 10;

/// The layout this store writes, recorded in `{prefix}:layout` (absent: the hash layout of
/// earlier versions, which [`MIGRATE`] converts).
const LAYOUT: &str = "2";

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

/// The precondition decision shared by the put and delete scripts, after [`value::read_tail`].
/// Mirrors `Preconditions::evaluate_write` on the encoding of [`Conditions`]; sets `ok`.
/// KEYS[1] the object's value. `im` If-Match, `inm` If-None-Match, as [`write_list`] encodes
/// them (`""` absent, [`ANY`] for `*`, one tag as it is, or several each after a space; If-Match:
/// the strong ones only); `ius` If-Unmodified-Since in seconds, or "" (set by the script before
/// this part, from its arguments). Every argument
/// costs the server time on every call (some 1,300 instructions each: it is parsed, becomes a
/// Lua string and grows the ARGV table), so the scripts take as few as they can: trailing
/// empty ones are left out, and what the new value says of itself is read from its footer.
const DECIDE: &str = r#"
-- Whether the condition list c (`write_list`) names the current ETag (at `e_at` in t, `el`
-- bytes): one tag is compared in place; a list (a space before each tag) is searched.
local e_at = n - 59 - el
local function names(c)
  if string.byte(c) ~= 32 then
    return el == #c and string.find(t, c, e_at, true) == e_at
  end
  if el == 0 then return false end -- a stored tag is never empty
  local e = string.sub(t, e_at, n - 60)
  local from = 1
  while true do
    local i, j = string.find(c, e, from, true)
    if not i then return false end
    if string.byte(c, i - 1) == 32 and (j == #c or string.byte(c, j + 1) == 32) then
      return true
    end
    from = i + 1
  end
end
local ok = true
-- "\1" is `*`.
if im ~= '' then
  if n == 0 or (im ~= '\1' and not names(im)) then ok = false end
elseif ius ~= '' and n > 0 then
  -- Last-Modified in whole seconds (before the epoch: 0), as `http_seconds` truncates it.
  local u = tonumber(string.sub(t, n - 59, n - 40))
  if math.max(0, math.floor(u / 1000)) > tonumber(ius) then ok = false end
end
if ok and inm ~= '' and n > 0 then
  if inm == '\1' or names(inm) then ok = false end
end
-- The index, "{prefix}:idx", and the key's member in it (after "{prefix}:o:"), named from
-- KEYS[1], not passed (only a create or a delete touches them; on a cluster the index is in
-- the same hash slot; a prefix has no braces).
local brace = string.find(KEYS[1], '}', 1, true)
"#;

/// What the put script runs before [`DECIDE`]: its conditions, from ARGV 2-4.
const PUT_HEAD: &str = r#"
local im, inm, ius = ARGV[2] or '', ARGV[3] or '', ARGV[4] or ''
"#;

/// KEYS: the object's value, and the staging key when the body is in one.
/// ARGV: 1 the new value (inline), or what follows the body (staged); 2-4 the conditions (see
/// [`DECIDE`]; absent ones at the end left out, unless staged); 5 (staged) the body's size.
/// Returns 1 (created) or 2 (replaced) when written; when refused, the current value's last
/// bytes (its meta among them, see [`refused`]), or nil when there is none; {3, current
/// Last-Modified ms} when the current version is newer than this write's stamp (the caller
/// restamps and runs the script again, which decides again); {4} when the staging key is gone
/// or not the right size.
const PUT_BODY: &str = r#"
local staged = KEYS[2] ~= nil
if not ok then
  if staged then redis.call('DEL', KEYS[2]) end
  return n > 0 and t
end
local v = ARGV[1]
local vn = #v
if n > 0 then
  local u = string.sub(t, n - 59, n - 40)
  if tonumber(u) > tonumber(string.sub(v, vn - 59, vn - 40)) then return {3, u} end
end
-- The expiry, if the new value has one (its last column is a digit).
local x = string.byte(v, vn - 20) ~= 32 and string.match(string.sub(v, vn - 39, vn - 20), '%d+')
if staged then
  if redis.call('STRLEN', KEYS[2]) ~= tonumber(ARGV[5]) then return {4} end
  redis.call('APPEND', KEYS[2], v)
  redis.call('RENAME', KEYS[2], KEYS[1])
  if x then redis.call('PEXPIREAT', KEYS[1], x) else redis.call('PERSIST', KEYS[1]) end
elseif x then
  redis.call('SET', KEYS[1], v, 'PXAT', x)
else
  -- Also clears an expiry the version it replaces had.
  redis.call('SET', KEYS[1], v)
end
-- A live object is in the index already (an entry goes only once its value is gone).
if n > 0 then return 2 end
redis.call('ZADD', string.sub(KEYS[1], 1, brace) .. ':idx', '0', string.sub(KEYS[1], brace + 4))
return 1
"#;

/// What the delete script runs before [`DECIDE`]: its conditions, ARGV 1-3 (absent ones at
/// the end left out).
const DELETE_HEAD: &str = r#"
local im, inm, ius = ARGV[1] or '', ARGV[2] or '', ARGV[3] or ''
"#;

/// KEYS: the object's value. Returns {1} deleted, {0, the value's last bytes} refused, {2}
/// missing (an index entry left by an expired object goes too).
const DELETE_BODY: &str = r#"
local index, member = string.sub(KEYS[1], 1, brace) .. ':idx', string.sub(KEYS[1], brace + 4)
if n == 0 then
  redis.call('ZREM', index, member)
  return {2}
end
if not ok then return {0, t} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', index, member)
return {1}
"#;

/// After [`value::read_tail`]. KEYS: the object's value. ARGV: the ETag opaque decided on, the
/// first and last byte of the body wanted. Returns {1, bytes}, or {0} when the version changed
/// (or is gone).
const READ: &str = r#"
local e_at = n - 59 - el
if n == 0 or el ~= #ARGV[1] or string.find(t, ARGV[1], e_at, true) ~= e_at then return {0} end
return {1, redis.call('GETRANGE', KEYS[1], ARGV[2], ARGV[3])}
"#;

/// After [`value::read_tail`]. KEYS: the object's value. ARGV: how many bytes of the body to
/// return at most. Returns {meta, the body's first bytes}, or nil when there is no object.
const FIRST: &str = r#"
if n == 0 then return false end
local m = string.sub(t, n - 59 - el - ml, n - 60 - el)
local len = math.min(redis.call('STRLEN', KEYS[1]) - 60 - el - ml, tonumber(ARGV[1]))
if len <= 0 then return {m, ''} end
return {m, redis.call('GETRANGE', KEYS[1], '0', tostring(len - 1))}
"#;

/// After [`value::read_tail`]. KEYS: index. ARGV: min, max (ZRANGEBYLEX specs), count, value
/// key prefix. Returns {scanned, last member or "", meta...}; index entries whose object
/// expired are removed.
const LIST: &str = r#"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {#members, members[#members] or ''}
for _, k in ipairs(members) do
  local key = ARGV[4] .. k
  TAIL
  if n > 0 then
    out[#out + 1] = string.sub(t, n - 59 - el - ml, n - 60 - el)
  else
    redis.call('ZREM', KEYS[1], k)
  end
end
return out
"#;

/// Converts the objects of the index from `min` (a ZRANGEBYLEX spec), at most `count` of them,
/// from the layout of earlier versions of this store (a hash `{prefix}:m:<key>` of the meta
/// `m`, the ETag `e`, Last-Modified `u` in ms (or, earlier still, `t` in seconds) and expiry
/// `x`, beside the body in `{prefix}:b:<key>`) to one value, each object in one atomic step.
/// KEYS: index. ARGV: min, count, hash prefix, body prefix, value prefix.
/// Returns {scanned, last member or ""}.
const MIGRATE: &str = r#"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
for _, k in ipairs(members) do
  local h, b, o = ARGV[3] .. k, ARGV[4] .. k, ARGV[5] .. k
  local cur = redis.call('HMGET', h, 'm', 'e', 'u', 't', 'x')
  local m, e, u, t, x = cur[1], cur[2], cur[3], cur[4], cur[5]
  if m and e then
    u = u or (t and string.format('%.0f', tonumber(t) * 1000)) or '0'
    if not x or x == '' then
      -- Objects written before `x` existed keep their expiry on the hash only.
      local ttl = redis.call('PTTL', h)
      if ttl > 0 then
        local now = redis.call('TIME')
        x = string.format('%.0f', now[1] * 1000 + math.floor(now[2] / 1000) + ttl)
      else
        x = ''
      end
    end
    local rest = m .. e .. string.format('%20s%20s%10d%10d', u, x, #e, #m)
    if redis.call('EXISTS', b) == 1 then
      redis.call('RENAME', b, o)
      redis.call('APPEND', o, rest)
    else
      redis.call('SET', o, rest)
    end
    if x ~= '' then redis.call('PEXPIREAT', o, x) else redis.call('PERSIST', o) end
    redis.call('DEL', h)
  end
end
return {#members, members[#members] or ''}
"#;

/// An If-Match (`strong_only`) or If-None-Match list as the scripts take it: empty when
/// absent, [`ANY`] for `*`, the opaque value of a list's one tag as it is (when not empty: the
/// script compares it with the stored one in place, the common CAS), or else the opaque values
/// of its tags (If-Match: the strong ones only, weak ones never match) each after a space (an
/// opaque value has no space, nor the byte of `ANY`).
fn write_list(out: &mut impl std::io::Write, c: &Option<ETagCondition>, strong_only: bool) {
    // Writes go to a command's (or a Vec's) buffer: they cannot fail.
    match c {
        None => {}
        Some(ETagCondition::Any) => {
            let _ = out.write_all(ANY);
        }
        Some(ETagCondition::Tags(tags)) => {
            let mut kept = tags.iter().filter(|t| !(strong_only && t.is_weak()));
            if let (Some(one), None) = (kept.clone().next(), kept.clone().nth(1)) {
                if !one.opaque().is_empty() {
                    let _ = out.write_all(one.opaque().as_bytes());
                    return;
                }
            }
            let mut any = false;
            for t in kept.by_ref() {
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

/// `*` in a condition list (a control byte: never in an entity tag).
const ANY: &[u8] = b"\x01";

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
    first: Script,
    list: Script,
    /// `{prefix}:o:`
    value_prefix: String,
    /// `{prefix}:idx`
    index_key: String,
    /// Set once the store is known to be in this build's layout ([`RedisStore::ready`]).
    layout: tokio::sync::OnceCell<()>,
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
        let tail = read_tail("KEYS[1]");
        let store = RedisStore {
            conn,
            list_batch,
            shared: std::sync::Arc::new(Shared {
                put: Script::new(&format!("{PUT_HEAD}{tail}{DECIDE}{PUT_BODY}")),
                delete: Script::new(&format!("{DELETE_HEAD}{tail}{DECIDE}{DELETE_BODY}")),
                read: Script::new(&format!("{tail}{READ}")),
                first: Script::new(&format!("{tail}{FIRST}")),
                list: Script::new(&LIST.replace("TAIL", &read_tail("key"))),
                value_prefix: format!("{{{prefix}}}:o:"),
                index_key: format!("{{{prefix}}}:idx"),
                layout: tokio::sync::OnceCell::new(),
            }),
            prefix,
        };
        // A server that cannot answer yet (loading its dataset, say) leaves the check to the
        // first request, which fails as retryable until it passes; a layout this build does
        // not know fails the open.
        match store.ready().await {
            Err(e) if !e.is_retryable() => Err(e),
            _ => Ok(store),
        }
    }

    /// Whether the store is in this build's layout, checked (and, from the hash layout,
    /// converted) once per store by [`ensure_layout`](Self::ensure_layout); every operation
    /// waits for it.
    async fn ready(&self) -> Result<()> {
        self.shared
            .layout
            .get_or_try_init(|| self.ensure_layout())
            .await
            .map(|_| ())
    }

    /// Brings the store to this build's layout: kept when `{prefix}:layout` says so, converted
    /// from the hash layout of earlier versions when it is absent (then recorded), refused when
    /// it names another (a newer build's, never misread).
    async fn ensure_layout(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let marker = format!("{{{}}}:layout", self.prefix);
        let found: Option<String> = redis::cmd("GET")
            .arg(&marker)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        match found.as_deref() {
            Some(LAYOUT) => return Ok(()),
            Some(other) => {
                return Err(Error::backend(format!(
                    "redis store {}: layout {other} is not this build's ({LAYOUT}): written by a \
                     newer version of Larder",
                    self.prefix
                )))
            }
            None => {}
        }
        let migrate = Script::new(MIGRATE);
        let p = &self.prefix;
        let mut min = b"-".to_vec();
        loop {
            let mut inv = migrate.prepare_invoke();
            inv.key(&self.shared.index_key)
                .arg(&min[..])
                .arg(self.list_batch)
                .arg(format!("{{{p}}}:m:"))
                .arg(format!("{{{p}}}:b:"))
                .arg(&self.shared.value_prefix);
            let (scanned, last): (usize, Vec<u8>) =
                inv.invoke_async(&mut conn).await.map_err(backend)?;
            if scanned < self.list_batch {
                break;
            }
            min = [b"(", &last[..]].concat();
        }
        redis::cmd("SET")
            .arg(&marker)
            .arg(LAYOUT)
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
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

    fn value_key<'a>(&'a self, key: &'a Key) -> Joined<'a> {
        Joined(&self.shared.value_prefix, key.as_str())
    }

    /// `EVALSHA` of `script` on `key`: KEYS the object's value (and `staging`, when there is
    /// one), in one buffer with room for `more` bytes of arguments. Built by hand, not by
    /// `redis::ScriptInvocation`, which makes a vector per argument and copies them all again
    /// into the command.
    fn script_cmd(&self, script: &Script, key: &Key, staging: Option<&str>, more: usize) -> Cmd {
        let s = &self.shared;
        let k = key.as_str().len();
        let mut cmd = Cmd::with_capacity(16, 120 + s.value_prefix.len() + k + more);
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(if staging.is_some() { 2 } else { 1 })
            .arg(self.value_key(key));
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

    /// Test seam (feature `test-util`): the Redis key holding `key`'s value.
    #[cfg(any(test, feature = "test-util"))]
    pub fn redis_key(&self, key: &Key) -> String {
        [&self.shared.value_prefix, key.as_str()].concat()
    }

    /// `GETRANGE` of `key`'s value from `start` to `end` (inclusive; negative: from the end).
    fn getrange_cmd(&self, key: &Key, start: i64, end: i64) -> Cmd {
        let mut cmd =
            Cmd::with_capacity(4, 48 + self.shared.value_prefix.len() + key.as_str().len());
        cmd.arg("GETRANGE")
            .arg(self.value_key(key))
            .arg(start)
            .arg(end);
        cmd
    }

    /// [`getrange_cmd`](Self::getrange_cmd)'s bytes: one version's (`""`: no object).
    async fn getrange(&self, key: &Key, start: i64, end: i64) -> Result<Vec<u8>> {
        let mut conn = self.conn.clone();
        self.getrange_cmd(key, start, end)
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    /// The value's first [`WHOLE_READ`] bytes and its last [`TAIL_READ`], in one pipelined
    /// round trip (two reads, each of one version, not necessarily the same one).
    async fn head_and_tail(&self, key: &Key) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut conn = self.conn.clone();
        redis::Pipeline::with_capacity(2)
            .add_command(self.getrange_cmd(key, 0, WHOLE_READ as i64 - 1))
            .add_command(self.getrange_cmd(key, -(TAIL_READ as i64), -1))
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    /// The meta of the object at `key`, read from the end of its value: one `GETRANGE` of
    /// [`TAIL_READ`] bytes, or, for a longer meta, a script that reads it whole (atomically).
    async fn read_meta(&self, key: &Key) -> Result<Option<Meta>> {
        let end = self.getrange(key, -(TAIL_READ as i64), -1).await?;
        self.meta_at_end(key, &end).await
    }

    /// The meta in `end`, the last [`TAIL_READ`] bytes of `key`'s value (`""`: no object); a
    /// longer meta is read whole by a script.
    async fn meta_at_end(&self, key: &Key, end: &[u8]) -> Result<Option<Meta>> {
        if end.is_empty() {
            return Ok(None);
        }
        let tail = Tail::of(end).ok_or_else(|| malformed(key))?;
        if let Some(m) = tail.meta(end) {
            return packed::decode(m, Some(key)).map(Some);
        }
        if end.len() < TAIL_READ {
            return Err(malformed(key));
        }
        Ok(self.read_first(key, 0).await?.map(|(meta, _)| meta))
    }

    /// The meta of the object at `key` and the first `len` bytes of its body (fewer when the
    /// body is shorter), in one script call: one version's.
    async fn read_first(&self, key: &Key, len: u64) -> Result<Option<(Meta, Bytes)>> {
        let script = &self.shared.first;
        let mut cmd = self.script_cmd(script, key, None, 24);
        cmd.arg(len);
        match self.run(script, &cmd).await? {
            Value::Nil | Value::Boolean(false) => Ok(None),
            reply => match array_of(&reply) {
                Some([m, data]) => {
                    let meta = packed::decode(
                        bytes_of(m).ok_or_else(|| unexpected("read", m))?,
                        Some(key),
                    )?;
                    let data = bytes_of(data).ok_or_else(|| unexpected("read", data))?;
                    check_len(key, data, meta.size.min(len))?;
                    Ok(Some((meta, Bytes::copy_from_slice(data))))
                }
                _ => Err(unexpected("read", &reply)),
            },
        }
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
            let packed = packed::encode(&meta);
            let (staging, inline) = match staged {
                Staged::Inline(data) => (None, &data[..]),
                Staged::Key(name) => (Some(name.as_str()), &[][..]),
            };
            let script = &self.shared.put;
            let tail = value::tail_len(&meta, &packed);
            let mut cmd = self.script_cmd(script, key, staging, inline.len() + tail);
            {
                // The new value (or, staged, what follows its body) straight into the command.
                use std::io::Write;
                let mut w = cmd.writer_for_next_arg();
                let _ = w.write_all(inline);
                value::write_tail(&mut w, &meta, &packed);
            }
            cmd.arg(Conditions {
                p: &opts.preconditions,
                all: staging.is_some(),
            });
            if staging.is_some() {
                cmd.arg(size);
            }
            let reply = self.run(script, &cmd).await?;
            match &reply {
                Value::Int(1) => {
                    return Ok(PutResult {
                        meta,
                        created: true,
                    })
                }
                Value::Int(2) => {
                    return Ok(PutResult {
                        meta,
                        created: false,
                    })
                }
                Value::Nil | Value::Boolean(false) | Value::BulkString(_) => {
                    return Err(refused(key, &reply)?)
                }
                _ => {}
            }
            match array_of(&reply).unwrap_or_default() {
                [ok, ms] if int_of(ok) == Some(3) => {
                    let ms = bytes_of(ms)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.trim().parse::<i64>().ok())
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
        self.ready().await?;
        opts.answer(key, self.read_meta(key).await?)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        self.ready().await?;
        // The meta of a larger object, when the first round trip brought it.
        let mut known = None;
        // A range goes straight to the meta and its bytes: ranges are asked of large objects,
        // where a read of the first bytes would be a round trip for nothing.
        if opts.range.is_none() {
            let plain = opts.preconditions.is_empty();
            // One command reads a small object whole: its meta and its bytes, one version's. A
            // conditional read also takes the value's tail in the same round trip, so that a
            // larger object's 304 or 412 needs no other.
            let (head, end) = match plain {
                true => (self.getrange(key, 0, WHOLE_READ as i64 - 1).await?, None),
                false => {
                    let (head, end) = self.head_and_tail(key).await?;
                    (head, Some(end))
                }
            };
            if head.is_empty() {
                return Err(Error::not_found(key));
            }
            if (head.len() as u64) < WHOLE_READ {
                let (meta, body) = whole(key, head)?;
                let (meta, range) = opts.evaluate_owned(meta)?;
                let body = match &range {
                    Some(r) => body.slice(r.start as usize..r.end as usize),
                    None => body,
                };
                return Ok(GetResult {
                    meta,
                    range,
                    body: futures::stream::once(async move { Ok(body) }).boxed(),
                });
            }
            match end {
                // A larger object, plain: the meta and the first chunk in one script call.
                None => {
                    let (meta, first) = self
                        .read_first(key, READ_CHUNK)
                        .await?
                        .ok_or_else(|| Error::not_found(key))?;
                    let body = self.body_stream(key, &meta, first, 0..meta.size);
                    return Ok(GetResult {
                        meta,
                        range: None,
                        body,
                    });
                }
                Some(end) => known = self.meta_at_end(key, &end).await?,
            }
        }
        // The meta decides; then the bytes are read only if the ETag is still the one decided
        // on (checked inside a script), and the read starts again if it changed before the
        // first byte was served.
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let meta = match known.take() {
                Some(meta) => meta,
                None => self
                    .read_meta(key)
                    .await?
                    .ok_or_else(|| Error::not_found(key))?,
            };
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
                .arg(&self.shared.value_prefix);
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

/// A value without a footer where one must be: corruption (or a key this store did not write).
fn malformed(key: &Key) -> Error {
    Error::backend(format!("redis store: the value of {key} is malformed"))
}

/// The meta and the body of a whole value of `key`.
fn whole(key: &Key, value: Vec<u8>) -> Result<(Meta, Bytes)> {
    let tail = Tail::of(&value).ok_or_else(|| malformed(key))?;
    let meta = packed::decode(tail.meta(&value).ok_or_else(|| malformed(key))?, Some(key))?;
    let body_len = value.len() - tail.len;
    check_len(key, &value[..body_len], meta.size)?;
    let mut body = Bytes::from(value);
    body.truncate(body_len);
    Ok((meta, body))
}

/// `PreconditionFailed` carrying the meta of the current version of `key`, from the last
/// bytes of its value a script returned (none: no object). Returned as they were read, so the
/// script builds no string for a refusal, the most frequent reply of a contended write.
fn refused(key: &Key, current: &Value) -> Result<Error> {
    match current {
        Value::Nil | Value::Boolean(false) => Ok(Error::precondition_failed(None)),
        v => {
            let end = bytes_of(v).ok_or_else(|| unexpected("a write", v))?;
            let m = Tail::of(end)
                .and_then(|t| t.meta(end))
                .ok_or_else(|| malformed(key))?;
            let meta = packed::decode(m, Some(key))?;
            Ok(Error::PreconditionFailed {
                current: Some(Box::new(meta)),
            })
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
                a.opaque().to_string(), // weak tags never match If-Match: one tag, as it is
                format!(" w {}", a.opaque()),
                "1".into()
            ]
        );
        let absent = Preconditions::if_absent();
        assert_eq!(
            encoded(&absent, false),
            ["", "\x01"],
            "trailing absent ones left out"
        );
        assert_eq!(encoded(&absent, true), ["", "\x01", ""]);
        // One tag whose opaque value is empty goes as a list: "" would be no condition.
        let empty = Preconditions::if_match(ETag::strong("").unwrap());
        assert_eq!(encoded(&empty, false), [" "]);
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
