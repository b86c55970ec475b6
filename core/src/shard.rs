//! Sharding the keyspace between the crawlers of a fleet (issue 21 §2).
//!
//! A fleet of `N` crawler processes splits the 160-bit keyspace into `N` slices
//! of equal width, by the top 32 bits of an id: `x = top32(id)` lies in slice
//! `floor(x · N / 2³²)`. Shard `I` of `N`:
//!
//! * **owns** the infohashes of slice `I`: it acquires those it discovers, and
//!   those other shards discovered and offered to the shared queue; an infohash
//!   of another slice is *offered* (`Event::InfohashOffered`), not acquired;
//! * puts its identities' **ids** in slice `I` where it can. BEP 42 fixes an id's
//!   top 21 bits from the external IP and 3 random bits `r` (8 prefixes per IP);
//!   the shard picks, for each identity on one IP, the `r` whose prefix lies in (or
//!   nearest to) the slice, nearest its centre first, so several identities on one
//!   address still take distinct prefixes, and then draws the 11 free bits of the
//!   top 32 inside the slice (or as near to it as the prefix allows). An id not
//!   tied to an IP (no external address known yet) is drawn inside the slice. The
//!   prefix stays BEP 42's: `--external-ip` and the external-address vote rule it.
//! * keeps its **walk** in the slice: BEP 51 sample targets and find_node
//!   exploration probes are drawn inside the slice, and the node book admits only
//!   nodes whose id is in it, so each shard samples its own region of the DHT.
//!
//! `Shard::ALL` (`0/1`) is one slice holding everything: today's behaviour, with
//! exactly the same random draws.

use std::fmt;
use std::net::IpAddr;

use crate::id::{bep42_node_id_r, NodeId};
use crate::rng::Rng;

/// The most shards a fleet may have.
pub const MAX_SHARDS: u16 = 256;

/// Shard `index` of `count` (`0 ≤ index < count ≤ 256`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u16,
    count: u16,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a shard was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardError(pub String);

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShardError {}

