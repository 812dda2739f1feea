//! The Redis store's own encoding of [`Meta`], stored after an object's body (`value.rs`):
//! length-prefixed fields after a version byte, written and read with no serde and no
//! intermediate allocation. The shared JSON ([`Meta::encode`]) cost a CAS attempt some 11k
//! instructions to decode and 4k to encode; this is a few hundred each way.
//!
//! ```text
//! m      := 0x01 ns(key) etag num(size) num(modified ms)
//!           flag [num(expires ms)] flag [ns(content type)] num(pairs) (ns(name) ns(value))*
//! etag   := 'd' <the 32 bytes of the SHA-256 digest>   (a content ETag, as every put makes)
//!         | 's' ns(opaque) | 'w' ns(opaque)            (any other strong or weak tag)
//! num(n) := decimal (a leading '-' when negative) ';'
//! ns(s)  := num(length of s) s
//! flag   := '0' | '1'   (whether the value that follows is present)
//! ```
//!
//! A content ETag is kept as its digest: turning 32 bytes back into hex is cheaper than
//! checking 64 characters of text.
//!
//! What the code before this encoding stored, [`Meta::encode`]'s JSON, starts with `{` and is
//! still read: a stored object keeps working until its next write re-encodes it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::meta::{from_millis, to_millis, Meta};

/// First byte of this encoding (JSON starts with `{`).
const VERSION: u8 = 1;

/// `m` in this encoding.
pub(super) fn encode(m: &Meta) -> Vec<u8> {
    let extra: usize = m.content_type.as_ref().map_or(0, |c| c.len() + 8)
        + m.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>();
    let mut out = Vec::with_capacity(m.key.as_str().len() + m.etag.opaque().len() + 72 + extra);
    out.push(VERSION);
    put_str(&mut out, m.key.as_str().as_bytes());
    match m.etag.sha256_digest() {
        Some(digest) => {
            out.push(b'd');
            out.extend_from_slice(&digest);
        }
        None => {
            out.push(if m.etag.is_weak() { b'w' } else { b's' });
            put_str(&mut out, m.etag.opaque().as_bytes());
        }
    }
    put_num(&mut out, false, m.size);
    put_millis(&mut out, to_millis(m.last_modified));
    match m.expires_at {
        Some(t) => {
            out.push(b'1');
            put_millis(&mut out, to_millis(t));
        }
        None => out.push(b'0'),
    }
    match &m.content_type {
        Some(c) => {
            out.push(b'1');
            put_str(&mut out, c.as_bytes());
        }
        None => out.push(b'0'),
    }
    put_num(&mut out, false, m.metadata.len() as u64);
    for (k, v) in &m.metadata {
        put_str(&mut out, k.as_bytes());
        put_str(&mut out, v.as_bytes());
    }
    out
}

/// Decodes what [`encode`] wrote, or the JSON of [`Meta::encode`] (what older versions of the
/// store wrote). `known`: the key the record was read under, when the caller has it (taken
/// as it is when the record names the same key, instead of validating a new one).
pub(super) fn decode(raw: &[u8], known: Option<&Key>) -> Result<Meta> {
    match raw.split_first() {
        Some((&VERSION, rest)) => Reader(rest).meta(known).ok_or_else(|| {
            Error::backend("corrupt stored metadata: a packed record that does not parse")
        })?,
        _ => Meta::decode(raw),
    }
}

fn put_millis(out: &mut Vec<u8>, ms: i64) {
    put_num(out, ms < 0, ms.unsigned_abs());
}

fn put_num(out: &mut Vec<u8>, negative: bool, v: u64) {
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b';');
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_num(out, false, s.len() as u64);
    out.extend_from_slice(s);
}

