//! A magnetar [`Crawler`] as a node of the world, driven the way a runtime drives
//! it: through the driver pump ([`Pump`]) the mio and tokio runtimes use, so the
//! drain/dispatch loop and the acquire policy are theirs. What is left here is the
//! simulator's side: the world as the pump's [`Io`], a "known already?" set
//! standing in for storage, the tally of what the runtime saw, and the baseline
//! models' harness mode (get_peers and fetches started by the harness itself).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use magnetar_core::pump::{AcquirePolicy, Connect, Decision, Io, Pump, Transmit};
use magnetar_core::{
    ApiMisuse, CloseReason, Config, ConnId, Crawler, DiscoverySource, Event, InfoHash, Input,
    NodeId, SocketId, Timestamp,
};

use crate::alloc_meter::as_storage;
use crate::util::{FxMap, FxSet};
use crate::world::{Ctx, SimNode, TcpId};

/// The acquire policy the runtimes run (the pump's, for [`RuntimePolicy::on_full`]
/// `None`).
pub const PRODUCTION_POLICY: AcquirePolicy = AcquirePolicy::PRODUCTION;

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
    /// What the pump does when `Crawler::acquire` refuses an infohash
    /// ([`Acquire::Core`]); `None`: the runtimes' policy, [`PRODUCTION_POLICY`].
    pub on_full: Option<AcquirePolicy>,
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
            on_full: None,
        }
    }
}

/// What the runtime saw, for recall and success figures. Its maps stand in for
/// storage: what they allocate is metered apart from the crawler's heap
/// ([`as_storage`]), so every insert into them goes through it.
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
    /// Infohashes whose peer search (a `PeersFound`) came back empty, with
    /// the first time it did (for the sim's account of lost arrivals).
    pub searched_empty: FxMap<InfoHash, Timestamp>,
    pub fetch_started: u64,
    pub fetch_rejected: u64,
    /// Lookups started and refused by the harness ([`Acquire::Harness`]; with
    /// [`Acquire::Core`] the pump's counters tell).
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
    /// The crawler inside the pump (`Deref`s to the [`Crawler`] for inspection).
    pub crawler: Pump,
    pub policy: RuntimePolicy,
    pub events: Vec<Event>,
    pub tally: Tally,
    side: Side,
}

/// The harness's own bookkeeping.
#[derive(Default)]
struct Side {
    conns: BTreeMap<ConnId, TcpId>,
    looked_up: FxSet<InfoHash>,
    fetching: FxSet<InfoHash>,
    /// Lookups the harness starts itself ([`Acquire::Harness`]).
    pending_lookups: VecDeque<InfoHash>,
    pending_fetches: VecDeque<(InfoHash, Vec<SocketAddr>)>,
    next_explore: Option<Timestamp>,
}

/// The world as the pump's runtime.
struct World<'a, 'c> {
    ctx: &'a mut Ctx<'c>,
    policy: &'a RuntimePolicy,
    events: &'a mut Vec<Event>,
    tally: &'a mut Tally,
    side: &'a mut Side,
}

impl CrawlerNode {
    pub fn new(cfg: Config, now: Timestamp, policy: RuntimePolicy) -> Self {
        let on_full = policy.on_full.unwrap_or(PRODUCTION_POLICY);
        CrawlerNode {
            crawler: Pump::new(Crawler::new(cfg, now), on_full, usize::MAX),
            side: Side {
                next_explore: policy.explore_every.map(|d| now.add(d)),
                ..Side::default()
            },
            policy,
            events: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Calls the crawler's API, then drains its outputs into the world.
    pub fn call<R>(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(&mut Crawler, Timestamp) -> R,
    ) -> R {
        let (pump, mut w) = self.split(ctx);
        let r = pump.call(&mut w, f);
        w.park(pump.deadline());
        r
    }

    /// Takes the recorded events.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn open_conns(&self) -> usize {
        self.side.conns.len()
    }

    fn split<'a, 'c>(&'a mut self, ctx: &'a mut Ctx<'c>) -> (&'a mut Pump, World<'a, 'c>) {
        (
            &mut self.crawler,
            World {
                ctx,
                policy: &self.policy,
                events: &mut self.events,
                tally: &mut self.tally,
                side: &mut self.side,
            },
        )
    }

    fn input(&mut self, ctx: &mut Ctx<'_>, input: Input<'_>) {
        let (pump, mut w) = self.split(ctx);
        let deadline = pump.input(&mut w, input);
        w.park(deadline);
    }
}

impl World<'_, '_> {
    /// Sets the wakeup after a drain.
    fn park(&mut self, deadline: Option<Timestamp>) {
        let now = self.ctx.now;
        match deadline {
            Some(t) => {
                let mut t = match self.side.next_explore {
                    Some(x) => t.min(x),
                    None => t,
                };
                if t <= now {
                    // Timers have a resolution (mio rounds up to 1 ms): a
                    // deadline of "now" wakes us a tick later, not in a spin.
                    self.tally.immediate_timeouts += 1;
                    t = now.add(TIMER_RESOLUTION);
                }
                self.ctx.wake_at(t);
            }
            None => {
                if let Some(x) = self.side.next_explore {
                    self.ctx.wake_at(x);
                }
            }
        }
    }

