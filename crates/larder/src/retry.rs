//! The one shape of a bounded retry: a step that decides on the current version and can lose a
//! race to another writer (the version changed before its write landed) is tried again, at most
//! a budget of times the caller names.
//!
//! A loop, not a closure taking helper: the step borrows the store and the key across `await`s,
//! and a future of an async closure with such borrows is not provably `Send` inside the
//! `Store` trait's futures.

use std::fmt::Display;

use crate::error::{Error, Result};

/// A budget of attempts. Iterating yields the attempt's index (`0..budget`), which is also how
/// many attempts lost before it; after the loop, [`Attempts::exhausted`] is the error to return.
///
/// ```text
/// let attempts = Attempts::new(MAX_ATTEMPTS);
/// for _ in attempts {
///     // decide on the current version and write it under the backend's condition;
///     // `continue` when the condition failed because the version changed, `return` otherwise
/// }
/// attempts.exhausted(format_args!("{key}: the object kept changing"))
/// ```
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempts {
    budget: u32,
    next: u32,
}

impl Attempts {
    /// At most `budget` attempts.
    pub(crate) const fn new(budget: u32) -> Self {
        Attempts { budget, next: 0 }
    }

    /// The error once every attempt lost its race: a retryable `Backend` error (nothing was
    /// done; the caller may try again later), `what` followed by the budget.
    pub(crate) fn exhausted<T>(&self, what: impl Display) -> Result<T> {
        Err(Error::transient(format!(
            "{what} ({} attempts in a row)",
            self.budget
        )))
    }
}

impl Iterator for Attempts {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let n = self.next;
        (n < self.budget).then(|| {
            self.next += 1;
            n
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_the_budget_then_a_retryable_error() {
        let attempts = Attempts::new(3);
        assert_eq!(attempts.collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(Attempts::new(0).count(), 0);
        let e = attempts.exhausted::<()>("k changed").unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert!(
            e.to_string().contains("k changed (3 attempts in a row)"),
            "{e}"
        );
    }
}