impl Shard {
    /// The whole keyspace in one slice: an unsharded crawler.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; an error unless `0 ≤ index < count ≤ 256`.
    pub fn new(index: u16, count: u16) -> Result<Shard, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError(format!(
                "shard count {count} is out of range: it must be 1 to {MAX_SHARDS}"
            )));
        }
        if index >= count {
            return Err(ShardError(format!(
                "shard index {index} is out of range: with {count} shards it must be 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N` (as `--shard` takes it).
    pub fn parse(s: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError(format!("invalid shard {s:?}: expected I/N, e.g. 0/3"));
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let n16 = u16::try_from(n).unwrap_or(u16::MAX);
        let i16 = u16::try_from(i).unwrap_or(u16::MAX);
        Shard::new(i16, n16)
    }

    /// This shard's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether the keyspace is split at all (`count > 1`).
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// The shard that owns `id` (an infohash or a node id), of `count`.
    pub fn owner_of(count: u16, id: &[u8; 20]) -> u16 {
        let x = u64::from(top32(id));
        ((x * u64::from(count.max(1))) >> 32) as u16
    }

    /// Whether `id` lies in this shard's slice.
    pub fn contains(&self, id: &[u8; 20]) -> bool {
        Shard::owner_of(self.count, id) == self.index
    }

    /// The slice's first and last top-32-bit values (inclusive).
    pub fn range(&self) -> (u32, u32) {
        let n = u64::from(self.count);
        // Smallest x with x·n ≥ i·2³²: ceil(i·2³² / n).
        let lo = |i: u64| (i << 32).div_ceil(n);
        let first = lo(u64::from(self.index));
        let last = lo(u64::from(self.index) + 1) - 1;
        (first as u32, last.min(u64::from(u32::MAX)) as u32)
    }

    /// The slice's centre (top 32 bits).
    pub fn centre(&self) -> u32 {
        let (a, b) = self.range();
        ((u64::from(a) + u64::from(b)) / 2) as u32
    }

    /// A random id inside the slice (160 random bits for `ALL`, as before).
    pub fn random_id(&self, rng: &mut Rng) -> NodeId {
        let mut id = NodeId::random(rng);
        if self.is_sharded() {
            let (a, b) = self.range();
            let x = a + (top32(&id.0) % (b - a + 1));
            set_top32(&mut id.0, x);
        }
        id
    }

    /// `id` moved into the slice when it is not there: its top 32 bits are
    /// replaced by a point of the slice drawn from its own bits (so the rest of
    /// it, e.g. the tail of a sample target, is kept).
    pub fn pull_in(&self, mut id: NodeId) -> NodeId {
        if self.is_sharded() && !self.contains(&id.0) {
            let (a, b) = self.range();
            let x = a + (top32(&id.0) % (b - a + 1));
            set_top32(&mut id.0, x);
        }
        id
    }

    /// `n` BEP 42 ids for external address `ip`, for `n` identities sharing it,
    /// placed as the module doc says: each takes a distinct `r` (while there are
    /// 8), ranked by how near its prefix lies to the slice (then to its centre),
    /// and the free bits of the top 32 inside the slice or nearest to it.
    /// Draws 8 candidate ids from `rng` per call (whatever `n`).
    pub fn bep42_ids(&self, ip: IpAddr, n: usize, rng: &mut Rng) -> Vec<NodeId> {
        let (lo, hi) = self.range();
        let centre = self.centre();
        let mut cands: Vec<(u64, u64, u8, NodeId)> = (0..8u8)
            .map(|r| {
                let mut id = bep42_node_id_r(ip, r, rng);
                let p = top32(&id.0) & !0x7ff;
                let (pa, pb) = (p, p | 0x7ff);
                // The part of the prefix's range inside the slice, if any.
                let (a, b) = (pa.max(lo), pb.min(hi));
                let (gap, x) = if a <= b {
                    // Free bits drawn inside the slice.
                    let span = u64::from(b - a) + 1;
                    let x = a + (u64::from(top32(&id.0)) % span) as u32;
                    (0u64, x)
                } else if pb < lo {
                    (u64::from(lo - pb), pb)
                } else {
                    (u64::from(pa - hi), pa)
                };
                set_top32(&mut id.0, x);
                let mid = u64::from(p | 0x400);
                (gap, mid.abs_diff(u64::from(centre)), r, id)
            })
            .collect();
        cands.sort_by_key(|c| (c.0, c.1, c.2));
        (0..n).map(|k| cands[k % cands.len()].3).collect()
    }
}

/// The top 32 bits of an id.
pub(crate) fn top32(id: &[u8; 20]) -> u32 {
    u32::from_be_bytes([id[0], id[1], id[2], id[3]])
}

fn set_top32(id: &mut [u8; 20], x: u32) {
    id[..4].copy_from_slice(&x.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::bep42_matches;

    #[test]
    fn parse_accepts_valid_and_rejects_the_rest() {
        assert_eq!(Shard::parse("0/1"), Ok(Shard::ALL));
        assert_eq!(
            Shard::parse("2/3").map(|s| (s.index(), s.count())),
            Ok((2, 3))
        );
        assert_eq!(Shard::parse("255/256").map(|s| s.index()), Ok(255));
        for bad in [
            "3/3",
            "0/0",
            "1/257",
            "x/3",
            "1",
            "-1/3",
            "1/3/4",
            "",
            "70000/70001",
        ] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{bad}");
        }
        assert!(Shard::parse("3/3").unwrap_err().0.contains("0 to 2"));
    }

    #[test]
    fn slices_tile_the_keyspace_and_owner_agrees_with_range() {
        for n in [1u16, 2, 3, 7, 10, 255, 256] {
            let mut next = 0u64;
            for i in 0..n {
                let s = Shard::new(i, n).unwrap();
                let (a, b) = s.range();
                assert_eq!(u64::from(a), next, "{s}");
                assert!(a <= b);
                next = u64::from(b) + 1;
                for x in [a, b, s.centre()] {
                    let mut id = [0xa5u8; 20];
                    set_top32(&mut id, x);
                    assert_eq!(Shard::owner_of(n, &id), i, "{s} {x:#x}");
                    assert!(s.contains(&id));
                }
            }
            assert_eq!(next, 1u64 << 32, "n={n}");
        }
    }

    /// Property test over many seeds and IPs: random ids, pulled-in targets and
    /// BEP 42 ids. A BEP 42 id lies in the slice whenever one of the 8 prefixes of
    /// its IP reaches the slice; otherwise it is the nearest any prefix allows.
    #[test]
    fn ids_and_targets_stay_in_the_slice() {
        let mut reachable = 0;
        let mut unreachable = 0;
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed);
            let n = [2u16, 3, 5, 8, 16, 100, 256][seed as usize % 7];
            let s = Shard::new((seed % u64::from(n)) as u16, n).unwrap();
            let (lo, hi) = s.range();
            for _ in 0..20 {
                assert!(s.contains(&s.random_id(&mut rng).0));
                assert!(s.contains(&s.pull_in(NodeId::random(&mut rng)).0));
            }
            let o: [u8; 4] = rng.bytes();
            let ip = IpAddr::from([o[0] | 1, o[1], o[2], o[3]]);
            let ids = s.bep42_ids(ip, 3, &mut rng);
            // The 8 prefixes this IP allows.
            let mut probe = Rng::new(seed ^ 0xffff);
            let prefixes: Vec<u32> = (0..8u8)
                .map(|r| top32(&bep42_node_id_r(ip, r, &mut probe).0) & !0x7ff)
                .collect();
            let any_in = prefixes.iter().any(|&p| p <= hi && (p | 0x7ff) >= lo);
            for id in &ids {
                assert!(bep42_matches(id, ip), "BEP 42 still holds");
            }
            if any_in {
                reachable += 1;
                assert!(s.contains(&ids[0].0), "seed {seed}: {s} {:?}", ids[0]);
            } else {
                unreachable += 1;
                let gap = |x: u32| {
                    if x < lo {
                        lo - x
                    } else {
                        x.saturating_sub(hi)
                    }
                };
                let best = prefixes
                    .iter()
                    .map(|&p| gap(p).min(gap(p | 0x7ff)))
                    .min()
                    .unwrap();
                assert_eq!(gap(top32(&ids[0].0)), best, "seed {seed}");
            }
            // Distinct prefixes for identities sharing the address.
            assert_ne!(ids[0].0[19] & 7, ids[1].0[19] & 7);
            assert_ne!(ids[1].0[19] & 7, ids[2].0[19] & 7);
        }
        assert!(
            reachable > 0 && unreachable > 0,
            "{reachable} {unreachable}"
        );
    }

    #[test]
    fn unsharded_draws_are_unchanged() {
        let mut a = Rng::new(9);
        let mut b = Rng::new(9);
        assert_eq!(Shard::ALL.random_id(&mut a), NodeId::random(&mut b));
        let id = NodeId::random(&mut a);
        assert_eq!(Shard::ALL.pull_in(id), id);
    }
}
