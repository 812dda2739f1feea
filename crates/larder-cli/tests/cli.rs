//! The real `larder` binary against a live server started by the test (`larder serve` on a
//! free loopback port, see `common`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

mod common;
use common::Server;

fn larder(server: &Server, args: &[&str]) -> Output {
    larder_with_stdin(server, args, None)
}

fn larder_with_stdin(server: &Server, args: &[&str], stdin: Option<&[u8]>) -> Output {
    larder_full(server, args, stdin, None)
}

fn larder_full(
    server: &Server,
    args: &[&str],
    stdin: Option<&[u8]>,
    token_env: Option<&str>,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    cmd.args(args).env("LARDER_URL", server.url());
    match token_env {
        Some(t) => cmd.env("LARDER_TOKEN", t),
        None => cmd.env_remove("LARDER_TOKEN"),
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run larder");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    stdout(o)
}

fn sha256_tag(data: &[u8]) -> String {
    larder::ETag::of(data).to_string()
}

#[test]
fn put_get_stat_rm() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, b"hello world").unwrap();
    let etag = ok(&larder(
        &server,
        &[
            "put",
            "docs/hello.txt",
            file.to_str().unwrap(),
            "--content-type",
            "text/plain",
            "--meta",
            "owner=me",
            "--ttl",
            "1h",
        ],
    ));
    assert_eq!(
        etag.trim(),
        sha256_tag(b"hello world"),
        "put prints the ETag"
    );

    assert_eq!(
        ok(&larder(&server, &["get", "docs/hello.txt"])),
        "hello world"
    );

    let stat = ok(&larder(&server, &["stat", "docs/hello.txt"]));
    assert!(stat.contains("key: docs/hello.txt\n"), "{stat}");
    assert!(stat.contains(&format!("etag: {}\n", etag.trim())), "{stat}");
    assert!(stat.contains("size: 11\n"), "{stat}");
    assert!(stat.contains("content_type: text/plain\n"), "{stat}");
    assert!(stat.contains("meta.owner: me\n"), "{stat}");
    assert!(stat.contains("expires_at: "), "{stat}");

    ok(&larder(&server, &["rm", "docs/hello.txt"]));
    let gone = larder(&server, &["get", "docs/hello.txt"]);
    assert_eq!(code(&gone), 3, "missing -> exit 3: {}", stderr(&gone));
    assert!(gone.stdout.is_empty());
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    assert_eq!(code(&larder(&server, &["stat", "docs/hello.txt"])), 3);
    assert_eq!(code(&larder(&server, &["rm", "docs/hello.txt"])), 3);
}

#[test]
fn create_only_and_swap() {
    let server = Server::start();
    let v1 = ok(&larder_with_stdin(
        &server,
        &["put", "lock", "-", "--if-none-match", "*"],
        Some(b"one"),
    ));
    let again = larder_with_stdin(
        &server,
        &["put", "lock", "-", "--if-none-match", "*"],
        Some(b"two"),
    );
    assert_eq!(code(&again), 4, "create-only conflict -> exit 4");
    assert!(
        stderr(&again).contains(v1.trim()),
        "the message names the current ETag: {}",
        stderr(&again)
    );
    // A swap from the current ETag (bare hex is accepted too) succeeds once.
    let bare = v1.trim().trim_matches('"').to_owned();
    let v2 = ok(&larder_with_stdin(
        &server,
        &["put", "lock", "-", "--if-match", &bare],
        Some(b"two"),
    ));
    assert_eq!(v2.trim(), sha256_tag(b"two"));
    let stale = larder_with_stdin(
        &server,
        &["put", "lock", "-", "--if-match", v1.trim()],
        Some(b"three"),
    );
    assert_eq!(code(&stale), 4, "stale swap -> exit 4");
    assert_eq!(ok(&larder(&server, &["get", "lock"])), "two");
    // Conditional delete.
    assert_eq!(
        code(&larder(&server, &["rm", "lock", "--if-match", v1.trim()])),
        4
    );
    ok(&larder(&server, &["rm", "lock", "--if-match", v2.trim()]));
}

