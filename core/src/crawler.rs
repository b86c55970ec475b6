//! The [`Crawler`] façade: the single sans-IO object that drivers talk to.
//!
//! It routes between its machines: the DHT [`Node`] (identities and routing
//! tables, transactions, lookups, the metadata fetcher, outputs), the
//! [`Responder`] (honest answers, tokens, announce store, answer limiter) and
//! the crawl [`Strategy`]. It decides nothing about harvesting itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::addr::{canonical, is_sendable, Family};
use crate::config::Config;
use crate::crawl::{CrawlReply, CrawlStats, Discovery, Strategy};
use crate::fault::Fault;
use crate::fetch::{FetchOutput, Fetcher};
use crate::id::{bep42_node_id, bep42_verify, InfoHash, NodeId};
pub use crate::identity::Identity;
use crate::krpc::{self, error_code, Body, Message, Query, QueryKind, Response};
use crate::lookup::LookupKind;
use crate::node::Node;
use crate::rng::Rng;
use crate::routing::{Contact, InsertOutcome, RoutingTable};
use crate::rpc::{Expired, Purpose, Rpc, Transaction};
use crate::server::{error_datagram, AnnounceStore, Ask, RateLimiter, Reply, Responder};
use crate::stats::{Stats, TableSize};
use crate::time::{min_deadline, Timestamp};
use crate::tokens::Tokens;
use crate::{ApiMisuse, Event, Input, Output, SocketId};

/// Maintenance cadence: pings, refreshes, bootstrap retries, store expiry.
const TICK: Duration = Duration::from_secs(1);
/// Shortest wait before lookups held back by the budget or pacing try again.
const STARVED_RETRY: Duration = Duration::from_millis(5);
/// Cap on queriers being verified by ping at once.
const MAX_VERIFYING: usize = 1024;
/// Cap on remembered router addresses.
const MAX_ROUTERS: usize = 64;

/// The crawler: a DHT node, its honest server, its crawl strategy and its
/// metadata fetcher, as one sans-IO state machine. Feed it [`Input`]s, drain
/// [`Crawler::poll_output`] until [`Output::Timeout`] or [`Output::Idle`].
pub struct Crawler {
    node: Node,
    server: Responder,
    strategy: Strategy,
    /// Queriers we pinged to verify them, until when.
    verifying: BTreeMap<SocketAddr, Timestamp>,
    routers: Vec<SocketAddr>,
    next_tick: Timestamp,
    expired: Vec<Expired>,
}

