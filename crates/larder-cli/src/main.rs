//! The `larder` command: `larder serve` runs a server; `get`, `put`, `stat`, `rm` and `ls` talk
//! to one through the `http` driver of the `larder` crate.
//!
//! Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 precondition failed, 5 not
//! modified (nothing written).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use larder::drivers::http::{HttpConfig, HttpStore};
use larder::precondition::{parse_etag_condition, ETagCondition};
use larder::range::{parse_range_header, RangeHeader};
use larder::{
    Body, ByteRange, DeleteOptions, Error, GetOptions, HeadOptions, Key, ListOptions, Meta,
    Preconditions, PutOptions, Store,
};
use tokio::io::AsyncWriteExt;

/// Transfers at least this big get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 4 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "larder",
    version,
    about = "Larder: a key/blob store with atomic compare-and-swap on content ETags"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is, for the client commands.
#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// The server: `http(s)://HOST:PORT[/key/prefix][?timeout=SECS]`.
    #[arg(long, env = "LARDER_URL", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// Bearer token (overrides a `token=` in the server URL).
    #[arg(long, env = "LARDER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// One object on the server, for the commands on one key.
#[derive(Args, Debug, Clone)]
struct Object {
    #[command(flatten)]
    client: ClientArgs,
    /// The key.
    key: String,
}

impl Object {
    /// The store and the key (a bad key is a usage error).
    async fn open(&self) -> Result<(HttpStore, Key), Failure> {
        let store = connect(&self.client).await?;
        let key = Key::new(&*self.key).map_err(|e| Failure::usage(e.to_string()))?;
        Ok((store, key))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a Larder server (the native HTTP API over a store).
    Serve(larder_server::ServeArgs),
    /// Prints an object (or writes it to a file).
    Get(GetArgs),
    /// Writes an object from a file or stdin (`-`) and prints its new ETag.
    Put(PutArgs),
    /// Prints an object's metadata.
    Stat {
        #[command(flatten)]
        object: Object,
    },
    /// Deletes an object.
    Rm {
        #[command(flatten)]
        object: Object,
        /// Only if the current ETag is this: exit 4 otherwise.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Lists keys under a prefix.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Group keys by this character after the prefix (directories with `/`).
        #[arg(long, value_parser = parse_delimiter)]
        delimiter: Option<char>,
        /// Size, last-modified time and ETag too.
        #[arg(short, long)]
        long: bool,
    },
}

/// The flags of `larder get`.
#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    object: Object,
    /// Write to this file instead of stdout (replaced only once the whole body arrived).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only if the ETag is not this (or `*`): exit 5, nothing written, when it is.
    #[arg(long, value_name = "ETAG")]
    if_none_match: Option<String>,
    /// Only if the ETag is this: exit 4 otherwise.
    #[arg(long, value_name = "ETAG")]
    if_match: Option<String>,
    /// Only these bytes: `a-b` (inclusive), `a-` or `-n` (the last n).
    #[arg(long, value_name = "RANGE", allow_hyphen_values = true)]
    range: Option<String>,
}

impl GetArgs {
    /// The read's conditions and range.
    fn options(&self) -> Result<GetOptions, Failure> {
        Ok(GetOptions {
            preconditions: etag_preconditions(&self.if_match, &self.if_none_match)?,
            range: self.range.as_deref().map(parse_range).transpose()?,
            if_range: None,
        })
    }
}

/// The flags of `larder put`.
#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    object: Object,
    /// The file to upload, or `-` for stdin.
    file: String,
    /// Only if the current ETag is this (a swap): exit 4 otherwise.
    #[arg(long, value_name = "ETAG", conflicts_with = "if_none_match")]
    if_match: Option<String>,
    /// `*`: only if there is no object yet (create-only): exit 4 otherwise.
    #[arg(long, value_name = "ETAG")]
    if_none_match: Option<String>,
    /// Expire the object after this long (`90s`, `30m`, `1h`, `2d`).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Media type to store.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// User metadata `name=value` (repeatable).
    #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
}

