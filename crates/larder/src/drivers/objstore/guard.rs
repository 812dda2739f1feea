//! The guard protocol: a write heads the blob, decides with [`Preconditions::evaluate_write`],
//! and is then sent with the backend's own condition on the version it saw ([`Guard`]):
//! `If-None-Match: *` when there was no blob, `If-Match: <backend ETag>` when there was one. A
//! refusal (412/409) means the blob changed in between: decide again from a fresh head.
//!
//! Conditional requests are sent once. When the outcome is unknown (a timeout, a 5xx), the
//! blob's write id ([`super::metadata`]) tells whether this write landed ([`settle`]); a refusal
//! that answers a retry of a write of ours that landed (a layer below us retried it) is
//! recognised the same way ([`decide`] with `refused`).

use std::time::SystemTime;

use object_store::ObjectMeta;

use super::metadata::{self, foreign};
use super::native::Guard;
use super::{not_found, ObjStore};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::meta::Meta;
use crate::precondition::Preconditions;

/// A blob as a head saw it: the backend's view, and Larder's metadata (`None`: foreign blob).
pub(crate) struct Blob {
    pub backend: ObjectMeta,
    pub meta: Option<Meta>,
    pub write_id: String,
}

/// What a head decided about a guarded write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This write already landed (a refusal answered a retry of it); `created` as first decided.
    Landed { created: bool },
    /// Write with this guard.
    Write {
        guard: Guard,
        /// The backend version beside the ETag (for `object_store`'s `UpdateVersion`).
        version: Option<String>,
        created: bool,
        /// The Last-Modified of the version the write would replace (for
        /// [`Meta::next_version`](crate::meta::Meta::next_version)).
        replaces: Option<SystemTime>,
    },
}

/// Decides a guarded write of `key` from `blob`, the head just taken. `refused` is `created` of
/// the last attempt the backend refused, if any: if the blob is that write's, the refusal
/// answered a retry of a write that landed.
pub(crate) fn decide(
    key: &Key,
    blob: Option<Blob>,
    preconditions: &Preconditions,
    this_write: &str,
    refused: Option<bool>,
) -> Result<Decision> {
    let Some(blob) = blob else {
        preconditions.evaluate_write(None)?;
        return Ok(Decision::Write {
            guard: Guard::Absent,
            version: None,
            created: true,
            replaces: None,
        });
    };
    let m = blob.meta.ok_or_else(|| foreign(key))?;
    if let Some(created) = refused.filter(|_| blob.write_id == this_write) {
        return Ok(Decision::Landed { created });
    }
    // An expired object is absent, to conditions too; the guard still names the dead blob.
    let current = (!m.is_expired()).then_some(&m);
    preconditions.evaluate_write(current)?;
    let etag = blob.backend.e_tag.ok_or_else(|| {
        Error::backend(format!(
            "{key}: the backend gave no ETag, so the write cannot be guarded"
        ))
    })?;
    Ok(Decision::Write {
        guard: Guard::Match(etag),
        version: blob.backend.version,
        created: current.is_none(),
        replaces: Some(m.last_modified),
    })
}

/// The outcome of a guarded write of `key` that failed with `error`, given `after`, the blob
/// read since: a retryable error (outcome unknown) is a success if the blob is this write's;
/// otherwise the write is reported as not done, with an error saying the outcome was uncertain.
/// The write is never sent again blindly.
pub(crate) fn settle(
    key: &Key,
    error: Error,
    after: Result<Option<Blob>>,
    this_write: &str,
) -> Result<()> {
    match after {
        Ok(Some(blob)) if blob.write_id == this_write => Ok(()),
        _ => Err(Error::transient(format!(
            "{key}: the write's outcome is unknown and it is not the current object \
             (not written, or overwritten since): {error}"
        ))),
    }
}

impl ObjStore {
    /// Heads the blob at `key`: `None` when there is none.
    pub(crate) async fn stat(&self, key: &Key) -> Result<Option<Blob>> {
        let Some((backend, attrs)) = self.stat_raw(key).await? else {
            return Ok(None);
        };
        let (meta, write_id) = match metadata::decode(key, backend.size, metadata::entry(&attrs))? {
            Some((m, id)) => (Some(m), id),
            None => (None, String::new()),
        };
        Ok(Some(Blob {
            backend,
            meta,
            write_id,
        }))
    }

    /// The live (unexpired, Larder-written) object at `key`, with its backend view.
    pub(crate) async fn live(&self, key: &Key) -> Result<(Meta, ObjectMeta)> {
        let blob = self.stat(key).await?.ok_or_else(|| not_found(key))?;
        let meta = blob.meta.ok_or_else(|| foreign(key))?;
        if meta.is_expired() {
            return Err(not_found(key));
        }
        Ok((meta, blob.backend))
    }

    /// Whether a live object or a foreign blob is at `key` (for `created` of unguarded writes),
    /// and the Last-Modified of the Larder version there (for
    /// [`Meta::next_version`](crate::meta::Meta::next_version)).
    pub(crate) async fn occupied(&self, key: &Key) -> Result<(bool, Option<SystemTime>)> {
        Ok(match self.stat(key).await? {
            Some(Blob { meta: Some(m), .. }) => (!m.is_expired(), Some(m.last_modified)),
            Some(Blob { meta: None, .. }) => (true, None),
            None => (false, None),
        })
    }

    /// `meta` stamped again by [`Meta::next_version`], as the successor of a version last
    /// modified at `replaces`.
    pub(crate) fn restamp(
        meta: Meta,
        replaces: Option<SystemTime>,
        opts: &crate::store::PutOptions,
    ) -> Result<Meta> {
        Meta::next_version(&meta.key, meta.etag, meta.size, replaces, opts)
    }

