//! The DHT node under the crawl: identities and their routing tables, the
//! transaction table, the running lookups, the metadata fetcher, the output
//! queue and the counters. The crawler routes inputs through it; it is also
//! the [`Net`] through which the crawl strategy sends queries, starts peer
//! searches and fetches, and emits events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use bytes::Bytes;

use crate::addr::{canonical, is_sendable, Family};
use crate::config::Config;
use crate::crawl::{Net, Pacer, PeerSearch, Sent};
use crate::fault::Fault;
use crate::fetch::Fetcher;
use crate::id::{InfoHash, NodeId};
use crate::identity::Identity;
use crate::krpc::{Body, Message, Query, QueryKind, Response, Want};
use crate::lookup::{Lookup, LookupKind};
use crate::rng::Rng;
use crate::routing::RoutingEvent;
use crate::rpc::{Method, Purpose, Rpc};
use crate::server::encode;
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::{ApiMisuse, Event, Output, SocketId};

/// Cap on queued outputs before new events are dropped (counted).
const MAX_OUT: usize = 1 << 16;

/// Lookups held back by the pacer, each with the address its next query is
/// for and the earliest time the pacer would let that query through.
#[derive(Default)]
pub(crate) struct Starved {
    at: BTreeMap<u64, (Timestamp, SocketAddr)>,
    by_time: BTreeSet<(Timestamp, u64)>,
}

impl Starved {
    /// Holds lookup `id`, whose next query is for `to`, back until `ready`
    /// (replacing an earlier entry).
    pub fn insert(&mut self, id: u64, ready: Timestamp, to: SocketAddr) {
        if let Some((old, _)) = self.at.insert(id, (ready, to)) {
            self.by_time.remove(&(old, id));
        }
        self.by_time.insert((ready, id));
    }

    /// Forgets lookup `id`.
    pub fn remove(&mut self, id: u64) {
        if let Some((old, _)) = self.at.remove(&id) {
            self.by_time.remove(&(old, id));
        }
    }

    /// Makes lookup `id`, if held back, ready at `now`.
    pub fn wake(&mut self, id: u64, now: Timestamp) {
        if let Some(&(_, to)) = self.at.get(&id) {
            self.insert(id, now, to);
        }
    }

    /// Whether no lookup is held back.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The earliest time a held-back lookup is ready.
    pub fn next_ready(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Takes out the lookups ready at `now`, with the address each waits for.
    pub fn take_ready(&mut self, now: Timestamp) -> Vec<(u64, SocketAddr)> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.by_time.first() {
            if t > now {
                break;
            }
            self.by_time.pop_first();
            if let Some((_, to)) = self.at.remove(&id) {
                out.push((id, to));
            }
        }
        out
    }
}

/// See the module docs.
pub(crate) struct Node {
    /// The configuration.
    pub cfg: Config,
    /// The node's random stream (refresh targets, samples, crawl targets).
    pub rng: Rng,
    /// The latest time an input or call brought.
    pub now: Timestamp,
    /// One identity per socket.
    pub ids: Vec<Identity>,
    /// The transaction table.
    pub rpc: Rpc,
    /// The running lookups.
    pub lookups: BTreeMap<u64, Lookup>,
    /// Lookups with a query held back by the budget or pacing, each with when
    /// the pacer next has room for that query.
    pub starved: Starved,
    /// Lookups of low priority (peer searches for get_peers candidates): their
    /// queries pass [`Pacer::admit_low`], and they are pumped after the others
    /// when starved. A subset of `lookups`.
    pub low_lookups: BTreeSet<u64>,
    next_lookup: u64,
    /// get_peers lookups that finished, with their peers, for the strategy.
    pub searches_done: Vec<(u64, Vec<SocketAddr>)>,
    /// The metadata fetcher.
    pub fetcher: Fetcher,
    /// Outputs waiting for `poll_output`.
    pub out: VecDeque<Output>,
    /// Counters.
    pub stats: Stats,
    /// Outputs dropped because `out` was full.
    pub dropped_outputs: u64,
    /// Acquisitions whose peer search found nobody, for the trackers (drained
    /// at every `poll_output`; capped like `out`).
    pub found_nobody: Vec<InfoHash>,
    /// Scratch space for routing-table events.
    routing_events: Vec<RoutingEvent>,
}

