//! S3 and S3-compatible stores (AWS, MinIO, SeaweedFS, moto, …): see the [parent
//! module](super) for layout and atomicity. The backend must honour `If-Match` and
//! `If-None-Match: *` on PUT, as AWS S3 has since 2024.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;

use super::{ObjStore, DEFAULT_MAX_OBJECT_SIZE};
use crate::error::{Error, Result};

/// Opens `s3://bucket/prefix?endpoint=http://host:port&region=us-east-1&allow_http=true`
/// `&access_key_id=…&secret_access_key=…&session_token=…&virtual_hosted=false`
/// `&max_object_size=N`. Credentials and anything not in the URL come from the `AWS_*`
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …).
pub fn from_url(url: &url::Url) -> Result<ObjStore> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("s3 URL {url}: no bucket")))?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let mut max = DEFAULT_MAX_OBJECT_SIZE;
    for (k, v) in url.query_pairs() {
        builder = match &*k {
            "endpoint" => builder.with_endpoint(v.as_ref()),
            "region" => builder.with_region(v.as_ref()),
            "allow_http" => builder.with_allow_http(super::parse_bool(&k, &v)?),
            "access_key_id" => builder.with_access_key_id(v.as_ref()),
            "secret_access_key" => builder.with_secret_access_key(v.as_ref()),
            "session_token" => builder.with_token(v.as_ref()),
            "virtual_hosted" => {
                builder.with_virtual_hosted_style_request(super::parse_bool(&k, &v)?)
            }
            "max_object_size" => {
                max = v.parse().map_err(|_| {
                    Error::InvalidInput(format!("s3 URL: max_object_size={v:?} is not a number"))
                })?;
                builder
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "s3 URL: unknown parameter {other:?}"
                )))
            }
        };
    }
    let client = builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("s3 URL {url}: {e}")))?;
    ObjStore::new("s3", Arc::new(client), url.path(), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(u: &str) -> Result<ObjStore> {
        from_url(&url::Url::parse(u).unwrap())
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
    }
}
