//! Long-run ("a day without drift") sampling: new torrents arriving over time,
//! and an hourly snapshot of a magnetar crawler's heap, rates and bounded tables.
//! Used by the `sim` binary's `--hourly` report and by the soak test.
//!
//! The heap figures come from [`crate::alloc_meter`] and mean something only
//! where [`crate::alloc_meter::Meter`] is the global allocator.

use std::time::Duration;

use magnetar_core::{TableSize, Timestamp};

use crate::alloc_meter;
use crate::client::{Client, Held, SeedBehaviour};
use crate::{HonestSpec, NetConfig, NodeIdx, World};

/// The `sim` binary's world: `nodes` honest nodes (realistic mix) churning (one
/// leaves and one joins every 2 s on average), `clients` BitTorrent clients (one
/// in 20 has no listener, one is slow, one rejects), already announcing, holding
/// `infohashes` torrents (2 holders each, preloaded into the DHT), and
/// `arrivals_per_hour` new torrents arriving over time ([`start_arrivals`]).
pub fn churning_world(
    seed: u64,
    nodes: usize,
    infohashes: usize,
    clients: usize,
    arrivals_per_hour: u32,
) -> World {
    let spec = HonestSpec::realistic(nodes);
    churning_world_with(seed, &spec, infohashes, clients, arrivals_per_hour)
}

/// [`churning_world`] with the honest nodes (and the churn's newcomers) drawn
/// from `spec` (e.g. a larger share of silent nodes, `unreachable`).
pub fn churning_world_with(
    seed: u64,
    spec: &HonestSpec,
    infohashes: usize,
    clients: usize,
    arrivals_per_hour: u32,
) -> World {
    let mut w = World::new(seed, NetConfig::default());
    w.add_honest_nodes(spec);
    w.build_tables();
    let cl = w.add_clients(
        clients,
        |i| match i % 20 {
            0 => SeedBehaviour::NoListener,
            1 => SeedBehaviour::Slow,
            2 => SeedBehaviour::Reject,
            _ => SeedBehaviour::Honest,
        },
        Duration::from_secs(1800),
    );
    // A world in steady state: every client is already announcing, so each
    // torrent's next announce by each holder falls in the next 30 minutes
    // (`add_clients` would hold a client back for up to a whole round).
    for &c in &cl {
        let t = Timestamp::from_nanos(w.rng.below(20_000_000_000));
        w.wake_node_at(c, t);
    }
    w.add_torrents(infohashes, |r| 1 + r.below(4) as u32, 2, &cl, true);
    let churn = HonestSpec {
        count: 0,
        ..spec.clone()
    };
    w.start_churn(churn, Duration::from_secs(2));
    start_arrivals(&mut w, cl, arrivals_per_hour, 2);
    w
}

/// New torrents keep appearing: `per_hour` of them, spread evenly, each given to
/// `holders` random clients of `clients`, which announce it on their next turn
/// (within one announce round). Returns nothing; the torrents go into the truth.
pub fn start_arrivals(w: &mut World, clients: Vec<NodeIdx>, per_hour: u32, holders: usize) {
    if per_hour == 0 || clients.is_empty() {
        return;
    }
    let every = Duration::from_secs(3600) / per_hour;
    let first = w.now().add(every);
    w.add_hook(
        first,
        Box::new(move |w: &mut World, id: u32| {
            let pieces = 1 + w.rng.below(4) as u32;
            let t = w.truth.add_torrent(&mut w.rng, pieces);
            let (ih, seed) = {
                let tor = &w.truth.torrents[t as usize];
                (tor.ih, tor.seed)
            };
            for _ in 0..holders.min(clients.len()) {
                let c = clients[w.rng.index(clients.len())];
                if w.truth.torrents[t as usize].holders.contains(&c) {
                    continue;
                }
                w.truth.torrents[t as usize].holders.push(c);
                if let Some(cl) = w.get_mut::<Client>(c) {
                    cl.torrents.push(Held { ih, seed, pieces });
                }
            }
            let next = w.now().add(every);
            w.schedule_hook(id, next);
        }),
    );
}

/// One hour of a magnetar crawler's run.
#[derive(Clone, Debug)]
pub struct Hour {
    /// Hours since the start (1 = the end of the first hour).
    pub hour: u32,
    /// Live heap charged to the crawler node at the end of the hour (metered).
    pub live: i64,
    /// The highest live heap during the hour.
    pub peak: i64,
    /// Of `live`, the harness's own growing maps standing in for storage (the
    /// tally's discovered, fetched, candidate, failed and searched-empty sets):
    /// not the crawler's. Metered ([`alloc_meter::storage`]), not estimated:
    /// an estimate from the maps' usable capacities missed the eighth of
    /// hashbrown's buckets kept free, and each doubling of a map moved that
    /// share into the crawler's figure.
    pub harness: i64,
    /// Infohashes of the world first discovered in this hour.
    pub discovered: u64,
    /// Metadata fetched in this hour.
    pub fetched: u64,
    /// Datagrams the crawler sent in this hour.
    pub sent: u64,
    /// Torrents in the world at the end of the hour (arrivals included).
    pub torrents: usize,
    /// The crawler's own counters over the hour (what its datagrams were, and
    /// what it gave up).
    pub counts: Counts,
    /// Every bounded table of the crawler at the end of the hour.
    pub tables: Vec<TableSize>,
}

