//! The global outgoing packet budget: a token bucket (as GCRA) that every query
//! we send counts against — sample_infohashes, find_node, get_peers, pings alike.

use std::time::Duration;

use std::net::SocketAddr;

use crate::limiter::RateLimiter;
use crate::time::Timestamp;

/// A token bucket of packets (GCRA).
#[derive(Clone, Debug)]
pub struct Budget {
    tat: Timestamp,
    interval: Duration,
    burst: Duration,
    /// Packets taken.
    pub taken: u64,
    /// Packets refused for want of budget.
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

/// The pace of every query we send: the global [`Budget`] and, optionally, a
/// per-IP limit that stays well under libtorrent's ban threshold. Part of the
/// crawl strategy's state; the node's own queries (lookups, bootstrap, pings)
/// pass through it too.
pub struct Pacer {
    budget: Budget,
    per_ip: Option<RateLimiter>,
    /// Queries refused by the per-IP pace.
    per_ip_refused: u64,
    /// When the per-IP pace next forgets the IPs it no longer holds back.
    next_prune: Timestamp,
    /// Of each IP's burst, what low-priority queries leave ([`Pacer::admit_low`]).
    low_reserve: u32,
}

/// How often the per-IP pace forgets IPs whose allowance is full again.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Pacer {
    /// `max_pps`/`burst` globally; `per_ip_pps`/`per_ip_burst` per IP (0: none).
    pub fn new(max_pps: u32, burst: u32, per_ip_pps: u32, per_ip_burst: u32) -> Self {
        let per_ip = (per_ip_pps > 0)
            .then(|| RateLimiter::with_burst(per_ip_pps, per_ip_burst, Self::PER_IP_TABLE));
        Pacer {
            budget: Budget::new(max_pps, burst),
            per_ip,
            per_ip_refused: 0,
            next_prune: Timestamp::ZERO,
            low_reserve: per_ip_burst.max(1) / 2,
        }
    }

    /// IPs the per-IP pace remembers (0 without a pace).
    pub fn per_ip_len(&self) -> usize {
        self.per_ip.as_ref().map_or(0, |l| l.len())
    }

    /// The cap on [`Pacer::per_ip_len`].
    pub const PER_IP_TABLE: usize = 65_536;

    /// Whether a query to `to` may go now: charges the per-IP pace, then the
    /// budget (neither when the pace refuses).
    pub fn admit(&mut self, now: Timestamp, to: &SocketAddr) -> bool {
        self.ip_allows(now, to, 0) && self.budget.try_take(now)
    }

    /// [`Pacer::admit`] for a query of low priority (a peer search for a
    /// get_peers candidate, most of them random refresh targets): it takes an
    /// IP's allowance only above half of its burst, so that queries of normal
    /// priority (sampling, asking a source, the peer search of an infohash with
    /// evidence) always find the other half: a candidate never displaces them.
    pub fn admit_low(&mut self, now: Timestamp, to: &SocketAddr) -> bool {
        self.ip_allows(now, to, self.low_reserve) && self.budget.try_take(now)
    }

    fn ip_allows(&mut self, now: Timestamp, to: &SocketAddr, keep: u32) -> bool {
        match &mut self.per_ip {
            Some(l) => {
                // An IP whose allowance is full again is treated as one never
                // seen: forgetting it changes no decision, and keeps the table
                // to the IPs asked in the last seconds (it grew with every new
                // IP of a churning DHT, up to its cap, for days).
                if now >= self.next_prune {
                    l.prune(now);
                    self.next_prune = now.add(PRUNE_EVERY);
                }
                let ok = l.allow_keeping(now, to.ip(), keep);
                if !ok {
                    self.per_ip_refused += 1;
                }
                ok
            }
            None => true,
        }
    }

    /// When the per-IP pace next lets a query to `to` through (now or earlier
    /// when it does already), without charging it.
    pub fn ip_next_allowed(&self, to: &SocketAddr) -> Timestamp {
        match &self.per_ip {
            Some(l) => l.next_allowed(crate::addr::canonical(*to).ip()),
            None => Timestamp::ZERO,
        }
    }

    /// When [`Pacer::admit`] (or [`Pacer::admit_low`] with `low`) would next
    /// let a query to `to` through, without charging anything: the later of the
    /// per-IP pace's and the budget's next room (`now` or earlier when both
    /// have room already).
    pub fn next_admit(&self, now: Timestamp, to: &SocketAddr, low: bool) -> Timestamp {
        let keep = if low { self.low_reserve } else { 0 };
        let ip = match &self.per_ip {
            Some(l) => l.next_allowed_keeping(crate::addr::canonical(*to).ip(), keep),
            None => Timestamp::ZERO,
        };
        ip.max(self.budget.next_available(now))
    }

    /// Packets the budget would let through now.
    pub fn available(&self, now: Timestamp) -> u64 {
        self.budget.available(now)
    }

    /// When the budget next has a packet.
    pub fn next_available(&self, now: Timestamp) -> Timestamp {
        self.budget.next_available(now)
    }

    /// Queries refused by the budget.
    pub fn budget_refused(&self) -> u64 {
        self.budget.refused
    }

    /// Queries refused by the per-IP pace.
    pub fn per_ip_refused(&self) -> u64 {
        self.per_ip_refused
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

    /// The per-IP pace forgets the IPs it no longer holds back, so that a
    /// churning DHT (a new IP with every newcomer) does not fill its table
    /// over days; an IP still held back is kept, and held back.
    #[test]
    fn the_per_ip_pace_forgets_ips_it_no_longer_holds_back() {
        let mut p = Pacer::new(0, 0, 2, 8);
        let t = Timestamp::from_secs(100);
        for i in 0..1000u32 {
            let a = SocketAddr::from((i.to_be_bytes(), 6881));
            assert!(p.admit(t, &a));
        }
        assert_eq!(p.per_ip_len(), 1000);
        // One IP spends its burst: held back for seconds.
        let busy: SocketAddr = "9.9.9.9:1".parse().unwrap();
        let t1 = t.add(Duration::from_secs(11));
        while p.admit(t1, &busy) {}
        let held_until = p.ip_next_allowed(&busy);
        assert!(held_until > t1);
        // Ten seconds on the others were forgotten (they were no longer held
        // back); the busy one is kept, and still held back.
        assert_eq!(p.per_ip_len(), 1);
        let other: SocketAddr = "8.8.8.8:1".parse().unwrap();
        let t2 = t1.add(Duration::from_millis(1));
        assert!(p.admit(t2, &other));
        assert_eq!(p.per_ip_len(), 2);
        assert!(!p.admit(t2, &busy));
        assert_eq!(p.ip_next_allowed(&busy), held_until);
    }
}
