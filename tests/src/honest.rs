//! Honest, lightweight DHT nodes: a BEP 5 table of directory indices, an announce
//! store with expiry, tokens, and answers to ping, find_node, get_peers,
//! announce_peer and sample_infohashes (BEP 51, with a cached sample renewed every
//! `interval`, as libtorrent does). Some have no BEP 51, some are read-only
//! (BEP 43: they answer nothing and flag their queries `ro`).
//!
//! Each node costs about 4 KB plus its announce store (some 40 bytes per
//! contact, column-wise), so a world holds 10 000 of them cheaply.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use magnetar_core::krpc::{
    self, error_code, Body, CompactNodesV4, KrpcError, Message, Query, QueryKind, Response, Samples,
};
use magnetar_core::{InfoHash, NodeId, Timestamp};

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

#[derive(Clone, Copy, Debug)]
struct Stored {
    ih: [u8; 20],
    ip: u32,
    port: u16,
    expires: u32,
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
    /// The contacts this node knows, as parallel arrays (scans touch only the
    /// column they need): id, its first 128 bits (for XOR distance), endpoint
    /// and bucket.
    table: Table,
    /// Sorted by infohash.
    store: Vec<Stored>,
    sample: Vec<InfoHash>,
    sample_num: u32,
    sample_at: Option<Timestamp>,
    secret: u64,
    pub stats: HonestStats,
}

/// A node's contacts, column-wise.
#[derive(Default)]
struct Table {
    ids: Vec<NodeId>,
    keys: Vec<u128>,
    eps: Vec<EpIdx>,
    buckets: Vec<u8>,
}

