//! A spooled body ([`super::spool`]) as a multipart upload: the parts need no condition, and the
//! condition goes on the completion (S3 `CompleteMultipartUpload`, Azure `Put Block List`), the
//! one request that makes the parts the blob. A refused completion is decided again and
//! completed again with the new guard, without uploading the parts again (unless the backend
//! dropped them).

use futures::{StreamExt, TryStreamExt};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::PutPayload;

use super::guard::Decision;
use super::metadata;
use super::native::{BlobHeaders, Guard, Native, NativeError, Uploaded};
use super::spool::Spool;
use super::{kept_changing, ObjStore, MAX_ATTEMPTS, MULTIPART_THRESHOLD};
use crate::error::Result;
use crate::key::Key;
use crate::meta::Meta;
use crate::precondition::Preconditions;
use crate::retry::Attempts;
use crate::store::{PutOptions, PutResult};

/// Smallest part of a multipart upload (S3 wants at least 5 MiB for all but the last).
const MIN_PART_SIZE: u64 = MULTIPART_THRESHOLD as u64;

/// Most parts in one upload (S3's limit; Azure allows 50,000 blocks).
const MAX_PARTS: u64 = 10_000;

/// Parts uploaded concurrently: memory per large write is about this many parts.
const PARTS_IN_FLIGHT: usize = 4;

/// Part size for a body of `size` bytes: at least [`MIN_PART_SIZE`], and large enough that the
/// body fits in [`MAX_PARTS`] parts (whole MiB).
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    MIN_PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

/// A multipart upload of one spooled body whose parts are all uploaded: what is left is to
/// complete it under a guard, or to drop it.
pub(crate) struct Upload<'a> {
    native: &'a dyn Native,
    path: &'a Path,
    spool: &'a Spool,
    headers: &'a BlobHeaders,
    size: u64,
    id: String,
    parts: Vec<PartId>,
}

