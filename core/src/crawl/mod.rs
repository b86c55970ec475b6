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
//! * **Capture** of get_peers and announce_peer queries sent to us (the server in
//!   [`crate::crawler`] reports them here). An infohash heard only in a get_peers
//!   query is a *candidate*: libtorrent also sends get_peers for random ids when
//!   it refreshes its table. A client that traverses towards us usually announces
//!   to us seconds later, so a candidate waits [`CrawlConfig::candidate_grace`]
//!   for that announce (its peer confirms the candidate, `PeersFound`, and is
//!   fetched from at once); otherwise it gets one bounded peer search, and if
//!   nobody holds it, it is given up without retries. Candidates are never stored
//!   as torrents: only metadata is.
//! * **Acquisition**: for an infohash that the runtime wants (it is not stored),
//!   ask the node that sampled it for peers first (one get_peers), then fall back to
//!   a bounded get_peers traversal, then fetch the metadata. Failures are retried
//!   with exponential backoff (5 min, 30 min, 3 h, then given up).
//!
//! **How core learns that an infohash is already stored.** Core never sees storage.
//! It deduplicates discoveries in a bounded window and emits one
//! `InfohashDiscovered` per new infohash. The runtime checks storage (a fast LMDB
//! read) and calls [`Crawler::acquire`] only for infohashes it does not have. With
//! [`CrawlConfig::auto_acquire`] (for the simulator, or a runtime without storage)
//! core acquires every discovery itself.
//!
//! Every query counts against one global packet budget (token bucket) and a per-IP
//! pace that stays well under libtorrent's 5 packets/s ban threshold.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use crate::addr::Family;
use crate::crawler::Sent;
use crate::fetch::AfterFailure;
use crate::id::{InfoHash, NodeId};
use crate::krpc::{QueryKind, Response};
use crate::lookup::LookupKind;
use crate::rpc::{Purpose, Transaction};
use crate::server::RateLimiter;
use crate::time::Timestamp;
use crate::{ApiMisuse, Crawler, DiscoverySource, Event};

pub mod budget;
pub use budget::Budget;

/// Below this many known nodes, exploration runs even while sampling is busy.
const EXPLORE_FLOOR: usize = 256;
/// Below this many new nodes per exploration reply (on average), exploration idles.
const EXPLORE_BARREN: f64 = 1.0;

/// Sampling nodes remembered per infohash, to ask for its peers.
const MAX_SOURCES: usize = 3;

/// Crawl cadence: sampling and exploration run every tick.
const CRAWL_TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct CrawlConfig {
    /// Harvest at all (sampling, exploration, acquisition). Off gives a plain DHT node.
    pub enabled: bool,
    /// Global outgoing query budget, packets per second (0 = unlimited).
    pub max_pps: u32,
    /// Budget burst, packets.
    pub burst: u32,
    /// Queries per second to one remote IP (0 = no per-IP pacing).
    pub per_ip_pps: u32,
    /// Per-IP burst.
    pub per_ip_burst: u32,
    /// Share of the budget for find_node exploration, packets per second.
    pub explore_pps: u32,
    /// Nodes in the node book.
    pub max_book: usize,
    /// Shortest revisit of a node for sampling, whatever its `interval`.
    pub min_revisit: Duration,
    /// Longest `interval` honoured (BEP 51 allows up to 6 h).
    pub max_interval: Duration,
    /// Revisit nodes whose last sample was productive (new infohashes and `num`
    /// larger than the sample) after this long, even before their `interval`.
    /// `None` (default) always honours `interval`.
    pub productive_revisit: Option<Duration>,
    /// Consecutive timeouts before a node leaves the book (and is blacklisted).
    pub max_node_failures: u8,
    /// How long a blacklisted address is ignored.
    pub blacklist_for: Duration,
    /// Cap on blacklisted addresses.
    pub max_blacklist: usize,
    /// Infohashes remembered for deduplication.
    pub seen_window: usize,
    /// Acquire every discovered infohash without asking the runtime.
    pub auto_acquire: bool,
    /// Acquisitions (peer search + fetch) running at once.
    pub max_acquisitions: usize,
    /// Acquisitions waiting to start.
    pub acquire_queue: usize,
    /// Run a full get_peers traversal when the sampling node has no peers.
    pub lookup_on_miss: bool,
    /// Cap on the queries of that traversal.
    pub acquire_lookup_queries: u32,
    /// How long an infohash heard only in a get_peers query waits before its
    /// peer search. A client that traverses towards us announces to us a few
    /// seconds later when we are among the closest nodes that answered: the
    /// announce gives its peer for free, and the traversal is saved.
    pub candidate_grace: Duration,
    /// Retry delays after a failed acquisition; after the last, give up.
    pub retry_backoff: Vec<Duration>,
    /// Infohashes remembered in the retry table.
    pub max_retry: usize,
    /// Answer with node ids forged close to each remote node (magnetico's old
    /// trick). Every node we query files us in its closest bucket, so it hands
    /// us out to anyone traversing towards its part of the keyspace, and their
    /// get_peers and announce_peer queries come to us. This bends BEP 5: our id
    /// is not stable, one address claims thousands of ids, and the nodes' closest
    /// buckets (the ones lookups rely on) fill with a node that is not where it
    /// claims to be. Hence opt-in. (In the simulator it lifts recall past the
    /// BEP 51 ceiling; see BENCHMARKS.md.)
    pub neighbour_mode: bool,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        CrawlConfig {
            enabled: true,
            max_pps: 2000,
            burst: 200,
            per_ip_pps: 2,
            per_ip_burst: 8,
            explore_pps: 200,
            max_book: 100_000,
            min_revisit: Duration::from_secs(60),
            max_interval: Duration::from_secs(6 * 3600),
            productive_revisit: None,
            max_node_failures: 3,
            blacklist_for: Duration::from_secs(3600),
            max_blacklist: 10_000,
            seen_window: 1 << 16,
            auto_acquire: false,
            max_acquisitions: 1000,
            acquire_queue: 100_000,
            lookup_on_miss: true,
            acquire_lookup_queries: 16,
            candidate_grace: Duration::from_secs(15),
            retry_backoff: vec![
                Duration::from_secs(300),
                Duration::from_secs(1800),
                Duration::from_secs(3 * 3600),
            ],
            max_retry: 100_000,
            neighbour_mode: false,
        }
    }
}

