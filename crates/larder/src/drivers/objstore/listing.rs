//! Listing. A page is built from the backend's own paginated, delimited listing
//! ([`Native::list`]): one request per page in the usual case, which returns the page's objects
//! and common prefixes (those the delimiter folds away are never listed one by one). Azure's
//! listing carries each blob's metadata; S3's does not, so each object *on the page* is headed
//! ([`LIST_HEADS`] at a time). Foreign, unreadable and expired blobs are skipped. A common
//! prefix is the backend's: one whose blobs have all expired (or are foreign) is still listed.
//!
//! The backend's order is not trusted to be byte order: entries are sorted within a page, and
//! a page only holds entries that no unread entry can precede. On a backend that lists in
//! directory-walk order ([`ListOrder::Walk`], SeaweedFS), the request and that bound are
//! adjusted so that no key is skipped (see [`walk_start`] and [`walk_bound`]); an order seen
//! to contradict byte order switches the store to walk order.
//!
//! Without native listing (a bare `object_store` backend), the backend is listed flat and
//! every listed blob headed; [`paginate`] makes the page.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use super::metadata;
use super::native::{ListOrder, ListRequest, Listed, Listing, Native};
use super::{map_err, ObjStore};
use crate::error::Result;
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::Meta;

/// Heads run concurrently while listing.
const LIST_HEADS: usize = 16;

/// The listing order is not known yet.
pub(super) const ORDER_UNKNOWN: u8 = 0;
const ORDER_BYTES: u8 = 1;
const ORDER_WALK: u8 = 2;

/// An entry of a page before its metadata is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Candidate {
    /// A blob: its key, size and (when the listing returns it) its `larder` entry.
    Object {
        key: Key,
        size: u64,
        larder: Option<String>,
    },
    /// A common prefix, relative to the store like a key.
    Prefix(String),
}

impl Candidate {
    fn name(&self) -> &str {
        match self {
            Candidate::Object { key, .. } => key.as_str(),
            Candidate::Prefix(p) => p,
        }
    }
}

impl ObjStore {
    /// One page of the listing `opts` (validated by the caller).
    pub(crate) async fn list_page(&self, opts: &ListOptions) -> Result<ListPage> {
        match self.native.as_ref() {
            Some(native) if native.listing() != Listing::Unsupported => {
                self.list_native(native.as_ref(), opts).await
            }
            _ => self.list_flat(opts).await,
        }
    }

    /// The backend's listing order, asked once.
    async fn list_order(&self, native: &dyn Native) -> Result<ListOrder> {
        match self.list_order.load(Ordering::Relaxed) {
            ORDER_BYTES => return Ok(ListOrder::Bytes),
            ORDER_WALK => return Ok(ListOrder::Walk),
            _ => {}
        }
        let order = native.list_order().await?;
        self.set_list_order(order);
        Ok(order)
    }

    fn set_list_order(&self, order: ListOrder) {
        let v = match order {
            ListOrder::Bytes => ORDER_BYTES,
            ListOrder::Walk => ORDER_WALK,
        };
        self.list_order.store(v, Ordering::Relaxed);
    }

