//! Multipart uploads in progress: their parts are spooled to files until completion, which is
//! one Larder `put` of the parts in order, with the upload's conditions.
//!
//! Uploads live in this process (a restart forgets them, and replicas don't share them); the
//! object they complete into is written through the store like any other.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt, TryStreamExt};
use larder::{ContentHasher, ETag, Key};
use tokio::io::AsyncWriteExt;

/// A part, as spooled.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub(crate) path: PathBuf,
    pub(crate) etag: ETag,
    pub(crate) size: u64,
    pub(crate) last_modified: SystemTime,
}

/// An upload in progress.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) key: Key,
    /// The S3 key (the Larder key without the bucket).
    pub(crate) object: String,
    pub(crate) content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) initiated: SystemTime,
    pub(crate) parts: BTreeMap<i32, Part>,
    /// Set while a completion is running, so parts can't change under it.
    pub(crate) completing: bool,
}

/// How many multipart uploads may be in progress at once; past it, CreateMultipartUpload is
/// refused with `SlowDown` (503) until uploads are completed or aborted.
pub(crate) const MAX_UPLOADS: usize = 1024;

/// The uploads in progress and where their parts are spooled.
#[derive(Debug)]
pub(crate) struct Uploads {
    dir: tempfile::TempDir,
    uploads: Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    pub(crate) fn new(spool_dir: Option<&Path>) -> std::io::Result<Self> {
        let dir = match spool_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                tempfile::Builder::new()
                    .prefix("larder-s3-parts-")
                    .tempdir_in(d)?
            }
            None => tempfile::Builder::new()
                .prefix("larder-s3-parts-")
                .tempdir()?,
        };
        Ok(Uploads {
            dir,
            uploads: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().expect("not poisoned")
    }

    /// Starts an upload; returns its id, or `None` when [`MAX_UPLOADS`] are already in
    /// progress (a client may not grow the table and the spool without bound).
    pub(crate) fn create(&self, upload: Upload) -> Option<String> {
        let mut uploads = self.lock();
        if uploads.len() >= MAX_UPLOADS {
            return None;
        }
        let id = random_id();
        uploads.insert(id.clone(), upload);
        Some(id)
    }

    /// Runs `f` on the upload `id` of `key`, if there is one.
    pub(crate) fn with<R>(
        &self,
        id: &str,
        key: &Key,
        f: impl FnOnce(&mut Upload) -> R,
    ) -> Option<R> {
        let mut uploads = self.lock();
        let upload = uploads.get_mut(id).filter(|u| &u.key == key)?;
        Some(f(upload))
    }

    /// Removes the upload and its spooled parts.
    pub(crate) fn remove(&self, id: &str, key: &Key) -> bool {
        let removed = {
            let mut uploads = self.lock();
            match uploads.get(id) {
                Some(u) if &u.key == key => uploads.remove(id),
                _ => None,
            }
        };
        match removed {
            Some(u) => {
                for p in u.parts.values() {
                    let _ = std::fs::remove_file(&p.path);
                }
                true
            }
            None => false,
        }
    }

    /// The uploads whose Larder key starts with `prefix`, by key then id.
    pub(crate) fn list(&self, prefix: &str) -> Vec<(String, String, SystemTime)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .filter(|(_, u)| u.key.as_str().starts_with(prefix))
            .map(|(id, u)| (u.object.clone(), id.clone(), u.initiated))
            .collect();
        out.sort();
        out
    }

    /// Spools one part's body to a file, hashing it; the file is the caller's until it is
    /// registered with [`Uploads::add_part`].
    pub(crate) async fn spool(
        &self,
        body: impl Stream<Item = larder::Result<Bytes>> + Send,
    ) -> larder::Result<(PathBuf, ETag, u64)> {
        let path = self.dir.path().join(random_id());
        let result = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let mut hasher = ContentHasher::new();
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            let (etag, size) = hasher.finish();
            Ok::<_, larder::Error>((etag, size))
        }
        .await;
        match result {
            Ok((etag, size)) => Ok((path, etag, size)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(e)
            }
        }
    }

    /// Registers a spooled part, replacing (and deleting) an earlier one with its number.
    /// `false` (and the file deleted) when the upload is gone or completing.
    pub(crate) fn add_part(&self, id: &str, key: &Key, number: i32, part: Part) -> bool {
        let path = part.path.clone();
        let old = self.with(id, key, |u| {
            if u.completing {
                return Err(());
            }
            Ok(u.parts.insert(number, part))
        });
        match old {
            Some(Ok(old)) => {
                if let Some(old) = old {
                    let _ = std::fs::remove_file(old.path);
                }
                true
            }
            _ => {
                let _ = std::fs::remove_file(path);
                false
            }
        }
    }
}

/// The parts' bytes, in order, streamed from their files.
pub(crate) fn concat(parts: Vec<Part>) -> impl Stream<Item = larder::Result<Bytes>> + Send {
    futures::stream::iter(parts)
        .then(|p| async move {
            let file = tokio::fs::File::open(&p.path).await?;
            Ok::<_, larder::Error>(
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                    .map_err(larder::Error::from),
            )
        })
        .try_flatten()
}

/// 128 random bits, hex: an upload id or a spool file name.
fn random_id() -> String {
    let r = std::collections::hash_map::RandomState::new();
    let mut a = r.build_hasher();
    a.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(a.finish());
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> Upload {
        Upload {
            key: Key::new("b/k").unwrap(),
            object: "k".into(),
            content_type: None,
            metadata: BTreeMap::new(),
            initiated: SystemTime::now(),
            parts: BTreeMap::new(),
            completing: false,
        }
    }

    #[test]
    fn uploads_in_progress_are_capped() {
        let uploads = Uploads::new(None).unwrap();
        let ids: Vec<String> = (0..MAX_UPLOADS)
            .map(|_| uploads.create(upload()).expect("under the cap"))
            .collect();
        assert!(uploads.create(upload()).is_none(), "one past the cap");
        // Finishing one makes room for one.
        assert!(uploads.remove(&ids[0], &Key::new("b/k").unwrap()));
        assert!(uploads.create(upload()).is_some());
        assert!(uploads.create(upload()).is_none());
    }
}
