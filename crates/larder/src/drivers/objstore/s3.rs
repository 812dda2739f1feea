//! S3 and S3-compatible stores (AWS, MinIO, SeaweedFS, moto, …): see the [parent
//! module](super) for layout and atomicity.
//!
//! Conditions the backend must enforce (AWS S3 does, since 2024):
//!
//! | Request | Condition |
//! |---|---|
//! | `PutObject` | `If-None-Match: *`, `If-Match` |
//! | `CompleteMultipartUpload` | `If-None-Match: *`, `If-Match` |
//! | `DeleteObject` | `If-Match` (turn off with `conditional_delete=false` where it is ignored: conditional deletes are then `Unsupported`) |
//!
//! A 409 `ConditionalRequestConflict` (a concurrent conditional write) is decided again and
//! retried, as S3 documents; a 412 is decided again from a fresh head.
//!
//! Listing: `ListObjectsV2` with the delimiter (object_store's paginated listing), one request
//! per page in the usual case, and a `HEAD` of each object on the page for Larder's metadata.
//! SeaweedFS lists in directory-walk order, not S3's byte order: the driver knows it by its
//! `Server` header (and any server by a response out of byte order) and lists accordingly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::MultipartStore;
use object_store::path::Path;

use super::config::{parse_bool, Builder as _};
use super::native::{
    self, BlobHeaders, Guard, ListOrder, ListRequest, Listed, ListedBlob, Listing, Native,
    NativeError, Response, Uploaded,
};
use super::{map_err, ObjStore, ObjStoreOptions, Secret};
use crate::error::{Error, Result};

/// Settings of an S3 [`ObjStore`]: what is `None` comes from the `AWS_*` environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, …). `Debug`
/// shows no secret.
///
/// ```no_run
/// # async fn example() -> larder::Result<()> {
/// use larder::drivers::objstore::{s3::S3Config, ObjStore, ObjStoreOptions};
///
/// let store = ObjStore::open(S3Config {
///     options: ObjStoreOptions {
///         prefix: "myapp".into(),
///         ..Default::default()
///     },
///     region: Some("eu-west-1".into()),
///     ..S3Config::new("my-bucket") // credentials from the AWS_* variables
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Prefix, endpoint (`http://127.0.0.1:9000` for an S3-compatible), size limit and
    /// network bounds.
    pub options: ObjStoreOptions,
    /// The region (`us-east-1` when neither this nor the environment names one).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path-style (`host/bucket`).
    pub virtual_hosted: Option<bool>,
    /// Send `If-Match` on `DELETE` (default `true`); off for S3-compatibles that ignore it,
    /// where conditional deletes are then `Unsupported`.
    pub conditional_delete: bool,
}

