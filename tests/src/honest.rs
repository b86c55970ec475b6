//! Honest, lightweight DHT nodes: a BEP 5 table of directory indices, an announce
//! store with expiry, tokens, and answers to ping, find_node, get_peers,
//! announce_peer and sample_infohashes (BEP 51, with a cached sample renewed every
//! `interval`, as libtorrent does). Some have no BEP 51, some are read-only
//! (BEP 43: they answer nothing and flag their queries `ro`).
//!
//! Each node costs about 4 KB (32 bytes per contact, grouped by bucket) plus
//! its announce store (64 bytes per infohash, up to 3 peers inline), so a
//! world holds 10 000 of them cheaply.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

use magnetar_core::krpc::{
    self, error_code, Body, CompactNodesV4, KrpcError, Message, Query, QueryKind, Response, Samples,
};
use magnetar_core::{InfoHash, NodeId, Timestamp};

use crate::util::FxMap;
use crate::world::{Ctx, Directory, EpIdx, Scratch, SimNode};

/// Bucket size.
pub const K: usize = 8;
/// Stored (infohash, peer) pairs per node.
pub const MAX_STORE: usize = 8192;
/// Samples per sample_infohashes answer.
pub const MAX_SAMPLES: usize = 20;
/// Announces live this long.
pub const ANNOUNCE_TTL_SECS: u32 = 30 * 60;
/// Token secret epoch.
const TOKEN_EPOCH_SECS: u64 = 300;

/// One announced peer of an infohash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    ip: u32,
    port: u16,
    expires: u32,
}

/// An infohash as a map key, hashed by its first 8 bytes (infohashes are
/// uniformly random, so that is as good as hashing all 20 and cheaper).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IhKey([u8; 20]);

impl Hash for IhKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        h.write_u64(u64::from_le_bytes(b));
    }
}

/// An infohash's peers in arrival order: up to 3 inline (most infohashes have
/// a holder or two), so a lookup reads one map entry (64 bytes) and no heap
/// block; more go to the heap.
#[derive(Debug)]
enum Peers {
    Inline(u8, [Peer; 3]),
    Heap(Vec<Peer>),
}

impl Default for Peers {
    fn default() -> Self {
        Peers::Inline(
            0,
            [Peer {
                ip: 0,
                port: 0,
                expires: 0,
            }; 3],
        )
    }
}

impl Peers {
    fn as_slice(&self) -> &[Peer] {
        match self {
            Peers::Inline(n, p) => &p[..*n as usize],
            Peers::Heap(v) => v,
        }
    }
    fn as_mut_slice(&mut self) -> &mut [Peer] {
        match self {
            Peers::Inline(n, p) => &mut p[..*n as usize],
            Peers::Heap(v) => v,
        }
    }
    fn push(&mut self, peer: Peer) {
        match self {
            Peers::Inline(n, p) if (*n as usize) < p.len() => {
                p[*n as usize] = peer;
                *n += 1;
            }
            Peers::Inline(_, p) => {
                let mut v = p.to_vec();
                v.push(peer);
                *self = Peers::Heap(v);
            }
            Peers::Heap(v) => v.push(peer),
        }
    }
    /// Keeps the peers `keep` accepts, in order.
    fn retain(&mut self, keep: impl Fn(&Peer) -> bool) {
        match self {
            Peers::Inline(n, p) => {
                let mut m = 0;
                for i in 0..*n as usize {
                    if keep(&p[i]) {
                        p[m] = p[i];
                        m += 1;
                    }
                }
                *n = m as u8;
            }
            Peers::Heap(v) => v.retain(keep),
        }
    }
    /// Removes peer `i` (< len), keeping the order.
    fn remove(&mut self, i: usize) {
        match self {
            Peers::Inline(n, p) => {
                p.copy_within(i + 1..*n as usize, i);
                *n -= 1;
            }
            Peers::Heap(v) => {
                v.remove(i);
            }
        }
    }
}

/// The announce store: each infohash's peers, oldest first.
///
/// Answers list an infohash's peers newest first, eviction takes the entry
/// closest to expiry (the first one in (infohash, newest first) order among
/// equals) and samples draw from the infohashes in ascending order: exactly what
/// the list sorted by infohash (new entries first) that this replaces gave, with
/// a hash lookup (two cache lines: control bytes, then the 64-byte entry)
/// instead of a binary search over the whole store (a miss per step).
#[derive(Default)]
struct Store {
    groups: FxMap<IhKey, Peers>,
    len: usize,
}

