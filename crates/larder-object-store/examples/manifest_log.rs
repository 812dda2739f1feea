//! An append-only commit log, fenced by object_store's conditional puts, on any Larder store.
//!
//! Several writers append commits concurrently. A commit is the object `log/<n>` written with
//! `PutMode::Create`: of writers racing for the same number, exactly one wins and the others
//! move to the next number, so the log has no gap and no overwrite (delta-rs commits the same
//! way). Beside it, `log/_head` names the latest commit and moves forward only with
//! `PutMode::Update` against the version the writer read, so it never moves backwards.
//!
//! ```sh
//! cargo run -p larder-object-store --example manifest_log                          # fs://, a temp dir
//! cargo run -p larder-object-store --example manifest_log -- fs:///tmp/manifest-demo
//! cargo run -p larder-object-store --example manifest_log -- postgres://root@127.0.0.1:5432/test
//! ```
//!
//! Only the URL changes: `LarderObjectStore::open` takes any Larder store URL.

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use larder_object_store::LarderObjectStore;
use object_store::path::Path;
use object_store::{Error, ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};

const WRITERS: usize = 4;
const COMMITS_PER_WRITER: usize = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("fs://{}/larder", temp.path().display()));
    // Each run gets its own table directory, so runs on a shared database don't mix.
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis();
    let store = LarderObjectStore::open(&url)
        .await?
        .with_prefix(&format!("examples/manifest-log/{run}"))?;
    println!("{WRITERS} writers appending {COMMITS_PER_WRITER} commits each to {store} at {url}");

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                for i in 0..COMMITS_PER_WRITER {
                    lost += append(&store, &format!("writer {w} commit {i}")).await?;
                }
                Ok::<usize, Error>(lost)
            })
        })
        .collect();
    let mut lost = 0;
    for w in writers {
        lost += w.await??;
    }

    // The log: every number from 1 to the total, each written once.
    let mut commits: Vec<Path> = store
        .list(Some(&Path::from("log")))
        .map_ok(|m| m.location)
        .try_filter(|p| futures::future::ready(p.filename() != Some("_head")))
        .try_collect()
        .await?;
    commits.sort();
    let total = WRITERS * COMMITS_PER_WRITER;
    let expected: Vec<Path> = (1..=total).map(commit_path).collect();
    assert_eq!(commits, expected, "the log has a gap or an extra commit");
    let (head, _) = read_head(&store).await?;
    assert_eq!(head, total, "the head lags behind the log");
    let last = store.get(&commit_path(total)).await?.bytes().await?;
    println!(
        "{total} commits, numbered 1..={total} with no gap; head = {head}; {lost} lost races \
         retried; last commit: {:?}",
        std::str::from_utf8(&last)?
    );

    // Tidy up the run's objects (a shared database keeps them otherwise).
    let all = store.list(None).map_ok(|m| m.location).boxed();
    store.delete_stream(all).try_collect::<Vec<_>>().await?;
    Ok(())
}

fn commit_path(n: usize) -> Path {
    Path::from(format!("log/{n:020}"))
}

/// The head's commit number and the version to update it from (`None`: no head yet).
async fn read_head(store: &LarderObjectStore) -> Result<(usize, Option<UpdateVersion>), Error> {
    match store.get(&Path::from("log/_head")).await {
        Ok(r) => {
            let version = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            let bytes = r.bytes().await?;
            let n = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok((n, Some(version)))
        }
        Err(Error::NotFound { .. }) => Ok((0, None)),
        Err(e) => Err(e),
    }
}

/// Appends one commit; returns how many commit numbers other writers took first.
async fn append(store: &LarderObjectStore, entry: &str) -> Result<usize, Error> {
    let (head, _) = read_head(store).await?;
    let mut n = head + 1;
    let mut lost = 0;
    // Claim the next free number: a create-only write is won by exactly one writer.
    loop {
        let put = store
            .put_opts(
                &commit_path(n),
                entry.to_owned().into(),
                PutMode::Create.into(),
            )
            .await;
        match put {
            Ok(_) => break,
            Err(Error::AlreadyExists { .. }) => {
                lost += 1;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
    // Move the head forward to n, unless another writer already moved it past n.
    loop {
        let (head, version) = read_head(store).await?;
        if head >= n {
            return Ok(lost);
        }
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match store
            .put_opts(&Path::from("log/_head"), n.to_string().into(), mode.into())
            .await
        {
            Ok(_) => return Ok(lost),
            Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}