impl Node {
    /// A node of these identities.
    pub fn new(
        cfg: Config,
        rng: Rng,
        now: Timestamp,
        ids: Vec<Identity>,
        rpc: Rpc,
        fetcher: Fetcher,
    ) -> Self {
        Node {
            cfg,
            rng,
            now,
            ids,
            rpc,
            lookups: BTreeMap::new(),
            starved: Starved::default(),
            low_lookups: BTreeSet::new(),
            next_lookup: 1,
            searches_done: Vec::new(),
            fetcher,
            out: VecDeque::new(),
            stats: Stats::default(),
            dropped_outputs: 0,
            found_nobody: Vec::new(),
            routing_events: Vec::new(),
        }
    }

    /// Moves the clock forward (never back).
    pub fn advance(&mut self, t: Timestamp) {
        if t > self.now {
            self.now = t;
        }
    }

    /// Queues a public event (dropped, and counted, when the queue is full).
    pub fn emit(&mut self, e: Event) {
        self.push(Output::Event(e));
    }

    /// Queues an output (dropped, and counted, when the queue is full).
    pub fn push(&mut self, o: Output) {
        if self.out.len() >= MAX_OUT {
            self.dropped_outputs += 1;
            return;
        }
        self.out.push_back(o);
    }

    /// Fetches metadata for `ih` from `peers` (or adds peers to a running fetch).
    pub fn fetch_metadata(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        self.advance(now);
        // The fetcher's intake applies the address filter.
        self.fetcher.fetch(self.now, ih, peers)
    }

    /// Starts a lookup from identity `i`, seeded with the table's closest nodes
    /// and `seeds`, and sends its first queries. `None` when the table is full.
    pub fn start_lookup(
        &mut self,
        pacer: &mut Pacer,
        i: usize,
        target: [u8; 20],
        kind: LookupKind,
        seeds: &[(NodeId, SocketAddr)],
    ) -> Option<u64> {
        self.start_lookup_as(pacer, i, target, kind, seeds, false)
    }

    /// [`Node::start_lookup`], of low priority when `low` (see `low_lookups`).
    pub fn start_lookup_as(
        &mut self,
        pacer: &mut Pacer,
        i: usize,
        target: [u8; 20],
        kind: LookupKind,
        seeds: &[(NodeId, SocketAddr)],
        low: bool,
    ) -> Option<u64> {
        if self.lookups.len() >= self.cfg.dht.max_lookups {
            self.stats.dht.dropped_lookups += 1;
            return None;
        }
        let ident = self.ids.get(i)?;
        let id = self.next_lookup;
        self.next_lookup += 1;
        let k = self.cfg.dht.routing.k;
        let mut l = Lookup::new(id, ident.socket, target, kind, k, self.cfg.dht.lookup_alpha)
            .with_retries(self.cfg.dht.lookup_retries);
        let mut near = Vec::new();
        ident.table.closest(&target, k * 2, &mut near);
        for n in &near {
            l.add_candidate(n.id, n.addr);
        }
        for (nid, a) in seeds {
            l.add_candidate(*nid, *a);
        }
        self.lookups.insert(id, l);
        if low {
            self.low_lookups.insert(id);
        }
        self.stats.dht.lookups_started += 1;
        self.pump_lookup(pacer, id);
        Some(id)
    }

