//! Routing key prefixes to different stores.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::body::Body;
use crate::capabilities::{Capabilities, ConditionSupport};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Routes each key to the store mounted at its longest matching prefix (the `""` mount, if
/// any, takes everything else). Keys are passed unchanged. A listing merges the mounts in key
/// order; keys a store holds under a longer mount's prefix are hidden (they are unreachable).
#[derive(Debug, Clone)]
pub struct MountStore {
    /// Longest prefix first.
    mounts: Vec<(String, Arc<dyn Store>)>,
}

impl MountStore {
    /// Mounts `(prefix, store)` pairs; prefixes must be distinct.
    pub fn new(mounts: Vec<(String, Arc<dyn Store>)>) -> Result<Self> {
        let mut mounts = mounts;
        mounts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for w in mounts.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::InvalidInput(format!(
                    "prefix {:?} is mounted twice",
                    w[0].0
                )));
            }
        }
        for (p, _) in &mounts {
            crate::key::validate_prefix(p)?;
        }
        Ok(MountStore { mounts })
    }

    /// The index of the mount serving `name` (a key or a key prefix).
    fn route_index(&self, name: &str) -> Option<usize> {
        self.mounts.iter().position(|(p, _)| name.starts_with(p))
    }

    fn route(&self, key: &Key) -> Result<&Arc<dyn Store>> {
        self.route_index(key.as_str())
            .map(|i| &self.mounts[i].1)
            .ok_or_else(|| Error::InvalidInput(format!("no store is mounted for key {key}")))
    }
}

/// One listing entry from one mount.
enum Entry {
    Object(Meta),
    Prefix(String),
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::Object(m) => m.key.as_str(),
            Entry::Prefix(p) => p,
        }
    }
}

/// A mount's listing, fetched page by page as the merge consumes it.
struct Source {
    mount: usize,
    buf: VecDeque<Entry>,
    cursor: Option<String>,
    done: bool,
}

#[async_trait]
impl Store for MountStore {
    /// Every mount, concurrently; the first failing one is named (`mount "cache/" (memory)`).
    async fn check(&self) -> Result<()> {
        let results = futures::future::join_all(self.mounts.iter().map(|(_, s)| s.check())).await;
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                let (prefix, store) = &self.mounts[i];
                let part = format!("mount {prefix:?} ({})", store.capabilities().name);
                return Err(crate::PartError::wrap(part, e));
            }
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        // What every mount can do: a caller cannot know which mount a future key lands in.
        let mut caps = match self.mounts.first() {
            Some((_, s)) => s.capabilities(),
            None => return Capabilities::full("mount", crate::AtomicScope::None, false),
        };
        caps.name = "mount";
        let and = |a: ConditionSupport, b: ConditionSupport| ConditionSupport {
            if_match: a.if_match && b.if_match,
            if_match_any: a.if_match_any && b.if_match_any,
            if_none_match_any: a.if_none_match_any && b.if_none_match_any,
            if_none_match: a.if_none_match && b.if_none_match,
            if_unmodified_since: a.if_unmodified_since && b.if_unmodified_since,
        };
        for (_, s) in &self.mounts[1..] {
            let c = s.capabilities();
            caps.atomic_scope = caps.atomic_scope.min(c.atomic_scope);
            caps.put_conditions = and(caps.put_conditions, c.put_conditions);
            caps.delete_conditions = and(caps.delete_conditions, c.delete_conditions);
            caps.ttl &= c.ttl;
            caps.list_delimiter &= c.list_delimiter;
            caps.persistent &= c.persistent;
            caps.max_object_size = match (caps.max_object_size, c.max_object_size) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        caps
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        self.route(key)?.head(key, opts).await
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        self.route(key)?.get(key, opts).await
    }

    /// The mount's own answer now, if it has one.
    fn get_now(&self, key: &Key, opts: &GetOptions) -> Option<Result<GetResult>> {
        match self.route(key) {
            Ok(store) => store.get_now(key, opts),
            Err(e) => Some(Err(e)),
        }
    }

    /// The mount's own answer, if it has one (none for a key no mount takes).
    fn get_version_now(&self, key: &Key, etag: &ETag) -> Option<Bytes> {
        self.route(key).ok()?.get_version_now(key, etag)
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.route(key)?.put(key, body, opts).await
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.route(key)?.delete(key, opts).await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let limit = opts.page_size();
        // Mounts that can hold keys under the prefix.
        let mut sources: Vec<Source> = (0..self.mounts.len())
            .filter(|&i| {
                let p = &self.mounts[i].0;
                p.starts_with(&opts.prefix) || opts.prefix.starts_with(p.as_str())
            })
            .map(|mount| Source {
                mount,
                buf: VecDeque::new(),
                cursor: opts.cursor.clone(),
                done: false,
            })
            .collect();
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        let mut taken = 0;
        loop {
            for s in sources.iter_mut().filter(|s| s.buf.is_empty() && !s.done) {
                let store = &self.mounts[s.mount].1;
                let mut o = opts.clone();
                o.cursor = s.cursor.clone();
                let p = store.list(o).await?;
                s.done = p.next_cursor.is_none();
                s.cursor = p.next_cursor;
                // Each page is in key order within its kind; merge its two lists by name.
                let mut entries: Vec<Entry> = p
                    .objects
                    .into_iter()
                    .map(Entry::Object)
                    .chain(p.common_prefixes.into_iter().map(Entry::Prefix))
                    .collect();
                entries.sort_by(|a, b| a.name().cmp(b.name()));
                s.buf = entries.into();
            }
            // The smallest next name among all mounts.
            let Some(si) = (0..sources.len())
                .filter(|&i| !sources[i].buf.is_empty())
                .min_by(|&a, &b| sources[a].buf[0].name().cmp(sources[b].buf[0].name()))
            else {
                page.next_cursor = None;
                return Ok(page);
            };
            if taken == limit {
                page.next_cursor = last;
                return Ok(page);
            }
            let mount = sources[si].mount;
            let entry = sources[si].buf.pop_front().expect("non-empty");
            let name = entry.name().to_owned();
            // Hide what another mount owns: an object routed elsewhere, or a common prefix
            // wholly inside a longer mount.
            let owned = match &entry {
                Entry::Object(_) => self.route_index(&name) == Some(mount),
                Entry::Prefix(p) => self.route_index(p).is_none_or(|r| {
                    r == mount || self.mounts[r].0.len() <= self.mounts[mount].0.len()
                }),
            };
            // A common prefix several mounts share appears once.
            if !owned || last.as_deref() == Some(name.as_str()) {
                continue;
            }
            match entry {
                Entry::Object(m) => page.objects.push(m),
                Entry::Prefix(p) => page.common_prefixes.push(p),
            }
            last = Some(name);
            taken += 1;
        }
    }
}