impl<'a> Upload<'a> {
    /// Starts an upload of `spool` (`size` bytes) to `path` and uploads every part; on failure
    /// the upload is dropped.
    pub(crate) async fn start(
        native: &'a dyn Native,
        path: &'a Path,
        spool: &'a Spool,
        size: u64,
        headers: &'a BlobHeaders,
    ) -> Result<Upload<'a>> {
        let mut upload = Upload {
            native,
            path,
            spool,
            headers,
            size,
            id: String::new(),
            parts: Vec::new(),
        };
        upload.upload_parts().await?;
        Ok(upload)
    }

    async fn upload_parts(&mut self) -> Result<()> {
        let (native, path, spool, size) = (self.native, self.path, self.spool, self.size);
        let id = native.begin_upload(path, self.headers).await?;
        let part_size = part_size(size);
        let parts = futures::stream::iter(0..size.div_ceil(part_size))
            .map(|i| {
                let id = &id;
                async move {
                    let offset = i * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let data = spool.read(offset, len).await?;
                    native
                        .put_part(path, id, i as usize, PutPayload::from(data))
                        .await
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        match parts {
            Ok(parts) => {
                self.id = id;
                self.parts = parts;
                Ok(())
            }
            Err(e) => {
                native.abort_upload(path, &id).await;
                Err(e)
            }
        }
    }

    /// Makes the parts the blob if `guard` holds at that moment.
    pub(crate) async fn complete(&self, guard: &Guard) -> Result<(), NativeError> {
        let upload = Uploaded {
            path: self.path,
            id: &self.id,
            parts: &self.parts,
            headers: self.headers,
        };
        self.native.complete_upload(upload, guard).await
    }

    /// Uploads every part again, as a new upload: for when the backend dropped them
    /// ([`NativeError::UploadGone`]: another writer's commit discarded them on Azure, or the
    /// upload expired).
    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.upload_parts().await
    }

    /// Drops the upload (best effort).
    pub(crate) async fn abort(self) {
        self.native.abort_upload(self.path, &self.id).await;
    }
}

impl ObjStore {
    /// A spooled body: a multipart upload, the condition on its completion.
    pub(crate) async fn put_multipart(
        &self,
        native: &dyn Native,
        key: &Key,
        spool: &Spool,
        meta: Meta,
        opts: &PutOptions,
        this_write: &str,
    ) -> Result<PutResult> {
        let path = self.path(key)?;
        // Fail before uploading gigabytes; the decision that counts is the one at completion.
        // The metadata travels with the upload, so its time is stamped after the version seen
        // now (best effort: a version committed during the upload may be newer).
        let replaces = if opts.preconditions.is_empty() {
            self.occupied(key).await?.1
        } else {
            match self
                .decide(key, &opts.preconditions, this_write, None)
                .await?
            {
                Decision::Write { replaces, .. } => replaces,
                Decision::Landed { .. } => None,
            }
        };
        let meta = Self::restamp(meta, replaces, opts)?;
        let headers = BlobHeaders {
            larder: metadata::encode(&meta, this_write),
            content_type: meta.content_type.clone(),
        };
        let mut upload = Upload::start(native, &path, spool, meta.size, &headers).await?;
        match self
            .complete(key, &mut upload, &opts.preconditions, this_write)
            .await
        {
            Ok(created) => Ok(PutResult { meta, created }),
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Completes `upload` under the guard decided from a fresh head, deciding again after each
    /// refusal. Returns `created`.
    async fn complete(
        &self,
        key: &Key,
        upload: &mut Upload<'_>,
        preconditions: &Preconditions,
        this_write: &str,
    ) -> Result<bool> {
        let mut refused: Option<bool> = None;
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let (guard, created) = if preconditions.is_empty() {
                (Guard::Always, !self.occupied(key).await?.0)
            } else {
                match self.decide(key, preconditions, this_write, refused).await? {
                    Decision::Landed { created } => return Ok(created),
                    Decision::Write { guard, created, .. } => (guard, created),
                }
            };
            #[cfg(any(test, feature = "test-util"))]
            if let Some(hook) = &self.before_completion {
                (hook.0)().await;
            }
            match upload.complete(&guard).await {
                Ok(()) => return Ok(created),
                Err(NativeError::Changed) => refused = Some(created),
                Err(NativeError::UploadGone) => {
                    upload.restart().await?;
                    refused = Some(created);
                }
                Err(NativeError::Failed(e)) => {
                    return self.settle(key, this_write, e).await.map(|()| created)
                }
            }
        }
        kept_changing(attempts, key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use bytes::Bytes;
    use object_store::memory::InMemory;
    use object_store::multipart::MultipartStore;
    use object_store::{Attribute, AttributeValue, Attributes, ObjectStore, PutMode};

    use super::*;
    use crate::body::Body;
    use crate::error::Error;
    use crate::etag::ETag;
    use crate::store::Store;
    use crate::StoreExt;

    #[test]
    fn part_sizes_fit_the_part_limit() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size(9 * MIB), MIN_PART_SIZE);
        assert_eq!(part_size(64 * MIB), MIN_PART_SIZE);
        let huge = 5 * 1024 * 1024 * MIB; // 5 TiB
        let p = part_size(huge);
        assert!(
            huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(MIB),
            "{p}"
        );
    }

    /// Native operations over an in-memory backend: parts are kept here, and a completion is a
    /// conditional PUT of their concatenation (atomic in `InMemory`, as on a real backend).
    #[derive(Debug, Default)]
    struct InMemoryNative {
        blobs: Arc<InMemory>,
        uploads: Mutex<HashMap<String, Vec<(usize, Bytes)>>>,
        begun: AtomicUsize,
        aborted: AtomicUsize,
        /// The next completion finds its parts gone.
        drop_parts: AtomicBool,
    }

    #[async_trait]
    impl Native for InMemoryNative {
        fn conditional_delete(&self) -> bool {
            false
        }

        async fn delete(&self, _: &Path, _: &Guard) -> Result<(), NativeError> {
            Err(NativeError::Failed(Error::unsupported("delete")))
        }

        async fn begin_upload(&self, _: &Path, _: &BlobHeaders) -> Result<String> {
            let id = self.begun.fetch_add(1, Ordering::SeqCst).to_string();
            self.uploads.lock().unwrap().insert(id.clone(), Vec::new());
            Ok(id)
        }

        fn parts(&self) -> &dyn MultipartStore {
            self.blobs.as_ref()
        }

        async fn put_part(
            &self,
            _: &Path,
            upload: &str,
            index: usize,
            data: PutPayload,
        ) -> Result<PartId> {
            let mut uploads = self.uploads.lock().unwrap();
            let parts = uploads.get_mut(upload).expect("a begun upload");
            parts.push((index, Bytes::from(data)));
            Ok(PartId {
                content_id: index.to_string(),
            })
        }

        async fn complete_upload(
            &self,
            upload: Uploaded<'_>,
            guard: &Guard,
        ) -> Result<(), NativeError> {
            let Uploaded {
                path,
                id: upload,
                parts,
                headers,
            } = upload;
            if self.drop_parts.swap(false, Ordering::SeqCst) {
                self.uploads.lock().unwrap().remove(upload);
            }
            let Some(mut uploaded) = self.uploads.lock().unwrap().get(upload).cloned() else {
                return Err(NativeError::UploadGone);
            };
            uploaded.sort_by_key(|(i, _)| *i);
            assert_eq!(uploaded.len(), parts.len());
            let body: Vec<u8> = uploaded.iter().flat_map(|(_, b)| b.to_vec()).collect();
            let mode = match guard {
                Guard::Always => PutMode::Overwrite,
                Guard::Absent => PutMode::Create,
                Guard::Match(e) => PutMode::Update(object_store::UpdateVersion {
                    e_tag: Some(e.clone()),
                    version: None,
                }),
            };
            let mut attributes = Attributes::new();
            attributes.insert(
                Attribute::Metadata(metadata::META_ATTR.into()),
                AttributeValue::from(headers.larder.clone()),
            );
            let opts = object_store::PutOptions {
                mode,
                attributes,
                ..Default::default()
            };
            match self.blobs.put_opts(path, body.into(), opts).await {
                Ok(_) => Ok(()),
                Err(e) if super::super::changed(&e) => Err(NativeError::Changed),
                Err(e) => Err(NativeError::Failed(super::super::map_err(e))),
            }
        }

        async fn abort_upload(&self, _: &Path, upload: &str) {
            self.uploads.lock().unwrap().remove(upload);
            self.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn store(native: &Arc<InMemoryNative>) -> ObjStore {
        ObjStore::new("test", native.blobs.clone(), "p", 1 << 30)
            .unwrap()
            .with_native(native.clone())
    }

    fn body(seed: u8) -> (Body, Bytes) {
        let data: Bytes = (0..MULTIPART_THRESHOLD + 5)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into();
        (Body::from(data.clone()), data)
    }

    /// Puts `body` at `key` with `preconditions`.
    async fn put(
        s: &ObjStore,
        key: &str,
        body: Body,
        preconditions: Preconditions,
    ) -> Result<PutResult> {
        let opts = PutOptions {
            preconditions,
            ..Default::default()
        };
        s.put(&Key::new(key).unwrap(), body, opts).await
    }

    /// Created with `If-None-Match: *` and swapped with `If-Match` in two parts each; a stale
    /// `If-Match` is refused before any part is uploaded.
    #[tokio::test]
    async fn creates_and_swaps_in_parts() {
        let native = Arc::new(InMemoryNative::default());
        let s = store(&native);
        let k = Key::new("big").unwrap();
        let (b, data) = body(1);
        let created = put(&s, "big", b, Preconditions::if_absent()).await.unwrap();
        assert!(created.created);
        assert_eq!(created.meta.etag, ETag::of(&data));
        assert_eq!(s.get_bytes(&k).await.unwrap().0, data);
        let (b, data2) = body(2);
        let pre = Preconditions::if_match(created.meta.etag.clone());
        assert!(!put(&s, "big", b, pre.clone()).await.unwrap().created);
        assert_eq!(s.get_bytes(&k).await.unwrap().0, data2);
        assert_eq!(native.begun.load(Ordering::SeqCst), 2);
        let r = put(&s, "big", body(3).0, pre).await;
        assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
        assert_eq!(native.begun.load(Ordering::SeqCst), 2);
    }

    /// A blob changed between the decision and the completion: the backend refuses the
    /// completion, the write is decided again and fails its precondition; the upload is dropped.
    #[tokio::test]
    async fn a_change_before_completion_is_decided_again() {
        let native = Arc::new(InMemoryNative::default());
        let plain = Arc::new(store(&native));
        let k = Key::new("k").unwrap();
        let v1 = plain.put_bytes(&k, "v1".into()).await.unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let s = store(&native).with_before_completion({
            let (plain, k, fired) = (plain.clone(), k.clone(), fired.clone());
            move || {
                let (plain, k, fired) = (plain.clone(), k.clone(), fired.clone());
                Box::pin(async move {
                    if fired.fetch_add(1, Ordering::SeqCst) == 0 {
                        plain.put_bytes(&k, "intruder".into()).await.unwrap();
                    }
                })
            }
        });
        let r = put(&s, "k", body(4).0, Preconditions::if_match(v1.etag)).await;
        assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(native.aborted.load(Ordering::SeqCst), 1);
        assert_eq!(&plain.get_bytes(&k).await.unwrap().0[..], b"intruder");
    }

    /// Parts the backend dropped are uploaded again from the spool, and the write completes.
    #[tokio::test]
    async fn dropped_parts_are_uploaded_again() {
        let native = Arc::new(InMemoryNative::default());
        let s = store(&native);
        let k = Key::new("k").unwrap();
        native.drop_parts.store(true, Ordering::SeqCst);
        let (b, data) = body(5);
        assert!(
            put(&s, "k", b, Preconditions::if_absent())
                .await
                .unwrap()
                .created
        );
        assert_eq!(native.begun.load(Ordering::SeqCst), 2);
        assert_eq!(s.get_bytes(&k).await.unwrap().0, data);
    }
}
