//! Kademlia routing table (BEP 5), one per identity and family (BEP 32).
//!
//! # Layout
//!
//! Bucket `i` (for every bucket but the last) holds the nodes whose XOR distance to
//! our own id has exactly `i` leading zero bits, i.e. the ids that share the first
//! `i` bits with ours and differ at bit `i`. The last bucket holds every id sharing
//! at least `len - 1` bits with ours: it is the one bucket that covers our own id,
//! and the only one that splits (BEP 5). Each bucket is therefore an aligned,
//! contiguous block of the id space, and together they partition it.
//!
//! All bucket nodes live in one `BTreeMap` ordered by id, so a bucket is a range of
//! that map and [`RoutingTable::closest`] can walk prefix blocks around the target
//! (a binary-trie walk: nearest block first, then its siblings outward) and stop as
//! soon as it holds `n` candidates, instead of sorting the whole table.
//!
//! # Bucket sizes
//!
//! Plain BEP 5 buckets of `k = 8` hold only a few hundred nodes. A crawler wants
//! thousands, so [`RoutingConfig::bucket_sizes`] gives a capacity per bucket depth
//! (depth 0 is the far half of the key space). libtorrent's "extended routing
//! table" corresponds to `vec![128, 64, 32, 16]`; [`RoutingConfig::wide`] builds a
//! halving schedule (e.g. `wide(4096)` keeps about 8,000 nodes).
//!
//! # Node lifecycle
//!
//! * Only proven nodes are inserted: the crawler calls [`RoutingTable::heard_from`]
//!   for nodes that answered us or sent us a query directly (never BEP 43 read-only
//!   nodes, never nodes merely mentioned by others).
//! * Status (BEP 5): *good* if it has ever answered us and we heard from it (answer
//!   or query) within `good_window`; *bad* after `bad_failures` consecutive failed
//!   queries; *questionable* otherwise (including nodes that never answered).
//! * A full bucket first splits (if it is the last one), then replaces a bad node,
//!   then lets a BEP 42-verified node that just answered displace an unverified
//!   questionable one, then parks the newcomer in the bucket's replacement cache if
//!   any node is questionable (and [`RoutingTable::next_to_ping`] offers questionable
//!   nodes, least recently seen first). A bucket full of good nodes rejects.
//! * A node is evicted after `max_failures` consecutive failures, or as soon as it is
//!   bad and the replacement cache has a candidate; the best cached node is promoted.
//! * An address that shows up with a different id is suspect: the new id is rejected
//!   with [`RejectReason::SuspectId`] for `suspect_window`. If the change came in a
//!   response (proven), the stale entry is dropped; a query (spoofable) never evicts.
//!
//! Everything is deterministic (ordered maps, no clocks) and bounded: buckets by
//! their capacity, caches by `replacements`, the whole table by `max_nodes`, the
//! suspect list by `max_suspects` and the event queue by `max_events`.

mod bits;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::addr::{canonical, Family};
use crate::id::{bep42_verify, NodeId};
use crate::rng::Rng;
use crate::time::Timestamp;

use bits::{block, common_prefix, flip, random_in_block, successor, Key};

/// The query methods [`MethodCounts::slot`] indexes (the crawler's own KRPC methods).
pub use crate::rpc::Method;

/// The most buckets a table can have: one per distance exponent.
pub const MAX_BUCKETS: usize = 160;

/// Routing table settings. Defaults follow BEP 5 (k = 8, 15-minute windows); see
/// [`RoutingConfig::wide`] for a crawler-sized table.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    /// Bucket size (BEP 5 K). Also the size of every bucket deeper than `bucket_sizes`.
    pub k: usize,
    /// Capacity of the bucket at each depth, farthest first: entry `i` sizes the
    /// bucket whose nodes share exactly `i` leading bits with our id (and the last
    /// bucket while it sits at depth `i`). Depths past the end use `k`. Empty (the
    /// default) is a plain BEP 5 table. See [`RoutingConfig::wide`].
    pub bucket_sizes: Vec<usize>,
    /// Replacement-cache entries per bucket.
    pub replacements: usize,
    /// Cap on nodes in the table (buckets plus replacement caches).
    pub max_nodes: usize,
    /// At most one node per /24 (IPv4) or /64 (IPv6) in a bucket.
    pub one_per_subnet: bool,
    /// A node is good if it responded within this window (BEP 5: 15 minutes).
    pub good_window: Duration,
    /// Consecutive failures after which a node is bad (BEP 5: try once more).
    pub bad_failures: u32,
    /// Consecutive failures after which a node is evicted.
    pub max_failures: u32,
    /// Buckets idle this long are refreshed.
    pub refresh_interval: Duration,
    /// How long an address whose id changed stays suspect.
    pub suspect_window: Duration,
    /// Cap on suspect addresses tracked (the one expiring first is forgotten).
    pub max_suspects: usize,
    /// Cap on queued [`RoutingEvent`]s not yet taken (further ones are counted and dropped).
    pub max_events: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            k: 8,
            bucket_sizes: Vec::new(),
            replacements: 8,
            max_nodes: 10_000,
            one_per_subnet: true,
            good_window: Duration::from_secs(15 * 60),
            bad_failures: 2,
            max_failures: 5,
            refresh_interval: Duration::from_secs(15 * 60),
            suspect_window: Duration::from_secs(15 * 60),
            max_suspects: 1024,
            max_events: 65_536,
        }
    }
}

impl RoutingConfig {
    /// A crawler-sized table: the farthest bucket holds `top` nodes, each deeper one
    /// half as many, down to `k`. With random ids a table fills to about `2 * top`
    /// nodes (`wide(4096)` holds some 8,200). `max_nodes` is raised to fit.
    pub fn wide(top: usize) -> Self {
        let mut cfg = RoutingConfig::default();
        let mut size = top;
        while size > cfg.k && cfg.bucket_sizes.len() < MAX_BUCKETS {
            cfg.bucket_sizes.push(size);
            size /= 2;
        }
        let sum: usize = cfg.bucket_sizes.iter().sum();
        cfg.max_nodes = sum + 64 * (cfg.k + cfg.replacements);
        cfg
    }

    /// Capacity of a bucket at `depth` (at least 1).
    pub fn bucket_capacity(&self, depth: usize) -> usize {
        self.bucket_sizes
            .get(depth)
            .copied()
            .unwrap_or(self.k)
            .max(1)
    }

