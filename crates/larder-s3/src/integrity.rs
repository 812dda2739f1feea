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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    async fn run(
        headers: &[(&'static str, &str)],
        body: &'static [u8],
        limit: Option<u64>,
    ) -> Result<Vec<u8>, S3Error> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        let expect = Expectations::from_request(&h, None, limit)?;
        let blob = StreamingBlob::wrap(futures::stream::iter(
            body.chunks(3)
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        ));
        let mut out = Vec::new();
        let mut s = std::pin::pin!(expect.check(Some(blob)));
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return Err(body_failure(&expect.failure).expect("a recorded failure")),
            }
        }
        Ok(out)
    }

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    #[tokio::test]
    async fn digests_are_checked_at_the_end_of_the_body() {
        let body = b"the quick brown fox";
        let md5 = b64(Md5::checksum(body).as_ref());
        let sha = b64(Sha256::checksum(body).as_ref());
        let crc = b64(Crc32::checksum(body).as_ref());
        let ok = run(
            &[
                ("content-md5", &md5),
                ("x-amz-checksum-sha256", &sha),
                ("x-amz-checksum-crc32", &crc),
            ],
            body,
            None,
        )
        .await
        .unwrap();
        assert_eq!(ok, body);

        let wrong = b64(Sha256::checksum(b"other").as_ref());
        let e = run(&[("x-amz-checksum-sha256", &wrong)], body, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::BadDigest);
        let wrong_md5 = b64(Md5::checksum(b"other").as_ref());
        let e = run(&[("content-md5", &wrong_md5)], body, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::BadDigest);
        let e = run(&[("content-md5", "not base64!")], body, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidDigest);
    }

    #[tokio::test]
    async fn a_promised_trailer_must_come_and_the_limit_holds() {
        let e = run(&[("x-amz-trailer", "x-amz-checksum-crc32c")], b"abc", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidRequest);
        let e = run(&[], b"0123456789", Some(9)).await.unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::EntityTooLarge);
        assert_eq!(
            run(&[], b"0123456789", Some(10)).await.unwrap(),
            b"0123456789"
        );
    }
}
