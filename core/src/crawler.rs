//! The [`Crawler`] façade: the single sans-IO object that drivers talk to.
//!
//! It routes between its machines: the DHT [`Node`] (identities and routing
//! tables, transactions, lookups, the metadata fetcher, outputs), the
//! [`Responder`] (honest answers, tokens, announce store, answer limiter) and
//! the crawl [`Strategy`]. It decides nothing about harvesting itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::addr::{canonical, is_sendable, Family};
use crate::config::Config;
use crate::crawl::{CrawlReply, CrawlStats, Discovery, Strategy};
use crate::fault::Fault;
use crate::fetch::{FetchOutput, Fetcher, UtpLink};
use crate::id::{bep42_matches, bep42_verify, InfoHash, NodeId};
pub use crate::identity::Identity;
use crate::identity::{bep42_ids, initial_ids, refresh_target, REFRESH_DEPTHS};
use crate::krpc::{self, error_code, Body, Message, Query, QueryKind, Response};
use crate::lookup::LookupKind;
use crate::node::Node;
use crate::rng::Rng;
use crate::routing::{Contact, InsertOutcome};
use crate::rpc::{Expired, Purpose, Rpc, Transaction};
use crate::server::{error_datagram, AnnounceStore, Ask, RateLimiter, Reply, Responder};
use crate::stats::{Stats, TableSize};
use crate::time::{min_deadline, Timestamp};
use crate::tokens::Tokens;
use crate::tracker::{self, Ask as TrackerAsk, TrackerOutput, Trackers};
use crate::utp::{is_utp_first_byte, Utp, UtpConfig, UtpStats};
use crate::vote::{VoteConfig, VoteOutcome, Voter};
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
    /// uTP streams on the DHT sockets (BEP 29): the fetcher's outgoing ones.
    /// Incoming connections are refused (rate-limited RESET).
    utp: Utp,
    /// The external-address vote of each bind address whose identities follow it.
    voters: Vec<(IpAddr, Voter)>,
    /// New node ids when the vote moves us.
    switch_rng: Rng,
    /// Trackers asked when a peer search finds nobody (none configured: idle).
    trackers: Trackers,
    /// The fetcher's connections that run over `utp`.
    utp_link: UtpLink,
    /// The uTP transfer budget (`FetchConfig::utp_packets_per_sec`): datagrams
    /// available, in billionths, refilled at the rate, holding one second's
    /// worth.
    utp_tokens: u64,
    utp_refilled: Timestamp,
    utp_budget_waits: u64,
}

/// One uTP datagram in the transfer budget's units.
const UTP_UNIT: u64 = 1_000_000_000;

impl Crawler {
    /// A crawler with these identities and settings, starting at `now`.
    pub fn new(cfg: Config, now: Timestamp) -> Self {
        let rng = Rng::new(cfg.seed);
        let mut id_rng = rng.child(1);
        let initial = initial_ids(&cfg.identities, cfg.crawl.shard, &mut id_rng);
        let mut ids = Vec::new();
        let mut voters: Vec<(IpAddr, Voter)> = Vec::new();
        for (i, (ic, id)) in cfg.identities.iter().zip(initial).enumerate() {
            ids.push(Identity::new(
                SocketId(i as u16),
                ic.bind,
                id,
                cfg.dht.routing.clone(),
                cfg.dht.bootstrap_backoff,
            ));
            // Identities whose external address is not configured follow the vote,
            // one voter per bind address.
            let key = ic.bind.ip();
            if ic.external_ip.is_none() && !voters.iter().any(|(k, _)| *k == key) {
                voters.push((key, Voter::new(VoteConfig::default(), now)));
            }
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
        let fetcher = Fetcher::new(cfg.fetch.clone(), rng.child(4))
            .with_allow_private(cfg.allow_private)
            .with_utp(cfg.fetch.utp);
        let strategy = Strategy::new(cfg.crawl.clone(), now, rng.child(9).bytes());
        let trackers = Trackers::new(
            cfg.trackers.clone(),
            rng.child(8),
            *fetcher.peer_id(),
            cfg.allow_private,
        );
        let utp_tokens = u64::from(cfg.fetch.utp_packets_per_sec).saturating_mul(UTP_UNIT);
        Crawler {
            node: Node::new(cfg, rng.child(5), now, ids, rpc, fetcher),
            server,
            strategy,
            verifying: BTreeMap::new(),
            routers: Vec::new(),
            next_tick: now.add(TICK),
            expired: Vec::new(),
            utp: Utp::new(UtpConfig::default(), rng.child(6)),
            voters,
            // Its own stream: the ids drawn at start may come from `id_rng`'s
            // stream in another process (`Config::fill_node_ids`), and a new id
            // must not repeat bytes of the old one.
            switch_rng: rng.child(7),
            trackers,
            utp_link: UtpLink::new(),
            utp_tokens,
            utp_refilled: now,
            utp_budget_waits: 0,
        }
    }

    /// The identities (node IDs, tables) for inspection.
    pub fn identities(&self) -> &[Identity] {
        &self.node.ids
    }

    /// The external address the vote settled on for each bind address whose
    /// identities follow the vote (`None`: not settled yet), with the voters in
    /// the current round.
    pub fn external_addresses(&self) -> Vec<(IpAddr, Option<IpAddr>, usize)> {
        self.voters
            .iter()
            .map(|(k, v)| (*k, v.current(), v.len()))
            .collect()
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
            s.routing.add(&i.retired);
            s.nodes += i.table.len();
        }
        s.fetch = n.fetcher.stats().clone();
        s.fetch.transport.utp_budget_waits = self.utp_budget_waits;
        s.dht.store_evictions = self.server.store().evictions;
        s.dht.rate_table_evictions = self.server.limiter().evictions;
        s.dropped_outputs = n.dropped_outputs;
        s.lookups_running = n.lookups.len();
        s.transactions = n.rpc.live_len();
        s.stored_infohashes = self.server.store().len();
        s.crawl = self.crawl_stats();
        s.tracker = self.trackers.stats().clone();
        s.utp = self.utp.stats();
        s
    }

