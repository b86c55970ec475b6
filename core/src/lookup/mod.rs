//! Iterative find_node / get_peers traversals (BEP 5), with BEP 33 scrape merging.
//!
//! A [`Lookup`] keeps a distance-sorted, bounded candidate list. The driver asks it
//! for the next node to query while fewer than `alpha` queries are in flight; a
//! short timeout frees the slot (the lookup widens) without giving up on the node.
//! The lookup is done when the `k` closest non-failed candidates have all answered,
//! or nothing closer is left to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::bloom::Bloom;
use crate::id::{Distance, NodeId};
use crate::SocketId;

/// Cap on candidates kept per lookup (closest first).
pub const MAX_CANDIDATES: usize = 128;
/// Cap on peers collected per get_peers lookup.
pub const MAX_PEERS: usize = 2000;
/// Cap on queries one lookup may send.
pub const MAX_QUERIES: u32 = 256;
/// Default re-sends to a silent candidate before it may fail.
pub const RETRIES: u8 = 3;
/// What a lookup asks each node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LookupKind {
    /// find_node: converge on the nodes closest to the target.
    FindNode,
    /// get_peers: collect peers (and tokens) for the target infohash.
    GetPeers {
        /// Also ask for BEP 33 bloom filters and merge them into seeder and leecher
        /// estimates.
        scrape: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight,
    /// Short timeout passed; still waiting but not counted against alpha.
    Slow,
    Responded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    id: NodeId,
    addr: SocketAddr,
    state: State,
    token: Option<Vec<u8>>,
    /// Re-sends left after a short timeout (a lost datagram is not a dead node).
    retries: u8,
}

/// One node of a finished lookup, closest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The node's id.
    pub id: NodeId,
    /// The node's address.
    pub addr: SocketAddr,
    /// The get_peers token it gave us (for announcing).
    pub token: Option<Vec<u8>>,
}

/// One iterative traversal toward `target` (see the module docs). It sends nothing
/// itself: the caller asks [`Lookup::next_query`] for the next node and reports answers,
/// short timeouts and failures back.
pub struct Lookup {
    /// The lookup's id, unique within one crawler (also in [`crate::Event::LookupDone`]).
    /// The crawler keys its lookups by this id in its own map; nothing reads this copy.
    #[allow(dead_code)]
    pub id: u64,
    /// The identity the lookup runs on.
    pub socket: SocketId,
    /// The node id or infohash looked up.
    pub target: [u8; 20],
    /// find_node or get_peers.
    pub kind: LookupKind,
    k: usize,
    alpha: usize,
    retries: u8,
    max_queries: u32,
    candidates: BTreeMap<Distance, Candidate>,
    by_addr: BTreeSet<SocketAddr>,
    peers: BTreeSet<SocketAddr>,
    bf_seeds: Bloom,
    bf_peers: Bloom,
    scrapes: u32,
    queries: u32,
    responses: u32,
    dropped_peers: u64,
}

impl Lookup {
    /// A lookup with no candidates yet. `k` (at least 1) is how many closest nodes must
    /// answer for it to be done; `alpha` (at least 1) is how many queries may be in flight.
    pub fn new(
        id: u64,
        socket: SocketId,
        target: [u8; 20],
        kind: LookupKind,
        k: usize,
        alpha: usize,
    ) -> Self {
        Lookup {
            id,
            socket,
            target,
            kind,
            k: k.max(1),
            alpha: alpha.max(1),
            retries: RETRIES,
            max_queries: MAX_QUERIES,
            candidates: BTreeMap::new(),
            by_addr: BTreeSet::new(),
            peers: BTreeSet::new(),
            bf_seeds: Bloom::default(),
            bf_peers: Bloom::default(),
            scrapes: 0,
            queries: 0,
            responses: 0,
            dropped_peers: 0,
        }
    }

