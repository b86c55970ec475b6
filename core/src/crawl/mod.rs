//! The harvesting strategy: how the crawler finds the most new infohashes per
//! packet while staying a polite DHT citizen.
//!
//! * **BEP 51 keyspace walk** (after mldht): every node we learn of goes into a
//!   bounded *node book* and is sent `sample_infohashes` once, then again once per
//!   its advertised `interval` (clamped to [`CrawlConfig::min_revisit`], 6 h). The
//!   target of each sample query lies next to the queried node's own id, so the
//!   `nodes` in its reply are its neighbours: the walk spreads over the whole
//!   keyspace with one RPC per node. Nodes that answer without `samples` (or with
//!   error 204) are remembered as not supporting BEP 51 and never sampled again.
//! * **find_node exploration** with random targets, paced at
//!   [`CrawlConfig::explore_pps`], keeps the book filling.
//! * **Capture** of get_peers and announce_peer queries sent to us (the
//!   responder in core's internal `server` module reports them, the crawler routes them here). An infohash heard only in a get_peers
//!   query is a *candidate*: libtorrent also sends get_peers for random ids when
//!   it refreshes its table. A client that traverses towards us usually announces
//!   to us seconds later, so a candidate waits [`CrawlConfig::candidate_grace`]
//!   for that announce (its peer confirms the candidate, `PeersFound`, and is
//!   fetched from at once); otherwise it gets one bounded peer search, and if
//!   nobody holds it, it is given up without retries. Candidates are never stored
//!   as torrents: only metadata is. A get_peers with BEP 33 `noseed=1` is no
//!   candidate's: libtorrent sets it only when it looks up a torrent it seeds
//!   (`tests/interop/noseed_probe.py`), so it is evidence of a torrent.
//! * **Acquisition**: for an infohash that the runtime wants (it is not stored),
//!   ask the node that sampled it for peers first (one get_peers), then fall back to
//!   a bounded get_peers traversal, then fetch the metadata. Failures are retried
//!   with exponential backoff (5 min, 30 min, 3 h, then given up).
//!
//! **How core learns that an infohash is already stored.** Core never sees storage.
//! It deduplicates discoveries in a bounded window and emits one
//! `InfohashDiscovered` per new infohash. The runtime checks storage (a fast LMDB
//! read) and calls `Crawler::acquire` only for infohashes it does not have. With
//! [`CrawlConfig::auto_acquire`] (for the simulator, or a runtime without storage)
//! core acquires every discovery itself.
//!
//! Every query counts against one global packet budget (token bucket) and a per-IP
//! pace that stays well under libtorrent's 5 packets/s ban threshold (the
//! [`Pacer`]).
//!
//! `Strategy` (internal) is a leaf state machine, like the fetcher: it keeps all of the
//! above as its own state, takes typed inputs (see `port`) with the time, and
//! asks for its effects (queries, peer searches, fetches, events) through the
//! `port::Net` the crawler gives it. It never sees the crawler.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::id::{InfoHash, NodeId};
use crate::time::Timestamp;

mod acquire;
pub mod budget;
mod config;
mod given_up;
pub(crate) mod port;
mod refresh;
mod walk;

pub use budget::{Budget, Pacer};
pub use config::{Bep51, CrawlConfig, CrawlStats};
pub(crate) use port::{CrawlReply, Discovery, Net, PeerSearch, Sent};

use given_up::GivenUp;

/// Below this many known nodes, exploration runs even while sampling is busy.
const EXPLORE_FLOOR: usize = 256;
/// Below this many new nodes per exploration reply (on average), exploration idles.
const EXPLORE_BARREN: f64 = 1.0;

/// Sampling nodes remembered per infohash, to ask for its peers.
const MAX_SOURCES: usize = 3;

/// Crawl cadence: sampling and exploration run every tick.
const CRAWL_TICK: Duration = Duration::from_millis(10);

/// A node in the book.
#[derive(Clone, Debug)]
struct BookNode {
    id: NodeId,
    ident: usize,
    bep51: Bep51,
    next_at: Option<Timestamp>,
    failures: u8,
    num: Option<i64>,
    in_flight: bool,
    /// Consecutive complete samples (`num` ≤ samples) that brought nothing new:
    /// the next visit waits `min_revisit` × 2^quiet (see `on_reply`).
    quiet: u8,
}

/// What a crawl query was for.
#[derive(Clone, Debug)]
enum CrawlTx {
    Sample { addr: SocketAddr },
    Explore { addr: SocketAddr },
    AskSource { ih: InfoHash },
}

#[derive(Clone, Debug, Default)]
struct Hint {
    /// Nodes whose samples held it (the first few), to ask for peers.
    sources: Vec<(usize, NodeId, SocketAddr)>,
    peers: Vec<SocketAddr>,
    /// First heard in a get_peers query to us (a candidate).
    heard_at: Option<Timestamp>,
    /// The address of the first get_peers query that named it.
    querier: Option<std::net::IpAddr>,
    /// Evidence that it is a torrent: a sample or an announce named it, or get_peers
    /// queries from two addresses did (a random lookup target comes from one), or
    /// one with BEP 33 `noseed=1` did (a seeder's lookup; no refresh sets it).
    /// Kept when the peers are cleared.
    evidence: bool,
    /// The driver asked for it (`acquire`) and it is not fetched: a new lead
    /// brings a waiting or dropped acquisition back (`revive`).
    wanted: bool,
    /// Seeders' `noseed=1` lookups that brought its acquisition back from a
    /// retry's backoff (at most `MAX_SOURCES`).
    noseed_leads: u8,
}