/// Whether a node supports BEP 51.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Bep51 {
    Unknown,
    Yes,
    No,
}

#[derive(Clone, Debug)]
pub(crate) struct BookNode {
    pub id: NodeId,
    pub ident: usize,
    pub bep51: Bep51,
    pub next_at: Option<Timestamp>,
    pub failures: u8,
    pub num: Option<i64>,
    pub in_flight: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum CrawlTx {
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

/// Crawl counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrawlStats {
    pub samples_sent: u64,
    pub sample_replies: u64,
    pub samples_received: u64,
    pub explore_sent: u64,
    pub new_from_announce: u64,
    pub new_from_get_peers: u64,
    pub new_from_sample: u64,
    pub duplicates: u64,
    pub book_nodes: usize,
    /// Infohashes the sampled nodes say they store (sum of their BEP 51 `num`):
    /// how much there is to find among the nodes we know.
    pub stored_estimate: u64,
    /// Acquisitions running now (peer search or fetch).
    pub acquisitions_running: usize,
    /// Acquisitions waiting to start.
    pub acquisitions_queued: usize,
    pub book_full_drops: u64,
    pub bep51_yes: u64,
    pub bep51_no: u64,
    pub blacklisted: u64,
    pub budget_refused: u64,
    pub per_ip_refused: u64,
    pub ask_source_sent: u64,
    pub ask_source_hits: u64,
    pub acquisitions_started: u64,
    pub acquisitions_queued_drop: u64,
    pub acquire_no_peers: u64,
    pub fetched: u64,
    pub fetch_failed: u64,
    pub retries: u64,
    pub given_up: u64,
    pub retry_skips: u64,
    /// get_peers candidates held back for [`CrawlConfig::candidate_grace`].
    pub candidates_deferred: u64,
    /// Of those, the ones whose announce arrived meanwhile (no peer search).
    pub candidates_announced: u64,
    /// Candidates whose peer search found nobody: given up at once (most are
    /// table-refresh targets, not torrents).
    pub candidates_dropped: u64,
}

pub(crate) struct Harvest {
    pub cfg: CrawlConfig,
    pub budget: Budget,
    per_ip: Option<RateLimiter>,
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
    retry: BTreeMap<InfoHash, Retry>,
    retry_due: BTreeSet<(Timestamp, InfoHash)>,
    pub txs: BTreeMap<u64, CrawlTx>,
    next_tag: u64,
    explore: Budget,
    explore_cursor: Option<SocketAddr>,
    /// Average new nodes per exploration reply (starts optimistic).
    explore_yield: f64,
    pub next_tick: Timestamp,
    pub stats: CrawlStats,
}

impl Harvest {
    pub fn new(cfg: CrawlConfig, now: Timestamp) -> Self {
        let per_ip = (cfg.per_ip_pps > 0)
            .then(|| RateLimiter::with_burst(cfg.per_ip_pps, cfg.per_ip_burst, 65_536));
        Harvest {
            budget: Budget::new(cfg.max_pps, cfg.burst),
            explore_cursor: None,
            explore_yield: 8.0,
            explore: Budget::new(cfg.explore_pps.max(1), cfg.explore_pps.clamp(1, 50)),
            per_ip,
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
            stats: CrawlStats::default(),
            cfg,
        }
    }

    /// Acquisitions waiting: queued, or paced until a source may be asked.
    fn queue_len(&self) -> usize {
        self.acq_queue.len() + self.paced_due.len()
    }

    /// When the per-IP pace next lets a query to `to` through (now or earlier
    /// when it does already), without charging it.
    fn ip_next_allowed(&self, to: &SocketAddr) -> Timestamp {
        match &self.per_ip {
            Some(l) => l.next_allowed(crate::addr::canonical(*to).ip()),
            None => Timestamp::ZERO,
        }
    }

