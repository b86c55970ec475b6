//! The [`Crawler`] façade: the single sans-IO object that drivers talk to.
//!
//! It owns one DHT identity per UDP socket (each with its own routing table), the
//! shared transaction table, tokens, announce store and rate limiter, the running
//! lookups, and the metadata fetcher.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::addr::{canonical, is_sendable, Family};
use crate::config::Config;
use crate::crawl::Harvest;
use crate::fault::Fault;
use crate::fetch::Fetcher;
use crate::id::{bep42_node_id, bep42_verify, InfoHash, NodeId};
use crate::krpc::{
    self, error_code, Body, CompactNodesV4, CompactNodesV6, KrpcError, Message, Query, QueryKind,
    Response, Samples, Want,
};
use crate::lookup::{Lookup, LookupKind};
use crate::rng::Rng;
use crate::routing::{Contact, InsertOutcome, NodeEntry, RoutingEvent, RoutingTable};
use crate::rpc::{Expired, Method, Purpose, Rpc, Transaction};
use crate::server::{AnnounceStore, RateLimiter};
use crate::stats::Stats;
use crate::time::{min_deadline, Timestamp};
use crate::tokens::Tokens;
use crate::{ApiMisuse, DiscoverySource, Event, Input, Output, SocketId};

/// Maintenance cadence: pings, refreshes, bootstrap retries, store expiry.
const TICK: Duration = Duration::from_secs(1);
/// Shortest wait before lookups held back by the budget or pacing try again.
const STARVED_RETRY: Duration = Duration::from_millis(5);
/// Cap on queriers being verified by ping at once.
const MAX_VERIFYING: usize = 1024;
/// Cap on remembered router addresses.
const MAX_ROUTERS: usize = 64;
/// Cap on queued outputs before new events are dropped (counted).
const MAX_OUT: usize = 1 << 16;

/// One UDP identity: a socket, its node ID and its routing table.
pub struct Identity {
    pub socket: SocketId,
    pub bind: SocketAddr,
    pub family: Family,
    pub id: NodeId,
    pub table: RoutingTable,
    bootstrapped: bool,
    bootstrap_attempt: u32,
    next_bootstrap: Option<Timestamp>,
    bootstrap_backoff: Duration,
    self_lookup: Option<u64>,
}

pub struct Crawler {
    cfg: Config,
    pub(crate) rng: Rng,
    pub(crate) now: Timestamp,
    pub(crate) ids: Vec<Identity>,
    rpc: Rpc,
    tokens: Tokens,
    store: AnnounceStore,
    limiter: RateLimiter,
    pub(crate) lookups: BTreeMap<u64, Lookup>,
    /// Lookups with a query held back by the budget or pacing.
    starved: BTreeSet<u64>,
    /// Queriers we pinged to verify them, until when.
    verifying: BTreeMap<SocketAddr, Timestamp>,
    pub(crate) harvest: Harvest,
    next_lookup: u64,
    routers: Vec<SocketAddr>,
    fetcher: Fetcher,
    out: VecDeque<Output>,
    stats: Stats,
    next_tick: Timestamp,
    expired: Vec<Expired>,
    routing_events: Vec<RoutingEvent>,
    dropped_outputs: u64,
}

