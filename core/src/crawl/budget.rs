//! The global outgoing packet budget: a token bucket (as GCRA) that every query
//! we send counts against — sample_infohashes, find_node, get_peers, pings alike.

use std::time::Duration;

use crate::time::Timestamp;

#[derive(Clone, Debug)]
pub struct Budget {
    tat: Timestamp,
    interval: Duration,
    burst: Duration,
    pub taken: u64,
    pub refused: u64,
}

impl Budget {
    /// `per_sec` packets per second sustained, `burst` at once. `per_sec == 0` means unlimited.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let interval = if per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(1_000_000_000 / per_sec as u64)
        };
        Budget {
            tat: Timestamp::ZERO,
            interval,
            burst: interval * burst.max(1),
            taken: 0,
            refused: 0,
        }
    }

    /// Takes one packet's worth if available.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        let tat = self.tat.max(now);
        if tat.since(now) + self.interval > self.burst && !self.interval.is_zero() {
            self.refused += 1;
            return false;
        }
        self.tat = tat.add(self.interval);
        self.taken += 1;
        true
    }

    /// How many packets could be sent right now.
    pub fn available(&self, now: Timestamp) -> u64 {
        if self.interval.is_zero() {
            return u64::MAX;
        }
        let used = self.tat.max(now).since(now);
        let free = self.burst.saturating_sub(used);
        (free.as_nanos() / self.interval.as_nanos().max(1)) as u64
    }

    /// When the next packet becomes available (now if one is).
    pub fn next_available(&self, now: Timestamp) -> Timestamp {
        let tat = self.tat.max(now);
        let ready = tat.sub(self.burst).add(self.interval);
        ready.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_burst() {
        let mut b = Budget::new(100, 10);
        let t = Timestamp::from_secs(5);
        assert_eq!(b.available(t), 10);
        let n = (0..50).filter(|_| b.try_take(t)).count();
        assert_eq!(n, 10);
        assert_eq!(b.refused, 40);
        assert_eq!(b.available(t), 0);
        assert_eq!(b.next_available(t), t.add(Duration::from_millis(10)));
        // Over one second, about 100 more.
        let mut sent = 0;
        for ms in 1..=1000u64 {
            let now = t.add(Duration::from_millis(ms));
            while b.try_take(now) {
                sent += 1;
            }
        }
        assert_eq!(sent, 100);
        let mut u = Budget::new(0, 0);
        assert!((0..10_000).all(|_| u.try_take(t)));
    }
}
