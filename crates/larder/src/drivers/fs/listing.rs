//! Listing: a walk of the directories below the prefix that stops at every directory the
//! delimiter folds into one common prefix, then the headers of only what can be on the page.
//! Grouping and paging are [`ListOptions::common_prefix`], [`ListOptions::after_cursor`] and
//! [`paginate`], shared with every driver.

use std::fs::{self, DirEntry, ReadDir};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::Meta;

use super::names::{decode_segment, encode_segment, OBJECT_SUFFIX};
use super::record::{read_record, HEADER_PROBE};
use super::{io_context, Inner, MAX_ENCODED_SEGMENT};

/// A listing schedules the removal of at most this many expired objects.
const MAX_REAPS_PER_LIST: usize = 64;

/// What the walk found below the prefix's directory.
enum Found {
    /// An object file.
    Object { key: String, path: PathBuf },
    /// A directory all of whose keys (they start with `key`, which ends in `/`) fold into one
    /// common prefix: not walked, only searched for one live object when it reaches the page.
    Folded { key: String, path: PathBuf },
}

impl Found {
    /// Its key, or the key prefix of everything below it: the order entries are paged in.
    fn key(&self) -> &str {
        match self {
            Found::Object { key, .. } | Found::Folded { key, .. } => key,
        }
    }
}

impl Inner {
    /// One page, and the keys of expired objects met on the way (to be reaped).
    pub(super) fn list(&self, opts: &ListOptions) -> Result<(ListPage, Vec<Key>)> {
        let prefix = opts.prefix.as_str();
        let (dirs, partial) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let mut dir = self.objects.clone();
        let mut key_prefix = String::new();
        if !dirs.is_empty() {
            for seg in dirs.split('/') {
                let name = encode_segment(seg);
                if name.len() > MAX_ENCODED_SEGMENT {
                    return Ok((ListPage::default(), Vec::new())); // no key can be under it
                }
                dir.push(name);
                key_prefix.push_str(seg);
                key_prefix.push('/');
            }
        }
        let mut found = Vec::new();
        walk(&dir, &key_prefix, Some(partial), opts, &mut found)?;
        // Every key below a folded directory sorts after its key prefix and before any other
        // entry that sorts after that prefix, so this is the order of the keys themselves.
        found.sort_unstable_by(|a, b| a.key().cmp(b.key()));

        let mut error = None;
        let mut live_group: Option<String> = None;
        let mut expired = Vec::new();
        let mut entries = found.into_iter();
        let metas = std::iter::from_fn(|| {
            for entry in entries.by_ref() {
                if !opts.after_cursor(entry.key()) {
                    continue;
                }
                let group = opts.common_prefix(entry.key()).map(str::to_owned);
                if group.is_some() && group == live_group {
                    continue; // already represented on this page
                }
                let live = match entry {
                    Found::Object { key, path } => match Key::new(key) {
                        Ok(key) => read_live(&path, key, &mut expired),
                        Err(_) => continue,
                    },
                    Found::Folded { key, path } => first_live(&path, &key, &mut expired),
                };
                match live {
                    Ok(Some(meta)) => {
                        if group.is_some() {
                            live_group = group;
                        }
                        return Some(meta);
                    }
                    Ok(None) => continue, // expired, deleted since the walk, or empty
                    Err(e) => {
                        error = Some(e);
                        return None;
                    }
                }
            }
            None
        });
        let page = paginate(metas, opts);
        match error {
            Some(e) => Err(e),
            None => Ok((page, expired)),
        }
    }
}

/// The metadata of the object at `path` if it is live; an expired one is noted for reaping.
fn read_live(path: &Path, key: Key, expired: &mut Vec<Key>) -> Result<Option<Meta>> {
    match read_record(path, &key, HEADER_PROBE)? {
        None => Ok(None),
        Some(record) if record.meta.is_expired() => {
            if expired.len() < MAX_REAPS_PER_LIST {
                expired.push(key);
            }
            Ok(None)
        }
        Some(record) => Ok(Some(record.meta)),
    }
}

/// Some live object below the folded directory `dir` (whose keys start with `key_prefix`),
/// depth first in directory order, stopping at the first: all of them stand for the same
/// common prefix, so which one does not matter.
fn first_live(dir: &Path, key_prefix: &str, expired: &mut Vec<Key>) -> Result<Option<Meta>> {
    let Some(entries) = read_dir(dir)? else {
        return Ok(None);
    };
    for entry in entries {
        let Some((segment, is_object, path)) = name_of(entry, dir)? else {
            continue;
        };
        let key = format!("{key_prefix}{segment}");
        let live = if is_object {
            match Key::new(key) {
                Ok(key) => read_live(&path, key, expired)?,
                Err(_) => None,
            }
        } else {
            first_live(&path, &format!("{key}/"), expired)?
        };
        if live.is_some() {
            return Ok(live);
        }
    }
    Ok(None)
}

