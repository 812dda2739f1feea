//! File names: a key segment percent-encoded into a file or directory name, and the path of an
//! object's file (see the layout in the [module docs](super)).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::key::Key;

use super::{MAX_ENCODED_SEGMENT, MAX_PATH};

/// Ends every object file's name; no encoded segment contains it.
pub(super) const OBJECT_SUFFIX: char = '@';

/// The file holding the object at `key` below `objects`. `InvalidKey` when a segment or the
/// whole path is too long for the filesystem.
pub(super) fn object_path(objects: &Path, key: &Key) -> Result<PathBuf> {
    let mut path = objects.to_path_buf();
    let mut segments = key.segments().peekable();
    while let Some(seg) = segments.next() {
        let mut name = encode_segment(seg);
        if name.len() > MAX_ENCODED_SEGMENT {
            return Err(Error::InvalidKey {
                key: key.to_string(),
                reason: "a segment is too long for the fs store (its encoding is over 254 \
                         bytes; bytes other than a-z 0-9 - _ . take 3 each)",
            });
        }
        if segments.peek().is_none() {
            name.push(OBJECT_SUFFIX);
        }
        path.push(name);
    }
    if path.as_os_str().len() > MAX_PATH {
        return Err(Error::InvalidKey {
            key: key.to_string(),
            reason: "the key is too long for the fs store once encoded (its file path \
                     would be over 4095 bytes)",
        });
    }
    Ok(path)
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
}

/// Percent-encodes a key segment into a file name (see the module docs).
pub(super) fn encode_segment(segment: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(segment.len());
    for (i, b) in segment.bytes().enumerate() {
        if is_plain(b) && !(i == 0 && b == b'.') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// The inverse of [`encode_segment`]; `None` for a name it would not have produced.
pub(super) fn decode_segment(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let segment = String::from_utf8(out).ok()?;
    (encode_segment(&segment) == name).then_some(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_never_end_in_the_suffix() {
        for s in [
            "a", "A", "Ab.c", ".hidden", "x%y", "é", "a b", "@", "a@", "-_.~!",
        ] {
            let e = encode_segment(s);
            assert!(!e.contains(OBJECT_SUFFIX), "{s:?} -> {e:?}");
            assert!(!e.starts_with('.'), "{s:?} -> {e:?}");
            assert!(!e
                .bytes()
                .any(|b| b.is_ascii_uppercase() && !b.is_ascii_hexdigit()));
            assert_eq!(decode_segment(&e).as_deref(), Some(s), "{e:?}");
        }
        assert_eq!(encode_segment("Ab"), "%41b");
        assert_eq!(
            decode_segment("%41B"),
            None,
            "only canonical encodings decode"
        );
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("A"), None);
    }
}
