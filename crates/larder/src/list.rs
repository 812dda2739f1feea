//! Listing: options, pages, and the one paging/grouping routine drivers share.

use crate::error::Result;
use crate::key::validate_prefix;
use crate::meta::Meta;

/// Default and largest page size.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// Options of [`Store::list`](crate::Store::list).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use larder::drivers::memory::MemoryStore;
/// use larder::{Key, ListOptions, Store, StoreExt};
///
/// let store = MemoryStore::new();
/// for name in ["photos/2025/a.jpg", "photos/2026/b.jpg", "photos/index.html"] {
///     store.put_bytes(&Key::new(name)?, "x".into()).await?;
/// }
/// // One directory level: objects directly under photos/, and the "subdirectories".
/// let page = store
///     .list(ListOptions {
///         delimiter: Some('/'),
///         ..ListOptions::prefix("photos/")
///     })
///     .await?;
/// assert_eq!(page.common_prefixes, ["photos/2025/", "photos/2026/"]);
/// assert_eq!(page.objects[0].key.as_str(), "photos/index.html");
/// // Pages of at most 2 entries, resumed from the cursor.
/// let first = store
///     .list(ListOptions { limit: Some(2), ..ListOptions::prefix("photos/") })
///     .await?;
/// let rest = store
///     .list(ListOptions { cursor: first.next_cursor, ..ListOptions::prefix("photos/") })
///     .await?;
/// assert_eq!((first.objects.len(), rest.objects.len()), (2, 1));
/// assert!(rest.next_cursor.is_none());
/// # Ok::<(), larder::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys that start with this string.
    pub prefix: String,
    /// Group keys that contain this character after the prefix into common prefixes (usually
    /// `/`, for a directory-like listing).
    pub delimiter: Option<char>,
    /// Entries per page (objects plus common prefixes); at most [`DEFAULT_PAGE_SIZE`].
    pub limit: Option<usize>,
    /// Resume after this cursor, taken from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl ListOptions {
    /// All keys under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        ListOptions {
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Checks the prefix.
    pub fn validate(&self) -> Result<()> {
        validate_prefix(&self.prefix)
    }

    /// The effective page size.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .clamp(1, DEFAULT_PAGE_SIZE)
    }

    /// Whether `key` belongs on a page after the cursor: it is under the prefix, and the entry
    /// it appears as (its key, or its common prefix) sorts after the cursor. The rule
    /// [`paginate`] pages by, for drivers that filter keys before fetching their metadata.
    pub fn after_cursor(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && self
                .cursor
                .as_deref()
                .is_none_or(|c| match self.entry_name(key) {
                    Entry::Object(name) | Entry::Prefix(name) => name > c,
                })
    }

    /// The entry an object appears as: its key, or its common prefix under the delimiter.
    fn entry_name<'a>(&self, key: &'a str) -> Entry<'a> {
        if let Some(d) = self.delimiter {
            if let Some(pos) = key[self.prefix.len()..].find(d) {
                let end = self.prefix.len() + pos + d.len_utf8();
                return Entry::Prefix(&key[..end]);
            }
        }
        Entry::Object(key)
    }
}

