//! A per-IP rate limiter (GCRA), bounded in the addresses it remembers. The
//! server uses one to cap the answers per querier; the crawl strategy's pacer
//! uses another to cap the queries per remote IP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::time::Timestamp;

/// Per-IP answer limiter (GCRA): each IP may be answered `rate` times per second
/// with a burst of `rate`. Bounded: when full, stale entries go first, then the
/// lowest address.
pub struct RateLimiter {
    tat: BTreeMap<IpAddr, Timestamp>,
    interval: Duration,
    burst: Duration,
    cap: usize,
    /// Entries dropped to stay within the cap.
    pub evictions: u64,
}

impl RateLimiter {
    /// `per_sec` sustained with a burst of `per_sec`, remembering at most `cap` IPs.
    pub fn new(per_sec: u32, cap: usize) -> Self {
        Self::with_burst(per_sec, per_sec, cap)
    }

    /// `per_sec` sustained, up to `burst` at once.
    pub fn with_burst(per_sec: u32, burst: u32, cap: usize) -> Self {
        let per_sec = per_sec.max(1);
        let interval = Duration::from_nanos(1_000_000_000 / per_sec as u64);
        RateLimiter {
            tat: BTreeMap::new(),
            interval,
            burst: interval * burst.max(1),
            cap: cap.max(1),
            evictions: 0,
        }
    }

    /// IPs remembered.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// Forgets the IPs whose allowance is full again at `now` (their next
    /// call would be treated exactly as a first one): without this, every IP
    /// ever seen stayed until the cap, and the table grew with a churning
    /// population for days.
    pub fn prune(&mut self, now: Timestamp) {
        self.tat.retain(|_, t| *t > now);
    }

    /// Whether `ip` may be answered now (and charges it if so).
    pub fn allow(&mut self, now: Timestamp, ip: IpAddr) -> bool {
        self.allow_keeping(now, ip, 0)
    }

    /// [`RateLimiter::allow`] for a caller of lower priority: only while `ip`
    /// would still have `keep` answers of its burst left after this one, so
    /// that callers of normal priority always find those `keep`.
    pub fn allow_keeping(&mut self, now: Timestamp, ip: IpAddr, keep: u32) -> bool {
        if !self.tat.contains_key(&ip) && self.tat.len() >= self.cap {
            self.tat.retain(|_, t| *t > now);
            if self.tat.len() >= self.cap {
                self.tat.pop_first();
            }
            self.evictions += 1;
        }
        let tat = self.tat.get(&ip).copied().unwrap_or(now).max(now);
        if tat.since(now) + self.interval * keep.saturating_add(1) > self.burst {
            return false;
        }
        self.tat.insert(ip, tat.add(self.interval));
        true
    }

    /// The earliest time `allow` would let `ip` through (without charging it):
    /// [`Timestamp::ZERO`] when it may be answered at any time. Exact while the
    /// entry is kept; an evicted entry only lets the IP through sooner.
    pub fn next_allowed(&self, ip: IpAddr) -> Timestamp {
        match self.tat.get(&ip) {
            // `allow` passes once `tat - now + interval <= burst`.
            Some(tat) => tat.sub(self.burst.saturating_sub(self.interval)),
            None => Timestamp::ZERO,
        }
    }

    /// [`RateLimiter::next_allowed`] for [`RateLimiter::allow_keeping`] with `keep`.
    pub fn next_allowed_keeping(&self, ip: IpAddr, keep: u32) -> Timestamp {
        match self.tat.get(&ip) {
            // `allow_keeping` passes once `tat - now + interval * (keep + 1) <= burst`.
            Some(tat) => tat.sub(
                self.burst
                    .saturating_sub(self.interval * keep.saturating_add(1)),
            ),
            None => Timestamp::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_burst_refill_and_cap() {
        let mut r = RateLimiter::new(10, 2);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let t = Timestamp::from_secs(100);
        let allowed = (0..30).filter(|_| r.allow(t, ip)).count();
        assert_eq!(allowed, 10);
        // 100 ms later one more is allowed.
        assert!(r.allow(t.add(Duration::from_millis(100)), ip));
        assert!(!r.allow(t.add(Duration::from_millis(100)), ip));
        // Other IPs are independent; the table stays bounded.
        assert!(r.allow(t, "1.2.3.5".parse().unwrap()));
        assert!(r.allow(t, "1.2.3.6".parse().unwrap()));
        assert!(r.len() <= 2);
        assert!(r.evictions >= 1);
    }

    /// A caller that keeps a reserve gets only the allowance above it; the
    /// reserve stays for the others.
    #[test]
    fn a_lower_priority_caller_leaves_the_reserve() {
        let mut r = RateLimiter::with_burst(2, 8, 16);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let t = Timestamp::from_secs(100);
        let low = (0..20).filter(|_| r.allow_keeping(t, ip, 4)).count();
        assert_eq!(low, 4);
        let normal = (0..20).filter(|_| r.allow(t, ip)).count();
        assert_eq!(normal, 4, "the reserve is left for normal callers");
        // Refilled by one (500 ms): the normal caller's, not the low one's.
        let t1 = t.add(Duration::from_millis(500));
        assert!(!r.allow_keeping(t1, ip, 4));
        assert!(r.allow(t1, ip));
    }

    #[test]
    fn rate_limiter_next_allowed_is_exact() {
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for (rate, burst) in [(2, 8), (10, 10), (3, 1), (1000, 4)] {
            let mut r = RateLimiter::with_burst(rate, burst, 16);
            assert_eq!(r.next_allowed(ip), Timestamp::ZERO);
            let mut now = Timestamp::from_secs(50);
            for step in 0..200u64 {
                let next = r.next_allowed(ip);
                if next > now {
                    // Refused until `next`, allowed at `next`.
                    assert!(!r.allow(now, ip), "rate {rate} step {step}");
                    assert!(!r.allow(next.sub(Duration::from_nanos(1)), ip));
                    assert!(r.allow(next, ip), "rate {rate} step {step}");
                    now = next;
                } else {
                    assert!(r.allow(now, ip), "rate {rate} step {step}");
                }
                // Uneven gaps: sometimes none, sometimes a few milliseconds.
                now = now.add(Duration::from_millis(step % 7));
            }
        }
    }

    #[test]
    fn rate_limiter_next_allowed_keeping_is_exact() {
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for (rate, burst, keep) in [(2, 8, 4), (10, 10, 3), (3, 2, 1), (1000, 4, 2)] {
            let mut r = RateLimiter::with_burst(rate, burst, 16);
            assert_eq!(r.next_allowed_keeping(ip, keep), Timestamp::ZERO);
            let mut now = Timestamp::from_secs(50);
            for step in 0..200u64 {
                let next = r.next_allowed_keeping(ip, keep);
                if next > now {
                    assert!(!r.allow_keeping(now, ip, keep), "rate {rate} step {step}");
                    let before = next.sub(Duration::from_nanos(1));
                    assert!(!r.allow_keeping(before, ip, keep));
                    assert!(r.allow_keeping(next, ip, keep), "rate {rate} step {step}");
                    now = next;
                } else {
                    assert!(r.allow_keeping(now, ip, keep), "rate {rate} step {step}");
                }
                // A caller of normal priority takes some of the allowance too.
                if step % 5 == 0 {
                    r.allow(now, ip);
                }
                now = now.add(Duration::from_millis(step % 7));
            }
        }
    }
}
