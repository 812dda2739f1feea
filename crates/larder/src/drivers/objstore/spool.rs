//! A body held for upload: in memory when small, in an unlinked temporary file when large.
//!
//! Why spool at all: S3 fixes a blob's user metadata when a multipart upload starts, and the
//! metadata holds the content ETag, which is only known once the whole body has been hashed.
//! So a large body is hashed into a temporary file first, then uploaded part by part from it;
//! memory stays at a few parts whatever the size, and a refused or interrupted upload can be
//! sent again without asking the caller for the body twice.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::body::Body;
use crate::error::{Error, Result};
use crate::etag::ETag;

/// A whole body, hashed.
#[derive(Debug)]
pub(crate) enum Spool {
    /// Up to the in-memory threshold.
    Memory(Bytes),
    /// Larger: an anonymous temporary file (gone when dropped, or when the process dies).
    File(Arc<std::fs::File>),
}

/// Reads `body` (at most `limit` bytes) into a [`Spool`]: in memory up to `threshold` bytes,
/// in a temporary file beyond. Returns the spool, the content ETag and the size.
pub(crate) async fn spool(
    body: Body,
    limit: u64,
    threshold: usize,
    expected: Option<&ETag>,
) -> Result<(Spool, ETag, u64)> {
    let mut reader = body.reader(Some(limit));
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    while let Some(chunk) = reader.next_chunk().await? {
        match &mut file {
            None if memory.len() + chunk.len() <= threshold => memory.extend_from_slice(&chunk),
            None => {
                let std_file = tokio::task::spawn_blocking(tempfile::tempfile)
                    .await
                    .map_err(|e| Error::backend(format!("spool task: {e}")))?
                    .map_err(spool_err)?;
                let mut f = tokio::fs::File::from_std(std_file);
                f.write_all(&memory.split()).await.map_err(spool_err)?;
                f.write_all(&chunk).await.map_err(spool_err)?;
                file = Some(f);
            }
            Some(f) => f.write_all(&chunk).await.map_err(spool_err)?,
        }
    }
    let (etag, size) = reader.finish(expected)?;
    let spool = match file {
        None => Spool::Memory(memory.freeze()),
        Some(mut f) => {
            f.flush().await.map_err(spool_err)?;
            Spool::File(Arc::new(f.into_std().await))
        }
    };
    Ok((spool, etag, size))
}

impl Spool {
    /// `len` bytes from `offset`.
    pub(crate) async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        match self {
            Spool::Memory(b) => Ok(b.slice(offset as usize..offset as usize + len)),
            Spool::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, offset)?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(|e| Error::backend(format!("spool read task: {e}")))?
                .map_err(spool_err)
            }
        }
    }
}

fn spool_err(e: std::io::Error) -> Error {
    Error::backend(format!("temporary file for the upload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_in_memory_large_in_a_file() {
        let data: Vec<u8> = (0..100u8).collect();
        let (s, etag, size) = spool(Body::from(data.clone()), 1000, 200, None)
            .await
            .unwrap();
        assert!(matches!(s, Spool::Memory(_)));
        assert_eq!((etag, size), (ETag::of(&data), 100));

        let chunks: Vec<Result<Bytes>> = data
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let (s, etag, size) = spool(body, 1000, 20, None).await.unwrap();
        assert!(matches!(s, Spool::File(_)));
        assert_eq!((etag, size), (ETag::of(&data), 100));
        assert_eq!(&s.read(0, 100).await.unwrap()[..], &data[..]);
        assert_eq!(&s.read(95, 5).await.unwrap()[..], &data[95..]);

        let r = spool(Body::from(data), 99, 20, None).await;
        assert!(matches!(r, Err(Error::TooLarge { limit: 99 })), "{r:?}");
    }
}
