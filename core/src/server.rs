//! What the node stores and limits in order to answer queries honestly: the
//! announce store (peers from valid announce_peer queries, bounded, with expiry)
//! and a per-IP answer rate limiter. The answers themselves are built in
//! [`crate::crawler`], which owns the routing tables and tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bloom::Bloom;
use crate::id::InfoHash;
use crate::rng::Rng;
use crate::time::Timestamp;

#[derive(Clone, Debug)]
struct StoredPeer {
    addr: SocketAddr,
    seed: bool,
    expires: Timestamp,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    peers: Vec<StoredPeer>,
    touched: Timestamp,
}

/// Peers announced to us, per infohash. Bounded in infohashes and in peers per
/// infohash; the least recently announced infohash is evicted first.
pub struct AnnounceStore {
    map: BTreeMap<InfoHash, Entry>,
    lru: BTreeSet<(Timestamp, InfoHash)>,
    max_infohashes: usize,
    max_peers: usize,
    ttl: Duration,
    pub evictions: u64,
}

impl AnnounceStore {
    pub fn new(max_infohashes: usize, max_peers: usize, ttl: Duration) -> Self {
        AnnounceStore {
            map: BTreeMap::new(),
            lru: BTreeSet::new(),
            max_infohashes: max_infohashes.max(1),
            max_peers: max_peers.max(1),
            ttl,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn announce(&mut self, now: Timestamp, ih: InfoHash, addr: SocketAddr, seed: bool) {
        if !self.map.contains_key(&ih) && self.map.len() >= self.max_infohashes {
            if let Some((_, old)) = self.lru.pop_first() {
                self.map.remove(&old);
                self.evictions += 1;
            }
        }
        let e = self.map.entry(ih).or_default();
        self.lru.remove(&(e.touched, ih));
        e.touched = now;
        self.lru.insert((now, ih));
        let expires = now.add(self.ttl);
        e.peers.retain(|p| p.expires > now);
        if let Some(p) = e.peers.iter_mut().find(|p| p.addr == addr) {
            p.expires = expires;
            p.seed = seed;
        } else {
            if e.peers.len() >= self.max_peers {
                // Drop the peer closest to expiry.
                if let Some(i) = e
                    .peers
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| p.expires)
                    .map(|(i, _)| i)
                {
                    e.peers.swap_remove(i);
                    self.evictions += 1;
                }
            }
            e.peers.push(StoredPeer {
                addr,
                seed,
                expires,
            });
        }
    }

    /// Up to `max` live peers of the given family for `ih` (`noseed` skips seeds).
    pub fn peers(
        &self,
        now: Timestamp,
        ih: &InfoHash,
        v6: bool,
        noseed: bool,
        max: usize,
    ) -> Vec<SocketAddr> {
        let Some(e) = self.map.get(ih) else {
            return Vec::new();
        };
        e.peers
            .iter()
            .filter(|p| p.expires > now && p.addr.is_ipv6() == v6 && !(noseed && p.seed))
            .take(max)
            .map(|p| p.addr)
            .collect()
    }

    /// BEP 33 bloom filters (seeds, peers) for `ih`.
    pub fn scrape(&self, now: Timestamp, ih: &InfoHash) -> (Bloom, Bloom) {
        let mut seeds = Bloom::default();
        let mut peers = Bloom::default();
        if let Some(e) = self.map.get(ih) {
            for p in e.peers.iter().filter(|p| p.expires > now) {
                if p.seed {
                    seeds.insert(p.addr.ip());
                } else {
                    peers.insert(p.addr.ip());
                }
            }
        }
        (seeds, peers)
    }

    /// A random sample of up to `max` stored infohashes (a contiguous run from a
    /// random point in the key space, wrapping around).
    pub fn sample(&self, rng: &mut Rng, max: usize, out: &mut Vec<InfoHash>) {
        if self.map.is_empty() || max == 0 {
            return;
        }
        let start = InfoHash(rng.bytes());
        for ih in self
            .map
            .range(start..)
            .chain(self.map.range(..start))
            .map(|(k, _)| *k)
            .take(max)
        {
            out.push(ih);
        }
    }

    /// Drops expired peers and empty infohashes, at most `budget` infohashes per call.
    pub fn expire(&mut self, now: Timestamp, budget: usize) {
        let horizon = now.sub(self.ttl);
        let stale: Vec<_> = self
            .lru
            .iter()
            .take_while(|(t, _)| *t <= horizon)
            .take(budget)
            .copied()
            .collect();
        for (t, ih) in stale {
            self.lru.remove(&(t, ih));
            self.map.remove(&ih);
        }
    }
}

/// Per-IP answer limiter (GCRA): each IP may be answered `rate` times per second
/// with a burst of `rate`. Bounded: when full, stale entries go first, then the
/// lowest address.
pub struct RateLimiter {
    tat: BTreeMap<IpAddr, Timestamp>,
    interval: Duration,
    burst: Duration,
    cap: usize,
    pub evictions: u64,
}

impl RateLimiter {
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

    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    /// Whether `ip` may be answered now (and charges it if so).
    pub fn allow(&mut self, now: Timestamp, ip: IpAddr) -> bool {
        if !self.tat.contains_key(&ip) && self.tat.len() >= self.cap {
            self.tat.retain(|_, t| *t > now);
            if self.tat.len() >= self.cap {
                self.tat.pop_first();
            }
            self.evictions += 1;
        }
        let tat = self.tat.get(&ip).copied().unwrap_or(now).max(now);
        if tat.since(now) + self.interval > self.burst {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn store_bounds_expiry_and_sample() {
        let mut s = AnnounceStore::new(3, 2, Duration::from_secs(60));
        let t = Timestamp::from_secs(1);
        let ih = |b: u8| InfoHash([b; 20]);
        s.announce(t, ih(1), a("1.1.1.1:1"), false);
        s.announce(t, ih(1), a("1.1.1.2:1"), true);
        s.announce(t, ih(1), a("1.1.1.3:1"), false);
        assert_eq!(s.peers(t, &ih(1), false, false, 10).len(), 2);
        assert_eq!(s.evictions, 1);
        s.announce(t, ih(2), a("[::1]:1"), false);
        assert_eq!(s.peers(t, &ih(2), true, false, 10), vec![a("[::1]:1")]);
        assert!(s.peers(t, &ih(2), false, false, 10).is_empty());
        s.announce(Timestamp::from_secs(2), ih(3), a("1.1.1.1:1"), false);
        s.announce(Timestamp::from_secs(3), ih(4), a("1.1.1.1:1"), false);
        assert_eq!(s.len(), 3);
        assert!(
            s.peers(t, &ih(1), false, false, 10).is_empty()
                || s.peers(t, &ih(2), true, false, 10).is_empty()
        );
        let mut out = Vec::new();
        s.sample(&mut Rng::new(1), 10, &mut out);
        assert_eq!(out.len(), 3);
        out.sort();
        out.dedup();
        assert_eq!(out.len(), 3);
        // Expiry.
        let later = Timestamp::from_secs(1000);
        assert!(s.peers(later, &ih(4), false, false, 10).is_empty());
        s.expire(later, 100);
        assert!(s.is_empty());
    }

    #[test]
    fn scrape_filters() {
        let mut s = AnnounceStore::new(3, 10, Duration::from_secs(60));
        let t = Timestamp::ZERO;
        let ih = InfoHash([7; 20]);
        s.announce(t, ih, a("1.1.1.1:1"), true);
        s.announce(t, ih, a("1.1.1.2:1"), false);
        s.announce(t, ih, a("1.1.1.3:1"), false);
        let (seeds, peers) = s.scrape(t, &ih);
        assert_eq!(seeds.estimate().round(), 1.0);
        assert_eq!(peers.estimate().round(), 2.0);
        assert_eq!(s.peers(t, &ih, false, true, 10).len(), 2);
    }

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
}
