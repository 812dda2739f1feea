//! Object metadata, and the one encoding of it that drivers store beside the bytes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::store::PutOptions;

/// The longest TTL a write may ask for: 100 years of 365 days (3,153,600,000 seconds).
///
/// Longer is refused with `InvalidInput` by every driver (through
/// [`Capabilities::check_put`](crate::Capabilities::check_put)) and answered 400 by the server,
/// so every expiry stays far inside what a date can be written as.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Milliseconds from the epoch to 9999-12-31T23:59:59.999Z, the last instant an HTTP date or an
/// RFC 3339 timestamp can carry.
const LATEST_MS: i64 = 253_402_300_799_999;

/// What is known about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Where it is.
    pub key: Key,
    /// Strong content ETag (SHA-256 of the bytes).
    pub etag: ETag,
    /// Length in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: SystemTime,
    /// When it expires, if it was written with a TTL.
    pub expires_at: Option<SystemTime>,
    /// Media type given when it was written.
    pub content_type: Option<String>,
    /// User metadata given when it was written (never request headers wholesale).
    pub metadata: BTreeMap<String, String>,
}

impl Meta {
    /// Whether the object has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether the object has expired now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(SystemTime::now())
    }

    /// The metadata of the version a write is about to store: the one constructor every driver
    /// uses, so that the rules below hold in all of them.
    ///
    /// - `last_modified` is now (whole milliseconds), but never earlier than `replaces`, the
    ///   `last_modified` of the version this one replaces (if any): a writer whose clock is
    ///   behind, or that stamped its body before a faster writer committed, must not give the
    ///   newer version an older date, or an `If-Modified-Since` taken from the older version
    ///   would answer 304 for the newer one.
    /// - `expires_at` is `last_modified + opts.ttl`, computed with checked arithmetic: a TTL of
    ///   zero or over [`MAX_TTL`], or one that can't be added, is `InvalidInput`, never a panic.
    /// - `content_type` and `metadata` come from `opts`.
    pub fn next_version(
        key: &Key,
        etag: ETag,
        size: u64,
        replaces: Option<SystemTime>,
        opts: &PutOptions,
    ) -> Result<Meta> {
        let now = now_millis();
        let last_modified = replaces.map_or(now, |r| now.max(r));
        let expires_at = opts
            .ttl
            .map(|ttl| expiry_after(last_modified, ttl))
            .transpose()?;
        Ok(Meta {
            key: key.clone(),
            etag,
            size,
            last_modified,
            expires_at,
            content_type: opts.content_type.clone(),
            metadata: opts.metadata.clone(),
        })
    }

    /// Encodes the metadata (JSON) for drivers that store it beside the bytes.
    pub fn encode(&self) -> String {
        serde_json::to_string(&StoredMeta::of(self)).expect("metadata always serializes")
    }

    /// Decodes what [`Meta::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Meta> {
        let corrupt =
            |e: &dyn std::fmt::Display| Error::backend(format!("corrupt stored metadata: {e}"));
        let mut stored: StoredMeta = serde_json::from_slice(bytes).map_err(|e| corrupt(&e))?;
        let key = Key::new(stored.key.take().ok_or_else(|| corrupt(&"no key"))?)?;
        let size = stored.size.ok_or_else(|| corrupt(&"no size"))?;
        Ok(stored.into_meta(key, size))
    }
}

/// Checks a TTL asked for by a caller: positive and at most [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::InvalidInput("a TTL must be positive".into()));
    }
    if ttl > MAX_TTL {
        return Err(Error::InvalidInput(format!(
            "a TTL of {} s is over the maximum of {} s (100 years)",
            ttl.as_secs(),
            MAX_TTL.as_secs()
        )));
    }
    Ok(())
}

/// `from + ttl`, for a TTL a caller asked for: checked (see [`check_ttl`]), never a panic. An
/// expiry past the last [`renderable`] time (only reachable from a stored `from` that is
/// already far in the future) is that last time.
pub fn expiry_after(from: SystemTime, ttl: Duration) -> Result<SystemTime> {
    check_ttl(ttl)?;
    let latest = from_millis(LATEST_MS);
    Ok(from.checked_add(ttl).map_or(latest, |t| t.min(latest)))
}

/// `t` moved into the range every date format can carry: the Unix epoch to
/// 9999-12-31T23:59:59.999Z. Times are rendered (HTTP dates, RFC 3339) only through this, so a
/// stored record with an odd time is still served, with the nearest date that can be written.
pub fn renderable(t: SystemTime) -> SystemTime {
    from_millis(to_millis(t).clamp(0, LATEST_MS))
}

/// The whole seconds since the Unix epoch of [`renderable`]`(t)`, without building that time
/// (what a cache of rendered dates is keyed by: one date per second).
pub fn renderable_seconds(t: SystemTime) -> i64 {
    to_millis(t).clamp(0, LATEST_MS).div_euclid(1000)
}

/// `t` as an HTTP date (IMF-fixdate), [`renderable`] first, so it never panics.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(renderable(t))
}

/// Milliseconds since the Unix epoch (the storage resolution of times), saturating at the
/// ends of `i64`.
pub fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The inverse of [`to_millis`], for any `ms` (what a stored record says is not trusted): a time
/// the platform cannot represent (only possible where `SystemTime` is narrower than Linux's)
/// becomes the year 9999 or the epoch, never a panic.
pub fn from_millis(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(LATEST_MS as u64)
    } else {
        UNIX_EPOCH
    })
}

/// The current time at storage resolution (whole milliseconds), so a time read back from any
/// driver equals the one returned by the write.
pub fn now_millis() -> SystemTime {
    from_millis(to_millis(SystemTime::now()))
}

