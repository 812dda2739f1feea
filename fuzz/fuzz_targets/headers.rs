//! Request header fields as the server parses them (conditions, `Range`, `If-Range`, TTL,
//! digests, metadata), then evaluated against an object: never a panic, a TTL is never over
//! the maximum, and the version stamped from the options renders.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use larder::{ETag, Key, Meta};
use larder_server::headers::{get_options, preconditions, put_options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, u32, &[u8])| {
    let (size, modified_secs, raw) = input;
    // One field per line, `name: value`; lines that are not a valid field are skipped.
    let mut h = http::HeaderMap::new();
    for line in raw.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value.trim_ascii()),
        ) {
            h.append(n, v);
        }
    }
    let current = Meta {
        key: Key::new("k").unwrap(),
        etag: ETag::of(b"current"),
        size,
        last_modified: UNIX_EPOCH + Duration::from_secs(u64::from(modified_secs)),
        expires_at: None,
        content_type: None,
        metadata: Default::default(),
    };
    if let Ok(p) = preconditions(&h) {
        let _ = p.evaluate_read(&current);
        let _ = p.evaluate_write(Some(&current));
        let _ = p.evaluate_write(None);
    }
    if let Ok((opts, _multiple)) = get_options(&h) {
        if let Ok(Some(span)) = opts.evaluate(&current) {
            assert!(span.start < span.end && span.end <= size);
        }
    }
    if let Ok(opts) = put_options(&h) {
        if let Some(ttl) = opts.ttl {
            assert!(!ttl.is_zero() && ttl <= larder::meta::MAX_TTL);
        }
        let _ = opts.preconditions.evaluate_write(Some(&current));
        for replaces in [None, Some(current.last_modified)] {
            let next = Meta::next_version(&current.key, ETag::of(b"new"), 3, replaces, &opts)
                .expect("options the server accepted stamp a version");
            let mut out = http::HeaderMap::new();
            larder_server::headers::validator_headers(&mut out, &next);
        }
    }
});
