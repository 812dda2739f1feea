//! Listing. On Azure, List Blobs returns each blob's metadata, so a page of up to 5,000 blobs
//! is one request ([`Native::list_metadata`]). S3's listing has no user metadata, so every
//! listed blob is headed: one request per object on the page, run [`LIST_HEADS`] at a time.
//! Either way the page itself (order, common prefixes, cursor) is made by [`paginate`]; foreign,
//! unreadable and expired blobs are skipped.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use super::metadata;
use super::native::Native;
use super::{map_err, ObjStore};
use crate::error::Result;
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::Meta;

/// Heads run concurrently while listing.
const LIST_HEADS: usize = 16;

impl ObjStore {
    /// One page of the listing `opts` (validated by the caller).
    pub(crate) async fn list_page(&self, opts: &ListOptions) -> Result<ListPage> {
        if let Some(native) = self.native.as_ref().filter(|n| n.lists_metadata()) {
            return self.list_with_metadata(native.as_ref(), opts).await;
        }
        // The backend lists by whole segments: list the deepest folder holding the prefix and
        // let `paginate` filter by the string prefix.
        let folder = match opts.prefix.rfind('/') {
            Some(i) => &opts.prefix[..i],
            None => "",
        };
        let folder = self.join(folder)?;
        let folder = (!folder.as_ref().is_empty()).then_some(folder);
        let offset = opts.cursor.as_deref().and_then(|c| self.join(c).ok());
        let listing = match &offset {
            Some(o) => self.inner.list_with_offset(folder.as_ref(), o),
            None => self.inner.list(folder.as_ref()),
        };
        let keys = listing.map_err(map_err).try_filter_map(|o| {
            futures::future::ready(Ok(self.listed_key(o.location.as_ref(), opts)))
        });
        let mut metas = keys
            .map_ok(|k| self.list_entry(k))
            .try_buffered(LIST_HEADS)
            .try_filter_map(|m| futures::future::ready(Ok(m)))
            .boxed();
        let mut seen: Vec<Meta> = Vec::new();
        while let Some(meta) = metas.try_next().await? {
            seen.push(meta);
            // Stop as soon as the page is full and one more entry proves there is a next page.
            if seen.len().is_multiple_of(64) {
                let page = paginate(seen.iter().cloned(), opts);
                if page.next_cursor.is_some() {
                    return Ok(page);
                }
            }
        }
        Ok(paginate(seen, opts))
    }

    /// The key of a listed blob, if it lies under the prefix.
    fn key_of(&self, location: &str) -> Option<Key> {
        let s = location;
        let rest = if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        Key::new(rest).ok()
    }

    /// The metadata of a listed blob, `None` when it vanished, is foreign or has expired.
    async fn list_entry(&self, key: Key) -> Result<Option<Meta>> {
        let Some((backend, attrs)) = self.stat_raw(&key).await? else {
            return Ok(None);
        };
        // A blob with unreadable metadata is skipped like a foreign one; backend failures are
        // not (a listing must not silently come back short).
        match metadata::decode(&key, backend.size, metadata::entry(&attrs)) {
            Ok(Some((meta, _))) if !meta.is_expired() => Ok(Some(meta)),
            Ok(_) | Err(_) => Ok(None),
        }
    }

    /// The key of a listed blob if it belongs in the listing: under the prefix, past the cursor
    /// and not inside the common prefix the cursor names.
    fn listed_key(&self, name: &str, opts: &ListOptions) -> Option<Key> {
        self.key_of(name).filter(|k| opts.after_cursor(k.as_str()))
    }

    /// Listing where the backend returns each blob's metadata with its name (Azure): one
    /// request per page of blobs instead of one per blob.
    async fn list_with_metadata(
        &self,
        native: &dyn Native,
        opts: &ListOptions,
    ) -> Result<ListPage> {
        let prefix = if self.prefix.is_empty() {
            opts.prefix.clone()
        } else {
            format!("{}/{}", self.prefix, opts.prefix)
        };
        let mut marker: Option<String> = None;
        let mut seen: Vec<Meta> = Vec::new();
        loop {
            let (blobs, next) = native.list_metadata(&prefix, marker.as_deref()).await?;
            for blob in blobs {
                let Some(key) = self.listed_key(&blob.name, opts) else {
                    continue;
                };
                // Foreign, unreadable and expired blobs are skipped, as when heading them.
                if let Ok(Some((meta, _))) =
                    metadata::decode(&key, blob.size, blob.larder.as_deref())
                {
                    if !meta.is_expired() {
                        seen.push(meta);
                    }
                }
            }
            let page = paginate(seen.iter().cloned(), opts);
            match next {
                Some(m) if page.next_cursor.is_none() => marker = Some(m),
                _ => return Ok(page),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;

    fn store(prefix: &str) -> ObjStore {
        ObjStore::new("test", Arc::new(InMemory::new()), prefix, 1 << 20).unwrap()
    }

    #[test]
    fn listed_keys_lie_under_the_prefix_and_past_the_cursor() {
        let s = store("pre/fix");
        let opts = |prefix: &str, delimiter: Option<char>, cursor: Option<&str>| ListOptions {
            prefix: prefix.into(),
            delimiter,
            cursor: cursor.map(str::to_owned),
            ..Default::default()
        };
        let listed = |name: &str, o: &ListOptions| s.listed_key(name, o).map(|k| k.to_string());
        let all = opts("", None, None);
        assert_eq!(listed("pre/fix/a/b", &all).as_deref(), Some("a/b"));
        assert_eq!(listed("pre/fixa/b", &all), None);
        assert_eq!(listed("other/a", &all), None);
        assert_eq!(listed("pre/fix/a/b", &opts("b", None, None)), None);
        assert_eq!(listed("pre/fix/a", &opts("", None, Some("a"))), None);
        assert_eq!(
            listed("pre/fix/b", &opts("", None, Some("a"))).as_deref(),
            Some("b")
        );
        // A cursor naming a common prefix skips everything inside it.
        let folded = opts("", Some('/'), Some("a/"));
        assert_eq!(listed("pre/fix/a/z", &folded), None);
        assert_eq!(listed("pre/fix/a0", &folded).as_deref(), Some("a0"));
        // ... but not one before the listing's prefix.
        let before = opts("a/", Some('/'), Some("0/"));
        assert_eq!(listed("pre/fix/a/z", &before).as_deref(), Some("a/z"));
        let short = opts("a/b/", Some('/'), Some("a/"));
        assert_eq!(listed("pre/fix/a/b/c", &short).as_deref(), Some("a/b/c"));
    }

    /// Every page equals the reference store's (headed listing, over an in-memory backend).
    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn pages_match_the_reference_store() {
        crate::conformance::listing_matches_reference(&store("p")).await;
    }
}