impl Hint {
    /// Heard only in get_peers queries: no sample, no announced peer.
    fn candidate_only(&self) -> bool {
        self.sources.is_empty() && self.peers.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    AskSource,
    /// Every lookup slot was busy: waiting in `lookup_wait` for one.
    WaitLookup,
    Lookup(u64),
    Fetching,
}

#[derive(Clone, Debug)]
struct Acq {
    stage: Stage,
    /// A peer search (ask the source, or a traversal) was started.
    searched: bool,
    /// A fetch from announced peers runs while that search is still out.
    early: bool,
}

impl Acq {
    fn new(stage: Stage) -> Self {
        let searched = stage != Stage::Fetching;
        Acq {
            stage,
            searched,
            early: false,
        }
    }
}

#[derive(Clone, Debug)]
struct Retry {
    attempts: usize,
    next_at: Timestamp,
    /// Peers of the failed fetch: the first retry asks them again (they may be
    /// back) before paying for a new peer search.
    peers: Vec<SocketAddr>,
}

/// A peer search waiting for a lookup slot: the infohash, and the nodes to
/// seed it with.
type WaitingSearch = (InfoHash, Vec<(NodeId, SocketAddr)>);

/// The crawl strategy's state machine. See the module docs.
pub(crate) struct Strategy {
    cfg: CrawlConfig,
    /// The latest time an input brought.
    now: Timestamp,
    /// The budget and per-IP pace of every query the node sends.
    pacer: Pacer,
    book: BTreeMap<SocketAddr, BookNode>,
    due: BTreeSet<(Timestamp, SocketAddr)>,
    blacklist: BTreeMap<SocketAddr, Timestamp>,
    seen: BTreeSet<InfoHash>,
    seen_order: VecDeque<InfoHash>,
    hints: BTreeMap<InfoHash, Hint>,
    acq: BTreeMap<InfoHash, Acq>,
    acq_queue: VecDeque<InfoHash>,
    /// The infohashes in `acq_queue` or `paced_due`.
    queued: BTreeSet<InfoHash>,
    /// Queued acquisitions whose every source is paced by the per-IP limiter,
    /// with the time the first of them may be asked: they wait here, costing
    /// nothing per tick, and go back to the end of `acq_queue` when due.
    paced_due: BTreeSet<(Timestamp, InfoHash)>,
    /// The infohashes in `paced_due`, with their time.
    paced: BTreeMap<InfoHash, Timestamp>,
    acq_by_lookup: BTreeMap<u64, InfoHash>,
    /// Candidates waiting out their grace, with the time they come due.
    deferred: BTreeMap<InfoHash, Timestamp>,
    deferred_due: BTreeSet<(Timestamp, InfoHash)>,
    /// Pending retries (every entry is in `retry_due`).
    retry: BTreeMap<InfoHash, Retry>,
    retry_due: BTreeSet<(Timestamp, InfoHash)>,
    /// Infohashes given up, in fixed memory (see `given_up`).
    given_up: GivenUp,
    /// Acquisitions whose peer search found every lookup slot busy, with the
    /// nodes to seed it with, started as slots free in key order: those with
    /// evidence of being a torrent (`false`) before get_peers candidates
    /// (`true`), each oldest first (the sequence number).
    lookup_wait: BTreeMap<(bool, u64), WaitingSearch>,
    /// The key of each infohash in `lookup_wait`.
    lookup_waiting: BTreeMap<InfoHash, (bool, u64)>,
    /// The next sequence number of `lookup_wait`.
    wait_seq: u64,
    /// The running peer searches of get_peers candidates (low priority), at
    /// most `candidate_lookups`.
    cand_lookups: BTreeSet<u64>,
    txs: BTreeMap<u64, CrawlTx>,
    next_tag: u64,
    explore: Budget,
    explore_cursor: Option<SocketAddr>,
    /// Average new nodes per exploration reply (starts optimistic).
    explore_yield: f64,
    next_tick: Timestamp,
    /// Scrape refreshes of stored torrents (`refresh`).
    refresh: refresh::Refresh,
    stats: CrawlStats,
}

impl Strategy {
    /// A strategy that starts at `now`; `key` keys the given-up filters (a
    /// secret from the node's random stream).
    pub fn new(cfg: CrawlConfig, now: Timestamp, key: [u8; 16]) -> Self {
        Strategy {
            given_up: GivenUp::new(cfg.given_up_capacity, cfg.given_up_for, key, now),
            lookup_wait: BTreeMap::new(),
            lookup_waiting: BTreeMap::new(),
            wait_seq: 0,
            cand_lookups: BTreeSet::new(),
            now,
            pacer: Pacer::new(cfg.max_pps, cfg.burst, cfg.per_ip_pps, cfg.per_ip_burst),
            explore_cursor: None,
            explore_yield: 8.0,
            explore: Budget::new(cfg.explore_pps.max(1), cfg.explore_pps.clamp(1, 50)),
            book: BTreeMap::new(),
            due: BTreeSet::new(),
            blacklist: BTreeMap::new(),
            seen: BTreeSet::new(),
            seen_order: VecDeque::new(),
            hints: BTreeMap::new(),
            acq: BTreeMap::new(),
            acq_queue: VecDeque::new(),
            queued: BTreeSet::new(),
            paced_due: BTreeSet::new(),
            paced: BTreeMap::new(),
            acq_by_lookup: BTreeMap::new(),
            deferred: BTreeMap::new(),
            deferred_due: BTreeSet::new(),
            retry: BTreeMap::new(),
            retry_due: BTreeSet::new(),
            txs: BTreeMap::new(),
            next_tag: 1,
            next_tick: now.add(CRAWL_TICK),
            refresh: refresh::Refresh::new(&cfg),
            stats: CrawlStats::default(),
            cfg,
        }
    }

    /// Acquisitions waiting: queued, or paced until a source may be asked.
    fn queue_len(&self) -> usize {
        self.acq_queue.len() + self.paced_due.len()
    }

    fn tag(&mut self, tx: CrawlTx) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        self.txs.insert(t, tx);
        t
    }

    fn blacklisted(&self, now: Timestamp, a: &SocketAddr) -> bool {
        self.blacklist.get(a).is_some_and(|until| *until > now)
    }

    fn blacklist(&mut self, now: Timestamp, a: SocketAddr) {
        if self.blacklist.len() >= self.cfg.max_blacklist {
            self.blacklist.retain(|_, until| *until > now);
            if self.blacklist.len() >= self.cfg.max_blacklist {
                self.blacklist.pop_first();
            }
        }
        self.blacklist.insert(a, now.add(self.cfg.blacklist_for));
        self.stats.blacklisted += 1;
        self.remove_node(&a);
    }

    fn remove_node(&mut self, a: &SocketAddr) {
        if let Some(n) = self.book.remove(a) {
            if let Some(t) = n.next_at {
                self.due.remove(&(t, *a));
            }
        }
    }

    fn schedule(&mut self, a: SocketAddr, at: Option<Timestamp>) {
        if let Some(n) = self.book.get_mut(&a) {
            if let Some(t) = n.next_at {
                self.due.remove(&(t, a));
            }
            n.next_at = at;
            if let Some(t) = at {
                self.due.insert((t, a));
            }
        }
    }

