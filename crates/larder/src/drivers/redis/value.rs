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
/// start with. `tail(k)`: the last bytes of the value at `k` (usually one `GETRANGE` of
/// [`TAIL_READ`] bytes), their length, and the lengths of the ETag and the meta; nothing when
/// there is no object. `meta_of` and `etag_of` take the parts out of what `tail` returned, and
/// `modified_of` Last-Modified (as padded text). Numbers are passed to `redis.call` as text:
/// a Lua number would be formatted by the server on every call.
pub(super) const TAIL_LUA: &str = r#"
local function tail(k)
  local t = redis.call('GETRANGE', k, '-512', '-1')
  local n = #t
  if n == 0 then return nil end
  local el, ml = tonumber(string.sub(t, n - 19, n - 10)), tonumber(string.sub(t, n - 9, n))
  local need = 60 + el + ml
  if need > n then
    if n < 512 then return error('larder: a malformed value at ' .. k) end
    t = redis.call('GETRANGE', k, tostring(-need), '-1')
    n = #t
    if need > n then return error('larder: a malformed value at ' .. k) end
  end
  return t, n, el, ml
end
local function meta_of(t, n, el, ml) return string.sub(t, n - 59 - el - ml, n - 60 - el) end
local function etag_of(t, n, el) return string.sub(t, n - 59 - el, n - 60) end
local function modified_of(t, n) return string.sub(t, n - 59, n - 40) end
"#;

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