impl Store {
    /// `ih`'s peers, newest first (expired ones included).
    fn peers(&self, ih: &[u8; 20]) -> impl Iterator<Item = &Peer> {
        self.groups
            .get(&IhKey(*ih))
            .map(|g| g.as_slice())
            .unwrap_or_default()
            .iter()
            .rev()
    }

    /// Adds or refreshes (`ih`, `ip`:`port`); when the store holds `cap`
    /// entries, a new one first evicts the entry closest to expiry.
    fn insert(&mut self, ih: &[u8; 20], ip: u32, port: u16, expires: u32, cap: usize) {
        if let Some(g) = self.groups.get_mut(&IhKey(*ih)) {
            let same = g
                .as_mut_slice()
                .iter_mut()
                .find(|p| p.ip == ip && p.port == port);
            if let Some(p) = same {
                p.expires = expires;
                return;
            }
            if self.len < cap {
                g.push(Peer { ip, port, expires });
                self.len += 1;
                return;
            }
        }
        if self.len >= cap {
            self.evict();
        }
        self.groups
            .entry(IhKey(*ih))
            .or_default()
            .push(Peer { ip, port, expires });
        self.len += 1;
    }

    /// Removes the entry closest to expiry; among equals, the first in
    /// (infohash, newest first) order.
    fn evict(&mut self) {
        let mut best: Option<(u32, [u8; 20], usize)> = None;
        for (k, g) in &self.groups {
            // Newest first: the last of the group's earliest expiries.
            let g = g.as_slice();
            let Some((age, p)) = g.iter().rev().enumerate().min_by_key(|(_, p)| p.expires) else {
                continue;
            };
            let cand = (p.expires, k.0, age);
            if best.is_none_or(|b| cand < b) {
                best = Some(cand);
            }
        }
        let Some((_, ih, age)) = best else {
            return;
        };
        if let Some(g) = self.groups.get_mut(&IhKey(ih)) {
            g.remove(g.as_slice().len() - 1 - age);
            self.len -= 1;
            if g.as_slice().is_empty() {
                self.groups.remove(&IhKey(ih));
            }
        }
    }

    /// Drops the entries expired at `now_s`.
    fn purge(&mut self, now_s: u32) {
        let mut len = 0;
        self.groups.retain(|_, g| {
            g.retain(|p| p.expires > now_s);
            len += g.as_slice().len();
            !g.as_slice().is_empty()
        });
        self.len = len;
    }

    /// The stored infohashes, ascending.
    fn infohashes(&self) -> Vec<[u8; 20]> {
        let mut v: Vec<[u8; 20]> = self.groups.keys().map(|k| k.0).collect();
        v.sort_unstable();
        v
    }
}

/// A node's cached BEP 51 sample.
#[derive(Default)]
struct Sample {
    ihs: Vec<InfoHash>,
    /// Infohashes stored when it was made.
    num: u32,
    at: Timestamp,
}

/// What an honest node counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct HonestStats {
    pub queries: u32,
    pub samples_served: u32,
    pub announces: u32,
    pub bad_tokens: u32,
    pub malformed: u32,
}

pub struct HonestNode {
    pub id: NodeId,
    pub bep51: bool,
    pub read_only: bool,
    /// BEP 51 interval, seconds.
    pub interval: u32,
    /// The contacts this node knows, grouped by bucket.
    table: Table,
    store: Store,
    /// Made at the first sample_infohashes and read only by those (boxed, so
    /// it does not widen the node every other query touches).
    sample: Option<Box<Sample>>,
    secret: u64,
    pub stats: HonestStats,
}

/// One contact, as an answer needs it: 32 bytes, so a bucket of 8 is 4 cache
/// lines.
#[derive(Clone, Copy, Debug)]
struct Contact {
    /// Compact node info (BEP 5): id, IPv4 address, port. An answer copies it
    /// as is; its first 16 bytes are the ranking key. (An endpoint's address
    /// never changes in the world, so it is read from the directory once, when
    /// the contact is learned.) For an IPv6 contact only the id is set.
    node: [u8; 26],
    /// Learning order: the contact's index in a table that appends new contacts
    /// and replaces in place, which the table was before it was grouped by
    /// bucket. Ties in distance and `ro_query`'s random pick go by it.
    seq: u16,
    ep: EpIdx,
}

