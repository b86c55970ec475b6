//! Infohashes given up, remembered in fixed memory for a while (a rotating
//! pair of Bloom filters).
//!
//! An acquisition that failed every retry is given up: the infohash is not
//! acquired again when it is heard again (the runtime asks for every
//! discovery it has not stored). Keeping each as a full retry entry made the
//! crawler's heap grow all day (issue 18: neighbour mode gave up some 2,000
//! infohashes an hour). Here each filter has a fixed size, allocated when the
//! strategy starts: inserts go to the current one, lookups ask both, and when
//! the current one holds its capacity or is older than half of
//! [`CrawlConfig::given_up_for`](super::CrawlConfig::given_up_for), the older
//! one is cleared and becomes the current one. An infohash given up is so
//! remembered for at least the time one filter takes to fill or half the
//! period, and at most the whole period.
//!
//! A Bloom filter can say "given up" for an infohash that was not (a false
//! positive; never the other way). The filters are sized for about one in a
//! million at capacity (29 bits and 20 probes an entry), and the bit positions
//! come from SHA-1 of a secret key and the infohash, so that nobody can craft
//! infohashes whose give-ups hide another one.

use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::id::InfoHash;
use crate::time::Timestamp;

/// Bits per entry at capacity: −ln(10⁻⁶) / ln(2)² ≈ 28.8.
const BITS_PER_ENTRY: usize = 29;
/// Probes per entry: bits per entry × ln 2 ≈ 20.
const PROBES: u64 = 20;

/// See the module docs.
pub(crate) struct GivenUp {
    filters: [Vec<u64>; 2],
    /// Entries inserted into each filter since it was last cleared.
    counts: [usize; 2],
    /// The filter inserts go to.
    cur: usize,
    /// When the current filter became current.
    since: Timestamp,
    capacity: usize,
    half_period: Duration,
    key: [u8; 16],
    /// Times the older filter was cleared.
    pub rotations: u64,
}

impl GivenUp {
    /// Two filters of `capacity` entries each, rotated at least every
    /// `period / 2`; bit positions keyed with `key`.
    pub fn new(capacity: usize, period: Duration, key: [u8; 16], now: Timestamp) -> Self {
        let words = (capacity.max(1) * BITS_PER_ENTRY).div_ceil(64);
        GivenUp {
            filters: [vec![0; words], vec![0; words]],
            counts: [0; 2],
            cur: 0,
            since: now,
            capacity: capacity.max(1),
            half_period: period / 2,
            key,
            rotations: 0,
        }
    }

    fn probes(&self, ih: &InfoHash) -> impl Iterator<Item = (usize, u64)> {
        let mut h = Sha1::new();
        h.update(self.key);
        h.update(ih.0);
        let d = h.finalize();
        let word = |i: usize| {
            let mut b = [0u8; 8];
            for (j, x) in b.iter_mut().enumerate() {
                *x = d.get(i + j).copied().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        };
        let (h1, h2) = (word(0), word(8) | 1);
        let bits = (self.filters[0].len() * 64) as u64;
        (0..PROBES).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits.max(1);
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn rotate_if_due(&mut self, now: Timestamp) {
        let full = self.counts[self.cur] >= self.capacity;
        let old = now.since(self.since) >= self.half_period;
        if full || old {
            self.cur = 1 - self.cur;
            self.filters[self.cur].iter_mut().for_each(|w| *w = 0);
            self.counts[self.cur] = 0;
            self.since = now;
            self.rotations += 1;
        }
    }

    /// Remembers `ih` as given up.
    pub fn insert(&mut self, now: Timestamp, ih: &InfoHash) {
        self.rotate_if_due(now);
        if self.contains(ih) {
            return;
        }
        let cur = self.cur;
        let probes: Vec<(usize, u64)> = self.probes(ih).collect();
        for (w, m) in probes {
            if let Some(x) = self.filters[cur].get_mut(w) {
                *x |= m;
            }
        }
        self.counts[cur] += 1;
    }

    /// Whether `ih` was given up (within the time it is remembered; rarely
    /// true for one that was not, see the module docs).
    pub fn contains(&self, ih: &InfoHash) -> bool {
        let probes: Vec<(usize, u64)> = self.probes(ih).collect();
        self.filters.iter().any(|f| {
            probes
                .iter()
                .all(|&(w, m)| f.get(w).is_some_and(|x| x & m != 0))
        })
    }

    /// Entries held (both filters), at most [`GivenUp::bound`].
    pub fn len(&self) -> usize {
        self.counts[0] + self.counts[1]
    }

    /// The cap on [`GivenUp::len`].
    pub fn bound(&self) -> usize {
        2 * self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(i: u32) -> InfoHash {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b[19] = 0x5a;
        InfoHash(b)
    }

    #[test]
    fn remembers_for_a_while_then_forgets_and_stays_within_its_size() {
        let t0 = Timestamp::from_secs(10);
        let hour = Duration::from_secs(3600);
        let mut g = GivenUp::new(100, 24 * hour, [7; 16], t0);
        let words = g.filters[0].len();
        for i in 0..100 {
            g.insert(t0, &ih(i));
        }
        assert!((0..100).all(|i| g.contains(&ih(i))));
        // None of 100,000 others is taken for given up (at capacity the
        // false-positive rate is about one in a million).
        let fp = (1000..101_000).filter(|&i| g.contains(&ih(i))).count();
        assert!(fp <= 2, "{fp} false positives");
        // The filter is full: the next insert rotates, the first 100 are still
        // remembered (in the older filter).
        g.insert(t0, &ih(500));
        assert_eq!(g.rotations, 1);
        assert!((0..100).all(|i| g.contains(&ih(i))) && g.contains(&ih(500)));
        // Half a period later the older filter is cleared: the first 100 are
        // forgotten, the one given up since is not.
        g.insert(t0.add(12 * hour), &ih(501));
        assert_eq!(g.rotations, 2);
        assert!((0..100).all(|i| !g.contains(&ih(i))));
        assert!(g.contains(&ih(500)) && g.contains(&ih(501)));
        assert!(g.len() <= g.bound());
        // Fixed memory, whatever was inserted.
        for i in 0..10_000 {
            g.insert(t0.add(12 * hour), &ih(20_000 + i));
        }
        assert!(g.len() <= g.bound());
        assert_eq!(g.filters[0].len(), words);
        assert_eq!(g.filters[1].len(), words);
        assert!(g.filters.iter().all(|f| f.capacity() == words));
    }

    #[test]
    fn the_key_decides_the_bits() {
        let t0 = Timestamp::from_secs(10);
        let d = Duration::from_secs(3600);
        let a = GivenUp::new(100, d, [1; 16], t0);
        let b = GivenUp::new(100, d, [2; 16], t0);
        let pa: Vec<_> = a.probes(&ih(1)).collect();
        let pb: Vec<_> = b.probes(&ih(1)).collect();
        assert_ne!(pa, pb);
    }
}