    fn max_failures(&self) -> u32 {
        self.max_failures.max(1)
    }

    fn bad_failures(&self) -> u32 {
        self.bad_failures.clamp(1, self.max_failures())
    }
}

/// How we heard from a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// It answered one of our queries.
    Response {
        /// The round-trip time of that query.
        rtt: Duration,
    },
    /// It sent us a query (proves reachability less strongly).
    Query,
}

/// BEP 5 node status (see the module docs for the rules).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Answered us at least once and was heard from within `good_window`.
    Good,
    /// Neither good nor bad (including nodes that never answered).
    Questionable,
    /// `bad_failures` or more consecutive failed queries.
    Bad,
}

/// A node in the table, as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its node id.
    pub id: NodeId,
    /// Its address (canonical: IPv4-mapped IPv6 is stored as IPv4).
    pub addr: SocketAddr,
    /// Last time it answered us or queried us.
    pub last_seen: Timestamp,
    /// Last time it answered one of our queries (`None`: never).
    pub last_response: Option<Timestamp>,
    /// Round-trip estimate: an exponentially weighted moving average (1/8 per sample).
    pub rtt: Option<Duration>,
    /// Consecutive failures (reset by a response).
    pub failures: u32,
    /// BEP 42 verified (its id matches its IP).
    pub verified: bool,
    /// Our queries to it and its answers, by method, since it entered the table.
    pub counts: MethodCounts,
}

/// Finished queries to one node (answered or timed out in full) and the answered
/// ones, indexed by [`MethodCounts::slot`]: ping, find_node, get_peers,
/// announce_peer, sample_infohashes. Saturating.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// Finished queries, by method slot.
    pub queries: [u32; 5],
    /// Answered queries, by method slot.
    pub responses: [u32; 5],
}

impl MethodCounts {
    /// The index of method `m` in `queries` and `responses` (0 to 4).
    pub fn slot(m: crate::rpc::Method) -> usize {
        use crate::rpc::Method;
        match m {
            Method::Ping => 0,
            Method::FindNode => 1,
            Method::GetPeers => 2,
            Method::AnnouncePeer => 3,
            Method::SampleInfohashes => 4,
        }
    }
}

/// What [`RoutingTable::heard_from`] did with a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Put into a bucket (a [`RoutingEvent::Added`] is queued).
    Added,
    /// Already in the table: its times, RTT and failure count were refreshed.
    Updated,
    /// Kept in the bucket's replacement cache.
    Cached,
    /// Not kept, for this reason.
    Rejected(RejectReason),
}

/// Why a node was not kept.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// It has our own id.
    OwnId,
    /// Its bucket is full of good nodes and cannot split.
    BucketFull,
    /// Its bucket already holds a node of its /24 (IPv4) or /64 (IPv6) (`one_per_subnet`).
    SubnetTaken,
    /// The table holds `max_nodes` nodes.
    TableFull,
    /// The address's id keeps changing: not trusted.
    SuspectId,
    /// Its address is not of the table's family.
    WrongFamily,
    /// The id is already in the table at another address that is still good (or
    /// the claim came in a query, which cannot prove it).
    IdInUse,
}

/// A change of bucket membership, queued for the crawler (which turns it into
/// [`crate::Event::NodeAdded`] / [`crate::Event::NodeRemoved`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutingEvent {
    /// A node entered a bucket.
    Added {
        /// The node's id.
        id: NodeId,
        /// The node's address.
        addr: SocketAddr,
    },
    /// A node left its bucket.
    Removed {
        /// The node's id.
        id: NodeId,
        /// The node's address.
        addr: SocketAddr,
    },
}

/// Counters. `added` and `removed` count bucket membership (not the caches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// Nodes put into a bucket.
    pub added: u64,
    /// Nodes removed from a bucket.
    pub removed: u64,
    /// Rejected: [`RejectReason::BucketFull`].
    pub rejected_bucket_full: u64,
    /// Rejected: [`RejectReason::SubnetTaken`].
    pub rejected_subnet: u64,
    /// Rejected: [`RejectReason::TableFull`].
    pub rejected_table_full: u64,
    /// Rejected: [`RejectReason::SuspectId`].
    pub rejected_suspect: u64,
    /// Bucket splits.
    pub splits: u64,
    /// Rejected: [`RejectReason::OwnId`].
    pub rejected_own_id: u64,
    /// Rejected: [`RejectReason::WrongFamily`].
    pub rejected_family: u64,
    /// Rejected: [`RejectReason::IdInUse`].
    pub rejected_id_in_use: u64,
    /// Ids seen changing at a known or suspect address.
    pub id_changes: u64,
    /// Newcomers parked in a replacement cache.
    pub cached: u64,
    /// Cached nodes moved into a bucket.
    pub promoted: u64,
    /// Bucket nodes removed for failing (bad with a replacement waiting, or `max_failures`).
    pub evicted_failed: u64,
    /// Bad nodes replaced by a newcomer.
    pub replaced_bad: u64,
    /// Unverified questionable nodes displaced by a BEP 42-verified newcomer.
    pub displaced_unverified: u64,
    /// Events dropped because `max_events` were already queued.
    pub events_dropped: u64,
}

impl RoutingStats {
    /// Adds another table's counters (for totals over identities).
    pub fn add(&mut self, o: &RoutingStats) {
        self.added += o.added;
        self.removed += o.removed;
        self.rejected_bucket_full += o.rejected_bucket_full;
        self.rejected_subnet += o.rejected_subnet;
        self.rejected_table_full += o.rejected_table_full;
        self.rejected_suspect += o.rejected_suspect;
        self.splits += o.splits;
        self.rejected_own_id += o.rejected_own_id;
        self.rejected_family += o.rejected_family;
        self.rejected_id_in_use += o.rejected_id_in_use;
        self.id_changes += o.id_changes;
        self.cached += o.cached;
        self.promoted += o.promoted;
        self.evicted_failed += o.evicted_failed;
        self.replaced_bad += o.replaced_bad;
        self.displaced_unverified += o.displaced_unverified;
        self.events_dropped += o.events_dropped;
    }
}

#[derive(Clone, Debug)]
struct Node {
    e: NodeEntry,
    /// Offered by `next_to_ping` and not answered or failed since.
    pinged: bool,
}

