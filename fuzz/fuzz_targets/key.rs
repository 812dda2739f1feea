//! Keys as a client sends them (a request path) and as drivers encode them (fs file names,
//! NATS subjects): validation never panics, a valid key round-trips through every encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = larder::key::validate_prefix(&s);
    if let Ok(key) = larder::Key::new(s.as_ref()) {
        assert_eq!(larder::Key::new(key.as_str()).unwrap(), key);
        for segment in key.segments() {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
        }
        let encoded = larder::drivers::nats::encode_key(key.as_str());
        assert_eq!(
            larder::drivers::nats::decode_key(&encoded).as_deref(),
            Some(key.as_str())
        );
    }
    // Names read back from a backend (a file name, a NATS subject) are untrusted.
    let _ = larder::drivers::nats::decode_key(&s);
    let _ = larder::drivers::fs::fuzzing::decode_name(&s);
    // The server's path → key step, on any path that is a valid URI.
    if let Ok(uri) = format!("/v1/objects/{s}").parse::<http::Uri>() {
        if let Ok(key) = larder_server::objects::parse_key(&uri) {
            assert!(larder::Key::new(key.as_str()).is_ok());
        }
    }
});