    /// Caps the queries this lookup may send (default and ceiling [`MAX_QUERIES`]).
    pub fn set_max_queries(&mut self, n: u32) {
        self.max_queries = n.clamp(1, MAX_QUERIES);
    }

    /// Sets how many times a silent candidate is asked again (default [`RETRIES`]).
    pub fn with_retries(mut self, retries: u8) -> Self {
        self.retries = retries;
        self
    }

    /// Adds a candidate (from the routing table or a `nodes` reply). Duplicates by
    /// id or address are ignored; the list keeps only the closest `MAX_CANDIDATES`.
    pub fn add_candidate(&mut self, id: NodeId, addr: SocketAddr) {
        if self.by_addr.contains(&addr) {
            return;
        }
        let d = id.distance(&self.target);
        if self.candidates.contains_key(&d) {
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // Only accept if closer than the farthest, which we then drop (unless in flight).
            let Some((&far, c)) = self.candidates.last_key_value() else {
                return;
            };
            if d > far || matches!(c.state, State::InFlight | State::Slow) {
                return;
            }
            if let Some(c) = self.candidates.remove(&far) {
                self.by_addr.remove(&c.addr);
            }
        }
        self.by_addr.insert(addr);
        self.candidates.insert(
            d,
            Candidate {
                id,
                addr,
                state: State::Fresh,
                retries: self.retries,
                token: None,
            },
        );
    }

    fn in_flight(&self) -> usize {
        self.candidates
            .values()
            .filter(|c| c.state == State::InFlight)
            .count()
    }

    /// The next node to query, if a slot is free; marks it in flight.
    pub fn next_query(&mut self) -> Option<(NodeId, SocketAddr)> {
        if self.queries >= self.max_queries || self.is_done() || self.in_flight() >= self.alpha {
            return None;
        }
        // Only query within the k closest still-useful candidates, plus one more per
        // slow node (widening).
        let slow = self
            .candidates
            .values()
            .filter(|c| c.state == State::Slow)
            .count();
        let window = self.k + slow;
        let mut seen = 0;
        for c in self.candidates.values_mut() {
            if c.state == State::Failed {
                continue;
            }
            seen += 1;
            if seen > window {
                break;
            }
            if c.state == State::Fresh {
                c.state = State::InFlight;
                self.queries += 1;
                return Some((c.id, c.addr));
            }
        }
        None
    }

    fn find(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        if !self.by_addr.contains(addr) {
            return None;
        }
        self.candidates.values_mut().find(|c| c.addr == *addr)
    }

    /// A node answered. `id` is the id it answered with.
    pub fn on_response(&mut self, addr: SocketAddr, id: NodeId, token: Option<&[u8]>) {
        self.responses += 1;
        let target = self.target;
        if let Some(c) = self.find(&addr) {
            if c.id != id {
                // It answered with another id: re-key it under the id it proved.
                let old = c.id.distance(&target);
                if let Some(mut c) = self.candidates.remove(&old) {
                    c.id = id;
                    c.state = State::Responded;
                    c.token = token.map(|t| t.to_vec());
                    let d = id.distance(&target);
                    if let std::collections::btree_map::Entry::Vacant(v) = self.candidates.entry(d)
                    {
                        v.insert(c);
                    } else {
                        self.by_addr.remove(&addr);
                    }
                }
                return;
            }
            c.state = State::Responded;
            c.token = token.map(|t| t.to_vec());
        }
    }

    /// `values` from a get_peers reply.
    pub fn add_peers(&mut self, peers: &[SocketAddr]) {
        for p in peers {
            if self.peers.len() >= MAX_PEERS {
                self.dropped_peers += 1;
                continue;
            }
            self.peers.insert(*p);
        }
    }

    /// BEP 33 filters from a scrape reply.
    pub fn add_scrape(&mut self, seeds: Option<&[u8; 256]>, peers: Option<&[u8; 256]>) {
        if seeds.is_some() || peers.is_some() {
            self.scrapes += 1;
        }
        if let Some(s) = seeds {
            self.bf_seeds.union(s);
        }
        if let Some(p) = peers {
            self.bf_peers.union(p);
        }
    }

