//! The value of the `Larder-Meta` header: the compact form this version writes, and the JSON
//! form ([`Meta::encode`]) that earlier versions wrote, still read.
//!
//! The compact form is `1 <etag> <modified_ms>`, then, each only when set, ` e<expires_ms>`,
//! ` t<content type>` and one ` m<name>=<value>` per user metadata entry, in name order. The
//! key and the size are not stored: they are the message's subject and payload length (a
//! headers-only message's `Nats-Msg-Size`). Text is escaped as `%XX` (upper-case hex) for the
//! bytes of `%`, `=`, space, ASCII controls, DEL and non-ASCII whitespace (which a NATS client
//! trims from a header value's ends); other UTF-8 is kept as it is. The value so never holds a
//! line break and never starts or ends with whitespace, and a JSON value (which starts with
//! `{`) is never mistaken for it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::meta::{from_millis, to_millis, Meta};

/// The first token of the compact form: its version.
const VERSION: &str = "1";

/// The header value of `meta` in the compact form.
pub(super) fn encode(meta: &Meta) -> String {
    let etag = meta.etag.opaque();
    let mut out = String::with_capacity(VERSION.len() + etag.len() + 24);
    out.push_str(VERSION);
    out.push(' ');
    out.push_str(etag);
    out.push(' ');
    push_int(&mut out, to_millis(meta.last_modified));
    if let Some(expires) = meta.expires_at {
        out.push_str(" e");
        push_int(&mut out, to_millis(expires));
    }
    if let Some(ct) = &meta.content_type {
        out.push_str(" t");
        push_escaped(&mut out, ct);
    }
    for (name, value) in &meta.metadata {
        out.push_str(" m");
        push_escaped(&mut out, name);
        out.push('=');
        push_escaped(&mut out, value);
    }
    out
}

/// The meta a header value says: the compact form of the object at `key` (made only for that
/// form) with `size` bytes, or the JSON form, which carries its own key and size.
pub(super) fn decode(value: &str, key: impl FnOnce() -> Result<Key>, size: u64) -> Result<Meta> {
    if value.starts_with('{') {
        return Meta::decode(value.as_bytes());
    }
    let mut fields = value.split(' ');
    if fields.next() != Some(VERSION) {
        return Err(corrupt("an unknown format"));
    }
    let etag = fields.next().ok_or_else(|| corrupt("no etag"))?;
    let etag = ETag::strong(etag).map_err(|_| corrupt("a malformed etag"))?;
    let modified = int(fields.next().ok_or_else(|| corrupt("no time"))?)?;
    let mut meta = Meta {
        key: key()?,
        etag,
        size,
        last_modified: from_millis(modified),
        expires_at: None,
        content_type: None,
        metadata: BTreeMap::new(),
    };
    for field in fields {
        let Some(tag) = field.chars().next() else {
            return Err(corrupt("an empty field"));
        };
        let rest = &field[tag.len_utf8()..];
        match tag {
            'e' => meta.expires_at = Some(from_millis(int(rest)?)),
            't' => meta.content_type = Some(unescape(rest)?),
            'm' => {
                let (name, value) = rest.split_once('=').ok_or_else(|| corrupt("no '='"))?;
                meta.metadata.insert(unescape(name)?, unescape(value)?);
            }
            _ => return Err(corrupt("an unknown field")),
        }
    }
    Ok(meta)
}

fn corrupt(what: &str) -> Error {
    Error::backend(format!("corrupt stored metadata: {what}"))
}

fn int(text: &str) -> Result<i64> {
    text.parse().map_err(|_| corrupt("a malformed number"))
}

/// Appends `n` in decimal (without the formatting machinery: once or twice per write).
fn push_int(out: &mut String, n: i64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut run = 0;
    for (i, c) in text.char_indices() {
        let escape = if c.is_ascii() {
            c.is_ascii_control() || matches!(c, ' ' | '%' | '=')
        } else {
            c.is_whitespace()
        };
        if escape {
            out.push_str(&text[run..i]);
            let mut buf = [0u8; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            run = i + c.len_utf8();
        }
    }
    out.push_str(&text[run..]);
}

fn unescape(text: &str) -> Result<String> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let [Some(hi), Some(lo)] = hex.map(|d| d.and_then(|d| (d as char).to_digit(16))) else {
                return Err(corrupt("a malformed escape"));
            };
            out.push((hi << 4 | lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| corrupt("an escape that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Result<Key> {
        Key::new("a/ü k")
    }

    #[test]
    fn round_trips() {
        let m = Meta::sample();
        let text = encode(&m);
        assert!(
            !text.contains(['\r', '\n']) && text.trim() == text,
            "{text}"
        );
        assert_eq!(decode(&text, key, m.size).unwrap(), m);
        let plain = Meta {
            expires_at: None,
            content_type: None,
            metadata: BTreeMap::new(),
            ..Meta::sample()
        };
        let text = encode(&plain);
        assert_eq!(
            text,
            format!(
                "1 {} {}",
                plain.etag.opaque(),
                to_millis(plain.last_modified)
            )
        );
        assert_eq!(decode(&text, key, 1).unwrap(), plain);
        let odd = Meta {
            last_modified: from_millis(-7),
            expires_at: Some(from_millis(i64::MIN)),
            content_type: Some(String::new()),
            metadata: [
                (String::new(), String::new()),
                ("a=b %".into(), "\u{a0}x\u{2028} \t\r\n=".into()),
            ]
            .into(),
            ..Meta::sample()
        };
        assert_eq!(decode(&encode(&odd), key, 1).unwrap(), odd);
    }

    /// A header an earlier version wrote (JSON, with its own key and size) still decodes.
    #[test]
    fn reads_the_json_form() {
        let m = Meta::sample();
        let never = || -> Result<Key> { panic!("the JSON form has its key") };
        assert_eq!(decode(&m.encode(), never, 99).unwrap(), m);
    }

    #[test]
    fn corrupt_values_are_errors() {
        for bad in [
            "",
            "2 x 1",
            "1",
            "1 abc",
            "1 abc x",
            "1 abc 1 ",
            "1 abc 1 q",
            "1 abc 1 ex",
            "1 abc 1 mnoeq",
            "1 abc 1 t%4",
            "1 abc 1 t%zz",
            "1 abc 1 t%FF",
            "1 a\"b 1",
            "{",
        ] {
            let r = decode(bad, key, 0);
            assert!(matches!(r, Err(Error::Backend { .. })), "{bad:?}: {r:?}");
        }
    }

    proptest! {
        /// Any content type and metadata round-trip, and the value stays one trimmed line.
        #[test]
        fn any_text_round_trips(
            ct in proptest::option::of(".*"),
            meta in proptest::collection::btree_map(".*", ".*", 0..4),
            ms in proptest::num::i64::ANY,
        ) {
            let m = Meta {
                content_type: ct,
                metadata: meta,
                last_modified: from_millis(ms),
                ..Meta::sample()
            };
            let text = encode(&m);
            prop_assert!(!text.contains(['\r', '\n']) && text.trim() == text);
            prop_assert_eq!(decode(&text, key, m.size).unwrap(), m);
        }

        /// No header value makes decoding panic.
        #[test]
        fn any_value_decodes_or_fails(value in "1 [a-f0-9]{0,4} -?[0-9]{0,3}( [emtq][%=A-Fa-f0-9é ]{0,6}){0,3}") {
            let _ = decode(&value, key, 0);
        }
    }
}