enum Entry<'a> {
    Object(&'a str),
    Prefix(&'a str),
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<Meta>,
    /// Common prefixes (with their trailing delimiter), in order, when a delimiter was given.
    pub common_prefixes: Vec<String>,
    /// Pass this as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Builds one page from objects in ascending key order: those under the prefix and after the
/// cursor are grouped by the delimiter and cut at the page size. Drivers give it whatever scan
/// their backend does cheaply (all keys, or keys after the cursor); it filters the rest and
/// skips expired objects.
pub fn paginate(objects: impl IntoIterator<Item = Meta>, opts: &ListOptions) -> ListPage {
    let limit = opts.page_size();
    let now = std::time::SystemTime::now();
    let mut page = ListPage::default();
    let mut last: Option<String> = opts.cursor.clone();
    let mut count = 0;
    for meta in objects {
        let key = meta.key.as_str();
        if !key.starts_with(&opts.prefix) || meta.is_expired_at(now) {
            continue;
        }
        let name = match opts.entry_name(key) {
            Entry::Object(k) | Entry::Prefix(k) => k,
        };
        if last.as_deref().is_some_and(|l| name <= l) {
            continue;
        }
        if count == limit {
            page.next_cursor = last;
            return page;
        }
        match opts.entry_name(key) {
            Entry::Prefix(p) => page.common_prefixes.push(p.to_owned()),
            Entry::Object(_) => page.objects.push(meta.clone()),
        }
        last = Some(name.to_owned());
        count += 1;
    }
    page
}

/// Where a [`scan_page`] batch starts: after a key, or at a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanFrom {
    /// Keys strictly greater than this.
    After(String),
    /// Keys greater than or equal to this.
    At(String),
}

/// Builds one page for a backend that can cheaply return, in key order, a batch of live objects
/// whose keys are in a range (an SQL index scan). `fetch(from, end, n)` returns at most `n`
/// objects with keys from `from` and below `end` (`None`: no upper bound). The scan reads
/// batches until the page is full, and jumps over each common prefix instead of reading the keys
/// under it; [`paginate`] then cuts the page.
pub async fn scan_page<F, Fut>(opts: &ListOptions, mut fetch: F) -> Result<ListPage>
where
    F: FnMut(ScanFrom, Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Meta>>>,
{
    let limit = opts.page_size();
    let end = successor(&opts.prefix);
    let mut from = match &opts.cursor {
        Some(c) if *c >= opts.prefix => ScanFrom::After(c.clone()),
        _ => ScanFrom::At(opts.prefix.clone()),
    };
    if let (ScanFrom::After(c), Some(d)) = (&from, opts.delimiter) {
        if c.ends_with(d) {
            // The cursor is a common prefix: the next entry is past everything under it.
            match successor(c) {
                Some(next) => from = ScanFrom::At(next),
                None => return Ok(ListPage::default()),
            }
        }
    }
    let mut rows: Vec<Meta> = Vec::new();
    let mut entries = 0usize;
    let mut last_entry: Option<String> = None;
    'scan: loop {
        let batch = fetch(from.clone(), end.clone(), limit + 1).await?;
        let exhausted = batch.len() <= limit;
        for meta in batch {
            let key = meta.key.as_str().to_owned();
            let group = match opts.entry_name(&key) {
                Entry::Prefix(p) => Some(p.to_owned()),
                Entry::Object(_) => None,
            };
            let entry = group.clone().unwrap_or_else(|| key.clone());
            if last_entry.as_deref() != Some(entry.as_str()) {
                entries += 1;
                last_entry = Some(entry);
            }
            rows.push(meta);
            if entries > limit {
                break 'scan;
            }
            if let Some(g) = group {
                // Everything else under this common prefix is one entry: jump past it.
                match successor(&g) {
                    Some(next) => from = ScanFrom::At(next),
                    None => break 'scan,
                }
                continue 'scan;
            }
            from = ScanFrom::After(key);
        }
        if exhausted {
            break;
        }
    }
    Ok(paginate(rows, opts))
}

/// The smallest string greater than every string that starts with `prefix` (`None`: there is
/// none). UTF-8 byte order is code point order, so this bounds a prefix in any byte-ordered index.
pub fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;
    use crate::key::Key;

    fn metas(keys: &[&str]) -> Vec<Meta> {
        keys.iter()
            .map(|k| Meta {
                key: Key::new(*k).unwrap(),
                etag: ETag::of(b""),
                size: 0,
                last_modified: std::time::SystemTime::now(),
                expires_at: None,
                content_type: None,
                metadata: Default::default(),
            })
            .collect()
    }

    fn names(p: &ListPage) -> Vec<String> {
        let mut v: Vec<String> = p.objects.iter().map(|m| m.key.to_string()).collect();
        v.extend(p.common_prefixes.iter().cloned());
        v.sort();
        v
    }

    #[test]
    fn successor_bounds_every_extension() {
        assert_eq!(successor(""), None);
        assert_eq!(successor("a/").as_deref(), Some("a0"));
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(
            successor("a\u{D7FF}").as_deref(),
            Some("a\u{E000}"),
            "surrogates skipped"
        );
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        for s in ["a/", "ab", "x\u{10FFFF}y"] {
            let next = successor(s).unwrap();
            for ext in ["", "\u{0}", "zzz", "\u{10FFFF}\u{10FFFF}"] {
                assert!(format!("{s}{ext}") < next);
            }
        }
    }

    #[test]
    fn pages_and_groups() {
        let all = metas(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let mut opts = ListOptions {
            delimiter: Some('/'),
            limit: Some(2),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = paginate(all.clone(), &opts);
            seen.extend(names(&page));
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["a/", "b", "c/", "d"]);

        let opts = ListOptions {
            prefix: "c/".into(),
            delimiter: Some('/'),
            ..Default::default()
        };
        assert_eq!(names(&paginate(all.clone(), &opts)), ["c/x/", "c/y"]);
        let opts = ListOptions::prefix("a");
        assert_eq!(names(&paginate(all, &opts)), ["a/1", "a/2"]);
    }
}
