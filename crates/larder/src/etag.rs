//! Entity tags: the content ETag every driver computes, and the tags clients send in conditions.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// An entity tag (RFC 9110 section 8.8.3): an opaque string, strong or weak.
///
/// Every stored object has a strong ETag that is the lowercase hex SHA-256 of its content, so
/// the same bytes have the same ETag in every driver and every tier. Clients may send weak tags
/// in conditions; those only ever match through weak comparison (`If-None-Match`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag {
    weak: bool,
    opaque: String,
}

/// The 64 lower-case hex digits of a SHA-256 digest: the opaque text of its content ETag.
fn hex_of_sha256(digest: &[u8; 32]) -> [u8; 64] {
    // Made on every read of a store that keeps digests (memory): a byte's two digits at once
    // from a table. (`hex::encode` built the string a char at a time, a tenth of a memory
    // store's read.)
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        pairs
    };
    let mut text = [0u8; 64];
    for (pair, byte) in text.chunks_exact_mut(2).zip(digest) {
        pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
    }
    text
}

impl ETag {
    /// The strong content ETag of a SHA-256 digest.
    pub fn from_sha256(digest: &[u8; 32]) -> Self {
        let text = hex_of_sha256(digest);
        // Room for the quotes too, so that `into_wire` (a response's `ETag` field) reuses it.
        let mut buffer = Vec::with_capacity(text.len() + 2);
        buffer.extend_from_slice(&text);
        // SAFETY: every byte comes from `DIGITS`, which is ASCII, so the text is UTF-8.
        let opaque = unsafe { String::from_utf8_unchecked(buffer) };
        ETag {
            weak: false,
            opaque,
        }
    }

    /// Whether this tag is the one [`from_sha256`](ETag::from_sha256) makes of `digest`
    /// (without building that tag).
    pub fn is_sha256_of(&self, digest: &[u8; 32]) -> bool {
        !self.weak && self.opaque.as_bytes() == hex_of_sha256(digest)
    }

    /// The SHA-256 digest this tag spells, when it is a content ETag exactly as
    /// [`from_sha256`](ETag::from_sha256) writes it (strong, 64 lower-case hex digits), so
    /// that `from_sha256` of the result gives this tag back; `None` otherwise.
    pub fn sha256_digest(&self) -> Option<[u8; 32]> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        if self.weak {
            return None;
        }
        let text: &[u8; 64] = self.opaque.as_bytes().try_into().ok()?;
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(text.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(digest)
    }

    /// The wire form, quoted (`"…"` or `W/"…"`), as one string of exactly its length: what
    /// `Display` writes, without the formatting machinery (a response header per request).
    pub fn to_wire(&self) -> String {
        let [open, opaque, close] = self.wire_parts();
        let mut s = String::with_capacity(open.len() + opaque.len() + close.len());
        s.push_str(open);
        s.push_str(opaque);
        s.push_str(close);
        s
    }

    /// [`to_wire`](Self::to_wire), in this tag's own buffer when it has room for the quotes
    /// (a tag made by [`from_sha256`](Self::from_sha256) has): no allocation then.
    pub fn into_wire(self) -> String {
        let open = if self.weak { "W/\"" } else { "\"" };
        let needed = open.len() + self.opaque.len() + 1;
        if self.opaque.capacity() < needed {
            return self.to_wire();
        }
        let mut s = self.opaque;
        s.insert_str(0, open);
        s.push('"');
        s
    }

    /// The wire form in its three pieces: the opening (`W/"` or `"`), the opaque value, `"`.
    pub(crate) fn wire_parts(&self) -> [&str; 3] {
        [if self.weak { "W/\"" } else { "\"" }, &self.opaque, "\""]
    }

    /// The content ETag of `data`, hashed in one go.
    pub fn of(data: &[u8]) -> Self {
        let digest: [u8; 32] = Sha256::digest(data).into();
        Self::from_sha256(&digest)
    }

    /// A strong tag with the given opaque value (no quotes).
    pub fn strong(opaque: impl Into<String>) -> Result<Self> {
        Self::build(false, opaque.into())
    }

    /// A weak tag with the given opaque value (no quotes).
    pub fn weak(opaque: impl Into<String>) -> Result<Self> {
        Self::build(true, opaque.into())
    }

    fn build(weak: bool, opaque: String) -> Result<Self> {
        if opaque.bytes().all(is_etagc) {
            Ok(Self::checked(weak, opaque))
        } else {
            Err(Error::InvalidInput(format!(
                "entity tag {opaque:?} has a character not allowed in an ETag"
            )))
        }
    }

    /// A tag whose every character the caller has checked with [`is_etagc`].
    pub(crate) fn checked(weak: bool, opaque: String) -> Self {
        debug_assert!(opaque.bytes().all(is_etagc));
        ETag { weak, opaque }
    }

    /// Parses one entity tag as it appears on the wire: `"abc"` or `W/"abc"`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (weak, rest) = match s.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let opaque = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|_| rest.len() >= 2)
            .ok_or_else(|| Error::InvalidInput(format!("malformed entity tag {s:?}")))?;
        Self::build(weak, opaque.to_owned())
    }

    /// Whether this is a weak tag.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque value, without quotes or `W/`.
    pub fn opaque(&self) -> &str {
        &self.opaque
    }

    /// Strong comparison (RFC 9110 8.8.3.2): both strong and the same opaque value.
    pub fn strong_eq(&self, other: &ETag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the same opaque value, either may be weak.
    pub fn weak_eq(&self, other: &ETag) -> bool {
        self.opaque == other.opaque
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`
pub(crate) fn is_etagc(b: u8) -> bool {
    // The same set, in two comparisons: everything above space but DQUOTE and DEL.
    b > 0x20 && b != b'"' && b != 0x7f
}

impl fmt::Display for ETag {
    /// The wire form, quoted: `"…"` or `W/"…"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wire_parts()
            .iter()
            .try_for_each(|part| f.write_str(part))
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({self})")
    }
}

