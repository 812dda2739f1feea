//! `larder serve --store s3://…` and `--store azure://…`: the real binary over each object-store
//! server the environment names (moto and SeaweedFS for S3, Azurite for Azure in CI), driven by
//! the real CLI: a multipart-sized upload and download, create-only, and conditional delete.

use std::process::{Command, Output};

use larder::conformance::skip_or_fail;

mod common;
use common::Server;

fn larder(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .env("LARDER_URL", server.url())
        .env_remove("LARDER_TOKEN")
        .output()
        .expect("run larder")
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The store URL in `var`, moved under a prefix of its own.
fn store_url(name: &str, var: &str) -> Option<String> {
    let Ok(url) = std::env::var(var) else {
        return skip_or_fail(name, format!("{var} is not set"));
    };
    let mut url = url::Url::parse(&url).expect("a store URL");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = format!(
        "{}/cli-{}-{nanos:x}",
        url.path().trim_end_matches('/'),
        std::process::id()
    );
    url.set_path(&path);
    Some(url.to_string())
}

fn serve_and_use(name: &str, var: &str) {
    let Some(url) = store_url(name, var) else {
        return;
    };
    let server = Server::with_store(&url);
    let dir = tempfile::tempdir().unwrap();
    // 20 MiB: over the 8 MiB threshold, so the server's store uploads it in parts.
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("big");
    std::fs::write(&file, &data).unwrap();
    let file = file.to_str().unwrap();

    let etag = ok(&larder(
        &server,
        &["put", "big", file, "--if-none-match", "*"],
    ));
    assert_eq!(etag.trim(), larder::ETag::of(&data).to_string());
    let again = larder(&server, &["put", "big", file, "--if-none-match", "*"]);
    assert_eq!(
        again.status.code(),
        Some(4),
        "create-only on an existing key"
    );

    let out = dir.path().join("out");
    ok(&larder(
        &server,
        &["get", "big", "-o", out.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "{name}: download differs"
    );

    let stale = larder::ETag::of(b"something else").to_string();
    let refused = larder(&server, &["rm", "big", "--if-match", &stale]);
    assert_eq!(refused.status.code(), Some(4), "stale conditional delete");
    ok(&larder(&server, &["rm", "big", "--if-match", etag.trim()]));
    assert_eq!(larder(&server, &["stat", "big"]).status.code(), Some(3));
}

#[test]
fn serve_on_s3() {
    serve_and_use("s3", "LARDER_TEST_S3_URL");
}

#[test]
fn serve_on_s3_alt() {
    serve_and_use("s3_alt", "LARDER_TEST_S3_ALT_URL");
}

#[test]
fn serve_on_azure() {
    serve_and_use("azure", "LARDER_TEST_AZURE_URL");
}
