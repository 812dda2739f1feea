//! A monotonic clock that is cheap to read, for what needs to know time only roughly and reads
//! it on every request: the tiered store's freshness windows, the server's connection
//! watchdog. On Linux it is the coarse clock (the time of the last timer tick, read from the
//! vDSO without a hardware counter: a few nanoseconds, where a precise read costs tens); it
//! lags the true time by up to [`resolution`]. Elsewhere it is [`std::time::Instant`].

use std::time::Duration;

/// A point on the clock [`now`] reads: the time since a fixed, unspecified start, in
/// nanoseconds (one integer: a reading and a difference cost an instruction or two, where a
/// [`Duration`]'s seconds and nanoseconds carry into each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoarseInstant(u64);

impl CoarseInstant {
    /// The time since the clock's start (the same start for every reading in a process).
    pub fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: CoarseInstant) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// The time from `earlier` to `self` in nanoseconds; zero if `earlier` is later.
    pub fn nanos_since(self, earlier: CoarseInstant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Now, on the coarse monotonic clock (see the [module docs](self)).
pub fn now() -> CoarseInstant {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let ts = coarse(libc::clock_gettime);
        // A monotonic clock counts from boot: its nanoseconds fit a u64 for 584 years.
        CoarseInstant((ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let elapsed = BASE.get_or_init(std::time::Instant::now).elapsed();
        CoarseInstant(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// How far [`now`] may lag the true time.
pub fn resolution() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static RES: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
        *RES.get_or_init(|| {
            let ts = coarse(libc::clock_getres);
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Duration::ZERO
    }
}

/// `clock_gettime` or `clock_getres` of the coarse monotonic clock. (Through libc, which reads
/// the vDSO the way every tool expects: valgrind included.)
#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse(
    call: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { call(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    // As `Instant::now` does: a monotonic clock the kernel has (since Linux 2.6.32) cannot fail.
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back_and_follows_the_precise_clock_within_its_resolution() {
        let (coarse0, precise0) = (now(), std::time::Instant::now());
        let mut last = coarse0;
        while precise0.elapsed() < Duration::from_millis(30) {
            let t = now();
            assert!(t >= last, "the coarse clock went back");
            last = t;
        }
        let (coarse1, precise) = (now(), precise0.elapsed());
        let seen = coarse1.saturating_duration_since(coarse0);
        // Each reading lags by at most the resolution (and the precise clock was read after).
        assert!(seen <= precise + resolution(), "{seen:?} > {precise:?}");
        assert!(
            seen + 2 * resolution() >= precise,
            "{seen:?} far behind {precise:?}"
        );
    }
}
