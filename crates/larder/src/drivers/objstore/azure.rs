//! Azure Blob Storage (and Azurite): see the [parent module](super) for layout and atomicity.
//!
//! Conditions Azure enforces natively, and which this driver uses: `If-Match` and
//! `If-None-Match: *` on Put Blob and Put Block List, `If-Match` on Delete Blob. Nothing is
//! `Unsupported`.
//!
//! Multipart: blocks are put with random ids (no clash between writers of one blob), and
//! Put Block List commits them with the metadata and the condition. A commit by another writer
//! discards our uncommitted blocks; the commit then fails with `InvalidBlockList` and the
//! blocks are put again from the spool.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::Method;
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;

use super::config::{parse_bool, Builder as _};
use super::native::{
    self, BlobHeaders, Guard, ListRequest, Listed, ListedBlob, Listing, Native, NativeError,
    Response, Uploaded,
};
use super::{map_err, ObjStore, ObjStoreOptions, Secret};
use crate::error::{Error, Result};

/// Settings of an Azure Blob Storage [`ObjStore`]: what is `None` comes from the `AZURE_*`
/// environment variables. With `use_emulator` the store talks to Azurite at
/// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`) with its well-known account
/// and key; an endpoint given with it must name that same emulator (`object_store` takes the
/// emulator's address only from that variable). `Debug` shows no secret.
///
/// ```no_run
/// # async fn example() -> larder::Result<()> {
/// use larder::drivers::objstore::{azure::AzureConfig, ObjStore, ObjStoreOptions};
///
/// let store = ObjStore::open(AzureConfig {
///     options: ObjStoreOptions {
///         prefix: "myapp".into(),
///         ..Default::default()
///     },
///     account: Some("myaccount".into()), // the key from AZURE_STORAGE_ACCESS_KEY
///     ..AzureConfig::new("my-container")
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// The container.
    pub container: String,
    /// Prefix, endpoint (the account's URL, when it is not
    /// `https://ACCOUNT.blob.core.windows.net`), size limit and network bounds.
    pub options: ObjStoreOptions,
    /// The storage account.
    pub account: Option<String>,
    /// The account's access key.
    pub access_key: Option<Secret>,
    /// Talk to Azurite (see above).
    pub use_emulator: Option<bool>,
}

impl AzureConfig {
    /// The defaults for `container`: the container root, everything else from the environment.
    pub fn new(container: impl Into<String>) -> Self {
        AzureConfig {
            container: container.into(),
            options: ObjStoreOptions::default(),
            account: None,
            access_key: None,
            use_emulator: None,
        }
    }

