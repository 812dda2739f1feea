//! The one precondition evaluator (RFC 9110 section 13) and the parsers for its header fields.
//!
//! Drivers never compare ETags themselves: they read the current object inside their atomic
//! step, call [`Preconditions::evaluate_write`] (or [`Preconditions::evaluate_read`]), and
//! only then mutate, within that same step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::etag::{is_etagc, ETag};
use crate::meta::Meta;

/// The value of an `If-Match` or `If-None-Match` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ETagCondition {
    /// `*`: "a current representation exists".
    Any,
    /// A list of entity tags; the condition holds if any one matches.
    Tags(Vec<ETag>),
}

impl ETagCondition {
    /// A condition on a single tag.
    pub fn tag(tag: ETag) -> Self {
        ETagCondition::Tags(vec![tag])
    }

    /// Strong comparison, as `If-Match` uses: `*` matches any existing object.
    pub fn matches_strong(&self, current: Option<&ETag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (ETagCondition::Any, Some(_)) => true,
            (ETagCondition::Tags(tags), Some(cur)) => tags.iter().any(|t| t.strong_eq(cur)),
        }
    }

    /// Weak comparison, as `If-None-Match` uses: `*` matches any existing object.
    pub fn matches_weak(&self, current: Option<&ETag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (ETagCondition::Any, Some(_)) => true,
            (ETagCondition::Tags(tags), Some(cur)) => tags.iter().any(|t| t.weak_eq(cur)),
        }
    }
}

impl std::fmt::Display for ETagCondition {
    /// The header field value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ETagCondition::Any => f.write_str("*"),
            ETagCondition::Tags(tags) => {
                for (i, t) in tags.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                Ok(())
            }
        }
    }
}