    /// Adds a node learned from a reply (or a query to us). New nodes are due now.
    /// True if the node is new to the book.
    fn learn(&mut self, now: Timestamp, ident: usize, id: NodeId, a: SocketAddr) -> bool {
        if self.blacklisted(now, &a) {
            return false;
        }
        if !self.cfg.shard.contains(&id.0) {
            // A sharded crawler samples its own slice only: the other shards
            // sample theirs.
            self.stats.shard_foreign_nodes += 1;
            return false;
        }
        if let Some(n) = self.book.get_mut(&a) {
            if n.id != id {
                // Same address, new id: a restart or a spoofer. Trust neither for now.
                n.id = id;
            }
            return false;
        }
        if self.book.len() >= self.cfg.max_book {
            self.stats.book_full_drops += 1;
            return false;
        }
        self.book.insert(
            a,
            BookNode {
                id,
                ident,
                bep51: Bep51::Unknown,
                next_at: None,
                failures: 0,
                num: None,
                in_flight: false,
                quiet: 0,
            },
        );
        self.schedule(a, Some(now));
        true
    }

    /// Records a discovery; true if the infohash is new in the dedup window.
    fn note_seen(&mut self, ih: InfoHash) -> bool {
        if self.seen.contains(&ih) {
            self.stats.duplicates += 1;
            return false;
        }
        if self.seen_order.len() >= self.cfg.seen_window.max(1) {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
                if !self.acq.contains_key(&old) {
                    self.hints.remove(&old);
                }
            }
        }
        self.seen.insert(ih);
        self.seen_order.push_back(ih);
        true
    }
}

impl Strategy {
    /// Moves the clock forward (never back).
    fn advance(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Whether it harvests at all.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The pace every query of the node goes through.
    pub fn pacer(&mut self) -> &mut Pacer {
        &mut self.pacer
    }

    /// When the budget next has a packet.
    pub fn budget_next_available(&self, now: Timestamp) -> Timestamp {
        self.pacer.next_available(now)
    }

    /// When the pacer would next let a query to `to` through (see
    /// [`Pacer::next_admit`]).
    pub fn next_admit(&self, now: Timestamp, to: &SocketAddr, low: bool) -> Timestamp {
        self.pacer.next_admit(now, to, low)
    }

    /// Packets the budget would let through now.
    pub fn budget_available(&self, now: Timestamp) -> u64 {
        self.pacer.available(now)
    }

    /// Crawl counters.
    pub fn stats(&self) -> CrawlStats {
        let mut s = self.stats.clone();
        s.book_nodes = self.book.len();
        s.stored_estimate = self
            .book
            .values()
            .filter_map(|n| n.num)
            .map(|n| n.clamp(0, 1 << 32) as u64)
            .sum();
        s.acquisitions_running = self.acq.len();
        s.acquisitions_queued = self.queue_len();
        s.budget_refused = self.pacer.budget_refused();
        s.per_ip_refused = self.pacer.per_ip_refused();
        s.refresh_waiting = self.refresh.waiting();
        s
    }

    /// The strategy's bounded tables against their caps (see
    /// [`crate::Crawler::table_sizes`]); `max_transactions` bounds the crawl
    /// queries in flight (each holds one of the node's transactions).
    pub fn table_sizes(&self, max_transactions: usize, out: &mut Vec<crate::TableSize>) {
        let c = &self.cfg;
        let mut t = |name, len, bound| out.push(crate::TableSize { name, len, bound });
        t("crawl book", self.book.len(), c.max_book);
        t("crawl due", self.due.len(), c.max_book);
        t("blacklist", self.blacklist.len(), c.max_blacklist);
        t("seen window", self.seen_order.len(), c.seen_window.max(1));
        t("hints", self.hints.len(), c.seen_window.max(1));
        t("acquisitions running", self.acq.len(), c.max_acquisitions);
        t("acquisitions queued", self.queue_len(), c.acquire_queue);
        t("candidates deferred", self.deferred.len(), c.acquire_queue);
        t("retry backoff", self.retry.len(), c.max_retry);
        t("given up", self.given_up.len(), self.given_up.bound());
        t("lookup wait", self.lookup_wait.len(), c.lookup_wait_queue);
        t("crawl queries", self.txs.len(), max_transactions);
        t("per-IP pace", self.pacer.per_ip_len(), Pacer::PER_IP_TABLE);
        t(
            "scrape refreshes waiting",
            self.refresh.waiting(),
            c.refresh_queue.max(1),
        );
        t(
            "scrape refreshes running",
            self.refresh.running(),
            c.refresh_lookups,
        );
    }

    /// Whether `ih` has shown evidence of being a torrent (see `Hint::evidence`):
    /// only those are worth asking trackers about. An infohash the crawler has
    /// no hint of was not heard on the DHT (or left the dedup window): the
    /// driver asked for it by name, which is evidence enough.
    pub fn evidence_of_torrent(&self, ih: &InfoHash) -> bool {
        self.hints.get(ih).is_none_or(|h| h.evidence)
    }

    /// Whether `ih` is being acquired (peer search or fetch).
    pub fn is_acquiring(&self, ih: &InfoHash) -> bool {
        self.acq.contains_key(ih)
    }

    /// The next wake-up.
    pub fn deadline(&self) -> Option<Timestamp> {
        if !self.cfg.enabled {
            return None;
        }
        Some(self.next_tick)
    }
}

#[cfg(test)]
mod tests {
    //! The strategy alone, against a recording [`Net`]: no crawler, no sockets.

    use std::time::Duration;

    use super::*;
    use crate::fetch::{AfterFailure, FailReason, FetchFailure};
    use crate::krpc::{QueryKind, Response, Samples};
    use crate::rng::Rng;
    use crate::{ApiMisuse, DiscoverySource, Event};

    /// Records every request; every send goes out, every search runs.
    struct Recorder {
        /// (to, tag, is a sample_infohashes query)
        sent: Vec<(SocketAddr, u64, bool)>,
        searches: Vec<InfoHash>,
        /// Whether each search asked for a BEP 33 scrape.
        scrapes: Vec<bool>,
        /// Whether each search was of low priority (a candidate's).
        lows: Vec<bool>,
        /// Searches promoted to normal priority.
        promoted: Vec<u64>,
        fetches: Vec<(InfoHash, Vec<SocketAddr>)>,
        events: Vec<Event>,
        rng: Rng,
        /// Every lookup slot is busy: peer searches are refused.
        slots_busy: bool,
        /// The targets of the sample_infohashes and find_node queries sent.
        targets: Vec<NodeId>,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder {
                sent: Vec::new(),
                searches: Vec::new(),
                scrapes: Vec::new(),
                lows: Vec::new(),
                promoted: Vec::new(),
                fetches: Vec::new(),
                events: Vec::new(),
                rng: Rng::new(9),
                slots_busy: false,
                targets: Vec::new(),
            }
        }

