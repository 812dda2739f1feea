//! What a store can do, as data, and the checks that refuse what it cannot.

use crate::error::{Error, Result};
use crate::precondition::{ETagCondition, Preconditions};
use crate::store::{DeleteOptions, PutOptions};

/// How far a store's atomic conditional writes hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AtomicScope {
    /// Not atomic at all (the store refuses conditional writes).
    None,
    /// Among users of the same store value in one process.
    Process,
    /// Among processes on one host (e.g. file locks).
    Host,
    /// Among every client of a shared backend, on any host.
    Cluster,
}

/// Which write conditions a store evaluates atomically with the mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConditionSupport {
    /// `If-Match` with a list of tags.
    pub if_match: bool,
    /// `If-Match: *`.
    pub if_match_any: bool,
    /// `If-None-Match: *` (create-only).
    pub if_none_match_any: bool,
    /// `If-None-Match` with a list of tags.
    pub if_none_match: bool,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: bool,
}

impl ConditionSupport {
    /// Every condition.
    pub const ALL: ConditionSupport = ConditionSupport {
        if_match: true,
        if_match_any: true,
        if_none_match_any: true,
        if_none_match: true,
        if_unmodified_since: true,
    };

    /// No condition.
    pub const NONE: ConditionSupport = ConditionSupport {
        if_match: false,
        if_match_any: false,
        if_none_match_any: false,
        if_none_match: false,
        if_unmodified_since: false,
    };

    /// `Unsupported` naming the first condition in `p` this store cannot evaluate atomically.
    pub fn check(&self, p: &Preconditions, op: &str) -> Result<()> {
        let refuse = |what: &str| Err(Error::unsupported(format!("{what} on {op}")));
        match &p.if_match {
            Some(ETagCondition::Any) if !self.if_match_any => return refuse("If-Match: *"),
            Some(ETagCondition::Tags(_)) if !self.if_match => return refuse("If-Match"),
            _ => {}
        }
        match &p.if_none_match {
            Some(ETagCondition::Any) if !self.if_none_match_any => {
                return refuse("If-None-Match: *")
            }
            Some(ETagCondition::Tags(_)) if !self.if_none_match => {
                return refuse("If-None-Match with tags")
            }
            _ => {}
        }
        if p.if_unmodified_since.is_some() && !self.if_unmodified_since {
            return refuse("If-Unmodified-Since");
        }
        Ok(())
    }
}

/// What a store can do. Drivers return this from
/// [`Store::capabilities`](crate::Store::capabilities), and call [`Capabilities::check_put`]
/// and [`Capabilities::check_delete`] first thing, so that what they cannot do is refused and
/// never ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The driver's name (`memory`, `fs`, …).
    pub name: &'static str,
    /// How far atomicity of conditional writes holds.
    pub atomic_scope: AtomicScope,
    /// Conditions honoured on `put`.
    pub put_conditions: ConditionSupport,
    /// Conditions honoured on `delete`.
    pub delete_conditions: ConditionSupport,
    /// Whether objects can be written with a TTL.
    pub ttl: bool,
    /// Whether `list` honours a delimiter.
    pub list_delimiter: bool,
    /// Largest object accepted, if bounded.
    pub max_object_size: Option<u64>,
    /// Whether objects survive a restart of the process.
    pub persistent: bool,
}

impl Capabilities {
    /// A store that can do everything atomically at `scope`.
    pub fn full(name: &'static str, atomic_scope: AtomicScope, persistent: bool) -> Self {
        Capabilities {
            name,
            atomic_scope,
            put_conditions: ConditionSupport::ALL,
            delete_conditions: ConditionSupport::ALL,
            ttl: true,
            list_delimiter: true,
            max_object_size: None,
            persistent,
        }
    }

    /// Refuses a `put` this store cannot do as asked, or that asks for a TTL of zero or over
    /// [`MAX_TTL`](crate::meta::MAX_TTL) (`InvalidInput`).
    pub fn check_put(&self, opts: &PutOptions) -> Result<()> {
        self.put_conditions.check(&opts.preconditions, "put")?;
        if opts.ttl.is_some() && !self.ttl {
            return Err(Error::unsupported(format!(
                "TTL on the {} store",
                self.name
            )));
        }
        // Positive and at most `MAX_TTL`: refused before any byte is read.
        opts.ttl.map(crate::meta::check_ttl).transpose()?;
        Ok(())
    }

    /// A `put` of a store whose backend takes one value: refused as [`Capabilities::check_put`]
    /// refuses it, else the whole body, read within [`Capabilities::max_object_size`] and
    /// checked against `opts.expected_etag`, with its ETag and size.
    pub async fn collect_put(
        &self,
        body: crate::body::Body,
        opts: &PutOptions,
    ) -> Result<(bytes::Bytes, crate::etag::ETag, u64)> {
        self.check_put(opts)?;
        (body.reader(self.max_object_size))
            .collect(opts.expected_etag.as_ref())
            .await
    }

    /// Refuses a `delete` this store cannot do as asked.
    pub fn check_delete(&self, opts: &DeleteOptions) -> Result<()> {
        self.delete_conditions.check(&opts.preconditions, "delete")
    }
}
