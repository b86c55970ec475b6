//! BitTorrent clients: they hold torrents, announce them the way libtorrent does,
//! and serve metadata over the TCP model with a chosen behaviour.
//!
//! Announcing: every torrent is re-announced about every `announce_every`
//! (30 min in the benchmark: libtorrent's `dht_announce_interval` is 15 min, and
//! its torrents re-announce on tracker-style cadences of 15–30 min; the turns are
//! spread over the torrents, ±25 % jitter). Each announce is a real iterative
//! get_peers traversal from the client's own routing table (alpha 3, k 8, as
//! libtorrent), collecting tokens, then announce_peer to the 8 closest nodes that
//! answered. Nodes learn of crawlers only by traversing, so a crawler placed in
//! other nodes' tables (identities, neighbour mode) hears these queries.
//!
//! Table refresh: about once a minute a get_peers for a random id in one of the
//! table's buckets goes to one node of that bucket (libtorrent's
//! `send_single_refresh`): infohash-shaped noise that is not a torrent.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind, Response};
use magnetar_core::{CloseReason, Distance, InfoHash, NodeId, Timestamp};

use crate::truth::info_dict;
use crate::util::FxMap;
use crate::world::{Ctx, Kind, SimNode, TcpId};

/// How a client serves metadata.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeedBehaviour {
    Honest,
    /// Answers, but slowly (each message delayed by seconds).
    Slow,
    /// Announces a wrong `metadata_size`.
    LyingSize,
    /// Sends pieces with flipped bytes.
    CorruptPiece,
    /// Rejects every piece request.
    Reject,
    /// Closes the connection in the middle of the transfer.
    DisconnectMidTransfer,
    /// Its extension handshake has no `ut_metadata`.
    NoUtMetadata,
    /// Does not accept connections at all.
    NoListener,
}

impl SeedBehaviour {
    pub const ALL: [SeedBehaviour; 8] = [
        SeedBehaviour::Honest,
        SeedBehaviour::Slow,
        SeedBehaviour::LyingSize,
        SeedBehaviour::CorruptPiece,
        SeedBehaviour::Reject,
        SeedBehaviour::DisconnectMidTransfer,
        SeedBehaviour::NoUtMetadata,
        SeedBehaviour::NoListener,
    ];
}

/// One held torrent.
#[derive(Clone, Debug)]
pub struct Held {
    pub ih: InfoHash,
    pub seed: u64,
    pub pieces: u32,
}

impl Held {
    pub fn info_dict(&self) -> Vec<u8> {
        info_dict(self.seed, self.pieces)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    pub announces_sent: u64,
    pub tokens_received: u64,
    pub connections: u64,
    pub metadata_served: u64,
    /// get_peers traversals run for announces.
    pub traversals: u64,
    /// Queries sent by those traversals.
    pub traversal_queries: u64,
    /// Traversal queries that timed out.
    pub traversal_timeouts: u64,
    /// Table-refresh get_peers queries for random targets (not torrents).
    pub refresh_queries: u64,
}

/// Traversal parallelism (libtorrent's `search_branching` is 3 in practice, and
/// BEP 5's alpha).
pub const ALPHA: usize = 3;
/// Bucket size and the number of nodes a torrent is announced to.
pub const K: usize = 8;
/// A traversal gives up on a node after this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Candidates a traversal keeps (libtorrent keeps about 100; the closest few
/// dozen are all a converging traversal ever asks).
const MAX_CANDIDATES: usize = 48;
/// Queries one traversal may send (a bound; a traversal in a 10,000-node world
/// converges in about 20).
const MAX_TRAVERSAL_QUERIES: u32 = 64;
/// Traversals one client runs at once (more announces wait for the next turn).
const MAX_TRAVERSALS: usize = 4;
/// Mean pause between table-refresh queries. libtorrent's tick refreshes a
/// bucket that saw no traffic for 15 minutes with one get_peers for a random
/// id in that bucket, sent to one of its nodes: with a dozen buckets, about one
/// such query a minute. Jittered ±50 %.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum St {
    New,
    Sent(Timestamp),
    Answered,
    Failed,
}