impl PutArgs {
    /// The write's conditions, expiry, content type and metadata.
    fn options(&self) -> Result<PutOptions, Failure> {
        Ok(PutOptions {
            preconditions: etag_preconditions(&self.if_match, &self.if_none_match)?,
            ttl: self.ttl,
            content_type: self.content_type.clone(),
            metadata: self.meta.iter().cloned().collect(),
            expected_etag: None,
        })
    }
}

/// A failed command: the message for stderr and the exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let (code, message) = match &e {
            Error::NotFound { key } => (3, format!("not found: {key}")),
            Error::PreconditionFailed { current: Some(m) } => (
                4,
                format!("precondition failed: the current ETag is {}", m.etag),
            ),
            Error::PreconditionFailed { current: None } => {
                (4, "precondition failed: there is no object".into())
            }
            Error::NotModified(m) => (5, format!("not modified: the ETag is {}", m.etag)),
            _ => (1, larder::error::chain(&e)),
        };
        Failure { code, message }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    give_large_buffers_back();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("larder: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cmd: Command) -> CmdResult {
    match cmd {
        Command::Serve(args) => {
            // Logs on stderr; `RUST_LOG` filters them (default: info).
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .try_init();
            let config = larder_server::Config::resolve(&args).map_err(|e| Failure {
                code: 2,
                message: larder::error::chain(&e),
            })?;
            larder_server::serve(config).await.map_err(|e| Failure {
                code: 1,
                message: larder::error::chain(&e),
            })
        }
        Command::Get(args) => {
            let (store, key) = args.object.open().await?;
            get(&store, &key, args.options()?, args.output.as_deref()).await
        }
        Command::Put(args) => {
            let (store, key) = args.object.open().await?;
            put(&store, &key, &args.file, args.options()?).await
        }
        Command::Stat { object } => {
            let (store, key) = object.open().await?;
            print!(
                "{}",
                describe(&store.head(&key, HeadOptions::default()).await?)
            );
            Ok(())
        }
        Command::Rm { object, if_match } => {
            let (store, key) = object.open().await?;
            let if_match = etag_condition(if_match.as_deref(), "--if-match")?;
            let preconditions = Preconditions {
                if_match,
                ..Default::default()
            };
            store.delete(&key, DeleteOptions { preconditions }).await?;
            Ok(())
        }
        Command::Ls {
            client,
            prefix,
            delimiter,
            long,
        } => {
            let store = connect(&client).await?;
            ls(&store, prefix.unwrap_or_default(), delimiter, long).await
        }
    }
}

async fn connect(args: &ClientArgs) -> Result<HttpStore, Failure> {
    let mut config = HttpConfig::from_url(&args.server)
        .map_err(|e| Failure::usage(format!("--server: {}", larder::error::chain(&e))))?;
    if let Some(t) = args.token.as_ref().filter(|t| !t.is_empty()) {
        config.token = Some(t.clone());
    }
    // Each command is one request: asking for the server's capabilities first would double it.
    config.fetch_capabilities = false;
    Ok(HttpStore::open(config).await?)
}

/// An ETag argument: `*`, a quoted tag (`"…"`, `W/"…"`), a bare hex tag (quotes added, as
/// shells eat them), or a comma-separated list of those.
/// `--if-match` / `--if-none-match` as preconditions.
fn etag_preconditions(
    if_match: &Option<String>,
    if_none_match: &Option<String>,
) -> Result<Preconditions, Failure> {
    Ok(Preconditions {
        if_match: etag_condition(if_match.as_deref(), "--if-match")?,
        if_none_match: etag_condition(if_none_match.as_deref(), "--if-none-match")?,
        ..Default::default()
    })
}