    /// [`decide`] from a fresh head.
    pub(crate) async fn decide(
        &self,
        key: &Key,
        preconditions: &Preconditions,
        this_write: &str,
        refused: Option<bool>,
    ) -> Result<Decision> {
        let blob = self.stat(key).await?;
        decide(key, blob, preconditions, this_write, refused)
    }

    /// [`settle`] from a fresh head, when the error leaves the outcome unknown.
    pub(crate) async fn settle(&self, key: &Key, this_write: &str, error: Error) -> Result<()> {
        if !error.is_retryable() {
            return Err(error);
        }
        settle(key, error, self.stat(key).await, this_write)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::etag::ETag;
    use crate::meta::now_millis;

    fn key() -> Key {
        Key::new("k").unwrap()
    }

    fn blob(e_tag: Option<&str>, expired: bool, write_id: &str) -> Blob {
        let now = now_millis();
        Blob {
            backend: ObjectMeta {
                location: "k".into(),
                last_modified: Default::default(),
                size: 3,
                e_tag: e_tag.map(str::to_owned),
                version: Some("v1".into()),
            },
            meta: Some(Meta {
                key: key(),
                etag: ETag::of(b"one"),
                size: 3,
                last_modified: now,
                expires_at: expired.then(|| now - Duration::from_secs(1)),
                content_type: None,
                metadata: Default::default(),
            }),
            write_id: write_id.into(),
        }
    }

    /// The decision of the write "mine" on `blob`, after a refusal of it if `refused`.
    fn decide_mine(
        blob: Option<Blob>,
        pre: Preconditions,
        refused: Option<bool>,
    ) -> Result<Decision> {
        // `replaces` is checked on its own (`a_write_replaces_the_version_it_saw`).
        decide(&key(), blob, &pre, "mine", refused).map(|d| match d {
            Decision::Write {
                guard,
                version,
                created,
                ..
            } => Decision::Write {
                guard,
                version,
                created,
                replaces: None,
            },
            landed => landed,
        })
    }

    fn write(guard: Guard, version: Option<&str>, created: bool) -> Decision {
        let version = version.map(str::to_owned);
        Decision::Write {
            guard,
            version,
            created,
            replaces: None,
        }
    }

    #[test]
    fn a_write_replaces_the_version_it_saw() {
        let b = blob(Some("\"e1\""), false, "theirs");
        let seen = b.meta.as_ref().unwrap().last_modified;
        let d = decide(&key(), Some(b), &Preconditions::default(), "mine", None).unwrap();
        assert!(matches!(d, Decision::Write { replaces: Some(t), .. } if t == seen));
        let d = decide(&key(), None, &Preconditions::default(), "mine", None).unwrap();
        assert!(matches!(d, Decision::Write { replaces: None, .. }));
    }

    #[test]
    fn no_blob_is_guarded_by_absence() {
        let d = decide_mine(None, Preconditions::if_absent(), None);
        assert_eq!(d.unwrap(), write(Guard::Absent, None, true));
        let r = decide_mine(None, Preconditions::if_match(ETag::of(b"one")), None);
        assert!(matches!(
            r,
            Err(Error::PreconditionFailed { current: None })
        ));
    }

    #[test]
    fn a_blob_is_guarded_by_its_backend_etag() {
        let live = || Some(blob(Some("\"b1\""), false, "x"));
        let pre = Preconditions::if_match(ETag::of(b"one"));
        let d = decide_mine(live(), pre.clone(), None).unwrap();
        assert_eq!(d, write(Guard::Match("\"b1\"".into()), Some("v1"), false));
        let r = decide_mine(live(), Preconditions::if_match(ETag::of(b"two")), None);
        assert!(matches!(
            r,
            Err(Error::PreconditionFailed { current: Some(_) })
        ));
        // Without a backend ETag there is nothing to guard with.
        let r = decide_mine(Some(blob(None, false, "x")), pre, None);
        assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    }

    #[test]
    fn an_expired_blob_is_absent_to_conditions_but_still_guarded() {
        let b = Some(blob(Some("\"b1\""), true, "x"));
        let d = decide_mine(b, Preconditions::if_absent(), None).unwrap();
        assert_eq!(d, write(Guard::Match("\"b1\"".into()), Some("v1"), true));
    }

    #[test]
    fn a_refusal_of_our_own_landed_write_is_success() {
        let b = || Some(blob(Some("\"b1\""), false, "mine"));
        let d = decide_mine(b(), Preconditions::if_absent(), Some(true)).unwrap();
        assert_eq!(d, Decision::Landed { created: true });
        // Without a refusal, the same blob is just there: create-only fails.
        let r = decide_mine(b(), Preconditions::if_absent(), None);
        assert!(matches!(r, Err(Error::PreconditionFailed { .. })));
    }

    #[test]
    fn foreign_blobs_are_refused() {
        let mut b = blob(Some("\"b1\""), false, "");
        b.meta = None;
        let r = decide_mine(Some(b), Preconditions::none(), None);
        assert!(matches!(r, Err(Error::Backend { .. })));
    }

    #[test]
    fn an_unknown_outcome_is_settled_by_the_write_id() {
        let lost = || Error::transient("connection reset");
        let ours = Ok(Some(blob(Some("\"b\""), false, "mine")));
        settle(&key(), lost(), ours, "mine").unwrap();
        let theirs = Ok(Some(blob(Some("\"b\""), false, "theirs")));
        for after in [theirs, Ok(None), Err(lost())] {
            let e = settle(&key(), lost(), after, "mine").unwrap_err();
            assert!(
                e.is_retryable() && e.to_string().contains("outcome is unknown"),
                "{e}"
            );
        }
    }
}
