//! One object as one Redis string: its body, then what the scripts and readers need to know
//! about it, so that a read of one key is one version and a conditional write reads and writes
//! one key.
//!
//! ```text
//! value  := body m e footer
//! m      := the packed meta (`packed.rs`; older objects: `Meta::encode`'s JSON)
//! e      := the ETag's opaque value (what the scripts compare conditions with)
//! footer := u x len(e) len(m)        (60 bytes)
//! u      := Last-Modified in ms, right-aligned in 20 columns
//! x      := expiry in Unix ms right-aligned in 20 columns, or 20 spaces (none)
//! len(_) := decimal, right-aligned in 10 columns
//! ```
//!
//! The body comes first so that a range of it is a `GETRANGE` at its own offsets, and a body
//! staged in a key of its own becomes an object by appending the rest. Everything else is found
//! from the end, through the fixed footer; `TAIL` (the scripts' reader) and [`Tail`] read it
//! the same way.

use std::io::Write;

use crate::meta::{to_millis, Meta};

/// Length of the footer.
pub(super) const FOOTER: usize = 60;

/// How many bytes from a value's end a reader fetches first: the footer, the ETag and a meta
/// of common size (a longer meta takes a second, exact read).
pub(super) const TAIL_READ: usize = 512;

/// The scripts' reader of a value's tail (the Lua twin of [`Tail`]), which the other scripts
/// start with: Lua that reads the last bytes of the value at the Lua expression `key` into
/// locals `t`, their length `n` (0: no object), and `el` and `ml`, the lengths of the ETag
/// and the meta (usually one `GETRANGE` of [`TAIL_READ`] bytes; a longer tail, a second exact
/// one). From those, the meta is `string.sub(t, n - 59 - el - ml, n - 60 - el)`, the ETag
/// starts at `n - 59 - el`, and Last-Modified (padded text) is `string.sub(t, n - 59, n - 40)`.
/// Inline code, not a function: a Lua function is a closure made on every call of a script.
/// Numbers go to `redis.call` as text: a Lua number would be formatted by the server each time.
pub(super) fn read_tail(key: &str) -> String {
    format!(
        r#"
local t = redis.call('GETRANGE', {key}, '-512', '-1')
local n, el, ml = #t, 0, 0
if n > 0 then
  if n < 60 then return error('larder: a malformed value') end
  -- The two lengths, from their 20 bytes in one call: a space is 32 and a digit 48 to 57, so
  -- each byte mod 16 is its digit (0 for the padding), without a string or a number parse.
  local d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15, d16, d17, d18, d19,
    d20 = string.byte(t, n - 19, n)
  el = ((((((((d1 % 16 * 10 + d2 % 16) * 10 + d3 % 16) * 10 + d4 % 16) * 10 + d5 % 16) * 10
    + d6 % 16) * 10 + d7 % 16) * 10 + d8 % 16) * 10 + d9 % 16) * 10 + d10 % 16
  ml = ((((((((d11 % 16 * 10 + d12 % 16) * 10 + d13 % 16) * 10 + d14 % 16) * 10 + d15 % 16)
    * 10 + d16 % 16) * 10 + d17 % 16) * 10 + d18 % 16) * 10 + d19 % 16) * 10 + d20 % 16
  local need = 60 + el + ml
  if need > n then
    if n < 512 then return error('larder: a malformed value') end
    t = redis.call('GETRANGE', {key}, tostring(-need), '-1')
    n = #t
    if need > n then return error('larder: a malformed value') end
  end
end
"#
    )
}

/// The length of what follows a body of `meta`, packed as `packed`.
pub(super) fn tail_len(meta: &Meta, packed: &[u8]) -> usize {
    packed.len() + meta.etag.opaque().len() + FOOTER
}

