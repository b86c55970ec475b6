//! One DHT identity: a UDP socket, the node ID it shows, and its routing table;
//! and the one place node IDs are made (at start and when the external-address
//! vote settles), which `magnetar crawl` and the simulator share.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::addr::Family;
use crate::config::IdentityConfig;
use crate::id::{bep42_node_id_r, NodeId};
use crate::rng::Rng;
use crate::routing::{Contact, NodeEntry, RoutingConfig, RoutingStats, RoutingTable};
use crate::shard::Shard;
use crate::time::Timestamp;
use crate::SocketId;

/// One UDP identity: a socket, its node ID and its routing table.
pub struct Identity {
    /// The socket it sends and receives on.
    pub socket: SocketId,
    /// The address that socket is bound to.
    pub bind: SocketAddr,
    /// The socket's address family.
    pub family: Family,
    /// Its node ID.
    pub id: NodeId,
    /// Its routing table.
    pub table: RoutingTable,
    pub(crate) bootstrapped: bool,
    pub(crate) bootstrap_attempt: u32,
    pub(crate) next_bootstrap: Option<Timestamp>,
    pub(crate) bootstrap_backoff: Duration,
    pub(crate) self_lookup: Option<u64>,
    /// The counters of the tables it had before its id changed (so totals never
    /// go backwards).
    pub(crate) retired: RoutingStats,
}

impl Identity {
    /// A fresh identity with an empty table around `id`.
    pub(crate) fn new(
        socket: SocketId,
        bind: SocketAddr,
        id: NodeId,
        routing: RoutingConfig,
        backoff: Duration,
    ) -> Self {
        let family = Family::of(&bind);
        Identity {
            socket,
            bind,
            family,
            id,
            table: RoutingTable::new(id, family, routing),
            bootstrapped: false,
            bootstrap_attempt: 0,
            next_bootstrap: None,
            bootstrap_backoff: backoff,
            self_lookup: None,
            retired: RoutingStats::default(),
        }
    }

    /// Takes a new node id: the routing table is rebuilt around it, with every node
    /// it knew (bucket and cache, most recently seen first) inserted again; what no
    /// longer fits is dropped. Returns the nodes kept. The rebuild emits no routing
    /// events: the nodes did not change.
    pub(crate) fn change_id(&mut self, now: Timestamp, id: NodeId) -> usize {
        let fresh = RoutingTable::new(id, self.family, self.table.config().clone());
        let old = std::mem::replace(&mut self.table, fresh);
        self.id = id;
        self.retired.add(old.stats());
        self.retired.removed += old.len() as u64;
        let mut known: Vec<NodeEntry> = old.nodes().chain(old.cached_nodes()).cloned().collect();
        known.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        for e in known {
            let how = match e.last_response {
                Some(_) => Contact::Response {
                    rtt: e.rtt.unwrap_or_default(),
                },
                None => Contact::Query,
            };
            self.table.heard_from(now, e.id, e.addr, how);
        }
        let mut events = Vec::new();
        self.table.take_events(&mut events);
        self.table.len()
    }
}

/// The node id each configured identity starts with: its fixed `node_id`; else a
/// BEP 42 id for its `external_ip`; else 160 random bits (until the vote on our
/// external address settles, see `vote`). Identities that share an external
/// address take consecutive `r` values from a random start, so up to 8 of them
/// get 8 different prefixes; every other free bit is random. A sharded crawler
/// (`shard.count > 1`) places them in its slice instead (see `crate::shard`):
/// random ids inside it, BEP 42 ids with the `r` nearest it, ranked per address.
pub(crate) fn initial_ids(
    identities: &[IdentityConfig],
    shard: Shard,
    rng: &mut Rng,
) -> Vec<NodeId> {
    // Drawn only when needed: a crawler without a configured external address
    // draws the same ids as before `r` was spread.
    let mut r0 = None;
    let mut placed: Vec<(IpAddr, Vec<NodeId>)> = Vec::new();
    let mut out = Vec::with_capacity(identities.len());
    for (i, ic) in identities.iter().enumerate() {
        let id = match (ic.node_id, ic.external_ip) {
            (Some(id), _) => id,
            (None, Some(ip)) => {
                let k = identities[..i]
                    .iter()
                    .filter(|o| o.external_ip == Some(ip) && o.node_id.is_none())
                    .count();
                if shard.is_sharded() {
                    if !placed.iter().any(|(p, _)| *p == ip) {
                        let n = identities
                            .iter()
                            .filter(|o| o.external_ip == Some(ip) && o.node_id.is_none())
                            .count();
                        placed.push((ip, shard.bep42_ids(ip, n, rng)));
                    }
                    let ids = placed.iter().find(|(p, _)| *p == ip).map(|x| &x.1);
                    match ids.and_then(|v| v.get(k)) {
                        Some(id) => *id,
                        None => shard.random_id(rng),
                    }
                } else {
                    let k = identities[..i]
                        .iter()
                        .filter(|o| o.external_ip == Some(ip))
                        .count();
                    let r0 = *r0.get_or_insert_with(|| rng.bytes::<1>()[0]);
                    bep42_node_id_r(ip, r0.wrapping_add(k as u8), rng)
                }
            }
            (None, None) => shard.random_id(rng),
        };
        out.push(id);
    }
    out
}

/// `n` new BEP 42 ids for external address `ip` (the vote settled on `ip` and
/// the identities' ids do not match it), spread over `r` as in [`initial_ids`]
/// (placed in the slice of a sharded crawler).
pub(crate) fn bep42_ids(ip: IpAddr, n: usize, shard: Shard, rng: &mut Rng) -> Vec<NodeId> {
    if shard.is_sharded() {
        return shard.bep42_ids(ip, n, rng);
    }
    let r0 = rng.bytes::<1>()[0];
    (0..n)
        .map(|k| bep42_node_id_r(ip, r0.wrapping_add(k as u8), rng))
        .collect()
}

/// Buckets refreshed right after an identity changes its id: one find_node
/// lookup for a random id at each of the first `REFRESH_DEPTHS` distances from
/// it (the nodes it knew sit next to the old id, so these buckets start thin).
pub(crate) const REFRESH_DEPTHS: usize = 8;

/// A random id that shares exactly its first `depth` bits with `id` (so it falls
/// in the bucket at that depth of a table around `id`).
pub(crate) fn refresh_target(id: &NodeId, depth: usize, rng: &mut Rng) -> NodeId {
    let mut t: [u8; 20] = rng.bytes();
    for bit in 0..=depth.min(159) {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let mine = id.0[byte] & mask;
        let want = if bit == depth { mine ^ mask } else { mine };
        t[byte] = (t[byte] & !mask) | want;
    }
    NodeId(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_targets_fall_at_their_depth() {
        let mut rng = Rng::new(4);
        for _ in 0..50 {
            let id = NodeId::random(&mut rng);
            for d in [0, 1, 7, 8, 100, 159] {
                let t = refresh_target(&id, d, &mut rng);
                assert_eq!(id.distance(&t.0).leading_zeros(), d as u32);
            }
        }
    }
}