impl Contact {
    fn new(dir: &Directory, id: NodeId, ep: EpIdx, seq: u16) -> Self {
        let mut node = [0u8; 26];
        node[..20].copy_from_slice(&id.0);
        if let SocketAddr::V4(a) = dir.get(ep).addr {
            node[20..24].copy_from_slice(&a.ip().octets());
            node[24..].copy_from_slice(&a.port().to_be_bytes());
        }
        Contact { node, seq, ep }
    }
    fn id(&self) -> NodeId {
        let mut id = [0u8; 20];
        id.copy_from_slice(&self.node[..20]);
        NodeId(id)
    }
    /// The id's first 128 bits (for XOR distance).
    fn key(&self) -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.node[..16]);
        u128::from_be_bytes(b)
    }
}

/// Buckets whose index ranges a table keeps; deeper ones (the few contacts
/// sharing a long prefix with us) are found by computing contacts' buckets.
const SHALLOW: usize = 16;

/// A node's contacts, grouped by bucket: an answer takes its bucket's range
/// from `starts`, in the node itself, and reads those contacts side by side.
#[derive(Default)]
struct Table {
    /// Sorted by (bucket, seq).
    contacts: Vec<Contact>,
    /// `starts[b]`: the index of the first contact in bucket `b` or deeper.
    starts: [u16; SHALLOW + 1],
    /// Some contact has an IPv6 address (answers then write from the directory).
    any_v6: bool,
}

impl Table {
    fn clear(&mut self) {
        self.contacts.clear();
        self.starts = [0; SHALLOW + 1];
        self.any_v6 = false;
    }
    fn len(&self) -> usize {
        self.contacts.len()
    }
    /// A contact for `id` at `ep` with learning order `seq`.
    fn contact(&mut self, dir: &Directory, id: NodeId, ep: EpIdx, seq: u16) -> Contact {
        self.any_v6 |= dir.get(ep).addr.is_ipv6();
        Contact::new(dir, id, ep, seq)
    }
    /// Replaces the contacts with `all`, sorted by (bucket, seq).
    fn set(&mut self, all: &[(u8, Contact)]) {
        self.contacts.clear();
        self.contacts.extend(all.iter().map(|&(_, c)| c));
        for (b, s) in self.starts.iter_mut().enumerate() {
            *s = all.partition_point(|&(x, _)| (x as usize) < b) as u16;
        }
    }
    /// The bucket of contact `i` of `own`'s table.
    fn bucket(&self, own: &NodeId, i: usize) -> u8 {
        bucket_of(own, &self.contacts[i].id())
    }
    /// Inserts `c` in bucket `b`, in learning order.
    fn insert(&mut self, own: &NodeId, c: Contact, b: u8) {
        let (lo, hi) = self.range(own, b);
        let pos = lo + self.contacts[lo..hi].partition_point(|x| x.seq < c.seq);
        self.contacts.insert(pos, c);
        for s in &mut self.starts[(b as usize + 1).min(SHALLOW + 1)..] {
            *s += 1;
        }
    }
    fn remove(&mut self, own: &NodeId, i: usize) {
        let b = self.bucket(own, i);
        self.contacts.remove(i);
        for s in &mut self.starts[(b as usize + 1).min(SHALLOW + 1)..] {
            *s -= 1;
        }
    }
    /// The index range of bucket `b`.
    fn range(&self, own: &NodeId, b: u8) -> (usize, usize) {
        let b = b as usize;
        if b < SHALLOW {
            return (self.starts[b] as usize, self.starts[b + 1] as usize);
        }
        let deep = self.starts[SHALLOW] as usize;
        let lo = deep
            + (deep..self.len())
                .take_while(|&i| (self.bucket(own, i) as usize) < b)
                .count();
        let hi = lo
            + (lo..self.len())
                .take_while(|&i| self.bucket(own, i) as usize == b)
                .count();
        (lo, hi)
    }
    /// Where `ep` is (the first learned, should it be there twice).
    fn position(&self, ep: EpIdx) -> Option<usize> {
        (0..self.len())
            .filter(|&i| self.contacts[i].ep == ep)
            .min_by_key(|&i| self.contacts[i].seq)
    }
}

