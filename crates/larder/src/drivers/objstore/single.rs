//! A body held in memory: one PUT, guarded by the backend's condition (through the client
//! without retries, so a PUT whose outcome is unknown is settled, not sent again).

use object_store::{ObjectStore, PutMode, PutPayload, UpdateVersion};

use super::guard::Decision;
use super::metadata;
use super::native::Guard;
use super::{changed, kept_changing, map_err, ObjStore, MAX_ATTEMPTS};
use crate::error::Result;
use crate::key::Key;
use crate::meta::Meta;
use crate::precondition::Preconditions;
use crate::retry::Attempts;
use crate::store::{PutOptions, PutResult};

impl ObjStore {
    /// A body held in memory: one PUT, guarded by the backend's condition.
    pub(crate) async fn put_single(
        &self,
        key: &Key,
        bytes: bytes::Bytes,
        meta: Meta,
        opts: &PutOptions,
        this_write: &str,
    ) -> Result<PutResult> {
        let path = self.path(key)?;
        let payload = PutPayload::from(bytes);
        let put = |meta: &Meta, mode: PutMode| object_store::PutOptions {
            mode,
            attributes: metadata::attributes(meta, this_write),
            ..Default::default()
        };
        let mut meta = meta;

        if opts.preconditions.is_empty() {
            // Unconditional: the head only tells `created` and the time not to stamp before,
            // which are therefore informative, not atomic with the write.
            let (existed, replaces) = self.occupied(key).await?;
            meta = Self::restamp(meta, replaces, opts)?;
            self.inner
                .put_opts(&path, payload, put(&meta, PutMode::Overwrite))
                .await
                .map_err(map_err)?;
            return Ok(PutResult {
                meta,
                created: !existed,
            });
        }

        // Create-only is tried directly first: when the key is free, no head is needed.
        let mut try_create = opts.preconditions == Preconditions::if_absent();
        let mut refused: Option<bool> = None;
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let (mode, created) = if std::mem::take(&mut try_create) {
                (PutMode::Create, true)
            } else {
                match self
                    .decide(key, &opts.preconditions, this_write, refused)
                    .await?
                {
                    Decision::Landed { created } => return Ok(PutResult { meta, created }),
                    Decision::Write {
                        guard: Guard::Match(e_tag),
                        version,
                        created,
                        replaces,
                    } => {
                        meta = Self::restamp(meta, replaces, opts)?;
                        (
                            PutMode::Update(UpdateVersion {
                                e_tag: Some(e_tag),
                                version,
                            }),
                            created,
                        )
                    }
                    Decision::Write { created, .. } => (PutMode::Create, created),
                }
            };
            match self
                .writer
                .put_opts(&path, payload.clone(), put(&meta, mode))
                .await
            {
                Ok(_) => return Ok(PutResult { meta, created }),
                Err(e) if changed(&e) => refused = Some(created),
                Err(e) => {
                    return self
                        .settle(key, this_write, map_err(e))
                        .await
                        .map(|()| PutResult { meta, created })
                }
            }
        }
        kept_changing(attempts, key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions};

    use super::*;
    use crate::store::Store;
    use crate::StoreExt;

    /// An in-memory backend whose next conditional PUT fails like a lost response: after
    /// writing (`lands`) or without writing. Counts conditional PUTs.
    #[derive(Debug, Default)]
    struct LosesResponses {
        inner: InMemory,
        fail_next: std::sync::atomic::AtomicBool,
        lands: bool,
        conditional_puts: AtomicUsize,
    }

    impl std::fmt::Display for LosesResponses {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LosesResponses")
        }
    }

    #[async_trait]
    impl ObjectStore for LosesResponses {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if matches!(opts.mode, PutMode::Overwrite) {
                return self.inner.put_opts(location, payload, opts).await;
            }
            self.conditional_puts.fetch_add(1, Ordering::SeqCst);
            if !self.fail_next.swap(false, Ordering::SeqCst) {
                return self.inner.put_opts(location, payload, opts).await;
            }
            if self.lands {
                self.inner.put_opts(location, payload, opts).await?;
            }
            Err(object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            })
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A conditional PUT whose response is lost is sent once; the blob's write id settles it:
    /// success if it landed, an "outcome unknown" error if it did not.
    #[tokio::test]
    async fn lost_response_is_settled_by_the_write_id_not_resent() {
        for lands in [true, false] {
            let backend = Arc::new(LosesResponses {
                lands,
                ..Default::default()
            });
            let store = ObjStore::new("test", backend.clone(), "p", 1 << 20).unwrap();
            let k = Key::new("k").unwrap();
            let first = store.put_bytes(&k, "one".into()).await.unwrap();
            backend.fail_next.store(true, Ordering::SeqCst);
            let before = backend.conditional_puts.load(Ordering::SeqCst);
            let opts = PutOptions {
                preconditions: Preconditions::if_match(first.etag.clone()),
                ..Default::default()
            };
            let r = store.put(&k, "two".into(), opts).await;
            assert_eq!(backend.conditional_puts.load(Ordering::SeqCst) - before, 1);
            let now = store.get_bytes(&k).await.unwrap().0;
            if lands {
                let r = r.unwrap();
                assert_eq!((r.created, &now[..]), (false, &b"two"[..]));
            } else {
                let e = r.unwrap_err();
                assert!(
                    e.is_retryable() && e.to_string().contains("outcome is unknown"),
                    "{e}"
                );
                assert_eq!(&now[..], b"one");
            }
        }
    }
}