    fn want_lookup(&mut self, crawler: &mut Crawler, ih: InfoHash) -> Decision {
        let now = self.ctx.now;
        if !self.policy.lookup_discovered {
            return Decision::Nothing;
        }
        if self.policy.acquire == Acquire::Core {
            // As the runtimes do: every discovery that storage (here the
            // fetched set) does not have is acquired, under the pump's acquire
            // policy; core's strategy tells repeats, retries and give-ups
            // apart. (This harness used to ask only once per infohash, in a
            // set that grew with every infohash heard and was counted as the
            // crawler's heap.)
            if self.tally.fetched.contains_key(&ih) {
                return Decision::Nothing;
            }
            return Decision::Acquire;
        }
        if !self.side.looked_up.insert(ih) {
            return Decision::Nothing;
        }
        if self.side.fetching.contains(&ih) || self.tally.fetched.contains_key(&ih) {
            return Decision::Nothing;
        }
        match crawler.get_peers(now, ih, false) {
            Ok(_) => self.tally.lookups_started += 1,
            Err(_) => {
                self.tally.lookups_rejected += 1;
                if self.side.pending_lookups.len() < self.policy.max_pending {
                    self.side.pending_lookups.push_back(ih);
                } else {
                    self.tally.pending_dropped += 1;
                }
            }
        }
        Decision::Nothing
    }

    fn want_fetch(&mut self, crawler: &mut Crawler, ih: InfoHash, peers: Vec<SocketAddr>) {
        let now = self.ctx.now;
        if !self.policy.fetch || peers.is_empty() || self.tally.fetched.contains_key(&ih) {
            return;
        }
        self.side.fetching.insert(ih);
        match crawler.fetch_metadata(now, ih, &peers) {
            Ok(()) => self.tally.fetch_started += 1,
            Err(ApiMisuse::Full) => {
                if self.side.pending_fetches.len() < self.policy.max_pending {
                    self.side.pending_fetches.push_back((ih, peers));
                } else {
                    self.tally.pending_dropped += 1;
                }
            }
            Err(_) => self.tally.fetch_rejected += 1,
        }
    }

    /// Counts `ih` as discovered (first time only). `source` is how it was heard
    /// when that is not a get_peers query; `None` promotes a candidate.
    fn confirm(&mut self, ih: InfoHash, source: Option<DiscoverySource>) {
        let now = self.ctx.now;
        if self.tally.discovered.contains_key(&ih) {
            return;
        }
        let (at, slot) = match (source, self.tally.candidates.remove(&ih)) {
            (Some(DiscoverySource::Sample), _) => (now, 0),
            (Some(DiscoverySource::Announce), _) => (now, 1),
            (_, Some(t)) => (t.max(now), 2),
            // A get_peers query alone (or a source this tally does not know).
            (_, None) => return,
        };
        self.tally.by_source[slot] += 1;
        as_storage(|| self.tally.discovered.insert(ih, at));
    }
}

impl Io for World<'_, '_> {
    fn now(&mut self) -> Timestamp {
        self.ctx.now
    }
    fn transmit(&mut self, local: SocketId, to: SocketAddr, payload: Bytes) -> Transmit {
        self.ctx.send(local.0, to, payload);
        Transmit::Sent
    }
    fn connect(&mut self, conn: ConnId, to: SocketAddr) -> Connect {
        let tcp = self.ctx.connect(0, conn.to_usize() as u64, to);
        self.side.conns.insert(conn, tcp);
        Connect::Started
    }
    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        if let Some(&tcp) = self.side.conns.get(&conn) {
            self.ctx.tcp_send(tcp, bytes);
        }
    }
    fn close(&mut self, conn: ConnId) {
        if let Some(tcp) = self.side.conns.remove(&conn) {
            self.ctx.tcp_close(tcp);
        }
    }
    fn open_conns(&self) -> usize {
        self.side.conns.len()
    }

