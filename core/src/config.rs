//! Crawler configuration: [`Config`] (seed, identities, address filter) and the
//! settings of its parts: [`DhtConfig`] (the DHT node of BEP 5, 32, 33, 42, 43 and
//! 51: timeouts, caps, tokens, rate limits, lookups, bootstrap), plus the routing,
//! strategy and fetcher configs defined next to their machines
//! ([`RoutingConfig`], [`CrawlConfig`], [`FetchConfig`]). Every table and queue the
//! crawler keeps has its cap here or there. The starting defaults are listed in
//! `ARCHITECTURE.md` (section "Starting defaults").

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::crawl::CrawlConfig;
use crate::fetch::FetchConfig;
use crate::id::NodeId;
use crate::routing::RoutingConfig;

/// One UDP identity: a socket and the node ID it speaks with.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The address the driver bound (its family selects the routing table).
    pub bind: SocketAddr,
    /// The node ID to start with; otherwise one is drawn from the seed (BEP
    /// 42-shaped when `external_ip` is known, random otherwise).
    pub node_id: Option<NodeId>,
    /// Our external IP, when known (configured), for a BEP 42 node ID. When it is
    /// `None`, the replies' BEP 42 `ip` fields are voted on, and when the vote
    /// settles on an address `node_id` is not valid for, the identity switches to a
    /// BEP 42 id for it (`Event::IdentityChanged`).
    pub external_ip: Option<IpAddr>,
}

impl IdentityConfig {
    /// The identities `magnetar crawl` runs (and the simulator's crawler, so that
    /// its figures describe what users run): one per bound socket, in order. Each
    /// reuses `saved[i]` (the id an earlier run kept for it) unless an external
    /// address of its family is configured and the saved id is not BEP 42-valid for
    /// it. An identity of a family with a configured external address gets a BEP 42
    /// id for it and keeps it (the vote does not move it); the others start with
    /// their saved id or a random one and take a BEP 42 id when the vote on our
    /// external address settles on an address their id does not match.
    pub fn for_sockets(
        binds: &[SocketAddr],
        external: &[IpAddr],
        saved: &[Option<NodeId>],
    ) -> Vec<IdentityConfig> {
        binds
            .iter()
            .enumerate()
            .map(|(i, &bind)| {
                let ext = external
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv6() == bind.is_ipv6());
                let node_id = saved
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|id| ext.is_none_or(|ip| crate::id::bep42_verify(id, ip)));
                IdentityConfig {
                    bind,
                    node_id,
                    external_ip: ext,
                }
            })
            .collect()
    }
}

/// DHT node settings. Defaults: see `ARCHITECTURE.md`, "Starting defaults".
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Routing table settings (k, bucket rules, timeouts), one table per identity.
    pub routing: RoutingConfig,
    /// Short timeout: a lookup may widen past a silent node.
    pub short_timeout: Duration,
    /// Full timeout: the query failed and counts against the node.
    pub full_timeout: Duration,
    /// Cap on live transactions (within `short_timeout`), shared by all
    /// identities (one transaction table for the whole crawler). A query that
    /// finds it full is not sent (counted in `DhtStats::dropped_tx_full`). Past
    /// the short timeout a transaction frees its slot and waits, still matched,
    /// in a late table of up to `late_factor` × this many until `full_timeout`.
    pub max_transactions: usize,
    /// Size of the late table as a multiple of `max_transactions` (default 4:
    /// at the default timeouts, queries to silent nodes may go out at about
    /// 2,000 a second). 0 keeps every transaction in its slot until its full
    /// timeout (the behaviour before the late table, for comparisons).
    pub late_factor: usize,
    /// Token secret rotation period (a token lives up to two periods).
    pub token_rotation: Duration,
    /// Answers per remote IP per second before rate limiting.
    pub per_ip_answers_per_sec: u32,
    /// Remote IPs tracked by the rate limiter.
    pub rate_limit_table: usize,
    /// Infohashes in the announce store.
    pub max_stored_infohashes: usize,
    /// Peers kept per infohash in the announce store.
    pub max_peers_per_infohash: usize,
    /// How long an announced peer is kept.
    pub announce_ttl: Duration,
    /// BEP 51 `interval` we advertise, seconds.
    pub sample_interval: u32,
    /// BEP 51 samples per answer (at most, and at most what fits a datagram).
    pub max_samples: usize,
    /// Send BEP 43 `ro: 1` and answer no queries.
    pub read_only: bool,
    /// `v` to put in our messages, if any (none by default: low fingerprint).
    pub version: Option<Vec<u8>>,
    /// Lookup branch factor (queries in flight).
    pub lookup_alpha: usize,
    /// Re-sends to a silent lookup candidate (after each short timeout) before it fails.
    pub lookup_retries: u8,
    /// Cap on concurrent lookups, over all identities together. A lookup started
    /// beyond it is refused (counted in `DhtStats::dropped_lookups`; the API returns
    /// [`crate::ApiMisuse::Full`]).
    pub max_lookups: usize,
    /// Bootstrap succeeds when a table holds this many nodes.
    pub bootstrap_nodes: usize,
    /// First bootstrap retry delay (doubles up to `bootstrap_max_backoff`).
    pub bootstrap_backoff: Duration,
    /// Upper bound of the bootstrap retry delay.
    pub bootstrap_max_backoff: Duration,
    /// Answer with error 202 when rate limited (otherwise drop silently).
    pub rate_limit_error: bool,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            routing: RoutingConfig::default(),
            short_timeout: Duration::from_secs(1),
            full_timeout: Duration::from_secs(10),
            max_transactions: 4096,
            late_factor: crate::rpc::LATE_FACTOR,
            token_rotation: Duration::from_secs(5 * 60),
            per_ip_answers_per_sec: 10,
            rate_limit_table: 4096,
            max_stored_infohashes: 4096,
            max_peers_per_infohash: 100,
            announce_ttl: Duration::from_secs(30 * 60),
            sample_interval: 6 * 3600,
            max_samples: 20,
            read_only: false,
            version: None,
            lookup_alpha: 3,
            lookup_retries: 3,
            max_lookups: 64,
            bootstrap_nodes: 16,
            bootstrap_backoff: Duration::from_secs(5),
            bootstrap_max_backoff: Duration::from_secs(300),
            rate_limit_error: false,
        }
    }
}