        fn discovered(&self) -> usize {
            let d = |e: &&Event| matches!(e, Event::InfohashDiscovered { .. });
            self.events.iter().filter(d).count()
        }
    }

    impl Net for Recorder {
        fn send_query(
            &mut self,
            pacer: &mut Pacer,
            _ident: usize,
            to: SocketAddr,
            _expect_id: Option<NodeId>,
            tag: u64,
            kind: QueryKind<'_>,
        ) -> Sent {
            let now = Timestamp::from_secs(100);
            if !pacer.admit(now, &to) {
                return Sent::Throttled;
            }
            let sample = matches!(kind, QueryKind::SampleInfohashes { .. });
            match kind {
                QueryKind::SampleInfohashes { target } | QueryKind::FindNode { target } => {
                    self.targets.push(target)
                }
                _ => {}
            }
            self.sent.push((to, tag, sample));
            Sent::Yes
        }

        fn start_peer_search(
            &mut self,
            _pacer: &mut Pacer,
            ih: InfoHash,
            _seeds: &[(NodeId, SocketAddr)],
            _max_queries: u32,
            scrape: bool,
            low: bool,
        ) -> PeerSearch {
            if self.slots_busy {
                return PeerSearch::Refused;
            }
            self.searches.push(ih);
            self.scrapes.push(scrape);
            self.lows.push(low);
            PeerSearch::Running(self.searches.len() as u64)
        }

        fn promote_search(&mut self, lid: u64) {
            self.promoted.push(lid);
        }

        fn found_nobody(&mut self, _ih: InfoHash) {}

        fn fetch(&mut self, ih: InfoHash, peers: &[SocketAddr]) -> Result<(), ApiMisuse> {
            self.fetches.push((ih, peers.to_vec()));
            Ok(())
        }

        fn emit(&mut self, event: Event) {
            self.events.push(event);
        }

        fn rng(&mut self) -> &mut Rng {
            &mut self.rng
        }

        fn ident_for(&self, _addr: &SocketAddr, _id: &NodeId) -> Option<usize> {
            Some(0)
        }

        fn nearest_contact(&self, _target: &NodeId) -> Option<(SocketAddr, NodeId)> {
            None
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_announce_is_reported_once_fetched_at_once_then_searched() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let ih = InfoHash([7; 20]);
        let (from, peer) = (addr("10.0.0.1:6881"), addr("10.0.0.1:51413"));
        let d = Discovery {
            info_hash: ih,
            source: DiscoverySource::Announce,
            from,
            peer: Some(peer),
            sampled_by: None,
            noseed: false,
        };
        s.on_discovery(t, d, &mut net);
        s.on_discovery(t, d, &mut net);
        assert_eq!(net.discovered(), 1, "one event per new infohash");
        // Fetched from the announcer at once (a repeat announce only re-adds
        // the peer to the running fetch).
        assert!(!net.fetches.is_empty());
        assert!(net.fetches.iter().all(|f| *f == (ih, vec![peer])));
        assert!(s.is_acquiring(&ih));
        // The announcer had no metadata: a peer search follows at once, and the
        // failure says so.
        let failure = FetchFailure {
            info_hash: ih,
            reasons: vec![(peer, FailReason::ConnectRefused)],
            elapsed: Duration::from_secs(1),
            peers_tried: 1,
            info_error: None,
            timed_out: false,
        };
        let next = s.on_fetch_failed(t, &failure, &mut net);
        assert_eq!(next, AfterFailure::StillSearching);
        assert_eq!(net.searches, vec![ih]);
        // It wants peers: no scrape (libtorrent answers one without `values`).
        assert_eq!(net.scrapes, vec![false]);
        // The search finds nobody: a retry is scheduled.
        s.on_lookup_done(t, 1, &[], &mut net);
        assert!(!s.is_acquiring(&ih));
        assert_eq!(s.stats().acquire_no_peers, 1);
    }

    #[test]
    fn given_up_infohashes_and_their_hints_stay_within_the_caps() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            // Every failure gives up at once (no backoff step to wait out).
            retry_backoff: Vec::new(),
            candidate_retry: None,
            max_retry: 4,
            seen_window: 8,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let ihs: Vec<InfoHash> = (0..20u8).map(|i| InfoHash([i + 1; 20])).collect();
        let (from, peer) = (addr("10.0.0.1:6881"), addr("10.0.0.1:51413"));
        // All announced and acquired at once: most leave the dedup window while
        // their acquisition runs.
        for &ih in &ihs {
            let d = Discovery {
                info_hash: ih,
                source: DiscoverySource::Announce,
                from,
                peer: Some(peer),
                sampled_by: None,
                noseed: false,
            };
            s.on_discovery(t, d, &mut net);
        }
        // Each fetch fails, the peer search finds nobody: given up.
        for &ih in &ihs {
            let failure = FetchFailure {
                info_hash: ih,
                reasons: vec![(peer, FailReason::ConnectRefused)],
                elapsed: Duration::from_secs(1),
                peers_tried: 1,
                info_error: None,
                timed_out: false,
            };
            assert_eq!(
                s.on_fetch_failed(t, &failure, &mut net),
                AfterFailure::StillSearching
            );
            s.on_lookup_done(t, net.searches.len() as u64, &[], &mut net);
        }
        assert_eq!(s.stats().given_up, 20);
        let mut sizes = Vec::new();
        s.table_sizes(4096, &mut sizes);
        for name in ["hints", "retry backoff", "seen window"] {
            let t = sizes.iter().find(|x| x.name == name).unwrap();
            assert!(!t.over(), "{} holds {} > {}", t.name, t.len, t.bound);
        }
    }