#[derive(Clone, Debug)]
struct Cand {
    dist: Distance,
    addr: SocketAddr,
    st: St,
    token: Option<Vec<u8>>,
}

/// One iterative get_peers traversal towards a torrent's infohash.
#[derive(Clone, Debug)]
struct Traversal {
    tag: u16,
    /// Index of the torrent in `torrents`.
    slot: usize,
    target: InfoHash,
    /// Sorted by distance to `target`.
    cands: Vec<Cand>,
    queries: u32,
}

impl Traversal {
    fn add(&mut self, id: NodeId, addr: SocketAddr) {
        if self.cands.iter().any(|c| c.addr == addr) {
            return;
        }
        let dist = id.distance(&self.target.0);
        let pos = self.cands.partition_point(|c| c.dist <= dist);
        if pos >= MAX_CANDIDATES {
            return;
        }
        self.cands.insert(
            pos,
            Cand {
                dist,
                addr,
                st: St::New,
                token: None,
            },
        );
        // Drop the farthest candidate that was never asked.
        if self.cands.len() > MAX_CANDIDATES {
            if let Some(i) = self.cands.iter().rposition(|c| c.st == St::New) {
                self.cands.remove(i);
            } else {
                self.cands.pop();
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.cands
            .iter()
            .filter(|c| matches!(c.st, St::Sent(_)))
            .count()
    }

    /// The earliest query deadline.
    fn deadline(&self) -> Option<Timestamp> {
        self.cands
            .iter()
            .filter_map(|c| match c.st {
                St::Sent(t) => Some(t.add(QUERY_TIMEOUT)),
                _ => None,
            })
            .min()
    }
}

pub struct Client {
    pub id: NodeId,
    pub behaviour: SeedBehaviour,
    pub torrents: Vec<Held>,
    pub announce_every: Duration,
    /// Table-refresh cadence (`None`: no refresh noise).
    pub refresh_every: Option<Duration>,
    next: usize,
    next_announce: Option<Timestamp>,
    next_refresh: Option<Timestamp>,
    /// Routing knowledge: (id, address, bucket), at most `K` per bucket. Filled
    /// at the first wake with a long-running node's view of the honest nodes,
    /// then from the nodes that answer us; a node that times out is dropped.
    table: Vec<(NodeId, SocketAddr, u8)>,
    table_ready: bool,
    traversals: Vec<Traversal>,
    next_tag: u16,
    /// Outstanding refresh queries: (address, sent at).
    refreshing: Vec<(SocketAddr, Timestamp)>,
    /// Open serving sessions.
    sessions: FxMap<TcpId, crate::seeder::Serving>,
    pub stats: ClientStats,
}

fn bucket_of(own: &NodeId, id: &NodeId) -> u8 {
    own.distance(&id.0).leading_zeros().min(159) as u8
}

impl Client {
    pub fn new(id: NodeId, behaviour: SeedBehaviour, announce_every: Duration) -> Self {
        Client {
            id,
            behaviour,
            torrents: Vec::new(),
            announce_every,
            refresh_every: Some(REFRESH_EVERY),
            next: 0,
            next_announce: None,
            next_refresh: None,
            table: Vec::new(),
            table_ready: false,
            traversals: Vec::new(),
            next_tag: 0,
            refreshing: Vec::new(),
            sessions: FxMap::default(),
            stats: ClientStats::default(),
        }
    }

    /// Contacts in the routing table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    fn query(&self, tid: &[u8], kind: QueryKind<'_>) -> Vec<u8> {
        let m = Message {
            tid,
            version: Some(b"UT\x03\x05"),
            ip: None,
            read_only: true,
            body: Body::Query(Query {
                id: self.id,
                want: None,
                kind,
            }),
        };
        let mut buf = Vec::with_capacity(128);
        krpc::encode(&m, &mut buf);
        buf
    }

    fn init_table(&mut self, ctx: &mut Ctx<'_>) {
        if self.table_ready {
            return;
        }
        self.table_ready = true;
        let mut eps = Vec::new();
        ctx.dir.random_table(&self.id, K, ctx.rng, &mut eps);
        for ep in eps {
            let e = ctx.dir.get(ep);
            // A client that has been running for a while knows answering honest
            // nodes; crawlers start with the simulation and must earn their place.
            if e.kind == Kind::Honest && e.responsive {
                let (id, addr) = (e.id, e.addr);
                self.learn(id, addr);
            }
        }
    }

    /// Adds a node that answered us, if its bucket has room.
    fn learn(&mut self, id: NodeId, addr: SocketAddr) {
        if id == self.id {
            return;
        }
        if let Some(e) = self.table.iter_mut().find(|e| e.1 == addr) {
            e.0 = id;
            e.2 = bucket_of(&self.id, &id);
            return;
        }
        let b = bucket_of(&self.id, &id);
        if self.table.iter().filter(|e| e.2 == b).count() < K {
            self.table.push((id, addr, b));
        }
    }

    fn forget(&mut self, addr: &SocketAddr) {
        self.table.retain(|e| e.1 != *addr);
    }

    /// Starts a get_peers traversal for the next torrent, from the table.
    fn announce_next(&mut self, ctx: &mut Ctx<'_>) {
        if self.torrents.is_empty() || self.traversals.len() >= MAX_TRAVERSALS {
            return;
        }
        let slot = self.next % self.torrents.len();
        self.next += 1;
        let target = self.torrents[slot].ih;
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut t = Traversal {
            tag: self.next_tag,
            slot,
            target,
            cands: Vec::new(),
            queries: 0,
        };
        // Seed with the table's closest (libtorrent starts from 2k of them).
        let mut near: Vec<(Distance, NodeId, SocketAddr)> = self
            .table
            .iter()
            .map(|e| (e.0.distance(&target.0), e.0, e.1))
            .collect();
        near.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        for (_, id, addr) in near.into_iter().take(2 * K) {
            t.add(id, addr);
        }
        self.stats.traversals += 1;
        self.traversals.push(t);
        let i = self.traversals.len() - 1;
        self.pump(ctx, i);
    }

    /// Sends queries of traversal `i` up to `ALPHA` in flight; finishes it when
    /// nothing is in flight. Returns false when the traversal ended.
    fn pump(&mut self, ctx: &mut Ctx<'_>, i: usize) -> bool {
        let id = self.id;
        let Some(t) = self.traversals.get_mut(i) else {
            return false;
        };
        let mut in_flight = t.in_flight();
        let mut answered = 0;
        let mut sends = Vec::new();
        for c in t.cands.iter_mut() {
            if answered >= K || in_flight >= ALPHA || t.queries >= MAX_TRAVERSAL_QUERIES {
                break;
            }
            match c.st {
                St::Answered => answered += 1,
                St::Failed | St::Sent(_) => {}
                St::New => {
                    c.st = St::Sent(ctx.now);
                    in_flight += 1;
                    t.queries += 1;
                    sends.push(c.addr);
                }
            }
        }
        let (tag, target) = (t.tag, t.target);
        for to in sends {
            let mut tid = [0u8; 4];
            tid[..2].copy_from_slice(&tag.to_be_bytes());
            tid[2..].copy_from_slice(&ctx.rng.bytes::<2>());
            let q = Client::query_with(
                id,
                &tid,
                QueryKind::GetPeers {
                    info_hash: target,
                    scrape: false,
                    noseed: false,
                },
            );
            self.stats.traversal_queries += 1;
            ctx.send(0, to, q);
        }
        if in_flight > 0 {
            return true;
        }
        let t = self.traversals.swap_remove(i);
        self.finish(ctx, t);
        false
    }

    fn query_with(id: NodeId, tid: &[u8], kind: QueryKind<'_>) -> Vec<u8> {
        let m = Message {
            tid,
            version: Some(b"UT\x03\x05"),
            ip: None,
            read_only: true,
            body: Body::Query(Query {
                id,
                want: None,
                kind,
            }),
        };
        let mut buf = Vec::with_capacity(128);
        krpc::encode(&m, &mut buf);
        buf
    }

    /// announce_peer to the `K` closest nodes that answered with a token.
    fn finish(&mut self, ctx: &mut Ctx<'_>, t: Traversal) {
        let Some(held) = self.torrents.get(t.slot) else {
            return;
        };
        let ih = held.ih;
        let port = ctx.addr(0).port();
        for c in t
            .cands
            .iter()
            .filter(|c| c.st == St::Answered && c.token.is_some())
            .take(K)
        {
            let Some(token) = c.token.as_deref() else {
                continue;
            };
            let q = self.query(
                b"an",
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port,
                    implied_port: false,
                    token,
                    seed: Some(true),
                },
            );
            self.stats.announces_sent += 1;
            ctx.send(0, c.addr, q);
        }
    }