/// A cursor over a packed record; every read is checked (`None`: malformed), none panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            b'0' => Some(false),
            b'1' => Some(true),
            _ => None,
        }
    }

    /// A number: whether it is negative, and its magnitude.
    fn num(&mut self) -> Option<(bool, u64)> {
        let negative = self.0.first() == Some(&b'-');
        if negative {
            self.0 = &self.0[1..];
        }
        let end = self.0.iter().position(|&b| b == b';')?;
        let (digits, rest) = (&self.0[..end], &self.0[end + 1..]);
        if digits.is_empty() {
            return None;
        }
        let mut v: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.0 = rest;
        Some((negative, v))
    }

    fn unsigned(&mut self) -> Option<u64> {
        match self.num()? {
            (false, v) => Some(v),
            (true, _) => None,
        }
    }

    fn millis(&mut self) -> Option<i64> {
        match self.num()? {
            (false, v) => i64::try_from(v).ok(),
            (true, v) => 0i64.checked_sub_unsigned(v),
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.unsigned()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(s)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    fn meta(&mut self, known: Option<&Key>) -> Option<Result<Meta>> {
        let key = self.bytes()?;
        let key = match known {
            Some(k) if k.as_str().as_bytes() == key => Ok(k.clone()),
            _ => Key::new(std::str::from_utf8(key).ok()?),
        };
        let etag = match self.byte()? {
            b'd' => {
                let digest: &[u8; 32] = self.0.get(..32)?.try_into().ok()?;
                self.0 = &self.0[32..];
                Ok(ETag::from_sha256(digest))
            }
            b's' => ETag::strong(self.string()?),
            b'w' => ETag::weak(self.string()?),
            _ => return None,
        };
        let size = self.unsigned()?;
        let modified = self.millis()?;
        let expires = if self.flag()? {
            Some(self.millis()?)
        } else {
            None
        };
        let content_type = if self.flag()? {
            Some(self.string()?)
        } else {
            None
        };
        let pairs = self.unsigned()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..pairs {
            let k = self.string()?;
            metadata.insert(k, self.string()?);
        }
        if !self.0.is_empty() {
            return None;
        }
        Some((|| {
            Ok(Meta {
                key: key?,
                etag: etag?,
                size,
                last_modified: from_millis(modified),
                expires_at: expires.map(from_millis),
                content_type,
                metadata,
            })
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_json_it_replaces() {
        let m = Meta::sample();
        assert_eq!(decode(&encode(&m), None).unwrap(), m);
        let bare = Meta {
            expires_at: None,
            content_type: None,
            metadata: BTreeMap::new(),
            last_modified: from_millis(-7),
            etag: ETag::weak("w").unwrap(),
            ..Meta::sample()
        };
        assert_eq!(decode(&encode(&bare), None).unwrap(), bare);
        let empty_type = Meta {
            content_type: Some(String::new()),
            ..Meta::sample()
        };
        assert_eq!(decode(&encode(&empty_type), None).unwrap(), empty_type);
        let odd = Meta {
            etag: ETag::strong("not-a-digest").unwrap(),
            last_modified: from_millis(i64::MIN),
            expires_at: Some(from_millis(i64::MAX)),
            ..Meta::sample()
        };
        assert_eq!(decode(&encode(&odd), None).unwrap(), odd);
        // The key the record was read under is used when it is the same; otherwise the
        // record's own key, validated.
        let other = Key::new("other").unwrap();
        assert_eq!(decode(&encode(&m), Some(&m.key)).unwrap(), m);
        assert_eq!(decode(&encode(&m), Some(&other)).unwrap(), m);
        // What the store wrote before: the shared JSON.
        assert_eq!(decode(m.encode().as_bytes(), None).unwrap(), m);
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = encode(&Meta::sample());
        // Every truncation, and trailing garbage, is refused without a panic.
        for n in 0..good.len() {
            assert!(decode(&good[..n], None).is_err(), "cut at {n}");
        }
        assert!(decode(&[&good[..], b"x"].concat(), None).is_err());
        for bad in [
            &b"\x01999999999999999999999;k"[..],
            b"\x01-1;",
            b"\x011;k0-64;",
            b"\x011;ks1;\"",
            b"\x011;.02;ab1;1;00",
            b"\x019;99999999999999999999999999;",
        ] {
            assert!(decode(bad, None).is_err(), "{bad:?}");
        }
        let bad_key = [
            &[VERSION][..],
            b"2;..",
            &good[1 + 2 + Meta::sample().key.as_str().len()..],
        ]
        .concat();
        assert!(decode(&bad_key, None).is_err());
    }
}