impl Table {
    fn clear(&mut self) {
        self.ids.clear();
        self.keys.clear();
        self.eps.clear();
        self.buckets.clear();
    }
    fn push(&mut self, id: NodeId, ep: EpIdx, b: u8) {
        self.ids.push(id);
        self.keys.push(key128(&id.0));
        self.eps.push(ep);
        self.buckets.push(b);
    }
    fn set(&mut self, i: usize, id: NodeId, ep: EpIdx, b: u8) {
        self.ids[i] = id;
        self.keys[i] = key128(&id.0);
        self.eps[i] = ep;
        self.buckets[i] = b;
    }
    fn position(&self, ep: EpIdx) -> Option<usize> {
        // Whole chunks compared without branches (vectorised), then the hit.
        for (c, chunk) in self.eps.chunks(16).enumerate() {
            if chunk.iter().fold(false, |hit, &e| hit | (e == ep)) {
                return chunk.iter().position(|&e| e == ep).map(|i| c * 16 + i);
            }
        }
        None
    }
}

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
            store: Vec::new(),
            sample: Vec::new(),
            sample_num: 0,
            sample_at: None,
            secret,
            stats: HonestStats::default(),
        }
    }

    /// Replaces the table with `eps` (ids taken from the directory).
    pub fn set_table(&mut self, dir: &Directory, eps: &[EpIdx]) {
        self.table.clear();
        for &ep in eps {
            let id = dir.get(ep).id;
            if id != self.id {
                self.table.push(id, ep, bucket_of(&self.id, &id));
            }
        }
    }

    pub fn table_len(&self) -> usize {
        self.table.eps.len()
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
            if self.table.ids[i] != id {
                // A node that changes its id keeps its slot with the new id.
                let b = bucket_of(&self.id, &id);
                self.table.set(i, id, ep, b);
            }
            return;
        }
        let b = bucket_of(&self.id, &id);
        let mut n = 0;
        let mut dead = None;
        for (i, &eb) in self.table.buckets.iter().enumerate() {
            if eb == b {
                n += 1;
                if dead.is_none() && !dir.get(self.table.eps[i]).alive {
                    dead = Some(i);
                }
            }
        }
        if n < K {
            self.table.push(id, ep, b);
        } else if let Some(i) = dead {
            self.table.set(i, id, ep, b);
        }
    }

    /// The `K` known contacts closest to `target`, nearest first (by the first
    /// 128 bits of the distance; ties keep table order).
    ///
    /// Buckets order the search: with `bt` the bucket `target` would fall in,
    /// contacts of bucket `bt` are closer to it than those of deeper buckets,
    /// which are closer than those of shallower ones. So the usual case (a
    /// random target, a full bucket `bt`) ranks 8 contacts, not the whole table.
    /// The result is the one a full scan gives.
    fn closest(&self, target: &[u8; 20], out: &mut [(u128, usize); K]) -> usize {
        let t = key128(target);
        let bt = bucket_of(&self.id, &NodeId(*target));
        let mut n = 0;
        if bt >= 100 {
            // The 128-bit keys no longer order the buckets: rank everything.
            for j in 0..self.table.keys.len() {
                Self::rank(&mut n, out, self.table.keys[j] ^ t, j);
            }
            return n;
        }
        let b = &self.table.buckets;
        for pass in 0..3 {
            for (j, &eb) in b.iter().enumerate() {
                let take = match pass {
                    0 => eb == bt,
                    1 => eb > bt,
                    _ => eb < bt,
                };
                if take {
                    Self::rank(&mut n, out, self.table.keys[j] ^ t, j);
                }
            }
            if n == K {
                break;
            }
        }
        n
    }

    /// Inserts table entry `j` at distance `d` into the sorted top-`K` list.
    #[inline]
    fn rank(n: &mut usize, out: &mut [(u128, usize); K], d: u128, j: usize) {
        if *n == K && d >= out[K - 1].0 {
            return;
        }
        let mut i = (*n).min(K - 1);
        while i > 0 && out[i - 1].0 > d {
            out[i] = out[i - 1];
            i -= 1;
        }
        out[i] = (d, j);
        if *n < K {
            *n += 1;
        }
    }

    fn write_nodes(&self, dir: &Directory, target: &[u8; 20], buf: &mut Vec<u8>) {
        let mut near = [(0u128, 0usize); K];
        let n = self.closest(target, &mut near);
        for &(_, j) in &near[..n] {
            let ep = self.table.eps[j];
            krpc::write_compact_node(&self.table.ids[j], &dir.get(ep).addr, buf);
        }
    }

    /// Stores an announce (also used to preload the world before time 0).
    pub fn store(&mut self, ih: InfoHash, peer: SocketAddr, expires_secs: u32) {
        let (ip, port) = (ip4(peer.ip()), peer.port());
        let pos = self.store.partition_point(|s| InfoHash(s.ih) < ih);
        let same = self.store[pos..]
            .iter()
            .take_while(|s| s.ih == ih.0)
            .position(|s| s.ip == ip && s.port == port);
        if let Some(j) = same {
            self.store[pos + j].expires = expires_secs;
            return;
        }
        if self.store.len() >= MAX_STORE {
            // Evict the entry closest to expiry.
            if let Some(i) = (0..self.store.len()).min_by_key(|&i| self.store[i].expires) {
                self.store.remove(i);
            }
        }
        let pos = self.store.partition_point(|s| InfoHash(s.ih) < ih);
        self.store.insert(
            pos,
            Stored {
                ih: ih.0,
                ip,
                port,
                expires: expires_secs,
            },
        );
    }

    pub fn stored_len(&self) -> usize {
        self.store.len()
    }

    /// Whether a live announce for `ih` is stored.
    pub fn holds(&self, ih: &InfoHash, now: Timestamp) -> bool {
        let now_s = now.as_secs() as u32;
        let pos = self.store.partition_point(|s| InfoHash(s.ih) < *ih);
        self.store[pos..]
            .iter()
            .take_while(|s| s.ih == ih.0)
            .any(|s| s.expires > now_s)
    }

    fn purge(&mut self, now: Timestamp) {
        let now_s = now.as_secs() as u32;
        self.store.retain(|s| s.expires > now_s);
    }

    fn token(&self, ip: IpAddr, epoch: u64) -> [u8; 8] {
        mix(self.secret ^ mix(ip4(ip) as u64 ^ epoch << 32)).to_be_bytes()
    }

    fn token_ok(&self, ip: IpAddr, now: Timestamp, t: &[u8]) -> bool {
        let e = now.as_secs() / TOKEN_EPOCH_SECS;
        t == self.token(ip, e) || (e > 0 && t == self.token(ip, e - 1))
    }

    fn refresh_sample(&mut self, ctx: &mut Ctx<'_>) {
        let due = self
            .sample_at
            .is_none_or(|t| ctx.now.as_secs() >= t.as_secs() + self.interval as u64);
        if !due {
            return;
        }
        self.purge(ctx.now);
        self.sample_at = Some(ctx.now);
        self.sample.clear();
        let mut distinct: Vec<[u8; 20]> = Vec::new();
        for s in &self.store {
            if distinct.last() != Some(&s.ih) {
                distinct.push(s.ih);
            }
        }
        self.sample_num = distinct.len() as u32;
        if distinct.len() <= MAX_SAMPLES {
            self.sample.extend(distinct.into_iter().map(InfoHash));
        } else {
            for i in 0..MAX_SAMPLES {
                let j = i + ctx.rng.index(distinct.len() - i);
                distinct.swap(i, j);
                self.sample.push(InfoHash(distinct[i]));
            }
        }
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
                let pos = self.store.partition_point(|s| InfoHash(s.ih) < *info_hash);
                for s in self.store[pos..]
                    .iter()
                    .take_while(|s| s.ih == info_hash.0)
                    .filter(|s| s.expires > now_s)
                    .take(50)
                {
                    values.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(s.ip)), s.port));
                }
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
                self.refresh_sample(ctx);
                self.write_nodes(ctx.dir, &target.0, nodes);
                for ih in &self.sample {
                    samples.extend_from_slice(&ih.0);
                }
                resp.samples = Samples::new(samples);
                resp.num = Some(self.sample_num as i64);
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
        if let Some(&ep) = self.table.eps.get(ctx.rng.index(self.table.eps.len())) {
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
    use magnetar_core::rng::Rng;

    /// The bucket-ordered search gives what ranking the whole table gives.
    #[test]
    fn closest_matches_a_full_ranking() {
        let mut rng = Rng::new(5);
        for round in 0..40 {
            let own = NodeId::random(&mut rng);
            let mut h = HonestNode::new(own, 1);
            // A table with full shallow buckets, sparse deep ones, and a few ids
            // sharing a long prefix with ours.
            for i in 0..300u32 {
                let mut id = NodeId::random(&mut rng);
                if i % 7 == 0 {
                    let keep = 1 + rng.index(19);
                    id.0[..keep].copy_from_slice(&own.0[..keep]);
                }
                let b = bucket_of(&own, &id);
                let full = h.table.buckets.iter().filter(|&&x| x == b).count() >= K;
                if id != own && !full {
                    h.table.push(id, i, b);
                }
            }
            for q in 0..50 {
                let mut target: [u8; 20] = rng.bytes();
                if q % 3 == 0 {
                    // Near our own id, as a BEP 51 crawler's targets are.
                    let keep = rng.index(20);
                    target[..keep].copy_from_slice(&own.0[..keep]);
                }
                let mut got = [(0u128, 0usize); K];
                let n = h.closest(&target, &mut got);
                let t = key128(&target);
                let mut all: Vec<(u128, usize)> = h
                    .table
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(j, k)| (k ^ t, j))
                    .collect();
                all.sort();
                all.truncate(K);
                assert_eq!(&got[..n], &all[..], "round {round} query {q}");
            }
        }
    }
}