    /// Times out traversal queries and refresh queries that are overdue.
    fn expire(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut dead = Vec::new();
        for t in self.traversals.iter_mut() {
            for c in t.cands.iter_mut() {
                if let St::Sent(at) = c.st {
                    if at.add(QUERY_TIMEOUT) <= now {
                        c.st = St::Failed;
                        dead.push(c.addr);
                    }
                }
            }
        }
        self.stats.traversal_timeouts += dead.len() as u64;
        self.refreshing.retain(|(a, at)| {
            let over = at.add(QUERY_TIMEOUT) <= now;
            if over {
                dead.push(*a);
            }
            !over
        });
        for a in &dead {
            self.forget(a);
        }
        let mut i = self.traversals.len();
        while i > 0 {
            i -= 1;
            self.pump(ctx, i);
        }
    }

    /// One table-refresh query: get_peers for a random id in a random bucket's
    /// range, to one node of that bucket (noise a crawler must not store).
    fn refresh(&mut self, ctx: &mut Ctx<'_>) {
        if self.table.is_empty() || self.refreshing.len() >= 4 {
            return;
        }
        let (_, addr, b) = self.table[ctx.rng.index(self.table.len())];
        let mut target = NodeId::random(ctx.rng);
        // Share the first `b` bits with our id, differ at bit `b`.
        let b = b as usize;
        for bit in 0..=b.min(159) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let mine = self.id.0[byte] & mask;
            let want = if bit == b { mine ^ mask } else { mine };
            target.0[byte] = (target.0[byte] & !mask) | want;
        }
        let q = self.query(
            b"rf",
            QueryKind::GetPeers {
                info_hash: target.into(),
                scrape: false,
                noseed: false,
            },
        );
        self.stats.refresh_queries += 1;
        self.refreshing.push((addr, ctx.now));
        ctx.send(0, addr, q);
    }

    fn pause(&self, ctx: &mut Ctx<'_>) -> Duration {
        let n = self.torrents.len().max(1) as u32;
        let base = self.announce_every / n;
        // ±25 % jitter.
        let j = base.as_nanos() as u64 / 2;
        base - Duration::from_nanos(j / 2) + Duration::from_nanos(ctx.rng.below(j + 1))
    }

    fn refresh_pause(&self, ctx: &mut Ctx<'_>) -> Option<Duration> {
        let base = self.refresh_every?;
        // ±50 % jitter.
        let n = base.as_nanos() as u64;
        Some(Duration::from_nanos(n / 2 + ctx.rng.below(n + 1)))
    }

    /// The next time anything of ours is due.
    fn next_wake(&self, ctx: &Ctx<'_>) -> Timestamp {
        let mut t = self.next_announce.unwrap_or(ctx.now);
        if let Some(r) = self.next_refresh {
            t = t.min(r);
        }
        for tr in &self.traversals {
            if let Some(d) = tr.deadline() {
                t = t.min(d);
            }
        }
        for (_, at) in &self.refreshing {
            t = t.min(at.add(QUERY_TIMEOUT));
        }
        for s in self.sessions.values() {
            if let Some(r) = s.next_release() {
                t = t.min(r);
            }
        }
        t
    }

    fn on_reply(&mut self, ctx: &mut Ctx<'_>, from: SocketAddr, tid: &[u8], r: &Response<'_>) {
        if tid == b"rf" {
            if let Some(i) = self.refreshing.iter().position(|(a, _)| *a == from) {
                self.refreshing.swap_remove(i);
                self.learn(r.id, from);
            }
            return;
        }
        let Ok(tag) = <[u8; 2]>::try_from(tid.get(..2).unwrap_or_default()) else {
            return;
        };
        let tag = u16::from_be_bytes(tag);
        let Some(i) = self.traversals.iter().position(|t| t.tag == tag) else {
            return;
        };
        let t = &mut self.traversals[i];
        let Some(c) = t
            .cands
            .iter_mut()
            .find(|c| c.addr == from && matches!(c.st, St::Sent(_)))
        else {
            return;
        };
        c.st = St::Answered;
        if let Some(tok) = r.token {
            c.token = Some(tok.to_vec());
            self.stats.tokens_received += 1;
        }
        if let Some(nodes) = r.nodes {
            for (id, addr) in nodes.iter() {
                t.add(id, addr);
            }
        }
        self.learn(r.id, from);
        self.pump(ctx, i);
    }
}

