//! schemathesis (PyPI) against a live `larder serve` (the real binary), over a memory store and
//! an fs store: it reads `/openapi.json`, generates requests from it (a bounded number of
//! examples per operation, a fixed seed), and checks that no response is a 5xx and every
//! response matches the document (status, content type, headers, body schema).
//!
//! schemathesis is found through `LARDER_SCHEMATHESIS` (exported by
//! `.ci/services.d/40-schemathesis.sh`); without it the test is skipped with a printed reason,
//! unless `LARDER_REQUIRE_SERVICES=1`.

use std::process::Command;

use larder::conformance::skip_or_fail;

mod common;
use common::Server;

/// Examples per operation: enough to exercise every header and status, and keeps the run well
/// under two minutes.
const MAX_EXAMPLES: &str = "40";

fn run(server: &Server, what: &str) {
    let Ok(st) = std::env::var("LARDER_SCHEMATHESIS") else {
        skip_or_fail::<()>("schemathesis", "LARDER_SCHEMATHESIS is not set");
        return;
    };
    let workdir = tempfile::tempdir().unwrap();
    let mut schemathesis = Command::new(&st);
    schemathesis
        .current_dir(workdir.path())
        .arg("run")
        .arg(format!("{}/openapi.json", server.url()))
        .args(["--url", &server.url()])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "20261127"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--request-timeout", "30"])
        .arg("--no-color")
        .env("NO_COLOR", "1");
    let found = "schemathesis found failures:";
    common::assert_tool_passes(what, &mut schemathesis, |_| true, found);
}

#[test]
fn schemathesis_finds_no_5xx_and_no_mismatch_memory() {
    run(&Server::start(), "memory");
}

#[test]
fn schemathesis_finds_no_5xx_and_no_mismatch_fs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("fs://{}", dir.path().display());
    run(&Server::with_store(&url), "fs");
}