    /// Sends what lookup `id` may send now; finishes it when it is done.
    pub fn pump_lookup(&mut self, pacer: &mut Pacer, id: u64) {
        loop {
            let Some(l) = self.lookups.get_mut(&id) else {
                return;
            };
            let Some((nid, addr)) = l.next_query() else {
                break;
            };
            let i = l.socket.0 as usize;
            let target = l.target;
            let q = match l.kind {
                LookupKind::FindNode => QueryKind::FindNode {
                    target: NodeId(target),
                },
                LookupKind::GetPeers { scrape } => QueryKind::GetPeers {
                    info_hash: InfoHash(target),
                    scrape,
                    noseed: false,
                },
            };
            let low = self.low_lookups.contains(&id);
            let purpose = Purpose::Lookup(id);
            match self.try_send_query_as(pacer, low, i, addr, Some(nid), purpose, q) {
                Sent::Yes => {}
                Sent::Throttled => {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.requeue(&addr);
                    }
                    // Asked again once the pacer has room for this query, not
                    // at every tick (each ask is a refusal until then).
                    let ready = pacer.next_admit(self.now, &addr, low);
                    self.starved.insert(id, ready, addr);
                    return;
                }
                Sent::No => {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.on_error(&addr);
                    }
                }
            }
        }
        let done = self.lookups.get(&id).is_some_and(|l| l.is_done());
        if done {
            self.finish_lookup(id);
        }
    }

    fn finish_lookup(&mut self, id: u64) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        self.starved.remove(id);
        self.low_lookups.remove(&id);
        self.stats.dht.lookups_done += 1;
        if let Some(ident) = self.ids.iter_mut().find(|i| i.self_lookup == Some(id)) {
            ident.self_lookup = None;
        }
        if let LookupKind::GetPeers { .. } = l.kind {
            let (seeders, leechers) = match l.scrape_estimate() {
                Some((s, p)) => (Some(s), Some(p)),
                None => (None, None),
            };
            self.emit(Event::PeersFound {
                info_hash: InfoHash(l.target),
                peers: l.peers().copied().collect(),
                seeders,
                leechers,
            });
        }
        if let LookupKind::GetPeers { .. } = l.kind {
            let peers: Vec<SocketAddr> = l.peers().copied().collect();
            self.searches_done.push((id, peers));
        }
        let closest = l.closest().into_iter().map(|f| (f.id, f.addr)).collect();
        self.emit(Event::LookupDone {
            socket: l.socket,
            id,
            target: l.target,
            kind: l.kind,
            closest,
            queries: l.queries(),
        });
    }

    /// Sends a query from identity `i`. False if it was not sent (filtered,
    /// throttled, table full).
    pub fn send_query(
        &mut self,
        pacer: &mut Pacer,
        i: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        purpose: Purpose,
        kind: QueryKind<'_>,
    ) -> bool {
        self.try_send_query(pacer, i, to, expect_id, purpose, kind) == Sent::Yes
    }

    /// Sends a query from identity `i`, through the filters, then `pacer`.
    pub fn try_send_query(
        &mut self,
        pacer: &mut Pacer,
        i: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        purpose: Purpose,
        kind: QueryKind<'_>,
    ) -> Sent {
        self.try_send_query_as(pacer, false, i, to, expect_id, purpose, kind)
    }

    /// [`Node::try_send_query`]; with `low`, through [`Pacer::admit_low`].
    #[allow(clippy::too_many_arguments)]
    pub fn try_send_query_as(
        &mut self,
        pacer: &mut Pacer,
        low: bool,
        i: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        purpose: Purpose,
        kind: QueryKind<'_>,
    ) -> Sent {
        let to = canonical(to);
        if !is_sendable(&to, self.cfg.allow_private) {
            self.stats.dht.dropped_filtered += 1;
            return Sent::No;
        }
        let Some(ident) = self.ids.get(i) else {
            return Sent::No;
        };
        if Family::of(&to) != ident.family {
            self.stats.dht.dropped_filtered += 1;
            return Sent::No;
        }
        let socket = ident.socket;
        let own = self.our_id_for(i, expect_id);
        let admitted = if low {
            pacer.admit_low(self.now, &to)
        } else {
            pacer.admit(self.now, &to)
        };
        if !admitted {
            return Sent::Throttled;
        }
        let method = match kind {
            QueryKind::Ping => Method::Ping,
            QueryKind::FindNode { .. } => Method::FindNode,
            QueryKind::GetPeers { .. } => Method::GetPeers,
            QueryKind::AnnouncePeer { .. } => Method::AnnouncePeer,
            QueryKind::SampleInfohashes { .. } => Method::SampleInfohashes,
            QueryKind::Unknown { .. } => return Sent::No,
        };
        let Some(tid) = self
            .rpc
            .start(self.now, socket, to, method, purpose, expect_id)
        else {
            self.stats.dht.dropped_tx_full += 1;
            return Sent::No;
        };
        let want = self.want();
        let version = self.cfg.dht.version.clone();
        let msg = Message {
            tid: &tid,
            version: version.as_deref(),
            ip: None,
            read_only: self.cfg.dht.read_only,
            body: Body::Query(Query {
                id: own,
                want,
                kind,
            }),
        };
        self.stats.dht.queries_out.bump(method.name());
        self.transmit(socket, to, &msg);
        Sent::Yes
    }

    /// The id identity `i` shows to a remote node: its own, or in neighbour mode
    /// one forged to share the remote's first 15 bytes.
    pub fn our_id_for(&self, i: usize, remote: Option<NodeId>) -> NodeId {
        let own = self.ids.get(i).map(|x| x.id).unwrap_or_default();
        match remote {
            Some(r) if self.cfg.crawl.neighbour_mode => {
                let mut id = own;
                id.0[..15].copy_from_slice(&r.0[..15]);
                id
            }
            _ => own,
        }
    }

    /// `want` for our queries: both families when we run both.
    fn want(&self) -> Option<Want> {
        let v4 = self.ids.iter().any(|i| i.family == Family::V4);
        let v6 = self.ids.iter().any(|i| i.family == Family::V6);
        (v4 && v6).then_some(Want { n4: true, n6: true })
    }

    fn transmit(&mut self, socket: SocketId, to: SocketAddr, msg: &Message<'_>) {
        self.transmit_datagram(socket, to, encode(msg));
    }

    /// Queues an encoded datagram (dropped, and counted, when the queue is full).
    pub fn transmit_datagram(&mut self, socket: SocketId, to: SocketAddr, buf: Vec<u8>) {
        self.stats.dht.datagrams_out += 1;
        self.stats.dht.bytes_out += buf.len() as u64;
        if self.out.len() >= MAX_OUT {
            self.dropped_outputs += 1;
            return;
        }
        self.out.push_back(Output::Transmit {
            local: socket,
            to,
            payload: Bytes::from(buf),
        });
    }

    /// Counts a fault of a remote node.
    pub fn fault(&mut self, f: Fault, from: SocketAddr) {
        tracing::trace!(?f, %from, "dht fault");
        self.stats.dht.fault(f);
    }
    /// The usable nodes of a reply, in the family of identity `i`: the intake of
    /// KRPC `nodes`/`nodes6`. Nodes the address filter refuses are dropped and
    /// counted as [`Fault::FilteredAddress`].
    pub fn nodes_of(&mut self, i: usize, r: &Response<'_>) -> Vec<(NodeId, SocketAddr)> {
        match self.ids.get(i) {
            Some(ident) => self.nodes_in(ident.family, r),
            None => Vec::new(),
        }
    }

    /// The usable nodes of a reply in the other family than identity `i`'s (BEP 32:
    /// we ask for both when we run both), for the identities of that family; empty
    /// when we run none of it.
    pub fn foreign_nodes_of(&mut self, i: usize, r: &Response<'_>) -> Vec<(NodeId, SocketAddr)> {
        let Some(fam) = self.ids.get(i).map(|x| x.family) else {
            return Vec::new();
        };
        let other = match fam {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        if !self.ids.iter().any(|x| x.family == other) {
            return Vec::new();
        }
        self.nodes_in(other, r)
    }

    /// The usable nodes of `family` in a reply: at most 64, filtered, none of ours.
    fn nodes_in(&mut self, family: Family, r: &Response<'_>) -> Vec<(NodeId, SocketAddr)> {
        let allow = self.cfg.allow_private;
        let it: Box<dyn Iterator<Item = (NodeId, SocketAddr)>> = match family {
            Family::V4 => Box::new(r.nodes.iter().flat_map(|n| n.iter())),
            Family::V6 => Box::new(r.nodes6.iter().flat_map(|n| n.iter())),
        };
        let mut out = Vec::new();
        for (id, a) in it {
            if out.len() >= 64 {
                break;
            }
            if !is_sendable(&a, allow) {
                self.fault(Fault::FilteredAddress, a);
            } else if !self.ids.iter().any(|x| x.id == id) {
                out.push((id, canonical(a)));
            }
        }
        out
    }

    /// The usable peers of a get_peers reply: the intake of KRPC `values`.
    /// Peers the address filter refuses are dropped and counted as
    /// [`Fault::FilteredAddress`].
    pub fn peers_of(&mut self, r: &Response<'_>) -> Vec<SocketAddr> {
        let allow = self.cfg.allow_private;
        let mut out = Vec::new();
        for &a in r.values.iter().flatten() {
            if is_sendable(&a, allow) {
                out.push(canonical(a));
            } else {
                self.fault(Fault::FilteredAddress, a);
            }
        }
        out
    }

    /// Hands identity `i`'s routing-table changes out as events, and marks it
    /// bootstrapped once its table is big enough.
    pub fn flush_routing_events(&mut self, i: usize) {
        let Some(ident) = self.ids.get_mut(i) else {
            return;
        };
        ident.table.take_events(&mut self.routing_events);
        let socket = ident.socket;
        let len = ident.table.len();
        let mut newly = false;
        if !ident.bootstrapped && len >= self.cfg.dht.bootstrap_nodes {
            ident.bootstrapped = true;
            ident.next_bootstrap = None;
            newly = true;
        }
        let evs = std::mem::take(&mut self.routing_events);
        for e in &evs {
            match e {
                RoutingEvent::Added { id, addr } => self.emit(Event::NodeAdded {
                    socket,
                    id: *id,
                    addr: *addr,
                }),
                RoutingEvent::Removed { id, addr } => self.emit(Event::NodeRemoved {
                    socket,
                    id: *id,
                    addr: *addr,
                }),
            }
        }
        self.routing_events = evs;
        self.routing_events.clear();
        if newly {
            self.emit(Event::Bootstrapped { socket, nodes: len });
        }
    }
}

