//! Kademlia routing table (BEP 5), one per identity and family.
//!
//! STUB: the interface the rest of core relies on. The routing-table work replaces
//! the bodies (and may add to, but not break, this interface).

use std::net::SocketAddr;
use std::time::Duration;

use crate::addr::Family;
use crate::id::NodeId;
use crate::rng::Rng;
use crate::time::Timestamp;

#[derive(Clone, Debug)]
pub struct RoutingConfig {
    /// Bucket size.
    pub k: usize,
    /// Replacement-cache entries per bucket.
    pub replacements: usize,
    /// Cap on nodes in the table (buckets plus replacement caches).
    pub max_nodes: usize,
    /// At most one node per /24 (IPv4) or /64 (IPv6) in a bucket.
    pub one_per_subnet: bool,
    /// A node is good if it responded within this window (BEP 5: 15 minutes).
    pub good_window: Duration,
    /// Consecutive failures after which a node is evicted.
    pub max_failures: u32,
    /// Buckets idle this long are refreshed.
    pub refresh_interval: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            k: 8,
            replacements: 8,
            max_nodes: 10_000,
            one_per_subnet: true,
            good_window: Duration::from_secs(15 * 60),
            max_failures: 5,
            refresh_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// How we heard from a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// It answered one of our queries, with this round-trip time.
    Response { rtt: Duration },
    /// It sent us a query (proves reachability less strongly).
    Query,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Good,
    Questionable,
    Bad,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub last_seen: Timestamp,
    pub last_response: Option<Timestamp>,
    pub rtt: Option<Duration>,
    pub failures: u32,
    /// BEP 42 verified (its id matches its IP).
    pub verified: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Added,
    Updated,
    /// Kept in the bucket's replacement cache.
    Cached,
    Rejected(RejectReason),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    OwnId,
    BucketFull,
    SubnetTaken,
    TableFull,
    /// The address's id keeps changing: not trusted.
    SuspectId,
    WrongFamily,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutingEvent {
    Added { id: NodeId, addr: SocketAddr },
    Removed { id: NodeId, addr: SocketAddr },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingStats {
    pub added: u64,
    pub removed: u64,
    pub rejected_bucket_full: u64,
    pub rejected_subnet: u64,
    pub rejected_table_full: u64,
    pub rejected_suspect: u64,
    pub splits: u64,
}

pub struct RoutingTable {
    own_id: NodeId,
    family: Family,
    _cfg: RoutingConfig,
    stats: RoutingStats,
}

impl RoutingTable {
    pub fn new(own_id: NodeId, family: Family, cfg: RoutingConfig) -> Self {
        RoutingTable {
            own_id,
            family,
            _cfg: cfg,
            stats: RoutingStats::default(),
        }
    }
    pub fn own_id(&self) -> NodeId {
        self.own_id
    }
    pub fn family(&self) -> Family {
        self.family
    }
    /// We heard from `id` at `addr` directly. Inserts, updates or caches it.
    pub fn heard_from(
        &mut self,
        _now: Timestamp,
        _id: NodeId,
        _addr: SocketAddr,
        _how: Contact,
    ) -> InsertOutcome {
        InsertOutcome::Rejected(RejectReason::TableFull)
    }
    /// A query to `addr` timed out in full; counts a failure, evicting at `max_failures`.
    pub fn failed(&mut self, _now: Timestamp, _addr: SocketAddr) {}
    /// Removes a node outright (for example, it was blacklisted).
    pub fn remove(&mut self, _addr: SocketAddr) -> bool {
        false
    }
    /// Up to `n` non-bad nodes closest to `target`, nearest first (good before questionable at equal rank is not required).
    pub fn closest(&self, _target: &[u8; 20], _n: usize, _out: &mut Vec<NodeEntry>) {}
    /// Nodes in buckets (not replacement caches).
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// All nodes in buckets, in bucket order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> + '_ {
        std::iter::empty()
    }
    pub fn get(&self, _addr: &SocketAddr) -> Option<&NodeEntry> {
        None
    }
    pub fn status(&self, _e: &NodeEntry, _now: Timestamp) -> NodeStatus {
        NodeStatus::Questionable
    }
    /// The next questionable node to ping (least recently seen first), if any;
    /// marks it as pinged so it is not returned again until it answers or fails.
    pub fn next_to_ping(&mut self, _now: Timestamp) -> Option<(NodeId, SocketAddr)> {
        None
    }
    /// Random targets inside buckets idle longer than `refresh_interval`; marks them refreshed.
    pub fn refresh_targets(&mut self, _now: Timestamp, _rng: &mut Rng, _out: &mut Vec<NodeId>) {}
    /// The next time `refresh_targets` or `next_to_ping` may return something.
    pub fn next_maintenance(&self) -> Option<Timestamp> {
        None
    }
    pub fn take_events(&mut self, _out: &mut Vec<RoutingEvent>) {}
    pub fn stats(&self) -> &RoutingStats {
        &self.stats
    }
    /// Checks every structural invariant; `Err` names the first broken one.
    pub fn check_invariant(&self) -> Result<(), String> {
        Ok(())
    }
}
