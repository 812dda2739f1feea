//! Bodies in and out, and the one reader that hashes and bounds a body as it streams in.

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::etag::{ContentHasher, ETag};

/// A body streamed out of a store (or into one).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// The body of a `put`: bytes already in memory, or a stream.
pub enum Body {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A stream of chunks; an `Err` item aborts the write and stores nothing.
    Stream(ByteStream),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Bytes(Bytes::new())
    }

    /// A streamed body.
    pub fn from_stream(s: impl Stream<Item = Result<Bytes>> + Send + 'static) -> Self {
        Body::Stream(s.boxed())
    }

    /// The exact length when it is known up front.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Stream(_) => None,
        }
    }

    /// A reader that hashes the body as it is consumed and refuses more than `limit` bytes.
    pub fn reader(self, limit: Option<u64>) -> BodyReader {
        BodyReader {
            body: Some(self),
            hasher: ContentHasher::new(),
            limit,
        }
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> ByteStream {
        match self {
            Body::Bytes(b) => futures::stream::once(async move { Ok(b) }).boxed(),
            Body::Stream(s) => s,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Bytes(v.into())
    }
}

impl From<&'static [u8]> for Body {
    fn from(v: &'static [u8]) -> Self {
        Body::Bytes(Bytes::from_static(v))
    }
}

impl From<&'static str> for Body {
    fn from(v: &'static str) -> Self {
        Body::Bytes(Bytes::from_static(v.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(v: String) -> Self {
        Body::Bytes(v.into())
    }
}

/// Consumes a [`Body`] chunk by chunk, computing the content ETag and enforcing the size limit:
/// every driver writes what this yields, so no driver hashes or counts on its own.
pub struct BodyReader {
    body: Option<Body>,
    hasher: ContentHasher,
    limit: Option<u64>,
}

impl BodyReader {
    /// The next chunk, already hashed; `None` at the end. `TooLarge` past the limit.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let chunk = match self.body.as_mut() {
            None => return Ok(None),
            Some(Body::Bytes(_)) => match self.body.take() {
                Some(Body::Bytes(b)) => b,
                _ => unreachable!(),
            },
            Some(Body::Stream(s)) => match s.next().await {
                Some(chunk) => chunk?,
                None => {
                    self.body = None;
                    return Ok(None);
                }
            },
        };
        if let Some(limit) = self.limit {
            if self.hasher.size() + chunk.len() as u64 > limit {
                return Err(Error::TooLarge { limit });
            }
        }
        self.hasher.update(&chunk);
        Ok(Some(chunk))
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.hasher.size()
    }

    /// After the last chunk: the content ETag and size. `expected`, when given, must equal the
    /// computed ETag, or the write is refused with `InvalidInput`.
    pub fn finish(self, expected: Option<&ETag>) -> Result<(ETag, u64)> {
        debug_assert!(self.body.is_none(), "finish before the body ended");
        let (etag, size) = self.hasher.finish();
        if let Some(expected) = expected {
            if !expected.strong_eq(&etag) {
                return Err(Error::InvalidInput(format!(
                    "body digest {etag} differs from the expected {expected}"
                )));
            }
        }
        Ok((etag, size))
    }

    /// Reads the whole body into memory: for drivers whose backend takes one value.
    pub async fn collect(mut self, expected: Option<&ETag>) -> Result<(Bytes, ETag, u64)> {
        let mut buf: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        while let Some(chunk) = self.next_chunk().await? {
            match (&mut buf, single.take()) {
                (Some(b), _) => b.extend_from_slice(&chunk),
                (None, None) => single = Some(chunk),
                (None, Some(first)) => {
                    let mut b = BytesMut::with_capacity(first.len() + chunk.len());
                    b.extend_from_slice(&first);
                    b.extend_from_slice(&chunk);
                    buf = Some(b);
                }
            }
        }
        let bytes = match (buf, single) {
            (Some(b), _) => b.freeze(),
            (None, Some(s)) => s,
            (None, None) => Bytes::new(),
        };
        let (etag, size) = self.finish(expected)?;
        Ok((bytes, etag, size))
    }
}

/// Collects an output stream into one buffer. A body of one chunk (what a store holding the
/// bytes in memory returns) is passed on as it is, without a copy.
pub async fn collect_stream(mut s: ByteStream) -> Result<Bytes> {
    let Some(first) = s.next().await.transpose()? else {
        return Ok(Bytes::new());
    };
    let Some(second) = s.next().await.transpose()? else {
        return Ok(first);
    };
    let mut out = BytesMut::with_capacity(first.len() + second.len());
    out.extend_from_slice(&first);
    out.extend_from_slice(&second);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_streams_and_enforces_limits() {
        let chunks: Vec<Result<Bytes>> =
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let body = Body::from_stream(futures::stream::iter(chunks));
        let (bytes, etag, size) = body.reader(None).collect(None).await.unwrap();
        assert_eq!((&bytes[..], size), (&b"abcd"[..], 4));
        assert_eq!(etag, ETag::of(b"abcd"));

        let r = Body::from(vec![0u8; 10])
            .reader(Some(9))
            .collect(None)
            .await;
        assert!(matches!(r, Err(Error::TooLarge { limit: 9 })));

        let wrong = ETag::of(b"other");
        let r = Body::from("abcd").reader(None).collect(Some(&wrong)).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))));

        let broken: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(Error::InvalidInput("cut".into())),
        ];
        let r = Body::from_stream(futures::stream::iter(broken))
            .reader(None)
            .collect(None)
            .await;
        assert!(r.is_err());
    }
}