/// A contact in a ranking: (distance in the first 128 bits, seq, index).
type Ranked = (u128, u16, usize);

fn bucket_of(own: &NodeId, id: &NodeId) -> u8 {
    own.distance(&id.0).leading_zeros().min(159) as u8
}

fn key128(id: &[u8; 20]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id[..16]);
    u128::from_be_bytes(b)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn ip4(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(v) => v.to_ipv4_mapped().map(u32::from).unwrap_or(0),
    }
}

impl HonestNode {
    pub fn new(id: NodeId, secret: u64) -> Self {
        HonestNode {
            id,
            bep51: true,
            read_only: false,
            interval: 6 * 3600,
            table: Table::default(),
            store: Store::default(),
            sample: None,
            secret,
            stats: HonestStats::default(),
        }
    }

    /// Replaces the table with `eps` (ids taken from the directory).
    pub fn set_table(&mut self, dir: &Directory, eps: &[EpIdx]) {
        self.table.clear();
        let mut all = Vec::with_capacity(eps.len());
        for &ep in eps {
            let id = dir.get(ep).id;
            if id != self.id {
                let c = self.table.contact(dir, id, ep, all.len() as u16);
                all.push((bucket_of(&self.id, &id), c));
            }
        }
        all.sort_by_key(|&(b, c)| (b, c.seq));
        self.table.set(&all);
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn knows(&self, ep: EpIdx) -> bool {
        self.table.position(ep).is_some()
    }

    /// Learns a contact: added when its bucket has room or holds a dead contact
    /// (a node that pings its table would have found it dead).
    pub fn learn(&mut self, dir: &Directory, id: NodeId, ep: EpIdx) {
        if id == self.id {
            return;
        }
        if let Some(i) = self.table.position(ep) {
            let old = self.table.contacts[i];
            if old.id() != id {
                // A node that changes its id keeps its slot with the new id.
                self.table.remove(&self.id, i);
                let c = self.table.contact(dir, id, ep, old.seq);
                self.table.insert(&self.id, c, bucket_of(&self.id, &id));
            }
            return;
        }
        let b = bucket_of(&self.id, &id);
        let (lo, hi) = self.table.range(&self.id, b);
        if hi - lo < K {
            let c = self.table.contact(dir, id, ep, self.table.len() as u16);
            self.table.insert(&self.id, c, b);
        } else if let Some(i) = (lo..hi).find(|&i| !dir.get(self.table.contacts[i].ep).alive) {
            let seq = self.table.contacts[i].seq;
            self.table.contacts[i] = self.table.contact(dir, id, ep, seq);
        }
    }

    /// The `K` known contacts closest to `target`, nearest first, as (distance
    /// in the first 128 bits, seq, index): ties go by learning order.
    ///
    /// Buckets order the search: with `bt` the bucket `target` would fall in,
    /// contacts of bucket `bt` are closer to it than those of deeper buckets,
    /// which are closer than those of shallower ones, deeper shallow buckets
    /// first. So the usual case (a random target, a full bucket `bt`) ranks the
    /// 8 contacts of one bucket, not the whole table. The result is the one a
    /// full ranking gives.
    fn closest(&self, target: &[u8; 20], out: &mut [Ranked; K]) -> usize {
        let t = key128(target);
        let bt = bucket_of(&self.id, &NodeId(*target));
        let len = self.table.len();
        let mut n = 0;
        if bt >= 100 {
            // The 128-bit keys no longer order the buckets: rank everything.
            self.rank_range(0..len, t, &mut n, out);
            return n;
        }
        let (lo, hi) = self.table.range(&self.id, bt);
        self.rank_range(lo..hi, t, &mut n, out);
        if n == K {
            return n;
        }
        self.rank_range(hi..len, t, &mut n, out);
        // Shallower buckets, deepest first: once `K` are found, a shallower
        // bucket has nothing closer.
        let mut end = lo;
        while end > 0 && n < K {
            let b = self.table.bucket(&self.id, end - 1);
            let (start, _) = self.table.range(&self.id, b);
            self.rank_range(start..end, t, &mut n, out);
            end = start;
        }
        n
    }

    /// Ranks contacts `range` against target key `t`.
    fn rank_range(&self, range: Range<usize>, t: u128, n: &mut usize, out: &mut [Ranked; K]) {
        let start = range.start;
        for (j, c) in self.table.contacts[range].iter().enumerate() {
            Self::rank(n, out, (c.key() ^ t, c.seq, start + j));
        }
    }

    /// Inserts `r` into the sorted top-`K` list.
    #[inline]
    fn rank(n: &mut usize, out: &mut [Ranked; K], r: Ranked) {
        if *n == K && r >= out[K - 1] {
            return;
        }
        let mut i = (*n).min(K - 1);
        while i > 0 && out[i - 1] > r {
            out[i] = out[i - 1];
            i -= 1;
        }
        out[i] = r;
        if *n < K {
            *n += 1;
        }
    }

    fn write_nodes(&self, dir: &Directory, target: &[u8; 20], buf: &mut Vec<u8>) {
        let mut near = [(0u128, 0u16, 0usize); K];
        let n = self.closest(target, &mut near);
        for &(_, _, j) in &near[..n] {
            let c = &self.table.contacts[j];
            if self.table.any_v6 {
                krpc::write_compact_node(&c.id(), &dir.get(c.ep).addr, buf);
            } else {
                // Debug builds (the test suite) check that the address is still
                // the directory's.
                debug_assert_eq!(
                    Contact::new(dir, c.id(), c.ep, c.seq).node,
                    c.node,
                    "endpoint {} changed its address",
                    c.ep
                );
                buf.extend_from_slice(&c.node);
            }
        }
    }

    /// Stores an announce (also used to preload the world before time 0).
    pub fn store(&mut self, ih: InfoHash, peer: SocketAddr, expires_secs: u32) {
        self.store
            .insert(&ih.0, ip4(peer.ip()), peer.port(), expires_secs, MAX_STORE);
    }

    pub fn stored_len(&self) -> usize {
        self.store.len
    }

    /// Whether a live announce for `ih` is stored.
    pub fn holds(&self, ih: &InfoHash, now: Timestamp) -> bool {
        let now_s = now.as_secs() as u32;
        self.store.peers(&ih.0).any(|s| s.expires > now_s)
    }

    fn token(&self, ip: IpAddr, epoch: u64) -> [u8; 8] {
        mix(self.secret ^ mix(ip4(ip) as u64 ^ epoch << 32)).to_be_bytes()
    }

    fn token_ok(&self, ip: IpAddr, now: Timestamp, t: &[u8]) -> bool {
        let e = now.as_secs() / TOKEN_EPOCH_SECS;
        t == self.token(ip, e) || (e > 0 && t == self.token(ip, e - 1))
    }

    /// The BEP 51 sample, renewed when `interval` has passed.
    fn refresh_sample(&mut self, ctx: &mut Ctx<'_>) -> &Sample {
        let due = self
            .sample
            .as_ref()
            .is_none_or(|s| ctx.now.as_secs() >= s.at.as_secs() + self.interval as u64);
        if due {
            self.store.purge(ctx.now.as_secs() as u32);
            let sample = self.sample.get_or_insert_default();
            sample.at = ctx.now;
            sample.ihs.clear();
            let mut distinct = self.store.infohashes();
            sample.num = distinct.len() as u32;
            if distinct.len() <= MAX_SAMPLES {
                sample.ihs.extend(distinct.into_iter().map(InfoHash));
            } else {
                for i in 0..MAX_SAMPLES {
                    let j = i + ctx.rng.index(distinct.len() - i);
                    distinct.swap(i, j);
                    sample.ihs.push(InfoHash(distinct[i]));
                }
            }
        }
        self.sample.get_or_insert_default()
    }

    fn answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: u16,
        from: SocketAddr,
        msg: &Message<'_>,
        q: &Query<'_>,
    ) {
        let mut sc = ctx.take_scratch();
        self.answer_with(ctx, local, from, msg, q, &mut sc);
        ctx.put_scratch(sc);
    }