#[derive(Clone, Debug)]
struct Bucket {
    /// Nodes of this bucket in `RoutingTable::nodes`.
    count: usize,
    /// Replacement cache, at most `cfg.replacements`.
    cache: Vec<NodeEntry>,
    last_changed: Timestamp,
    /// A survey found every node good, and they all stay good before this time
    /// (unless one fails or membership changes, which clear it). Lets a full bucket
    /// of good nodes turn newcomers away without a scan.
    all_good_until: Option<Timestamp>,
}

impl Bucket {
    fn new(now: Timestamp) -> Self {
        Bucket {
            count: 0,
            cache: Vec::new(),
            last_changed: now,
            all_good_until: None,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Where {
    id: NodeId,
    cached: bool,
}

#[derive(Copy, Clone, Debug)]
struct Suspect {
    until: Timestamp,
    last_id: NodeId,
    changes: u32,
}

/// What a full bucket offers a newcomer.
#[derive(Default)]
struct Survey {
    /// The bad node to replace: most failures, then least recently seen.
    worst_bad: Option<(u32, Timestamp, NodeId)>,
    /// Least recently seen unverified questionable node.
    unverified: Option<(Timestamp, NodeId)>,
    any_questionable: bool,
}

/// Why `try_bucket` could not place a node.
enum Fallback {
    Cache,
    Reject(RejectReason),
}

type Subnet = [u8; 8];

fn subnet(addr: &SocketAddr) -> Subnet {
    let mut s = [0u8; 8];
    match addr.ip() {
        IpAddr::V4(v4) => s[..3].copy_from_slice(&v4.octets()[..3]),
        IpAddr::V6(v6) => s.copy_from_slice(&v6.octets()[..8]),
    }
    s
}

fn ewma(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        None => sample,
        Some(o) => (o.saturating_mul(7).saturating_add(sample)) / 8,
    }
}

/// Cache preference: healthier, BEP 42-verified, proven, recently seen first.
fn cache_rank(e: &NodeEntry) -> (bool, bool, bool, Timestamp) {
    (
        e.failures == 0,
        e.verified,
        e.last_response.is_some(),
        e.last_seen,
    )
}

/// The routing table of one identity and address family (see the module docs).
pub struct RoutingTable {
    own_id: NodeId,
    family: Family,
    cfg: RoutingConfig,
    stats: RoutingStats,
    buckets: Vec<Bucket>,
    /// Every bucket node, by id (a bucket is a range of this map).
    nodes: BTreeMap<Key, Node>,
    /// Every bucket and cache node, by address.
    by_addr: BTreeMap<SocketAddr, Where>,
    /// (subnet, id) of bucket nodes, when `one_per_subnet`.
    subnets: BTreeSet<(Subnet, NodeId)>,
    /// Unpinged bucket nodes that have answered us, by last_seen.
    ping_responded: BTreeSet<(Timestamp, NodeId)>,
    /// Unpinged bucket nodes that never answered us, by last_seen.
    ping_unresponded: BTreeSet<(Timestamp, NodeId)>,
    cached_total: usize,
    suspects: BTreeMap<SocketAddr, Suspect>,
    events: Vec<RoutingEvent>,
}

impl RoutingTable {
    /// An empty table around `own_id` (one bucket covering the whole key space).
    pub fn new(own_id: NodeId, family: Family, cfg: RoutingConfig) -> Self {
        RoutingTable {
            own_id,
            family,
            cfg,
            stats: RoutingStats::default(),
            buckets: vec![Bucket::new(Timestamp::ZERO)],
            nodes: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            subnets: BTreeSet::new(),
            ping_responded: BTreeSet::new(),
            ping_unresponded: BTreeSet::new(),
            cached_total: 0,
            suspects: BTreeMap::new(),
            events: Vec::new(),
        }
    }
    /// The id the buckets are arranged around.
    pub fn own_id(&self) -> NodeId {
        self.own_id
    }
    /// The address family this table accepts.
    pub fn family(&self) -> Family {
        self.family
    }
    /// Its settings.
    pub fn config(&self) -> &RoutingConfig {
        &self.cfg
    }

    /// We heard from `id` at `addr` directly. Inserts, updates or caches it.
    pub fn heard_from(
        &mut self,
        now: Timestamp,
        id: NodeId,
        addr: SocketAddr,
        how: Contact,
    ) -> InsertOutcome {
        let addr = canonical(addr);
        if Family::of(&addr) != self.family {
            self.stats.rejected_family += 1;
            return InsertOutcome::Rejected(RejectReason::WrongFamily);
        }
        if id == self.own_id {
            self.stats.rejected_own_id += 1;
            return InsertOutcome::Rejected(RejectReason::OwnId);
        }
        let proven = matches!(how, Contact::Response { .. });

        if let Some(w) = self.by_addr.get(&addr).copied() {
            if w.id == id {
                if w.cached {
                    return self.touch_cached(now, id, addr, how);
                }
                self.touch(now, id, how);
                return InsertOutcome::Updated;
            }
            // The id at a known address changed.
            self.note_id_change(now, addr, id);
            if proven {
                self.drop_addr(now, addr);
            }
            self.stats.rejected_suspect += 1;
            return InsertOutcome::Rejected(RejectReason::SuspectId);
        }

        if let Some(s) = self.suspects.get_mut(&addr) {
            if now < s.until {
                if s.last_id != id {
                    s.last_id = id;
                    s.changes = s.changes.saturating_add(1);
                    s.until = now.add(self.cfg.suspect_window);
                    self.stats.id_changes += 1;
                }
                self.stats.rejected_suspect += 1;
                return InsertOutcome::Rejected(RejectReason::SuspectId);
            }
            self.suspects.remove(&addr);
        }

        if let Some(other) = self.find_id(&id, now) {
            let (other_addr, good) = other;
            if !proven || good {
                self.stats.rejected_id_in_use += 1;
                return InsertOutcome::Rejected(RejectReason::IdInUse);
            }
            // It answered from a new address and the old one went quiet: it moved.
            self.drop_addr(now, other_addr);
        }

        let entry = NodeEntry {
            id,
            addr,
            last_seen: now,
            last_response: proven.then_some(now),
            rtt: match how {
                Contact::Response { rtt } => Some(rtt),
                Contact::Query => None,
            },
            failures: 0,
            verified: bep42_verify(&id, addr.ip()),
            counts: MethodCounts::default(),
        };
        match self.try_bucket(now, entry, proven) {
            Ok(()) => InsertOutcome::Added,
            Err((entry, Fallback::Cache)) => {
                let b = self.bucket_of(&entry.id);
                match self.try_cache(b, entry) {
                    Ok(()) => {
                        self.stats.cached += 1;
                        InsertOutcome::Cached
                    }
                    Err(r) => self.reject(r),
                }
            }
            Err((_, Fallback::Reject(r))) => self.reject(r),
        }
    }

    /// A query to `addr` timed out in full; counts a failure, evicting at `max_failures`
    /// (or as soon as the node is bad and its bucket's replacement cache has a candidate).
    /// A cached node that fails is dropped from the cache.
    pub fn failed(&mut self, now: Timestamp, addr: SocketAddr) {
        let addr = canonical(addr);
        let Some(w) = self.by_addr.get(&addr).copied() else {
            return;
        };
        let b = self.bucket_of(&w.id);
        if w.cached {
            self.cache_remove(b, &addr);
            return;
        }
        let mut failures = 0;
        self.buckets[b].all_good_until = None;
        self.update_node(&w.id, |n| {
            n.e.failures = n.e.failures.saturating_add(1);
            n.pinged = false;
            failures = n.e.failures;
        });
        let evict = failures >= self.cfg.max_failures()
            || (failures >= self.cfg.bad_failures() && !self.buckets[b].cache.is_empty());
        if evict {
            self.detach(&w.id);
            self.stats.evicted_failed += 1;
            self.promote(now, b);
        }
    }

    /// A query of ours to `addr` finished: answered, or timed out in full. Counted
    /// on the node when it is in a bucket (replacement candidates are not counted).
    pub fn count_query(&mut self, addr: SocketAddr, m: crate::rpc::Method, answered: bool) {
        let Some(w) = self.by_addr.get(&canonical(addr)).copied() else {
            return;
        };
        if w.cached {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&Key::of(&w.id.0)) {
            let c = &mut n.e.counts;
            let k = MethodCounts::slot(m);
            c.queries[k] = c.queries[k].saturating_add(1);
            if answered {
                c.responses[k] = c.responses[k].saturating_add(1);
            }
        }
    }

    /// Removes a node outright (for example, it was blacklisted), from a bucket (then
    /// promoting a replacement) or from a replacement cache.
    pub fn remove(&mut self, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        // Promotion stamps the bucket's last_changed with the time it was last changed.
        let Some(w) = self.by_addr.get(&addr).copied() else {
            return false;
        };
        let b = self.bucket_of(&w.id);
        let now = self.buckets[b].last_changed;
        self.drop_addr(now, addr)
    }

    /// Up to `n` non-bad nodes closest to `target`, nearest first (good before
    /// questionable at equal rank is not required). Clears `out` first.
    ///
    /// Nodes sharing a longer prefix with the target are nearer, and the nodes
    /// sharing exactly `p` bits form one contiguous run of the id-ordered map on one
    /// side of the target. So two cursors walk outward from the target's position,
    /// always advancing the side whose next node shares the longer prefix (a binary
    /// trie walk, nearest block first), and stop once `n` candidates are held and
    /// the current block is complete. Only that small candidate set is sorted.
    pub fn closest(&self, target: &[u8; 20], n: usize, out: &mut Vec<NodeEntry>) {
        out.clear();
        if n == 0 || self.nodes.is_empty() {
            return;
        }
        let t = Key::of(target);
        let bad = self.cfg.bad_failures();
        fn step<'a>(t: Key, (k, node): (&Key, &'a Node)) -> (u32, Key, &'a Node) {
            (k.xor(t).leading_zeros(), *k, node)
        }
        let mut left = self.nodes.range(..t).rev();
        let mut right = self.nodes.range(t..);
        let mut l = left.next().map(|x| step(t, x));
        let mut r = right.next().map(|x| step(t, x));
        // (distance, node)
        let mut cand: Vec<(Key, &Node)> = Vec::with_capacity(n.min(32) * 2);
        let mut block = u32::MAX;
        loop {
            let from_left = match (&l, &r) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => a.0 >= b.0,
            };
            let next = if from_left { &mut l } else { &mut r };
            let Some((c, k, node)) = *next else {
                break;
            };
            if c < block {
                if cand.len() >= n {
                    break;
                }
                block = c;
            }
            if node.e.failures < bad {
                cand.push((k.xor(t), node));
            }
            *next = if from_left {
                left.next().map(|x| step(t, x))
            } else {
                right.next().map(|x| step(t, x))
            };
        }
        if cand.len() > n {
            cand.select_nth_unstable_by_key(n - 1, |c| c.0);
            cand.truncate(n);
        }
        cand.sort_unstable_by_key(|c| c.0);
        out.extend(cand.into_iter().map(|(_, node)| node.e.clone()));
    }

    /// Nodes in buckets (not replacement caches).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True when no bucket holds a node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Nodes in replacement caches.
    pub fn cached_len(&self) -> usize {
        self.cached_total
    }
    /// Number of buckets (1 to [`MAX_BUCKETS`]).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
    /// All nodes in buckets, in bucket order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> + '_ {
        (0..self.buckets.len()).flat_map(move |i| self.bucket_nodes(i).map(|n| &n.e))
    }
    /// All nodes in replacement caches, in bucket order.
    pub fn cached_nodes(&self) -> impl Iterator<Item = &NodeEntry> + '_ {
        self.buckets.iter().flat_map(|b| b.cache.iter())
    }
    /// A bucket node by address (IPv4-mapped addresses are canonicalised).
    pub fn get(&self, addr: &SocketAddr) -> Option<&NodeEntry> {
        let w = self.by_addr.get(&canonical(*addr))?;
        if w.cached {
            return None;
        }
        self.nodes.get(&Key::of(&w.id.0)).map(|n| &n.e)
    }
    /// BEP 5 status of `e` at `now` (see the module docs).
    pub fn status(&self, e: &NodeEntry, now: Timestamp) -> NodeStatus {
        if e.failures >= self.cfg.bad_failures() {
            NodeStatus::Bad
        } else if e.last_response.is_some() && now.since(e.last_seen) < self.cfg.good_window {
            NodeStatus::Good
        } else {
            NodeStatus::Questionable
        }
    }
    /// The next questionable node to ping (least recently seen first), if any;
    /// marks it as pinged so it is not returned again until it answers or fails.
    /// Bad nodes not yet evicted are offered too, so that they reach `max_failures`.
    pub fn next_to_ping(&mut self, now: Timestamp) -> Option<(NodeId, SocketAddr)> {
        let window = self.cfg.good_window;
        let a = self.ping_unresponded.first().copied();
        let b = self
            .ping_responded
            .first()
            .copied()
            .filter(|(seen, _)| now.since(*seen) >= window);
        let (_, id) = match (a, b) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => return None,
        };
        let mut addr = None;
        self.update_node(&id, |n| {
            n.pinged = true;
            addr = Some(n.e.addr);
        });
        addr.map(|a| (id, a))
    }
    /// Random targets inside buckets idle longer than `refresh_interval`; marks them
    /// refreshed. Appends to `out`.
    pub fn refresh_targets(&mut self, now: Timestamp, rng: &mut Rng, out: &mut Vec<NodeId>) {
        let last = self.buckets.len() - 1;
        for i in 0..self.buckets.len() {
            if now.since(self.buckets[i].last_changed) < self.cfg.refresh_interval {
                continue;
            }
            let (prefix, len) = self.bucket_prefix(i, last);
            out.push(NodeId(random_in_block(&prefix, len, rng)));
            self.buckets[i].last_changed = now;
        }
    }
    /// The next time `refresh_targets` or `next_to_ping` may return something (it may
    /// be in the past: something is due now).
    pub fn next_maintenance(&self) -> Option<Timestamp> {
        let refresh = self
            .buckets
            .iter()
            .map(|b| b.last_changed.add(self.cfg.refresh_interval))
            .min();
        let unresponded = self.ping_unresponded.first().map(|(t, _)| *t);
        let responded = self
            .ping_responded
            .first()
            .map(|(t, _)| t.add(self.cfg.good_window));
        [refresh, unresponded, responded]
            .into_iter()
            .flatten()
            .min()
    }
    /// Moves the queued events into `out` (appending).
    pub fn take_events(&mut self, out: &mut Vec<RoutingEvent>) {
        out.append(&mut self.events);
    }
    /// Its counters.
    pub fn stats(&self) -> &RoutingStats {
        &self.stats
    }

    /// Checks every structural invariant; `Err` names the first broken one.
    pub fn check_invariant(&self) -> Result<(), String> {
        let nb = self.buckets.len();
        if nb == 0 || nb > MAX_BUCKETS {
            return Err(format!("bucket count {nb} out of range"));
        }
        // Bucket ranges are disjoint, contiguous and cover the key space.
        let mut ranges: Vec<([u8; 20], [u8; 20], usize)> = (0..nb)
            .map(|i| {
                let (lo, hi) = self.bucket_range(i);
                (lo, hi, i)
            })
            .collect();
        ranges.sort();
        let mut expect = Some([0u8; 20]);
        for (lo, hi, i) in &ranges {
            if Some(*lo) != expect {
                return Err(format!("bucket {i} does not start where the previous ends"));
            }
            if lo > hi {
                return Err(format!("bucket {i} is empty"));
            }
            expect = successor(*hi);
        }
        if expect.is_some() {
            return Err("buckets do not reach the top of the key space".into());
        }
        let mut unpinged = 0;
        let mut subnets_seen = 0;
        for i in 0..nb {
            let b = &self.buckets[i];
            let cap = self.cfg.bucket_capacity(i);
            let mut count = 0;
            let mut subnets: Vec<Subnet> = Vec::new();
            for n in self.bucket_nodes(i) {
                count += 1;
                let e = &n.e;
                if self.bucket_of(&e.id) != i {
                    return Err(format!("node {} outside bucket {i}", e.id));
                }
                if e.id == self.own_id {
                    return Err("own id in the table".into());
                }
                if Family::of(&e.addr) != self.family || canonical(e.addr) != e.addr {
                    return Err(format!("node {} has a foreign address {}", e.id, e.addr));
                }
                if self.by_addr.get(&e.addr)
                    != Some(&Where {
                        id: e.id,
                        cached: false,
                    })
                {
                    return Err(format!("address index wrong for {}", e.addr));
                }
                if e.failures >= self.cfg.max_failures() {
                    return Err(format!("node {} kept past max_failures", e.id));
                }
                if e.last_response.is_some_and(|r| r > e.last_seen) {
                    return Err(format!("node {} answered after it was last seen", e.id));
                }
                if self.cfg.one_per_subnet {
                    let s = subnet(&e.addr);
                    if subnets.contains(&s) {
                        return Err(format!("bucket {i} holds two nodes of one subnet"));
                    }
                    subnets.push(s);
                    if !self.subnets.contains(&(s, e.id)) {
                        return Err(format!("subnet index misses {}", e.id));
                    }
                    subnets_seen += 1;
                }
                let key = (e.last_seen, e.id);
                let (inr, inu) = (
                    self.ping_responded.contains(&key),
                    self.ping_unresponded.contains(&key),
                );
                let want = !n.pinged;
                if want {
                    unpinged += 1;
                }
                let ok = if e.last_response.is_some() {
                    inr == want && !inu
                } else {
                    inu == want && !inr
                };
                if !ok {
                    return Err(format!("ping index wrong for {}", e.id));
                }
            }
            if let Some(until) = b.all_good_until {
                let stale = self.bucket_nodes(i).any(|n| {
                    n.e.failures >= self.cfg.bad_failures()
                        || n.e.last_response.is_none()
                        || n.e.last_seen.add(self.cfg.good_window) < until
                });
                if stale {
                    return Err(format!("bucket {i} all_good_until is stale"));
                }
            }
            if count != b.count {
                return Err(format!("bucket {i} counts {} but holds {count}", b.count));
            }
            if count > cap {
                return Err(format!("bucket {i} holds {count} over capacity {cap}"));
            }
            if b.cache.len() > self.cfg.replacements {
                return Err(format!("bucket {i} cache over its bound"));
            }
            for e in &b.cache {
                if self.bucket_of(&e.id) != i {
                    return Err(format!("cached node {} outside bucket {i}", e.id));
                }
                if e.id == self.own_id || self.nodes.contains_key(&Key::of(&e.id.0)) {
                    return Err(format!("cached id {} duplicated", e.id));
                }
                if b.cache.iter().filter(|c| c.id == e.id).count() != 1 {
                    return Err(format!("cached id {} duplicated in cache", e.id));
                }
                if Family::of(&e.addr) != self.family {
                    return Err(format!("cached node {} has a foreign address", e.id));
                }
                if self.by_addr.get(&e.addr)
                    != Some(&Where {
                        id: e.id,
                        cached: true,
                    })
                {
                    return Err(format!("address index wrong for cached {}", e.addr));
                }
            }
        }
        let cached: usize = self.buckets.iter().map(|b| b.cache.len()).sum();
        if cached != self.cached_total {
            return Err("cached_total out of date".into());
        }
        if self.by_addr.len() != self.nodes.len() + cached {
            return Err("duplicate or stray addresses".into());
        }
        if self.ping_responded.len() + self.ping_unresponded.len() != unpinged {
            return Err("stray ping index entries".into());
        }
        if self.cfg.one_per_subnet && self.subnets.len() != subnets_seen {
            return Err("stray subnet index entries".into());
        }
        if self.len() != self.nodes().count() {
            return Err("len() disagrees with nodes()".into());
        }
        if self.nodes.len() + cached > self.cfg.max_nodes {
            return Err("max_nodes exceeded".into());
        }
        if self.suspects.len() > self.cfg.max_suspects {
            return Err("suspect list over its bound".into());
        }
        if self.events.len() > self.cfg.max_events {
            return Err("event queue over its bound".into());
        }
        Ok(())
    }

    // ---- internals ----

    fn reject(&mut self, r: RejectReason) -> InsertOutcome {
        let s = &mut self.stats;
        match r {
            RejectReason::OwnId => s.rejected_own_id += 1,
            RejectReason::BucketFull => s.rejected_bucket_full += 1,
            RejectReason::SubnetTaken => s.rejected_subnet += 1,
            RejectReason::TableFull => s.rejected_table_full += 1,
            RejectReason::SuspectId => s.rejected_suspect += 1,
            RejectReason::WrongFamily => s.rejected_family += 1,
            RejectReason::IdInUse => s.rejected_id_in_use += 1,
        }
        InsertOutcome::Rejected(r)
    }

    fn total(&self) -> usize {
        self.nodes.len() + self.cached_total
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        let lz = common_prefix(&self.own_id.0, &id.0) as usize;
        lz.min(self.buckets.len() - 1)
    }

    /// The prefix (and its length) that defines bucket `i` when `last` is the last bucket.
    fn bucket_prefix(&self, i: usize, last: usize) -> ([u8; 20], u32) {
        if i == last {
            (self.own_id.0, i as u32)
        } else {
            (flip(self.own_id.0, i as u32), i as u32 + 1)
        }
    }

    fn bucket_range(&self, i: usize) -> ([u8; 20], [u8; 20]) {
        let (prefix, len) = self.bucket_prefix(i, self.buckets.len() - 1);
        block(&prefix, len)
    }

    fn bucket_nodes(&self, i: usize) -> impl Iterator<Item = &Node> + '_ {
        let (lo, hi) = self.bucket_range(i);
        self.nodes
            .range(Key::of(&lo)..=Key::of(&hi))
            .map(|(_, n)| n)
    }

    fn push_event(&mut self, ev: RoutingEvent) {
        if self.events.len() < self.cfg.max_events {
            self.events.push(ev);
        } else {
            self.stats.events_dropped += 1;
        }
    }

    fn ping_set(&mut self, responded: bool) -> &mut BTreeSet<(Timestamp, NodeId)> {
        if responded {
            &mut self.ping_responded
        } else {
            &mut self.ping_unresponded
        }
    }

    fn unindex_ping(&mut self, n: &Node) {
        if !n.pinged {
            let key = (n.e.last_seen, n.e.id);
            self.ping_set(n.e.last_response.is_some()).remove(&key);
        }
    }

    fn index_ping(&mut self, n: &Node) {
        if !n.pinged {
            let key = (n.e.last_seen, n.e.id);
            self.ping_set(n.e.last_response.is_some()).insert(key);
        }
    }

    /// Applies `f` to a bucket node, keeping the ping index in step.
    fn update_node(&mut self, id: &NodeId, f: impl FnOnce(&mut Node)) {
        let Some(n) = self.nodes.get_mut(&Key::of(&id.0)) else {
            return;
        };
        if !n.pinged {
            let key = (n.e.last_seen, n.e.id);
            if n.e.last_response.is_some() {
                self.ping_responded.remove(&key);
            } else {
                self.ping_unresponded.remove(&key);
            }
        }
        f(n);
        if !n.pinged {
            let key = (n.e.last_seen, n.e.id);
            if n.e.last_response.is_some() {
                self.ping_responded.insert(key);
            } else {
                self.ping_unresponded.insert(key);
            }
        }
    }

    /// Puts `e` into its bucket (which must have room).
    fn attach(&mut self, now: Timestamp, e: NodeEntry) {
        let b = self.bucket_of(&e.id);
        let node = Node { e, pinged: false };
        self.by_addr.insert(
            node.e.addr,
            Where {
                id: node.e.id,
                cached: false,
            },
        );
        if self.cfg.one_per_subnet {
            self.subnets.insert((subnet(&node.e.addr), node.e.id));
        }
        self.index_ping(&node);
        let ev = RoutingEvent::Added {
            id: node.e.id,
            addr: node.e.addr,
        };
        self.nodes.insert(Key::of(&node.e.id.0), node);
        let bucket = &mut self.buckets[b];
        bucket.count += 1;
        bucket.all_good_until = None;
        bucket.last_changed = bucket.last_changed.max(now);
        self.stats.added += 1;
        self.push_event(ev);
    }

    /// Takes a node out of its bucket (no promotion).
    fn detach(&mut self, id: &NodeId) -> Option<NodeEntry> {
        let b = self.bucket_of(id);
        let node = self.nodes.remove(&Key::of(&id.0))?;
        self.by_addr.remove(&node.e.addr);
        if self.cfg.one_per_subnet {
            self.subnets.remove(&(subnet(&node.e.addr), node.e.id));
        }
        self.unindex_ping(&node);
        self.buckets[b].count -= 1;
        self.buckets[b].all_good_until = None;
        self.stats.removed += 1;
        self.push_event(RoutingEvent::Removed {
            id: node.e.id,
            addr: node.e.addr,
        });
        Some(node.e)
    }

    /// Removes whatever sits at `addr` (bucket node, then promoting; or cache entry).
    fn drop_addr(&mut self, now: Timestamp, addr: SocketAddr) -> bool {
        let Some(w) = self.by_addr.get(&addr).copied() else {
            return false;
        };
        let b = self.bucket_of(&w.id);
        if w.cached {
            self.cache_remove(b, &addr);
        } else {
            self.detach(&w.id);
            self.promote(now, b);
        }
        true
    }

    fn cache_remove(&mut self, b: usize, addr: &SocketAddr) -> Option<NodeEntry> {
        let pos = self.buckets[b].cache.iter().position(|e| e.addr == *addr)?;
        let e = self.buckets[b].cache.remove(pos);
        self.by_addr.remove(addr);
        self.cached_total -= 1;
        Some(e)
    }

    fn cache_push(&mut self, b: usize, e: NodeEntry) {
        self.by_addr.insert(
            e.addr,
            Where {
                id: e.id,
                cached: true,
            },
        );
        self.buckets[b].cache.push(e);
        self.cached_total += 1;
    }

    fn worst_cached(&self, b: usize) -> Option<usize> {
        let cache = &self.buckets[b].cache;
        (0..cache.len()).min_by_key(|&i| cache_rank(&cache[i]))
    }

    /// Parks `e` in bucket `b`'s cache, evicting a worse entry when the cache is full.
    fn try_cache(&mut self, b: usize, e: NodeEntry) -> Result<(), RejectReason> {
        if self.cfg.replacements == 0 {
            return Err(RejectReason::BucketFull);
        }
        if self.buckets[b].cache.len() < self.cfg.replacements {
            if self.total() >= self.cfg.max_nodes {
                return Err(RejectReason::TableFull);
            }
            self.cache_push(b, e);
            return Ok(());
        }
        let Some(w) = self.worst_cached(b) else {
            return Err(RejectReason::BucketFull);
        };
        if cache_rank(&self.buckets[b].cache[w]) >= cache_rank(&e) {
            return Err(RejectReason::BucketFull);
        }
        let old = self.buckets[b].cache[w].addr;
        self.cache_remove(b, &old);
        self.cache_push(b, e);
        Ok(())
    }

    /// Frees one slot of `max_nodes` by dropping the worst cache entry, from bucket
    /// `prefer` if it has any, else from the first bucket with a cache.
    fn evict_some_cache(&mut self, prefer: usize) -> bool {
        let b = if self.buckets[prefer].cache.is_empty() {
            match self.buckets.iter().position(|b| !b.cache.is_empty()) {
                Some(b) => b,
                None => return false,
            }
        } else {
            prefer
        };
        let Some(w) = self.worst_cached(b) else {
            return false;
        };
        let addr = self.buckets[b].cache[w].addr;
        self.cache_remove(b, &addr).is_some()
    }

    /// The bucket node holding `addr`'s subnet in bucket `b`, if any.
    fn subnet_holder(&self, b: usize, addr: &SocketAddr) -> Option<NodeId> {
        let s = subnet(addr);
        self.subnets
            .range((s, NodeId::ZERO)..=(s, NodeId([0xff; 20])))
            .map(|(_, id)| *id)
            .find(|id| self.bucket_of(id) == b)
    }

    /// Fills free slots of bucket `b` from its cache, best candidates first.
    fn promote(&mut self, now: Timestamp, b: usize) {
        let bad = self.cfg.bad_failures();
        while self.buckets[b].count < self.cfg.bucket_capacity(b) {
            let cache = &self.buckets[b].cache;
            let best = (0..cache.len())
                .filter(|&i| cache[i].failures < bad)
                .filter(|&i| {
                    !self.cfg.one_per_subnet || self.subnet_holder(b, &cache[i].addr).is_none()
                })
                .max_by_key(|&i| cache_rank(&cache[i]));
            let Some(i) = best else {
                return;
            };
            let addr = cache[i].addr;
            let Some(e) = self.cache_remove(b, &addr) else {
                return;
            };
            self.attach(now, e);
            self.stats.promoted += 1;
        }
    }

    /// Where `id` already sits (address, and whether it is a good bucket node).
    fn find_id(&self, id: &NodeId, now: Timestamp) -> Option<(SocketAddr, bool)> {
        if let Some(n) = self.nodes.get(&Key::of(&id.0)) {
            return Some((n.e.addr, self.status(&n.e, now) == NodeStatus::Good));
        }
        let b = self.bucket_of(id);
        self.buckets[b]
            .cache
            .iter()
            .find(|e| e.id == *id)
            .map(|e| (e.addr, false))
    }

    fn note_id_change(&mut self, now: Timestamp, addr: SocketAddr, id: NodeId) {
        self.stats.id_changes += 1;
        if self.cfg.max_suspects == 0 {
            return;
        }
        let until = now.add(self.cfg.suspect_window);
        if let Some(s) = self.suspects.get_mut(&addr) {
            s.last_id = id;
            s.changes = s.changes.saturating_add(1);
            s.until = until;
            return;
        }
        if self.suspects.len() >= self.cfg.max_suspects {
            let first = self
                .suspects
                .iter()
                .min_by_key(|(a, s)| (s.until, **a))
                .map(|(a, _)| *a);
            if let Some(a) = first {
                self.suspects.remove(&a);
            }
        }
        self.suspects.insert(
            addr,
            Suspect {
                until,
                last_id: id,
                changes: 1,
            },
        );
    }

    /// A bucket node we heard from again.
    fn touch(&mut self, now: Timestamp, id: NodeId, how: Contact) {
        let mut b_changed = false;
        self.update_node(&id, |n| {
            n.e.last_seen = n.e.last_seen.max(now);
            if let Contact::Response { rtt } = how {
                n.e.last_response = Some(n.e.last_seen);
                n.e.rtt = Some(ewma(n.e.rtt, rtt));
                n.e.failures = 0;
                n.pinged = false;
                b_changed = true;
            }
        });
        if b_changed {
            let b = self.bucket_of(&id);
            let bucket = &mut self.buckets[b];
            bucket.last_changed = bucket.last_changed.max(now);
        }
    }

    /// A cached node we heard from again: it gets another chance at its bucket.
    fn touch_cached(
        &mut self,
        now: Timestamp,
        id: NodeId,
        addr: SocketAddr,
        how: Contact,
    ) -> InsertOutcome {
        let b = self.bucket_of(&id);
        let Some(mut e) = self.cache_remove(b, &addr) else {
            return InsertOutcome::Rejected(RejectReason::BucketFull);
        };
        e.last_seen = e.last_seen.max(now);
        let proven = if let Contact::Response { rtt } = how {
            e.last_response = Some(e.last_seen);
            e.rtt = Some(ewma(e.rtt, rtt));
            e.failures = 0;
            true
        } else {
            false
        };
        match self.try_bucket(now, e, proven) {
            Ok(()) => {
                self.stats.promoted += 1;
                InsertOutcome::Added
            }
            Err((e, _)) => {
                // Its slot in the cache is still free.
                self.cache_push(b, e);
                InsertOutcome::Cached
            }
        }
    }

    fn survey(&mut self, b: usize, now: Timestamp) -> Survey {
        let mut s = Survey::default();
        if self.buckets[b].all_good_until.is_some_and(|t| now < t) {
            return s;
        }
        let mut good_until = Timestamp::MAX;
        for n in self.bucket_nodes(b) {
            let e = &n.e;
            good_until = good_until.min(e.last_seen.add(self.cfg.good_window));
            match self.status(e, now) {
                NodeStatus::Bad => {
                    let key = (e.failures, e.last_seen, e.id);
                    let better = match s.worst_bad {
                        None => true,
                        Some((f, t, _)) => {
                            (e.failures, std::cmp::Reverse(e.last_seen)) > (f, std::cmp::Reverse(t))
                        }
                    };
                    if better {
                        s.worst_bad = Some(key);
                    }
                }
                NodeStatus::Questionable => {
                    s.any_questionable = true;
                    if !e.verified && s.unverified.is_none_or(|(t, _)| e.last_seen < t) {
                        s.unverified = Some((e.last_seen, e.id));
                    }
                }
                NodeStatus::Good => {}
            }
        }
        if s.worst_bad.is_none() && !s.any_questionable {
            self.buckets[b].all_good_until = Some(good_until);
        }
        s
    }

    /// Replaces bucket node `victim` with `e`; a displaced (not bad) victim is
    /// offered to the cache.
    fn replace(&mut self, now: Timestamp, victim: NodeId, e: NodeEntry, cache_victim: bool) {
        let b = self.bucket_of(&victim);
        let old = self.detach(&victim);
        self.attach(now, e);
        if let (true, Some(old)) = (cache_victim, old) {
            // Best effort: the cache may be full of better nodes.
            let _ = self.try_cache(b, old);
        }
    }

    /// Tries to place `e` in its bucket (splitting, replacing or displacing as the
    /// rules allow). On failure hands `e` back with what to do next (moved, not
    /// boxed: a private hand-back of a ~150-byte entry, once per insertion).
    #[allow(clippy::result_large_err)]
    fn try_bucket(
        &mut self,
        now: Timestamp,
        e: NodeEntry,
        proven: bool,
    ) -> Result<(), (NodeEntry, Fallback)> {
        loop {
            let b = self.bucket_of(&e.id);
            if self.cfg.one_per_subnet {
                if let Some(holder) = self.subnet_holder(b, &e.addr) {
                    let Some(h) = self.nodes.get(&Key::of(&holder.0)) else {
                        return Err((e, Fallback::Reject(RejectReason::SubnetTaken)));
                    };
                    let status = self.status(&h.e, now);
                    if status == NodeStatus::Bad {
                        self.replace(now, holder, e, false);
                        self.stats.replaced_bad += 1;
                        return Ok(());
                    }
                    if proven && e.verified && !h.e.verified && status == NodeStatus::Questionable {
                        self.replace(now, holder, e, true);
                        self.stats.displaced_unverified += 1;
                        return Ok(());
                    }
                    return Err((e, Fallback::Reject(RejectReason::SubnetTaken)));
                }
            }
            if self.buckets[b].count < self.cfg.bucket_capacity(b) {
                if self.total() >= self.cfg.max_nodes && !self.evict_some_cache(b) {
                    return Err((e, Fallback::Reject(RejectReason::TableFull)));
                }
                self.attach(now, e);
                return Ok(());
            }
            if b + 1 == self.buckets.len() && self.buckets.len() < MAX_BUCKETS {
                self.split(now);
                continue;
            }
            let s = self.survey(b, now);
            if let Some((_, _, victim)) = s.worst_bad {
                self.replace(now, victim, e, false);
                self.stats.replaced_bad += 1;
                return Ok(());
            }
            if proven && e.verified {
                if let Some((_, victim)) = s.unverified {
                    self.replace(now, victim, e, true);
                    self.stats.displaced_unverified += 1;
                    return Ok(());
                }
            }
            if s.any_questionable {
                return Err((e, Fallback::Cache));
            }
            return Err((e, Fallback::Reject(RejectReason::BucketFull)));
        }
    }

    /// Splits the last bucket in two, and again while the new last bucket is over
    /// its capacity (a `bucket_sizes` schedule shrinks with depth). Nodes that still
    /// do not fit a bucket go to its replacement cache or are dropped, worst first.
    fn split(&mut self, now: Timestamp) {
        loop {
            let d = self.buckets.len() - 1;
            self.buckets.push(Bucket::new(now));
            self.stats.splits += 1;
            let stay = self.bucket_nodes(d).count();
            let moved = self.buckets[d].count - stay;
            self.buckets[d].count = stay;
            self.buckets[d].all_good_until = None;
            self.buckets[d + 1].count = moved;
            let cache = std::mem::take(&mut self.buckets[d].cache);
            for e in cache {
                let b = self.bucket_of(&e.id);
                self.buckets[b].cache.push(e);
            }
            self.trim(d, now);
            let over = moved > self.cfg.bucket_capacity(d + 1);
            if !over || self.buckets.len() >= MAX_BUCKETS {
                self.trim(d + 1, now);
                return;
            }
        }
    }

    /// Drops the worst nodes of bucket `b` until it fits its capacity, offering the
    /// ones that are not bad to its cache.
    fn trim(&mut self, b: usize, now: Timestamp) {
        let cap = self.cfg.bucket_capacity(b);
        let count = self.buckets[b].count;
        if count <= cap {
            return;
        }
        let mut ranked: Vec<(bool, bool, bool, Timestamp, NodeId)> = self
            .bucket_nodes(b)
            .map(|n| {
                let st = self.status(&n.e, now);
                (
                    st != NodeStatus::Bad,
                    st == NodeStatus::Good,
                    n.e.verified,
                    n.e.last_seen,
                    n.e.id,
                )
            })
            .collect();
        ranked.sort();
        for r in ranked.into_iter().take(count - cap) {
            if let Some(e) = self.detach(&r.4) {
                if r.0 {
                    let _ = self.try_cache(b, e);
                }
            }
        }
    }
}