impl SimNode for Client {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, _local: u16, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = krpc::decode(bytes) else {
            return;
        };
        match &msg.body {
            Body::Response(r) => self.on_reply(ctx, from, msg.tid, r),
            Body::Error(_) => {
                if msg.tid == b"rf" {
                    self.refreshing.retain(|(a, _)| *a != from);
                }
            }
            Body::Query(_) => {}
        }
        let t = self.next_wake(ctx);
        ctx.wake_at(t);
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        self.init_table(ctx);
        crate::seeder::wake_sessions(&mut self.sessions, ctx);
        self.expire(ctx);
        if self.next_announce.is_none_or(|t| t <= ctx.now) {
            self.announce_next(ctx);
            let p = self.pause(ctx);
            self.next_announce = Some(ctx.now.add(p));
        }
        match self.next_refresh {
            None => {
                self.next_refresh = self.refresh_pause(ctx).map(|p| ctx.now.add(p));
            }
            Some(t) if t <= ctx.now => {
                self.refresh(ctx);
                self.next_refresh = self.refresh_pause(ctx).map(|p| ctx.now.add(p));
            }
            Some(_) => {}
        }
        let t = self.next_wake(ctx);
        ctx.wake_at(t);
    }

    fn accepts_tcp(&self) -> bool {
        self.behaviour != SeedBehaviour::NoListener
    }

    fn on_tcp_accepted(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId) {
        self.stats.connections += 1;
        let s = crate::seeder::Serving::new(self.behaviour, ctx.rng.next_u64());
        self.sessions.insert(tcp, s);
    }

    fn on_tcp_data(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId, _tag: u64, bytes: &[u8]) {
        let torrents = &self.torrents;
        if let Some(s) = self.sessions.get_mut(&tcp) {
            let done = s.on_data(ctx, tcp, bytes, |ih| {
                torrents.iter().find(|t| t.ih == *ih).map(|t| t.info_dict())
            });
            if done {
                self.stats.metadata_served += 1;
            }
        }
        // A slow session's release must not cancel the other timers.
        let t = self.next_wake(ctx);
        ctx.wake_at(t);
    }

    fn on_tcp_closed(&mut self, _ctx: &mut Ctx<'_>, tcp: TcpId, _tag: u64, _r: CloseReason) {
        self.sessions.remove(&tcp);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