/// Metadata as stored (JSON): in full by [`Meta::encode`]; without the key and size (the blob
/// has both) and with the id of the write that made it by the object-store driver.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    etag: ETag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    modified_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    /// Unique per write: tells a write that landed from an equal one by another writer (the
    /// object-store driver's; empty elsewhere).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) write_id: String,
}

impl StoredMeta {
    /// `m` in full.
    fn of(m: &Meta) -> Self {
        StoredMeta {
            key: Some(m.key.as_str().to_owned()),
            etag: m.etag.clone(),
            size: Some(m.size),
            modified_ms: to_millis(m.last_modified),
            expires_ms: m.expires_at.map(to_millis),
            content_type: m.content_type.clone(),
            metadata: m.metadata.clone(),
            write_id: String::new(),
        }
    }

    /// `m` without its key and size, written by `write_id`.
    #[allow(dead_code)] // used by the object-store driver
    pub(crate) fn of_blob(m: &Meta, write_id: &str) -> Self {
        StoredMeta {
            key: None,
            size: None,
            write_id: write_id.to_owned(),
            ..Self::of(m)
        }
    }

    /// The metadata of the object at `key` with `size` bytes.
    pub(crate) fn into_meta(self, key: Key, size: u64) -> Meta {
        Meta {
            key,
            etag: self.etag,
            size,
            last_modified: from_millis(self.modified_ms),
            expires_at: self.expires_ms.map(from_millis),
            content_type: self.content_type,
            metadata: self.metadata,
        }
    }
}

#[cfg(test)]
impl Meta {
    /// A version with every field set, and text that needs escaping in JSON, in a header and in
    /// a URL: for the round trips of the encodings.
    pub(crate) fn sample() -> Meta {
        let now = now_millis();
        Meta {
            key: Key::new("a/ü k").unwrap(),
            etag: ETag::of(b"x"),
            size: 1,
            last_modified: now,
            expires_at: Some(now + Duration::from_millis(60_500)),
            content_type: Some("text/plain; charset=utf-8".into()),
            metadata: [("owner".to_string(), "zoë \"q\"\n".to_string())].into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips() {
        let m = Meta::sample();
        assert_eq!(Meta::decode(m.encode().as_bytes()).unwrap(), m);
        let expired = Meta {
            expires_at: Some(from_millis(-5)),
            ..Meta::sample()
        };
        assert_eq!(Meta::decode(expired.encode().as_bytes()).unwrap(), expired);
        assert!(expired.is_expired());
        // A record without its key or size (the object-store form) is not a full one.
        for field in ["key", "size"] {
            let mut json: serde_json::Value = serde_json::from_str(&m.encode()).unwrap();
            json.as_object_mut().unwrap().remove(field);
            let e = Meta::decode(json.to_string().as_bytes()).unwrap_err();
            assert!(e.to_string().contains(&format!("no {field}")), "{e}");
        }
    }

    fn opts(ttl: Option<Duration>) -> PutOptions {
        PutOptions {
            ttl,
            ..Default::default()
        }
    }

    #[test]
    fn next_version_checks_the_ttl_and_never_goes_back() {
        let key = Key::new("k").unwrap();
        let next = |replaces, ttl| Meta::next_version(&key, ETag::of(b""), 0, replaces, &opts(ttl));
        for ttl in [
            Duration::ZERO,
            MAX_TTL + Duration::from_millis(1),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            assert!(
                matches!(next(None, Some(ttl)), Err(Error::InvalidInput(_))),
                "{ttl:?}"
            );
        }
        let m = next(None, Some(MAX_TTL)).unwrap();
        assert_eq!(m.expires_at, Some(m.last_modified + MAX_TTL));
        // A version newer than now (a clock stepped back) is not gone back on.
        let ahead = now_millis() + Duration::from_secs(3600);
        let m = next(Some(ahead), Some(Duration::from_secs(5))).unwrap();
        assert_eq!(m.last_modified, ahead);
        assert_eq!(m.expires_at, Some(ahead + Duration::from_secs(5)));
        let m = next(Some(UNIX_EPOCH), None).unwrap();
        assert!(m.last_modified > UNIX_EPOCH && m.expires_at.is_none());
        // Even after a stored time at the end of what can be represented, no panic.
        let m = next(Some(from_millis(i64::MAX)), Some(MAX_TTL)).unwrap();
        assert!(m.expires_at.unwrap() <= m.last_modified);
        assert_eq!(
            http_date(m.expires_at.unwrap()),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn any_stored_time_renders() {
        assert_eq!(http_date(from_millis(-1)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(from_millis(253_402_300_800_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(to_millis(from_millis(i64::MIN)), i64::MIN);
        assert_eq!(to_millis(from_millis(i64::MAX)), i64::MAX);
    }

    proptest::proptest! {
        /// Any stored millisecond count decodes, renders and round-trips without a panic.
        #[test]
        fn stored_times_never_panic(ms in proptest::num::i64::ANY, ttl_secs in proptest::num::u64::ANY) {
            let t = from_millis(ms);
            proptest::prop_assert_eq!(to_millis(t), ms);
            let _ = http_date(t);
            let r = renderable(t);
            proptest::prop_assert!(r >= UNIX_EPOCH && to_millis(r) <= LATEST_MS);
            let key = Key::new("k").unwrap();
            let ttl = Some(Duration::from_secs(ttl_secs));
            match Meta::next_version(&key, ETag::of(b""), 0, Some(t), &opts(ttl)) {
                Ok(m) => {
                    proptest::prop_assert!(m.last_modified >= t);
                    proptest::prop_assert!(ttl_secs > 0 && ttl_secs <= MAX_TTL.as_secs());
                }
                Err(e) => proptest::prop_assert!(matches!(e, Error::InvalidInput(_))),
            }
        }
    }
}