    fn answer_with(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: u16,
        from: SocketAddr,
        msg: &Message<'_>,
        q: &Query<'_>,
        sc: &mut Scratch,
    ) {
        self.stats.queries += 1;
        if !msg.read_only {
            if let Some(ep) = ctx.sender() {
                self.learn(ctx.dir, q.id, ep);
            }
        }
        let mut resp = Response {
            id: self.id,
            ..Response::default()
        };
        let (nodes, samples) = (&mut sc.a, &mut sc.b);
        let token;
        let mut values = Vec::new();
        match &q.kind {
            QueryKind::Ping => {}
            QueryKind::FindNode { target } => self.write_nodes(ctx.dir, &target.0, nodes),
            QueryKind::GetPeers { info_hash, .. } => {
                self.write_nodes(ctx.dir, &info_hash.0, nodes);
                token = self.token(from.ip(), ctx.now.as_secs() / TOKEN_EPOCH_SECS);
                resp.token = Some(&token);
                let now_s = ctx.now.as_secs() as u32;
                values.extend(
                    self.store
                        .peers(&info_hash.0)
                        .filter(|s| s.expires > now_s)
                        .take(50)
                        .map(|s| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(s.ip)), s.port)),
                );
            }
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                ..
            } => {
                if !self.token_ok(from.ip(), ctx.now, token) {
                    self.stats.bad_tokens += 1;
                    return self.error(ctx, local, from, msg.tid, error_code::PROTOCOL);
                }
                let port = if *implied_port { from.port() } else { *port };
                if port == 0 {
                    return self.error(ctx, local, from, msg.tid, error_code::PROTOCOL);
                }
                self.stats.announces += 1;
                let exp = ctx.now.as_secs() as u32 + ANNOUNCE_TTL_SECS;
                self.store(*info_hash, SocketAddr::new(from.ip(), port), exp);
            }
            QueryKind::SampleInfohashes { target } => {
                if !self.bep51 {
                    return self.error(ctx, local, from, msg.tid, error_code::METHOD_UNKNOWN);
                }
                self.stats.samples_served += 1;
                let sample = self.refresh_sample(ctx);
                for ih in &sample.ihs {
                    samples.extend_from_slice(&ih.0);
                }
                let num = sample.num;
                self.write_nodes(ctx.dir, &target.0, nodes);
                resp.samples = Samples::new(samples);
                resp.num = Some(num as i64);
                resp.interval = Some(self.interval as i64);
            }
            QueryKind::Unknown { .. } => {
                return self.error(ctx, local, from, msg.tid, error_code::METHOD_UNKNOWN);
            }
        }
        if !nodes.is_empty() {
            resp.nodes = CompactNodesV4::new(nodes);
        }
        if !values.is_empty() {
            resp.values = Some(values);
        }
        let reply = Message {
            tid: msg.tid,
            version: None,
            ip: Some(from),
            read_only: false,
            body: Body::Response(resp),
        };
        krpc::encode(&reply, &mut sc.out);
        ctx.send_copy(local, from, &sc.out);
    }

    fn error(&self, ctx: &mut Ctx<'_>, local: u16, to: SocketAddr, tid: &[u8], code: i64) {
        let m = Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Error(KrpcError {
                code,
                message: b"error",
            }),
        };
        let mut buf = Vec::with_capacity(64);
        krpc::encode(&m, &mut buf);
        ctx.send(local, to, buf);
    }

    /// A read-only node's periodic query (BEP 43: flagged `ro`).
    fn ro_query(&mut self, ctx: &mut Ctx<'_>) {
        let r = ctx.rng.index(self.table.len());
        if let Some(ep) = self
            .table
            .contacts
            .iter()
            .find(|c| c.seq as usize == r)
            .map(|c| c.ep)
        {
            let to = ctx.dir.get(ep).addr;
            let target = NodeId::random(ctx.rng);
            let tid = ctx.rng.bytes::<2>();
            let m = Message {
                tid: &tid,
                version: None,
                ip: None,
                read_only: true,
                body: Body::Query(Query {
                    id: self.id,
                    want: None,
                    kind: QueryKind::GetPeers {
                        info_hash: target.into(),
                        scrape: false,
                        noseed: false,
                    },
                }),
            };
            let mut buf = Vec::new();
            krpc::encode(&m, &mut buf);
            ctx.send(0, to, buf);
        }
        let next = 60 + ctx.rng.below(240);
        ctx.wake_at(ctx.now.add(std::time::Duration::from_secs(next)));
    }
}

