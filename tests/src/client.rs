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
//!
//! Transports: a client serves on TCP (its listen port, the DHT port) and, when
//! [`Client::utp`] is set, on uTP streams accepted on its DHT socket by core's
//! own uTP manager (`magnetar_core::utp::Utp` with `accept_incoming`), as
//! libtorrent does: datagrams are told apart on their first byte. With
//! [`Client::tcp`] off it is uTP-only (libtorrent's `enable_incoming_tcp`
//! off). A client behind a NAT ([`crate::net::EndpointNet::nat`]) is reached
//! only by datagrams from endpoints it sent to lately; never by TCP.

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind, Response};
use magnetar_core::utp::{is_utp_first_byte, StreamId, Utp, UtpConfig, UtpEvent};
use magnetar_core::{CloseReason, Distance, InfoHash, NodeId, Rng, SocketId, Timestamp};

use crate::seeder::{Link, Serving};
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
    /// uTP datagrams received on the DHT socket (handled or ignored).
    pub utp_datagrams_in: u64,
    /// uTP streams accepted (serving sessions over uTP).
    pub utp_connections: u64,
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

/// An IPv4 endpoint packed as `ip << 16 | port`: ordered as `SocketAddr`
/// orders IPv4 addresses, compared in one instruction, and 8 bytes instead of
/// 32. The clients are IPv4 DHT nodes: BEP 5 `nodes` carry only IPv4 contacts,
/// and the world gives every node an IPv4 address.
type Peer = u64;

fn pack(a: &SocketAddr) -> Option<Peer> {
    match a {
        SocketAddr::V4(v) => Some((u32::from(*v.ip()) as u64) << 16 | v.port() as u64),
        SocketAddr::V6(_) => None,
    }
}

fn unpack(p: Peer) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from((p >> 16) as u32), p as u16))
}

/// Where `k` is in `keys`. Compares eight keys per step with one branch per
/// step instead of one per key: these scans run on every answer a client gets.
fn position(keys: &[Peer], k: Peer) -> Option<usize> {
    let mut chunks = keys.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(false, |hit, &x| hit | (x == k)) {
            return c.iter().position(|&x| x == k).map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == k)
        .map(|i| base + i)
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum St {
    New,
    Sent,
    Answered,
    Failed,
}

/// One iterative get_peers traversal towards a torrent's infohash.
///
/// What every answer and timer reads (the tag, the queries in flight with their
/// send times) fills one cache line; the candidates live behind a box. The
/// queries in flight (at most `ALPHA`) are listed apart, oldest first, so the
/// deadline and the timeouts need no scan of the candidates.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Traversal {
    /// Queries in flight, oldest first: (sent at, candidate).
    flight: [(Timestamp, Peer); ALPHA],
    c: Box<Cands>,
    queries: u32,
    tag: u16,
    flying: u8,
}

/// A traversal's candidates as parallel arrays, sorted by distance to `target`
/// and unique by address: an answer touches a few cache lines of them instead
/// of a vector of fat records, and inserting moves 29 bytes per candidate.
#[derive(Clone, Debug)]
struct Cands {
    /// Index of the torrent in `torrents`.
    slot: usize,
    target: InfoHash,
    /// Candidates `..len` of the three arrays below.
    len: usize,
    st: [St; MAX_CANDIDATES],
    peer: [Peer; MAX_CANDIDATES],
    dist: [Distance; MAX_CANDIDATES],
    /// Tokens of the candidates that answered with one: (candidate, range in
    /// `token_bytes`).
    tokens: Vec<(Peer, u32, u32)>,
    token_bytes: Vec<u8>,
}

impl Traversal {
    fn new(tag: u16, slot: usize, target: InfoHash) -> Self {
        Traversal {
            flight: [(Timestamp::default(), 0); ALPHA],
            c: Box::new(Cands {
                slot,
                target,
                len: 0,
                st: [St::New; MAX_CANDIDATES],
                peer: [0; MAX_CANDIDATES],
                dist: [Distance([0; 20]); MAX_CANDIDATES],
                tokens: Vec::new(),
                token_bytes: Vec::new(),
            }),
            queries: 0,
            tag,
            flying: 0,
        }
    }

