//! [`LarderS3`]: each S3 operation as a thin mapping onto [`larder::Store`]. Every condition
//! goes into the store call's options and is decided by the store, in its atomic step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use larder::precondition::parse_etag_condition;
use larder::{
    Body, ByteRange, DeleteOptions, ETagCondition, Error, GetOptions, HeadOptions, Key,
    ListOptions, Meta, Preconditions, PutOptions, Store,
};
use s3s::auth::Credentials;
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::integrity::{body_failure, Expectations};
use crate::multipart::{concat, Part, Upload, Uploads};
use crate::{Access, S3Options};

/// The object that makes a bucket exist before anything is stored in it: CreateBucket writes
/// it (empty) at `<bucket>/.larder-bucket`; listings hide it and S3 clients can't address it.
/// A bucket also exists while any key starts with `<bucket>/`.
pub const BUCKET_MARKER: &str = ".larder-bucket";

/// Largest page of a listing, as S3's.
const MAX_KEYS: usize = 1000;

/// The S3 API over a Larder store (an [`s3s::S3`]).
#[derive(Debug)]
pub struct LarderS3 {
    store: Arc<dyn Store>,
    options: S3Options,
    uploads: Uploads,
}

impl LarderS3 {
    /// The S3 API over `store`.
    pub fn new(store: Arc<dyn Store>, options: &S3Options) -> std::io::Result<Self> {
        Ok(LarderS3 {
            store,
            options: options.clone(),
            uploads: Uploads::new(options.spool_dir.as_deref())?,
        })
    }

    fn authorize(&self, creds: Option<&Credentials>, access: Access, target: &str) -> S3Result<()> {
        let Some(grants) = &self.options.grants else {
            return Ok(());
        };
        let creds = creds.ok_or_else(|| s3_error!(AccessDenied, "a signature is required"))?;
        grants
            .check(&creds.access_key, access, target)
            .map_err(|m| S3Error::with_message(S3ErrorCode::AccessDenied, m))
    }

    /// The Larder key of object `key` in `bucket`, if the caller may have `access` to it.
    fn object(
        &self,
        creds: &Option<Credentials>,
        access: Access,
        bucket: &str,
        key: &str,
    ) -> S3Result<Key> {
        let key = larder_key(bucket, key)?;
        self.authorize(creds.as_ref(), access, key.as_str())?;
        Ok(key)
    }

