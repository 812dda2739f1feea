//! The ranged read of every SQL store: decide a `get` on one read of the metadata, then read
//! only the bytes served, and only if the object is still the version decided on.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::meta::Meta;
use crate::retry::Attempts;
use crate::store::{GetOptions, GetResult};

/// How many times a read whose object changed under it is decided again.
const READ_ATTEMPTS: u32 = 16;

/// How large a body a driver may read with its metadata, in the same statement (one round trip
/// for a small object; a larger one is read by span, after the decision).
pub(crate) const INLINE_MAX: i64 = 64 * 1024;

/// Serves `opts` on `key`: `meta()` reads the live object's metadata (`None`: no object), with
/// its whole body if the driver read it in the same statement (at most [`INLINE_MAX`] bytes),
/// and [`GetOptions::evaluate`] decides on it; otherwise `bytes(etag, span)` then reads `span`
/// of the body if the object still has `etag` (`None`: it changed, so the decision is made
/// again on the newer version). Meta and bytes are thus always of one version.
pub(crate) async fn get_decided<M, MF, B, BF>(
    key: &Key,
    opts: &GetOptions,
    mut meta: M,
    mut bytes: B,
) -> Result<GetResult>
where
    M: FnMut() -> MF,
    MF: Future<Output = Result<Option<(Meta, Option<Vec<u8>>)>>>,
    B: FnMut(ETag, Range<u64>) -> BF,
    BF: Future<Output = Result<Option<Vec<u8>>>>,
{
    let attempts = Attempts::new(READ_ATTEMPTS);
    for _ in attempts {
        let (meta, inline) = meta().await?.ok_or_else(|| Error::not_found(key))?;
        let range = opts.evaluate(&meta)?;
        let span = range.clone().unwrap_or(0..meta.size);
        let data = match inline {
            // Read with the metadata, so of its version; a stored body of another length than
            // the metadata says is corrupt, never sliced out of bounds.
            Some(body) => {
                let body = Bytes::from(body);
                let ok = usize::try_from(span.end).is_ok_and(|end| end <= body.len());
                if body.len() as u64 != meta.size || !ok {
                    return Err(Error::backend(format!(
                        "{key}: stored body of {} bytes, metadata says {}",
                        body.len(),
                        meta.size
                    )));
                }
                Some(body.slice(span.start as usize..span.end as usize))
            }
            None => bytes(meta.etag.clone(), span).await?.map(Bytes::from),
        };
        if let Some(data) = data {
            return Ok(GetResult {
                meta,
                range,
                body: futures::stream::once(async move { Ok(data) }).boxed(),
            });
        }
    }
    attempts.exhausted(format_args!("{key} kept changing while being read"))
}