impl Crawler {
    pub fn new(cfg: Config, now: Timestamp) -> Self {
        let rng = Rng::new(cfg.seed);
        let mut id_rng = rng.child(1);
        let mut ids = Vec::new();
        for (i, ic) in cfg.identities.iter().enumerate() {
            let family = Family::of(&ic.bind);
            let id = match (ic.node_id, ic.external_ip) {
                (Some(id), _) => id,
                (None, Some(ip)) => bep42_node_id(ip, &mut id_rng),
                (None, None) => {
                    // Several identities are spread evenly over the keyspace.
                    let mut id = NodeId::random(&mut id_rng);
                    if cfg.identities.len() > 1 {
                        id.0[0] = (i * 256 / cfg.identities.len()) as u8;
                    }
                    id
                }
            };
            ids.push(Identity {
                socket: SocketId(i as u16),
                bind: ic.bind,
                family,
                id,
                table: RoutingTable::new(id, family, cfg.dht.routing.clone()),
                bootstrapped: false,
                bootstrap_attempt: 0,
                next_bootstrap: None,
                bootstrap_backoff: cfg.dht.bootstrap_backoff,
                self_lookup: None,
            });
        }
        let d = &cfg.dht;
        Crawler {
            rpc: Rpc::new(
                rng.child(2),
                d.max_transactions,
                d.short_timeout,
                d.full_timeout,
            ),
            tokens: Tokens::new(rng.child(3), now, d.token_rotation),
            store: AnnounceStore::new(
                d.max_stored_infohashes,
                d.max_peers_per_infohash,
                d.announce_ttl,
            ),
            limiter: RateLimiter::new(d.per_ip_answers_per_sec, d.rate_limit_table),
            fetcher: Fetcher::new(cfg.fetch.clone(), rng.child(4)),
            rng: rng.child(5),
            now,
            ids,
            lookups: BTreeMap::new(),
            starved: BTreeSet::new(),
            verifying: BTreeMap::new(),
            harvest: Harvest::new(cfg.crawl.clone(), now),
            next_lookup: 1,
            routers: Vec::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            next_tick: now.add(TICK),
            expired: Vec::new(),
            routing_events: Vec::new(),
            dropped_outputs: 0,
            cfg,
        }
    }

    /// The identities (node IDs, tables) for inspection.
    pub fn identities(&self) -> &[Identity] {
        &self.ids
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        for i in &self.ids {
            s.routing.add(i.table.stats());
            s.nodes += i.table.len();
        }
        s.fetch = self.fetcher.stats().clone();
        s.dht.store_evictions = self.store.evictions;
        s.dht.rate_table_evictions = self.limiter.evictions;
        s.dropped_outputs = self.dropped_outputs;
        s.lookups_running = self.lookups.len();
        s.transactions = self.rpc.len();
        s.stored_infohashes = self.store.len();
        s.crawl = self.crawl_stats();
        s
    }

    pub(crate) fn advance(&mut self, t: Timestamp) {
        if t > self.now {
            self.now = t;
        }
    }

    pub(crate) fn emit(&mut self, e: Event) {
        if self.out.len() >= MAX_OUT {
            self.dropped_outputs += 1;
            return;
        }
        self.out.push_back(Output::Event(e));
    }

    /// Starts (or restarts) bootstrapping every identity from `routers` (router
    /// hosts and saved nodes, resolved by the driver). Retried with backoff until a
    /// table reaches `bootstrap_nodes` nodes.
    pub fn bootstrap(&mut self, now: Timestamp, routers: &[SocketAddr]) {
        self.advance(now);
        for r in routers {
            let r = canonical(*r);
            if !self.routers.contains(&r) && self.routers.len() < MAX_ROUTERS {
                self.routers.push(r);
            }
        }
        for i in 0..self.ids.len() {
            self.ids[i].bootstrap_backoff = self.cfg.dht.bootstrap_backoff;
            self.bootstrap_identity(i);
        }
    }

    fn bootstrap_identity(&mut self, i: usize) {
        let Some(ident) = self.ids.get_mut(i) else {
            return;
        };
        ident.next_bootstrap = Some(self.now.add(ident.bootstrap_backoff));
        let family = ident.family;
        let target = ident.id;
        self.stats.dht.bootstrap_attempts += 1;
        let routers: Vec<SocketAddr> = self
            .routers
            .iter()
            .copied()
            .filter(|r| Family::of(r) == family)
            .collect();
        for r in routers {
            self.send_query(
                i,
                r,
                None,
                Purpose::Bootstrap,
                QueryKind::FindNode { target },
            );
        }
        // Nodes already in the table help too.
        let mut near = Vec::new();
        self.ids[i].table.closest(&target.0, 8, &mut near);
        for n in near {
            self.send_query(
                i,
                n.addr,
                Some(n.id),
                Purpose::Bootstrap,
                QueryKind::FindNode { target },
            );
        }
    }

