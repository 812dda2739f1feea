//! Byte ranges (RFC 9110 section 14): the one parser and the one resolver.

use std::ops::Range;

use crate::error::{Error, Result};

/// One requested byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, both inclusive; `last` past the end means "to the end".
    Bounded {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: u64,
    },
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The half-open byte range this selects in an object of `size` bytes, or
    /// `RangeNotSatisfiable` when it selects nothing (RFC 9110 14.1.2: a first byte at or past
    /// the end, or a suffix of zero bytes or of an empty object).
    pub fn resolve(&self, size: u64) -> Result<Range<u64>> {
        let unsatisfiable = Err(Error::RangeNotSatisfiable { size });
        match *self {
            ByteRange::Bounded { first, last } => {
                if first >= size || last < first {
                    return unsatisfiable;
                }
                Ok(first..last.min(size - 1) + 1)
            }
            ByteRange::From(first) => {
                if first >= size {
                    return unsatisfiable;
                }
                Ok(first..size)
            }
            ByteRange::Suffix(n) => {
                if n == 0 || size == 0 {
                    return unsatisfiable;
                }
                Ok(size.saturating_sub(n)..size)
            }
        }
    }
}

impl std::fmt::Display for ByteRange {
    /// The `Range` field value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByteRange::Bounded { first, last } => write!(f, "bytes={first}-{last}"),
            ByteRange::From(first) => write!(f, "bytes={first}-"),
            ByteRange::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// What a `Range` header field asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeHeader {
    /// One byte range.
    Single(ByteRange),
    /// Several ranges: Larder does not serve multipart responses, and answers 416.
    Multiple(Vec<ByteRange>),
    /// A range unit other than `bytes`, which RFC 9110 14.2 says to ignore.
    OtherUnit,
}

/// Parses a `Range` field value. A malformed `bytes` range set is `InvalidInput` (HTTP 400).
pub fn parse_range_header(value: &str) -> Result<RangeHeader> {
    let malformed = || Error::InvalidInput(format!("malformed Range {value:?}"));
    let (unit, set) = value.trim().split_once('=').ok_or_else(malformed)?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(RangeHeader::OtherUnit);
    }
    let mut ranges = Vec::new();
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
        let num = |s: &str| -> Result<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            s.parse::<u64>().map_err(|_| malformed())
        };
        let range = match (first.trim(), last.trim()) {
            ("", n) => ByteRange::Suffix(num(n)?),
            (f, "") => ByteRange::From(num(f)?),
            (f, l) => {
                let (first, last) = (num(f)?, num(l)?);
                if last < first {
                    return Err(malformed());
                }
                ByteRange::Bounded { first, last }
            }
        };
        ranges.push(range);
    }
    match ranges.len() {
        0 => Err(malformed()),
        1 => Ok(RangeHeader::Single(ranges[0])),
        _ => Ok(RangeHeader::Multiple(ranges)),
    }
}

/// The `Content-Range` value for a served range of an object of `size` bytes.
pub fn content_range(range: &Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end - 1, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses() {
        use ByteRange::*;
        let single = |s| match parse_range_header(s).unwrap() {
            RangeHeader::Single(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(single("bytes=0-99"), Bounded { first: 0, last: 99 });
        assert_eq!(single("bytes=100-"), From(100));
        assert_eq!(single("bytes=-5"), Suffix(5));
        assert_eq!(single("Bytes = 1-2 "), Bounded { first: 1, last: 2 });
        assert!(matches!(
            parse_range_header("bytes=0-1,5-6").unwrap(),
            RangeHeader::Multiple(v) if v.len() == 2
        ));
        assert_eq!(
            parse_range_header("items=0-1").unwrap(),
            RangeHeader::OtherUnit
        );
        for bad in [
            "bytes",
            "bytes=",
            "bytes=5-3",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "0-1",
        ] {
            assert!(parse_range_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolves() {
        use ByteRange::*;
        assert_eq!(Bounded { first: 0, last: 0 }.resolve(10).unwrap(), 0..1);
        assert_eq!(Bounded { first: 2, last: 5 }.resolve(10).unwrap(), 2..6);
        assert_eq!(
            Bounded {
                first: 5,
                last: 100
            }
            .resolve(10)
            .unwrap(),
            5..10
        );
        assert_eq!(From(9).resolve(10).unwrap(), 9..10);
        assert_eq!(Suffix(3).resolve(10).unwrap(), 7..10);
        assert_eq!(Suffix(30).resolve(10).unwrap(), 0..10);
        for (r, size) in [
            (From(10), 10),
            (
                Bounded {
                    first: 10,
                    last: 20,
                },
                10,
            ),
            (Suffix(0), 10),
            (Suffix(5), 0),
            (From(0), 0),
            (Bounded { first: 0, last: 0 }, 0),
        ] {
            assert!(
                matches!(r.resolve(size), Err(Error::RangeNotSatisfiable { size: s }) if s == size)
            );
        }
        assert_eq!(content_range(&(7..10), 10), "bytes 7-9/10");
    }

    proptest! {
        /// A resolved range is never empty and never leaves the object.
        #[test]
        fn resolved_ranges_stay_inside(first in 0u64..200, len in 0u64..200, size in 0u64..150, kind in 0u8..3) {
            let r = match kind {
                0 => ByteRange::Bounded { first, last: first + len },
                1 => ByteRange::From(first),
                _ => ByteRange::Suffix(len),
            };
            match r.resolve(size) {
                Ok(range) => prop_assert!(range.start < range.end && range.end <= size),
                Err(Error::RangeNotSatisfiable { size: s }) => prop_assert_eq!(s, size),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        /// Printing a range and parsing it back gives the same range.
        #[test]
        fn display_round_trips(first in 0u64..u64::MAX / 2, len in 0u64..1000, kind in 0u8..3) {
            let r = match kind {
                0 => ByteRange::Bounded { first, last: first + len },
                1 => ByteRange::From(first),
                _ => ByteRange::Suffix(len),
            };
            prop_assert_eq!(parse_range_header(&r.to_string()).unwrap(), RangeHeader::Single(r));
        }

        /// The parser never panics on arbitrary input.
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_range_header(&s);
        }
    }
}
