//! Request-body integrity: `Content-MD5` and the `x-amz-checksum-*` digests, sent as headers or
//! as `aws-chunked` trailers, checked as the body streams through. A mismatch (or a body over
//! the size limit) ends the stream with an error, so the store stores nothing.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use s3s::dto::StreamingBlob;
use s3s::{s3_error, S3Error, TrailingHeaders};

/// The digests a body is checked against, and why it was refused if it was.
pub(crate) struct Expectations {
    /// `(algorithm header name, expected base64 value)`; the value is `None` when it comes
    /// in a trailer.
    checksums: Vec<(&'static str, Option<String>)>,
    /// The base64 MD5 from `Content-MD5`.
    md5: Option<String>,
    trailers: Option<TrailingHeaders>,
    limit: Option<u64>,
    /// What went wrong, for the error answered instead of the store's.
    pub(crate) failure: Arc<Mutex<Option<S3Error>>>,
}

const ALGORITHMS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

impl Expectations {
    /// The digests `headers` announce (and the trailers they promise).
    pub(crate) fn from_request(
        headers: &axum::http::HeaderMap,
        trailers: Option<TrailingHeaders>,
        limit: Option<u64>,
    ) -> Result<Self, S3Error> {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(|s| s.trim().to_owned())
                        .map_err(|_| s3_error!(InvalidArgument, "malformed {name} header"))
                })
                .transpose()
        };
        let md5 = text("content-md5")?;
        if let Some(m) = &md5 {
            let ok = base64::engine::general_purpose::STANDARD
                .decode(m)
                .is_ok_and(|d| d.len() == 16);
            if !ok {
                return Err(s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"));
            }
        }
        let trailer = text("x-amz-trailer")?
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut checksums = Vec::new();
        for name in ALGORITHMS {
            if let Some(v) = text(name)? {
                checksums.push((name, Some(v)));
            } else if trailer.split(',').any(|t| t.trim() == name) {
                checksums.push((name, None));
            }
        }
        Ok(Expectations {
            checksums,
            md5,
            trailers,
            limit,
            failure: Arc::default(),
        })
    }

    /// The body, checked as it streams: an `Err` item instead of the end when a digest does
    /// not match or the body is over the limit.
    pub(crate) fn check(
        &self,
        body: Option<StreamingBlob>,
    ) -> impl Stream<Item = larder::Result<Bytes>> + Send + 'static {
        let mut hashers: Vec<(&'static str, Option<String>, Hasher)> = self
            .checksums
            .iter()
            .map(|(name, v)| (*name, v.clone(), Hasher::new(name)))
            .collect();
        let mut md5 = self.md5.clone().map(|m| (m, Md5::new()));
        let trailers = self.trailers.clone();
        let limit = self.limit;
        let failure = self.failure.clone();
        let mut seen = 0u64;
        let fail = move |failure: &Arc<Mutex<Option<S3Error>>>, e: S3Error| {
            let msg = e.message().unwrap_or("integrity check failed").to_owned();
            *failure.lock().expect("not poisoned") = Some(e);
            Err(larder::Error::InvalidInput(msg))
        };
        let body = match body {
            Some(b) => b.boxed(),
            None => futures::stream::empty().boxed(),
        };
        let mut done = false;
        let mut body = body;
        let failure2 = failure.clone();
        futures::stream::poll_fn(move |cx| {
            use std::task::Poll;
            if done {
                return Poll::Ready(None);
            }
            match body.poll_next_unpin(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    seen += chunk.len() as u64;
                    if limit.is_some_and(|l| seen > l) {
                        done = true;
                        return Poll::Ready(Some(fail(
                            &failure2,
                            s3_error!(EntityTooLarge, "the object is over the size limit"),
                        )));
                    }
                    for (_, _, h) in &mut hashers {
                        h.update(&chunk);
                    }
                    if let Some((_, m)) = &mut md5 {
                        m.update(&chunk);
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(e))) => {
                    done = true;
                    Poll::Ready(Some(Err(larder::Error::transient(e.to_string()))))
                }
                Poll::Ready(None) => {
                    done = true;
                    if let Some((expected, m)) = md5.take() {
                        let got = base64::engine::general_purpose::STANDARD.encode(m.finalize());
                        if got != expected {
                            return Poll::Ready(Some(fail(
                                &failure2,
                                s3_error!(
                                    BadDigest,
                                    "the Content-MD5 you specified did not match what we received"
                                ),
                            )));
                        }
                    }
                    for (name, expected, h) in std::mem::take(&mut hashers) {
                        let expected = expected.or_else(|| {
                            trailers.as_ref().and_then(|t| {
                                t.read(|h| {
                                    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                                })
                                .flatten()
                            })
                        });
                        let Some(expected) = expected else {
                            return Poll::Ready(Some(fail(
                                &failure2,
                                s3_error!(
                                    InvalidRequest,
                                    "the trailer {name} announced in x-amz-trailer was not sent"
                                ),
                            )));
                        };
                        if h.finish() != expected.trim() {
                            return Poll::Ready(Some(fail(
                                &failure2,
                                s3_error!(BadDigest, "the {name} you specified did not match the calculated checksum"),
                            )));
                        }
                    }
                    Poll::Ready(None)
                }
            }
        })
    }
}

/// One of S3's checksum algorithms, by its header name.
enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn new(name: &str) -> Self {
        match name {
            "x-amz-checksum-crc32" => Hasher::Crc32(Crc32::new()),
            "x-amz-checksum-crc32c" => Hasher::Crc32c(Crc32c::new()),
            "x-amz-checksum-crc64nvme" => Hasher::Crc64(Crc64Nvme::new()),
            "x-amz-checksum-sha1" => Hasher::Sha1(Sha1::new()),
            _ => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The base64 digest, as the headers carry it.
    fn finish(self) -> String {
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        match self {
            Hasher::Crc32(h) => b64(h.finalize().as_ref()),
            Hasher::Crc32c(h) => b64(h.finalize().as_ref()),
            Hasher::Crc64(h) => b64(h.finalize().as_ref()),
            Hasher::Sha1(h) => b64(h.finalize().as_ref()),
            Hasher::Sha256(h) => b64(h.finalize().as_ref()),
        }
    }
}

/// The failure recorded by a checked body, if any, else `e` mapped as usual.
pub(crate) fn body_failure(failure: &Arc<Mutex<Option<S3Error>>>) -> Option<S3Error> {
    failure.lock().expect("not poisoned").take()
}
