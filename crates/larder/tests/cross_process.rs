//! The CAS race across OS processes: two copies of this test binary open the same store by URL
//! and increment one counter with `If-Match` retries; nothing may be lost.
//!
//! Runs for every store URL whose driver is compiled in and whose backend is reachable: fs and
//! sqlite in a temporary directory, and the networked ones named by `LARDER_TEST_*_URL`.
//! Without a custom harness a test can't re-run itself as a worker, hence `harness = false`.

use std::process::Command;
use std::time::Instant;

use larder::conformance::race::{self, INCREMENTS_PER_TASK, PROCESSES, TASKS_PER_PROCESS};
use larder::conformance::{fresh_prefix, increment, key, read_counter, skip_or_fail};
use larder::Error;

fn main() {
    let rt = race::runtime();
    if let Ok(url) = std::env::var("LARDER_RACE_URL") {
        let key = std::env::var("LARDER_RACE_KEY").unwrap();
        rt.block_on(worker(&url, &key));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut candidates = vec![
        ("fs", format!("fs://{}/fs-store", dir.path().display())),
        (
            "sqlite",
            format!("sqlite://{}/race.db", dir.path().display()),
        ),
    ];
    // Only drivers compiled into this build: a backend the build can't talk to is not required.
    let networked: &[(&str, &str)] = &[
        #[cfg(feature = "postgres")]
        ("postgres", "LARDER_TEST_POSTGRES_URL"),
        #[cfg(feature = "mysql")]
        ("mysql", "LARDER_TEST_MYSQL_URL"),
        #[cfg(feature = "redis")]
        ("redis", "LARDER_TEST_REDIS_URL"),
        #[cfg(feature = "nats")]
        ("nats", "LARDER_TEST_NATS_URL"),
        #[cfg(feature = "s3")]
        ("s3", "LARDER_TEST_S3_URL"),
        #[cfg(feature = "s3")]
        ("s3_alt", "LARDER_TEST_S3_ALT_URL"),
        #[cfg(feature = "azure")]
        ("azure", "LARDER_TEST_AZURE_URL"),
    ];
    for &(name, var) in networked {
        match std::env::var(var) {
            Ok(url) => candidates.push((name, url)),
            Err(_) => {
                let _: Option<()> = skip_or_fail(name, format!("{var} is not set"));
            }
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, url) in candidates {
        match rt.block_on(race(&url)) {
            Outcome::Passed(detail) => {
                println!("test cross_process::{name} ... ok ({detail})");
                passed += 1;
            }
            Outcome::Skipped(why) => println!("test cross_process::{name} ... skipped: {why}"),
            Outcome::Failed(why) => {
                println!("test cross_process::{name} ... FAILED: {why}");
                failed += 1;
            }
        }
    }
    println!("\ncross_process: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

enum Outcome {
    Passed(String),
    Skipped(String),
    Failed(String),
}

async fn race(url: &str) -> Outcome {
    let store = match larder::open(url).await {
        Ok(s) => s,
        // The driver is not compiled into this build.
        Err(Error::Unsupported { what }) => return Outcome::Skipped(what),
        Err(e) => {
            return match skip_or_fail::<()>(url, &e) {
                None => Outcome::Skipped(e.to_string()),
                Some(()) => unreachable!(),
            }
        }
    };
    let k = key(&fresh_prefix("cross_process"), "counter");
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env("LARDER_RACE_URL", url)
                .env("LARDER_RACE_KEY", k.as_str())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        if !status.success() {
            return Outcome::Failed(format!("a worker exited with {status}"));
        }
    }
    let want = race::TOTAL;
    let got = read_counter(&*store, &k).await;
    if got == want {
        Outcome::Passed(format!(
            "{want} increments from {PROCESSES} processes in {:?}",
            started.elapsed()
        ))
    } else {
        Outcome::Failed(format!(
            "counter is {got}, expected {want}: updates were lost"
        ))
    }
}

async fn worker(url: &str, key: &str) {
    let store = larder::open(url).await.expect("worker opens the store");
    let key = larder::Key::new(key).unwrap();
    let tasks: Vec<_> = (0..TASKS_PER_PROCESS)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { increment(&*store, &key, INCREMENTS_PER_TASK).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("increment");
    }
}
