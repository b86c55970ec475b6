//! Building worlds: honest DHT populations with their tables, crawlers, and the
//! helpers tests use (brute-force closest nodes, recall).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magnetar_core::bep42_node_id;
use magnetar_core::{Config, IdentityConfig, InfoHash, NodeId, Timestamp};

use crate::client::{Client, Held, SeedBehaviour};
use crate::crawler_node::{CrawlerNode, RuntimePolicy};
use crate::honest::{HonestNode, ANNOUNCE_TTL_SECS, K};
use crate::world::{Kind, Node, NodeIdx, World};

/// How a population of honest nodes is made.
#[derive(Clone, Debug)]
pub struct HonestSpec {
    pub count: usize,
    /// Share without BEP 51 (they answer sample_infohashes with error 204).
    pub no_bep51: f64,
    /// Share of read-only nodes (BEP 43).
    pub read_only: f64,
    /// Share behind a NAT (in others' tables but unreachable).
    pub unreachable: f64,
    /// BEP 51 interval, seconds.
    pub interval: u32,
}

impl HonestSpec {
    pub fn plain(count: usize) -> Self {
        HonestSpec {
            count,
            no_bep51: 0.0,
            read_only: 0.0,
            unreachable: 0.0,
            interval: 6 * 3600,
        }
    }
    /// Roughly today's mainline DHT mix.
    pub fn realistic(count: usize) -> Self {
        HonestSpec {
            count,
            no_bep51: 0.3,
            read_only: 0.05,
            unreachable: 0.15,
            interval: 6 * 3600,
        }
    }
}

impl World {
    /// Adds one honest node (not yet in anyone's table; see [`World::build_tables`]).
    pub fn add_honest(
        &mut self,
        bep51: bool,
        read_only: bool,
        nat: bool,
        interval: u32,
    ) -> NodeIdx {
        let ip = self.alloc_ip();
        let port = self.alloc_port();
        let id = bep42_node_id(IpAddr::V4(ip), &mut self.rng);
        let mut h = HonestNode::new(id, self.rng.next_u64());
        h.bep51 = bep51;
        h.read_only = read_only;
        h.interval = interval;
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let n = self.add_node(Node::Honest(h), Kind::Honest, &[(id, addr)]);
        let ep = self.endpoints(n)[0];
        self.net.eps[ep as usize].nat = nat;
        self.dir.entries[ep as usize].responsive = !read_only && !nat;
        if !read_only {
            self.dir.add_visible(id, ep);
        }
        if read_only {
            let t = Timestamp::from_secs(1 + self.rng.below(120));
            self.wake_node_at(n, t);
        }
        n
    }

    /// Adds a population of honest nodes; call [`World::build_tables`] after.
    pub fn add_honest_nodes(&mut self, spec: &HonestSpec) -> Vec<NodeIdx> {
        (0..spec.count)
            .map(|_| {
                let ro = self.rng.chance(spec.read_only);
                let nat = !ro && self.rng.chance(spec.unreachable);
                let bep51 = !self.rng.chance(spec.no_bep51);
                self.add_honest(bep51, ro, nat, spec.interval)
            })
            .collect()
    }

    /// Gives every honest node a converged BEP 5 table of visible nodes.
    pub fn build_tables(&mut self) {
        let mut eps = Vec::new();
        for n in 0..self.node_count() as NodeIdx {
            let Some(h) = self.get::<HonestNode>(n) else {
                continue;
            };
            let id = h.id;
            self.dir.random_table(&id, K, &mut self.rng, &mut eps);
            let dir = std::mem::take(&mut self.dir);
            if let Some(h) = self.get_mut::<HonestNode>(n) {
                h.set_table(&dir, &eps);
            }
            self.dir = dir;
        }
    }