    /// HeadBucket and GetBucketLocation: the caller may list `bucket`, and it exists.
    async fn visible_bucket(
        &self,
        credentials: Option<&Credentials>,
        bucket: &str,
    ) -> S3Result<()> {
        self.authorize(credentials, Access::List, &format!("{bucket}/"))?;
        if !self.bucket_exists(bucket).await? {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(())
    }

    /// Whether a bucket exists: its marker, or any key under it.
    async fn bucket_exists(&self, bucket: &str) -> S3Result<bool> {
        let page = self
            .store
            .list(ListOptions {
                prefix: format!("{bucket}/"),
                delimiter: None,
                limit: Some(1),
                cursor: None,
            })
            .await
            .map_err(to_s3)?;
        Ok(!page.objects.is_empty())
    }

    /// One page of a bucket's listing, in S3 terms (keys without the bucket).
    async fn list_page(
        &self,
        creds: Option<&Credentials>,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: Option<i32>,
        after: Option<&str>,
    ) -> S3Result<Listing> {
        self.authorize(creds, Access::List, &format!("{bucket}/{prefix}"))?;
        let delimiter = match delimiter {
            None | Some("") => None,
            Some(d) if d.chars().count() == 1 => d.chars().next(),
            Some(_) => {
                return Err(s3_error!(
                    NotImplemented,
                    "only single-character delimiters are supported"
                ))
            }
        };
        let max = usize::try_from(max_keys.unwrap_or(MAX_KEYS as i32))
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative"))?
            .min(MAX_KEYS);
        if !self.bucket_exists(bucket).await? {
            return Err(s3_error!(NoSuchBucket));
        }
        if max == 0 {
            return Ok(Listing::default());
        }
        let base = format!("{bucket}/");
        let marker = format!("{base}{BUCKET_MARKER}");
        let page = self
            .store
            .list(ListOptions {
                prefix: format!("{base}{prefix}"),
                delimiter,
                limit: Some(max),
                cursor: after.map(|a| format!("{base}{a}")),
            })
            .await
            .map_err(to_s3)?;
        let strip = |s: &str| s.strip_prefix(&base).unwrap_or(s).to_owned();
        Ok(Listing {
            objects: page
                .objects
                .into_iter()
                .filter(|m| m.key.as_str() != marker)
                .map(|m| (strip(m.key.as_str()), m))
                .collect(),
            prefixes: page.common_prefixes.iter().map(|p| strip(p)).collect(),
            next: page.next_cursor.as_deref().map(strip),
        })
    }
}

#[derive(Default)]
struct Listing {
    objects: Vec<(String, Meta)>,
    prefixes: Vec<String>,
    next: Option<String>,
}

/// The Larder key of an S3 object.
fn larder_key(bucket: &str, key: &str) -> S3Result<Key> {
    if key == BUCKET_MARKER {
        return Err(s3_error!(
            InvalidArgument,
            "the key {BUCKET_MARKER} is reserved for the bucket marker"
        ));
    }
    Key::new(format!("{bucket}/{key}")).map_err(to_s3)
}

/// The Larder key of `bucket`'s marker ([`BUCKET_MARKER`]).
fn marker_key(bucket: &str) -> S3Result<Key> {
    Key::new(format!("{bucket}/{BUCKET_MARKER}")).map_err(to_s3)
}

/// A Larder error as S3's.
fn to_s3(e: Error) -> S3Error {
    match e {
        Error::NotFound { .. } => s3_error!(NoSuchKey),
        Error::NotModified(meta) => {
            let mut err = S3Error::new(S3ErrorCode::NotModified);
            err.set_headers(validator_headers(&meta));
            err
        }
        Error::PreconditionFailed { current } => {
            let mut err = S3Error::with_message(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            );
            if let Some(meta) = current {
                err.set_headers(validator_headers(&meta));
            }
            err
        }
        Error::RangeNotSatisfiable { size } => {
            let mut err = s3_error!(InvalidRange, "the range is not satisfiable");
            let mut h = axum::http::HeaderMap::new();
            if let Ok(v) = format!("bytes */{size}").parse() {
                h.insert(axum::http::header::CONTENT_RANGE, v);
            }
            err.set_headers(h);
            err
        }
        Error::Unsupported { what } => {
            S3Error::with_message(S3ErrorCode::NotImplemented, format!("unsupported: {what}"))
        }
        Error::InvalidKey { key, reason } => S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("invalid key {key:?}: {reason}"),
        ),
        Error::InvalidInput(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        Error::TooLarge { limit } => S3Error::with_message(
            S3ErrorCode::EntityTooLarge,
            format!("the object is over the {limit}-byte limit"),
        ),
        e if e.is_retryable() => {
            tracing::warn!(error = %e, "store unavailable");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, e.to_string())
        }
        e => {
            tracing::error!(error = %e, "store error");
            S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
        }
    }
}

/// `ETag` and `Last-Modified` of an object, for 304 and 412 answers.
fn validator_headers(meta: &Meta) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    if let Ok(v) = meta.etag.to_string().parse() {
        h.insert(axum::http::header::ETAG, v);
    }
    if let Ok(v) = httpdate_of(meta.last_modified).parse() {
        h.insert(axum::http::header::LAST_MODIFIED, v);
    }
    h
}