/// The conditions of a request. All absent means unconditional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`: proceed only if the current ETag matches (strong comparison).
    pub if_match: Option<ETagCondition>,
    /// `If-None-Match`: proceed only if the current ETag does not match (weak comparison).
    /// `*` makes a write create-only.
    pub if_none_match: Option<ETagCondition>,
    /// `If-Modified-Since` (reads only; RFC 9110 says writes ignore it).
    pub if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`: proceed only if not modified after this time.
    pub if_unmodified_since: Option<SystemTime>,
}

/// What the evaluator decided should not happen.
enum Failed {
    Precondition,
    NotModified,
}

impl Failed {
    /// The error of a read that failed so, carrying `current`.
    fn into_error(self, current: Meta) -> Error {
        match self {
            Failed::NotModified => Error::NotModified(Box::new(current)),
            Failed::Precondition => Error::PreconditionFailed {
                current: Some(Box::new(current)),
            },
        }
    }
}

impl Preconditions {
    /// No conditions.
    pub fn none() -> Self {
        Self::default()
    }

    /// `If-Match: "etag"`: a swap.
    pub fn if_match(etag: ETag) -> Self {
        Preconditions {
            if_match: Some(ETagCondition::tag(etag)),
            ..Default::default()
        }
    }

    /// `If-None-Match: *`: create-only.
    pub fn if_absent() -> Self {
        Preconditions {
            if_none_match: Some(ETagCondition::Any),
            ..Default::default()
        }
    }

    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// RFC 9110 13.2.2 steps 1 to 4, for a method that is (`read`) or is not safe.
    fn evaluate(&self, current: Option<&Meta>, read: bool) -> std::result::Result<(), Failed> {
        if self.is_empty() {
            return Ok(()); // the common case, without the date conversion below
        }
        let etag = current.map(|m| &m.etag);
        let modified = current.map(|m| http_seconds(m.last_modified));
        // Step 1 and 2: If-Match, else If-Unmodified-Since (ignored when there is no date).
        if let Some(cond) = &self.if_match {
            if !cond.matches_strong(etag) {
                return Err(Failed::Precondition);
            }
        } else if let (Some(since), Some(modified)) = (self.if_unmodified_since, modified) {
            if modified > http_seconds(since) {
                return Err(Failed::Precondition);
            }
        }
        // Step 3 and 4: If-None-Match, else If-Modified-Since for GET/HEAD.
        if let Some(cond) = &self.if_none_match {
            if cond.matches_weak(etag) {
                return Err(if read {
                    Failed::NotModified
                } else {
                    Failed::Precondition
                });
            }
        } else if let (true, Some(since), Some(modified)) = (read, self.if_modified_since, modified)
        {
            if modified <= http_seconds(since) {
                return Err(Failed::NotModified);
            }
        }
        Ok(())
    }

    /// Evaluates the conditions of a read (GET/HEAD) of an existing object: `NotModified` or
    /// `PreconditionFailed` (each carrying `current`), or `Ok` to serve it.
    ///
    /// A read of a missing object is a 404 whatever its conditions (RFC 9110 13.2.1), so the
    /// caller answers `NotFound` before evaluating.
    pub fn evaluate_read(&self, current: &Meta) -> Result<()> {
        self.evaluate(Some(current), true)
            .map_err(|f| f.into_error(current.clone()))
    }

    /// [`evaluate_read`](Self::evaluate_read) of a snapshot the caller gives up: `current`
    /// back to serve, or the error carrying it, uncopied (a 304 is a conditional GET's usual
    /// answer, and copying the metadata into it was three allocations of each).
    pub(crate) fn evaluate_read_owned(&self, current: Meta) -> Result<Meta> {
        match self.evaluate(Some(&current), true) {
            Ok(()) => Ok(current),
            Err(f) => Err(f.into_error(current)),
        }
    }

    /// Evaluates the conditions of a write or delete against the current object (`None` when
    /// there is none): `PreconditionFailed` carrying `current`, or `Ok` to mutate.
    pub fn evaluate_write(&self, current: Option<&Meta>) -> Result<()> {
        self.evaluate(current, false)
            .map_err(|_| Error::precondition_failed(current))
    }
}

/// The `If-Range` condition of a ranged read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfRange {
    /// Serve the range only if the current ETag strongly matches.
    ETag(ETag),
    /// Serve the range only if the object was last modified exactly at this time.
    Date(SystemTime),
}

impl IfRange {
    /// Whether the range should be served (RFC 9110 13.1.5).
    pub fn holds(&self, current: &Meta) -> bool {
        match self {
            IfRange::ETag(tag) => tag.strong_eq(&current.etag),
            IfRange::Date(date) => http_seconds(current.last_modified) == http_seconds(*date),
        }
    }

    /// Parses an `If-Range` field value: an entity tag or an HTTP-date.
    pub fn parse(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.starts_with('"') || v.starts_with("W/") {
            ETag::parse(v).map(IfRange::ETag)
        } else {
            httpdate::parse_http_date(v)
                .map(IfRange::Date)
                .map_err(|_| Error::InvalidInput(format!("malformed If-Range {value:?}")))
        }
    }
}

/// Truncates a time to whole seconds since the epoch: HTTP dates have no finer resolution, so
/// every date comparison is done at this resolution.
pub fn http_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A time truncated to the whole second, as an HTTP date carries it.
pub fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(http_seconds(t))
}

/// Parses the combined field values of `If-Match` or `If-None-Match`.
///
/// Repeated fields are one comma-separated list (RFC 9110 5.3), so every value is read, not only
/// the first. `*` must stand alone. Empty list elements are allowed and skipped. Returns `None`
/// when no value is present.
pub fn parse_etag_condition<'a, I>(values: I) -> Result<Option<ETagCondition>>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut tags = Vec::new();
    let mut any = false;
    let mut seen = false;
    for value in values {
        seen = true;
        let mut rest = value.as_bytes();
        loop {
            rest = trim_ows_commas(rest);
            if rest.is_empty() {
                break;
            }
            if rest[0] == b'*' {
                any = true;
                rest = &rest[1..];
            } else {
                let (tag, after) = take_entity_tag(rest).ok_or_else(|| {
                    Error::InvalidInput(format!("malformed entity-tag list {value:?}"))
                })?;
                tags.push(tag);
                rest = after;
            }
            // After an element, only whitespace then a comma or the end may follow.
            let after_ws = trim_ows(rest);
            if !after_ws.is_empty() && after_ws[0] != b',' {
                return Err(Error::InvalidInput(format!(
                    "malformed entity-tag list {value:?}"
                )));
            }
            rest = after_ws;
        }
    }
    match (seen, any, tags.is_empty()) {
        (false, _, _) => Ok(None),
        (true, true, true) => Ok(Some(ETagCondition::Any)),
        (true, true, false) => Err(Error::InvalidInput(
            "'*' cannot be combined with entity tags".into(),
        )),
        (true, false, false) => Ok(Some(ETagCondition::Tags(tags))),
        (true, false, true) => Err(Error::InvalidInput("empty entity-tag list".into())),
    }
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    &b[n..]
}

fn trim_ows_commas(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(**c, b' ' | b'\t' | b','))
        .count();
    &b[n..]
}

/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`, at the start of `b`.
fn take_entity_tag(b: &[u8]) -> Option<(ETag, &[u8])> {
    let (weak, b) = match b.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let b = b.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', b)?;
    let opaque = &b[..end];
    // Every character checked without a branch per byte (so the check vectorizes): a
    // conditional request's tag is parsed on every request, and a loop testing one byte at a
    // time was most of a 304's parsing.
    if !opaque.iter().fold(true, |ok, c| ok & is_etagc(*c)) {
        return None;
    }
    let opaque = std::str::from_utf8(opaque).ok()?;
    Some((ETag::checked(weak, opaque.to_owned()), &b[end + 1..]))
}

/// Parses an HTTP-date condition (`If-Modified-Since`, `If-Unmodified-Since`).
///
/// RFC 9110 13.1.3 and 13.1.4: a recipient MUST ignore such a field whose value is not a valid
/// HTTP-date, so an invalid or repeated value gives `None` rather than an error.
pub fn parse_date_condition<'a, I>(values: I) -> Option<SystemTime>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut values = values.into_iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.trim()).ok()
}

#[cfg(test)]
mod tests;