    /// The blob-name prefix of the listing's prefix.
    fn blob_prefix(&self, prefix: &str) -> String {
        if self.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.prefix)
        }
    }

    /// A page from the backend's paginated, delimited listing: candidates are read (objects
    /// headed, when the listing has no metadata) in order until the page holds `limit` entries
    /// and one more live entry shows there is a next page. Candidates that prove dead are
    /// skipped; when they run out first, the listing goes on after the last one read.
    async fn list_native(&self, native: &dyn Native, opts: &ListOptions) -> Result<ListPage> {
        let limit = opts.page_size();
        let heads = native.listing() == Listing::Names;
        let mut page = ListPage::default();
        let mut last_on_page: Option<String> = None;
        let mut from = opts.clone();
        let mut order = self.list_order(native).await?;
        loop {
            // A cursor before the prefix does not matter; one after every key under it ends
            // the listing.
            let cursor = match from.cursor.as_deref() {
                Some(c) if c.starts_with(&from.prefix) && c.len() > from.prefix.len() => Some(c),
                Some(c) if c > from.prefix.as_str() => return Ok(page),
                _ => None,
            };
            let (candidates, more) = match self.candidates(native, &from, cursor, order).await? {
                Some(found) => found,
                // The backend listed out of byte order: it walks; list again accordingly.
                None => {
                    order = ListOrder::Walk;
                    self.set_list_order(order);
                    continue;
                }
            };
            let mut rest = candidates.into_iter().peekable();
            while page.objects.len() + page.common_prefixes.len() < limit && rest.peek().is_some() {
                let room = limit - page.objects.len() - page.common_prefixes.len();
                let batch: Vec<Candidate> = rest.by_ref().take(room).collect();
                from.cursor = batch.last().map(|c| c.name().to_owned());
                let read = futures::stream::iter(batch)
                    .map(|c| self.read_candidate(c, heads))
                    .buffered(LIST_HEADS)
                    .try_collect::<Vec<_>>()
                    .await?;
                for entry in read.into_iter().flatten() {
                    match entry {
                        Entry::Object(meta) => {
                            last_on_page = Some(meta.key.to_string());
                            page.objects.push(meta);
                        }
                        Entry::Prefix(p) => {
                            last_on_page = Some(p.clone());
                            page.common_prefixes.push(p);
                        }
                    }
                }
            }
            if page.objects.len() + page.common_prefixes.len() == limit {
                // Is there a next entry? Usually the first candidate left says so.
                for candidate in rest {
                    from.cursor = Some(candidate.name().to_owned());
                    if self.read_candidate(candidate, heads).await?.is_some() {
                        page.next_cursor = last_on_page;
                        return Ok(page);
                    }
                }
            }
            if !more {
                return Ok(page);
            }
        }
    }

    /// The entries after the cursor that may go on the page, sorted, and whether the backend
    /// may hold more after them. `None` when a response contradicted byte order while `order`
    /// is [`ListOrder::Bytes`].
    async fn candidates(
        &self,
        native: &dyn Native,
        opts: &ListOptions,
        cursor: Option<&str>,
        order: ListOrder,
    ) -> Result<Option<(Vec<Candidate>, bool)>> {
        let limit = opts.page_size();
        let base = self.blob_prefix("");
        let prefix = self.blob_prefix(&opts.prefix);
        let cursor_blob = cursor.map(|c| self.blob_prefix(c));
        let level = opts.delimiter == Some('/');
        let mut found: Vec<Candidate> = Vec::new();
        let start_after = match (order, cursor_blob.as_deref()) {
            (ListOrder::Walk, Some(c)) if !level => walk_start(c, prefix.len()),
            (_, c) => c.map(str::to_owned),
        };
        if let (ListOrder::Walk, true, Some(c)) = (order, level, cursor_blob.as_deref()) {
            // A walk's delimited `start-after` skips the directory named by the cursor and
            // those named by a stem of it followed by a character before `/` (`a/` for the
            // cursor `a-b`), which follow it in byte order: probe each.
            for dir in walk_skipped_dirs(c, prefix.len()) {
                self.probe_dir(native, &dir, &base, &mut found).await?;
            }
        }
        let mut start_after = start_after;
        let mut token: Option<String> = None;
        // One more than a page shows whether there is a next one; one more for the cursor's
        // own common prefix, which the backend lists again.
        let max = limit + 2;
        let more = loop {
            let request = ListRequest {
                prefix: &prefix,
                delimiter: opts.delimiter,
                start_after: start_after.as_deref(),
                token: token.as_deref(),
                max,
            };
            let listed = native.list(request).await?;
            let count = listed.blobs.len() + listed.prefixes.len();
            if order == ListOrder::Bytes && !in_byte_order(&listed) {
                return Ok(None);
            }
            let last = last_listed(&listed, order);
            // Entries are named by the one grouping rule ([`ListOptions::entry`]), whatever the
            // backend grouped (SeaweedFS groups a listing that starts inside a directory by
            // that directory).
            for blob in listed.blobs {
                let Some(key) = self.key_of(&blob.name) else {
                    continue;
                };
                if !opts.after_cursor(key.as_str()) {
                    continue;
                }
                let entry = opts.entry(key.as_str());
                if entry.len() < key.as_str().len() {
                    found.push(Candidate::Prefix(entry.to_owned()));
                } else {
                    found.push(Candidate::Object {
                        key,
                        size: blob.size,
                        larder: blob.larder,
                    });
                }
            }
            for p in listed.prefixes {
                let Some(rel) = p.strip_prefix(&base) else {
                    continue;
                };
                if rel.starts_with(&opts.prefix) {
                    let entry = opts.entry(rel);
                    if cursor.is_none_or(|c| entry > c) {
                        found.push(Candidate::Prefix(entry.to_owned()));
                    }
                }
            }
            token = listed.token;
            // SeaweedFS ends a full response without a token when the rest is in the
            // directory of its last name (`é/x` after `é`): a full response may have more.
            let full = order == ListOrder::Walk && count >= max;
            let Some(last) = last.filter(|_| token.is_some() || full) else {
                break false;
            };
            // Entries no unread one can precede.
            let bound = match order {
                ListOrder::Bytes => last.clone(),
                ListOrder::Walk => walk_bound(&last, prefix.len()).to_owned(),
            };
            let bound = bound.strip_prefix(&base).unwrap_or("").to_owned();
            let settled = found.iter().filter(|c| c.name() <= bound.as_str()).count();
            if settled > limit {
                found.retain(|c| c.name() <= bound.as_str());
                break true;
            }
            if token.is_none() {
                // Resume the walk after `last` by hand, into its directory.
                start_after = Some(if !level {
                    if last.ends_with('/') {
                        last
                    } else {
                        format!("{last}/")
                    }
                } else {
                    if !last.ends_with('/') {
                        let dir = format!("{last}/");
                        self.probe_dir(native, &dir, &base, &mut found).await?;
                    }
                    last
                });
            }
        };
        found.sort_by(|a, b| a.name().cmp(b.name()));
        found.dedup_by(|a, b| a.name() == b.name());
        Ok(Some((found, more)))
    }

    /// Adds the common prefix `dir` (a full blob name ending with `/`) to `found` if any blob
    /// is under it: one request for at most one entry.
    async fn probe_dir(
        &self,
        native: &dyn Native,
        dir: &str,
        base: &str,
        found: &mut Vec<Candidate>,
    ) -> Result<()> {
        let probe = ListRequest {
            prefix: dir,
            delimiter: Some('/'),
            start_after: None,
            token: None,
            max: 1,
        };
        let listed = native.list(probe).await?;
        if !listed.blobs.is_empty() || !listed.prefixes.is_empty() {
            if let Some(p) = dir.strip_prefix(base) {
                found.push(Candidate::Prefix(p.to_owned()));
            }
        }
        Ok(())
    }

    /// A candidate as a page entry: `None` for a blob that vanished, is foreign, unreadable or
    /// expired.
    async fn read_candidate(&self, candidate: Candidate, head: bool) -> Result<Option<Entry>> {
        match candidate {
            Candidate::Prefix(p) => Ok(Some(Entry::Prefix(p))),
            Candidate::Object { key, .. } if head => {
                Ok(self.list_entry(key).await?.map(Entry::Object))
            }
            Candidate::Object { key, size, larder } => {
                Ok(match metadata::decode(&key, size, larder.as_deref()) {
                    Ok(Some((meta, _))) if !meta.is_expired() => Some(Entry::Object(meta)),
                    Ok(_) | Err(_) => None,
                })
            }
        }
    }

    /// The flat listing of a bare `object_store` backend: every blob under the prefix's folder,
    /// headed, paged by [`paginate`].
    async fn list_flat(&self, opts: &ListOptions) -> Result<ListPage> {
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
        // Keys come in order: stop once one more entry than a page proves there is a next.
        let (mut seen, mut entries) = (Vec::new(), 0);
        let mut last_entry: Option<String> = None;
        while let Some(meta) = metas.try_next().await? {
            let entry = opts.entry(meta.key.as_str());
            if last_entry.as_deref() != Some(entry) {
                entries += 1;
                last_entry = Some(entry.to_owned());
            }
            if entries > opts.page_size() {
                break;
            }
            seen.push(meta);
        }
        let mut page = paginate(seen, opts);
        if entries > opts.page_size() {
            page.next_cursor = last_entry_of(&page);
        }
        Ok(page)
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
}