    /// From a store URL: `azure://container/prefix?account=NAME&access_key=…`
    /// `&endpoint=https://…&allow_http=true&use_emulator=true&max_object_size=N`
    /// `&connect_timeout_ms=5000&timeout_ms=5000&retry_timeout_ms=5000` (see
    /// [`ObjStoreOptions`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut config = AzureConfig::new("");
        let (container, options) = ObjStoreOptions::from_url(url, "azure", "container", |k, v| {
            match k {
                "account" => config.account = Some(v.to_owned()),
                "access_key" => config.access_key = Some(v.into()),
                "use_emulator" => config.use_emulator = Some(parse_bool(k, v)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(AzureConfig {
            container,
            options,
            ..config
        })
    }
}

super::config::impl_builder!(MicrosoftAzureBuilder, AzureConfigKey, MicrosoftAzure);

/// Builds the store [`ObjStore::open`] opens for an [`AzureConfig`].
pub(super) fn open(config: AzureConfig) -> Result<ObjStore> {
    use AzureConfigKey as K;
    let AzureConfig {
        container,
        options,
        account,
        access_key,
        use_emulator,
    } = config;
    let builder = options.configure(
        MicrosoftAzureBuilder::from_env().with_container_name(&container),
        [
            (K::AccountName, account),
            (K::AccessKey, access_key.map(|s| s.0)),
            (K::UseEmulator, use_emulator.map(|b| b.to_string())),
        ],
    );
    let config = |k: AzureConfigKey| builder.get_config_value(&k);
    let emulator = config(K::UseEmulator).is_some_and(|v| v == "true");
    let account = config(K::AccountName)
        .or_else(|| emulator.then(|| "devstoreaccount1".to_owned()))
        .ok_or_else(|| Error::InvalidInput(format!("azure container {container}: no account")))?;
    let emulator_url = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
    if let (true, Some(given)) = (emulator, &options.endpoint) {
        let trim = |u: &str| u.trim_end_matches('/').to_owned();
        let given = trim(given);
        let given = given
            .strip_suffix(&format!("/{account}"))
            .map_or(given.clone(), str::to_owned);
        if trim(&given) != trim(&emulator_url) {
            return Err(Error::InvalidInput(format!(
                "azure store: with use_emulator=true the emulator is at {emulator_url} \
                 (AZURITE_BLOB_STORAGE_URL), not {given}"
            )));
        }
    }
    let container_url = container_url(
        emulator.then_some(emulator_url.as_str()),
        config(K::Endpoint).as_deref(),
        &account,
        &container,
    );
    let (client, writer) = builder.clients(&format!("azure container {container}"))?;
    let native = AzureNative {
        client: client.clone(),
        http: native::new_client(&options.bounds)?,
        container_url,
        account,
        retry_timeout: options.bounds.retry_timeout,
        emulator,
    };
    options.store("azure", client, writer, Arc::new(native))
}

/// The container's URL as object_store derives it (its own is private), for the raw requests:
/// under the emulator's URL when `emulator` is set, else under `endpoint` or the account's
/// public URL. Tested against object_store's presigned URLs.
fn container_url(
    emulator: Option<&str>,
    endpoint: Option<&str>,
    account: &str,
    container: &str,
) -> String {
    let account_url = match (emulator, endpoint) {
        (Some(emulator), _) => format!("{}/{account}", emulator.trim_end_matches('/')),
        (None, Some(endpoint)) => endpoint.to_owned(),
        (None, None) => format!("https://{account}.blob.core.windows.net"),
    };
    format!("{}/{container}", account_url.trim_end_matches('/'))
}

/// Azure's guarded delete and block-list upload.
#[derive(Debug)]
struct AzureNative {
    client: Arc<MicrosoftAzure>,
    /// For the raw requests.
    http: reqwest::Client,
    container_url: String,
    account: String,
    /// How long a read is sent again while the connection fails ([`NetworkBounds`](super::NetworkBounds)).
    retry_timeout: std::time::Duration,
    /// Azurite: its List Blobs marker is the last name listed, so a listing can resume after
    /// any name; Azure's markers are opaque, and `startFrom` does that there instead.
    emulator: bool,
}

impl AzureNative {
    /// Sends a request to the blob at `path` (with `query`, already encoded), signed with the
    /// store's credential (Shared Key, SAS or bearer token).
    async fn send(
        &self,
        method: Method,
        path: &Path,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response> {
        let mut url = native::blob_url(&self.container_url, path);
        url.push_str(query);
        self.send_to(method, url, headers, body, 1).await
    }

    /// Sends a request to `url`, signed, up to `attempts` times while the connection fails
    /// (more than once only for reads).
    async fn send_to(
        &self,
        method: Method,
        url: String,
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
        let mut request = native::request(method, &url, headers, body)?;
        AzureAuthorizer::new(&credential, &self.account)
            .try_authorize(&mut request)
            .map_err(map_err)?;
        native::send(&self.http, request, attempts, self.retry_timeout).await
    }
}

/// What a response to a guarded request means.
fn outcome(r: &Response, what: &str) -> std::result::Result<(), NativeError> {
    if r.status.is_success() {
        return Ok(());
    }
    match (r.status.as_u16(), r.code.as_deref()) {
        (_, Some("InvalidBlockList")) => Err(NativeError::UploadGone),
        // 412 ConditionNotMet; 409 BlobAlreadyExists for `If-None-Match: *`; 404 for `If-Match`
        // on a blob deleted meanwhile.
        (412, _) | (409, Some("BlobAlreadyExists")) | (404, _) => Err(NativeError::Changed),
        _ => Err(NativeError::Failed(r.error(what))),
    }
}

/// Most entries per List Blobs page (Azure's limit).
const LIST_PAGE: usize = 5000;

/// The service version that has List Blobs' `startFrom`.
const START_FROM_VERSION: &str = "2026-02-06";

#[async_trait]
impl Native for AzureNative {
    fn conditional_delete(&self) -> bool {
        true
    }

    fn listing(&self) -> Listing {
        Listing::WithMetadata
    }

    async fn list(&self, request: ListRequest<'_>) -> Result<Listed> {
        // List Blobs with include=metadata: names, sizes, metadata and common prefixes of one
        // page in one request.
        let mut url = format!(
            "{}?restype=container&comp=list&include=metadata&maxresults={}&prefix={}",
            self.container_url,
            request.max.clamp(1, LIST_PAGE),
            native::query_value(request.prefix)
        );
        if let Some(d) = request.delimiter {
            url.push_str(&format!(
                "&delimiter={}",
                native::query_value(d.encode_utf8(&mut [0; 4]))
            ));
        }
        let mut headers = Vec::new();
        match (request.token, request.start_after) {
            (Some(token), _) => url.push_str(&format!("&marker={}", native::query_value(token))),
            (None, Some(after)) if self.emulator => {
                url.push_str(&format!("&marker={}", native::query_value(after)));
            }
            (None, Some(after)) => {
                // Inclusive: the name itself is dropped by the caller's cursor filter.
                url.push_str(&format!("&startFrom={}", native::query_value(after)));
                headers.push(("x-ms-version", START_FROM_VERSION.to_owned()));
            }
            (None, None) => {}
        }
        let r = self
            .send_to(Method::GET, url, &headers, Bytes::new(), 3)
            .await?;
        if !r.status.is_success() {
            return Err(r.error("azure List Blobs"));
        }
        let mut blobs = Vec::new();
        for entry in r.body.split("<Blob>").skip(1) {
            let entry = entry.split("</Blob>").next().unwrap_or_default();
            // A name Azure had to encode (`<Name Encoded="true">`) cannot be a Larder key.
            let Some(name) = native::xml_text(entry, "Name") else {
                continue;
            };
            let size = native::xml_text(entry, "Content-Length")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::backend(format!("azure List Blobs: no size for {name}")))?;
            blobs.push(ListedBlob {
                name,
                size,
                larder: native::xml_text(entry, "larder"),
            });
        }
        let prefixes = r
            .body
            .split("<BlobPrefix>")
            .skip(1)
            .filter_map(|entry| native::xml_text(entry, "Name"))
            .collect();
        let token = native::xml_text(&r.body, "NextMarker").filter(|m| !m.is_empty());
        Ok(Listed {
            blobs,
            prefixes,
            token,
        })
    }

    async fn delete(&self, path: &Path, guard: &Guard) -> std::result::Result<(), NativeError> {
        let headers: Vec<_> = guard.header().into_iter().collect();
        let r = self
            .send(Method::DELETE, path, "", &headers, Bytes::new())
            .await?;
        outcome(&r, &format!("azure Delete Blob {path}"))
    }

    async fn begin_upload(&self, _path: &Path, _headers: &BlobHeaders) -> Result<String> {
        // Blocks need no upload id; the metadata goes with the block list.
        Ok(String::new())
    }

    fn parts(&self) -> &dyn MultipartStore {
        self.client.as_ref()
    }

    async fn complete_upload(
        &self,
        upload: Uploaded<'_>,
        guard: &Guard,
    ) -> std::result::Result<(), NativeError> {
        // Blocks need no upload id.
        let Uploaded {
            path,
            parts,
            headers,
            ..
        } = upload;
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for part in parts {
            // object_store's block id is the base64 of the part's content id.
            let id = base64::engine::general_purpose::STANDARD.encode(&part.content_id);
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        let mut h: Vec<_> = guard.header().into_iter().collect();
        h.push(("x-ms-meta-larder", headers.larder.clone()));
        if let Some(ct) = &headers.content_type {
            h.push(("x-ms-blob-content-type", ct.clone()));
        }
        let r = self
            .send(Method::PUT, path, "?comp=blocklist", &h, Bytes::from(xml))
            .await?;
        outcome(&r, &format!("azure Put Block List {path}"))
    }

    async fn abort_upload(&self, _path: &Path, _upload: &str) {
        // Uncommitted blocks cannot be dropped; Azure discards them after a week, or at the
        // blob's next commit.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(u: &str) -> Result<ObjStore> {
        super::open(AzureConfig::from_url(u)?)
    }

    #[test]
    fn url_parameters() {
        let s = open("azure://c/p?account=devstoreaccount1&use_emulator=true&endpoint=http://127.0.0.1:10000/devstoreaccount1").unwrap();
        let k = crate::Key::new("k").unwrap();
        assert_eq!(s.path(&k).unwrap().as_ref(), "p/k");
        assert!(matches!(
            open("azure://c?use_emulator=true&endpoint=http://127.0.0.1:1"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            open("azure://c?use_emulator=true&x=1"),
            Err(Error::InvalidInput(_))
        ));
    }

    /// The raw requests go where object_store sends its own: the blob URLs built from
    /// [`container_url`] equal those of object_store's presigned (SAS) URLs, for the public
    /// service, an endpoint, and the emulator.
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
        let key = base64::engine::general_purpose::STANDARD.encode(b"key");
        let emulator = "http://127.0.0.1:10000";
        for (use_emulator, endpoint) in [
            (false, None),
            (false, Some("https://acct.blob.example.net/")),
            (true, None),
        ] {
            let mut builder = MicrosoftAzureBuilder::new()
                .with_account("acct")
                .with_access_key(&key)
                .with_container_name("c")
                .with_use_emulator(use_emulator);
            if let Some(e) = endpoint {
                builder = builder.with_endpoint(e.to_owned());
            }
            if use_emulator {
                // object_store reads the emulator's address from this variable only.
                std::env::set_var("AZURITE_BLOB_STORAGE_URL", emulator);
            }
            let client = builder.build().unwrap();
            let ours = container_url(use_emulator.then_some(emulator), endpoint, "acct", "c");
            let mut signed = client
                .signed_url(Method::PUT, &path, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            signed.set_query(None);
            assert_eq!(
                decoded(&native::blob_url(&ours, &path)),
                decoded(signed.as_str()),
                "emulator {use_emulator}, endpoint {endpoint:?}"
            );
        }
    }
}
