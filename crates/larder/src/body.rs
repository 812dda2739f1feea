//! Bodies in and out, and the one reader that hashes and bounds a body as it streams in.

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::etag::{ContentHasher, ETag};

/// A body streamed out of a store (or into one).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A whole body as a driver that keeps the digest gets it: the bytes, their content ETag, the
/// SHA-256 digest that ETag spells, and the size.
pub type Collected = (Bytes, ETag, [u8; 32], u64);

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

    /// What `self.reader(limit).collect_digest(expected)` gives, without awaiting, for bytes
    /// already in memory; a stream is given back unread. Saves a driver's write future the
    /// collecting future's state.
    pub fn collect_digest_now(
        self,
        limit: Option<u64>,
        expected: Option<&ETag>,
    ) -> std::result::Result<Result<Collected>, Body> {
        match self {
            Body::Bytes(bytes) => {
                let reader = BodyReader {
                    body: None,
                    hasher: ContentHasher::new(),
                    limit,
                };
                Ok(reader.collect_bytes(bytes, expected))
            }
            stream => Err(stream),
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
        self.hash_chunk(&chunk)?;
        Ok(Some(chunk))
    }

    /// Counts and hashes the next chunk; `TooLarge` past the limit.
    fn hash_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(limit) = self.limit {
            if self.hasher.size() + chunk.len() as u64 > limit {
                return Err(Error::TooLarge { limit });
            }
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// The whole body, being `bytes` (the body's only chunk, taken out of it).
    fn collect_bytes(mut self, bytes: Bytes, expected: Option<&ETag>) -> Result<Collected> {
        self.hash_chunk(&bytes)?;
        let (etag, digest, size) = self.finish_digest(expected)?;
        Ok((bytes, etag, digest, size))
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.hasher.size()
    }

    /// After the last chunk: the content ETag and size. `expected`, when given, must equal the
    /// computed ETag, or the write is refused with `InvalidInput`.
    pub fn finish(self, expected: Option<&ETag>) -> Result<(ETag, u64)> {
        let (etag, _, size) = self.finish_digest(expected)?;
        Ok((etag, size))
    }

    /// [`finish`](Self::finish), with the SHA-256 digest the ETag spells (for a driver that
    /// keeps the digest rather than its text).
    pub fn finish_digest(self, expected: Option<&ETag>) -> Result<(ETag, [u8; 32], u64)> {
        debug_assert!(self.body.is_none(), "finish before the body ended");
        let (digest, size) = self.hasher.finish_digest();
        let etag = ETag::from_sha256(&digest);
        if let Some(expected) = expected {
            if !expected.strong_eq(&etag) {
                return Err(Error::InvalidInput(format!(
                    "body digest {etag} differs from the expected {expected}"
                )));
            }
        }
        Ok((etag, digest, size))
    }

    /// Reads the whole body into memory: for drivers whose backend takes one value.
    pub async fn collect(mut self, expected: Option<&ETag>) -> Result<(Bytes, ETag, u64)> {
        let bytes = self.read_all().await?;
        let (etag, size) = self.finish(expected)?;
        Ok((bytes, etag, size))
    }

    /// [`collect`](Self::collect), with the SHA-256 digest the ETag spells (see
    /// [`finish_digest`](Self::finish_digest)).
    pub async fn collect_digest(mut self, expected: Option<&ETag>) -> Result<Collected> {
        let bytes = self.read_all().await?;
        let (etag, digest, size) = self.finish_digest(expected)?;
        Ok((bytes, etag, digest, size))
    }

    /// Every chunk, as one buffer (a body of one chunk without a copy).
    async fn read_all(&mut self) -> Result<Bytes> {
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
        Ok(match (buf, single) {
            (Some(b), _) => b.freeze(),
            (None, Some(s)) => s,
            (None, None) => Bytes::new(),
        })
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

        // Bytes in memory are collected without awaiting, exactly as `collect_digest` would;
        // a stream is handed back unread.
        let (bytes, etag, digest, size) = Body::from("abcd")
            .collect_digest_now(None, None)
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!((&bytes[..], size), (&b"abcd"[..], 4));
        assert_eq!(
            (etag.sha256_digest(), &etag),
            (Some(digest), &ETag::of(b"abcd"))
        );
        let r = Body::from(vec![0u8; 10]).collect_digest_now(Some(9), None);
        assert!(matches!(r, Ok(Err(Error::TooLarge { limit: 9 }))));
        let r = Body::from("abcd").collect_digest_now(None, Some(&wrong));
        assert!(matches!(r, Ok(Err(Error::InvalidInput(_)))));
        let stream = Body::from_stream(futures::stream::iter(vec![Ok(Bytes::from_static(b"ab"))]));
        let Err(stream) = stream.collect_digest_now(None, None) else {
            panic!("a stream is not collected without awaiting");
        };
        let (bytes, etag, digest, _) = stream.reader(None).collect_digest(None).await.unwrap();
        assert_eq!(
            (&bytes[..], etag.sha256_digest()),
            (&b"ab"[..], Some(digest))
        );

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