    fn add(&mut self, id: NodeId, addr: SocketAddr) {
        let Some(peer) = pack(&addr) else {
            return;
        };
        let c = &mut *self.c;
        if position(&c.peer[..c.len], peer).is_some() {
            return;
        }
        let dist = id.distance(&c.target.0);
        let pos = c.dist[..c.len].partition_point(|d| *d <= dist);
        if pos >= MAX_CANDIDATES {
            return;
        }
        // Shift `pos..end` up by one. When full, the farthest candidate that was
        // never asked makes room; if that is the new one, nothing changes.
        let end = if c.len < MAX_CANDIDATES {
            c.len += 1;
            c.len - 1
        } else {
            match (pos..c.len).rev().find(|&i| c.st[i] == St::New) {
                Some(i) => i,
                None => return,
            }
        };
        c.dist.copy_within(pos..end, pos + 1);
        c.peer.copy_within(pos..end, pos + 1);
        c.st.copy_within(pos..end, pos + 1);
        c.dist[pos] = dist;
        c.peer[pos] = peer;
        c.st[pos] = St::New;
    }

    fn in_flight(&self) -> usize {
        self.flying as usize
    }

    /// The earliest query deadline.
    fn deadline(&self) -> Option<Timestamp> {
        self.flight[..self.in_flight()]
            .iter()
            .map(|f| f.0.add(QUERY_TIMEOUT))
            .min()
    }

    /// Marks candidate `i` asked at `now`.
    fn sent(&mut self, i: usize, now: Timestamp) {
        self.c.st[i] = St::Sent;
        self.flight[self.in_flight()] = (now, self.c.peer[i]);
        self.flying += 1;
        self.queries += 1;
    }

    /// Ends the query in flight to `peer` with `st`; its candidate's index.
    fn land(&mut self, peer: Peer, st: St) -> Option<usize> {
        let n = self.in_flight();
        let f = self.flight[..n].iter().position(|f| f.1 == peer)?;
        self.flight.copy_within(f + 1..n, f);
        self.flying -= 1;
        let c = &mut *self.c;
        let i = position(&c.peer[..c.len], peer)?;
        c.st[i] = st;
        Some(i)
    }

    fn token(&self, peer: Peer) -> Option<&[u8]> {
        let &(_, a, b) = self.c.tokens.iter().find(|t| t.0 == peer)?;
        self.c.token_bytes.get(a as usize..b as usize)
    }

    fn set_token(&mut self, peer: Peer, tok: &[u8]) {
        let c = &mut *self.c;
        let a = c.token_bytes.len() as u32;
        c.token_bytes.extend_from_slice(tok);
        c.tokens.push((peer, a, c.token_bytes.len() as u32));
    }
}

/// Routing knowledge: contacts in the order they were learned, as parallel
/// arrays, with a count per bucket and a Bloom filter of the addresses. Most
/// answers come from nodes we do not hold, in a full bucket: the filter's one
/// cache line settles those without scanning the addresses.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Table {
    /// Two bits per address held (rebuilt when one is forgotten).
    bloom: [u64; 8],
    peer: Vec<Peer>,
    id: Vec<NodeId>,
    bucket: Vec<u8>,
    per_bucket: [u16; 160],
}

impl Default for Table {
    fn default() -> Self {
        Table {
            bloom: [0; 8],
            peer: Vec::new(),
            id: Vec::new(),
            bucket: Vec::new(),
            per_bucket: [0; 160],
        }
    }
}

/// The two filter bits of an address.
fn bloom_bits(p: Peer) -> [usize; 2] {
    let h = p.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    [(h >> 55) as usize, (h >> 46) as usize & 511]
}

impl Table {
    fn len(&self) -> usize {
        self.peer.len()
    }

    fn may_hold(&self, p: Peer) -> bool {
        bloom_bits(p)
            .iter()
            .all(|&b| self.bloom[b / 64] & (1 << (b % 64)) != 0)
    }

