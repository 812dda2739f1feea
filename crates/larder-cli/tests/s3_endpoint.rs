//! `larder serve --s3-listen`: the real binary, proven with S3's own clients.
//!
//! - boto3 and curl (tests/s3/clients.py) over memory, fs, sqlite and Redis: every supported
//!   operation and condition, presigned URLs, signatures and scopes, 8 concurrent If-Match
//!   read-modify-write clients.
//! - The aws CLI: a 100 MiB multipart upload and download, byte for byte, with the server's
//!   peak RSS bounded.
//! - Larder's own `s3` driver passes the conformance kit against the endpoint (S3 over Larder
//!   over SQLite), which checks both sides.
//!
//! boto3 and the aws CLI come from `LARDER_TEST_S3_PYTHON` and `LARDER_TEST_AWS_CLI`
//! (.ci/services.d/40-s3-clients.sh); without them the tests skip with a printed reason, unless
//! `LARDER_REQUIRE_SERVICES=1`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

mod common;

use larder::conformance::skip_or_fail;

const WRITER: (&str, &str) = ("AKIDLARDERWRITER", "writer-secret-0123456789abcdef");
const READER: (&str, &str) = ("AKIDLARDERREADER", "reader-secret-0123456789abcdef");

/// A `larder serve` with an S3 listener, killed when dropped.
struct S3Server {
    server: common::Server,
    native: String,
    s3: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Serves `store` with the writer key (every key) and the reader key (read-only, keys
    /// under `reader_prefix`).
    fn start(store: &str, reader_prefix: &str) -> S3Server {
        let keys = format!(
            "[s3]\n\
             [[s3.keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\nscope = \"write\"\n\
             [[s3.keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\nscope = \"read\"\nprefix = \"{reader_prefix}\"\n",
            WRITER.0, WRITER.1, READER.0, READER.1
        );
        Self::start_with(store, &keys)
    }

    fn start_with(store: &str, toml: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("larder.toml");
        std::fs::write(&config, toml).unwrap();
        let server = common::Server::with_s3_listener(&[
            "--store",
            store,
            "--config",
            config.to_str().unwrap(),
        ]);
        S3Server {
            native: server.url(),
            s3: server.s3_url(),
            server,
            _dir: dir,
        }
    }

    /// The server's peak resident memory, in KiB (Linux).
    fn peak_rss_kib(&self) -> Option<u64> {
        self.server.peak_rss_kib()
    }
}

/// A bucket name no other run uses.
fn fresh_bucket(tag: &str) -> String {
    common::fresh_name(tag)
}

/// The tool a services.d script exported in `var`, if it is there.
fn tool(name: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if Path::new(&p).exists() => Some(p),
        Ok(p) => skip_or_fail(name, format!("{var}={p} does not exist")),
        Err(_) => skip_or_fail(name, format!("{var} is not set")),
    }
}

/// Runs tests/s3/clients.py against a server over `store`.
fn boto3_suite(name: &str, store: &str) {
    let Some(python) = tool(name, "LARDER_TEST_S3_PYTHON") else {
        return;
    };
    let bucket = fresh_bucket("s3ep");
    let server = S3Server::start(store, &format!("{bucket}/public/"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/clients.py");
    let mut clients = Command::new(python);
    clients
        .args([
            script, &server.s3, &bucket, WRITER.0, WRITER.1, READER.0, READER.1,
        ])
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let all_ok = |stdout: &str| stdout.contains("ALL OK");
    common::assert_tool_passes(name, &mut clients, all_ok, "clients.py failed");
}

local_store_tests!(
    boto3_suite("s3 endpoint over "): boto3_over_memory, boto3_over_fs, boto3_over_sqlite
);

#[test]
fn boto3_over_redis() {
    let name = "s3 endpoint over redis";
    if let Some(url) = common::redis_url_with_fresh_prefix(name, "larder-s3ep") {
        boto3_suite(name, &url);
    }
}

/// Without keys on loopback, any access key is accepted.
#[test]
fn any_key_on_loopback_without_keys() {
    let Some(python) = tool("s3 endpoint without keys", "LARDER_TEST_S3_PYTHON") else {
        return;
    };
    let server = S3Server::start_with("memory://", "");
    let out = Command::new(python)
        .args([
            "-c",
            r#"
import sys, boto3
from botocore.config import Config
for key in ["AKIDANY", "SOMEONEELSE"]:
    s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                      aws_access_key_id=key, aws_secret_access_key=key + "-secret",
                      config=Config(signature_version="s3v4"))
    s3.put_object(Bucket="open-bucket", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="open-bucket", Key=key)["Body"].read() == key.encode()
url = s3.generate_presigned_url("get_object", Params={"Bucket": "open-bucket", "Key": "AKIDANY"})
import urllib.request
assert urllib.request.urlopen(url).read() == b"AKIDANY"
print("ALL OK")
"#,
            &server.s3,
        ])
        .output()
        .expect("run python");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ALL OK"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One object, one ETag, one Content-Type and one metadata map through both APIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_through_both_apis() {
    let Some(python) = tool("s3 endpoint and native API", "LARDER_TEST_S3_PYTHON") else {
        return;
    };
    let server = S3Server::start("memory://", "none/");
    let native = larder::open(&server.native).await.unwrap();
    let written = native
        .put(
            &larder::Key::new("shared/native.txt").unwrap(),
            larder::Body::from(b"written natively".to_vec()),
            larder::PutOptions {
                content_type: Some("text/plain".into()),
                metadata: [("origin".to_string(), "native".to_string())].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out = Command::new(python)
        .args([
            "-c",
            r#"
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                  config=Config(signature_version="s3v4"))
g = s3.get_object(Bucket="shared", Key="native.txt")
assert g["Body"].read() == b"written natively"
print(g["ETag"], g["ContentType"], g["Metadata"]["origin"])
p = s3.put_object(Bucket="shared", Key="s3.txt", Body=b"written via s3", ContentType="text/x-s3",
                  Metadata={"origin": "s3"})
print(p["ETag"])
"#,
            &server.s3,
            WRITER.0,
            WRITER.1,
        ])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{} text/plain native", written.meta.etag)
    );
    let via_s3 = native
        .head(
            &larder::Key::new("shared/s3.txt").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(lines.next().unwrap(), via_s3.etag.to_string());
    assert_eq!(via_s3.etag, larder::ETag::of(b"written via s3"));
    assert_eq!(via_s3.content_type.as_deref(), Some("text/x-s3"));
    assert_eq!(
        via_s3.metadata.get("origin").map(String::as_str),
        Some("s3")
    );
}

/// A non-loopback S3 listener without keys refuses to start.
#[test]
fn exposed_without_keys_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["serve", "--store", "memory://", "--s3-listen", "0.0.0.0:0"])
        .env_remove("LARDER_CONFIG")
        .output()
        .expect("run larder serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without access keys"), "{stderr}");
}

