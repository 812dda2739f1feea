//! The postgres and mysql drivers against the real servers named by `LARDER_TEST_POSTGRES_URL`
//! and `LARDER_TEST_MYSQL_URL`: for each, the conformance kit, two separately opened stores,
//! and invalid input.

/// The tests of one SQL driver: `$module` names the test module, `$feature` the driver's
/// feature and `$var` the variable naming the server.
macro_rules! sql_tests {
    ($module:ident, $feature:literal, $var:literal, $conn:ty, $date_ahead:literal, $lock_row:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use std::sync::Arc;

            use larder::conformance::{fresh_prefix, skip_or_fail};
            use larder::{Error, Key, Store, StoreExt};

            const NAME: &str = stringify!($module);

            fn url() -> Option<String> {
                match std::env::var($var) {
                    Ok(u) => Some(u),
                    Err(_) => skip_or_fail(NAME, concat!($var, " is not set")),
                }
            }

            async fn open_with(query: &str) -> Option<Arc<dyn Store>> {
                let url = url()?;
                let sep = if url.contains('?') { '&' } else { '?' };
                match larder::open(&format!("{url}{sep}{query}")).await {
                    Ok(s) => Some(s),
                    Err(e) => skip_or_fail(NAME, e),
                }
            }

            async fn store() -> Option<Arc<dyn Store>> {
                open_with("table=larder_kit").await
            }

            larder::conformance_tests!(store());

            fn k(s: &str) -> Key {
                Key::new(s).unwrap()
            }

            #[tokio::test]
            async fn separately_opened_stores_see_one_version() {
                let Some(one) = open_with("table=larder_shared").await else {
                    return;
                };
                let two = open_with("table=larder_shared").await.unwrap();
                let key = k(&format!("{}/doc", fresh_prefix(&format!("{NAME}-shared"))));
                let v1 = one.create(&key, "v1".into()).await.unwrap();
                let seen = two.head(&key, Default::default()).await.unwrap();
                assert_eq!(seen.etag, v1.etag);
                assert_eq!(seen, v1);
                let v2 = two.swap(&key, &v1.etag, "v2".into()).await.unwrap();
                let stale = one.swap(&key, &v1.etag, "v3".into()).await;
                match stale {
                    Err(Error::PreconditionFailed { current, .. }) => {
                        assert_eq!(current.map(|m| m.etag), Some(v2.etag.clone()))
                    }
                    other => panic!("expected 412, got {other:?}"),
                }
                let (bytes, meta) = one.get_bytes(&key).await.unwrap();
                assert_eq!(&bytes[..], b"v2");
                assert_eq!(meta.etag, v2.etag);
            }

            /// A version written by a client whose clock is ahead (an hour here) is never
            /// followed by an older date: every kind of put, one-statement or not, dates the
            /// next version at or after it.
            #[tokio::test]
            async fn last_modified_never_goes_back_after_a_clock_ahead() {
                use sqlx::Connection;

                let Some(store) = open_with("table=larder_clock").await else {
                    return;
                };
                let key = k(&format!("{}/doc", fresh_prefix(&format!("{NAME}-clock"))));
                let mut conn = <$conn>::connect(&url().unwrap()).await.unwrap();
                let mut meta = store.put_bytes(&key, "v0".into()).await.unwrap();
                for (i, how) in ["swap", "unconditional", "if-match-any"].iter().enumerate() {
                    sqlx::query(&format!($date_ahead, "larder_clock"))
                        .bind(key.as_str())
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    let ahead = store.head(&key, Default::default()).await.unwrap();
                    assert!(ahead.last_modified > meta.last_modified);
                    let body = bytes::Bytes::from(format!("v{}", i + 1));
                    let next = match *how {
                        "swap" => store.swap(&key, &ahead.etag, body).await.unwrap(),
                        "unconditional" => store.put_bytes(&key, body).await.unwrap(),
                        _ => {
                            let opts = larder::PutOptions {
                                preconditions: larder::Preconditions {
                                    if_match: Some(larder::ETagCondition::Any),
                                    ..Default::default()
                                },
                                ..Default::default()
                            };
                            store.put(&key, body.into(), opts).await.unwrap().meta
                        }
                    };
                    assert!(next.last_modified >= ahead.last_modified, "{how}");
                    assert_eq!(store.head(&key, Default::default()).await.unwrap(), next);
                    meta = next;
                }
            }

            /// A write blocked on a row lock another connection holds fails within
            /// `statement_timeout_ms` (MySQL: whole seconds, at least 1) as a retryable error,
            /// and goes through once the lock is released.
            #[tokio::test]
            async fn a_write_blocked_on_a_lock_fails_within_the_statement_timeout() {
                use sqlx::Connection;
                use std::time::{Duration, Instant};

                let Some(store) =
                    open_with("table=larder_lockwait&statement_timeout_ms=1000").await
                else {
                    return;
                };
                let key = k(&format!(
                    "{}/held",
                    fresh_prefix(&format!("{NAME}-lockwait"))
                ));
                store.put_bytes(&key, "v1".into()).await.unwrap();
                let mut holder = <$conn>::connect(&url().unwrap()).await.unwrap();
                let mut tx = holder.begin().await.unwrap();
                sqlx::query(&format!($lock_row, "larder_lockwait"))
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for write in ["unconditional", "swap"] {
                    let started = Instant::now();
                    let err = match write {
                        "swap" => {
                            let etag = larder::ETag::of(b"v1");
                            store.swap(&key, &etag, "v2".into()).await.unwrap_err()
                        }
                        _ => store.put_bytes(&key, "v2".into()).await.unwrap_err(),
                    };
                    let took = started.elapsed();
                    assert!(err.is_retryable(), "{write}: {err:?}");
                    assert!(took < Duration::from_secs(4), "{write}: took {took:?}");
                }
                tx.rollback().await.unwrap();
                store.put_bytes(&key, "v2".into()).await.unwrap();
            }

            #[tokio::test]
            async fn bad_table_names_are_refused() {
                let Some(url) = url() else { return };
                let sep = if url.contains('?') { '&' } else { '?' };
                let r = larder::open(&format!("{url}{sep}table=x;drop")).await;
                assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
            }
        }
    };
}

sql_tests!(
    postgres,
    "postgres",
    "LARDER_TEST_POSTGRES_URL",
    sqlx::PgConnection,
    "UPDATE {0} SET last_modified = last_modified + 3600000,
       meta = jsonb_set(meta::jsonb, '{{modified_ms}}', to_jsonb(last_modified + 3600000))::text
     WHERE key = $1",
    "SELECT 1 FROM {} WHERE key = $1 FOR UPDATE"
);
sql_tests!(
    mysql,
    "mysql",
    "LARDER_TEST_MYSQL_URL",
    sqlx::MySqlConnection,
    "UPDATE {0} SET meta = JSON_SET(meta, '$.modified_ms', last_modified + 3600000),
       last_modified = last_modified + 3600000
     WHERE `key` = ?",
    "SELECT 1 FROM {} WHERE `key` = ? FOR UPDATE"
);
