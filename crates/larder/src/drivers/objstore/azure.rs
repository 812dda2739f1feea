//! Azure Blob Storage (and Azurite): see the [parent module](super) for layout and atomicity.

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;

use super::{ObjStore, DEFAULT_MAX_OBJECT_SIZE};
use crate::error::{Error, Result};

/// Opens `azure://container/prefix?account=NAME&access_key=…&endpoint=https://…`
/// `&use_emulator=true&max_object_size=N`. Anything not in the URL comes from the `AZURE_*`
/// environment variables. With `use_emulator=true` the store talks to Azurite at
/// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`) with its well-known account
/// and key, and `endpoint` is refused (`object_store` does not take one for the emulator).
pub fn from_url(url: &url::Url) -> Result<ObjStore> {
    let container = url
        .host_str()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("azure URL {url}: no container")))?;
    let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
    let mut max = DEFAULT_MAX_OBJECT_SIZE;
    let mut emulator = false;
    let mut endpoint = false;
    for (k, v) in url.query_pairs() {
        builder = match &*k {
            "account" => builder.with_account(v.as_ref()),
            "access_key" => builder.with_access_key(v.as_ref()),
            "endpoint" => {
                endpoint = true;
                builder.with_endpoint(v.to_string())
            }
            "allow_http" => builder.with_allow_http(super::parse_bool(&k, &v)?),
            "use_emulator" => {
                emulator = super::parse_bool(&k, &v)?;
                builder.with_use_emulator(emulator)
            }
            "max_object_size" => {
                max = v.parse().map_err(|_| {
                    Error::InvalidInput(format!("azure URL: max_object_size={v:?} is not a number"))
                })?;
                builder
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "azure URL: unknown parameter {other:?}"
                )))
            }
        };
    }
    if emulator && endpoint {
        return Err(Error::InvalidInput(
            "azure URL: with use_emulator=true the endpoint is AZURITE_BLOB_STORAGE_URL, not \
             the endpoint parameter"
                .into(),
        ));
    }
    let client = builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("azure URL {url}: {e}")))?;
    ObjStore::new("azure", Arc::new(client), url.path(), max)
}
