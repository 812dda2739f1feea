//! Multipart uploads: parts spooled to temporary files, committed as one Larder write.
//!
//! Each part goes to its own file in a temporary directory as soon as it arrives, so an upload
//! of any size holds no more than one part's payload in memory. Completion streams the files,
//! in part order, into a single [`Store::put`](larder::Store::put) carrying the upload's
//! condition: the object appears whole or not at all, and a multipart `Create` or `Update` is
//! decided atomically by the store exactly as a single put is. Aborting (or dropping) an
//! upload deletes its directory.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayload, PutResult, Result, UploadPart};
use tempfile::TempDir;

use crate::error::generic;
use crate::{LarderObjectStore, WriteRequest};

/// Read size when streaming spooled parts into the store.
const READ_CHUNK: usize = 256 * 1024;

/// The parts of one upload, on disk.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: TempDir,
    /// Part index → size, for the parts completely written.
    parts: Mutex<BTreeMap<usize, u64>>,
}

impl Spool {
    /// A new, empty spool directory under `base`.
    pub(crate) fn new(base: &FsPath) -> Result<Arc<Self>> {
        let dir = tempfile::Builder::new()
            .prefix("larder-multipart-")
            .tempdir_in(base)
            .map_err(|e| generic(format!("creating a multipart spool in {base:?}: {e}")))?;
        Ok(Arc::new(Spool {
            dir,
            parts: Mutex::new(BTreeMap::new()),
        }))
    }

    fn file(&self, idx: usize) -> PathBuf {
        self.dir.path().join(idx.to_string())
    }

    /// Writes part `idx` (replacing an earlier part with that index).
    pub(crate) async fn write_part(self: Arc<Self>, idx: usize, data: PutPayload) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.parts.lock().expect("spool lock").remove(&idx);
        let path = self.file(idx);
        let io = |e: std::io::Error| generic(format!("spooling part {idx}: {e}"));
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut size = 0u64;
        for chunk in data.iter() {
            file.write_all(chunk).await.map_err(io)?;
            size += chunk.len() as u64;
        }
        file.flush().await.map_err(io)?;
        self.parts.lock().expect("spool lock").insert(idx, size);
        Ok(())
    }

    /// The body made of parts `order`, streamed from their files. Refused if one of them was
    /// never completely written.
    pub(crate) fn body(self: &Arc<Self>, order: Vec<usize>) -> Result<larder::Body> {
        {
            let parts = self.parts.lock().expect("spool lock");
            if let Some(missing) = order.iter().find(|i| !parts.contains_key(i)) {
                return Err(generic(format!(
                    "multipart part {missing} was not uploaded (or its upload has not finished)"
                )));
            }
        }
        let files: Vec<PathBuf> = order.iter().map(|i| self.file(*i)).collect();
        // The stream owns the spool, so the files outlive the write that reads them.
        let spool = Arc::clone(self);
        let stream = futures::stream::iter(files)
            .then(|path| async move { tokio::fs::File::open(path).await })
            .map_ok(|file| tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK))
            .try_flatten()
            .map(move |chunk: std::io::Result<Bytes>| {
                let _keep = &spool;
                chunk.map_err(larder::Error::from)
            });
        Ok(larder::Body::from_stream(stream))
    }
}

/// An upload started by [`ObjectStore::put_multipart_opts`](object_store::ObjectStore).
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) store: LarderObjectStore,
    pub(crate) location: Path,
    pub(crate) request: WriteRequest,
    /// `None` once completed or aborted.
    pub(crate) spool: Option<Arc<Spool>>,
    pub(crate) next: usize,
}

#[async_trait::async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next;
        self.next += 1;
        match &self.spool {
            Some(spool) => Box::pin(Arc::clone(spool).write_part(idx, data)),
            None => Box::pin(async { Err(generic("the upload was completed or aborted")) }),
        }
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let spool = self
            .spool
            .take()
            .ok_or_else(|| generic("the upload was completed or aborted"))?;
        let body = spool.body((0..self.next).collect())?;
        self.store
            .write(&self.location, body, self.request.clone())
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        // Dropping the last reference deletes the directory.
        self.spool = None;
        Ok(())
    }
}