impl SimNode for HonestNode {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, local: u16, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = krpc::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if self.read_only {
            return;
        }
        if let Body::Query(q) = &msg.body {
            self.answer(ctx, local, from, &msg, q);
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        if self.read_only {
            self.ro_query(ctx);
        }
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
    use crate::world::{DirEntry, Kind};
    use magnetar_core::Rng;

    /// A directory of `n` IPv4 endpoints with random ids, some sharing a long
    /// prefix with `own` (deep buckets), a few sharing one id.
    fn directory(rng: &mut Rng, own: &NodeId, n: u32) -> Directory {
        let mut dir = Directory::default();
        for i in 0..n {
            let mut id = NodeId::random(rng);
            if i % 7 == 0 {
                let keep = 1 + rng.index(19);
                id.0[..keep].copy_from_slice(&own.0[..keep]);
            }
            if i % 50 == 1 {
                id = dir.entries[rng.index(i as usize)].id;
            }
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            dir.entries.push(DirEntry {
                id,
                addr: SocketAddr::new(IpAddr::V4(ip), 1000 + i as u16),
                node: i,
                local: 0,
                kind: Kind::Honest,
                alive: true,
                responsive: true,
            });
        }
        dir
    }

    /// The table as it was before it was grouped by bucket: learning order,
    /// ranked by a full sort.
    #[derive(Default)]
    struct ModelTable {
        own: NodeId,
        ids: Vec<NodeId>,
        eps: Vec<EpIdx>,
        buckets: Vec<u8>,
    }

    impl ModelTable {
        fn set(&mut self, dir: &Directory, eps: &[EpIdx]) {
            for &ep in eps {
                let id = dir.get(ep).id;
                if id != self.own {
                    self.ids.push(id);
                    self.eps.push(ep);
                    self.buckets.push(bucket_of(&self.own, &id));
                }
            }
        }
        fn learn(&mut self, dir: &Directory, id: NodeId, ep: EpIdx) {
            if id == self.own {
                return;
            }
            let b = bucket_of(&self.own, &id);
            if let Some(i) = self.eps.iter().position(|&e| e == ep) {
                if self.ids[i] != id {
                    (self.ids[i], self.buckets[i]) = (id, b);
                }
                return;
            }
            let mine: Vec<usize> = (0..self.eps.len())
                .filter(|&i| self.buckets[i] == b)
                .collect();
            if mine.len() < K {
                self.ids.push(id);
                self.eps.push(ep);
                self.buckets.push(b);
            } else if let Some(&i) = mine.iter().find(|&&i| !dir.get(self.eps[i]).alive) {
                (self.ids[i], self.eps[i]) = (id, ep);
            }
        }
        fn write_nodes(&self, dir: &Directory, target: &[u8; 20], buf: &mut Vec<u8>) {
            let t = key128(target);
            let mut all: Vec<(u128, usize)> = (0..self.ids.len())
                .map(|j| (key128(&self.ids[j].0) ^ t, j))
                .collect();
            all.sort();
            for &(_, j) in all.iter().take(K) {
                krpc::write_compact_node(&self.ids[j], &dir.get(self.eps[j]).addr, buf);
            }
        }
    }

    /// The bucket-grouped table answers, learns and picks exactly as the plain
    /// table in learning order with a full ranking did: new contacts, id
    /// changes, dead contacts replaced, duplicate ids, deep buckets, targets
    /// near our own id.
    #[test]
    fn table_matches_the_plain_table() {
        let mut rng = Rng::new(5);
        for round in 0..30 {
            let own = NodeId::random(&mut rng);
            let mut dir = directory(&mut rng, &own, 600);
            let mut h = HonestNode::new(own, 1);
            let mut m = ModelTable {
                own,
                ..ModelTable::default()
            };
            let first: Vec<EpIdx> = (0..100).map(|_| rng.below(600) as EpIdx).collect();
            h.set_table(&dir, &first);
            m.set(&dir, &first);
            for step in 0..400 {
                match rng.below(10) {
                    0 => {
                        let ep = rng.below(600) as usize;
                        dir.entries[ep].alive = false;
                    }
                    1 => {
                        // A known endpoint under another id.
                        let ep = m.eps[rng.index(m.eps.len())];
                        let id = dir.entries[rng.index(600)].id;
                        h.learn(&dir, id, ep);
                        m.learn(&dir, id, ep);
                    }
                    _ => {
                        let ep = rng.below(600) as EpIdx;
                        let id = dir.get(ep).id;
                        h.learn(&dir, id, ep);
                        m.learn(&dir, id, ep);
                    }
                }
                assert_eq!(h.table_len(), m.eps.len(), "round {round} step {step}");
                for r in 0..m.eps.len() {
                    let c = h.table.contacts.iter().find(|c| c.seq as usize == r);
                    assert_eq!(c.map(|c| c.ep), Some(m.eps[r]), "round {round} step {step}");
                }
                for q in 0..4 {
                    let mut target: [u8; 20] = rng.bytes();
                    if q % 2 == 0 {
                        let keep = rng.index(21);
                        target[..keep].copy_from_slice(&own.0[..keep]);
                    }
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    h.write_nodes(&dir, &target, &mut got);
                    m.write_nodes(&dir, &target, &mut want);
                    assert_eq!(got, want, "round {round} step {step} query {q}");
                }
            }
        }
    }

    /// A contact and a store entry each take whole cache lines' worth, and a
    /// node stays small.
    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<Contact>(), 32);
        assert_eq!(std::mem::size_of::<(IhKey, Peers)>(), 64);
        // The world holds nodes inline: 10 000 of them in 1.7 MB.
        assert!(std::mem::size_of::<HonestNode>() <= 168);
    }

    /// The store as it was: one list sorted by infohash, new entries first.
    #[derive(Default)]
    struct ModelStore(Vec<([u8; 20], Peer)>);

    impl ModelStore {
        fn insert(&mut self, ih: [u8; 20], ip: u32, port: u16, expires: u32, cap: usize) {
            let pos = self.0.partition_point(|s| s.0 < ih);
            let same = self.0[pos..]
                .iter()
                .take_while(|s| s.0 == ih)
                .position(|s| s.1.ip == ip && s.1.port == port);
            if let Some(j) = same {
                self.0[pos + j].1.expires = expires;
                return;
            }
            if self.0.len() >= cap {
                if let Some(i) = (0..self.0.len()).min_by_key(|&i| self.0[i].1.expires) {
                    self.0.remove(i);
                }
            }
            let pos = self.0.partition_point(|s| s.0 < ih);
            self.0.insert(pos, (ih, Peer { ip, port, expires }));
        }
        fn peers(&self, ih: &[u8; 20]) -> Vec<Peer> {
            let pos = self.0.partition_point(|s| s.0 < *ih);
            self.0[pos..]
                .iter()
                .take_while(|s| s.0 == *ih)
                .map(|s| s.1)
                .collect()
        }
        fn infohashes(&self) -> Vec<[u8; 20]> {
            let mut v: Vec<[u8; 20]> = self.0.iter().map(|s| s.0).collect();
            v.dedup();
            v
        }
    }

    /// The hashed store keeps, lists, evicts and purges exactly as the sorted
    /// list did, with few infohashes and peers (refreshes), many equal expiry
    /// times (eviction ties) and a small cap (evictions).
    #[test]
    fn store_matches_the_sorted_list() {
        let mut rng = Rng::new(9);
        for round in 0..40 {
            let cap = 4 + rng.index(40);
            let ihs: Vec<[u8; 20]> = (0..1 + rng.index(12))
                .map(|i| {
                    let mut ih: [u8; 20] = rng.bytes();
                    if i % 3 == 1 {
                        // Same first 8 bytes (one hash) as another.
                        ih[..8].fill(7);
                    }
                    ih
                })
                .collect();
            let (mut st, mut m) = (Store::default(), ModelStore::default());
            let mut now = 0u32;
            for step in 0..600 {
                let ih = ihs[rng.index(ihs.len())];
                match rng.below(20) {
                    0 => {
                        now += rng.below(40) as u32;
                        st.purge(now);
                        m.0.retain(|s| s.1.expires > now);
                    }
                    _ => {
                        let ip = rng.below(4) as u32;
                        let port = 1 + rng.below(3) as u16;
                        let exp = now + rng.below(30) as u32;
                        st.insert(&ih, ip, port, exp, cap);
                        m.insert(ih, ip, port, exp, cap);
                    }
                }
                assert_eq!(st.len, m.0.len(), "round {round} step {step}");
                assert_eq!(st.infohashes(), m.infohashes(), "round {round} step {step}");
                for ih in &ihs {
                    let got: Vec<Peer> = st.peers(ih).copied().collect();
                    assert_eq!(got, m.peers(ih), "round {round} step {step}");
                }
            }
        }
    }
}