/// Collects the object files under `dir` (whose keys start with `key_prefix`), keeping at the
/// first level only names that start with `partial`. A subdirectory whose keys all fold into
/// one common prefix is collected, not walked; one whose keys all sort at or before the
/// cursor is skipped.
fn walk(
    dir: &Path,
    key_prefix: &str,
    partial: Option<&str>,
    opts: &ListOptions,
    out: &mut Vec<Found>,
) -> Result<()> {
    let Some(entries) = read_dir(dir)? else {
        return Ok(());
    };
    for entry in entries {
        let Some((segment, is_object, path)) = name_of(entry, dir)? else {
            continue;
        };
        if partial.is_some_and(|p| !segment.starts_with(p)) {
            continue;
        }
        let key = format!("{key_prefix}{segment}");
        if is_object {
            out.push(Found::Object { key, path });
            continue;
        }
        let sub = format!("{key}/");
        if opts.common_prefix(&sub).is_some() {
            out.push(Found::Folded { key: sub, path });
            continue;
        }
        // Every key under `sub` starts with it; if the cursor is past `sub` without starting
        // with it, it is past all of them.
        let cursor = opts.cursor.as_deref();
        if cursor.is_some_and(|c| c > sub.as_str() && !c.starts_with(sub.as_str())) {
            continue;
        }
        walk(&path, &sub, None, opts, out)?;
    }
    Ok(())
}

/// The entries of `dir`; `None` when it is missing (never created, or removed by a concurrent
/// delete) or not a directory.
fn read_dir(dir: &Path) -> Result<Option<ReadDir>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_context(e, "listing", dir)),
    }
}

/// The key segment an entry of `dir` stands for, whether it is an object file (else a
/// directory), and its path; `None` for anything the store did not make.
fn name_of(entry: io::Result<DirEntry>, dir: &Path) -> Result<Option<(String, bool, PathBuf)>> {
    let entry = match entry {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_context(e, "listing", dir)),
    };
    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
        return Ok(None);
    };
    let Ok(file_type) = entry.file_type() else {
        return Ok(None);
    };
    let (encoded, is_object) = match name.strip_suffix(OBJECT_SUFFIX) {
        Some(stem) if file_type.is_file() => (stem, true),
        None if file_type.is_dir() => (name.as_str(), false),
        _ => return Ok(None),
    };
    match decode_segment(encoded) {
        Some(segment) => Ok(Some((segment, is_object, entry.path()))),
        None => {
            tracing::debug!("fs store: ignoring foreign file {:?}", entry.path());
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(objects: &Path, prefix: &str, delimiter: Option<char>) -> Vec<String> {
        let opts = ListOptions {
            prefix: prefix.into(),
            delimiter,
            ..Default::default()
        };
        let (dir, key_prefix, partial) = match prefix.rsplit_once('/') {
            Some((d, p)) => (objects.join(d), format!("{d}/"), p),
            None => (objects.to_path_buf(), String::new(), prefix),
        };
        let mut out = Vec::new();
        walk(&dir, &key_prefix, Some(partial), &opts, &mut out).unwrap();
        let mut names: Vec<String> = out
            .iter()
            .map(|f| match f {
                Found::Object { key, .. } => key.clone(),
                Found::Folded { key, .. } => format!("folded {key}"),
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_walk_stops_at_directories_the_delimiter_folds() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path();
        for file in ["p/a@", "p/q/b@", "p/q/r/c@", "pq@", "x-y/z@", "x@"] {
            let path = objects.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"").unwrap();
        }
        assert_eq!(
            walked(objects, "", Some('/')),
            ["folded p/", "folded x-y/", "pq", "x"]
        );
        assert_eq!(walked(objects, "p/", Some('/')), ["folded p/q/", "p/a"]);
        assert_eq!(walked(objects, "p/q", Some('/')), ["folded p/q/"]);
        // Another delimiter folds only the directories whose name holds it after the prefix.
        assert_eq!(
            walked(objects, "", Some('-')),
            ["folded x-y/", "p/a", "p/q/b", "p/q/r/c", "pq", "x"]
        );
        assert_eq!(
            walked(objects, "", None),
            ["p/a", "p/q/b", "p/q/r/c", "pq", "x", "x-y/z"]
        );
    }
}
