//! What the s3 and azure configs share: the options every object store has
//! ([`ObjStoreOptions`]: prefix, endpoint, size limit, [`NetworkBounds`]), their URL parameters,
//! secrets that stay out of `Debug` ([`Secret`]), and the building of an `object_store` client
//! from them ([`Builder`]).
#![cfg_attr(
    not(any(feature = "s3", feature = "azure")),
    allow(dead_code, unused_macros, unused_imports)
)]

use std::sync::Arc;
use std::time::Duration;

use object_store::{ClientConfigKey, RetryConfig};

use super::native::Native;
use super::{ObjStore, DEFAULT_MAX_OBJECT_SIZE};
use crate::error::{Error, Result};

/// A credential in a config: printed as `***` by `Debug`, so a logged config shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// What every object store's config has (an [`s3::S3Config`](super::s3::S3Config)'s or an
/// [`azure::AzureConfig`](super::azure::AzureConfig)'s `options`), and the URL parameters
/// `endpoint`, `allow_http`, `max_object_size` and those of [`NetworkBounds`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjStoreOptions {
    /// Blob-name prefix of every key (slashes at either end are ignored; `""` for the root).
    pub prefix: String,
    /// The service's URL: an S3-compatible's (`http://127.0.0.1:9000`), or an Azure account's
    /// when it is not `https://ACCOUNT.blob.core.windows.net`. `None`: from the environment,
    /// else the public service.
    pub endpoint: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: Option<bool>,
    /// Largest object (default [`DEFAULT_MAX_OBJECT_SIZE`]).
    pub max_object_size: u64,
    /// How long to wait on the backend: `connect_timeout_ms`, `timeout_ms` and
    /// `retry_timeout_ms` in the URL (5 s each by default).
    pub bounds: NetworkBounds,
}

impl Default for ObjStoreOptions {
    /// The bucket or container root, the endpoint from the environment, the default limits.
    fn default() -> Self {
        ObjStoreOptions {
            prefix: String::new(),
            endpoint: None,
            allow_http: None,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            bounds: NetworkBounds::default(),
        }
    }
}

impl ObjStoreOptions {
    /// Reads a store URL `SCHEME://NAME/prefix?…`: NAME (the bucket or container, `what` in
    /// errors), and the options its path and parameters give. Every other parameter goes to
    /// `other`, which returns whether it knows it; an unknown one is an error.
    pub(super) fn from_url(
        url: &str,
        scheme: &str,
        what: &str,
        mut other: impl FnMut(&str, &str) -> Result<bool>,
    ) -> Result<(String, ObjStoreOptions)> {
        let url = crate::open::parse_store_url(url, scheme, &[scheme])?;
        let name = url
            .host_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::InvalidInput(format!("{scheme} URL {url}: no {what}")))?
            .to_owned();
        let mut options = ObjStoreOptions {
            prefix: url.path().to_owned(),
            ..ObjStoreOptions::default()
        };
        for (k, v) in url.query_pairs() {
            match &*k {
                k if NetworkBounds::PARAMETERS.contains(&k) => options.bounds.set(k, &v)?,
                "endpoint" => options.endpoint = Some(v.into_owned()),
                "allow_http" => options.allow_http = Some(parse_bool(&k, &v)?),
                "max_object_size" => {
                    options.max_object_size = v.parse().map_err(|_| {
                        Error::InvalidInput(format!(
                            "{scheme} URL: max_object_size={v:?} is not a number"
                        ))
                    })?
                }
                k if other(k, &v)? => {}
                k => {
                    return Err(Error::InvalidInput(format!(
                        "{scheme} URL: unknown parameter {k:?}"
                    )))
                }
            }
        }
        Ok((name, options))
    }

    /// `builder` with these options and `settings` (the driver's own; those given) set by
    /// their config keys, so that its other settings, from the environment, stay; and with
    /// retries bounded by [`NetworkBounds::retry_timeout`].
    pub(super) fn configure<B: Builder>(
        &self,
        mut builder: B,
        settings: impl IntoIterator<Item = (B::Key, Option<String>)>,
    ) -> B {
        let common = [
            (B::ENDPOINT, self.endpoint.clone()),
            (
                B::client(ClientConfigKey::AllowHttp),
                self.allow_http.map(|b| b.to_string()),
            ),
            // Below the servers' keep-alive (Node's, Azurite's: 5 s), so a pooled connection is
            // never reused just as the server closes it: conditional PUTs go without retries,
            // and such a send failure would be an unknown outcome (as in the http driver).
            (
                B::client(ClientConfigKey::PoolIdleTimeout),
                Some(POOL_IDLE_TIMEOUT.into()),
            ),
        ];
        let bounds = self
            .bounds
            .client_config()
            .map(|(k, v)| (B::client(k), Some(v)));
        for (key, value) in common.into_iter().chain(settings).chain(bounds) {
            if let Some(value) = value {
                builder = builder.set(key, value);
            }
        }
        builder.retry(self.bounds.retry_config())
    }

    /// The store named `name` on `client` (`writer` for conditional PUTs, see
    /// [`ObjStore::with_writer`]) and `native`, with these options' prefix and size limit.
    pub(super) fn store(
        &self,
        name: &'static str,
        client: Arc<dyn object_store::ObjectStore>,
        writer: Arc<dyn object_store::ObjectStore>,
        native: Arc<dyn Native>,
    ) -> Result<ObjStore> {
        Ok(
            ObjStore::new(name, client, &self.prefix, self.max_object_size)?
                .with_writer(writer)
                .with_native(native),
        )
    }
}

/// How long an idle pooled connection is kept (see [`ObjStoreOptions::configure`]).
const POOL_IDLE_TIMEOUT: &str = "4s";