/// A page entry.
enum Entry {
    Object(Meta),
    Prefix(String),
}

/// The last entry of a page (objects and common prefixes are each in order).
fn last_entry_of(page: &ListPage) -> Option<String> {
    let object = page.objects.last().map(|m| m.key.as_str());
    let prefix = page.common_prefixes.last().map(String::as_str);
    object.max(prefix).map(str::to_owned)
}

/// Whether one response lists its blobs, and its common prefixes, in byte order.
fn in_byte_order(listed: &Listed) -> bool {
    listed.blobs.windows(2).all(|w| w[0].name < w[1].name)
        && listed.prefixes.windows(2).all(|w| w[0] < w[1])
}

/// Compares names in directory-walk order: `/` before every other character.
fn walk_cmp(a: &str, b: &str) -> CmpOrdering {
    let rank = |c: u8| if c == b'/' { 0u16 } else { u16::from(c) + 1 };
    a.bytes().map(rank).cmp(b.bytes().map(rank))
}

/// The last entry of a response in the backend's order: where the next response resumes.
fn last_listed(listed: &Listed, order: ListOrder) -> Option<String> {
    let blob = listed.blobs.last().map(|b| b.name.as_str());
    let prefix = listed.prefixes.last().map(String::as_str);
    let cmp = |a: &&str, b: &&str| match order {
        ListOrder::Bytes => a.cmp(b),
        ListOrder::Walk => walk_cmp(a, b),
    };
    blob.into_iter()
        .chain(prefix)
        .max_by(cmp)
        .map(str::to_owned)
}