#[test]
fn get_if_none_match_is_not_modified() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let etag = ok(&larder_with_stdin(
        &server,
        &["put", "k", "-"],
        Some(b"data"),
    ));
    let out = dir.path().join("out");
    let r = larder(
        &server,
        &[
            "get",
            "k",
            "--if-none-match",
            etag.trim(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&r), 5, "not modified -> exit 5: {}", stderr(&r));
    assert!(stderr(&r).contains("not modified"), "{}", stderr(&r));
    assert!(!out.exists(), "nothing written on 304");
    assert!(r.stdout.is_empty());
    // A different ETag: the body is written.
    let r = larder(
        &server,
        &[
            "get",
            "k",
            "--if-none-match",
            &sha256_tag(b"other"),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    ok(&r);
    assert_eq!(std::fs::read(&out).unwrap(), b"data");
    // --if-match with a stale tag: 412, exit 4, the existing file is untouched.
    let r = larder(
        &server,
        &[
            "get",
            "k",
            "--if-match",
            &sha256_tag(b"other"),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&r), 4);
    assert_eq!(std::fs::read(&out).unwrap(), b"data");
}

#[test]
fn output_file_stdin_and_large_bodies() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB: streamed both ways, over the progress-bar threshold (hidden: stderr is a pipe).
    let data: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();
    let etag = ok(&larder(
        &server,
        &["put", "big/file", src.to_str().unwrap()],
    ));
    assert_eq!(etag.trim(), sha256_tag(&data));
    let dst = dir.path().join("copy.bin");
    let r = ok(&larder(
        &server,
        &["get", "big/file", "-o", dst.to_str().unwrap()],
    ));
    assert!(r.is_empty(), "-o writes nothing to stdout");
    assert!(std::fs::read(&dst).unwrap() == data, "file round trip");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary file left: {leftovers:?}");

    let etag = ok(&larder_with_stdin(
        &server,
        &["put", "big/stdin", "-"],
        Some(&data),
    ));
    assert_eq!(etag.trim(), sha256_tag(&data));
    let out = larder(&server, &["get", "big/stdin"]);
    assert_eq!(code(&out), 0);
    assert!(out.stdout == data, "stdin round trip");
}

#[test]
fn ranges() {
    let server = Server::start();
    ok(&larder_with_stdin(
        &server,
        &["put", "digits", "-"],
        Some(b"0123456789"),
    ));
    for (range, want) in [
        ("2-5", "2345"),
        ("7-", "789"),
        ("-3", "789"),
        ("bytes=0-0", "0"),
        ("5-100", "56789"),
    ] {
        let out = ok(&larder(&server, &["get", "digits", "--range", range]));
        assert_eq!(out, want, "--range {range}");
    }
    let r = larder(&server, &["get", "digits", "--range", "10-"]);
    assert_eq!(code(&r), 1, "unsatisfiable: {}", stderr(&r));
    assert!(
        stderr(&r).contains("range not satisfiable"),
        "{}",
        stderr(&r)
    );
    assert_eq!(
        code(&larder(&server, &["get", "digits", "--range", "x"])),
        2
    );
}

#[test]
fn listing() {
    let server = Server::start();
    for k in [
        "photos/2024/a.jpg",
        "photos/2024/b.jpg",
        "photos/c.jpg",
        "readme",
    ] {
        ok(&larder_with_stdin(
            &server,
            &["put", k, "-"],
            Some(k.as_bytes()),
        ));
    }
    assert_eq!(
        ok(&larder(&server, &["ls"])),
        "photos/2024/a.jpg\nphotos/2024/b.jpg\nphotos/c.jpg\nreadme\n"
    );
    assert_eq!(
        ok(&larder(&server, &["ls", "photos/", "--delimiter", "/"])),
        "photos/2024/\nphotos/c.jpg\n"
    );
    let long = ok(&larder(&server, &["ls", "photos/2024/", "--long"]));
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 2, "{long}");
    assert!(lines[0].ends_with(&format!(
        "{}  photos/2024/a.jpg",
        sha256_tag(b"photos/2024/a.jpg")
    )));
    assert!(lines[0].trim_start().starts_with("17 "), "{long}");
    assert_eq!(ok(&larder(&server, &["ls", "nothing/"])), "");
}

#[test]
fn usage_errors_exit_2() {
    let server = Server::start();
    for args in [
        &["get"][..],
        &["get", "../escape"],
        &["put", "k", "-", "--ttl", "soon"],
        &["put", "k", "-", "--if-match", "a", "--if-none-match", "*"],
        &["get", "k", "--if-match", "not a tag"],
        &["ls", "--delimiter", "ab"],
        &["frobnicate"],
    ] {
        let r = larder(&server, args);
        assert_eq!(code(&r), 2, "{args:?}: {}", stderr(&r));
    }
    let r = larder(&server, &["put", "k", "/nonexistent/file"]);
    assert_eq!(code(&r), 1, "{}", stderr(&r));
}

#[test]
fn server_flag_overrides_the_environment() {
    let server = Server::start();
    ok(&larder_with_stdin(&server, &["put", "k", "-"], Some(b"v")));
    // LARDER_URL points at the server; --server elsewhere wins (nothing listens there).
    let r = larder(&server, &["ls", "--server", "http://127.0.0.1:9?retries=0"]);
    assert_eq!(code(&r), 1, "{}", stderr(&r));
    let r = larder(&server, &["ls", "--server", "ftp://nowhere"]);
    assert_eq!(
        code(&r),
        2,
        "a bad server URL is a usage error: {}",
        stderr(&r)
    );
    assert_eq!(
        ok(&larder(&server, &["ls", "--server", &server.url()])),
        "k\n"
    );
}

#[test]
fn tokens_from_flag_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(
        dir.path(),
        r#"
[[tokens]]
token = "write-secret-0123456789"
scope = "write"

[[tokens]]
token = "read-secret-0123456789"
scope = "read"
"#,
    );
    const READ: Option<&str> = Some("read-secret-0123456789");
    let put_as_writer = ["put", "k", "-", "--token", "write-secret-0123456789"];
    let r = larder_with_stdin(&server, &["put", "k", "-"], Some(b"v"));
    assert_eq!(code(&r), 1, "no token: {}", stderr(&r));
    assert!(stderr(&r).contains("401"), "{}", stderr(&r));
    ok(&larder_with_stdin(&server, &put_as_writer, Some(b"v")));
    let got = larder_full(&server, &["get", "k"], None, READ);
    assert_eq!(ok(&got), "v", "LARDER_TOKEN");
    let r = larder_full(&server, &["put", "k", "-"], Some(b"w"), READ);
    assert_eq!(code(&r), 1, "read token cannot write: {}", stderr(&r));
    assert!(stderr(&r).contains("403"), "{}", stderr(&r));
    // --token wins over LARDER_TOKEN.
    ok(&larder_full(&server, &put_as_writer, Some(b"w"), READ));
}