    /// Scrape refreshes: the most recently seen first, the least recently seen
    /// dropped when the stack is full, at most `refresh_lookups` at once, and no
    /// more packets than the refresh budget (charged per refresh, up front).
    #[test]
    fn scrape_refreshes_go_most_recent_first_within_their_budget() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            refresh_pps: 32,
            refresh_lookup_queries: 16,
            refresh_lookups: 3,
            refresh_queue: 8,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let ihs: Vec<InfoHash> = (0..10u8).map(|i| InfoHash([i + 1; 20])).collect();
        for &ih in &ihs {
            s.refresh_scrape(t, ih);
        }
        s.refresh_scrape(t, ihs[9]); // already waiting: once
        let st = s.stats();
        assert_eq!((st.refresh_queued, st.refresh_dropped), (10, 2));
        assert_eq!(st.refresh_waiting, 8);
        // The budget's burst (32 packets) pays for two 16-query refreshes.
        let t1 = t.add(CRAWL_TICK);
        s.tick(t1, &mut net);
        assert_eq!(net.searches, vec![ihs[9], ihs[8]]);
        assert_eq!(net.scrapes, vec![true, true], "a refresh is a scrape");
        // Done, but the budget is spent: nothing more at once.
        s.on_lookup_done(t1, 1, &[], &mut net);
        s.on_lookup_done(t1, 2, &[], &mut net);
        s.tick(t1.add(CRAWL_TICK), &mut net);
        assert_eq!(net.searches.len(), 2);
        // A second later, two more; then one, and no more: three are running, the
        // most at once, however long the budget has had to refill.
        let mut now = t1;
        for _ in 0..1000 {
            now = now.add(CRAWL_TICK);
            s.tick(now, &mut net);
        }
        assert_eq!(net.searches, vec![ihs[9], ihs[8], ihs[7], ihs[6], ihs[5]]);
        assert_eq!(s.stats().refresh_started, 5);
        assert_eq!(s.stats().refresh_done, 2);
        let mut sizes = Vec::new();
        s.table_sizes(4096, &mut sizes);
        assert!(sizes.iter().all(|x| !x.over()));
        // The two oldest were dropped, never searched.
        assert!(!net.searches.contains(&ihs[0]) && !net.searches.contains(&ihs[1]));
        // An acquisition's lookup is not a refresh (and is not counted as one).
        s.on_lookup_done(now, 3, &[], &mut net);
        assert_eq!(s.stats().refresh_done, 3);
        s.on_lookup_done(now, 99, &[], &mut net);
        assert_eq!(s.stats().refresh_done, 3);
        // A fetched torrent is queued for its first scrape, ahead of the rest.
        let fresh = InfoHash([0xee; 20]);
        s.on_fetched(now, fresh);
        assert_eq!(s.stats().refresh_queued, 11);
        s.on_lookup_done(now, 4, &[], &mut net);
        let before = net.searches.len();
        s.tick(now.add(Duration::from_secs(1)), &mut net);
        assert_eq!(net.searches.get(before), Some(&fresh));
        // Off: nothing queued.
        let mut off = Strategy::new(
            CrawlConfig {
                refresh_pps: 0,
                ..CrawlConfig::default()
            },
            t,
            [0; 16],
        );
        off.refresh_scrape(t, ihs[0]);
        assert_eq!(off.stats().refresh_waiting, 0);
    }

    /// A get_peers candidate whose peer search found nobody (nobody had announced
    /// it yet) waits for its second search; a sample that names it is the lead it
    /// lacked: it is acquired again at once, from that node. (Before, it waited
    /// out `candidate_retry`, 5 min: past the end of a 4-minute cold start.)
    #[test]
    fn a_candidate_that_found_nobody_is_acquired_again_when_a_sample_names_it() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            per_ip_pps: 0,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let ih = InfoHash([0x5a; 20]);
        let querier = addr("10.0.0.7:6881");
        let d = Discovery {
            info_hash: ih,
            source: DiscoverySource::GetPeers,
            from: querier,
            peer: None,
            sampled_by: None,
            noseed: false,
        };
        s.on_discovery(t, d, &mut net);
        // Its grace passes with no announce: one peer search, which finds nobody.
        let mut now = t;
        for _ in 0..20 {
            now = now.add(Duration::from_secs(1));
            s.tick(now, &mut net);
        }
        assert_eq!(net.searches, vec![ih]);
        s.on_lookup_done(now, 1, &[], &mut net);
        assert!(!s.is_acquiring(&ih));
        assert_eq!(s.stats().candidates_retried, 1);
        // A node's sample names it: asked at once, not after candidate_retry.
        let node = addr("10.0.0.8:6881");
        let d = Discovery {
            info_hash: ih,
            source: DiscoverySource::Sample,
            from: node,
            peer: None,
            sampled_by: Some((0, NodeId([8; 20]))),
            noseed: false,
        };
        net.sent.clear();
        s.on_discovery(now, d, &mut net);
        s.tick(now.add(CRAWL_TICK), &mut net);
        assert!(s.is_acquiring(&ih), "{:?}", s.stats());
        assert_eq!(s.stats().revived, 1);
        assert!(
            net.sent.iter().any(|x| x.0 == node && !x.2),
            "the sampling node is asked for peers: {:?}",
            net.sent
        );
        // Fetched: a later lead does not bring it back.
        s.on_fetched(now, ih);
        let d = Discovery {
            sampled_by: Some((0, NodeId([9; 20]))),
            noseed: false,
            from: addr("10.0.0.9:6881"),
            ..d
        };
        s.on_discovery(now, d, &mut net);
        s.tick(now.add(Duration::from_secs(1)), &mut net);
        assert!(!s.is_acquiring(&ih));
        assert_eq!(s.stats().revived, 1);
    }

    /// Sends the tick at `at` and returns the sample queries it sent to `node`.
    fn samples_to(
        s: &mut Strategy,
        net: &mut Recorder,
        at: Timestamp,
        node: SocketAddr,
    ) -> Vec<u64> {
        net.sent.clear();
        s.tick(at, net);
        // Exploration's find_nodes are answered (no nodes): the nodes are free again.
        let explored: Vec<_> = net.sent.iter().filter(|x| !x.2).copied().collect();
        for (from, tag, _) in explored {
            let r = Response::default();
            let reply = CrawlReply {
                ident: 0,
                from,
                response: &r,
                nodes: &[],
                peers: &[],
            };
            s.on_reply(at, tag, reply, net);
        }
        net.sent
            .iter()
            .filter(|x| x.2 && x.0 == node)
            .map(|x| x.1)
            .collect()
    }

    /// A node whose sample held everything it stores (`num` ≤ samples) is sampled
    /// again after `min_revisit`, doubling while it brings nothing new, whatever its
    /// `interval`: libtorrent rebuilds such a sample at every request. A node whose
    /// sample is a part of what it holds keeps its `interval`. (Before, a node
    /// sampled as a swarm started, holding nothing, was skipped for 6 h.)
    #[test]
    fn a_node_that_gave_everything_it_holds_is_sampled_again_soon() {
        let t = Timestamp::from_secs(100);
        // No per-IP pace: the recorder's pacer clock stands still.
        let cfg = CrawlConfig {
            per_ip_pps: 0,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let (small, big) = (addr("10.0.0.2:6881"), addr("10.0.0.3:6881"));
        let (small_id, big_id) = (NodeId([3; 20]), NodeId([4; 20]));
        s.learn_nodes(t, 0, &[(small_id, small), (big_id, big)], &net);
        let mut now = t.add(CRAWL_TICK);
        samples_to(&mut s, &mut net, now, small);
        let tag_of = |net: &Recorder, node| net.sent.iter().find(|x| x.2 && x.0 == node).unwrap().1;
        let (small_tag, big_tag) = (tag_of(&net, small), tag_of(&net, big));
        let ihs: Vec<u8> = (1..=20u8).flat_map(|i| [i; 20]).collect();
        let reply =
            |s: &mut Strategy, net: &mut Recorder, at, tag, id, from, samples: &[u8], num| {
                let r = Response {
                    id,
                    samples: Samples::new(samples),
                    num: Some(num),
                    interval: Some(21_600),
                    ..Response::default()
                };
                let reply = CrawlReply {
                    ident: 0,
                    from,
                    response: &r,
                    nodes: &[],
                    peers: &[],
                };
                s.on_reply(at, tag, reply, net);
            };
        // The small node holds nothing yet; the big one 500 infohashes, 20 sampled.
        reply(&mut s, &mut net, now, small_tag, small_id, small, &[], 0);
        reply(&mut s, &mut net, now, big_tag, big_id, big, &ihs, 500);
        let sampled = now;
        // Not before min_revisit (60 s).
        now = sampled.add(Duration::from_secs(59));
        assert!(samples_to(&mut s, &mut net, now, small).is_empty());
        now = sampled.add(Duration::from_secs(61));
        let again = samples_to(&mut s, &mut net, now, small);
        assert_eq!(again.len(), 1, "the small node is sampled again after 60 s");
        assert!(
            net.sent.iter().all(|x| x.0 != big || !x.2),
            "the big node keeps its interval"
        );
        // Still nothing: the next visit waits twice as long.
        reply(&mut s, &mut net, now, again[0], small_id, small, &[], 0);
        let second = now;
        now = second.add(Duration::from_secs(110));
        assert!(samples_to(&mut s, &mut net, now, small).is_empty());
        now = second.add(Duration::from_secs(121));
        assert_eq!(samples_to(&mut s, &mut net, now, small).len(), 1);
        // The big node: not before its interval.
        now = sampled.add(Duration::from_secs(3 * 3600));
        assert!(samples_to(&mut s, &mut net, now, big).is_empty());
    }

    /// An acquisition whose peer search finds every lookup slot busy waits for
    /// one and starts when one frees; it is not failed and retried minutes
    /// later. The wait queue is bounded, with counted drops. (Before the fix
    /// the acquisition failed at once: not acquiring, a retry in 5 min.)
    #[test]
    fn a_peer_search_waits_for_a_lookup_slot_instead_of_failing() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            lookup_wait_queue: 2,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        net.slots_busy = true;
        let ihs: Vec<InfoHash> = (1..=3u8).map(|i| InfoHash([i; 20])).collect();
        // Nothing known of them: each needs a traversal, started by the tick.
        for ih in &ihs {
            s.acquire(t, *ih, &mut net).unwrap();
        }
        let t1 = t.add(CRAWL_TICK);
        s.tick(t1, &mut net);
        let st = s.stats();
        assert_eq!(st.lookup_waits, 2, "{st:?}");
        assert_eq!(st.lookup_wait_drops, 1, "the queue holds 2");
        assert!(s.is_acquiring(&ihs[0]) && s.is_acquiring(&ihs[1]));
        // The third found the queue full: failed, retried later.
        assert!(!s.is_acquiring(&ihs[2]));
        assert!(s.retry.contains_key(&ihs[2]));
        assert!(!s.retry.contains_key(&ihs[0]) && !s.retry.contains_key(&ihs[1]));
        let mut sizes = Vec::new();
        s.table_sizes(4096, &mut sizes);
        let wait = sizes.iter().find(|x| x.name == "lookup wait").unwrap();
        assert_eq!((wait.len, wait.bound), (2, 2));
        // Still busy at the next tick: they keep waiting, in order.
        let t2 = t1.add(CRAWL_TICK);
        s.tick(t2, &mut net);
        assert!(net.searches.is_empty());
        assert_eq!(s.stats().lookup_waits, 2);
        // A slot frees: the waiting searches start, oldest first.
        net.slots_busy = false;
        s.tick(t2.add(CRAWL_TICK), &mut net);
        assert_eq!(net.searches, vec![ihs[0], ihs[1]]);
        assert_eq!(s.lookup_wait.len(), 0);
        // Their results are routed as any other search's.
        let peer = addr("10.0.0.9:6881");
        s.on_lookup_done(t2, 1, &[peer], &mut net);
        assert_eq!(net.fetches, vec![(ihs[0], vec![peer])]);
        assert_eq!(s.stats().fetch_failed, 0);
    }

    /// Issue 17, item 4: a swarm's table-refresh targets (get_peers candidates,
    /// one querier each, ~20 a second from a libtorrent swarm) filled the lookup
    /// wait queue, and a real torrent's search waited behind them, or was
    /// dropped when it was full. Now searches with evidence go first and a
    /// waiting candidate gives way to one (counted); candidates run at low
    /// priority, at most `candidate_lookups` at once; a candidate that shows
    /// evidence is promoted, waiting or running; a sample naming a waiting
    /// candidate has its node asked at once. (Before: the evidence search was
    /// refused by the full queue, failed, and retried 5 minutes later.)
    #[test]
    fn evidence_goes_before_candidates_in_the_lookup_wait_queue() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            per_ip_pps: 0,
            candidate_grace: Duration::ZERO,
            lookup_wait_queue: 4,
            candidate_lookups: 2,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        net.slots_busy = true;
        // Six candidates, each heard once in a get_peers query from one address.
        let cands: Vec<InfoHash> = (1..=6u8).map(|i| InfoHash([i; 20])).collect();
        for (i, &ih) in cands.iter().enumerate() {
            let d = Discovery {
                info_hash: ih,
                source: DiscoverySource::GetPeers,
                from: addr(&format!("10.0.1.{}:6881", i + 1)),
                peer: None,
                sampled_by: None,
                noseed: false,
            };
            s.on_discovery(t, d, &mut net);
        }
        let mut now = t.add(CRAWL_TICK);
        s.tick(now, &mut net);
        let st = s.stats();
        assert_eq!(st.lookup_waits, 4, "{st:?}");
        assert_eq!(st.lookup_wait_candidates_dropped, 2, "{st:?}");
        // An infohash the driver asks for by name (evidence enough), whose search
        // also finds every slot busy: the newest waiting candidate gives way.
        let real = InfoHash([0xee; 20]);
        s.acquire(now, real, &mut net).unwrap();
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        let st = s.stats();
        assert_eq!(st.lookup_wait_drops, 0, "evidence is never refused: {st:?}");
        assert_eq!(st.lookup_wait_candidates_dropped, 3, "{st:?}");
        assert!(s.is_acquiring(&real));
        assert!(!s.is_acquiring(&cands[3]), "the newest candidate gave way");
        // Slots free: the evidence search first, then candidates, two at most,
        // of low priority.
        net.slots_busy = false;
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches, vec![real, cands[0], cands[1]]);
        assert_eq!(net.lows, vec![false, true, true]);
        // The third candidate waits; a second querier is evidence: it is promoted
        // and starts, whatever the candidates running.
        let d = Discovery {
            info_hash: cands[2],
            source: DiscoverySource::GetPeers,
            from: addr("10.0.2.1:6881"),
            peer: None,
            sampled_by: None,
            noseed: false,
        };
        s.on_discovery(now, d, &mut net);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches.get(3), Some(&cands[2]));
        assert_eq!(net.lows.get(3), Some(&false));
        // A running candidate search that shows evidence runs at normal priority.
        let d = Discovery {
            from: addr("10.0.2.2:6881"),
            info_hash: cands[0],
            ..d
        };
        s.on_discovery(now, d, &mut net);
        assert_eq!(net.promoted, vec![2]);
        // Its slot among the candidates' is free: a new candidate starts.
        let late = InfoHash([0x77; 20]);
        let d = Discovery {
            info_hash: late,
            from: addr("10.0.3.1:6881"),
            ..d
        };
        s.on_discovery(now, d, &mut net);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches.get(4), Some(&late));
        // Another waits for a candidate's slot; a node's sample names it: that
        // node is asked at once.
        let sampled = InfoHash([0x78; 20]);
        let d = Discovery {
            info_hash: sampled,
            from: addr("10.0.3.2:6881"),
            ..d
        };
        s.on_discovery(now, d, &mut net);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches.len(), 5, "it waits: two candidates run");
        let node = addr("10.0.4.1:6881");
        let d = Discovery {
            info_hash: sampled,
            source: DiscoverySource::Sample,
            from: node,
            peer: None,
            sampled_by: Some((0, NodeId([4; 20]))),
            noseed: false,
        };
        net.sent.clear();
        s.on_discovery(now, d, &mut net);
        assert!(
            net.sent.iter().any(|x| x.0 == node && !x.2),
            "the sampling node is asked: {:?}",
            net.sent
        );
        assert_eq!(s.lookup_wait.len(), 0);
        let mut sizes = Vec::new();
        s.table_sizes(4096, &mut sizes);
        assert!(sizes.iter().all(|x| !x.over()));
    }

    #[test]
    fn a_learned_node_is_sampled_and_dropped_from_sampling_without_bep51() {
        let t = Timestamp::from_secs(100);
        let mut s = Strategy::new(CrawlConfig::default(), t, [0; 16]);
        let mut net = Recorder::new();
        let node = addr("10.0.0.2:6881");
        let id = NodeId([3; 20]);
        assert_eq!(s.learn_nodes(t, 0, &[(id, node)], &net), 1);
        assert_eq!(s.learn_nodes(t, 0, &[(id, node)], &net), 0);
        let t1 = t.add(CRAWL_TICK);
        s.tick(t1, &mut net);
        let samples: Vec<_> = net.sent.iter().filter(|x| x.2).copied().collect();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].0, node);
        // A reply without samples: it does not do BEP 51 and is not sampled again.
        let r = Response {
            id,
            ..Response::default()
        };
        let reply = CrawlReply {
            ident: 0,
            from: node,
            response: &r,
            nodes: &[],
            peers: &[],
        };
        s.on_reply(t1, samples[0].1, reply, &mut net);
        assert_eq!(s.stats().bep51_no, 1);
        net.sent.clear();
        s.tick(t1.add(Duration::from_secs(7200)), &mut net);
        assert!(net.sent.iter().all(|x| x.0 != node || !x.2));
    }

    /// Issue 17: a seeder looks its own torrent up with BEP 33 `noseed=1`
    /// (libtorrent's announce lookup of a torrent it seeds); a table refresh's
    /// get_peers for a random id never carries it. Heard from one address, such
    /// a query is evidence of a torrent, counted: its peer search does not wait
    /// behind the refresh candidates that heard before it.
    #[test]
    fn a_seeders_noseed_get_peers_is_evidence_of_a_torrent() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            per_ip_pps: 0,
            candidate_grace: Duration::ZERO,
            candidate_lookups: 1,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let heard = |ih, from: &str, noseed| Discovery {
            info_hash: ih,
            source: DiscoverySource::GetPeers,
            from: addr(from),
            peer: None,
            sampled_by: None,
            noseed,
        };
        // Three table-refresh targets, each from one node: the first one's
        // search runs (low priority), the other two wait for its slot.
        let refresh: Vec<InfoHash> = (1..=3u8).map(|i| InfoHash([i; 20])).collect();
        for (i, &ih) in refresh.iter().enumerate() {
            s.on_discovery(
                t,
                heard(ih, &format!("10.0.1.{}:6881", i + 1), false),
                &mut net,
            );
        }
        let mut now = t.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches, vec![refresh[0]]);
        assert!(refresh.iter().all(|ih| !s.evidence_of_torrent(ih)));
        // A seeder's lookup, from one address, after them: evidence at once.
        let real = InfoHash([0x5e; 20]);
        s.on_discovery(now, heard(real, "10.0.2.1:6881", true), &mut net);
        assert!(s.evidence_of_torrent(&real));
        assert_eq!(s.stats().candidates_noseed, 1);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(
            net.searches,
            vec![refresh[0], real],
            "not behind the candidates"
        );
        assert_eq!(net.lows, vec![true, false], "of normal priority");
        // Its next lookup counts no second time; the refresh targets stay
        // candidates, waiting for the one candidate slot.
        s.on_discovery(now, heard(real, "10.0.2.1:6881", true), &mut net);
        assert_eq!(s.stats().candidates_noseed, 1);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches.len(), 2);
        assert!(!s.evidence_of_torrent(&refresh[1]));
    }

    /// Issue 17: a seeder's first lookup can reach us before its announce has
    /// landed anywhere, so the peer search of its torrent finds nobody and waits
    /// out a retry's backoff (5 min). The seeder's next lookup (at its next
    /// announce) brings the acquisition back at once, a few times at most.
    #[test]
    fn a_seeders_next_noseed_lookup_brings_a_search_that_found_nobody_back() {
        let t = Timestamp::from_secs(100);
        let cfg = CrawlConfig {
            auto_acquire: true,
            per_ip_pps: 0,
            candidate_grace: Duration::ZERO,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let ih = InfoHash([0x5f; 20]);
        let lookup = |noseed| Discovery {
            info_hash: ih,
            source: DiscoverySource::GetPeers,
            from: addr("10.0.2.1:6881"),
            peer: None,
            sampled_by: None,
            noseed,
        };
        s.on_discovery(t, lookup(true), &mut net);
        let mut now = t.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches, vec![ih]);
        for round in 1..=MAX_SOURCES {
            // Nobody holds it yet: it waits out a retry.
            s.on_lookup_done(now, net.searches.len() as u64, &[], &mut net);
            assert!(!s.is_acquiring(&ih), "round {round}");
            // A lookup without noseed (a leecher's, a refresh's) is no lead.
            s.on_discovery(now, lookup(false), &mut net);
            now = now.add(CRAWL_TICK);
            s.tick(now, &mut net);
            assert_eq!(net.searches.len(), round, "round {round}");
            // The seeder's next lookup is: searched again at once.
            s.on_discovery(now, lookup(true), &mut net);
            now = now.add(CRAWL_TICK);
            s.tick(now, &mut net);
            assert_eq!(net.searches.len(), round + 1, "round {round}");
        }
        // Bounded: after MAX_SOURCES of them it waits out its backoff.
        s.on_lookup_done(now, net.searches.len() as u64, &[], &mut net);
        s.on_discovery(now, lookup(true), &mut net);
        now = now.add(CRAWL_TICK);
        s.tick(now, &mut net);
        assert_eq!(net.searches.len(), MAX_SOURCES + 1);
        assert!(!s.is_acquiring(&ih));
    }

    /// Issue 21 §2: a sharded crawler offers an infohash of another slice
    /// instead of acquiring it (no fetch from its announcer, no search), and
    /// acquires it once it is claimed from the shared queue; one of its own
    /// slice it acquires as before.
    #[test]
    fn a_foreign_infohash_is_offered_and_acquired_only_once_claimed() {
        use crate::shard::Shard;
        let t = Timestamp::from_secs(100);
        let shard = Shard::new(1, 3).unwrap();
        let cfg = CrawlConfig {
            auto_acquire: true,
            shard,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        // Top byte 0x10 lies in slice 0 of 3, 0x60 in slice 1, 0xc0 in slice 2.
        let foreign = InfoHash([0x10; 20]);
        let other = InfoHash([0xc0; 20]);
        let own = InfoHash([0x60; 20]);
        assert!(!shard.contains(&foreign.0) && shard.contains(&own.0));
        let announce = |ih, n: u8| Discovery {
            info_hash: ih,
            source: DiscoverySource::Announce,
            from: addr(&format!("10.0.0.{n}:6881")),
            peer: Some(addr(&format!("10.0.0.{n}:51413"))),
            sampled_by: None,
            noseed: false,
        };
        s.on_discovery(t, announce(foreign, 1), &mut net);
        s.on_discovery(t, announce(other, 2), &mut net);
        assert!(net.fetches.is_empty() && net.searches.is_empty());
        assert!(!s.is_acquiring(&foreign) && !s.is_acquiring(&other));
        let offered: Vec<(InfoHash, u16)> = net
            .events
            .iter()
            .filter_map(|e| match e {
                Event::InfohashOffered { info_hash, owner } => Some((*info_hash, *owner)),
                _ => None,
            })
            .collect();
        assert_eq!(offered, vec![(foreign, 0), (other, 2)]);
        assert_eq!(s.stats().shard_offered, 2);
        // Its own: fetched from the announcer at once, as unsharded.
        s.on_discovery(t, announce(own, 3), &mut net);
        assert_eq!(net.fetches, vec![(own, vec![addr("10.0.0.3:51413")])]);
        assert_eq!(s.stats().shard_offered, 2);
        // Claimed from the queue (its owner died): acquired, by a peer search
        // (the announcer's address stayed with the shard that heard it).
        s.acquire_claimed(t, foreign, &mut net).unwrap();
        s.tick(t.add(Duration::from_secs(2)), &mut net);
        assert!(s.is_acquiring(&foreign));
        assert_eq!(net.searches, vec![foreign]);
        assert_eq!(s.stats().shard_claimed, 1);
        // A plain `acquire` of a foreign one still only offers it.
        s.acquire(t, other, &mut net).unwrap();
        assert!(!s.is_acquiring(&other));
        assert_eq!(s.stats().shard_offered, 3);
    }

    /// A sharded walk books only nodes of its slice and draws its exploration
    /// probes and sample targets inside it.
    #[test]
    fn a_sharded_walk_stays_in_its_slice() {
        use crate::shard::Shard;
        let t = Timestamp::from_secs(100);
        let shard = Shard::new(2, 4).unwrap();
        let cfg = CrawlConfig {
            shard,
            ..CrawlConfig::default()
        };
        let mut s = Strategy::new(cfg, t, [0; 16]);
        let mut net = Recorder::new();
        let mut rng = Rng::new(5);
        let nodes: Vec<(NodeId, SocketAddr)> = (0..64)
            .map(|k| (NodeId::random(&mut rng), addr(&format!("10.1.{k}.1:6881"))))
            .collect();
        let inside = nodes.iter().filter(|(id, _)| shard.contains(&id.0)).count();
        assert!(inside > 0 && inside < nodes.len());
        let new = s.learn_nodes(t, 0, &nodes, &net);
        assert_eq!(new, inside);
        assert_eq!(s.stats().shard_foreign_nodes, (nodes.len() - inside) as u64);
        assert_eq!(s.stats().book_nodes, inside);
        s.tick(t.add(Duration::from_secs(1)), &mut net);
        assert!(!net.sent.is_empty());
        for (to, _, _) in &net.sent {
            let id = nodes.iter().find(|(_, a)| a == to).unwrap().0;
            assert!(shard.contains(&id.0), "only booked nodes are asked");
        }
        assert!(!net.targets.is_empty());
        for target in &net.targets {
            assert!(shard.contains(&target.0), "{target:?}");
        }
    }
}