    fn event(&mut self, crawler: &mut Crawler, e: Event) -> Decision {
        let now = self.ctx.now;
        let mut d = Decision::Nothing;
        match &e {
            Event::InfohashDiscovered {
                info_hash,
                source,
                peer,
                ..
            } => {
                if *source == DiscoverySource::GetPeers {
                    if !self.tally.discovered.contains_key(info_hash) {
                        as_storage(|| {
                            self.tally.candidates.entry(*info_hash).or_insert(now);
                        });
                    }
                } else {
                    self.confirm(*info_hash, Some(*source));
                }
                match (self.policy.acquire, source, peer) {
                    (Acquire::Harness, DiscoverySource::Announce, Some(p)) => {
                        self.want_fetch(crawler, *info_hash, vec![*p])
                    }
                    _ => d = self.want_lookup(crawler, *info_hash),
                }
            }
            Event::PeersFound {
                info_hash, peers, ..
            } => {
                self.tally.peers_found += 1;
                if !peers.is_empty() {
                    self.confirm(*info_hash, None);
                } else {
                    as_storage(|| {
                        self.tally.searched_empty.entry(*info_hash).or_insert(now);
                    });
                }
                if self.policy.acquire == Acquire::Harness {
                    self.want_fetch(crawler, *info_hash, peers.clone());
                }
            }
            Event::MetadataFetched(m) => {
                self.confirm(m.info_hash, None);
                as_storage(|| {
                    self.tally.fetched.entry(m.info_hash).or_insert(now);
                });
                self.side.fetching.remove(&m.info_hash);
            }
            Event::MetadataFailed(m) => {
                as_storage(|| self.tally.failed.insert(m.info_hash));
                self.side.fetching.remove(&m.info_hash);
            }
            _ => {}
        }
        if self.policy.record {
            self.events.push(e);
        }
        d
    }

    /// Starts the harness's queued work that fits now (the pump retries its own
    /// queued acquisitions after this); true if anything was started.
    fn before_park(&mut self, crawler: &mut Crawler) -> bool {
        let now = self.ctx.now;
        let mut started = false;
        if self.side.next_explore.is_some_and(|t| now >= t) {
            self.side.next_explore = self.policy.explore_every.map(|d| now.add(d));
            let mut r = magnetar_core::Rng::new(now.as_nanos() ^ 0x5eed);
            let target = NodeId::random(&mut r);
            started |= crawler.find_node(now, SocketId(0), target).is_ok();
        }
        while let Some(ih) = self.side.pending_lookups.front().copied() {
            match crawler.get_peers(now, ih, false) {
                Ok(_) => {
                    self.side.pending_lookups.pop_front();
                    self.tally.lookups_started += 1;
                    started = true;
                }
                Err(_) => break,
            }
        }
        while let Some((ih, peers)) = self.side.pending_fetches.pop_front() {
            match crawler.fetch_metadata(now, ih, &peers) {
                Ok(()) => {
                    self.tally.fetch_started += 1;
                    started = true;
                }
                Err(ApiMisuse::Full) => {
                    self.side.pending_fetches.push_front((ih, peers));
                    break;
                }
                Err(_) => {
                    self.tally.fetch_rejected += 1;
                    self.side.fetching.remove(&ih);
                }
            }
        }
        started
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
        self.side.conns.remove(&conn);
        self.input(ctx, Input::TcpClosed { at, conn, reason });
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