impl std::str::FromStr for ETag {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ETag::parse(s)
    }
}

impl serde::Serialize for ETag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ETag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ETag::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// SHA-256 over a body as it streams through, with the byte count: the one content hasher
/// every driver uses.
#[derive(Clone, Default)]
pub struct ContentHasher {
    sha: Sha256,
    size: u64,
}

impl ContentHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The content ETag and size of everything fed.
    pub fn finish(self) -> (ETag, u64) {
        let (digest, size) = self.finish_digest();
        (ETag::from_sha256(&digest), size)
    }

    /// The SHA-256 digest (what [`finish`](Self::finish) spells as the ETag) and size of
    /// everything fed: for a driver that keeps the digest, so it need not decode the ETag.
    pub fn finish_digest(self) -> ([u8; 32], u64) {
        (self.sha.finalize().into(), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_wire_is_to_wire_whatever_the_buffer() {
        let tags = [
            ETag::of(b"hello"),
            ETag::strong("abc").unwrap(),
            ETag::weak("abc").unwrap(),
            ETag::weak("").unwrap(),
            ETag::parse("W/\"\u{e9}t\u{e9}\"").unwrap(),
        ];
        for tag in tags {
            assert_eq!(tag.clone().into_wire(), tag.to_wire(), "{tag:?}");
            assert_eq!(tag.clone().into_wire(), tag.to_string(), "{tag:?}");
        }
        // A content tag's buffer has room for the quotes: the field value reuses it exactly.
        let wire = ETag::of(b"hello").into_wire();
        assert_eq!((wire.len(), wire.capacity()), (66, 66));
    }

    #[test]
    fn etagc_is_the_abnf_set() {
        for b in 0..=255u8 {
            let abnf = b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80;
            assert_eq!(is_etagc(b), abnf, "{b:#x}");
        }
    }

    #[test]
    fn sha256_digest_reads_back_exactly_what_from_sha256_spells() {
        let etag = ETag::of(b"hello");
        let digest = etag.sha256_digest().unwrap();
        assert_eq!(ETag::from_sha256(&digest), etag);
        let upper = ETag::strong(etag.opaque().to_uppercase()).unwrap();
        assert_eq!(
            upper.sha256_digest(),
            None,
            "would not spell the same ETag back"
        );
        let weak = ETag::weak(etag.opaque()).unwrap();
        assert_eq!(weak.sha256_digest(), None, "a weak tag is no content ETag");
        let short = ETag::strong(&etag.opaque()[1..]).unwrap();
        assert_eq!(short.sha256_digest(), None);
        assert_eq!(ETag::strong("g".repeat(64)).unwrap().sha256_digest(), None);
    }

    #[test]
    fn is_sha256_of_is_exactly_the_tag_from_sha256_makes() {
        let etag = ETag::of(b"hello");
        let digest = etag.sha256_digest().unwrap();
        assert!(etag.is_sha256_of(&digest));
        assert!(!ETag::of(b"hello!").is_sha256_of(&digest));
        let upper = ETag::strong(etag.opaque().to_uppercase()).unwrap();
        assert!(!upper.is_sha256_of(&digest), "another spelling");
        assert!(!ETag::weak(etag.opaque()).unwrap().is_sha256_of(&digest));
        let short = ETag::strong(&etag.opaque()[1..]).unwrap();
        assert!(!short.is_sha256_of(&digest));
    }

    #[test]
    fn the_wire_form_is_what_display_writes() {
        for tag in [
            ETag::of(b"x"),
            ETag::weak("v1").unwrap(),
            ETag::strong("").unwrap(),
        ] {
            assert_eq!(tag.to_wire(), tag.to_string());
        }
        assert_eq!(ETag::weak("v1").unwrap().to_wire(), "W/\"v1\"");
    }

    #[test]
    fn content_etag_is_sha256_hex() {
        assert_eq!(
            ETag::of(b"").to_string(),
            "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""
        );
        let mut h = ContentHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        let (tag, size) = h.finish();
        assert_eq!(tag, ETag::of(b"hello world"));
        assert_eq!(size, 11);
    }

    #[test]
    fn parse_and_compare() {
        let s = ETag::parse("\"abc\"").unwrap();
        let w = ETag::parse("W/\"abc\"").unwrap();
        assert!(w.is_weak() && !s.is_weak());
        assert!(s.strong_eq(&s) && !s.strong_eq(&w) && !w.strong_eq(&w));
        assert!(s.weak_eq(&w) && w.weak_eq(&w));
        assert_eq!(w.to_string(), "W/\"abc\"");
        assert_eq!(ETag::parse("\"\"").unwrap().opaque(), "");
        for bad in [
            "abc", "\"abc", "abc\"", "\"", "w/\"a\"", "\"a\"b\"", "\"a b\"",
        ] {
            assert!(ETag::parse(bad).is_err(), "{bad:?}");
        }
    }
}
