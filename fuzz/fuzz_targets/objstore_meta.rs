//! The s3/azure drivers' `larder` metadata entry (percent-encoded JSON on the blob): any value
//! is decoded or refused as corrupt, and what decodes renders.
#![no_main]

use larder::drivers::objstore::ObjStore;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|input: (u64, &str)| {
    let (size, value) = input;
    let key = larder::Key::new("k").unwrap();
    if let Ok(Some((meta, _write_id))) = ObjStore::fuzz_decode_value(&key, size, Some(value)) {
        common::render(&meta);
    }
});
