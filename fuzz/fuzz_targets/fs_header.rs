//! The fs driver's object file (magic, lengths, meta JSON, body): any bytes are decoded or
//! refused as corrupt, and what decodes renders.
#![no_main]

use larder::drivers::fs::fuzzing::decode_object_file;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let key = larder::Key::new("k").unwrap();
    if let Ok((meta, body_offset)) = decode_object_file(data, &key) {
        assert_eq!(body_offset + meta.size, data.len() as u64);
        common::render(&meta);
    }
});
