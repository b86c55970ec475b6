//! A magnetar [`Crawler`] as a node of the world, driven the way a runtime drives
//! it: every input is handed over, the outputs are drained until `Timeout`/`Idle`,
//! and events drive the next steps (get_peers for discovered infohashes, metadata
//! fetches for found peers), with a "known already?" set standing in for storage.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::{
    ApiMisuse, CloseReason, Config, ConnId, Crawler, DiscoverySource, Event, InfoHash, Input,
    NodeId, Output, SocketId, Timestamp,
};

use crate::util::{FxMap, FxSet};
use crate::world::{Ctx, SimNode, TcpId};

/// Who turns a discovered infohash into peers and metadata.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The runtime calls `Crawler::acquire` for each new infohash (core's crawl
    /// strategy asks the sampling node, then traverses, then fetches).
    Core,
    /// The harness itself runs `get_peers` and then `fetch_metadata`.
    Harness,
}

/// What the harness runtime does with the crawler's events.
#[derive(Clone, Debug)]
pub struct RuntimePolicy {
    pub acquire: Acquire,
    /// Start a get_peers lookup for every newly discovered infohash without peers.
    pub lookup_discovered: bool,
    /// Fetch metadata when peers are known (announce or `PeersFound`).
    pub fetch: bool,
    /// Keep every event in `CrawlerNode::events` (tests); off for big runs.
    pub record: bool,
    /// Every so often, a find_node lookup for a random target (spreads our
    /// identities through other nodes' tables).
    pub explore_every: Option<Duration>,
    /// Cap on queued lookups and fetches waiting for a free slot.
    pub max_pending: usize,
}

impl Default for RuntimePolicy {
    fn default() -> Self {
        RuntimePolicy {
            acquire: Acquire::Core,
            lookup_discovered: true,
            fetch: true,
            record: true,
            explore_every: None,
            max_pending: 10_000,
        }
    }
}

/// What the runtime saw, for recall and success figures.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// First time each infohash was discovered: heard in a BEP 51 sample or an
    /// announce, or heard in a get_peers query and then confirmed by peers or
    /// metadata (a get_peers target alone may be table-refresh noise).
    pub discovered: FxMap<InfoHash, Timestamp>,
    /// Infohashes heard only in get_peers queries, not yet confirmed.
    pub candidates: FxMap<InfoHash, Timestamp>,
    /// Confirmed infohashes by how they were first heard: sample, announce,
    /// get_peers.
    pub by_source: [u64; 3],
    pub fetched: FxMap<InfoHash, Timestamp>,
    pub failed: FxSet<InfoHash>,
    pub fetch_started: u64,
    pub fetch_rejected: u64,
    pub lookups_started: u64,
    pub lookups_rejected: u64,
    pub peers_found: u64,
    pub pending_dropped: u64,
    /// `Timeout(t)` with `t <= now` (see `TIMER_RESOLUTION`).
    pub immediate_timeouts: u64,
}

/// The granularity of the harness's timers.
pub const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

pub struct CrawlerNode {
    pub crawler: Crawler,
    pub policy: RuntimePolicy,
    pub events: Vec<Event>,
    pub tally: Tally,
    conns: BTreeMap<ConnId, TcpId>,
    looked_up: FxSet<InfoHash>,
    fetching: FxSet<InfoHash>,
    pending_lookups: VecDeque<InfoHash>,
    pending_fetches: VecDeque<(InfoHash, Vec<SocketAddr>)>,
    next_explore: Option<Timestamp>,
}

impl CrawlerNode {
    pub fn new(cfg: Config, now: Timestamp, policy: RuntimePolicy) -> Self {
        CrawlerNode {
            crawler: Crawler::new(cfg, now),
            next_explore: policy.explore_every.map(|d| now.add(d)),
            policy,
            events: Vec::new(),
            tally: Tally::default(),
            conns: BTreeMap::new(),
            looked_up: FxSet::default(),
            fetching: FxSet::default(),
            pending_lookups: VecDeque::new(),
            pending_fetches: VecDeque::new(),
        }
    }

    /// Calls the crawler's API, then drains its outputs into the world.
    pub fn call<R>(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(&mut Crawler, Timestamp) -> R,
    ) -> R {
        let r = f(&mut self.crawler, ctx.now);
        self.drain(ctx);
        r
    }