impl S3Config {
    /// The defaults for `bucket`: the bucket root, everything else from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            options: ObjStoreOptions::default(),
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            virtual_hosted: None,
            conditional_delete: true,
        }
    }

    /// From a store URL: `s3://bucket/prefix?endpoint=http://host:port&region=us-east-1`
    /// `&allow_http=true&access_key_id=…&secret_access_key=…&session_token=…`
    /// `&virtual_hosted=false&max_object_size=N&conditional_delete=true`
    /// `&connect_timeout_ms=5000&timeout_ms=5000&retry_timeout_ms=5000` (see
    /// [`ObjStoreOptions`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut config = S3Config::new("");
        let (bucket, options) = ObjStoreOptions::from_url(url, "s3", "bucket", |k, v| {
            match k {
                "conditional_delete" => config.conditional_delete = parse_bool(k, v)?,
                "region" => config.region = Some(v.to_owned()),
                "access_key_id" => config.access_key_id = Some(v.to_owned()),
                "secret_access_key" => config.secret_access_key = Some(v.into()),
                "session_token" => config.session_token = Some(v.into()),
                "virtual_hosted" => config.virtual_hosted = Some(parse_bool(k, v)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(S3Config {
            bucket,
            options,
            ..config
        })
    }
}

super::config::impl_builder!(AmazonS3Builder, AmazonS3ConfigKey, AmazonS3);

/// Builds the store [`ObjStore::open`] opens for an [`S3Config`].
pub(super) fn open(config: S3Config) -> Result<ObjStore> {
    use AmazonS3ConfigKey as K;
    let S3Config {
        bucket,
        options,
        region,
        access_key_id,
        secret_access_key,
        session_token,
        virtual_hosted,
        conditional_delete,
    } = config;
    let builder = options.configure(
        AmazonS3Builder::from_env().with_bucket_name(&bucket),
        [
            (K::Region, region),
            (K::AccessKeyId, access_key_id),
            (K::SecretAccessKey, secret_access_key.map(|s| s.0)),
            (K::Token, session_token.map(|s| s.0)),
            (
                K::VirtualHostedStyleRequest,
                virtual_hosted.map(|b| b.to_string()),
            ),
        ],
    );
    let (bucket_endpoint, region) = bucket_endpoint(&builder, &bucket);
    let (client, writer) = builder.clients(&format!("s3 bucket {bucket}"))?;
    let native = S3Native {
        client: client.clone(),
        http: native::new_client(&options.bounds)?,
        bucket_endpoint,
        region,
        conditional_delete,
        retry_timeout: options.bounds.retry_timeout,
    };
    options.store("s3", client, writer, Arc::new(native))
}

/// The bucket's URL as object_store derives it from the same settings (its own is private), for
/// the raw requests, and the region. Tested against object_store's presigned URLs.
fn bucket_endpoint(builder: &AmazonS3Builder, bucket: &str) -> (String, String) {
    let config = |k: AmazonS3ConfigKey| builder.get_config_value(&k);
    let region = config(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
    let virtual_hosted =
        config(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
    let endpoint = match (config(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
        (Some(endpoint), true) => endpoint,
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    (endpoint, region)
}

/// The listing order of the S3 implementation named by a `Server` header.
fn order_of_server(server: Option<&str>) -> ListOrder {
    match server {
        Some(s) if s.starts_with("SeaweedFS") => ListOrder::Walk,
        _ => ListOrder::Bytes,
    }
}

/// S3's guarded delete and multipart upload.
#[derive(Debug)]
struct S3Native {
    client: Arc<AmazonS3>,
    /// For the raw requests.
    http: reqwest::Client,
    bucket_endpoint: String,
    region: String,
    conditional_delete: bool,
    /// How long a read is sent again while the connection fails ([`NetworkBounds`](super::NetworkBounds)).
    retry_timeout: Duration,
}

impl S3Native {
    /// Sends a request to the blob at `path` (with `query`, already encoded), SigV4-signed.
    async fn send(
        &self,
        method: Method,
        path: &Path,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response> {
        let mut url = native::blob_url(&self.bucket_endpoint, path);
        url.push_str(query);
        self.send_to(method, &url, headers, body, 1).await
    }

    /// Sends a request to `url`, SigV4-signed, up to `attempts` times while the connection
    /// fails (more than once only for reads).
    async fn send_to(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        attempts: usize,
    ) -> Result<Response> {
        let credential = self
            .client
            .credentials()
            .get_credential()
            .await
            .map_err(map_err)?;
        let mut request = native::request(method, url, headers, body)?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(map_err)?;
        native::send(&self.http, request, attempts, self.retry_timeout).await
    }
}

/// What a response to a guarded request means. S3 can also report a failed
/// `CompleteMultipartUpload` in the body of a 200.
fn outcome(r: &Response, what: &str) -> std::result::Result<(), NativeError> {
    let failed_in_body = r.status.is_success() && r.body.contains("<Error>");
    if r.status.is_success() && !failed_in_body {
        return Ok(());
    }
    match (r.status.as_u16(), r.code.as_deref()) {
        (_, Some("NoSuchUpload")) => Err(NativeError::UploadGone),
        (412 | 409, _) | (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            Err(NativeError::Changed)
        }
        (404, _) => Err(NativeError::Changed),
        _ if failed_in_body => Err(NativeError::Failed(Error::transient(format!(
            "{what}: {}",
            r.code.as_deref().unwrap_or("error in a 200 response")
        )))),
        _ => Err(NativeError::Failed(r.error(what))),
    }
}

#[async_trait]
impl Native for S3Native {
    fn conditional_delete(&self) -> bool {
        self.conditional_delete
    }

    fn listing(&self) -> Listing {
        Listing::Names
    }

    /// S3 specifies byte order; SeaweedFS walks its directories instead, and says who it is in
    /// the `Server` header of any response (here, of an empty listing).
    async fn list_order(&self) -> Result<ListOrder> {
        let url = format!(
            "{}?list-type=2&max-keys=0",
            self.bucket_endpoint.trim_end_matches('/')
        );
        let r = self
            .send_to(Method::GET, &url, &[], Bytes::new(), 3)
            .await?;
        Ok(order_of_server(r.server.as_deref()))
    }

    /// ListObjectsV2 through object_store's paginated listing: one request, delimited by the
    /// server.
    async fn list(&self, request: ListRequest<'_>) -> Result<Listed> {
        let opts = PaginatedListOptions {
            offset: request.start_after.map(str::to_owned),
            delimiter: request.delimiter.map(|d| d.to_string().into()),
            max_keys: Some(request.max),
            page_token: request.token.map(str::to_owned),
            ..Default::default()
        };
        let prefix = Some(request.prefix).filter(|p| !p.is_empty());
        let r = self
            .client
            .list_paginated(prefix, opts)
            .await
            .map_err(map_err)?;
        let blobs = r
            .result
            .objects
            .into_iter()
            .map(|o| ListedBlob {
                name: o.location.to_string(),
                size: o.size,
                larder: None,
            })
            .collect();
        // object_store drops a common prefix's trailing `/` (it parses it as a path).
        let prefixes = r
            .result
            .common_prefixes
            .into_iter()
            .map(|p| {
                let mut p = p.to_string();
                if let Some(d) = request.delimiter.filter(|d| !p.ends_with(*d)) {
                    p.push(d);
                }
                p
            })
            .collect();
        Ok(Listed {
            blobs,
            prefixes,
            token: r.page_token,
        })
    }

    async fn delete(&self, path: &Path, guard: &Guard) -> std::result::Result<(), NativeError> {
        let headers: Vec<_> = guard.header().into_iter().collect();
        let r = self
            .send(Method::DELETE, path, "", &headers, Bytes::new())
            .await?;
        outcome(&r, &format!("s3 DELETE {path}"))
    }

    async fn begin_upload(&self, path: &Path, headers: &BlobHeaders) -> Result<String> {
        let mut h = vec![("x-amz-meta-larder", headers.larder.clone())];
        if let Some(ct) = &headers.content_type {
            h.push(("content-type", ct.clone()));
        }
        let r = self
            .send(Method::POST, path, "?uploads=", &h, Bytes::new())
            .await?;
        let what = format!("s3 CreateMultipartUpload {path}");
        if !r.status.is_success() {
            return Err(r.error(&what));
        }
        native::xml_text(&r.body, "UploadId")
            .ok_or_else(|| Error::backend(format!("{what}: no UploadId in the answer")))
    }

    fn parts(&self) -> &dyn MultipartStore {
        self.client.as_ref()
    }

    async fn complete_upload(
        &self,
        upload: Uploaded<'_>,
        guard: &Guard,
    ) -> std::result::Result<(), NativeError> {
        // The metadata went with CreateMultipartUpload; S3 takes none here.
        let Uploaded {
            path, id, parts, ..
        } = upload;
        let mut xml = String::from(
            r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
        );
        for (i, part) in parts.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                native::xml_escape(&part.content_id)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let headers: Vec<_> = guard.header().into_iter().collect();
        let query = format!("?uploadId={}", native::query_value(id));
        let r = self
            .send(Method::POST, path, &query, &headers, Bytes::from(xml))
            .await?;
        outcome(&r, &format!("s3 CompleteMultipartUpload {path}"))
    }

    async fn abort_upload(&self, path: &Path, upload: &str) {
        // Best effort: a bucket lifecycle rule should also expire abandoned uploads.
        if let Err(e) = self.client.abort_multipart(path, &upload.to_owned()).await {
            tracing::warn!(%path, error = %e, "aborting a multipart upload failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(u: &str) -> Result<ObjStore> {
        super::open(S3Config::from_url(u)?)
    }

    #[test]
    fn url_parameters() {
        let s = open("s3://b/p/q?endpoint=http://127.0.0.1:1&region=r&allow_http=true&access_key_id=a&secret_access_key=s&max_object_size=10").unwrap();
        let k = crate::Key::new("k/x").unwrap();
        assert_eq!(s.path(&k).unwrap().as_ref(), "p/q/k/x");
        assert_eq!(crate::Store::capabilities(&s).max_object_size, Some(10));
        assert!(matches!(open("s3://b?nope=1"), Err(Error::InvalidInput(_))));
        assert!(matches!(
            open("s3://b?allow_http=yes"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(open("s3://b/a//c"), Err(Error::InvalidInput(_))));
        open("s3://b?region=r&connect_timeout_ms=100&timeout_ms=200&retry_timeout_ms=300").unwrap();
        for bad in [
            "timeout_ms=0",
            "timeout_ms=x",
            "connect_timeout_ms=-1",
            "retry_timeout_ms=",
        ] {
            assert!(
                matches!(open(&format!("s3://b?{bad}")), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        let no_delete = open("s3://b?conditional_delete=false&region=r").unwrap();
        let caps = crate::Store::capabilities(&no_delete);
        assert_eq!(caps.delete_conditions, crate::ConditionSupport::NONE);
        assert_eq!(caps.put_conditions, crate::ConditionSupport::ALL);
    }

    /// The URL's settings reach the builder by their config keys, over what the environment
    /// gave (`from_env` here reads AWS_* variables, if any), and `Debug` shows no secret.
    #[test]
    fn settings_reach_the_builder_and_secrets_stay_hidden() {
        use object_store::ClientConfigKey;
        use AmazonS3ConfigKey as K;
        let config = S3Config::from_url(
            "s3://b/p?endpoint=http://h:1&allow_http=true&region=r&secret_access_key=sekrit\
             &session_token=t0ken&timeout_ms=1234",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("sekrit") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("http://h:1"), "{debug}");
        let builder = config.options.configure(
            AmazonS3Builder::new(),
            [
                (K::Region, config.region.clone()),
                (K::SecretAccessKey, config.secret_access_key.map(|s| s.0)),
                (K::AccessKeyId, None),
            ],
        );
        let value = |k: K| builder.get_config_value(&k);
        assert_eq!(value(K::Endpoint).as_deref(), Some("http://h:1"));
        assert_eq!(
            value(K::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
        assert_eq!(value(K::Region).as_deref(), Some("r"));
        assert_eq!(value(K::SecretAccessKey).as_deref(), Some("sekrit"));
        assert_eq!(value(K::AccessKeyId), None);
        assert_eq!(
            value(K::Client(ClientConfigKey::ReadTimeout)).as_deref(),
            Some("1234ms")
        );
        assert_eq!(config.options.prefix, "/p");
    }

    /// The raw requests go where object_store sends its own: the blob URLs built from
    /// [`bucket_endpoint`] equal those of object_store's presigned URLs, path style and virtual
    /// hosted, with and without an endpoint.
    #[tokio::test]
    async fn blob_urls_are_object_stores() {
        use object_store::signer::Signer;
        // Both encodings name the same blob: the services decode the path (object_store
        // leaves `+` as it is where Larder encodes it).
        let decoded = |u: &str| {
            percent_encoding::percent_decode_str(u)
                .decode_utf8()
                .unwrap()
                .into_owned()
        };
        let path = Path::parse("pre/a b/ü+x~y").unwrap();
        for endpoint in [
            None,
            Some("http://127.0.0.1:9000"),
            Some("https://b.minio.example"),
        ] {
            for virtual_hosted in [false, true] {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name("b")
                    .with_region("eu-west-3")
                    .with_access_key_id("a")
                    .with_secret_access_key("s")
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(virtual_hosted);
                if let Some(e) = endpoint {
                    builder = builder.with_endpoint(e);
                }
                let (ours, region) = bucket_endpoint(&builder, "b");
                assert_eq!(region, "eu-west-3");
                let client = builder.build().unwrap();
                let mut signed = client
                    .signed_url(Method::PUT, &path, std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
                signed.set_query(None);
                assert_eq!(
                    decoded(&native::blob_url(&ours, &path)),
                    decoded(signed.as_str()),
                    "endpoint {endpoint:?}, virtual_hosted {virtual_hosted}"
                );
            }
        }
    }
}