fn httpdate_of(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Larder's ETag as S3 presents it: the same quoted SHA-256 hex as the native API.
fn etag_out(etag: &larder::ETag) -> dto::ETag {
    if etag.is_weak() {
        dto::ETag::Weak(etag.opaque().to_owned())
    } else {
        dto::ETag::Strong(etag.opaque().to_owned())
    }
}

fn etag_in(tag: &dto::ETag) -> S3Result<larder::ETag> {
    match tag {
        dto::ETag::Strong(s) => larder::ETag::strong(s.clone()),
        dto::ETag::Weak(s) => larder::ETag::weak(s.clone()),
    }
    .map_err(to_s3)
}

fn condition_in(c: Option<&dto::ETagCondition>) -> S3Result<Option<ETagCondition>> {
    Ok(match c {
        None => None,
        Some(dto::ETagCondition::Any) => Some(ETagCondition::Any),
        Some(dto::ETagCondition::ETag(t)) => Some(ETagCondition::tag(etag_in(t)?)),
    })
}

fn time_in(t: Option<&Timestamp>) -> Option<SystemTime> {
    t.map(|t| time::OffsetDateTime::from(t.clone()).into())
}

fn conditions(
    if_match: Option<&dto::ETagCondition>,
    if_none_match: Option<&dto::ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<Preconditions> {
    Ok(Preconditions {
        if_match: condition_in(if_match)?,
        if_none_match: condition_in(if_none_match)?,
        if_modified_since: time_in(if_modified_since),
        if_unmodified_since: time_in(if_unmodified_since),
    })
}

fn range_in(r: &dto::Range) -> ByteRange {
    match *r {
        dto::Range::Int {
            first,
            last: Some(last),
        } => ByteRange::Bounded { first, last },
        dto::Range::Int { first, last: None } => ByteRange::From(first),
        dto::Range::Suffix { length } => ByteRange::Suffix(length),
    }
}

fn metadata_in(m: Option<dto::Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

fn metadata_out(m: &BTreeMap<String, String>) -> Option<dto::Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// HeadObject's answer for `meta`; GetObject's carries the same headers.
fn head_out(meta: &Meta) -> dto::HeadObjectOutput {
    dto::HeadObjectOutput {
        content_length: Some(size_out(meta.size)),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(etag_out(&meta.etag)),
        last_modified: Some(Timestamp::from(meta.last_modified)),
        content_type: meta.content_type.clone(),
        metadata: metadata_out(&meta.metadata),
        ..Default::default()
    }
}

fn size_out(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Percent-encodes a key for `encoding-type=url` listings (every byte but unreserved ones
/// and `/`, so `+` and spaces survive clients that decode with `unquote_plus`).
fn url_encode(s: &str, encode: bool) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    if encode {
        percent_encoding::utf8_percent_encode(s, SET).to_string()
    } else {
        s.to_owned()
    }
}

fn wants_url(e: Option<&dto::EncodingType>) -> bool {
    e.is_some_and(|e| e.as_str() == dto::EncodingType::URL)
}

/// The parts of a ListObjects answer both versions share.
fn contents(listing: &Listing, url: bool) -> (Vec<dto::Object>, Vec<dto::CommonPrefix>) {
    let objects = listing
        .objects
        .iter()
        .map(|(key, m)| dto::Object {
            key: Some(url_encode(key, url)),
            size: Some(size_out(m.size)),
            e_tag: Some(etag_out(&m.etag)),
            last_modified: Some(Timestamp::from(m.last_modified)),
            storage_class: Some(dto::ObjectStorageClass::from_static(
                dto::ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    let prefixes = listing
        .prefixes
        .iter()
        .map(|p| dto::CommonPrefix {
            prefix: Some(url_encode(p, url)),
        })
        .collect();
    (objects, prefixes)
}

/// The conditions of a request's own `If-Match` / `If-None-Match` fields, for operations whose
/// S3 model lacks them (CopyObject's target), parsed by Larder's one parser.
fn header_conditions(h: &axum::http::HeaderMap) -> S3Result<Preconditions> {
    let values = |name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let parse = |name: &str| {
        let v = values(name);
        parse_etag_condition(v.iter().map(String::as_str)).map_err(to_s3)
    };
    Ok(Preconditions {
        if_match: parse("if-match")?,
        if_none_match: parse("if-none-match")?,
        ..Default::default()
    })
}

#[async_trait::async_trait]
impl S3 for LarderS3 {
    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        let expect = Expectations::from_request(
            &req.headers,
            req.trailing_headers,
            self.options.max_object_size,
        )?;
        let opts = PutOptions {
            preconditions: conditions(
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
                None,
                None,
            )?,
            content_type: input.content_type,
            metadata: metadata_in(input.metadata),
            ..Default::default()
        };
        let body = Body::from_stream(expect.check(input.body));
        let put = self
            .store
            .put(&key, body, opts)
            .await
            .map_err(|e| body_failure(&expect.failure).unwrap_or_else(|| to_s3(e)))?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(etag_out(&put.meta.etag)),
            size: Some(size_out(put.meta.size)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Read, &input.bucket, &input.key)?;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GetObject by partNumber"));
        }
        let opts = GetOptions {
            preconditions: conditions(
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
                input.if_unmodified_since.as_ref(),
            )?,
            range: input.range.as_ref().map(range_in),
            if_range: None,
        };
        let got = self.store.get(&key, opts).await.map_err(to_s3)?;
        let meta = got.meta;
        let (length, content_range) = match &got.range {
            Some(r) => (
                r.end - r.start,
                Some(larder::range::content_range(r, meta.size)),
            ),
            None => (meta.size, None),
        };
        // The headers HeadObject answers, with the body and its length.
        let head = head_out(&meta);
        Ok(S3Response::new(dto::GetObjectOutput {
            body: Some(StreamingBlob::wrap(SyncBody(std::sync::Mutex::new(
                got.body,
            )))),
            content_length: Some(size_out(length)),
            content_range,
            accept_ranges: head.accept_ranges,
            e_tag: head.e_tag,
            last_modified: head.last_modified,
            content_type: head.content_type,
            metadata: head.metadata,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Read, &input.bucket, &input.key)?;
        let opts = HeadOptions {
            preconditions: conditions(
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
                input.if_unmodified_since.as_ref(),
            )?,
        };
        let meta = self.store.head(&key, opts).await.map_err(to_s3)?;
        Ok(S3Response::new(head_out(&meta)))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        if input.if_match_last_modified_time.is_some() || input.if_match_size.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "x-amz-if-match-last-modified-time and x-amz-if-match-size are not supported"
            ));
        }
        let preconditions = conditions(input.if_match.as_ref(), None, None, None)?;
        let unconditional = preconditions.is_empty();
        match self
            .store
            .delete(&key, DeleteOptions { preconditions })
            .await
        {
            Ok(()) => {}
            // Deleting nothing succeeds in S3, unless a condition asked for an object.
            Err(Error::NotFound { .. }) if unconditional => {}
            Err(e) => return Err(to_s3(e)),
        }
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        if input.delete.objects.len() > MAX_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "at most 1000 keys may be deleted at once"
            ));
        }
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            let result = async {
                let key = self.object(&req.credentials, Access::Write, &input.bucket, &obj.key)?;
                let preconditions = Preconditions {
                    if_match: obj
                        .e_tag
                        .as_ref()
                        .map(etag_in)
                        .transpose()?
                        .map(ETagCondition::tag),
                    ..Default::default()
                };
                let unconditional = preconditions.is_empty();
                match self
                    .store
                    .delete(&key, DeleteOptions { preconditions })
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(Error::NotFound { .. }) if unconditional => Ok(()),
                    Err(e) => Err(to_s3(e)),
                }
            }
            .await;
            match result {
                Ok(()) if !quiet => deleted.push(dto::DeletedObject {
                    key: Some(obj.key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(e) => errors.push(dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_owned),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let target_conditions = header_conditions(&req.headers)?;
        let input = req.input;
        let dto::CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copy sources other than bucket/key"
            ));
        };
        if version_id.is_some() {
            return Err(s3_error!(NotImplemented, "versions are not supported"));
        }
        let creds = &req.credentials;
        let src = self.object(creds, Access::Read, src_bucket, src_key)?;
        let dst = self.object(creds, Access::Write, &input.bucket, &input.key)?;
        let source_conditions = conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        let got = self
            .store
            .get(
                &src,
                GetOptions {
                    preconditions: source_conditions,
                    ..Default::default()
                },
            )
            .await
            // S3 answers every failed copy-source condition with 412.
            .map_err(|e| match e {
                Error::NotModified(meta) => to_s3(Error::precondition_failed(Some(&meta))),
                e => to_s3(e),
            })?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
        let (content_type, metadata) = if replace {
            (input.content_type, metadata_in(input.metadata))
        } else {
            (got.meta.content_type.clone(), got.meta.metadata.clone())
        };
        if self
            .options
            .max_object_size
            .is_some_and(|l| got.meta.size > l)
        {
            return Err(s3_error!(EntityTooLarge));
        }
        let put = self
            .store
            .put(
                &dst,
                Body::Stream(got.body),
                PutOptions {
                    preconditions: target_conditions,
                    content_type,
                    metadata,
                    // The copy is refused unless the bytes arrive intact.
                    expected_etag: Some(got.meta.etag.clone()),
                    ttl: None,
                },
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag_out(&put.meta.etag)),
                last_modified: Some(Timestamp::from(put.meta.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input
            .continuation_token
            .as_deref()
            .or(input.start_after.as_deref());
        let listing = self
            .list_page(
                req.credentials.as_ref(),
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.max_keys,
                after,
            )
            .await?;
        let url = wants_url(input.encoding_type.as_ref());
        let (objects, prefixes) = contents(&listing, url);
        let count = objects.len() + prefixes.len();
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(url_encode(&prefix, url)),
            delimiter: input.delimiter.map(|d| url_encode(&d, url)),
            max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS as i32)),
            key_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(|s| url_encode(&s, url)),
            is_truncated: Some(listing.next.is_some()),
            next_continuation_token: listing.next,
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .list_page(
                req.credentials.as_ref(),
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.max_keys,
                input.marker.as_deref().filter(|m| !m.is_empty()),
            )
            .await?;
        let url = wants_url(input.encoding_type.as_ref());
        let (objects, prefixes) = contents(&listing, url);
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(url_encode(&prefix, url)),
            marker: input.marker.map(|m| url_encode(&m, url)),
            delimiter: input.delimiter.map(|d| url_encode(&d, url)),
            max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS as i32)),
            is_truncated: Some(listing.next.is_some()),
            next_marker: listing.next.as_deref().map(|m| url_encode(m, url)),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let mut buckets = Vec::new();
        let mut cursor = None;
        // Buckets are the first key segments: a delimited listing of the root, every page.
        loop {
            let page = self
                .store
                .list(ListOptions {
                    prefix: String::new(),
                    delimiter: Some('/'),
                    limit: None,
                    cursor,
                })
                .await
                .map_err(to_s3)?;
            for p in &page.common_prefixes {
                let name = p.trim_end_matches('/');
                let visible = s3s::path::check_bucket_name(name)
                    && self
                        .authorize(req.credentials.as_ref(), Access::List, p)
                        .is_ok();
                if visible {
                    let created = self
                        .store
                        .head(&marker_key(name)?, HeadOptions::default())
                        .await
                        .ok()
                        .map(|m| Timestamp::from(m.last_modified));
                    buckets.push(dto::Bucket {
                        name: Some(name.to_owned()),
                        creation_date: created
                            .or_else(|| Some(Timestamp::from(SystemTime::UNIX_EPOCH))),
                        bucket_region: None,
                    });
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() || buckets.len() >= 10_000 {
                break;
            }
        }
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner {
                display_name: Some("larder".into()),
                id: Some("larder".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let marker = marker_key(&bucket)?;
        self.authorize(req.credentials.as_ref(), Access::Write, marker.as_str())?;
        let created = self
            .store
            .put(
                &marker,
                Body::empty(),
                PutOptions {
                    preconditions: Preconditions::if_absent(),
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(_) => {}
            Err(Error::PreconditionFailed { .. }) => {
                return Err(s3_error!(BucketAlreadyOwnedByYou))
            }
            Err(e) => return Err(to_s3(e)),
        }
        Ok(S3Response::new(dto::CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.visible_bucket(req.credentials.as_ref(), &req.input.bucket)
            .await?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.visible_bucket(req.credentials.as_ref(), &req.input.bucket)
            .await?;
        Ok(S3Response::new(dto::GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let marker = marker_key(&bucket)?;
        self.authorize(req.credentials.as_ref(), Access::Write, marker.as_str())?;
        let page = self
            .store
            .list(ListOptions {
                prefix: format!("{bucket}/"),
                delimiter: None,
                limit: Some(2),
                cursor: None,
            })
            .await
            .map_err(to_s3)?;
        if page.objects.iter().any(|m| m.key != marker) {
            return Err(s3_error!(BucketNotEmpty));
        }
        if !self.uploads.list(&format!("{bucket}/")).is_empty() {
            return Err(s3_error!(
                BucketNotEmpty,
                "the bucket has multipart uploads in progress"
            ));
        }
        match self.store.delete(&marker, DeleteOptions::default()).await {
            Ok(()) => Ok(S3Response::new(dto::DeleteBucketOutput::default())),
            Err(Error::NotFound { .. }) => Err(s3_error!(NoSuchBucket)),
            Err(e) => Err(to_s3(e)),
        }
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        let id = self
            .uploads
            .create(Upload {
                key,
                object: input.key.clone(),
                content_type: input.content_type,
                metadata: metadata_in(input.metadata),
                initiated: SystemTime::now(),
                parts: BTreeMap::new(),
                completing: false,
            })
            .ok_or_else(|| {
                s3_error!(
                    SlowDown,
                    "too many multipart uploads in progress: complete or abort some first"
                )
            })?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
        }
        let known = self
            .uploads
            .with(&input.upload_id, &key, |u| !u.completing)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        if !known {
            return Err(s3_error!(NoSuchUpload, "the upload is being completed"));
        }
        let expect = Expectations::from_request(
            &req.headers,
            req.trailing_headers,
            self.options.max_object_size,
        )?;
        let (path, etag, size) = self
            .uploads
            .spool(expect.check(input.body))
            .await
            .map_err(|e| body_failure(&expect.failure).unwrap_or_else(|| to_s3(e)))?;
        let part = Part {
            path,
            etag: etag.clone(),
            size,
            last_modified: SystemTime::now(),
        };
        if !self
            .uploads
            .add_part(&input.upload_id, &key, input.part_number, part)
        {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(etag_out(&etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        let preconditions = conditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            None,
            None,
        )?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "the upload must list at least one part"
            ));
        }
        let id = input.upload_id;
        let chosen = self
            .uploads
            .with(&id, &key, |u| {
                if u.completing {
                    return Err(s3_error!(
                        InvalidRequest,
                        "the upload is already being completed"
                    ));
                }
                let mut parts = Vec::with_capacity(listed.len());
                let mut last = 0;
                for p in &listed {
                    let n = p.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
                    if n <= last {
                        return Err(s3_error!(InvalidPartOrder));
                    }
                    last = n;
                    let part = u.parts.get(&n).ok_or_else(|| s3_error!(InvalidPart))?;
                    if p.e_tag
                        .as_ref()
                        .is_some_and(|t| t.value() != part.etag.opaque())
                    {
                        return Err(s3_error!(InvalidPart, "part {n} has another ETag"));
                    }
                    parts.push(part.clone());
                }
                u.completing = true;
                Ok((parts, u.content_type.clone(), u.metadata.clone()))
            })
            .ok_or_else(|| s3_error!(NoSuchUpload))??;
        let (parts, content_type, metadata) = chosen;
        // Until the put is decided, the upload is marked completing; if this request is dropped
        // midway (the client went away), the guard clears the mark so it can be retried.
        let mut guard = Completing {
            uploads: &self.uploads,
            id: &id,
            key: &key,
            armed: true,
        };
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let result = if self.options.max_object_size.is_some_and(|l| total > l) {
            Err(s3_error!(EntityTooLarge))
        } else {
            // One put of all the parts: the conditions are decided by the store, atomically
            // with the write that makes the object visible.
            self.store
                .put(
                    &key,
                    Body::from_stream(concat(parts)),
                    PutOptions {
                        preconditions,
                        content_type,
                        metadata,
                        ..Default::default()
                    },
                )
                .await
                .map_err(to_s3)
        };
        match result {
            Ok(put) => {
                guard.armed = false;
                self.uploads.remove(&id, &key);
                Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
                    bucket: Some(input.bucket.clone()),
                    key: Some(input.key.clone()),
                    e_tag: Some(etag_out(&put.meta.etag)),
                    location: Some(format!("/{}/{}", input.bucket, input.key)),
                    ..Default::default()
                }))
            }
            // The upload stays, as in S3: the client may retry or abort it (the guard clears
            // the mark).
            Err(e) => Err(e),
        }
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Write, &input.bucket, &input.key)?;
        if !self.uploads.remove(&input.upload_id, &key) {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let input = req.input;
        let key = self.object(&req.credentials, Access::Read, &input.bucket, &input.key)?;
        let after = input.part_number_marker.unwrap_or(0);
        let max = usize::try_from(input.max_parts.unwrap_or(1000))
            .unwrap_or(0)
            .min(1000);
        let (parts, truncated) = self
            .uploads
            .with(&input.upload_id, &key, |u| {
                let mut all = u.parts.range(after + 1..);
                let parts: Vec<dto::Part> = all
                    .by_ref()
                    .take(max)
                    .map(|(n, p)| dto::Part {
                        part_number: Some(*n),
                        e_tag: Some(etag_out(&p.etag)),
                        size: Some(size_out(p.size)),
                        last_modified: Some(Timestamp::from(p.last_modified)),
                        ..Default::default()
                    })
                    .collect();
                (parts, all.next().is_some())
            })
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            max_parts: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        self.authorize(
            req.credentials.as_ref(),
            Access::List,
            &format!("{}/{prefix}", input.bucket),
        )?;
        let max = usize::try_from(input.max_uploads.unwrap_or(1000))
            .unwrap_or(0)
            .min(1000);
        let all = self.uploads.list(&format!("{}/{prefix}", input.bucket));
        let truncated = all.len() > max;
        let uploads: Vec<dto::MultipartUpload> = all
            .into_iter()
            .take(max)
            .map(|(key, id, initiated)| dto::MultipartUpload {
                key: Some(key),
                upload_id: Some(id),
                initiated: Some(Timestamp::from(initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            max_uploads: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// A store's body stream made `Sync`, as s3s's blobs must be: only ever polled through
/// `&mut`, so the mutex is never contended.
struct SyncBody(std::sync::Mutex<larder::ByteStream>);

impl futures::Stream for SyncBody {
    type Item = larder::Result<bytes::Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures::StreamExt;
        let stream = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        stream.poll_next_unpin(cx)
    }
}

/// Clears an upload's `completing` mark when dropped armed.
struct Completing<'a> {
    uploads: &'a Uploads,
    id: &'a str,
    key: &'a Key,
    armed: bool,
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.uploads
                .with(self.id, self.key, |u| u.completing = false);
        }
    }
}