impl Net for Node {
    fn found_nobody(&mut self, ih: InfoHash) {
        if self.cfg.trackers.urls.is_empty() {
            return;
        }
        if self.found_nobody.len() >= MAX_OUT {
            self.dropped_outputs += 1;
            return;
        }
        self.found_nobody.push(ih);
    }

    fn send_query(
        &mut self,
        pacer: &mut Pacer,
        ident: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        tag: u64,
        kind: QueryKind<'_>,
    ) -> Sent {
        self.try_send_query(pacer, ident, to, expect_id, Purpose::Crawl(tag), kind)
    }

    fn start_peer_search(
        &mut self,
        pacer: &mut Pacer,
        ih: InfoHash,
        seeds: &[(NodeId, SocketAddr)],
        max_queries: u32,
        scrape: bool,
        low: bool,
    ) -> PeerSearch {
        let i = (0..self.ids.len()).min_by_key(|&i| self.ids[i].id.distance(&ih.0));
        let Some(i) = i else {
            return PeerSearch::NoIdentity;
        };
        let kind = LookupKind::GetPeers { scrape };
        let Some(lid) = self.start_lookup_as(pacer, i, ih.0, kind, seeds, low) else {
            return PeerSearch::Refused;
        };
        match self.lookups.get_mut(&lid) {
            Some(l) => {
                l.set_max_queries(max_queries);
                PeerSearch::Running(lid)
            }
            None => {
                // Told here; no result to route later.
                self.searches_done.retain(|(id, _)| *id != lid);
                PeerSearch::Finished
            }
        }
    }

    fn promote_search(&mut self, lid: u64) {
        self.low_lookups.remove(&lid);
        // Its wait was for the pace's upper half: try the whole of it now.
        self.starved.wake(lid, self.now);
    }

    fn fetch(&mut self, ih: InfoHash, peers: &[SocketAddr]) -> Result<(), ApiMisuse> {
        self.fetch_metadata(self.now, ih, peers)
    }

    fn emit(&mut self, event: Event) {
        Node::emit(self, event);
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn ident_for(&self, addr: &SocketAddr, id: &NodeId) -> Option<usize> {
        let fam = Family::of(addr);
        (0..self.ids.len())
            .filter(|&i| self.ids[i].family == fam)
            .min_by_key(|&i| self.ids[i].id.distance(&id.0))
    }

    fn nearest_contact(&self, target: &NodeId) -> Option<(SocketAddr, NodeId)> {
        let mut near = Vec::new();
        self.ids.first()?.table.closest(&target.0, 1, &mut near);
        near.first().map(|n| (n.addr, n.id))
    }
}