/// In walk order, every entry not yet listed when `last` was is, in byte order, after `last` cut
/// before its first `/` past the prefix (its first `prefix_len` bytes): it follows `last` in the
/// walk, so it differs from `last` where `last` has a character after the `/` there, or else it
/// extends `last` up to one of its `/` (`a a/y` after `a/x`).
fn walk_bound(last: &str, prefix_len: usize) -> &str {
    match last.get(prefix_len..).and_then(|rest| rest.find('/')) {
        Some(i) => &last[..prefix_len + i],
        None => last,
    }
}

/// Where a flat listing in walk order starts for a cursor. A walk's `start-after` at a name
/// skips that name's directory, and a stem of the cursor followed by a character before `/`
/// names a directory that follows the cursor in byte order (`a/x` for the cursor `a-b`) but
/// precedes it in the walk. So the listing starts inside the directory named by the cursor cut
/// before the first such character past the prefix (its first `prefix_len` bytes), or by the
/// whole cursor: at `cut/`, which the walk lists from the directory's first entry on.
fn walk_start(cursor: &str, prefix_len: usize) -> Option<String> {
    let cut = cursor
        .char_indices()
        .find(|&(i, c)| i >= prefix_len && c < '/')
        .map_or(cursor.len(), |(i, _)| i);
    match &cursor[..cut] {
        // Cut at a prefix that is a directory: from its start (SeaweedFS lists nonsense after
        // the directory it lists).
        stem if cut <= prefix_len && (stem.is_empty() || stem.ends_with('/')) => None,
        stem if stem.ends_with('/') => Some(stem.to_owned()),
        stem => Some(format!("{stem}/")),
    }
}