    fn mark(&mut self, p: Peer) {
        for b in bloom_bits(p) {
            self.bloom[b / 64] |= 1 << (b % 64);
        }
    }

    fn position(&self, p: Peer) -> Option<usize> {
        if !self.may_hold(p) {
            return None;
        }
        position(&self.peer, p)
    }

    /// Adds a node that answered us, if its bucket has room (an address we
    /// know takes the new id).
    fn learn(&mut self, own: &NodeId, id: NodeId, addr: SocketAddr) {
        if id == *own {
            return;
        }
        let Some(p) = pack(&addr) else {
            return;
        };
        let b = bucket_of(own, &id);
        if let Some(i) = self.position(p) {
            self.per_bucket[self.bucket[i] as usize] -= 1;
            self.per_bucket[b as usize] += 1;
            self.id[i] = id;
            self.bucket[i] = b;
            return;
        }
        if (self.per_bucket[b as usize] as usize) < K {
            self.per_bucket[b as usize] += 1;
            self.peer.push(p);
            self.id.push(id);
            self.bucket.push(b);
            self.mark(p);
        }
    }

    /// [`Table::learn`], making room in a full bucket by forgetting the
    /// contact of that bucket learned last.
    fn learn_forced(&mut self, own: &NodeId, id: NodeId, addr: SocketAddr) {
        let b = bucket_of(own, &id);
        if (self.per_bucket[b as usize] as usize) >= K
            && pack(&addr).is_some_and(|p| self.position(p).is_none())
        {
            if let Some(i) = self.bucket.iter().rposition(|&x| x == b) {
                self.forget(self.peer[i]);
            }
        }
        self.learn(own, id, addr);
    }

    fn forget(&mut self, p: Peer) {
        if let Some(i) = self.position(p) {
            self.per_bucket[self.bucket[i] as usize] -= 1;
            self.peer.remove(i);
            self.id.remove(i);
            self.bucket.remove(i);
            self.bloom = [0; 8];
            for j in 0..self.peer.len() {
                self.mark(self.peer[j]);
            }
        }
    }

    /// The `2 K` contacts closest to `target`, closest first (ties by address).
    fn closest(&self, target: &InfoHash) -> ([(Distance, Peer, NodeId); 2 * K], usize) {
        let mut top = [(Distance([0; 20]), 0, NodeId::default()); 2 * K];
        let mut n = 0;
        for (id, &p) in self.id.iter().zip(&self.peer) {
            let e = (id.distance(&target.0), p, *id);
            if n == 2 * K && (e.0, e.1) >= (top[n - 1].0, top[n - 1].1) {
                continue;
            }
            let pos = top[..n].partition_point(|t| (t.0, t.1) < (e.0, e.1));
            let end = if n < 2 * K {
                n += 1;
                n - 1
            } else {
                n - 1
            };
            top.copy_within(pos..end, pos + 1);
            top[pos] = e;
        }
        (top, n)
    }
}

/// Fields in the order an answer reads them (`repr(C)`): the hot ones share a
/// few cache lines, and the settings behind them are read once per turn.
#[repr(C, align(64))]
pub struct Client {
    pub id: NodeId,
    next_tag: u16,
    table_ready: bool,
    traversals: Vec<Traversal>,
    next_announce: Option<Timestamp>,
    next_refresh: Option<Timestamp>,
    /// Outstanding refresh queries: (address, sent at).
    refreshing: Vec<(SocketAddr, Timestamp)>,
    /// Open serving sessions.
    sessions: FxMap<TcpId, crate::seeder::Serving>,
    pub stats: ClientStats,
    /// Routing knowledge, at most `K` per bucket. Filled at the first wake with
    /// a long-running node's view of the honest nodes, then from the nodes that
    /// answer us; a node that times out is dropped.
    table: Table,
    pub behaviour: SeedBehaviour,
    pub torrents: Vec<Held>,
    pub announce_every: Duration,
    /// Table-refresh cadence (`None`: no refresh noise).
    pub refresh_every: Option<Duration>,
    next: usize,
    /// Accepts TCP connections (unless `NoListener`). Default on.
    pub tcp: bool,
    /// Accepts uTP streams on its DHT socket (unless `NoListener`); off, uTP
    /// datagrams are ignored, as libtorrent with uTP off ignores them.
    /// Default off (the worlds of earlier runs had TCP-only clients).
    pub utp: bool,
    /// The uTP manager and its sessions, made at the first uTP datagram (most
    /// clients never see one).
    utp_side: Option<Box<UtpSide>>,
}