    /// The uTP socket manager's counters (datagrams, faults, RESETs, streams).
    pub fn utp_stats(&self) -> UtpStats {
        self.utp.stats()
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
        for (_, v) in &self.voters {
            t(
                "external address votes",
                v.len(),
                VoteConfig::default().round_votes,
            );
        }
        t("routers", self.routers.len(), MAX_ROUTERS);
        t("fetch jobs", n.fetcher.jobs(), f.max_jobs);
        t("fetch sessions", n.fetcher.sessions(), f.max_sessions);
        t("peer cache", n.fetcher.peer_cache_len(), f.peer_cache_size);
        t(
            "utp connections",
            self.utp.len(),
            self.utp.config().max_connections,
        );
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

    /// Acquires `ih`, claimed from the fleet's shared queue (see `crate::shard`):
    /// like [`Crawler::acquire`], but whatever slice `ih` lies in (the owner's
    /// own work, or another shard's whose lease expired). An unsharded crawler
    /// never needs it.
    pub fn acquire_claimed(&mut self, now: Timestamp, ih: InfoHash) -> Result<(), ApiMisuse> {
        self.node.advance(now);
        let r = self
            .strategy
            .acquire_claimed(self.node.now, ih, &mut self.node);
        self.route_search_results();
        r
    }

    /// Queues a BEP 33 scrape refresh of a stored torrent that was just seen again
    /// (the sink answered `Decision::Refresh`): a get_peers traversal with
    /// `scrape=1` under the refresh budget, most recently seen first; its
    /// `PeersFound` carries the counts. See `crawl/refresh.rs`.
    pub fn refresh_scrape(&mut self, now: Timestamp, ih: InfoHash) {
        self.node.advance(now);
        self.strategy.refresh_scrape(self.node.now, ih);
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
            Input::TcpConnected { conn, .. } if tracker::owns_conn(conn) => {
                self.trackers.on_connected(self.node.now, conn);
                self.pump_trackers();
            }
            Input::TcpData { conn, bytes, .. } if tracker::owns_conn(conn) => {
                self.trackers.on_data(self.node.now, conn, bytes);
                self.pump_trackers();
            }
            Input::TcpClosed { conn, reason, .. } if tracker::owns_conn(conn) => {
                self.trackers.on_closed(self.node.now, conn, reason);
                self.pump_trackers();
            }
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
        if !self.node.found_nobody.is_empty() {
            // Acquisitions whose peer search found nobody: ask the trackers about
            // those with evidence of being torrents. The others are mostly other
            // nodes' random lookup targets; they would fill the trackers' queues
            // and push real torrents out.
            for ih in std::mem::take(&mut self.node.found_nobody) {
                if self.strategy.evidence_of_torrent(&ih) {
                    self.trackers.ask(self.node.now, TrackerAsk::Announce(ih));
                } else {
                    self.trackers.unconfirmed();
                }
            }
            self.pump_trackers();
        }
        // Bounded: every round either returns or consumes one queued item
        // (a uTP event or a fetcher output), and those queues are bounded.
        loop {
            if let Some(o) = self.node.out.pop_front() {
                return o;
            }
            if self.utp.has_transmit() && self.utp_take() {
                if let Some(t) = self.utp.poll_transmit() {
                    return Output::Transmit {
                        local: t.local,
                        to: t.to,
                        payload: t.payload,
                    };
                }
            }
            let now = self.node.now;
            if let Some(ev) = self.utp.poll_event() {
                self.utp_link
                    .on_event(now, ev, &mut self.utp, &mut self.node.fetcher);
                continue;
            }
            let Some(o) = self.node.fetcher.poll_outcome() else {
                break;
            };
            // A uTP connection's connect, send or close goes to its stream.
            if let Some(o) = self
                .utp_link
                .route(now, o, &mut self.utp, &mut self.node.fetcher)
            {
                return self.fetch_output(o);
            }
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
            // `UtpLink::route` takes these; never here.
            FetchOutput::UtpConnect { conn, to, .. } => Output::Connect { conn, to },
        }
    }

    /// Takes one uTP datagram from the transfer budget if it has one.
    fn utp_take(&mut self) -> bool {
        let rate = u64::from(self.node.cfg.fetch.utp_packets_per_sec);
        if rate == 0 {
            return true;
        }
        let now = self.node.now;
        let elapsed = u64::try_from(now.since(self.utp_refilled).as_nanos()).unwrap_or(u64::MAX);
        self.utp_tokens = self
            .utp_tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(rate.saturating_mul(UTP_UNIT));
        self.utp_refilled = self.utp_refilled.max(now);
        if self.utp_tokens >= UTP_UNIT {
            self.utp_tokens -= UTP_UNIT;
            true
        } else {
            self.utp_budget_waits += 1;
            false
        }
    }

    /// When the uTP transfer budget has a datagram again, if one waits for it.
    fn utp_budget_deadline(&self) -> Option<Timestamp> {
        let rate = u64::from(self.node.cfg.fetch.utp_packets_per_sec);
        if rate == 0 || !self.utp.has_transmit() || self.utp_tokens >= UTP_UNIT {
            return None;
        }
        let missing = UTP_UNIT - self.utp_tokens;
        let wait = std::time::Duration::from_nanos(missing.div_ceil(rate).max(1));
        Some(self.utp_refilled.max(self.node.now).add(wait))
    }

    /// The earliest internal deadline.
    fn deadline(&self) -> Option<Timestamp> {
        let now = self.node.now;
        let mut t = Some(self.next_tick);
        t = min_deadline(t, self.utp_budget_deadline());
        t = min_deadline(t, self.strategy.deadline());
        t = min_deadline(t, self.utp.deadline());
        if let Some(ready) = self.node.starved.next_ready() {
            // When the first held-back lookup's pacer has room; never a
            // zero-delay timer.
            let retry = ready
                .max(self.strategy.budget_next_available(now))
                .max(now.add(STARVED_RETRY));
            t = min_deadline(t, Some(retry));
        }
        t = min_deadline(t, self.node.rpc.poll_timeout());
        t = min_deadline(t, self.trackers.deadline());
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

    /// Asks the configured trackers for `ih`: an announce (peers, which go to the
    /// fetcher, and counts) or a scrape (counts only). Answers come out as
    /// [`Event::TrackerReply`]. Within the trackers' budget, queues and intervals.
    pub fn ask_trackers(&mut self, now: Timestamp, ih: InfoHash, scrape: bool) {
        self.node.advance(now);
        let ask = if scrape {
            TrackerAsk::Scrape(ih)
        } else {
            TrackerAsk::Announce(ih)
        };
        self.trackers.ask(self.node.now, ask);
        self.pump_trackers();
    }

    /// Tracker host names (`host:port`) the driver should resolve and hand to
    /// [`Crawler::tracker_resolved`].
    pub fn tracker_names(&self) -> Vec<String> {
        self.trackers.unresolved()
    }

    /// The driver resolved a tracker's `host:port`.
    pub fn tracker_resolved(&mut self, name: &str, addrs: &[SocketAddr]) {
        self.trackers.resolved(name, addrs);
    }

    /// Carries out the tracker clients' outputs: datagrams leave through the DHT
    /// socket of the tracker's family, connections through the TCP outputs, and
    /// an announce's peers go to the fetcher.
    fn pump_trackers(&mut self) {
        while let Some(o) = self.trackers.poll_output() {
            let o = match o {
                TrackerOutput::Transmit {
                    family,
                    to,
                    payload,
                } => {
                    let Some(local) = self
                        .node
                        .ids
                        .iter()
                        .find(|i| i.family == family)
                        .map(|i| i.socket)
                    else {
                        continue;
                    };
                    Output::Transmit { local, to, payload }
                }
                TrackerOutput::Connect { conn, to } => Output::Connect { conn, to },
                TrackerOutput::Send { conn, bytes } => Output::Send { conn, bytes },
                TrackerOutput::Close { conn } => Output::Close { conn },
                TrackerOutput::Reply(r) => {
                    if !r.peers.is_empty() {
                        // Counted by the fetcher when refused (full).
                        let _ = self
                            .node
                            .fetcher
                            .fetch(self.node.now, r.info_hash, &r.peers);
                    }
                    Output::Event(Event::TrackerReply(Box::new(r)))
                }
            };
            self.node.push(o);
        }
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
        // A UDP tracker's reply (recognised by its source address; trackers are
        // configured by the operator, so the address filter does not apply).
        if self.trackers.owns_addr(&canonical(from)) {
            self.trackers
                .on_datagram(self.node.now, canonical(from), bytes);
            self.pump_trackers();
            return;
        }
        // The socket is shared (issue 15): the first byte tells uTP, whose header
        // starts with `(type << 4) | 1`, from KRPC, a bencoded dict (`d`).
        if bytes.first().is_some_and(|b| is_utp_first_byte(*b)) {
            return self.on_utp_datagram(local, from, bytes);
        }
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
        if bytes.first() != Some(&b'd') {
            // Neither KRPC nor uTP.
            self.node
                .fault(Fault::Malformed(krpc::DecodeError::NotADict), from);
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
            Body::Query(q) => {
                // The querier's NAT now maps its socket to ours: a uTP stream
                // to it from here gets through (the connection strategy).
                self.node
                    .fetcher
                    .note_udp_contact(self.node.now, from, local);
                self.on_query(i, from, &msg, q)
            }
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

    /// A uTP datagram: through the same address filter as KRPC, to the uTP
    /// socket manager (counted in [`Crawler::utp_stats`]).
    fn on_utp_datagram(&mut self, local: SocketId, from: SocketAddr, bytes: &[u8]) {
        let from = canonical(from);
        if local.0 as usize >= self.node.ids.len() {
            return;
        }
        if !is_sendable(&from, self.node.cfg.allow_private) {
            self.node.fault(Fault::FilteredSource, from);
            return;
        }
        self.utp.handle_datagram(self.node.now, local, from, bytes);
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
            self.vote(i, from, seen_as);
        }
        let foreign = self.node.foreign_nodes_of(i, r);
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
                self.seed_self_lookup(i, &nodes);
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
        self.learn_foreign(&foreign);
    }

    /// Counts `voter`'s BEP 42 `ip` vote for identity `i`'s bind address; when the
    /// vote settles on a new address, the identities behind that address whose id
    /// is not valid for it switch to BEP 42 ids for it.
    fn vote(&mut self, i: usize, voter: SocketAddr, seen_as: SocketAddr) {
        let Some(key) = self.node.ids.get(i).map(|x| x.bind.ip()) else {
            return;
        };
        let now = self.node.now;
        let Some((_, v)) = self.voters.iter_mut().find(|(k, _)| *k == key) else {
            return;
        };
        let ip = match v.vote(now, voter.ip(), seen_as.ip()) {
            VoteOutcome::Changed(ip) => ip,
            VoteOutcome::Ignored => {
                self.node.stats.dht.external_votes_ignored += 1;
                return;
            }
            VoteOutcome::Counted => return,
        };
        self.node.stats.dht.external_address_changes += 1;
        tracing::debug!(%ip, bind = %key, "external address settled");
        let cfgs = &self.node.cfg.identities;
        let switch: Vec<usize> = (0..self.node.ids.len())
            .filter(|&j| {
                let x = &self.node.ids[j];
                x.bind.ip() == key
                    && cfgs.get(j).is_some_and(|c| c.external_ip.is_none())
                    && x.family == Family::of(&SocketAddr::new(ip, 0))
                    && !bep42_matches(&x.id, ip)
            })
            .collect();
        let shard = self.node.cfg.crawl.shard;
        let new_ids = bep42_ids(ip, switch.len(), shard, &mut self.switch_rng);
        for (j, id) in switch.into_iter().zip(new_ids) {
            let ident = &mut self.node.ids[j];
            let old = ident.id;
            let kept = ident.change_id(now, id);
            ident.self_lookup = None;
            let socket = ident.socket;
            self.node.stats.dht.identity_switches += 1;
            tracing::debug!(socket = socket.0, %old, new = %id, kept, "node id switched (BEP 42)");
            self.node.emit(Event::IdentityChanged {
                socket,
                old,
                new: id,
                external_ip: ip,
            });
            // Bootstrap again at the new place: find_node for the new id to the
            // routers and the closest nodes kept, whose answers seed a self-lookup
            // that fills the buckets next to the new id (and makes us known there).
            self.node.ids[j].bootstrapped = false;
            self.bootstrap_identity(j);
            // The nodes kept sit next to the old id: refresh the buckets near the
            // new one too (a lookup each, within the lookup cap).
            for depth in 0..REFRESH_DEPTHS {
                let t = refresh_target(&id, depth, &mut self.switch_rng);
                self.start_lookup(j, t.0, LookupKind::FindNode, &[]);
            }
        }
    }

    /// Feeds `nodes` to identity `i`'s self-lookup (the bootstrap traversal),
    /// starting it if none runs.
    fn seed_self_lookup(&mut self, i: usize, nodes: &[(NodeId, SocketAddr)]) {
        let running = self
            .node
            .ids
            .get(i)
            .and_then(|x| x.self_lookup)
            .filter(|id| self.node.lookups.contains_key(id));
        match running {
            Some(lid) => {
                if let Some(l) = self.node.lookups.get_mut(&lid) {
                    for &(nid, a) in nodes {
                        l.add_candidate(nid, a);
                    }
                }
                self.pump_lookup(lid);
            }
            None => {
                let Some(target) = self.node.ids.get(i).map(|x| x.id.0) else {
                    return;
                };
                if let Some(lid) = self.start_lookup(i, target, LookupKind::FindNode, nodes) {
                    if self.node.lookups.contains_key(&lid) {
                        self.node.ids[i].self_lookup = Some(lid);
                    }
                }
            }
        }
    }

    /// Nodes of the other family than the replying identity's (BEP 32: we ask for
    /// both when we run both) go to the identities of their family: the crawl's
    /// node book places each with the identity of its family, and an identity
    /// still short of its bootstrap size takes them into its self-lookup, whose
    /// answers fill its table.
    fn learn_foreign(&mut self, nodes: &[(NodeId, SocketAddr)]) {
        let Some(&(_, first)) = nodes.first() else {
            return;
        };
        let family = Family::of(&first);
        let Some(j) = self.node.ids.iter().position(|x| x.family == family) else {
            return;
        };
        self.node.stats.dht.foreign_nodes += nodes.len() as u64;
        self.learn_nodes(j, nodes);
        for j in 0..self.node.ids.len() {
            let ident = &self.node.ids[j];
            if ident.family == family && !ident.bootstrapped {
                self.seed_self_lookup(j, nodes);
                self.node.flush_routing_events(j);
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
        self.utp.handle_timeout(self.node.now);
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
        // Lookups held back by the budget go first; those of low priority (get_peers
        // candidates) after the others.
        if !self.node.starved.is_empty() && self.strategy.budget_available(self.node.now) > 0 {
            let now = self.node.now;
            let starved = self.node.starved.take_ready(now);
            let (low, normal): (Vec<_>, Vec<_>) = starved
                .into_iter()
                .partition(|(lid, _)| self.node.low_lookups.contains(lid));
            for (lid, to) in normal.into_iter().chain(low) {
                // Another search (or the walk) may have taken the room it
                // waited for: it waits on, without asking (and being refused).
                let is_low = self.node.low_lookups.contains(&lid);
                let ready = self.strategy.next_admit(now, &to, is_low);
                if ready > now {
                    self.node.starved.insert(lid, ready, to);
                    continue;
                }
                self.pump_lookup(lid);
            }
        }
        self.strategy.tick(self.node.now, &mut self.node);
        if self.node.now >= self.next_tick {
            self.next_tick = self.node.now.add(TICK);
            self.maintenance();
        }
        self.node.fetcher.handle_timeout(self.node.now);
        self.trackers.on_timeout(self.node.now);
        self.pump_trackers();
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
                noseed: c.noseed,
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