    /// A joining honest node: gets a table and is learned by its closest nodes.
    pub fn join_honest(&mut self, spec: &HonestSpec) -> NodeIdx {
        let ro = self.rng.chance(spec.read_only);
        let nat = !ro && self.rng.chance(spec.unreachable);
        let bep51 = !self.rng.chance(spec.no_bep51);
        let n = self.add_honest(bep51, ro, nat, spec.interval);
        let ep = self.endpoints(n)[0];
        let id = self.dir.get(ep).id;
        let mut eps = Vec::new();
        self.dir.random_table(&id, K, &mut self.rng, &mut eps);
        let dir = std::mem::take(&mut self.dir);
        if let Some(h) = self.get_mut::<HonestNode>(n) {
            h.set_table(&dir, &eps);
        }
        if !ro {
            let mut near = Vec::new();
            dir.closest(
                &id.0,
                2 * K,
                &|e| e.alive && e.kind == Kind::Honest,
                &mut near,
            );
            for m in near {
                let mn = dir.get(m).node;
                if let Some(h) = self.get_mut::<HonestNode>(mn) {
                    h.learn(&dir, id, ep);
                }
            }
        }
        self.dir = dir;
        self.stats.joins += 1;
        n
    }

    /// Adds a crawler with `identities` UDP identities, made as `magnetar crawl`
    /// makes them: all on one address (each its own port), no external address
    /// configured, ids from core's identity logic (`IdentityConfig::for_sockets`,
    /// `Config::fill_node_ids`): random until the vote on the replies' `ip` fields
    /// settles, then BEP 42 ids for the address. `tune` adjusts the config.
    pub fn add_crawler(
        &mut self,
        identities: usize,
        policy: RuntimePolicy,
        tune: impl FnOnce(&mut Config),
    ) -> NodeIdx {
        let ip = self.alloc_ip();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        while addrs.len() < identities.max(1) {
            let a = SocketAddr::new(IpAddr::V4(ip), self.alloc_port());
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let mut cfg = Config::new(self.rng.next_u64(), addrs[0]);
        cfg.identities = IdentityConfig::for_sockets(&addrs, &[], &[]);
        cfg.fill_node_ids();
        tune(&mut cfg);
        let node = CrawlerNode::new(cfg, self.now(), policy);
        let eps: Vec<(NodeId, SocketAddr)> = node
            .crawler
            .identities()
            .iter()
            .map(|i| (i.id, i.bind))
            .collect();
        let n = self.add_node(Node::Dyn(Box::new(node)), Kind::Crawler, &eps);
        for &ep in &self.endpoints(n).to_vec() {
            let id = self.dir.get(ep).id;
            self.dir.add_visible(id, ep);
        }
        n
    }

    pub fn crawler(&self, n: NodeIdx) -> &CrawlerNode {
        self.get::<CrawlerNode>(n).expect("a crawler")
    }
    pub fn crawler_mut(&mut self, n: NodeIdx) -> &mut CrawlerNode {
        self.get_mut::<CrawlerNode>(n).expect("a crawler")
    }

    /// Calls a crawler's API at the current time and drains its outputs.
    pub fn crawler_call<R>(
        &mut self,
        n: NodeIdx,
        f: impl FnOnce(&mut magnetar_core::Crawler, Timestamp) -> R,
    ) -> R {
        self.with_node::<CrawlerNode, R>(n, |c, ctx| c.call(ctx, f))
    }

    /// Bootstraps a crawler from `routers` random responsive honest nodes.
    pub fn bootstrap_crawler(&mut self, n: NodeIdx, routers: usize) {
        let mut cands: Vec<SocketAddr> = self
            .dir
            .entries
            .iter()
            .filter(|e| e.responsive && e.kind == Kind::Honest)
            .map(|e| e.addr)
            .collect();
        self.rng.shuffle(&mut cands);
        cands.truncate(routers);
        self.crawler_call(n, |c, now| c.bootstrap(now, &cands));
    }

    /// Brute force over the whole world: the `n` responsive DHT nodes closest to
    /// `target` (honest nodes only), closest first.
    pub fn true_closest(&self, target: &[u8; 20], n: usize) -> Vec<(NodeId, SocketAddr)> {
        let mut all: Vec<_> = self
            .dir
            .entries
            .iter()
            .filter(|e| e.responsive && e.kind == Kind::Honest)
            .map(|e| (e.id.distance(target), e.id, e.addr))
            .collect();
        all.sort_unstable();
        all.into_iter().take(n).map(|(_, i, a)| (i, a)).collect()
    }

    /// Recall: the share of the world's torrents in `found`.
    pub fn recall<'a>(&self, found: impl IntoIterator<Item = &'a InfoHash>) -> f64 {
        if self.truth.is_empty() {
            return 0.0;
        }
        let n = found
            .into_iter()
            .filter(|ih| self.truth.find(ih).is_some())
            .count();
        n as f64 / self.truth.len() as f64
    }
}