/// `aws s3 cp` of 100 MiB up (multipart) and back, byte for byte; the server's peak RSS stays
/// well under the object's size.
#[test]
fn aws_cli_100_mib_multipart_round_trip() {
    let Some(aws) = tool("s3 endpoint with the aws CLI", "LARDER_TEST_AWS_CLI") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!("fs://{}", dir.path().join("store").display());
    let bucket = fresh_bucket("s3cli");
    let server = S3Server::start(&store, "none/");
    let src = dir.path().join("src.bin");
    let back = dir.path().join("back.bin");
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let aws_cmd = |args: &[&str]| {
        let out = Command::new(&aws)
            .args(["--endpoint-url", &server.s3, "--region", "us-east-1"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", WRITER.0)
            .env("AWS_SECRET_ACCESS_KEY", WRITER.1)
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aws_cmd(&["s3", "mb", &format!("s3://{bucket}")]);
    let target = format!("s3://{bucket}/big/object.bin");
    aws_cmd(&["s3", "cp", src.to_str().unwrap(), &target]);
    let head = aws_cmd(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "big/object.bin",
    ]);
    let etag = larder::ETag::of(&data).to_string();
    assert!(
        head.contains(&etag.replace('"', "\\\"")),
        "one ETag for the whole object: {head}"
    );
    aws_cmd(&["s3", "cp", &target, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the download differs"
    );
    let listing = aws_cmd(&["s3", "ls", &format!("s3://{bucket}/big/")]);
    assert!(listing.contains("104857600 object.bin"), "{listing}");
    if let Some(peak) = server.peak_rss_kib() {
        println!("peak RSS of the server: {} MiB", peak / 1024);
        assert!(
            peak < 80 * 1024,
            "the server's peak RSS was {peak} KiB for a 100 MiB transfer"
        );
    }
}

/// Larder's `s3` driver, pointed at Larder's S3 endpoint over SQLite, passes the conformance
/// kit. Each check gets its own server.
mod driver_conformance {
    use super::*;
    use larder::{
        Capabilities, DeleteOptions, GetOptions, GetResult, HeadOptions, Key, ListOptions,
        ListPage, Meta, PutOptions, PutResult, Store,
    };

    /// The driver, and the server it talks to (alive as long as the store is).
    #[derive(Debug)]
    struct OverEndpoint {
        inner: Arc<dyn Store>,
        _server: Arc<ServerGuard>,
    }

    /// The server, and the directory of its SQLite file (removed after it).
    struct ServerGuard(S3Server, #[allow(dead_code)] tempfile::TempDir);

    impl std::fmt::Debug for ServerGuard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "larder serve at {}", self.0.s3)
        }
    }

    #[async_trait::async_trait]
    impl Store for OverEndpoint {
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn head(&self, key: &Key, opts: HeadOptions) -> larder::Result<Meta> {
            self.inner.head(key, opts).await
        }
        async fn get(&self, key: &Key, opts: GetOptions) -> larder::Result<GetResult> {
            self.inner.get(key, opts).await
        }
        async fn put(
            &self,
            key: &Key,
            body: larder::Body,
            opts: PutOptions,
        ) -> larder::Result<PutResult> {
            self.inner.put(key, body, opts).await
        }
        async fn delete(&self, key: &Key, opts: DeleteOptions) -> larder::Result<()> {
            self.inner.delete(key, opts).await
        }
        async fn list(&self, opts: ListOptions) -> larder::Result<ListPage> {
            self.inner.list(opts).await
        }
    }

    async fn factory() -> Option<Arc<dyn Store>> {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("kit.db").display());
        let server = S3Server::start(&store, "none/");
        let bucket = "kit-bucket";
        let url = format!(
            "s3://{bucket}/over-larder?endpoint={}&region=us-east-1&allow_http=true&access_key_id={}&secret_access_key={}",
            server.s3, WRITER.0, WRITER.1
        );
        let inner = larder::open(&url).await.expect("open the s3 driver");
        // The bucket: its marker object, written through the native API (CreateBucket writes
        // the same object).
        let native = larder::open(&server.native)
            .await
            .expect("open the http driver");
        larder::StoreExt::put_bytes(
            native.as_ref(),
            &Key::new(format!("{bucket}/.larder-bucket")).unwrap(),
            bytes::Bytes::new(),
        )
        .await
        .expect("create the bucket");
        Some(Arc::new(OverEndpoint {
            inner,
            _server: Arc::new(ServerGuard(server, dir)),
        }))
    }

    larder::conformance_tests!(factory());
}