/// The directories a walk's delimited `start-after` at `cursor` skips although they follow it
/// in byte order: the cursor's own (when it names an object), and each stem of the cursor
/// (past the prefix) followed by a character before `/`, with `/` appended.
fn walk_skipped_dirs(cursor: &str, prefix_len: usize) -> Vec<String> {
    // Only stems of the cursor's own entry at this level (before its first `/`).
    let entry_end = cursor
        .get(prefix_len..)
        .and_then(|rest| rest.find('/'))
        .map_or(cursor.len(), |i| prefix_len + i);
    let mut dirs: Vec<String> = cursor
        .char_indices()
        .filter(|&(i, c)| {
            i >= prefix_len && i < entry_end && c < '/' && !cursor[..i].ends_with('/') && i > 0
        })
        .map(|(i, _)| format!("{}/", &cursor[..i]))
        .collect();
    if entry_end == cursor.len() {
        // An object's own directory (a common prefix cursor already covers its own).
        dirs.push(format!("{cursor}/"));
    }
    dirs
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

    /// A backend listing like S3 over an in-memory bucket, in byte or in walk order, with
    /// `start-after` taken in its own order, as SeaweedFS does; it counts its requests.
    #[derive(Debug)]
    struct Lister {
        blobs: Arc<InMemory>,
        order: ListOrder,
        requests: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Native for Lister {
        fn listing(&self) -> Listing {
            Listing::Names
        }

        async fn list_order(&self) -> Result<ListOrder> {
            Ok(self.order)
        }

        async fn list(&self, r: ListRequest<'_>) -> Result<Listed> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let cmp = |a: &str, b: &str| match self.order {
                ListOrder::Bytes => a.cmp(b),
                ListOrder::Walk => walk_cmp(a, b),
            };
            let mut names: Vec<(String, u64)> = self
                .blobs
                .list(None)
                .map_ok(|o| (o.location.to_string(), o.size))
                .try_collect()
                .await
                .map_err(map_err)?;
            names.retain(|(n, _)| n.starts_with(r.prefix));
            names.retain(|(n, _)| match (self.order, r.start_after) {
                (_, None) => true,
                (ListOrder::Bytes, Some(a)) => n.as_str() > a,
                // As SeaweedFS: after the name and outside its directory; delimited, a name
                // ending in `/` is its directory.
                (ListOrder::Walk, Some(a)) => {
                    let a = match r.delimiter {
                        Some(_) => a.trim_end_matches('/'),
                        None => a,
                    };
                    walk_cmp(n, a).is_gt() && !n.starts_with(&format!("{a}/"))
                }
            });
            names.sort_by(|a, b| cmp(&a.0, &b.0));
            // Entries in order: a group of keys becomes one common prefix where it starts.
            let mut entries: Vec<(String, Option<u64>)> = Vec::new();
            for (name, size) in names {
                let group = r.delimiter.and_then(|d| {
                    let rest = &name[r.prefix.len()..];
                    rest.find(d)
                        .map(|i| name[..r.prefix.len() + i + d.len_utf8()].to_owned())
                });
                match group {
                    Some(g) if entries.last().is_some_and(|(l, s)| *l == g && s.is_none()) => {}
                    Some(g) => entries.push((g, None)),
                    None => entries.push((name, Some(size))),
                }
            }
            let from: usize = r.token.map_or(0, |t| t.parse().unwrap());
            let to = (from + r.max).min(entries.len());
            // As SeaweedFS: no token when the rest starts inside the last name's directory.
            let rest_inside_last = self.order == ListOrder::Walk
                && to > from
                && to < entries.len()
                && entries[to]
                    .0
                    .starts_with(&format!("{}/", entries[to - 1].0));
            let mut listed = Listed {
                token: (to < entries.len() && !rest_inside_last).then(|| to.to_string()),
                ..Default::default()
            };
            for (name, size) in entries.drain(from..to) {
                match size {
                    Some(size) => listed
                        .blobs
                        .push(crate::drivers::objstore::native::ListedBlob {
                            name,
                            size,
                            larder: None,
                        }),
                    None => listed.prefixes.push(name),
                }
            }
            Ok(listed)
        }

        fn conditional_delete(&self) -> bool {
            false
        }

        async fn delete(
            &self,
            _: &object_store::path::Path,
            _: &crate::drivers::objstore::native::Guard,
        ) -> std::result::Result<(), crate::drivers::objstore::native::NativeError> {
            Err(crate::Error::unsupported("delete").into())
        }

        async fn begin_upload(
            &self,
            _: &object_store::path::Path,
            _: &crate::drivers::objstore::native::BlobHeaders,
        ) -> Result<String> {
            Err(crate::Error::unsupported("multipart"))
        }

        fn parts(&self) -> &dyn object_store::multipart::MultipartStore {
            self.blobs.as_ref()
        }

        async fn complete_upload(
            &self,
            _: crate::drivers::objstore::native::Uploaded<'_>,
            _: &crate::drivers::objstore::native::Guard,
        ) -> std::result::Result<(), crate::drivers::objstore::native::NativeError> {
            Err(crate::Error::unsupported("multipart").into())
        }

        async fn abort_upload(&self, _: &object_store::path::Path, _: &str) {}
    }

    fn listed_store(order: ListOrder) -> (ObjStore, Arc<Lister>) {
        let blobs = Arc::new(InMemory::new());
        let lister = Arc::new(Lister {
            blobs: blobs.clone(),
            order,
            requests: Default::default(),
        });
        let store = ObjStore::new("test", blobs, "p", 1 << 20)
            .unwrap()
            .with_native(lister.clone());
        (store, lister)
    }

    #[test]
    fn walk_order_puts_the_delimiter_first() {
        let mut names = vec!["a-b", "a/x", "a a/y", "a", "a/z/1", "a.c", "a0"];
        names.sort_by(|a, b| walk_cmp(a, b));
        assert_eq!(names, ["a", "a/x", "a/z/1", "a a/y", "a-b", "a.c", "a0"]);
        assert_eq!(walk_bound("p/a/x", 2), "p/a");
        assert_eq!(walk_bound("p/a-b", 2), "p/a-b");
        assert_eq!(walk_start("p/a-b", 2).as_deref(), Some("p/a/"));
        assert_eq!(walk_start("p/ab", 2).as_deref(), Some("p/ab/"));
        assert_eq!(walk_start("p/a/", 2).as_deref(), Some("p/a/"));
        assert_eq!(walk_start("p/-a", 2), None);
        assert_eq!(walk_start("-a", 0), None);
        assert_eq!(
            walk_skipped_dirs("p/a-b.c", 2),
            ["p/a/", "p/a-b/", "p/a-b.c/"]
        );
        assert_eq!(walk_skipped_dirs("p/a-b/", 2), ["p/a/"]);
        assert_eq!(walk_skipped_dirs("p/-b", 2), ["p/-b/"]);
        assert_eq!(walk_skipped_dirs("p/a-b", 3), ["p/a/", "p/a-b/"]);
        assert_eq!(walk_start("p/a-b", 3).as_deref(), Some("p/a/"));
    }

    /// Every page equals the reference store's, whichever order the backend lists in.
    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn native_pages_match_the_reference_store_in_either_order() {
        for order in [ListOrder::Bytes, ListOrder::Walk] {
            let (store, _) = listed_store(order);
            crate::conformance::listing_matches_reference_backend_prefixes(&store).await;
        }
    }

    /// A delimiter listing of 2,000 keys under 20 prefixes and 100 plain keys: one request a
    /// page, and only the objects on a page are read.
    #[tokio::test]
    async fn a_delimited_listing_is_one_request_a_page() {
        use crate::StoreExt;
        let (store, lister) = listed_store(ListOrder::Bytes);
        for d in 0..20 {
            for k in 0..100 {
                let key = Key::new(format!("d{d:02}/k{k:03}")).unwrap();
                store.put_bytes(&key, "x".into()).await.unwrap();
            }
        }
        for k in 0..100 {
            let key = Key::new(format!("k{k:03}")).unwrap();
            store.put_bytes(&key, "x".into()).await.unwrap();
        }
        store.list_order(lister.as_ref()).await.unwrap();
        lister.requests.store(0, Ordering::SeqCst);
        let mut opts = ListOptions {
            delimiter: Some('/'),
            limit: Some(30),
            ..Default::default()
        };
        let (mut pages, mut entries) = (0, 0);
        loop {
            let page = store.list_page(&opts).await.unwrap();
            pages += 1;
            entries += page.objects.len() + page.common_prefixes.len();
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(entries, 120);
        assert_eq!(pages, 4);
        assert_eq!(lister.requests.load(Ordering::SeqCst), pages);
    }

    /// A backend that claims byte order but walks is caught by the order of what it lists,
    /// and the listing is then made in walk order.
    #[tokio::test]
    async fn a_walk_in_disguise_is_caught() {
        use crate::StoreExt;
        let (store, _) = listed_store(ListOrder::Walk);
        store.set_list_order(ListOrder::Bytes);
        for n in ["a/x", "a-b", "b"] {
            store
                .put_bytes(&Key::new(n).unwrap(), "x".into())
                .await
                .unwrap();
        }
        let page = store.list_page(&ListOptions::default()).await.unwrap();
        let keys: Vec<_> = page.objects.iter().map(|m| m.key.to_string()).collect();
        assert_eq!(keys, ["a-b", "a/x", "b"]);
        assert_eq!(store.list_order.load(Ordering::Relaxed), ORDER_WALK);
    }
}