impl Crawler {
    /// A crawler with these identities and settings, starting at `now`.
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
        let rpc = Rpc::new(
            rng.child(2),
            d.max_transactions,
            d.short_timeout,
            d.full_timeout,
        )
        .with_late_factor(d.late_factor);
        let server = Responder::new(
            Tokens::new(rng.child(3), now, d.token_rotation),
            AnnounceStore::new(
                d.max_stored_infohashes,
                d.max_peers_per_infohash,
                d.announce_ttl,
            ),
            RateLimiter::new(d.per_ip_answers_per_sec, d.rate_limit_table),
        );
        let fetcher =
            Fetcher::new(cfg.fetch.clone(), rng.child(4)).with_allow_private(cfg.allow_private);
        let strategy = Strategy::new(cfg.crawl.clone(), now, rng.child(6).bytes());
        Crawler {
            node: Node::new(cfg, rng.child(5), now, ids, rpc, fetcher),
            server,
            strategy,
            verifying: BTreeMap::new(),
            routers: Vec::new(),
            next_tick: now.add(TICK),
            expired: Vec::new(),
        }
    }

    /// The identities (node IDs, tables) for inspection.
    pub fn identities(&self) -> &[Identity] {
        &self.node.ids
    }

    /// The latest time an input or call brought.
    pub fn now(&self) -> Timestamp {
        self.node.now
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.node.cfg
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let n = &self.node;
        let mut s = n.stats.clone();
        for i in &n.ids {
            s.routing.add(i.table.stats());
            s.nodes += i.table.len();
        }
        s.fetch = n.fetcher.stats().clone();
        s.dht.store_evictions = self.server.store().evictions;
        s.dht.rate_table_evictions = self.server.limiter().evictions;
        s.dropped_outputs = n.dropped_outputs;
        s.lookups_running = n.lookups.len();
        s.transactions = n.rpc.live_len();
        s.stored_infohashes = self.server.store().len();
        s.crawl = self.crawl_stats();
        s
    }

    /// Every bounded table the crawler keeps, with its size now and the cap its
    /// configuration holds it to: routing tables (buckets and replacement caches),
    /// transactions, lookups, the announce store, the answer rate limiter, the
    /// queriers being verified, the crawl strategy's tables and the fetcher's jobs,
    /// sessions and peer cache. For soak runs and monitoring; a table over its
    /// bound is a bug.
    pub fn table_sizes(&self) -> Vec<TableSize> {
        let n = &self.node;
        let d = &n.cfg.dht;
        let f = &n.cfg.fetch;
        let mut v = Vec::new();
        let mut t = |name, len, bound| v.push(TableSize { name, len, bound });
        for i in &n.ids {
            t(
                "routing table",
                i.table.len() + i.table.cached_len(),
                d.routing.max_nodes,
            );
        }
        t("transactions", n.rpc.live_len(), d.max_transactions);
        t("late transactions", n.rpc.late_len(), n.rpc.late_cap());
        t("lookups", n.lookups.len(), d.max_lookups);
        t(
            "announce store",
            self.server.store().len(),
            d.max_stored_infohashes,
        );
        t(
            "answer rate limiter",
            self.server.limiter().len(),
            d.rate_limit_table,
        );
        t("verifying", self.verifying.len(), MAX_VERIFYING);
        t("routers", self.routers.len(), MAX_ROUTERS);
        t("fetch jobs", n.fetcher.jobs(), f.max_jobs);
        t("fetch sessions", n.fetcher.sessions(), f.max_sessions);
        t("peer cache", n.fetcher.peer_cache_len(), f.peer_cache_size);
        let open_cap = d.max_transactions.saturating_add(n.rpc.late_cap());
        self.strategy.table_sizes(open_cap, &mut v);
        v
    }

    /// Crawl counters.
    pub fn crawl_stats(&self) -> CrawlStats {
        self.strategy.stats()
    }

    /// Whether `ih` is being acquired (peer search or fetch).
    pub fn is_acquiring(&self, ih: &InfoHash) -> bool {
        self.strategy.is_acquiring(ih)
    }

    /// Finds peers for `ih` and fetches its metadata: asks the node that sampled it
    /// first, then a get_peers traversal, then the fetcher. Call it for discovered
    /// infohashes that storage does not have. Idempotent while running; ignored while
    /// a failed infohash waits out its backoff.
    pub fn acquire(&mut self, now: Timestamp, ih: InfoHash) -> Result<(), ApiMisuse> {
        self.node.advance(now);
        let r = self.strategy.acquire(self.node.now, ih, &mut self.node);
        self.route_search_results();
        r
    }

    /// Starts (or restarts) bootstrapping every identity from `routers` (router
    /// hosts and saved nodes, resolved by the driver). Retried with backoff until a
    /// table reaches `bootstrap_nodes` nodes.
    pub fn bootstrap(&mut self, now: Timestamp, routers: &[SocketAddr]) {
        self.node.advance(now);
        for r in routers {
            let r = canonical(*r);
            if !self.routers.contains(&r) && self.routers.len() < MAX_ROUTERS {
                self.routers.push(r);
            }
        }
        for i in 0..self.node.ids.len() {
            self.node.ids[i].bootstrap_backoff = self.node.cfg.dht.bootstrap_backoff;
            self.bootstrap_identity(i);
        }
    }

    fn bootstrap_identity(&mut self, i: usize) {
        let Some(ident) = self.node.ids.get_mut(i) else {
            return;
        };
        ident.next_bootstrap = Some(self.node.now.add(ident.bootstrap_backoff));
        let family = ident.family;
        let target = ident.id;
        self.node.stats.dht.bootstrap_attempts += 1;
        let routers: Vec<SocketAddr> = self
            .routers
            .iter()
            .copied()
            .filter(|r| Family::of(r) == family)
            .collect();
        for r in routers {
            self.node.send_query(
                self.strategy.pacer(),
                i,
                r,
                None,
                Purpose::Bootstrap,
                QueryKind::FindNode { target },
            );
        }
        // Nodes already in the table help too.
        let mut near = Vec::new();
        self.node.ids[i].table.closest(&target.0, 8, &mut near);
        for n in near {
            self.node.send_query(
                self.strategy.pacer(),
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
        self.node.advance(input.at());
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
            Input::TcpConnected { conn, .. } => {
                self.node.fetcher.handle_connected(self.node.now, conn)
            }
            Input::TcpData { conn, bytes, .. } => {
                self.node.fetcher.handle_data(self.node.now, conn, bytes)
            }
            Input::TcpClosed { conn, reason, .. } => {
                self.node.fetcher.handle_closed(self.node.now, conn, reason)
            }
        }
        // Any input also runs the timers that are due, so that `poll_output` never
        // hands back a deadline in the past.
        if !matches!(input_kind, InputKind::Timeout)
            && self.deadline().is_some_and(|t| t <= self.node.now)
        {
            self.on_timeout();
        }
    }

    /// The next output. Drain until `Timeout` or `Idle`.
    #[must_use = "an output taken is gone: carry it out, and drain until Timeout or Idle"]
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.node.out.pop_front() {
            return o;
        }
        if let Some(o) = self.node.fetcher.poll_outcome() {
            return self.fetch_output(o);
        }
        match self.deadline() {
            Some(t) => Output::Timeout(t),
            None => Output::Idle,
        }
    }

    /// A fetcher output on its way out: the strategy hears of every ended
    /// fetch, and a failure's event is built with what it decided.
    fn fetch_output(&mut self, o: FetchOutput) -> Output {
        let now = self.node.now;
        match o {
            FetchOutput::Output(o) => {
                if let Output::Event(Event::MetadataFetched(m)) = &o {
                    self.strategy.on_fetched(now, m.info_hash);
                }
                o
            }
            FetchOutput::Failed(f) => {
                let next = self.strategy.on_fetch_failed(now, &f, &mut self.node);
                self.route_search_results();
                Output::Event(Event::MetadataFailed(Box::new(f.into_event(next))))
            }
        }
    }

    /// The earliest internal deadline.
    fn deadline(&self) -> Option<Timestamp> {
        let now = self.node.now;
        let mut t = Some(self.next_tick);
        t = min_deadline(t, self.strategy.deadline());
        if !self.node.starved.is_empty() {
            // Never a zero-delay timer: per-IP pacing may hold a lookup back even
            // when the global budget has room.
            let retry = self
                .strategy
                .budget_next_available(now)
                .max(now.add(STARVED_RETRY));
            t = min_deadline(t, Some(retry));
        }
        t = min_deadline(t, self.node.rpc.poll_timeout());
        min_deadline(t, self.node.fetcher.poll_timeout())
    }

    /// Fetches metadata for `ih` from `peers` (or adds peers to a running fetch).
    pub fn fetch_metadata(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        self.node.fetch_metadata(now, ih, peers)
    }

    /// Starts an iterative find_node lookup for `target` on identity `socket`.
    pub fn find_node(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        target: NodeId,
    ) -> Result<u64, ApiMisuse> {
        self.node.advance(now);
        let i = socket.0 as usize;
        if i >= self.node.ids.len() {
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
        self.node.advance(now);
        let i = (0..self.node.ids.len())
            .min_by_key(|&i| self.node.ids[i].id.distance(&ih.0))
            .ok_or(ApiMisuse::Unknown)?;
        self.start_lookup(i, ih.0, LookupKind::GetPeers { scrape }, &[])
            .ok_or(ApiMisuse::Full)
    }

    fn start_lookup(
        &mut self,
        i: usize,
        target: [u8; 20],
        kind: LookupKind,
        seeds: &[(NodeId, SocketAddr)],
    ) -> Option<u64> {
        let lid = self
            .node
            .start_lookup(self.strategy.pacer(), i, target, kind, seeds);
        self.route_search_results();
        lid
    }

    fn pump_lookup(&mut self, id: u64) {
        self.node.pump_lookup(self.strategy.pacer(), id);
        self.route_search_results();
    }

    /// Hands the peer searches that ended to the strategy.
    fn route_search_results(&mut self) {
        while !self.node.searches_done.is_empty() {
            let done = std::mem::take(&mut self.node.searches_done);
            for (lid, peers) in done {
                let now = self.node.now;
                self.strategy
                    .on_lookup_done(now, lid, &peers, &mut self.node);
            }
        }
    }

    /// Feeds the nodes of any reply (or a querier) to the strategy's node book.
    fn learn_nodes(&mut self, i: usize, nodes: &[(NodeId, SocketAddr)]) {
        self.strategy
            .learn_nodes(self.node.now, i, nodes, &self.node);
    }

    fn on_datagram(&mut self, local: SocketId, from: SocketAddr, bytes: &[u8]) {
        self.node.stats.dht.datagrams_in += 1;
        self.node.stats.dht.bytes_in += bytes.len() as u64;
        let from = canonical(from);
        let i = local.0 as usize;
        if i >= self.node.ids.len() {
            return;
        }
        if !is_sendable(&from, self.node.cfg.allow_private) {
            self.node.fault(Fault::FilteredSource, from);
            return;
        }
        // Lenient: some clients send dict keys out of order; accept and count them
        // (see the krpc codec docs for what is still refused).
        let msg = match krpc::decode_lenient(bytes) {
            Ok(l) => {
                if l.unsorted_keys {
                    self.node.stats.dht.unsorted_keys_accepted += 1;
                }
                l.message
            }
            Err(e) => {
                self.node.fault(Fault::Malformed(e), from);
                return;
            }
        };
        match &msg.body {
            Body::Query(q) => self.on_query(i, from, &msg, q),
            Body::Response(r) => {
                self.node.stats.dht.responses_in += 1;
                match self.node.rpc.on_reply(local, msg.tid, from) {
                    Ok(tx) => self.on_response(i, from, &msg, r, tx),
                    Err(f) => self.node.fault(f, from),
                }
            }
            Body::Error(_) => {
                self.node.stats.dht.errors_in += 1;
                match self.node.rpc.on_reply(local, msg.tid, from) {
                    Ok(tx) => self.on_error_reply(tx),
                    Err(f) => self.node.fault(f, from),
                }
            }
        }
        self.node.flush_routing_events(i);
    }

    fn heard(&mut self, i: usize, id: NodeId, from: SocketAddr, how: Contact, read_only: bool) {
        if read_only {
            return; // BEP 43: never put a read-only node in the routing table.
        }
        let Some(ident) = self.node.ids.get_mut(i) else {
            return;
        };
        if id == ident.id {
            self.node.fault(Fault::SuspectId, from);
            return;
        }
        // A query proves little (its source may be spoofed): it only refreshes a
        // node already in the table. Newcomers get in by answering one of our
        // queries (the crawl samples every querier, so that happens soon).
        if how == Contact::Query && ident.table.get(&from).is_none() {
            if !self.strategy.enabled() {
                // A plain node verifies the querier with one ping (budget-limited).
                self.verifying.retain(|_, until| *until > self.node.now);
                if self.verifying.len() < MAX_VERIFYING && !self.verifying.contains_key(&from) {
                    let until = self.node.now.add(self.node.cfg.dht.full_timeout);
                    self.verifying.insert(from, until);
                    self.node.send_query(
                        self.strategy.pacer(),
                        i,
                        from,
                        Some(id),
                        Purpose::Ping,
                        QueryKind::Ping,
                    );
                }
            }
            return;
        }
        if let InsertOutcome::Rejected(crate::routing::RejectReason::SuspectId) =
            ident.table.heard_from(self.node.now, id, from, how)
        {
            self.node.fault(Fault::SuspectId, from);
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
                self.node.fault(Fault::SuspectId, from);
                self.on_error_reply(tx);
                return;
            }
        }
        let rtt = self.node.now.since(tx.sent_at);
        self.heard(i, r.id, from, Contact::Response { rtt }, msg.read_only);
        if let Some(ident) = self.node.ids.get_mut(i) {
            ident.table.count_query(from, tx.method, true);
        }
        if let Some(seen_as) = msg.ip {
            self.node.stats.dht.external_votes += 1;
            let socket = tx.key.socket;
            self.node.emit(Event::ExternalAddressVote {
                socket,
                voter: from,
                seen_as,
            });
        }
        match tx.purpose {
            Purpose::Ping => {}
            Purpose::Crawl(tag) => {
                let nodes = self.node.nodes_of(i, r);
                let peers = self.node.peers_of(r);
                let reply = CrawlReply {
                    ident: i,
                    from,
                    response: r,
                    nodes: &nodes,
                    peers: &peers,
                };
                self.strategy
                    .on_reply(self.node.now, tag, reply, &mut self.node);
            }
            Purpose::Bootstrap => {
                let nodes = self.node.nodes_of(i, r);
                self.learn_nodes(i, &nodes);
                let running = self
                    .node
                    .ids
                    .get(i)
                    .and_then(|x| x.self_lookup)
                    .filter(|id| self.node.lookups.contains_key(id));
                match running {
                    Some(lid) => {
                        if let Some(l) = self.node.lookups.get_mut(&lid) {
                            for (nid, a) in nodes {
                                l.add_candidate(nid, a);
                            }
                        }
                        self.pump_lookup(lid);
                    }
                    None => {
                        let target = self.node.ids[i].id.0;
                        if let Some(lid) =
                            self.start_lookup(i, target, LookupKind::FindNode, &nodes)
                        {
                            if self.node.lookups.contains_key(&lid) {
                                self.node.ids[i].self_lookup = Some(lid);
                            }
                        }
                    }
                }
            }
            Purpose::Lookup(lid) => {
                let nodes = self.node.nodes_of(i, r);
                let peers = self.node.peers_of(r);
                self.learn_nodes(i, &nodes);
                if let Some(l) = self.node.lookups.get_mut(&lid) {
                    if let LookupKind::GetPeers { .. } = l.kind {
                        if r.token.is_none() {
                            self.node.stats.dht.fault(Fault::BadResponse);
                        }
                        l.add_peers(&peers);
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

    fn on_error_reply(&mut self, tx: Transaction) {
        if let Purpose::Crawl(tag) = tx.purpose {
            self.strategy
                .on_failure(self.node.now, tag, true, &mut self.node);
        }
        if let Purpose::Lookup(lid) = tx.purpose {
            if let Some(l) = self.node.lookups.get_mut(&lid) {
                l.on_error(&tx.key.addr);
            }
            self.pump_lookup(lid);
        }
    }

    fn on_timeout(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.node.rpc.expire(self.node.now, &mut expired);
        for e in expired.drain(..) {
            match e {
                Expired::Short(tx) => {
                    self.node.stats.dht.timeouts_short += 1;
                    if let Purpose::Lookup(lid) = tx.purpose {
                        if let Some(l) = self.node.lookups.get_mut(&lid) {
                            l.on_short_timeout(&tx.key.addr);
                        }
                        self.pump_lookup(lid);
                    }
                }
                Expired::Full(tx) => {
                    self.node.stats.dht.timeouts_full += 1;
                    let i = tx.key.socket.0 as usize;
                    if let Some(ident) = self.node.ids.get_mut(i) {
                        ident.table.count_query(tx.key.addr, tx.method, false);
                        ident.table.failed(self.node.now, tx.key.addr);
                    }
                    if let Purpose::Lookup(lid) = tx.purpose {
                        if let Some(l) = self.node.lookups.get_mut(&lid) {
                            l.on_failure(&tx.key.addr);
                        }
                        self.pump_lookup(lid);
                    }
                    if let Purpose::Crawl(tag) = tx.purpose {
                        self.strategy
                            .on_failure(self.node.now, tag, false, &mut self.node);
                    }
                    self.node.flush_routing_events(i);
                }
            }
        }
        self.expired = expired;
        // Lookups held back by the budget go first.
        if !self.node.starved.is_empty() && self.strategy.budget_available(self.node.now) > 0 {
            let starved = std::mem::take(&mut self.node.starved);
            for lid in starved {
                self.pump_lookup(lid);
            }
        }
        self.strategy.tick(self.node.now, &mut self.node);
        if self.node.now >= self.next_tick {
            self.next_tick = self.node.now.add(TICK);
            self.maintenance();
        }
        self.node.fetcher.handle_timeout(self.node.now);
    }

    fn maintenance(&mut self) {
        self.server.maintain(self.node.now);
        for i in 0..self.node.ids.len() {
            // Bootstrap retries with backoff.
            let retry = self.node.ids[i]
                .next_bootstrap
                .is_some_and(|t| self.node.now >= t);
            if !self.node.ids[i].bootstrapped && retry {
                let ident = &mut self.node.ids[i];
                ident.bootstrap_attempt += 1;
                ident.bootstrap_backoff =
                    (ident.bootstrap_backoff * 2).min(self.node.cfg.dht.bootstrap_max_backoff);
                let (socket, attempt) = (ident.socket, ident.bootstrap_attempt);
                self.node.emit(Event::BootstrapFailed { socket, attempt });
                self.bootstrap_identity(i);
            }
            // A table that emptied out bootstraps again.
            if self.node.ids[i].bootstrapped
                && self.node.ids[i].table.is_empty()
                && !self.routers.is_empty()
            {
                self.node.ids[i].bootstrapped = false;
                self.bootstrap_identity(i);
            }
            // Ping questionable nodes (bounded per tick).
            for _ in 0..8 {
                let Some((nid, addr)) = self.node.ids[i].table.next_to_ping(self.node.now) else {
                    break;
                };
                self.node.send_query(
                    self.strategy.pacer(),
                    i,
                    addr,
                    Some(nid),
                    Purpose::Ping,
                    QueryKind::Ping,
                );
            }
            // Refresh idle buckets.
            let mut targets = Vec::new();
            self.node.ids[i]
                .table
                .refresh_targets(self.node.now, &mut self.node.rng, &mut targets);
            for t in targets.into_iter().take(4) {
                self.start_lookup(i, t.0, LookupKind::FindNode, &[]);
            }
            self.node.flush_routing_events(i);
        }
    }

    // ---- the server: honest answers ----

    fn on_query(&mut self, i: usize, from: SocketAddr, msg: &Message<'_>, q: &Query<'_>) {
        let now = self.node.now;
        self.node.stats.dht.queries_in.bump(q.kind.method());
        if self.node.cfg.dht.read_only {
            return; // BEP 43: read-only nodes answer nothing.
        }
        if !self.server.admit(now, from) {
            self.node.fault(Fault::RateLimited, from);
            if self.node.cfg.dht.rate_limit_error {
                let version = self.node.cfg.dht.version.as_deref();
                let e = error_datagram(msg.tid, version, error_code::SERVER, b"rate limited");
                self.send_reply(i, from, Reply::Error(e, None));
            }
            return;
        }
        self.heard(i, q.id, from, Contact::Query, msg.read_only);
        if !msg.read_only {
            self.learn_nodes(i, &[(q.id, from)]);
        }
        let n = &mut self.node;
        let ask = Ask {
            now,
            from,
            ident: i,
            own: n.our_id_for(i, Some(q.id)),
            ids: &n.ids,
            k: n.cfg.dht.routing.k,
            max_samples: n.cfg.dht.max_samples,
            sample_interval: n.cfg.dht.sample_interval,
            version: n.cfg.dht.version.as_deref(),
        };
        let (reply, capture) = self.server.answer(&ask, &mut n.rng, msg.tid, q);
        if let Some(c) = capture {
            let d = Discovery {
                info_hash: c.info_hash,
                source: c.source,
                from,
                peer: c.peer,
                sampled_by: None,
            };
            self.strategy.on_discovery(now, d, &mut self.node);
            self.route_search_results();
        }
        self.send_reply(i, from, reply);
    }

    /// Counts and queues the responder's reply.
    fn send_reply(&mut self, i: usize, to: SocketAddr, reply: Reply) {
        let Some(socket) = self.node.ids.get(i).map(|x| x.socket) else {
            return;
        };
        let datagram = match reply {
            Reply::Response(d) => {
                self.node.stats.dht.responses_out += 1;
                d
            }
            Reply::Error(d, fault) => {
                if let Some(f) = fault {
                    self.node.fault(f, to);
                }
                self.node.stats.dht.errors_out += 1;
                d
            }
        };
        self.node.transmit_datagram(socket, to, datagram);
    }

    /// Whether a node's id satisfies BEP 42 for its address (exempt ranges pass).
    pub fn verify_node(id: &NodeId, addr: &SocketAddr) -> bool {
        bep42_verify(id, addr.ip())
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum InputKind {
    Timeout,
    Other,
}