    /// Takes the recorded events.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn open_conns(&self) -> usize {
        self.conns.len()
    }

    fn drain(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            match self.crawler.poll_output() {
                Output::Transmit { local, to, payload } => ctx.send(local.0, to, payload),
                Output::Connect { conn, to } => {
                    let tcp = ctx.connect(0, conn.to_usize() as u64, to);
                    self.conns.insert(conn, tcp);
                }
                Output::Send { conn, bytes } => {
                    if let Some(&tcp) = self.conns.get(&conn) {
                        ctx.tcp_send(tcp, bytes);
                    }
                }
                Output::Close { conn } => {
                    if let Some(tcp) = self.conns.remove(&conn) {
                        ctx.tcp_close(tcp);
                    }
                }
                Output::Event(e) => self.on_event(ctx.now, e),
                Output::Timeout(t) => {
                    if self.run_pending(ctx.now) {
                        continue;
                    }
                    let mut t = match self.next_explore {
                        Some(x) => t.min(x),
                        None => t,
                    };
                    if t <= ctx.now {
                        // Timers have a resolution (mio rounds up to 1 ms): a
                        // deadline of "now" wakes us a tick later, not in a spin.
                        self.tally.immediate_timeouts += 1;
                        t = ctx.now.add(TIMER_RESOLUTION);
                    }
                    ctx.wake_at(t);
                    break;
                }
                Output::Idle => {
                    if self.run_pending(ctx.now) {
                        continue;
                    }
                    if let Some(x) = self.next_explore {
                        ctx.wake_at(x);
                    }
                    break;
                }
            }
        }
    }

    /// Starts queued work that fits now; true if anything was started.
    fn run_pending(&mut self, now: Timestamp) -> bool {
        let mut started = false;
        if self.next_explore.is_some_and(|t| now >= t) {
            self.next_explore = self.policy.explore_every.map(|d| now.add(d));
            let mut r = magnetar_core::rng::Rng::new(now.as_nanos() ^ 0x5eed);
            let target = NodeId::random(&mut r);
            started |= self.crawler.find_node(now, SocketId(0), target).is_ok();
        }
        while let Some(ih) = self.pending_lookups.front().copied() {
            let r = match self.policy.acquire {
                Acquire::Core => self.crawler.acquire(now, ih),
                Acquire::Harness => self.crawler.get_peers(now, ih, false).map(|_| ()),
            };
            match r {
                Ok(_) => {
                    self.pending_lookups.pop_front();
                    self.tally.lookups_started += 1;
                    started = true;
                }
                Err(_) => break,
            }
        }
        while let Some((ih, peers)) = self.pending_fetches.pop_front() {
            match self.crawler.fetch_metadata(now, ih, &peers) {
                Ok(()) => {
                    self.tally.fetch_started += 1;
                    started = true;
                }
                Err(ApiMisuse::Full) => {
                    self.pending_fetches.push_front((ih, peers));
                    break;
                }
                Err(_) => {
                    self.tally.fetch_rejected += 1;
                    self.fetching.remove(&ih);
                }
            }
        }
        started
    }

    fn want_lookup(&mut self, now: Timestamp, ih: InfoHash) {
        if !self.policy.lookup_discovered || !self.looked_up.insert(ih) {
            return;
        }
        if self.fetching.contains(&ih) || self.tally.fetched.contains_key(&ih) {
            return;
        }
        if self.policy.acquire == Acquire::Core {
            match self.crawler.acquire(now, ih) {
                Ok(()) => self.tally.lookups_started += 1,
                Err(_) => {
                    self.tally.lookups_rejected += 1;
                    if self.pending_lookups.len() < self.policy.max_pending {
                        self.pending_lookups.push_back(ih);
                    } else {
                        self.tally.pending_dropped += 1;
                    }
                }
            }
            return;
        }
        match self.crawler.get_peers(now, ih, false) {
            Ok(_) => self.tally.lookups_started += 1,
            Err(_) => {
                self.tally.lookups_rejected += 1;
                if self.pending_lookups.len() < self.policy.max_pending {
                    self.pending_lookups.push_back(ih);
                } else {
                    self.tally.pending_dropped += 1;
                }
            }
        }
    }

    fn want_fetch(&mut self, now: Timestamp, ih: InfoHash, peers: Vec<SocketAddr>) {
        if !self.policy.fetch || peers.is_empty() || self.tally.fetched.contains_key(&ih) {
            return;
        }
        self.fetching.insert(ih);
        match self.crawler.fetch_metadata(now, ih, &peers) {
            Ok(()) => self.tally.fetch_started += 1,
            Err(ApiMisuse::Full) => {
                if self.pending_fetches.len() < self.policy.max_pending {
                    self.pending_fetches.push_back((ih, peers));
                } else {
                    self.tally.pending_dropped += 1;
                }
            }
            Err(_) => self.tally.fetch_rejected += 1,
        }
    }

    /// Counts `ih` as discovered (first time only). `source` is how it was heard
    /// when that is not a get_peers query; `None` promotes a candidate.
    fn confirm(&mut self, now: Timestamp, ih: InfoHash, source: Option<DiscoverySource>) {
        if self.tally.discovered.contains_key(&ih) {
            return;
        }
        let (at, slot) = match (source, self.tally.candidates.remove(&ih)) {
            (Some(DiscoverySource::Sample), _) => (now, 0),
            (Some(DiscoverySource::Announce), _) => (now, 1),
            (_, Some(t)) => (t.max(now), 2),
            (Some(DiscoverySource::GetPeers), None) | (None, None) => return,
        };
        self.tally.by_source[slot] += 1;
        self.tally.discovered.insert(ih, at);
    }

    fn on_event(&mut self, now: Timestamp, e: Event) {
        match &e {
            Event::InfohashDiscovered {
                info_hash,
                source,
                peer,
                ..
            } => {
                if *source == DiscoverySource::GetPeers {
                    if !self.tally.discovered.contains_key(info_hash) {
                        self.tally.candidates.entry(*info_hash).or_insert(now);
                    }
                } else {
                    self.confirm(now, *info_hash, Some(*source));
                }
                match (self.policy.acquire, source, peer) {
                    (Acquire::Harness, DiscoverySource::Announce, Some(p)) => {
                        self.want_fetch(now, *info_hash, vec![*p])
                    }
                    _ => self.want_lookup(now, *info_hash),
                }
            }
            Event::PeersFound {
                info_hash, peers, ..
            } => {
                self.tally.peers_found += 1;
                if !peers.is_empty() {
                    self.confirm(now, *info_hash, None);
                }
                if self.policy.acquire == Acquire::Harness {
                    self.want_fetch(now, *info_hash, peers.clone());
                }
            }
            Event::MetadataFetched(m) => {
                self.confirm(now, m.info_hash, None);
                self.tally.fetched.entry(m.info_hash).or_insert(now);
                self.fetching.remove(&m.info_hash);
            }
            Event::MetadataFailed(m) => {
                self.tally.failed.insert(m.info_hash);
                self.fetching.remove(&m.info_hash);
            }
            _ => {}
        }
        if self.policy.record {
            self.events.push(e);
        }
    }

    fn input(&mut self, ctx: &mut Ctx<'_>, input: Input<'_>) {
        self.crawler.handle_input(input);
        self.drain(ctx);
    }
}

