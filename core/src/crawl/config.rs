//! The crawl strategy's configuration and counters.

use std::time::Duration;

use crate::shard::Shard;

/// How the crawl strategy harvests: budgets, pacing, revisits, acquisitions.
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
    /// Pending retries remembered (the retry table).
    pub max_retry: usize,
    /// Infohashes given up are remembered this long at most (at least half of
    /// it, unless more than `given_up_capacity` are given up in that time), so
    /// that they are not acquired again when heard again.
    pub given_up_for: Duration,
    /// Given-up infohashes per half of `given_up_for`: each of the two filters
    /// that remember them holds this many (about 3.6 bytes each, allocated at
    /// the start: the memory is fixed).
    pub given_up_capacity: usize,
    /// An acquisition whose peer search finds every lookup slot busy waits
    /// for one in a queue of this many (then it fails and is retried). The
    /// searches of infohashes with evidence of being torrents start first;
    /// when it is full, a waiting get_peers candidate gives way to one of them
    /// (failed and retried, counted in `lookup_wait_candidates_dropped`).
    pub lookup_wait_queue: usize,
    /// Peer searches of get_peers candidates (infohashes without evidence, most
    /// of them random table-refresh targets) running at once; more wait. Their
    /// queries are of low priority in the per-IP pace (`Pacer::admit_low`).
    pub candidate_lookups: usize,
    /// A get_peers candidate whose first peer search found nobody is searched
    /// once more this much later (`None`: given up at once). Its clients may
    /// not have announced yet when the first search runs: a client announces
    /// after its own traversal, which the query we heard was part of.
    pub candidate_retry: Option<Duration>,
    /// Answer with node ids forged close to each remote node (magnetico's old
    /// trick). Every node we query files us in its closest bucket, so it hands
    /// us out to anyone traversing towards its part of the keyspace, and their
    /// get_peers and announce_peer queries come to us. This bends BEP 5: our id
    /// is not stable, one address claims thousands of ids, and the nodes' closest
    /// buckets (the ones lookups rely on) fill with a node that is not where it
    /// claims to be. Hence opt-in. (In the simulator it lifts recall past the
    /// BEP 51 ceiling; see BENCHMARKS.md.)
    pub neighbour_mode: bool,
    /// The scrape refresh of stored torrents (BEP 33 counts kept fresh): its own
    /// budget, packets per second, inside `max_pps` (its queries pass the global
    /// budget too). Each refresh is charged [`CrawlConfig::refresh_lookup_queries`]
    /// up front. 0 turns refreshing off.
    pub refresh_pps: u32,
    /// Cap on the queries of one refresh (a get_peers traversal with `scrape=1`).
    pub refresh_lookup_queries: u32,
    /// Refreshes running at once (BEP 33 suggests a few for inactive torrents).
    pub refresh_lookups: usize,
    /// Stored torrents waiting for a refresh, most recently seen first; the
    /// least recently seen is dropped (counted) when full.
    pub refresh_queue: usize,
    /// This crawler's slice of the keyspace in a fleet (`--shard I/N`, see
    /// `crate::shard`): its ids and walk stay in the slice, and it acquires only
    /// the infohashes of its slice (and those claimed from the shared queue);
    /// the others are offered (`Event::InfohashOffered`). `Shard::ALL` (the
    /// default) is one unsharded crawler.
    pub shard: Shard,
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
            given_up_for: Duration::from_secs(24 * 3600),
            given_up_capacity: 65_536,
            lookup_wait_queue: 1024,
            candidate_lookups: 16,
            candidate_retry: Some(Duration::from_secs(300)),
            neighbour_mode: false,
            refresh_pps: 32,
            refresh_lookup_queries: 16,
            refresh_lookups: 4,
            refresh_queue: 10_000,
            shard: Shard::ALL,
        }
    }
}

/// Whether a node supports BEP 51.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Bep51 {
    /// Not sampled yet.
    Unknown,
    /// It answered `sample_infohashes` with samples.
    Yes,
    /// It answered without samples, or with an error.
    No,
}