impl World {
    /// Adds `n` BitTorrent clients; `behaviour(i)` picks how client `i` serves.
    pub fn add_clients(
        &mut self,
        n: usize,
        behaviour: impl Fn(usize) -> SeedBehaviour,
        announce_every: Duration,
    ) -> Vec<NodeIdx> {
        (0..n)
            .map(|i| {
                let ip = self.alloc_ip();
                let port = self.alloc_port();
                let id = bep42_node_id(IpAddr::V4(ip), &mut self.rng);
                let c = Client::new(id, behaviour(i), announce_every);
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                let node = self.add_node(Node::Dyn(Box::new(c)), Kind::Client, &[(id, addr)]);
                let ep = self.endpoints(node)[0];
                self.dir.entries[ep as usize].responsive = false;
                let start = self.rng.below(announce_every.as_nanos() as u64 + 1);
                self.wake_node_at(node, Timestamp::from_nanos(start));
                node
            })
            .collect()
    }

    /// Creates `n` torrents, each held by `holders` random clients of `clients`.
    /// With `preload`, the 8 closest responsive honest nodes already store each
    /// announce at time 0 (as in a DHT that has been running for a while).
    pub fn add_torrents(
        &mut self,
        n: usize,
        pieces: impl Fn(&mut magnetar_core::Rng) -> u32,
        holders: usize,
        clients: &[NodeIdx],
        preload: bool,
    ) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        let mut near = Vec::new();
        for _ in 0..n {
            let p = pieces(&mut self.rng);
            let t = self.truth.add_torrent(&mut self.rng, p);
            let (ih, seed) = {
                let tor = &self.truth.torrents[t as usize];
                (tor.ih, tor.seed)
            };
            if preload {
                self.dir.closest(
                    &ih.0,
                    K,
                    &|e| e.responsive && e.kind == Kind::Honest,
                    &mut near,
                );
            }
            for _ in 0..holders.min(clients.len()) {
                let c = clients[self.rng.index(clients.len())];
                if self.truth.torrents[t as usize].holders.contains(&c) {
                    continue;
                }
                self.truth.torrents[t as usize].holders.push(c);
                let addr = self.addr_of(c);
                if let Some(cl) = self.get_mut::<Client>(c) {
                    cl.torrents.push(Held {
                        ih,
                        seed,
                        pieces: p,
                    });
                }
                for &ep in &near {
                    let exp = 1 + self.rng.below(ANNOUNCE_TTL_SECS as u64) as u32;
                    let node = self.dir.get(ep).node;
                    if let Some(h) = self.get_mut::<HonestNode>(node) {
                        h.store(ih, addr, exp);
                    }
                }
            }
            out.push(t);
        }
        out
    }
}

impl World {
    /// Adds a node of kind `kind` running `node` at a fresh address.
    pub fn add_simple<T: crate::world::SimNode>(
        &mut self,
        kind: Kind,
        make: impl FnOnce(NodeId, SocketAddr) -> T,
    ) -> NodeIdx {
        let ip = self.alloc_ip();
        let port = self.alloc_port();
        let id = bep42_node_id(IpAddr::V4(ip), &mut self.rng);
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let n = make(id, addr);
        let node = self.add_node(Node::Dyn(Box::new(n)), kind, &[(id, addr)]);
        let ep = self.endpoints(node)[0];
        self.dir.entries[ep as usize].responsive = false;
        node
    }
}

impl World {
    /// Churn: every `every` (± 50 %), one random live honest node leaves and a new
    /// one joins.
    pub fn start_churn(&mut self, spec: HonestSpec, every: Duration) {
        let first = self.now().add(every);
        self.add_hook(
            first,
            Box::new(move |w: &mut World, id: u32| {
                let honest: Vec<NodeIdx> = (0..w.node_count() as NodeIdx)
                    .filter(|&n| w.get::<HonestNode>(n).is_some())
                    .collect();
                if !honest.is_empty() {
                    let victim = honest[w.rng.index(honest.len())];
                    w.kill(victim);
                }
                w.join_honest(&spec);
                let half = every.as_nanos() as u64 / 2;
                let next = w
                    .now()
                    .add(every / 2)
                    .add(Duration::from_nanos(w.rng.below(2 * half + 1)));
                w.schedule_hook(id, next);
            }),
        );
    }
}
