//! What every decoder target does with a record it could decode: render it the way the server
//! does (response headers, JSON), which must never panic whatever the record says.

use larder::Meta;

/// Renders `meta` as a GET/HEAD response and as listing JSON.
pub fn render(meta: &Meta) {
    let mut headers = http::HeaderMap::new();
    larder_server::headers::validator_headers(&mut headers, meta);
    assert!(headers.contains_key(http::header::ETAG));
    assert!(headers.contains_key(http::header::LAST_MODIFIED));
    let json = serde_json::to_vec(&larder_server::wire::MetaJson::from(meta)).unwrap();
    assert!(!json.is_empty());
    // A stored meta encodes and decodes to itself (times at millisecond resolution).
    let again = Meta::decode(meta.encode().as_bytes()).expect("an encoded meta decodes");
    assert_eq!(again.etag, meta.etag);
    assert_eq!(again.key, meta.key);
}