impl SimNode for CrawlerNode {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, local: u16, from: SocketAddr, bytes: &[u8]) {
        let at = ctx.now;
        self.input(
            ctx,
            Input::Datagram {
                at,
                local: SocketId(local),
                from,
                bytes,
            },
        );
    }
    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let at = ctx.now;
        self.input(ctx, Input::Timeout(at));
    }
    fn on_tcp_connected(&mut self, ctx: &mut Ctx<'_>, _tcp: TcpId, tag: u64) {
        let at = ctx.now;
        let conn = ConnId::from_usize(tag as usize);
        self.input(ctx, Input::TcpConnected { at, conn });
    }
    fn on_tcp_data(&mut self, ctx: &mut Ctx<'_>, _tcp: TcpId, tag: u64, bytes: &[u8]) {
        let at = ctx.now;
        let conn = ConnId::from_usize(tag as usize);
        self.input(ctx, Input::TcpData { at, conn, bytes });
    }
    fn on_tcp_closed(&mut self, ctx: &mut Ctx<'_>, _tcp: TcpId, tag: u64, reason: CloseReason) {
        let at = ctx.now;
        let conn = ConnId::from_usize(tag as usize);
        self.conns.remove(&conn);
        self.input(ctx, Input::TcpClosed { at, conn, reason });
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
