//! Azure Blob Storage (and Azurite): see the [parent module](super) for layout and atomicity.

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;

use super::{ObjStore, DEFAULT_MAX_OBJECT_SIZE};
use crate::error::{Error, Result};

/// Opens `azure://container/prefix?account=NAME&access_key=…&endpoint=https://…`
/// `&use_emulator=true&max_object_size=N`. Anything not in the URL comes from the `AZURE_*`
/// environment variables. With `use_emulator=true` the store talks to Azurite at
/// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`) with its well-known account
/// and key; an `endpoint` given with it must name that same emulator (`object_store` takes the
/// emulator's address only from that variable).
pub fn from_url(url: &url::Url) -> Result<ObjStore> {
    let container = url
        .host_str()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("azure URL {url}: no container")))?;
    let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
    let mut max = DEFAULT_MAX_OBJECT_SIZE;
    let mut emulator = false;
    let mut endpoint: Option<String> = None;
    let mut account = "devstoreaccount1".to_owned();
    for (k, v) in url.query_pairs() {
        builder = match &*k {
            "account" => {
                account = v.to_string();
                builder.with_account(v.as_ref())
            }
            "access_key" => builder.with_access_key(v.as_ref()),
            "endpoint" => {
                endpoint = Some(v.to_string());
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
    if let (true, Some(given)) = (emulator, &endpoint) {
        let emulator_url = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
        let trim = |u: &str| u.trim_end_matches('/').to_owned();
        let given = trim(given);
        let given = given
            .strip_suffix(&format!("/{account}"))
            .map_or(given.clone(), str::to_owned);
        if trim(&given) != trim(&emulator_url) {
            return Err(Error::InvalidInput(format!(
                "azure URL: with use_emulator=true the emulator is at {emulator_url} \
                 (AZURITE_BLOB_STORAGE_URL), not {given}"
            )));
        }
    }
    let client = builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("azure URL {url}: {e}")))?;
    ObjStore::new("azure", Arc::new(client), url.path(), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(u: &str) -> Result<ObjStore> {
        from_url(&url::Url::parse(u).unwrap())
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
}