/// A backend's client with `object_store`'s retries, and one without ([`Builder::clients`]).
pub(super) type Clients<C> = (Arc<C>, Arc<C>);

/// What the driver needs of an `object_store` builder (S3's and Azure's): set by config key,
/// retries, build.
pub(super) trait Builder: Clone {
    /// The builder's config keys.
    type Key;
    /// The client it builds.
    type Client;
    /// The key of the service's URL.
    const ENDPOINT: Self::Key;
    /// The key of a client setting.
    fn client(key: ClientConfigKey) -> Self::Key;
    /// Sets `key` to `value`.
    fn set(self, key: Self::Key, value: String) -> Self;
    /// Sets the retries.
    fn retry(self, retry: RetryConfig) -> Self;
    /// Builds the client.
    fn build(self) -> object_store::Result<Self::Client>;

    /// The client twice, from this builder: with `object_store`'s retries (reads, unconditional
    /// writes, parts) and without (conditional PUTs, see [`ObjStore::with_writer`]). `what`
    /// names the bucket or container in errors.
    fn clients(self, what: &str) -> Result<Clients<Self::Client>> {
        let no_retries = RetryConfig {
            max_retries: 0,
            ..Default::default()
        };
        let invalid = |e: object_store::Error| Error::InvalidInput(format!("{what}: {e}"));
        let writer = self.clone().retry(no_retries).build().map_err(invalid)?;
        let client = self.build().map_err(invalid)?;
        Ok((Arc::new(client), Arc::new(writer)))
    }
}

/// Implements [`Builder`] for `$builder`, an `object_store` builder of `$client` whose config
/// keys `$key` have an `Endpoint` and a `Client(ClientConfigKey)` variant (S3's and Azure's):
/// the same five lines for each, written once.
macro_rules! impl_builder {
    ($builder:ident, $key:ident, $client:ident) => {
        impl super::config::Builder for $builder {
            type Key = $key;
            type Client = $client;
            const ENDPOINT: $key = $key::Endpoint;

            fn client(key: object_store::ClientConfigKey) -> $key {
                $key::Client(key)
            }

            fn set(self, key: $key, value: String) -> Self {
                self.with_config(key, value)
            }

            fn retry(self, retry: object_store::RetryConfig) -> Self {
                self.with_retry(retry)
            }

            fn build(self) -> object_store::Result<$client> {
                $builder::build(self)
            }
        }
    };
}
pub(super) use impl_builder;

/// A boolean URL parameter.
pub(super) fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::InvalidInput(format!(
            "store URL: {k}={v:?} is not true or false"
        ))),
    }
}

/// How long the s3 and azure drivers wait on their backend, from the URL parameters
/// `connect_timeout_ms`, `timeout_ms` and `retry_timeout_ms`: a backend that is down or hung
/// fails a request within seconds, as a retryable error (503 at the server), like the other
/// networked drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkBounds {
    /// `connect_timeout_ms`: each connection attempt (default 5 s).
    pub connect_timeout: Duration,
    /// `timeout_ms`: the longest the backend may stay silent: from sending a request (its body
    /// included: up to [`MULTIPART_THRESHOLD`](super::MULTIPART_THRESHOLD) bytes for a single PUT or one part) to the start
    /// of the response, and between two reads of a response body (default 5 s). A download
    /// that keeps moving is not cut off, however long it takes. Raise it on a slow uplink.
    pub timeout: Duration,
    /// `retry_timeout_ms`: how long a request that failed on the connection, on a timeout
    /// (reads only) or with a 5xx is retried, counted from its first attempt (default 5 s).
    /// Conditional writes are never retried (see [`ObjStore::with_writer`]).
    pub retry_timeout: Duration,
}

impl Default for NetworkBounds {
    fn default() -> Self {
        NetworkBounds {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(5),
        }
    }
}

impl NetworkBounds {
    /// The URL parameters these bounds are read from.
    pub const PARAMETERS: [&'static str; 3] =
        ["connect_timeout_ms", "timeout_ms", "retry_timeout_ms"];

    /// Sets the bound that URL parameter `k` (one of [`Self::PARAMETERS`]) names to `v`
    /// milliseconds (more than 0).
    fn set(&mut self, k: &str, v: &str) -> Result<()> {
        let ms: u64 = v.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
            Error::InvalidInput(format!(
                "store URL: {k}={v:?} is not a positive number of milliseconds"
            ))
        })?;
        let d = Duration::from_millis(ms);
        match k {
            "connect_timeout_ms" => self.connect_timeout = d,
            "timeout_ms" => self.timeout = d,
            "retry_timeout_ms" => self.retry_timeout = d,
            other => {
                return Err(Error::InvalidInput(format!(
                    "store URL: {other:?} is not a timeout"
                )))
            }
        }
        Ok(())
    }

    /// The `object_store` client settings, as its config keys (set one by one, so that the
    /// builder's other client settings, from the URL or the environment, stay).
    fn client_config(&self) -> [(ClientConfigKey, String); 3] {
        use ClientConfigKey as K;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        [
            (K::ConnectTimeout, ms(self.connect_timeout)),
            (K::ReadTimeout, ms(self.timeout)),
            // The whole request: not bounded beyond the read timeout, so that a long download
            // is not cut off (object_store's default, 30 s, would cut it, and its retries are
            // bounded by `retry_timeout`).
            (K::Timeout, "1day".to_owned()),
        ]
    }

    /// `object_store`'s retries, bounded by `retry_timeout` (its default keeps retrying for
    /// three minutes, with waits of up to 15 s between attempts).
    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: self.retry_timeout,
        }
    }
}