fn etag_condition(arg: Option<&str>, flag: &str) -> Result<Option<ETagCondition>, Failure> {
    let Some(arg) = arg else { return Ok(None) };
    let quoted: Vec<String> = arg
        .split(',')
        .map(str::trim)
        .map(|t| {
            if t == "*" || t.starts_with('"') || t.starts_with("W/") {
                t.to_owned()
            } else {
                format!("\"{t}\"")
            }
        })
        .collect();
    let joined = quoted.join(", ");
    parse_etag_condition([joined.as_str()]).map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// `a-b`, `a-`, `-n`, or the same with a `bytes=` prefix.
fn parse_range(arg: &str) -> Result<ByteRange, Failure> {
    let spec = arg.strip_prefix("bytes=").unwrap_or(arg);
    match parse_range_header(&format!("bytes={spec}")) {
        Ok(RangeHeader::Single(r)) => Ok(r),
        Ok(_) => Err(Failure::usage(format!("--range {arg:?}: one range only"))),
        Err(e) => Err(Failure::usage(format!("--range: {e}"))),
    }
}

fn parse_ttl(arg: &str) -> Result<Duration, String> {
    let d = match arg.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(arg).map_err(|e| e.to_string())?,
    };
    if d.is_zero() {
        return Err("a TTL must be positive".into());
    }
    Ok(d)
}