impl Hour {
    /// The crawler's own heap: the live heap less the harness's storage stand-in.
    pub fn crawler_heap(&self) -> i64 {
        self.live - self.harness
    }
}

/// Counters of the crawler over one hour.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// get_peers queries that came to it.
    pub get_peers_in: u64,
    /// announce_peer queries that came to it.
    pub announces_in: u64,
    /// Replies (and errors) it sent to queries.
    pub replies_out: u64,
    /// Queries it sent.
    pub queries_out: u64,
    /// Infohashes given up after failed acquisitions (candidates included).
    pub given_up: u64,
    /// get_peers candidates given up after an empty peer search.
    pub candidates_dropped: u64,
    /// Candidate peer searches retried (not given up at the first empty one).
    pub candidates_retried: u64,
}

impl Counts {
    fn of(s: &magnetar_core::Stats) -> Self {
        let q = &s.dht.queries_out;
        Counts {
            get_peers_in: s.dht.queries_in.get_peers,
            announces_in: s.dht.queries_in.announce_peer,
            replies_out: s.dht.responses_out + s.dht.errors_out,
            queries_out: q.ping
                + q.find_node
                + q.get_peers
                + q.announce_peer
                + q.sample_infohashes
                + q.other,
            given_up: s.crawl.given_up,
            candidates_dropped: s.crawl.candidates_dropped,
            candidates_retried: s.crawl.candidates_retried,
        }
    }

    fn minus(self, o: Counts) -> Counts {
        Counts {
            get_peers_in: self.get_peers_in - o.get_peers_in,
            announces_in: self.announces_in - o.announces_in,
            replies_out: self.replies_out - o.replies_out,
            queries_out: self.queries_out - o.queries_out,
            given_up: self.given_up - o.given_up,
            candidates_dropped: self.candidates_dropped - o.candidates_dropped,
            candidates_retried: self.candidates_retried - o.candidates_retried,
        }
    }
}

/// Samples a crawler node hour by hour.
pub struct Sampler {
    node: NodeIdx,
    counts: Counts,
    discovered: u64,
    fetched: u64,
    sent: u64,
    /// The rows so far.
    pub hours: Vec<Hour>,
}

impl Sampler {
    /// Starts sampling the crawler `node` (call at the start of the run).
    pub fn new(w: &World, node: NodeIdx) -> Self {
        let mut s = Sampler {
            node,
            counts: Counts::of(&w.crawler(node).crawler.stats()),
            discovered: 0,
            fetched: 0,
            sent: 0,
            hours: Vec::new(),
        };
        let (d, f, x) = s.totals(w);
        (s.discovered, s.fetched, s.sent) = (d, f, x);
        s
    }

    fn totals(&self, w: &World) -> (u64, u64, u64) {
        let cn = w.crawler(self.node);
        let d = cn
            .tally
            .discovered
            .keys()
            .filter(|ih| w.truth.find(ih).is_some())
            .count() as u64;
        let f = cn.crawler.stats().fetch.fetched;
        let x = w
            .endpoints(self.node)
            .iter()
            .map(|&ep| w.net.eps[ep as usize].sent)
            .sum();
        (d, f, x)
    }

    /// Runs the world to the end of hour `hour` (from the start at time zero) and
    /// records it.
    pub fn run_hour(&mut self, w: &mut World, hour: u32) -> &Hour {
        alloc_meter::reset_peak();
        let end = Timestamp::ZERO.add(Duration::from_secs(3600 * hour as u64));
        w.run_until(end, u64::MAX).expect("unbounded");
        self.record(w, hour)
    }

    /// Records the hour that ends now.
    pub fn record(&mut self, w: &World, hour: u32) -> &Hour {
        let (d, f, x) = self.totals(w);
        let cn = w.crawler(self.node);
        let counts = Counts::of(&cn.crawler.stats());
        let harness = alloc_meter::storage();
        self.hours.push(Hour {
            hour,
            live: alloc_meter::live(),
            peak: alloc_meter::peak(),
            harness,
            discovered: d - self.discovered,
            fetched: f - self.fetched,
            sent: x - self.sent,
            torrents: w.truth.len(),
            counts: counts.minus(self.counts),
            tables: cn.crawler.table_sizes(),
        });
        (self.discovered, self.fetched, self.sent) = (d, f, x);
        self.counts = counts;
        self.hours.last().expect("just pushed")
    }

    /// Each table's largest size over the run, with its bound, in the crawler's
    /// order.
    pub fn table_maxima(&self) -> Vec<TableSize> {
        let mut out: Vec<TableSize> = Vec::new();
        for h in &self.hours {
            for t in &h.tables {
                match out
                    .iter_mut()
                    .find(|o| o.name == t.name && o.bound == t.bound)
                {
                    Some(o) => o.len = o.len.max(t.len),
                    None => out.push(*t),
                }
            }
        }
        out
    }
}