/// Writes what follows the body: `packed` (the meta, packed), the ETag's opaque value and the
/// footer. Writes go to a command's (or a Vec's) buffer: they cannot fail.
pub(super) fn write_tail(out: &mut impl Write, meta: &Meta, packed: &[u8]) {
    let e = meta.etag.opaque().as_bytes();
    let _ = out.write_all(packed);
    let _ = out.write_all(e);
    let mut num = itoa::Buffer::new();
    right(
        out,
        num.format(to_millis(meta.last_modified)).as_bytes(),
        20,
    );
    match meta.expires_at {
        Some(t) => right(out, num.format(to_millis(t)).as_bytes(), 20),
        None => right(out, b"", 20),
    }
    right(out, num.format(e.len()).as_bytes(), 10);
    right(out, num.format(packed.len()).as_bytes(), 10);
}

/// `text` right-aligned in `width` columns (never longer than that: an i64 is 20 characters).
fn right(out: &mut impl Write, text: &[u8], width: usize) {
    const SPACES: [u8; 20] = [b' '; 20];
    let _ = out.write_all(&SPACES[..width.saturating_sub(text.len())]);
    let _ = out.write_all(text);
}

/// Where the parts of a value are, read from its last bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Tail {
    /// Bytes from the end of the value to the end of the body: meta, ETag and footer.
    pub(super) len: usize,
    /// Length of the packed meta, which starts `len` bytes from the end.
    pub(super) meta_len: usize,
}

impl Tail {
    /// The layout of a value whose last bytes are `end` (at least the footer); `None`: not a
    /// footer.
    pub(super) fn of(end: &[u8]) -> Option<Tail> {
        let footer = end.get(end.len().checked_sub(FOOTER)?..)?;
        let e_len = number(&footer[40..50])?;
        let meta_len = number(&footer[50..60])?;
        Some(Tail {
            len: FOOTER.checked_add(e_len)?.checked_add(meta_len)?,
            meta_len,
        })
    }

    /// The packed meta within `end`, the value's last bytes, if they reach back to it.
    pub(super) fn meta<'a>(&self, end: &'a [u8]) -> Option<&'a [u8]> {
        let start = end.len().checked_sub(self.len)?;
        end.get(start..start + self.meta_len)
    }
}

/// A right-aligned decimal field.
fn number(field: &[u8]) -> Option<usize> {
    let digits = field.trim_ascii_start();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;
    use crate::key::Key;
    use crate::meta::from_millis;

    fn meta(expires: Option<i64>) -> Meta {
        Meta {
            key: Key::new("a/b").unwrap(),
            etag: ETag::of(b"body"),
            size: 4,
            last_modified: from_millis(-1_500),
            expires_at: expires.map(from_millis),
            content_type: Some("text/plain".into()),
            metadata: Default::default(),
        }
    }

    #[test]
    fn a_value_is_body_meta_etag_footer() {
        let m = meta(Some(1_700_000_000_123));
        let packed = super::super::packed::encode(&m);
        let mut v = b"body".to_vec();
        write_tail(&mut v, &m, &packed);
        assert_eq!(v.len(), 4 + tail_len(&m, &packed));
        let footer = std::str::from_utf8(&v[v.len() - FOOTER..]).unwrap();
        assert_eq!(
            footer,
            format!(
                "{:>20}{:>20}{:>10}{:>10}",
                -1500,
                1_700_000_000_123i64,
                64,
                packed.len()
            )
        );
        let tail = Tail::of(&v).unwrap();
        assert_eq!(tail.len, v.len() - 4);
        assert_eq!(tail.meta(&v), Some(&packed[..]));
        let e_at = v.len() - FOOTER - 64;
        assert_eq!(&v[e_at..e_at + 64], m.etag.opaque().as_bytes());
        // No expiry: 20 spaces.
        let m = meta(None);
        let mut v = Vec::new();
        write_tail(&mut v, &m, &super::super::packed::encode(&m));
        assert_eq!(&v[v.len() - 40..v.len() - 20], &[b' '; 20][..]);
    }

    #[test]
    fn a_short_or_foreign_end_is_no_footer() {
        assert_eq!(Tail::of(b"short"), None);
        assert_eq!(Tail::of(&[b'x'; 80]), None);
        let mut v = vec![b' '; 60];
        v[49] = b'5';
        v[59] = b'7';
        let t = Tail::of(&v).unwrap();
        assert_eq!((t.len, t.meta_len), (72, 7));
        assert_eq!(t.meta(&v), None, "the end does not reach back to the meta");
    }
}