    /// Feeds one input. Remote garbage never errors: it is counted.
    pub fn handle_input(&mut self, input: Input<'_>) {
        self.advance(input.at());
        let input_kind = if matches!(input, Input::Timeout(_)) {
            InputKind::Timeout
        } else {
            InputKind::Other
        };
        match input {
            Input::Timeout(_) => self.on_timeout(),
            Input::Datagram {
                local, from, bytes, ..
            } => self.on_datagram(local, from, bytes),
            Input::TcpConnected { conn, .. } => self.fetcher.handle_connected(self.now, conn),
            Input::TcpData { conn, bytes, .. } => self.fetcher.handle_data(self.now, conn, bytes),
            Input::TcpClosed { conn, reason, .. } => {
                self.fetcher.handle_closed(self.now, conn, reason)
            }
        }
        // Any input also runs the timers that are due, so that `poll_output` never
        // hands back a deadline in the past.
        if !matches!(input_kind, InputKind::Timeout)
            && self.deadline().is_some_and(|t| t <= self.now)
        {
            self.on_timeout();
        }
    }

    /// The next output. Drain until `Timeout` or `Idle`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        if let Some(mut o) = self.fetcher.poll_output() {
            if let Output::Event(e) = &mut o {
                self.on_fetch_event(e);
            }
            return o;
        }
        match self.deadline() {
            Some(t) => Output::Timeout(t),
            None => Output::Idle,
        }
    }

    /// The earliest internal deadline.
    fn deadline(&self) -> Option<Timestamp> {
        let mut t = Some(self.next_tick);
        t = min_deadline(t, self.crawl_deadline());
        if !self.starved.is_empty() {
            // Never a zero-delay timer: per-IP pacing may hold a lookup back even
            // when the global budget has room.
            let retry = self
                .harvest
                .budget
                .next_available(self.now)
                .max(self.now.add(STARVED_RETRY));
            t = min_deadline(t, Some(retry));
        }
        t = min_deadline(t, self.rpc.poll_timeout());
        min_deadline(t, self.fetcher.poll_timeout())
    }

    /// Fetches metadata for `ih` from `peers` (or adds peers to a running fetch).
    pub fn fetch_metadata(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        self.advance(now);
        let allow = self.cfg.allow_private;
        let peers: Vec<SocketAddr> = peers
            .iter()
            .map(|p| canonical(*p))
            .filter(|p| is_sendable(p, allow))
            .collect();
        if peers.is_empty() {
            return Err(ApiMisuse::Invalid("no usable peers"));
        }
        self.fetcher.fetch(self.now, ih, &peers)
    }

    /// Starts an iterative find_node lookup for `target` on identity `socket`.
    pub fn find_node(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        target: NodeId,
    ) -> Result<u64, ApiMisuse> {
        self.advance(now);
        let i = socket.0 as usize;
        if i >= self.ids.len() {
            return Err(ApiMisuse::Unknown);
        }
        self.start_lookup(i, target.0, LookupKind::FindNode, &[])
            .ok_or(ApiMisuse::Full)
    }

    /// Starts an iterative get_peers lookup for `ih` on the identity whose id is
    /// closest to it. Emits `PeersFound` and `LookupDone` when finished.
    pub fn get_peers(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        scrape: bool,
    ) -> Result<u64, ApiMisuse> {
        self.advance(now);
        let i = (0..self.ids.len())
            .min_by_key(|&i| self.ids[i].id.distance(&ih.0))
            .ok_or(ApiMisuse::Unknown)?;
        self.start_lookup(i, ih.0, LookupKind::GetPeers { scrape }, &[])
            .ok_or(ApiMisuse::Full)
    }

    pub(crate) fn start_lookup(
        &mut self,
        i: usize,
        target: [u8; 20],
        kind: LookupKind,
        seeds: &[(NodeId, SocketAddr)],
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
        self.stats.dht.lookups_started += 1;
        self.pump_lookup(id);
        Some(id)
    }

    fn pump_lookup(&mut self, id: u64) {
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
            match self.try_send_query(i, addr, Some(nid), Purpose::Lookup(id), q) {
                Sent::Yes => {}
                Sent::Throttled => {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.requeue(&addr);
                    }
                    self.starved.insert(id);
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
        self.starved.remove(&id);
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
            self.on_lookup_done_for_acq(id, &peers);
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
    pub(crate) fn send_query(
        &mut self,
        i: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        purpose: Purpose,
        kind: QueryKind<'_>,
    ) -> bool {
        self.try_send_query(i, to, expect_id, purpose, kind) == Sent::Yes
    }

    pub(crate) fn try_send_query(
        &mut self,
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
        if !self.harvest.ip_allows(self.now, &to) || !self.harvest.budget.try_take(self.now) {
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
    fn our_id_for(&self, i: usize, remote: Option<NodeId>) -> NodeId {
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
        let mut buf = Vec::with_capacity(256);
        krpc::encode(msg, &mut buf);
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

    fn fault(&mut self, f: Fault, from: SocketAddr) {
        tracing::trace!(?f, %from, "dht fault");
        self.stats.dht.fault(f);
    }

    fn on_datagram(&mut self, local: SocketId, from: SocketAddr, bytes: &[u8]) {
        self.stats.dht.datagrams_in += 1;
        self.stats.dht.bytes_in += bytes.len() as u64;
        let from = canonical(from);
        let i = local.0 as usize;
        if i >= self.ids.len() {
            return;
        }
        if !is_sendable(&from, self.cfg.allow_private) {
            self.fault(Fault::FilteredSource, from);
            return;
        }
        // Lenient: some clients send dict keys out of order; accept and count them
        // (see the krpc codec docs for what is still refused).
        let msg = match krpc::decode_lenient(bytes) {
            Ok(l) => {
                if l.unsorted_keys {
                    self.stats.dht.unsorted_keys_accepted += 1;
                }
                l.message
            }
            Err(e) => {
                self.fault(Fault::Malformed(e), from);
                return;
            }
        };
        match &msg.body {
            Body::Query(q) => self.on_query(i, from, &msg, q),
            Body::Response(r) => {
                self.stats.dht.responses_in += 1;
                match self.rpc.on_reply(local, msg.tid, from) {
                    Ok(tx) => self.on_response(i, from, &msg, r, tx),
                    Err(f) => self.fault(f, from),
                }
            }
            Body::Error(_) => {
                self.stats.dht.errors_in += 1;
                match self.rpc.on_reply(local, msg.tid, from) {
                    Ok(tx) => self.on_error_reply(tx),
                    Err(f) => self.fault(f, from),
                }
            }
        }
        self.flush_routing_events(i);
    }

    fn flush_routing_events(&mut self, i: usize) {
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

    fn heard(&mut self, i: usize, id: NodeId, from: SocketAddr, how: Contact, read_only: bool) {
        if read_only {
            return; // BEP 43: never put a read-only node in the routing table.
        }
        let Some(ident) = self.ids.get_mut(i) else {
            return;
        };
        if id == ident.id {
            self.fault(Fault::SuspectId, from);
            return;
        }
        // A query proves little (its source may be spoofed): it only refreshes a
        // node already in the table. Newcomers get in by answering one of our
        // queries (the crawl samples every querier, so that happens soon).
        if how == Contact::Query && ident.table.get(&from).is_none() {
            if !self.harvest.cfg.enabled {
                // A plain node verifies the querier with one ping (budget-limited).
                self.verifying.retain(|_, until| *until > self.now);
                if self.verifying.len() < MAX_VERIFYING && !self.verifying.contains_key(&from) {
                    let until = self.now.add(self.cfg.dht.full_timeout);
                    self.verifying.insert(from, until);
                    self.send_query(i, from, Some(id), Purpose::Ping, QueryKind::Ping);
                }
            }
            return;
        }
        if let InsertOutcome::Rejected(crate::routing::RejectReason::SuspectId) =
            ident.table.heard_from(self.now, id, from, how)
        {
            self.fault(Fault::SuspectId, from);
        }
    }

    fn on_response(
        &mut self,
        i: usize,
        from: SocketAddr,
        msg: &Message<'_>,
        r: &Response<'_>,
        tx: Transaction,
    ) {
        if let Some(expect) = tx.expect_id {
            if expect != r.id {
                // The address answered with another id than we knew it by.
                self.fault(Fault::SuspectId, from);
                self.on_error_reply(tx);
                return;
            }
        }
        let rtt = self.now.since(tx.sent_at);
        self.heard(i, r.id, from, Contact::Response { rtt }, msg.read_only);
        if let Some(ident) = self.ids.get_mut(i) {
            ident.table.count_query(from, tx.method, true);
        }
        if let Some(seen_as) = msg.ip {
            self.stats.dht.external_votes += 1;
            let socket = tx.key.socket;
            self.emit(Event::ExternalAddressVote {
                socket,
                voter: from,
                seen_as,
            });
        }
        match tx.purpose {
            Purpose::Ping => {}
            Purpose::Crawl(tag) => self.on_crawl_reply(i, from, r, &tx, tag),
            Purpose::Bootstrap => {
                let nodes = self.nodes_of(i, r);
                self.learn_nodes(i, &nodes);
                let running = self
                    .ids
                    .get(i)
                    .and_then(|x| x.self_lookup)
                    .filter(|id| self.lookups.contains_key(id));
                match running {
                    Some(lid) => {
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            for (nid, a) in nodes {
                                l.add_candidate(nid, a);
                            }
                        }
                        self.pump_lookup(lid);
                    }
                    None => {
                        let target = self.ids[i].id.0;
                        if let Some(lid) =
                            self.start_lookup(i, target, LookupKind::FindNode, &nodes)
                        {
                            if self.lookups.contains_key(&lid) {
                                self.ids[i].self_lookup = Some(lid);
                            }
                        }
                    }
                }
            }
            Purpose::Lookup(lid) => {
                let nodes = self.nodes_of(i, r);
                self.learn_nodes(i, &nodes);
                if let Some(l) = self.lookups.get_mut(&lid) {
                    if let LookupKind::GetPeers { .. } = l.kind {
                        if r.token.is_none() {
                            self.stats.dht.fault(Fault::BadResponse);
                        }
                        if let Some(v) = &r.values {
                            l.add_peers(v);
                        }
                        l.add_scrape(r.bf_seeds, r.bf_peers);
                    }
                    l.on_response(from, r.id, r.token);
                    for (nid, a) in nodes {
                        l.add_candidate(nid, a);
                    }
                    self.pump_lookup(lid);
                }
            }
        }
    }

    /// The usable nodes of a reply, in the family of identity `i`.
    pub(crate) fn nodes_of(&self, i: usize, r: &Response<'_>) -> Vec<(NodeId, SocketAddr)> {
        let Some(ident) = self.ids.get(i) else {
            return Vec::new();
        };
        let allow = self.cfg.allow_private;
        let it: Box<dyn Iterator<Item = (NodeId, SocketAddr)>> = match ident.family {
            Family::V4 => Box::new(r.nodes.iter().flat_map(|n| n.iter())),
            Family::V6 => Box::new(r.nodes6.iter().flat_map(|n| n.iter())),
        };
        it.filter(|(id, a)| *id != ident.id && is_sendable(a, allow))
            .take(64)
            .collect()
    }

    fn on_error_reply(&mut self, tx: Transaction) {
        if let Purpose::Crawl(tag) = tx.purpose {
            self.on_crawl_failure(tag, true);
        }
        if let Purpose::Lookup(lid) = tx.purpose {
            if let Some(l) = self.lookups.get_mut(&lid) {
                l.on_error(&tx.key.addr);
            }
            self.pump_lookup(lid);
        }
    }

    fn on_timeout(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.rpc.expire(self.now, &mut expired);
        for e in expired.drain(..) {
            match e {
                Expired::Short(tx) => {
                    self.stats.dht.timeouts_short += 1;
                    if let Purpose::Lookup(lid) = tx.purpose {
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.on_short_timeout(&tx.key.addr);
                        }
                        self.pump_lookup(lid);
                    }
                }
                Expired::Full(tx) => {
                    self.stats.dht.timeouts_full += 1;
                    let i = tx.key.socket.0 as usize;
                    if let Some(ident) = self.ids.get_mut(i) {
                        ident.table.count_query(tx.key.addr, tx.method, false);
                        ident.table.failed(self.now, tx.key.addr);
                    }
                    if let Purpose::Lookup(lid) = tx.purpose {
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.on_failure(&tx.key.addr);
                        }
                        self.pump_lookup(lid);
                    }
                    if let Purpose::Crawl(tag) = tx.purpose {
                        self.on_crawl_failure(tag, false);
                    }
                    self.flush_routing_events(i);
                }
            }
        }
        self.expired = expired;
        // Lookups held back by the budget go first.
        if !self.starved.is_empty() && self.harvest.budget.available(self.now) > 0 {
            let starved = std::mem::take(&mut self.starved);
            for lid in starved {
                self.pump_lookup(lid);
            }
        }
        self.crawl_tick();
        if self.now >= self.next_tick {
            self.next_tick = self.now.add(TICK);
            self.maintenance();
        }
        self.fetcher.handle_timeout(self.now);
    }

    fn maintenance(&mut self) {
        self.tokens.tick(self.now);
        self.store.expire(self.now, 64);
        for i in 0..self.ids.len() {
            // Bootstrap retries with backoff.
            let retry = self.ids[i].next_bootstrap.is_some_and(|t| self.now >= t);
            if !self.ids[i].bootstrapped && retry {
                let ident = &mut self.ids[i];
                ident.bootstrap_attempt += 1;
                ident.bootstrap_backoff =
                    (ident.bootstrap_backoff * 2).min(self.cfg.dht.bootstrap_max_backoff);
                let (socket, attempt) = (ident.socket, ident.bootstrap_attempt);
                self.emit(Event::BootstrapFailed { socket, attempt });
                self.bootstrap_identity(i);
            }
            // A table that emptied out bootstraps again.
            if self.ids[i].bootstrapped && self.ids[i].table.is_empty() && !self.routers.is_empty()
            {
                self.ids[i].bootstrapped = false;
                self.bootstrap_identity(i);
            }
            // Ping questionable nodes (bounded per tick).
            for _ in 0..8 {
                let Some((nid, addr)) = self.ids[i].table.next_to_ping(self.now) else {
                    break;
                };
                self.send_query(i, addr, Some(nid), Purpose::Ping, QueryKind::Ping);
            }
            // Refresh idle buckets.
            let mut targets = Vec::new();
            self.ids[i]
                .table
                .refresh_targets(self.now, &mut self.rng, &mut targets);
            for t in targets.into_iter().take(4) {
                self.start_lookup(i, t.0, LookupKind::FindNode, &[]);
            }
            self.flush_routing_events(i);
        }
    }

    // ---- the server: honest answers ----

    fn on_query(&mut self, i: usize, from: SocketAddr, msg: &Message<'_>, q: &Query<'_>) {
        self.stats.dht.queries_in.bump(q.kind.method());
        if self.cfg.dht.read_only {
            return; // BEP 43: read-only nodes answer nothing.
        }
        if !self.limiter.allow(self.now, from.ip()) {
            self.fault(Fault::RateLimited, from);
            if self.cfg.dht.rate_limit_error {
                self.send_error(i, from, msg.tid, error_code::SERVER, b"rate limited");
            }
            return;
        }
        self.heard(i, q.id, from, Contact::Query, msg.read_only);
        if !msg.read_only {
            self.learn_nodes(i, &[(q.id, from)]);
        }
        let own = self.our_id_for(i, Some(q.id));
        let socket = self.ids[i].socket;
        let want = q.want.unwrap_or(match self.ids[i].family {
            Family::V4 => Want {
                n4: true,
                n6: false,
            },
            Family::V6 => Want {
                n4: false,
                n6: true,
            },
        });
        let mut resp = Response {
            id: own,
            ..Response::default()
        };
        let (mut n4, mut n6) = (Vec::new(), Vec::new());
        let token;
        let mut values = Vec::new();
        let mut samples_buf = Vec::new();
        let (bf_s, bf_p);
        match q.kind {
            QueryKind::Ping => {}
            QueryKind::FindNode { target } => {
                self.compact_nodes(i, &target.0, want, &mut n4, &mut n6);
            }
            QueryKind::GetPeers {
                info_hash,
                scrape,
                noseed,
            } => {
                self.discovered(info_hash, DiscoverySource::GetPeers, from, None, None);
                self.compact_nodes(i, &info_hash.0, want, &mut n4, &mut n6);
                token = self.tokens.issue(self.now, from.ip());
                resp.token = Some(&token);
                values = self
                    .store
                    .peers(self.now, &info_hash, from.is_ipv6(), noseed, 50);
                if scrape {
                    (bf_s, bf_p) = self.store.scrape(self.now, &info_hash);
                    resp.bf_seeds = Some(&bf_s.0);
                    resp.bf_peers = Some(&bf_p.0);
                }
            }
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            } => {
                if !self.tokens.verify(self.now, from.ip(), token) {
                    self.fault(Fault::BadToken, from);
                    self.send_error(i, from, msg.tid, error_code::PROTOCOL, b"bad token");
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                let peer = SocketAddr::new(from.ip(), port);
                if port == 0 {
                    self.send_error(i, from, msg.tid, error_code::PROTOCOL, b"bad port");
                    return;
                }
                self.store
                    .announce(self.now, info_hash, peer, seed.unwrap_or(false));
                self.discovered(info_hash, DiscoverySource::Announce, from, Some(peer), None);
            }
            QueryKind::SampleInfohashes { target } => {
                self.compact_nodes(i, &target.0, want, &mut n4, &mut n6);
                let mut s = Vec::new();
                self.store
                    .sample(&mut self.rng, self.cfg.dht.max_samples, &mut s);
                for ih in &s {
                    samples_buf.extend_from_slice(&ih.0);
                }
                resp.samples = Samples::new(&samples_buf);
                resp.num = Some(self.store.len() as i64);
                resp.interval = Some(self.cfg.dht.sample_interval as i64);
            }
            QueryKind::Unknown {
                target, info_hash, ..
            } => match target.map(|t| t.0).or(info_hash.map(|h| h.0)) {
                // Forward compatibility: a newer query that names a key gets nodes.
                Some(key) => self.compact_nodes(i, &key, want, &mut n4, &mut n6),
                None => {
                    self.send_error(
                        i,
                        from,
                        msg.tid,
                        error_code::METHOD_UNKNOWN,
                        b"method unknown",
                    );
                    return;
                }
            },
        }
        if !values.is_empty() {
            resp.values = Some(values);
        }
        if !n4.is_empty() {
            resp.nodes = CompactNodesV4::new(&n4);
        }
        if !n6.is_empty() {
            resp.nodes6 = CompactNodesV6::new(&n6);
        }
        let version = self.cfg.dht.version.clone();
        let reply = Message {
            tid: msg.tid,
            version: version.as_deref(),
            ip: Some(from),
            read_only: false,
            body: Body::Response(resp),
        };
        self.stats.dht.responses_out += 1;
        self.transmit(socket, from, &reply);
    }

    fn compact_nodes(
        &self,
        i: usize,
        target: &[u8; 20],
        want: Want,
        n4: &mut Vec<u8>,
        n6: &mut Vec<u8>,
    ) {
        let k = self.cfg.dht.routing.k;
        let mut near: Vec<NodeEntry> = Vec::new();
        for (fam, on, buf) in [(Family::V4, want.n4, n4), (Family::V6, want.n6, n6)] {
            if !on {
                continue;
            }
            // Prefer the identity that received the query, else any of that family.
            let table = match self.ids.get(i).filter(|x| x.family == fam) {
                Some(x) => &x.table,
                None => match self.ids.iter().find(|x| x.family == fam) {
                    Some(x) => &x.table,
                    None => continue,
                },
            };
            near.clear();
            table.closest(target, k, &mut near);
            for n in &near {
                krpc::write_compact_node(&n.id, &n.addr, buf);
            }
        }
    }

    fn send_error(&mut self, i: usize, to: SocketAddr, tid: &[u8], code: i64, text: &[u8]) {
        let Some(socket) = self.ids.get(i).map(|x| x.socket) else {
            return;
        };
        let version = self.cfg.dht.version.clone();
        let msg = Message {
            tid,
            version: version.as_deref(),
            ip: None,
            read_only: false,
            body: Body::Error(KrpcError {
                code,
                message: text,
            }),
        };
        self.stats.dht.errors_out += 1;
        self.transmit(socket, to, &msg);
    }

    /// Whether a node's id satisfies BEP 42 for its address (exempt ranges pass).
    pub fn verify_node(id: &NodeId, addr: &SocketAddr) -> bool {
        bep42_verify(id, addr.ip())
    }
}

/// Whether a query went out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Yes,
    /// Held back by the packet budget or per-IP pacing: try again later.
    Throttled,
    /// Not sendable (filtered address, wrong family, transaction table full).
    No,
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum InputKind {
    Timeout,
    Other,
}