/// Crawl counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrawlStats {
    /// `sample_infohashes` queries sent.
    pub samples_sent: u64,
    /// Replies to them.
    pub sample_replies: u64,
    /// Infohashes in those replies.
    pub samples_received: u64,
    /// find_node exploration queries sent.
    pub explore_sent: u64,
    /// New infohashes first heard in an announce_peer to us.
    pub new_from_announce: u64,
    /// New infohashes first heard in a get_peers to us.
    pub new_from_get_peers: u64,
    /// New infohashes first heard in a sample.
    pub new_from_sample: u64,
    /// Infohashes heard again within the dedup window.
    pub duplicates: u64,
    /// Nodes in the node book.
    pub book_nodes: usize,
    /// Infohashes the sampled nodes say they store (sum of their BEP 51 `num`):
    /// how much there is to find among the nodes we know.
    pub stored_estimate: u64,
    /// Acquisitions running now (peer search or fetch).
    pub acquisitions_running: usize,
    /// Acquisitions waiting to start.
    pub acquisitions_queued: usize,
    /// Nodes not booked because the book was full.
    pub book_full_drops: u64,
    /// Nodes found to support BEP 51.
    pub bep51_yes: u64,
    /// Nodes found not to support BEP 51.
    pub bep51_no: u64,
    /// Addresses blacklisted after repeated timeouts.
    pub blacklisted: u64,
    /// Queries refused by the global packet budget.
    pub budget_refused: u64,
    /// Queries refused by the per-IP pace.
    pub per_ip_refused: u64,
    /// get_peers sent to the node that sampled an infohash.
    pub ask_source_sent: u64,
    /// Of those, the replies that held peers.
    pub ask_source_hits: u64,
    /// Acquisitions started.
    pub acquisitions_started: u64,
    /// `acquire` calls refused because the queue was full.
    pub acquisitions_queued_drop: u64,
    /// Acquisitions whose peer search found nobody.
    pub acquire_no_peers: u64,
    /// Acquisitions that fetched metadata.
    pub fetched: u64,
    /// Fetches that failed.
    pub fetch_failed: u64,
    /// Retries started after a backoff.
    pub retries: u64,
    /// Infohashes given up.
    pub given_up: u64,
    /// `acquire` calls ignored while the infohash waits out its backoff.
    pub retry_skips: u64,
    /// Infohashes of another shard's slice offered to the shared queue instead
    /// of acquired (`Event::InfohashOffered`).
    pub shard_offered: u64,
    /// Infohashes claimed from the shared queue and acquired
    /// (`Crawler::acquire_claimed`).
    pub shard_claimed: u64,
    /// Nodes outside this shard's slice kept out of the node book.
    pub shard_foreign_nodes: u64,
    /// get_peers candidates held back for [`CrawlConfig::candidate_grace`].
    pub candidates_deferred: u64,
    /// Of those, the ones whose announce arrived meanwhile (no peer search).
    pub candidates_announced: u64,
    /// get_peers candidates that a query with BEP 33 `noseed=1` (a seeder's
    /// own lookup) made evidence of a torrent.
    pub candidates_noseed: u64,
    /// Candidates whose peer search found nobody: given up at once (most are
    /// table-refresh targets, not torrents).
    pub candidates_dropped: u64,
    /// Stored torrents queued for a scrape refresh.
    pub refresh_queued: u64,
    /// Refreshes dropped: the queue was full (the least recently seen goes), or
    /// refreshing is off.
    pub refresh_dropped: u64,
    /// Refresh traversals started.
    pub refresh_started: u64,
    /// Refresh traversals finished.
    pub refresh_done: u64,
    /// Refreshes waiting now.
    pub refresh_waiting: usize,
    /// Candidates whose first peer search found nobody, searched once more
    /// later (see [`CrawlConfig::candidate_retry`]).
    pub candidates_retried: u64,
    /// Acquisitions started again at once because a new lead (a sampling node,
    /// an announced peer) came for an infohash the driver asked for that waited
    /// out a retry or was dropped as a candidate, or a sampling node for one
    /// that waited for a lookup slot or out its candidate grace.
    pub revived: u64,
    /// Peer searches that found every lookup slot busy and waited for one
    /// (instead of failing the acquisition).
    pub lookup_waits: u64,
    /// Of those, the ones refused because the wait queue was full
    /// ([`CrawlConfig::lookup_wait_queue`]) of searches with evidence: failed,
    /// retried with backoff.
    pub lookup_wait_drops: u64,
    /// Peer searches of get_peers candidates that found the wait queue full, or
    /// gave way in it to a search with evidence: failed, retried with backoff.
    pub lookup_wait_candidates_dropped: u64,
}
