//! Virtual time. Core never reads a clock: every input carries a [`Timestamp`]
//! (nanoseconds from an epoch the driver picks), and deadlines are `Timestamp`s that
//! the driver is asked to wake up at ([`crate::Output::Timeout`]). Arithmetic
//! saturates instead of overflowing.

use std::time::Duration;

/// Nanoseconds since an epoch chosen by the driver. The simulator starts at 0.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The epoch itself (0 ns).
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable time (`u64::MAX` ns, about 584 years): `add` saturates here.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// `n` nanoseconds after the epoch.
    pub const fn from_nanos(n: u64) -> Self {
        Timestamp(n)
    }
    /// `ms` milliseconds after the epoch, saturating at [`Timestamp::MAX`].
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }
    /// `s` seconds after the epoch, saturating at [`Timestamp::MAX`].
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1_000_000_000))
    }
    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Whole milliseconds since the epoch (truncated).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
    /// Whole seconds since the epoch (truncated).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Self {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(n))
    }
    /// `self - d`, saturating at zero.
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, d: Duration) -> Self {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(n))
    }
    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Earliest of two optional deadlines.
pub fn min_deadline(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(3);
        assert_eq!(t.add(Duration::from_millis(500)).as_millis(), 3_500);
        assert_eq!(t.sub(Duration::from_secs(10)), Timestamp::ZERO);
        assert_eq!(Timestamp::MAX.add(Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(Timestamp::from_secs(1).since(t), Duration::ZERO);
        assert_eq!(t.since(Timestamp::from_secs(1)), Duration::from_secs(2));
        assert_eq!(min_deadline(Some(t), None), Some(t));
        assert_eq!(
            min_deadline(Some(t), Some(Timestamp::from_secs(1))),
            Some(Timestamp::from_secs(1))
        );
    }
}