/// Everything the crawler needs. `seed` feeds all of its randomness.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seeds every random choice of the crawler (node ids, tids, token secrets, lookup
    /// targets); the same seed and inputs give the same outputs.
    pub seed: u64,
    /// The UDP identities; [`crate::SocketId`]`(i)` is `identities[i]`.
    pub identities: Vec<IdentityConfig>,
    /// Allow sending to loopback and private addresses (tests, LANs).
    pub allow_private: bool,
    /// DHT node settings shared by every identity.
    pub dht: DhtConfig,
    /// The harvesting strategy (BEP 51 walk, exploration, packet budget, pacing).
    pub crawl: CrawlConfig,
    /// The metadata fetcher (connections, deadlines, size caps).
    pub fetch: FetchConfig,
    /// Trackers asked for peers when the DHT has none (empty: none asked).
    pub trackers: crate::tracker::TrackerConfig,
}

impl Config {
    /// One IPv4 identity bound to `bind`, with defaults.
    pub fn new(seed: u64, bind: SocketAddr) -> Self {
        Config {
            seed,
            identities: vec![IdentityConfig {
                bind,
                node_id: None,
                external_ip: None,
            }],
            allow_private: false,
            dht: DhtConfig::default(),
            crawl: CrawlConfig::default(),
            fetch: FetchConfig::default(),
            trackers: crate::tracker::TrackerConfig::default(),
        }
    }

    /// Draws the node id of every identity that has none, as [`crate::Crawler::new`]
    /// would (same seed, same stream), and writes it into `identities`, so that the
    /// application knows (and can keep) the ids before the crawler starts.
    pub fn fill_node_ids(&mut self) {
        let mut rng = crate::rng::Rng::new(self.seed).child(1);
        let ids = crate::identity::initial_ids(&self.identities, self.crawl.shard, &mut rng);
        for (ic, id) in self.identities.iter_mut().zip(ids) {
            ic.node_id = Some(id);
        }
    }

    /// A config for loopback tests: private addresses allowed, subnet rule off,
    /// no per-IP pacing (loopback peers often share one IP).
    pub fn loopback_test(seed: u64) -> Self {
        let mut c = Config::new(seed, SocketAddr::from(([127, 0, 0, 1], 0)));
        c.allow_private = true;
        c.dht.routing.one_per_subnet = false;
        c.crawl.per_ip_pps = 0;
        c
    }

    /// A plain, polite DHT node: no harvesting.
    pub fn plain_node(seed: u64, bind: SocketAddr) -> Self {
        let mut c = Config::new(seed, bind);
        c.crawl.enabled = false;
        c
    }
}