    /// The query to `addr` could not be sent now (budget, pacing): ask it again later.
    pub fn requeue(&mut self, addr: &SocketAddr) {
        let mut back = false;
        if let Some(c) = self.find(addr) {
            if c.state == State::InFlight {
                c.state = State::Fresh;
                back = true;
            }
        }
        if back {
            self.queries = self.queries.saturating_sub(1);
        }
    }

    /// The short timeout passed: ask again once (the first query stays open), or
    /// free the slot so the lookup widens.
    pub fn on_short_timeout(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if c.state == State::InFlight {
                if c.retries > 0 {
                    c.retries -= 1;
                    c.state = State::Fresh;
                } else {
                    c.state = State::Slow;
                }
            }
        }
    }

    /// A query's full timeout passed. The node has failed once no re-send of it is
    /// still pending.
    pub fn on_failure(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if c.state == State::Slow {
                c.state = State::Failed;
            }
        }
    }

    /// The node answered with an error, or could not be asked: it has failed.
    pub fn on_error(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if matches!(c.state, State::InFlight | State::Slow | State::Fresh) {
                c.state = State::Failed;
            }
        }
    }

    /// Done when the k closest non-failed candidates have all answered, or when no
    /// query is outstanding and none of them is left to ask.
    pub fn is_done(&self) -> bool {
        if self.queries >= self.max_queries && !self.has_outstanding() {
            return true;
        }
        let mut closest = self
            .candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(self.k);
        let all_answered = closest.clone().all(|c| c.state == State::Responded);
        let any_pending =
            closest.any(|c| matches!(c.state, State::Fresh | State::InFlight | State::Slow));
        all_answered || (!any_pending && !self.has_outstanding())
    }

    fn has_outstanding(&self) -> bool {
        self.candidates
            .values()
            .any(|c| matches!(c.state, State::InFlight | State::Slow))
    }

    /// The k closest nodes that answered, closest first.
    pub fn closest(&self) -> Vec<Found> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Responded)
            .take(self.k)
            .map(|c| Found {
                id: c.id,
                addr: c.addr,
                token: c.token.clone(),
            })
            .collect()
    }

    /// The peers collected so far (get_peers), in address order, at most [`MAX_PEERS`].
    pub fn peers(&self) -> impl Iterator<Item = &SocketAddr> + '_ {
        self.peers.iter()
    }

    /// BEP 33 (seeders, leechers) estimates, if any node answered a scrape. A
    /// scrape traversal also counts the peers handed out without filters (BEP 33,
    /// "Handling legacy responses"), unless a seed filter holds them.
    pub fn scrape_estimate(&self) -> Option<(u32, u32)> {
        if self.kind != (LookupKind::GetPeers { scrape: true }) {
            return None;
        }
        let values: Vec<SocketAddr> = self.peers.iter().copied().collect();
        crate::bloom::scrape_estimate_of(&self.bf_seeds, &self.bf_peers, self.scrapes > 0, &values)
    }

    /// Queries sent so far (at most [`MAX_QUERIES`]).
    pub fn queries(&self) -> u32 {
        self.queries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }

    /// Drives a lookup against a static world where every node knows every other
    /// node's id, answering with its 8 closest to the target. Nodes in `silent` never answer.
    fn run(
        world: &[(NodeId, SocketAddr)],
        target: [u8; 20],
        silent: &BTreeSet<usize>,
    ) -> Vec<Found> {
        let mut l = Lookup::new(1, SocketId(0), target, LookupKind::FindNode, 8, 3);
        for (id, a) in world.iter().take(3) {
            l.add_candidate(*id, *a);
        }
        let mut rounds = 0;
        while !l.is_done() && rounds < 1000 {
            rounds += 1;
            let mut batch = Vec::new();
            while let Some(q) = l.next_query() {
                batch.push(q);
            }
            if batch.is_empty() {
                break;
            }
            for (id, a) in batch {
                let idx = world.iter().position(|w| w.1 == a).unwrap();
                if silent.contains(&idx) {
                    l.on_short_timeout(&a);
                    l.on_failure(&a);
                    continue;
                }
                l.on_response(a, id, Some(b"tok"));
                let mut near: Vec<_> = world.to_vec();
                near.sort_by_key(|(nid, _)| nid.distance(&target));
                // Nodes know more than k others; dead ones among them are reported too.
                for (nid, na) in near.into_iter().take(16) {
                    l.add_candidate(nid, na);
                }
            }
        }
        l.closest()
    }

    #[test]
    fn finds_true_closest_even_with_silent_nodes() {
        let mut rng = Rng::new(9);
        let world: Vec<_> = (0..300)
            .map(|i| (NodeId::random(&mut rng), addr(i)))
            .collect();
        let target = NodeId::random(&mut rng).0;
        let silent: BTreeSet<usize> = (0..300).filter(|i| i % 7 == 3).collect();
        let got = run(&world, target, &silent);
        let mut truth: Vec<_> = world
            .iter()
            .enumerate()
            .filter(|(i, _)| !silent.contains(i))
            .map(|(_, w)| *w)
            .collect();
        truth.sort_by_key(|(id, _)| id.distance(&target));
        let want: Vec<_> = truth.iter().take(8).map(|w| w.1).collect();
        let got: Vec<_> = got.iter().map(|f| f.addr).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn alpha_bounds_in_flight_and_short_timeout_widens() {
        let mut rng = Rng::new(3);
        let mut l = Lookup::new(
            1,
            SocketId(0),
            [0; 20],
            LookupKind::GetPeers { scrape: false },
            8,
            2,
        );
        for i in 0..20 {
            l.add_candidate(NodeId::random(&mut rng), addr(i));
        }
        let a = l.next_query().unwrap();
        let _b = l.next_query().unwrap();
        assert!(l.next_query().is_none());
        l.on_short_timeout(&a.1);
        assert!(l.next_query().is_some());
        assert!(l.next_query().is_none());
        assert!(!l.is_done());
    }

    #[test]
    fn candidates_bounded_and_peers_collected() {
        let mut rng = Rng::new(4);
        let mut l = Lookup::new(
            1,
            SocketId(0),
            [0; 20],
            LookupKind::GetPeers { scrape: true },
            8,
            3,
        );
        for i in 0..1000 {
            l.add_candidate(NodeId::random(&mut rng), addr(i));
        }
        assert!(l.candidates.len() <= MAX_CANDIDATES);
        assert_eq!(l.candidates.len(), l.by_addr.len());
        assert_eq!(l.scrape_estimate(), None, "nothing heard yet");
        l.add_peers(&[addr(1), addr(2), addr(1)]);
        assert_eq!(l.peers().count(), 2);
        // Values without filters are peers (BEP 33 legacy responses).
        assert_eq!(l.scrape_estimate(), Some((0, 2)));
        let mut b = Bloom::default();
        b.insert("1.2.3.4".parse().unwrap());
        b.insert(addr(1).ip());
        l.add_scrape(Some(&b.0), None);
        // addr(1) is a seed now; addr(2) stays a peer.
        assert_eq!(l.scrape_estimate(), Some((2, 1)));
    }

    #[test]
    fn no_estimate_without_a_scrape_request() {
        let mut l = Lookup::new(
            1,
            SocketId(0),
            [0; 20],
            LookupKind::GetPeers { scrape: false },
            8,
            3,
        );
        l.add_peers(&[addr(1)]);
        assert_eq!(l.scrape_estimate(), None);
    }

    #[test]
    fn empty_lookup_is_done() {
        let l = Lookup::new(1, SocketId(0), [0; 20], LookupKind::FindNode, 8, 3);
        assert!(l.is_done());
        assert!(l.closest().is_empty());
    }
}