fn parse_meta(arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not NAME=VALUE"))?;
    if k.is_empty() {
        return Err("the metadata name is empty".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_delimiter(arg: &str) -> Result<char, String> {
    let mut chars = arg.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err("the delimiter is one character".into()),
    }
}

/// A progress bar for a transfer of `len` bytes, or a hidden one when it is small or stderr is
/// not a terminal.
fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    match len {
        Some(len) if len >= PROGRESS_THRESHOLD && std::io::stderr().is_terminal() => {
            let bar = ProgressBar::new(len);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.to_owned());
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

async fn get(store: &HttpStore, key: &Key, opts: GetOptions, output: Option<&Path>) -> CmdResult {
    // Nothing is opened or written until the server has answered with a body.
    let got = store.get(key, opts).await?;
    let len = got
        .range
        .as_ref()
        .map_or(got.meta.size, |r| r.end - r.start);
    let bar = progress(Some(len), key.as_str());
    let mut body = got.body;
    match output {
        None => {
            let mut out = tokio::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                out.write_all(&chunk).await?;
                bar.inc(chunk.len() as u64);
            }
            out.flush().await?;
        }
        Some(path) => {
            // Into a temporary file beside the target, renamed over it only when complete, so
            // a failed download never leaves a torn file.
            let tmp = temp_path(path);
            let result = async {
                let mut file = tokio::fs::File::create(&tmp).await?;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    file.write_all(&chunk).await?;
                    bar.inc(chunk.len() as u64);
                }
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&tmp, path).await?;
                Ok::<(), Failure>(())
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.larder-{}.tmp", std::process::id()))
}

async fn put(store: &HttpStore, key: &Key, file: &str, opts: PutOptions) -> CmdResult {
    let (reader, len): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = if file == "-"
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| Failure::from(std::io::Error::new(e.kind(), format!("{file}: {e}"))))?;
        let len = f.metadata().await.ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let bar = progress(len, key.as_str());
    let counter = bar.clone();
    // Streamed in 256 KiB reads: a large file is never held in memory.
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).map(
        move |chunk: std::io::Result<Bytes>| {
            let chunk = chunk?;
            counter.inc(chunk.len() as u64);
            Ok(chunk)
        },
    );
    let result = store.put(key, Body::from_stream(stream), opts).await;
    bar.finish_and_clear();
    println!("{}", result?.meta.etag);
    Ok(())
}

/// `name: value` lines, as `larder stat` prints them.
fn describe(m: &Meta) -> String {
    let mut out = format!(
        "key: {}\netag: {}\nsize: {}\nlast_modified: {}\n",
        m.key,
        m.etag,
        m.size,
        humantime::format_rfc3339_millis(m.last_modified)
    );
    if let Some(t) = m.expires_at {
        out.push_str(&format!(
            "expires_at: {}\n",
            humantime::format_rfc3339_seconds(t)
        ));
    }
    if let Some(ct) = &m.content_type {
        out.push_str(&format!("content_type: {ct}\n"));
    }
    for (k, v) in &m.metadata {
        out.push_str(&format!("meta.{k}: {v}\n"));
    }
    out
}

async fn ls(store: &HttpStore, prefix: String, delimiter: Option<char>, long: bool) -> CmdResult {
    let mut opts = ListOptions {
        prefix,
        delimiter,
        ..Default::default()
    };
    let mut out = String::new();
    loop {
        let page = store.list(opts.clone()).await?;
        // Objects and common prefixes, merged back into key order.
        let mut lines: Vec<(String, String)> = page
            .objects
            .iter()
            .map(|m| {
                let line = if long {
                    format!(
                        "{:>12}  {}  {}  {}",
                        m.size,
                        humantime::format_rfc3339_seconds(m.last_modified),
                        m.etag,
                        m.key
                    )
                } else {
                    m.key.to_string()
                };
                (m.key.to_string(), line)
            })
            .collect();
        lines.extend(page.common_prefixes.iter().map(|p| {
            let line = if long {
                format!("{:>12}  {:20}  {:66}  {p}", "-", "", "PREFIX")
            } else {
                p.clone()
            };
            (p.clone(), line)
        }));
        lines.sort();
        for (_, line) in lines {
            out.push_str(&line);
            out.push('\n');
        }
        // Printed page by page, so a long listing starts at once.
        let mut stdout = tokio::io::stdout();
        stdout.write_all(out.as_bytes()).await?;
        stdout.flush().await?;
        out.clear();
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Makes freed upload buffers go back to the OS. glibc raises its mmap threshold after a large
/// block is freed, so later bodies (up to 32 MiB each) come from the heap arenas, which keep
/// their pages: twelve 50 MB uploads aborted half-way left a memory-store server at 94 MB
/// instead of its 21 MB baseline (bench/memory.py). A fixed threshold of 128 KiB (glibc's
/// default, kept from rising) serves every large buffer with its own mapping, unmapped on free.
fn give_large_buffers_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let tag = larder::ETag::of(b"x");
        let bare = tag.opaque().to_owned();
        assert_eq!(
            etag_condition(Some(&bare), "f").ok().flatten(),
            Some(ETagCondition::tag(tag.clone()))
        );
        assert_eq!(
            etag_condition(Some(&tag.to_string()), "f").ok().flatten(),
            Some(ETagCondition::tag(tag))
        );
        assert_eq!(
            etag_condition(Some("*"), "f").ok().flatten(),
            Some(ETagCondition::Any)
        );
        assert!(etag_condition(Some("a b"), "f").is_err());
        assert_eq!(
            parse_range("2-5").ok(),
            Some(ByteRange::Bounded { first: 2, last: 5 })
        );
        assert_eq!(parse_range("-3").ok(), Some(ByteRange::Suffix(3)));
        assert_eq!(parse_range("bytes=7-").ok(), Some(ByteRange::From(7)));
        assert!(parse_range("1-2,4-5").is_err());
        assert!(parse_range("x").is_err());
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0s").is_err() && parse_ttl("soon").is_err());
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_meta("novalue").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "larder",
            "get",
            "k",
            "--range",
            "-5",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Get(GetArgs { range: Some(r), .. }) if r == "-5"));
        let err = Cli::try_parse_from([
            "larder",
            "put",
            "k",
            "f",
            "--if-match",
            "a",
            "--if-none-match",
            "*",
        ]);
        assert!(err.is_err(), "--if-match and --if-none-match conflict");
    }
}
