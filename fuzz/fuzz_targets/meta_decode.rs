//! `Meta::decode`, the stored metadata of the sqlite, postgres, mysql, redis and nats drivers
//! (and inside fs files): any bytes decode or fail cleanly, and what decodes renders.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = larder::Meta::decode(data) {
        common::render(&meta);
    }
});