    /// Checks the per-IP pace for a query to `to`.
    pub fn ip_allows(&mut self, now: Timestamp, to: &SocketAddr) -> bool {
        match &mut self.per_ip {
            Some(l) => {
                let ok = l.allow(now, to.ip());
                if !ok {
                    self.stats.per_ip_refused += 1;
                }
                ok
            }
            None => true,
        }
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
    pub fn learn(&mut self, now: Timestamp, ident: usize, id: NodeId, a: SocketAddr) -> bool {
        if self.blacklisted(now, &a) {
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

impl Crawler {
    /// Crawl counters.
    pub fn crawl_stats(&self) -> CrawlStats {
        let mut s = self.harvest.stats.clone();
        s.book_nodes = self.harvest.book.len();
        s.stored_estimate = self
            .harvest
            .book
            .values()
            .filter_map(|n| n.num)
            .map(|n| n.clamp(0, 1 << 32) as u64)
            .sum();
        s.acquisitions_running = self.harvest.acq.len();
        s.acquisitions_queued = self.harvest.queue_len();
        s.budget_refused = self.harvest.budget.refused;
        s
    }

    /// Whether `ih` is being acquired (peer search or fetch).
    pub fn is_acquiring(&self, ih: &InfoHash) -> bool {
        self.harvest.acq.contains_key(ih)
    }

    /// Finds peers for `ih` and fetches its metadata: asks the node that sampled it
    /// first, then a get_peers traversal, then the fetcher. Call it for discovered
    /// infohashes that storage does not have. Idempotent while running; ignored while
    /// a failed infohash waits out its backoff.
    pub fn acquire(&mut self, now: Timestamp, ih: InfoHash) -> Result<(), ApiMisuse> {
        self.advance(now);
        if self.harvest.acq.contains_key(&ih) {
            return Ok(());
        }
        if let Some(r) = self.harvest.retry.get(&ih) {
            if r.next_at > self.now {
                self.harvest.stats.retry_skips += 1;
                return Ok(());
            }
        }
        // Acquisitions start from the crawl tick, after sampling has had its share
        // of the budget: discovering new infohashes comes first.
        if self.harvest.queued.contains(&ih) || self.harvest.deferred.contains_key(&ih) {
            return Ok(());
        }
        if self.harvest.queue_len() >= self.harvest.cfg.acquire_queue {
            self.harvest.stats.acquisitions_queued_drop += 1;
            return Err(ApiMisuse::Full);
        }
        self.harvest.queued.insert(ih);
        self.harvest.acq_queue.push_back(ih);
        // A cheap acquisition (announced peers to fetch from, or the sampling node to
        // ask: one query at most) with nothing queued ahead of it, no retry due (nor
        // one for it: the tick retries its old peers first), room and budget above the
        // tick's reserve: start now rather than at the next tick, up to CRAWL_TICK
        // later, which was most of the time to metadata on a fast network. One that
        // needs a traversal (a get_peers capture), and any backlog, wait for the tick,
        // after sampling, as before.
        let h = &self.harvest;
        let cheap = h
            .hints
            .get(&ih)
            .is_some_and(|x| !x.peers.is_empty() || !x.sources.is_empty());
        if cheap
            && h.queue_len() == 1
            && !h.retry.contains_key(&ih)
            && h.acq.len() < h.cfg.max_acquisitions
            && h.retry_due.first().is_none_or(|(t, _)| *t > self.now)
            && h.budget.available(self.now) > (h.cfg.burst / 4) as u64
        {
            self.harvest.acq_queue.pop_front();
            self.harvest.queued.remove(&ih);
            self.start_acquisition(ih);
        }
        Ok(())
    }

    /// The time the first source of `ih` may be asked, when it has only sources
    /// to ask (no announced peers) and every one of them is paced now.
    fn paced_until(&self, ih: &InfoHash) -> Option<Timestamp> {
        let hint = self.harvest.hints.get(ih)?;
        if !hint.peers.is_empty() {
            return None;
        }
        let at = hint
            .sources
            .iter()
            .map(|(_, _, addr)| self.harvest.ip_next_allowed(addr))
            .min()?;
        (at > self.now).then_some(at)
    }

    /// Parks a queued acquisition until `at`, when a source may be asked.
    fn pace(&mut self, ih: InfoHash, at: Timestamp) {
        if self.harvest.queued.insert(ih) {
            self.harvest.paced_due.insert((at, ih));
            self.harvest.paced.insert(ih, at);
        }
    }

    /// A paced acquisition whose hint gained a lead (a peer, or another source)
    /// goes back to the end of the queue, where it would have found it before.
    fn unpace(&mut self, ih: InfoHash) {
        if let Some(at) = self.harvest.paced.remove(&ih) {
            self.harvest.paced_due.remove(&(at, ih));
            self.harvest.acq_queue.push_back(ih);
        }
    }

    fn start_acquisition(&mut self, ih: InfoHash) {
        // Every source paced: wait until the first may be asked, before paying for
        // a copy of the hint, transaction tags and a limiter check per source.
        if let Some(at) = self.paced_until(&ih) {
            self.pace(ih, at);
            return;
        }
        self.harvest.stats.acquisitions_started += 1;
        let hint = self.harvest.hints.get(&ih).cloned().unwrap_or_default();
        if !hint.peers.is_empty() {
            self.harvest.acq.insert(ih, Acq::new(Stage::Fetching));
            self.start_fetch(ih, &hint.peers);
            return;
        }
        let grace = self.harvest.cfg.candidate_grace;
        if let Some(t) = hint.heard_at.filter(|_| hint.sources.is_empty()) {
            let due = t.add(grace);
            if due > self.now && self.harvest.deferred.len() < self.harvest.cfg.acquire_queue {
                // Wait for the announce that usually follows.
                self.harvest.stats.acquisitions_started -= 1;
                self.harvest.stats.candidates_deferred += 1;
                self.harvest.deferred.insert(ih, due);
                self.harvest.deferred_due.insert((due, ih));
                return;
            }
        }
        // Ask a node that sampled it; when one is paced (it just gave us up to 20
        // samples), another that sampled it too, each under its own per-IP pace.
        let mut throttled = false;
        let mut paced: Option<Timestamp> = None;
        for (i, id, addr) in hint.sources {
            let at = self.harvest.ip_next_allowed(&addr);
            if at > self.now {
                // This one is paced: no tag, no refused check.
                paced = Some(paced.map_or(at, |p| p.min(at)));
                continue;
            }
            let tag = self.harvest.tag(CrawlTx::AskSource { ih });
            let q = QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            };
            match self.try_send_query(i, addr, Some(id), Purpose::Crawl(tag), q) {
                Sent::Yes => {
                    self.harvest.stats.ask_source_sent += 1;
                    self.harvest.acq.insert(ih, Acq::new(Stage::AskSource));
                    return;
                }
                Sent::Throttled => throttled = true,
                Sent::No => {}
            }
            self.harvest.txs.remove(&tag);
        }
        if throttled {
            // Out of budget: ask later rather than pay for a traversal now.
            self.harvest.stats.acquisitions_started -= 1;
            if self.harvest.queued.insert(ih) {
                self.harvest.acq_queue.push_back(ih);
            }
            return;
        }
        if let Some(at) = paced {
            // Every source it could ask is paced: ask when the first may be.
            self.harvest.stats.acquisitions_started -= 1;
            self.pace(ih, at);
            return;
        }
        self.acquire_by_lookup(ih, &[]);
    }

    fn acquire_by_lookup(&mut self, ih: InfoHash, seeds: &[(NodeId, SocketAddr)]) {
        if !self.harvest.cfg.lookup_on_miss {
            self.acquisition_failed(ih, true);
            return;
        }
        let i = (0..self.ids.len()).min_by_key(|&i| self.ids[i].id.distance(&ih.0));
        let Some(i) = i else { return };
        match self.start_lookup(i, ih.0, LookupKind::GetPeers { scrape: true }, seeds) {
            Some(lid) => {
                let cap = self.harvest.cfg.acquire_lookup_queries;
                if let Some(l) = self.lookups.get_mut(&lid) {
                    l.set_max_queries(cap);
                }
                let early = self.harvest.acq.get(&ih).is_some_and(|a| a.early);
                let mut a = Acq::new(Stage::Lookup(lid));
                a.early = early;
                self.harvest.acq.insert(ih, a);
                if self.lookups.contains_key(&lid) {
                    self.harvest.acq_by_lookup.insert(lid, ih);
                } else {
                    // The lookup finished at once (nothing to ask): treat as a miss.
                    self.acquisition_failed(ih, true);
                }
            }
            None => self.acquisition_failed(ih, false),
        }
    }

    /// An announced peer is the best lead: fetch from it at once, even while the
    /// acquisition is still asking for peers. The search goes on: an announcer is
    /// often a magnet leecher that has no metadata yet (BEP 9 clients announce at
    /// once), and then the peers the search finds take over.
    fn fetch_announced(&mut self, ih: InfoHash, p: SocketAddr) {
        let Some(a) = self.harvest.acq.get_mut(&ih) else {
            return;
        };
        if a.stage == Stage::Fetching {
            self.start_fetch(ih, &[p]);
            return;
        }
        a.early = true;
        if self.fetch_metadata(self.now, ih, &[p]).is_err() {
            if let Some(a) = self.harvest.acq.get_mut(&ih) {
                a.early = false;
            }
        }
    }

    fn start_fetch(&mut self, ih: InfoHash, peers: &[SocketAddr]) {
        if let Some(a) = self.harvest.acq.get_mut(&ih) {
            a.stage = Stage::Fetching;
        }
        if self.fetch_metadata(self.now, ih, peers).is_err() {
            self.acquisition_failed(ih, false);
        }
    }

    /// An acquisition ended without metadata: schedule a retry or give up.
    fn acquisition_failed(&mut self, ih: InfoHash, no_peers: bool) {
        self.acquisition_failed_with(ih, no_peers, &[], false);
    }

    /// Schedules the retry (returns its time) or gives up (`None`).
    fn acquisition_failed_with(
        &mut self,
        ih: InfoHash,
        no_peers: bool,
        peers: &[SocketAddr],
        final_: bool,
    ) -> Option<Timestamp> {
        self.harvest.acq.remove(&ih);
        if no_peers {
            self.harvest.stats.acquire_no_peers += 1;
        }
        // A candidate nobody holds is most likely a random refresh target: one
        // peer search is all it gets.
        let candidate = no_peers
            && self
                .harvest
                .hints
                .get(&ih)
                .is_none_or(|h| h.candidate_only());
        if candidate {
            self.harvest.stats.candidates_dropped += 1;
        }
        let final_ = final_ || candidate;
        let h = &mut self.harvest;
        let attempts = h.retry.get(&ih).map_or(0, |r| r.attempts);
        if let Some(r) = h.retry.remove(&ih) {
            h.retry_due.remove(&(r.next_at, ih));
        }
        if h.retry.len() >= h.cfg.max_retry {
            if let Some((t, old)) = h.retry_due.pop_first() {
                h.retry.remove(&old);
                let _ = t;
            }
        }
        let backoff = if final_ {
            None
        } else {
            h.cfg.retry_backoff.get(attempts)
        };
        let peers: Vec<SocketAddr> = peers.iter().take(8).copied().collect();
        match backoff {
            Some(d) => {
                let next_at = self.now.add(*d);
                h.retry.insert(
                    ih,
                    Retry {
                        attempts: attempts + 1,
                        next_at,
                        peers,
                    },
                );
                h.retry_due.insert((next_at, ih));
                Some(next_at)
            }
            None => {
                h.stats.given_up += 1;
                h.retry.insert(
                    ih,
                    Retry {
                        attempts: attempts + 1,
                        next_at: Timestamp::MAX,
                        peers: Vec::new(),
                    },
                );
                None
            }
        }
    }

    /// Called by the crawler for every infohash heard (capture or samples).
    pub(crate) fn discovered(
        &mut self,
        ih: InfoHash,
        source: DiscoverySource,
        from: SocketAddr,
        peer: Option<SocketAddr>,
        src_node: Option<(usize, NodeId)>,
    ) {
        if !self.harvest.cfg.enabled {
            self.emit(Event::InfohashDiscovered {
                info_hash: ih,
                source,
                from,
                peer,
            });
            return;
        }
        let new = self.harvest.note_seen(ih);
        let first_peer;
        let mut lead = false;
        {
            let hint = self.harvest.hints.entry(ih).or_default();
            // A get_peers candidate that now has an announced peer is confirmed.
            first_peer = peer.is_some() && hint.heard_at.is_some() && hint.candidate_only();
            if let Some(p) = peer {
                if !hint.peers.contains(&p) && hint.peers.len() < 8 {
                    hint.peers.push(p);
                    lead = true;
                }
            }
            if let Some((i, id)) = src_node {
                if hint.sources.len() < MAX_SOURCES && !hint.sources.iter().any(|s| s.2 == from) {
                    hint.sources.push((i, id, from));
                    lead = true;
                }
            }
            if source == DiscoverySource::GetPeers && hint.heard_at.is_none() {
                hint.heard_at = Some(self.now);
            }
        }
        if lead {
            self.unpace(ih);
        }
        if let (true, Some(p)) = (first_peer, peer) {
            self.emit(Event::PeersFound {
                info_hash: ih,
                peers: vec![p],
                seeders: None,
                leechers: None,
            });
        }
        if peer.is_some() {
            // A candidate waiting for its announce: here it is.
            if let Some(due) = self.harvest.deferred.remove(&ih) {
                self.harvest.deferred_due.remove(&(due, ih));
                self.harvest.stats.candidates_announced += 1;
                self.start_acquisition(ih);
            }
        }
        if let Some(p) = peer {
            self.fetch_announced(ih, p);
        }
        if !new {
            return;
        }
        match source {
            DiscoverySource::Announce => self.harvest.stats.new_from_announce += 1,
            DiscoverySource::GetPeers => self.harvest.stats.new_from_get_peers += 1,
            DiscoverySource::Sample => self.harvest.stats.new_from_sample += 1,
        }
        self.emit(Event::InfohashDiscovered {
            info_hash: ih,
            source,
            from,
            peer,
        });
        if self.harvest.cfg.auto_acquire {
            let _ = self.acquire(self.now, ih);
        }
    }

    /// Feeds the nodes of any reply into the node book.
    pub(crate) fn learn_nodes(&mut self, i: usize, nodes: &[(NodeId, SocketAddr)]) -> usize {
        if !self.harvest.cfg.enabled {
            return 0;
        }
        let mut new = 0;
        for (id, a) in nodes {
            let ident = self.ident_for(Family::of(a), id).unwrap_or(i);
            if self.harvest.learn(self.now, ident, *id, *a) {
                new += 1;
            }
        }
        new
    }

    /// The identity to talk to a node from: same family, id closest to the node's,
    /// so that it keeps us in one of its deep (sparse) buckets.
    fn ident_for(&self, fam: Family, id: &NodeId) -> Option<usize> {
        (0..self.ids.len())
            .filter(|&i| self.ids[i].family == fam)
            .min_by_key(|&i| self.ids[i].id.distance(&id.0))
    }

    /// A reply to a crawl query.
    pub(crate) fn on_crawl_reply(
        &mut self,
        i: usize,
        from: SocketAddr,
        r: &Response<'_>,
        tx: &Transaction,
        tag: u64,
    ) {
        let Some(ctx) = self.harvest.txs.remove(&tag) else {
            return;
        };
        let nodes = self.nodes_of(i, r);
        match ctx {
            CrawlTx::Sample { addr } => {
                self.harvest.stats.sample_replies += 1;
                let mut fresh = 0usize;
                let mut count = 0usize;
                if let Some(s) = r.samples {
                    count = s.len();
                    self.harvest.stats.samples_received += count as u64;
                    for ih in s.iter() {
                        let before = self.harvest.stats.duplicates;
                        self.discovered(ih, DiscoverySource::Sample, from, None, Some((i, r.id)));
                        if self.harvest.stats.duplicates == before {
                            fresh += 1;
                        }
                    }
                }
                let now = self.now;
                let cfg = &self.harvest.cfg;
                let (min_rev, max_int, productive) =
                    (cfg.min_revisit, cfg.max_interval, cfg.productive_revisit);
                let mut next = None;
                if let Some(n) = self.harvest.book.get_mut(&addr) {
                    n.in_flight = false;
                    n.failures = 0;
                    if r.samples.is_some() {
                        if n.bep51 != Bep51::Yes {
                            self.harvest.stats.bep51_yes += 1;
                        }
                        n.bep51 = Bep51::Yes;
                        n.num = r.num;
                        let interval =
                            Duration::from_secs(r.interval.unwrap_or(0).clamp(0, 21_600) as u64);
                        let mut wait = interval.clamp(min_rev, max_int.max(min_rev));
                        let more = r.num.is_some_and(|num| num > count as i64);
                        if let Some(p) = productive {
                            if fresh > 0 && more {
                                wait = wait.min(p.max(min_rev));
                            }
                        }
                        next = Some(now.add(wait));
                    } else {
                        if n.bep51 != Bep51::No {
                            self.harvest.stats.bep51_no += 1;
                        }
                        n.bep51 = Bep51::No;
                    }
                }
                self.harvest.schedule(addr, next);
                self.learn_nodes(i, &nodes);
            }
            CrawlTx::Explore { addr } => {
                if let Some(n) = self.harvest.book.get_mut(&addr) {
                    n.in_flight = false;
                    n.failures = 0;
                }
                let new = self.learn_nodes(i, &nodes);
                // How productive exploration is: an average of new nodes per reply.
                let y = &mut self.harvest.explore_yield;
                *y = *y * 0.95 + new as f64 * 0.05;
            }
            CrawlTx::AskSource { ih } => {
                self.learn_nodes(i, &nodes);
                if !self.harvest.acq.contains_key(&ih) {
                    return;
                }
                let peers: Vec<SocketAddr> = r.values.clone().unwrap_or_default();
                let fetching = self
                    .harvest
                    .acq
                    .get(&ih)
                    .is_some_and(|a| a.stage == Stage::Fetching);
                if peers.is_empty() && fetching {
                    return;
                }
                // (An early fetch from an announcer does not end the search: with no
                // peers here, the traversal below still runs.)
                if !peers.is_empty() {
                    self.harvest.stats.ask_source_hits += 1;
                    self.emit(Event::PeersFound {
                        info_hash: ih,
                        peers: peers.clone(),
                        seeders: None,
                        leechers: None,
                    });
                    self.start_fetch(ih, &peers);
                } else {
                    self.acquire_by_lookup(ih, &nodes);
                }
            }
        }
        let _ = tx;
    }

    /// An error reply, a refused send or a timeout for a crawl query.
    pub(crate) fn on_crawl_failure(&mut self, tag: u64, error_reply: bool) {
        let Some(ctx) = self.harvest.txs.remove(&tag) else {
            return;
        };
        match ctx {
            CrawlTx::Sample { addr } | CrawlTx::Explore { addr } => {
                let is_sample = matches!(ctx, CrawlTx::Sample { .. });
                let now = self.now;
                let max_fail = self.harvest.cfg.max_node_failures;
                let mut drop = false;
                let mut next = None;
                if let Some(n) = self.harvest.book.get_mut(&addr) {
                    n.in_flight = false;
                    if error_reply && is_sample {
                        // Error 204 and friends: it does not do BEP 51.
                        if n.bep51 != Bep51::No {
                            self.harvest.stats.bep51_no += 1;
                        }
                        n.bep51 = Bep51::No;
                    } else if !error_reply {
                        n.failures = n.failures.saturating_add(1);
                        if n.failures >= max_fail {
                            drop = true;
                        } else if n.bep51 != Bep51::No {
                            next = Some(now.add(Duration::from_secs(30 * n.failures as u64)));
                        }
                    }
                }
                if drop {
                    self.harvest.blacklist(now, addr);
                } else {
                    self.harvest.schedule(addr, next);
                }
            }
            CrawlTx::AskSource { ih } => {
                let asking = self
                    .harvest
                    .acq
                    .get(&ih)
                    .is_some_and(|a| a.stage == Stage::AskSource);
                if asking {
                    self.acquire_by_lookup(ih, &[]);
                }
            }
        }
    }

    /// A lookup finished: continue the acquisition that started it, if any.
    pub(crate) fn on_lookup_done_for_acq(&mut self, lid: u64, peers: &[SocketAddr]) {
        let Some(ih) = self.harvest.acq_by_lookup.remove(&lid) else {
            return;
        };
        let fetching = match self.harvest.acq.get_mut(&ih) {
            None => return,
            Some(a) => {
                let f = a.stage == Stage::Fetching || a.early;
                if f {
                    // The search is over; the running fetch reports for itself.
                    a.stage = Stage::Fetching;
                }
                f
            }
        };
        if !peers.is_empty() {
            self.start_fetch(ih, peers);
        } else if !fetching {
            self.acquisition_failed(ih, true);
        }
    }

    /// Sees every fetcher event on its way out (and says in a `MetadataFailed`
    /// whether the infohash will be retried).
    pub(crate) fn on_fetch_event(&mut self, e: &mut Event) {
        match e {
            Event::MetadataFetched(m) => {
                self.harvest.stats.fetched += 1;
                self.harvest.acq.remove(&m.info_hash);
                if let Some(r) = self.harvest.retry.remove(&m.info_hash) {
                    self.harvest.retry_due.remove(&(r.next_at, m.info_hash));
                }
            }
            Event::MetadataFailed(m) => {
                self.harvest.stats.fetch_failed += 1;
                let ih = m.info_hash;
                let (searching, searched) = match self.harvest.acq.get_mut(&ih) {
                    Some(a) => {
                        a.early = false;
                        (a.stage != Stage::Fetching, a.searched)
                    }
                    None => (false, true),
                };
                let invalid = m.info_error.is_some();
                if searching && !invalid {
                    // Only the announcers failed; the search still out decides.
                    m.next = AfterFailure::StillSearching;
                    return;
                }
                if !searched && !invalid {
                    // Only announced (or hinted) peers were tried, and they failed:
                    // search for peers now rather than retry in minutes.
                    if let Some(h) = self.harvest.hints.get_mut(&ih) {
                        h.peers.clear();
                        // Confirmed by its announce already: no second grace.
                        h.heard_at = None;
                    }
                    self.harvest.acq.remove(&ih);
                    self.start_acquisition(ih);
                    m.next = AfterFailure::StillSearching;
                    return;
                }
                if self.harvest.acq.contains_key(&m.info_hash) {
                    let peers: Vec<SocketAddr> = m.reasons.iter().map(|(p, _)| *p).collect();
                    // Metadata that hashed right but is invalid is invalid for everyone.
                    let final_ = m.info_error.is_some();
                    m.next = match self.acquisition_failed_with(m.info_hash, false, &peers, final_)
                    {
                        Some(t) => AfterFailure::RetryAt(t),
                        None => AfterFailure::GivenUp,
                    };
                }
            }
            _ => {}
        }
    }

    /// The crawl's next wake-up.
    pub(crate) fn crawl_deadline(&self) -> Option<Timestamp> {
        if !self.harvest.cfg.enabled {
            return None;
        }
        Some(self.harvest.next_tick)
    }

    /// Sampling, exploration, retries and queued acquisitions.
    pub(crate) fn crawl_tick(&mut self) {
        if !self.harvest.cfg.enabled || self.now < self.harvest.next_tick {
            return;
        }
        self.harvest.next_tick = self.now.add(CRAWL_TICK);
        let now = self.now;
        // Sampling: nodes that are due, while the budget keeps a reserve for lookups.
        let reserve = (self.harvest.cfg.burst / 4) as u64;
        let mut sent = 0;
        while sent < 1000 && self.harvest.budget.available(now) > reserve {
            let Some(&(t, addr)) = self.harvest.due.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.harvest.due.pop_first();
            let Some(n) = self.harvest.book.get_mut(&addr) else {
                continue;
            };
            n.next_at = None;
            if n.in_flight || n.bep51 == Bep51::No {
                continue;
            }
            n.in_flight = true;
            let (i, id) = (n.ident, n.id);
            // A target beside the node's own id: its reply lists its neighbours.
            let mut target = id;
            let tail: [u8; 12] = self.rng.bytes();
            target.0[8..].copy_from_slice(&tail);
            let tag = self.harvest.tag(CrawlTx::Sample { addr });
            sent += 1;
            if self.send_query(
                i,
                addr,
                Some(id),
                Purpose::Crawl(tag),
                QueryKind::SampleInfohashes { target },
            ) {
                self.harvest.stats.samples_sent += 1;
            } else {
                self.harvest.txs.remove(&tag);
                if let Some(n) = self.harvest.book.get_mut(&addr) {
                    n.in_flight = false;
                }
                // Not sent (budget or pacing): try again shortly.
                self.harvest
                    .schedule(addr, Some(now.add(Duration::from_secs(1))));
            }
        }
        // Exploration at a trickle (one per tick) while sampling is due: the walk
        // itself finds most nodes, as every sample reply lists some.
        let sampling_soon = self
            .harvest
            .due
            .first()
            .is_some_and(|(t, _)| *t <= now.add(Duration::from_secs(1)));
        // Exploration that stopped finding nodes slows to about one query a second.
        let barren = self.harvest.explore_yield < EXPLORE_BARREN;
        let tries_cap = if barren {
            u32::from(self.rng.below(40) == 0)
        } else if sampling_soon && self.harvest.book.len() >= EXPLORE_FLOOR {
            1
        } else {
            64
        };
        // Exploration: find_node with random targets to random known nodes.
        let mut tries = 0;
        while tries < tries_cap
            && self.harvest.budget.available(now) > reserve
            && self.harvest.explore.available(now) > 0
        {
            tries += 1;
            let probe = NodeId::random(&mut self.rng);
            // Round-robin over the book, so every known node is asked in turn.
            let pick = match self.harvest.explore_cursor {
                Some(c) => self.harvest.book.range((Excluded(c), Unbounded)).next(),
                None => None,
            }
            .or_else(|| self.harvest.book.iter().next())
            .map(|(a, n)| (*a, n.ident, n.id, n.in_flight));
            if let Some((a, ..)) = pick {
                self.harvest.explore_cursor = Some(a);
            }
            let (addr, i, id) = match pick {
                Some((a, i, id, false)) => (a, i, id),
                Some(_) => continue,
                None => {
                    // Empty book: ask the routing table.
                    let mut near = Vec::new();
                    let Some(ident) = self.ids.first() else { break };
                    ident.table.closest(&probe.0, 1, &mut near);
                    match near.first() {
                        Some(n) => (n.addr, 0, n.id),
                        None => break,
                    }
                }
            };
            if !self.harvest.explore.try_take(now) {
                break;
            }
            let tag = self.harvest.tag(CrawlTx::Explore { addr });
            if let Some(n) = self.harvest.book.get_mut(&addr) {
                n.in_flight = true;
            }
            if self.send_query(
                i,
                addr,
                Some(id),
                Purpose::Crawl(tag),
                QueryKind::FindNode { target: probe },
            ) {
                self.harvest.stats.explore_sent += 1;
            } else {
                self.harvest.txs.remove(&tag);
                if let Some(n) = self.harvest.book.get_mut(&addr) {
                    n.in_flight = false;
                }
            }
        }
        // Paced acquisitions whose first source may be asked now go back to the end
        // of the queue, as they did when they went round it every tick.
        while let Some(&(t, ih)) = self.harvest.paced_due.first() {
            if t > now {
                break;
            }
            self.harvest.paced_due.pop_first();
            self.harvest.paced.remove(&ih);
            self.harvest.acq_queue.push_back(ih);
        }
        // Retries that came due, and queued acquisitions, while there is room and
        // budget left after sampling and exploration.
        let mut started = 0;
        while self.harvest.acq.len() < self.harvest.cfg.max_acquisitions
            && self.harvest.budget.available(now) > reserve
            && started < 1000
        {
            let deferred = self.harvest.deferred_due.first().copied();
            let ih = match self.harvest.retry_due.first() {
                Some(&(t, ih)) if t <= now => {
                    self.harvest.retry_due.pop_first();
                    self.harvest.stats.retries += 1;
                    ih
                }
                _ if deferred.is_some_and(|(t, _)| t <= now) => {
                    let Some((_, ih)) = self.harvest.deferred_due.pop_first() else {
                        break;
                    };
                    self.harvest.deferred.remove(&ih);
                    ih
                }
                _ => match self.harvest.acq_queue.pop_front() {
                    Some(ih) => {
                        self.harvest.queued.remove(&ih);
                        ih
                    }
                    None => break,
                },
            };
            if !self.harvest.acq.contains_key(&ih) {
                started += 1;
                let again = self
                    .harvest
                    .retry
                    .get(&ih)
                    .filter(|r| r.attempts == 1 && !r.peers.is_empty());
                match again.map(|r| r.peers.clone()) {
                    Some(peers) => {
                        self.harvest.stats.acquisitions_started += 1;
                        self.harvest.acq.insert(ih, Acq::new(Stage::Fetching));
                        self.start_fetch(ih, &peers);
                    }
                    None => self.start_acquisition(ih),
                }
            }
        }
    }
}