/// A client's uTP side: core's manager, accepting, and a serving session per
/// stream.
struct UtpSide {
    utp: Utp,
    sessions: FxMap<StreamId, Serving>,
    buf: Vec<u8>,
}

fn bucket_of(own: &NodeId, id: &NodeId) -> u8 {
    own.distance(&id.0).leading_zeros().min(159) as u8
}

/// Encodes a query from `id` into `out` (libtorrent's version, read-only as a
/// client behind NAT is).
fn encode_query(out: &mut Vec<u8>, id: NodeId, tid: &[u8], kind: QueryKind<'_>) {
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
    out.clear();
    krpc::encode(&m, out);
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
            table: Table::default(),
            table_ready: false,
            traversals: Vec::new(),
            next_tag: 0,
            refreshing: Vec::new(),
            sessions: FxMap::default(),
            stats: ClientStats::default(),
            tcp: true,
            utp: false,
            utp_side: None,
        }
    }

    /// Puts a node in the routing table (as if it had answered us; in a full
    /// bucket it takes the place of the contact learned last), so that
    /// announces and refreshes may go to it: how a long-running crawler sits in
    /// clients' tables.
    pub fn know(&mut self, id: NodeId, addr: SocketAddr) {
        self.table.learn_forced(&self.id, id, addr);
    }

    /// Whether the routing table holds `addr`.
    pub fn knows(&self, addr: &SocketAddr) -> bool {
        pack(addr).is_some_and(|p| self.table.position(p).is_some())
    }

    /// Serving sessions open over uTP.
    pub fn utp_sessions(&self) -> usize {
        self.utp_side.as_ref().map_or(0, |u| u.sessions.len())
    }

    /// Whether the client serves over uTP at all.
    fn serves_utp(&self) -> bool {
        self.utp && self.behaviour != SeedBehaviour::NoListener
    }

    /// A uTP datagram on the DHT socket of a client that serves uTP.
    fn on_utp_datagram(&mut self, ctx: &mut Ctx<'_>, from: SocketAddr, bytes: &[u8]) {
        let side = self.utp_side.get_or_insert_with(|| {
            let cfg = UtpConfig {
                accept_incoming: true,
                ..UtpConfig::default()
            };
            Box::new(UtpSide {
                utp: Utp::new(cfg, Rng::new(ctx.rng.next_u64())),
                sessions: FxMap::default(),
                buf: Vec::new(),
            })
        });
        side.utp.handle_datagram(ctx.now, SocketId(0), from, bytes);
        self.pump_utp(ctx);
    }

    /// Handles the uTP manager's events, writes the sessions' output to their
    /// streams and sends the manager's datagrams.
    fn pump_utp(&mut self, ctx: &mut Ctx<'_>) {
        let Some(side) = self.utp_side.as_mut() else {
            return;
        };
        let now = ctx.now;
        while let Some(ev) = side.utp.poll_event() {
            match ev {
                UtpEvent::Incoming { stream, .. } => {
                    self.stats.utp_connections += 1;
                    let s = Serving::new(Link::Utp(stream), self.behaviour, ctx.rng.next_u64());
                    side.sessions.insert(stream, s);
                }
                UtpEvent::Readable(stream) => {
                    side.buf.clear();
                    let Ok((_, eof)) = side.utp.read(now, stream, &mut side.buf, usize::MAX) else {
                        continue;
                    };
                    let torrents = &self.torrents;
                    if let Some(s) = side.sessions.get_mut(&stream) {
                        if !side.buf.is_empty() {
                            let done = s.on_data(ctx, &side.buf, |ih| {
                                torrents.iter().find(|t| t.ih == *ih).map(|t| t.info_dict())
                            });
                            if done {
                                self.stats.metadata_served += 1;
                            }
                        }
                    }
                    if eof {
                        let _ = side.utp.close(now, stream);
                    }
                }
                UtpEvent::Closed { stream, .. } => {
                    side.sessions.remove(&stream);
                }
                UtpEvent::Connected(_) => {}
                // A simulated client never dials uTP, so no SYN can cross one of
                // its own: refuse whatever the manager reports.
                UtpEvent::Crossed { stream, .. } => {
                    let _ = side.utp.close(now, stream);
                }
            }
        }
        // Output into the streams, in stream order (deterministic).
        let mut ids: Vec<StreamId> = side.sessions.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(s) = side.sessions.get_mut(&id) else {
                continue;
            };
            let (mut out, close) = s.take_utp_output();
            if !out.is_empty() {
                let n = side.utp.write(now, id, &out).unwrap_or(0);
                out.drain(..n.min(out.len()));
            }
            if out.is_empty() && close {
                let _ = side.utp.close(now, id);
            }
            s.untake_utp_output(out);
        }
        while let Some(t) = side.utp.poll_transmit() {
            ctx.send(t.local.0, t.to, t.payload);
        }
    }

    /// Contacts in the routing table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Sends a query built in the world's scratch buffer.
    fn send_query(&self, ctx: &mut Ctx<'_>, to: SocketAddr, tid: &[u8], kind: QueryKind<'_>) {
        let mut s = ctx.take_scratch();
        encode_query(&mut s.out, self.id, tid, kind);
        ctx.send_copy(0, to, &s.out);
        ctx.put_scratch(s);
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
                self.table.learn(&self.id, e.id, e.addr);
            }
        }
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
        let mut t = Traversal::new(self.next_tag, slot, target);
        // Seed with the table's closest (libtorrent starts from 2k of them).
        let (near, n) = self.table.closest(&target);
        for &(_, p, id) in &near[..n] {
            t.add(id, unpack(p));
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
        let mut answered = 0;
        let mut scratch = None;
        for j in 0..t.c.len {
            if answered >= K || t.in_flight() >= ALPHA || t.queries >= MAX_TRAVERSAL_QUERIES {
                break;
            }
            match t.c.st[j] {
                St::Answered => answered += 1,
                St::Failed | St::Sent => {}
                St::New => {
                    t.sent(j, ctx.now);
                    let mut tid = [0u8; 4];
                    tid[..2].copy_from_slice(&t.tag.to_be_bytes());
                    tid[2..].copy_from_slice(&ctx.rng.bytes::<2>());
                    let s = scratch.get_or_insert_with(|| ctx.take_scratch());
                    encode_query(
                        &mut s.out,
                        id,
                        &tid,
                        QueryKind::GetPeers {
                            info_hash: t.c.target,
                            scrape: false,
                            noseed: false,
                        },
                    );
                    self.stats.traversal_queries += 1;
                    ctx.send_copy(0, unpack(t.c.peer[j]), &s.out);
                }
            }
        }
        if let Some(s) = scratch {
            ctx.put_scratch(s);
        }
        if t.in_flight() > 0 {
            return true;
        }
        let t = self.traversals.swap_remove(i);
        self.finish(ctx, t);
        false
    }

    /// announce_peer to the `K` closest nodes that answered with a token.
    fn finish(&mut self, ctx: &mut Ctx<'_>, t: Traversal) {
        let Some(held) = self.torrents.get(t.c.slot) else {
            return;
        };
        let ih = held.ih;
        let port = ctx.addr(0).port();
        for j in (0..t.c.len)
            .filter(|&j| t.c.st[j] == St::Answered && t.token(t.c.peer[j]).is_some())
            .take(K)
        {
            let Some(token) = t.token(t.c.peer[j]) else {
                continue;
            };
            self.send_query(
                ctx,
                unpack(t.c.peer[j]),
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
        }
    }

    /// Times out traversal queries and refresh queries that are overdue.
    fn expire(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        for t in self.traversals.iter_mut() {
            // The oldest query is first: stop at the first that is not overdue.
            while t.flying > 0 && t.flight[0].0.add(QUERY_TIMEOUT) <= now {
                let p = t.flight[0].1;
                t.land(p, St::Failed);
                self.stats.traversal_timeouts += 1;
                self.table.forget(p);
            }
        }
        let table = &mut self.table;
        self.refreshing.retain(|(a, at)| {
            let over = at.add(QUERY_TIMEOUT) <= now;
            if over {
                if let Some(p) = pack(a) {
                    table.forget(p);
                }
            }
            !over
        });
        let mut i = self.traversals.len();
        while i > 0 {
            i -= 1;
            self.pump(ctx, i);
        }
    }

    /// One table-refresh query: get_peers for a random id in a random bucket's
    /// range, to one node of that bucket (noise a crawler must not store).
    fn refresh(&mut self, ctx: &mut Ctx<'_>) {
        if self.table.len() == 0 || self.refreshing.len() >= 4 {
            return;
        }
        let i = ctx.rng.index(self.table.len());
        let (addr, b) = (unpack(self.table.peer[i]), self.table.bucket[i]);
        let mut target = NodeId::random(ctx.rng);
        // Share the first `b` bits with our id, differ at bit `b`.
        let b = b as usize;
        for bit in 0..=b.min(159) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let mine = self.id.0[byte] & mask;
            let want = if bit == b { mine ^ mask } else { mine };
            target.0[byte] = (target.0[byte] & !mask) | want;
        }
        self.send_query(
            ctx,
            addr,
            b"rf",
            QueryKind::GetPeers {
                info_hash: target.into(),
                scrape: false,
                noseed: false,
            },
        );
        self.stats.refresh_queries += 1;
        self.refreshing.push((addr, ctx.now));
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
        if let Some(u) = &self.utp_side {
            if let Some(d) = u.utp.deadline() {
                t = t.min(d);
            }
            for s in u.sessions.values() {
                if let Some(r) = s.next_release() {
                    t = t.min(r);
                }
            }
        }
        t
    }

    fn on_reply(&mut self, ctx: &mut Ctx<'_>, from: SocketAddr, tid: &[u8], r: &Response<'_>) {
        if tid == b"rf" {
            if let Some(i) = self.refreshing.iter().position(|(a, _)| *a == from) {
                self.refreshing.swap_remove(i);
                self.table.learn(&self.id, r.id, from);
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
        let Some(peer) = pack(&from) else {
            return;
        };
        let t = &mut self.traversals[i];
        if t.land(peer, St::Answered).is_none() {
            return;
        }
        if let Some(tok) = r.token {
            t.set_token(peer, tok);
            self.stats.tokens_received += 1;
        }
        if let Some(nodes) = r.nodes {
            for (id, addr) in nodes.iter() {
                t.add(id, addr);
            }
        }
        self.table.learn(&self.id, r.id, from);
        self.pump(ctx, i);
    }
}

impl SimNode for Client {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, _local: u16, from: SocketAddr, bytes: &[u8]) {
        if bytes.first().is_some_and(|&b| is_utp_first_byte(b)) {
            self.stats.utp_datagrams_in += 1;
            if self.serves_utp() {
                self.on_utp_datagram(ctx, from, bytes);
                let t = self.next_wake(ctx);
                ctx.wake_at(t);
            }
            // Else ignored, and no timer moves: a TCP-only client's world
            // runs as it did before clients could serve uTP.
            return;
        }
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
        if let Some(u) = self.utp_side.as_mut() {
            crate::seeder::wake_sessions(&mut u.sessions, ctx);
            u.utp.handle_timeout(ctx.now);
            self.pump_utp(ctx);
        }
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
        self.tcp && self.behaviour != SeedBehaviour::NoListener
    }

    fn on_tcp_accepted(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId) {
        self.stats.connections += 1;
        let s = Serving::new(Link::Tcp(tcp), self.behaviour, ctx.rng.next_u64());
        self.sessions.insert(tcp, s);
    }

    fn on_tcp_data(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId, _tag: u64, bytes: &[u8]) {
        let torrents = &self.torrents;
        if let Some(s) = self.sessions.get_mut(&tcp) {
            let done = s.on_data(ctx, bytes, |ih| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_core::Rng;

    #[test]
    fn position_matches_a_plain_search() {
        let mut rng = Rng::new(3);
        for len in 0..40 {
            let keys: Vec<Peer> = (0..len).map(|_| rng.below(30)).collect();
            for k in 0..32 {
                assert_eq!(
                    position(&keys, k),
                    keys.iter().position(|&x| x == k),
                    "{keys:?} {k}"
                );
            }
        }
    }

    #[test]
    fn peers_pack_in_address_order() {
        let mut rng = Rng::new(4);
        let addrs: Vec<SocketAddr> = (0..200)
            .map(|_| SocketAddr::from((Ipv4Addr::from(rng.next_u32() % 8), rng.below(4) as u16)))
            .collect();
        for a in &addrs {
            assert_eq!(unpack(pack(a).expect("v4")), *a);
            for b in &addrs {
                assert_eq!(pack(a).cmp(&pack(b)), a.cmp(b), "{a} {b}");
            }
        }
        assert_eq!(pack(&"[::1]:5".parse().expect("v6")), None);
    }

    /// (distance, address, state, sent at, token).
    type PlainCand = (Distance, SocketAddr, St, Timestamp, Option<Vec<u8>>);

    /// The obvious traversal: one record per candidate, scanned for everything.
    #[derive(Clone, Debug, PartialEq)]
    struct Plain {
        target: InfoHash,
        /// Sorted by distance.
        cands: Vec<PlainCand>,
    }

    impl Plain {
        fn add(&mut self, id: NodeId, addr: SocketAddr) {
            if self.cands.iter().any(|c| c.1 == addr) {
                return;
            }
            let dist = id.distance(&self.target.0);
            let pos = self.cands.partition_point(|c| c.0 <= dist);
            if pos >= MAX_CANDIDATES {
                return;
            }
            self.cands
                .insert(pos, (dist, addr, St::New, Timestamp::default(), None));
            if self.cands.len() > MAX_CANDIDATES {
                if let Some(i) = self.cands.iter().rposition(|c| c.2 == St::New) {
                    self.cands.remove(i);
                } else {
                    self.cands.pop();
                }
            }
        }
        fn in_flight(&self) -> usize {
            self.cands.iter().filter(|c| c.2 == St::Sent).count()
        }
        fn deadline(&self) -> Option<Timestamp> {
            self.cands
                .iter()
                .filter(|c| c.2 == St::Sent)
                .map(|c| c.3.add(QUERY_TIMEOUT))
                .min()
        }
    }

    fn same(t: &Traversal, p: &Plain, at: &str) {
        let got: Vec<(Distance, SocketAddr, St, Option<&[u8]>)> = (0..t.c.len)
            .map(|j| {
                let tok = (t.c.st[j] == St::Answered)
                    .then(|| t.token(t.c.peer[j]))
                    .flatten();
                (t.c.dist[j], unpack(t.c.peer[j]), t.c.st[j], tok)
            })
            .collect();
        let want: Vec<(Distance, SocketAddr, St, Option<&[u8]>)> = p
            .cands
            .iter()
            .map(|c| (c.0, c.1, c.2, c.4.as_deref()))
            .collect();
        assert_eq!(got, want, "{at}");
        assert_eq!(t.in_flight(), p.in_flight(), "{at}");
        assert_eq!(t.deadline(), p.deadline(), "{at}");
    }

    #[test]
    fn traversal_matches_a_plain_candidate_list() {
        let mut rng = Rng::new(9);
        for round in 0..60 {
            let target = InfoHash(rng.bytes());
            let mut t = Traversal::new(1, 0, target);
            let mut p = Plain {
                target,
                cands: Vec::new(),
            };
            // Few addresses (so they repeat, sometimes with another id) and ids
            // near the target (so insertions land everywhere).
            let addrs: Vec<SocketAddr> = (0..90)
                .map(|i| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 6881)))
                .collect();
            let mut now = Timestamp::from_secs(1);
            for step in 0..400 {
                let at = format!("round {round} step {step}");
                now = now.add(Duration::from_millis(rng.below(1500)));
                match rng.below(10) {
                    0..=4 => {
                        let mut id = NodeId::random(&mut rng);
                        let keep = rng.index(6);
                        id.0[..keep].copy_from_slice(&target.0[..keep]);
                        let a = addrs[rng.index(addrs.len())];
                        t.add(id, a);
                        p.add(id, a);
                    }
                    5 | 6 => {
                        // Ask the closest new candidate, as `pump` does.
                        if t.in_flight() < ALPHA {
                            if let Some(j) = p.cands.iter().position(|c| c.2 == St::New) {
                                t.sent(j, now);
                                p.cands[j].2 = St::Sent;
                                p.cands[j].3 = now;
                            }
                        }
                    }
                    7 | 8 => {
                        // An answer from a node we asked (or did not).
                        let a = addrs[rng.index(addrs.len())];
                        let tok = rng.chance(0.7).then(|| rng.bytes::<6>().to_vec());
                        let landed = t.land(pack(&a).expect("v4"), St::Answered).is_some();
                        if landed {
                            if let Some(tok) = &tok {
                                t.set_token(pack(&a).expect("v4"), tok);
                            }
                        }
                        let c = p.cands.iter_mut().find(|c| c.1 == a && c.2 == St::Sent);
                        assert_eq!(landed, c.is_some(), "{at}");
                        if let Some(c) = c {
                            c.2 = St::Answered;
                            c.4 = tok;
                        }
                    }
                    _ => {
                        // Time out what is overdue, as `expire` does.
                        while t.flying > 0 && t.flight[0].0.add(QUERY_TIMEOUT) <= now {
                            t.land(t.flight[0].1, St::Failed);
                        }
                        for c in p.cands.iter_mut() {
                            if c.2 == St::Sent && c.3.add(QUERY_TIMEOUT) <= now {
                                c.2 = St::Failed;
                            }
                        }
                    }
                }
                same(&t, &p, &at);
            }
        }
    }

    #[test]
    fn table_matches_a_plain_contact_list() {
        let mut rng = Rng::new(11);
        for round in 0..30 {
            let own = NodeId::random(&mut rng);
            let mut t = Table::default();
            // (id, address, bucket) in the order learned.
            let mut plain: Vec<(NodeId, SocketAddr, u8)> = Vec::new();
            let addrs: Vec<SocketAddr> = (0..300)
                .map(|i| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 6881)))
                .collect();
            for step in 0..1500 {
                let a = addrs[rng.index(addrs.len())];
                if rng.chance(0.2) {
                    t.forget(pack(&a).expect("v4"));
                    plain.retain(|e| e.1 != a);
                } else {
                    let mut id = NodeId::random(&mut rng);
                    let keep = rng.index(4);
                    id.0[..keep].copy_from_slice(&own.0[..keep]);
                    t.learn(&own, id, a);
                    if let Some(e) = plain.iter_mut().find(|e| e.1 == a) {
                        e.0 = id;
                        e.2 = bucket_of(&own, &id);
                    } else {
                        let b = bucket_of(&own, &id);
                        if plain.iter().filter(|e| e.2 == b).count() < K {
                            plain.push((id, a, b));
                        }
                    }
                }
                let got: Vec<(NodeId, SocketAddr, u8)> = (0..t.len())
                    .map(|i| (t.id[i], unpack(t.peer[i]), t.bucket[i]))
                    .collect();
                assert_eq!(got, plain, "round {round} step {step}");
                if step % 50 == 0 {
                    let target = InfoHash(rng.bytes());
                    let mut all: Vec<(Distance, SocketAddr, NodeId)> = plain
                        .iter()
                        .map(|e| (e.0.distance(&target.0), e.1, e.0))
                        .collect();
                    all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
                    all.truncate(2 * K);
                    let (near, n) = t.closest(&target);
                    let near: Vec<(Distance, SocketAddr, NodeId)> =
                        near[..n].iter().map(|e| (e.0, unpack(e.1), e.2)).collect();
                    assert_eq!(near, all, "round {round} step {step}");
                }
            }
        }
    }
}
