//! The honest DHT server: the [`Responder`] that answers ping, find_node,
//! get_peers, announce_peer and sample_infohashes (BEP 5, 32, 33, 51), with
//! what it keeps in order to answer: the tokens, the announce store (peers
//! from valid announce_peer queries, bounded, with expiry) and a per-IP answer
//! rate limiter.
//!
//! The responder takes a decoded query and a view of the node (its identities
//! and routing tables, the id to show) and returns the encoded reply and what
//! it captured (an infohash heard in get_peers or announce_peer); the crawler
//! routes the capture to the crawl strategy and the reply to the socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::addr::Family;
use crate::bloom::Bloom;
use crate::fault::Fault;
use crate::id::{InfoHash, NodeId};
use crate::identity::Identity;
use crate::krpc::{
    self, error_code, Body, CompactNodesV4, CompactNodesV6, KrpcError, Message, Query, QueryKind,
    Response, Samples, Want,
};
pub use crate::limiter::RateLimiter;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::tokens::Tokens;
use crate::DiscoverySource;

#[derive(Clone, Debug)]
struct StoredPeer {
    addr: SocketAddr,
    seed: bool,
    expires: Timestamp,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    peers: Vec<StoredPeer>,
    touched: Timestamp,
}

/// Peers announced to us, per infohash. Bounded in infohashes and in peers per
/// infohash; the least recently announced infohash is evicted first.
pub struct AnnounceStore {
    map: BTreeMap<InfoHash, Entry>,
    lru: BTreeSet<(Timestamp, InfoHash)>,
    max_infohashes: usize,
    max_peers: usize,
    ttl: Duration,
    /// Infohashes and peers evicted to stay within the bounds.
    pub evictions: u64,
}

impl AnnounceStore {
    /// A store of at most `max_infohashes` infohashes with `max_peers` peers
    /// each, every peer kept `ttl` after its last announce.
    pub fn new(max_infohashes: usize, max_peers: usize, ttl: Duration) -> Self {
        AnnounceStore {
            map: BTreeMap::new(),
            lru: BTreeSet::new(),
            max_infohashes: max_infohashes.max(1),
            max_peers: max_peers.max(1),
            ttl,
            evictions: 0,
        }
    }

    /// Infohashes stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Stores (or refreshes) `addr` as a peer of `ih`.
    pub fn announce(&mut self, now: Timestamp, ih: InfoHash, addr: SocketAddr, seed: bool) {
        if !self.map.contains_key(&ih) && self.map.len() >= self.max_infohashes {
            if let Some((_, old)) = self.lru.pop_first() {
                self.map.remove(&old);
                self.evictions += 1;
            }
        }
        let e = self.map.entry(ih).or_default();
        self.lru.remove(&(e.touched, ih));
        e.touched = now;
        self.lru.insert((now, ih));
        let expires = now.add(self.ttl);
        e.peers.retain(|p| p.expires > now);
        if let Some(p) = e.peers.iter_mut().find(|p| p.addr == addr) {
            p.expires = expires;
            p.seed = seed;
        } else {
            if e.peers.len() >= self.max_peers {
                // Drop the peer closest to expiry.
                if let Some(i) = e
                    .peers
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| p.expires)
                    .map(|(i, _)| i)
                {
                    e.peers.swap_remove(i);
                    self.evictions += 1;
                }
            }
            e.peers.push(StoredPeer {
                addr,
                seed,
                expires,
            });
        }
    }

    /// Up to `max` live peers of the given family for `ih` (`noseed` skips seeds).
    pub fn peers(
        &self,
        now: Timestamp,
        ih: &InfoHash,
        v6: bool,
        noseed: bool,
        max: usize,
    ) -> Vec<SocketAddr> {
        let Some(e) = self.map.get(ih) else {
            return Vec::new();
        };
        e.peers
            .iter()
            .filter(|p| p.expires > now && p.addr.is_ipv6() == v6 && !(noseed && p.seed))
            .take(max)
            .map(|p| p.addr)
            .collect()
    }

    /// BEP 33 bloom filters (seeds, peers) for `ih`.
    pub fn scrape(&self, now: Timestamp, ih: &InfoHash) -> (Bloom, Bloom) {
        let mut seeds = Bloom::default();
        let mut peers = Bloom::default();
        if let Some(e) = self.map.get(ih) {
            for p in e.peers.iter().filter(|p| p.expires > now) {
                if p.seed {
                    seeds.insert(p.addr.ip());
                } else {
                    peers.insert(p.addr.ip());
                }
            }
        }
        (seeds, peers)
    }

    /// A random sample of up to `max` stored infohashes (a contiguous run from a
    /// random point in the key space, wrapping around).
    pub fn sample(&self, rng: &mut Rng, max: usize, out: &mut Vec<InfoHash>) {
        if self.map.is_empty() || max == 0 {
            return;
        }
        let start = InfoHash(rng.bytes());
        for ih in self
            .map
            .range(start..)
            .chain(self.map.range(..start))
            .map(|(k, _)| *k)
            .take(max)
        {
            out.push(ih);
        }
    }

    /// Drops expired peers and empty infohashes, at most `budget` infohashes per call.
    pub fn expire(&mut self, now: Timestamp, budget: usize) {
        let horizon = now.sub(self.ttl);
        let stale: Vec<_> = self
            .lru
            .iter()
            .take_while(|(t, _)| *t <= horizon)
            .take(budget)
            .copied()
            .collect();
        for (t, ih) in stale {
            self.lru.remove(&(t, ih));
            self.map.remove(&ih);
        }
    }
}

/// What the responder needs to know about the node to answer one query.
pub(crate) struct Ask<'a> {
    /// Now.
    pub now: Timestamp,
    /// The querier.
    pub from: SocketAddr,
    /// The identity the query came to.
    pub ident: usize,
    /// The id we show the querier.
    pub own: NodeId,
    /// Every identity, for the nodes of a reply (prefer `ident`'s table).
    pub ids: &'a [Identity],
    /// Nodes per family in a reply.
    pub k: usize,
    /// Most samples in a sample_infohashes reply.
    pub max_samples: usize,
    /// The `interval` of a sample_infohashes reply, seconds.
    pub sample_interval: u32,
    /// Our client version (`v`).
    pub version: Option<&'a [u8]>,
}

/// An infohash heard in a query to us.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Capture {
    /// The infohash.
    pub info_hash: InfoHash,
    /// get_peers or announce_peer.
    pub source: DiscoverySource,
    /// The announced peer (announce_peer only).
    pub peer: Option<SocketAddr>,
    /// A get_peers query with BEP 33 `noseed=1`: the querier looks up as a
    /// seeder of the infohash (libtorrent's announce lookups of a torrent it
    /// seeds set it; its table refreshes never do).
    pub noseed: bool,
}

/// The answer to one query.
pub(crate) enum Reply {
    /// An encoded response.
    Response(Vec<u8>),
    /// An encoded error, and the fault to count, if any.
    Error(Vec<u8>, Option<Fault>),
}

/// The honest server: tokens, announce store, answer limiter.
pub(crate) struct Responder {
    tokens: Tokens,
    store: AnnounceStore,
    limiter: RateLimiter,
}

impl Responder {
    /// A responder with these parts.
    pub fn new(tokens: Tokens, store: AnnounceStore, limiter: RateLimiter) -> Self {
        Responder {
            tokens,
            store,
            limiter,
        }
    }

    /// The announce store.
    pub fn store(&self) -> &AnnounceStore {
        &self.store
    }

    /// The answer limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Whether `from` may be answered now (and charges it if so).
    pub fn admit(&mut self, now: Timestamp, from: SocketAddr) -> bool {
        self.limiter.allow(now, from.ip())
    }

    /// Rotates tokens and expires stored peers (a little per call).
    pub fn maintain(&mut self, now: Timestamp) {
        self.tokens.tick(now);
        self.store.expire(now, 64);
    }

    /// Answers `q` (transaction `tid`): the reply to send and the infohash the
    /// query told us of, if any.
    pub fn answer(
        &mut self,
        ask: &Ask<'_>,
        rng: &mut Rng,
        tid: &[u8],
        q: &Query<'_>,
    ) -> (Reply, Option<Capture>) {
        let (now, from) = (ask.now, ask.from);
        let family = ask
            .ids
            .get(ask.ident)
            .map_or(Family::of(&from), |x| x.family);
        let want = q.want.unwrap_or(match family {
            Family::V4 => Want {
                n4: true,
                n6: false,
            },
            Family::V6 => Want {
                n4: false,
                n6: true,
            },
        });
        let mut resp = Response {
            id: ask.own,
            ..Response::default()
        };
        let (mut n4, mut n6) = (Vec::new(), Vec::new());
        let token;
        let mut values = Vec::new();
        let mut samples_buf = Vec::new();
        let (bf_s, bf_p);
        let mut capture = None;
        let error = |code, text: &[u8], fault| {
            let datagram = error_datagram(tid, ask.version, code, text);
            (Reply::Error(datagram, fault), None)
        };
        match q.kind {
            QueryKind::Ping => {}
            QueryKind::FindNode { target } => {
                compact_nodes(ask, &target.0, want, &mut n4, &mut n6);
            }
            QueryKind::GetPeers {
                info_hash,
                scrape,
                noseed,
            } => {
                capture = Some(Capture {
                    info_hash,
                    source: DiscoverySource::GetPeers,
                    peer: None,
                    noseed,
                });
                compact_nodes(ask, &info_hash.0, want, &mut n4, &mut n6);
                token = self.tokens.issue(now, from.ip());
                resp.token = Some(&token);
                values = self
                    .store
                    .peers(now, &info_hash, from.is_ipv6(), noseed, 50);
                if scrape {
                    (bf_s, bf_p) = self.store.scrape(now, &info_hash);
                    resp.bf_seeds = Some(&bf_s.0);
                    resp.bf_peers = Some(&bf_p.0);
                }
            }
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            } => {
                if !self.tokens.verify(now, from.ip(), token) {
                    return error(error_code::PROTOCOL, b"bad token", Some(Fault::BadToken));
                }
                let port = if implied_port { from.port() } else { port };
                let peer = SocketAddr::new(from.ip(), port);
                if port == 0 {
                    return error(error_code::PROTOCOL, b"bad port", None);
                }
                self.store
                    .announce(now, info_hash, peer, seed.unwrap_or(false));
                capture = Some(Capture {
                    info_hash,
                    source: DiscoverySource::Announce,
                    peer: Some(peer),
                    noseed: false,
                });
            }
            QueryKind::SampleInfohashes { target } => {
                compact_nodes(ask, &target.0, want, &mut n4, &mut n6);
                let mut s = Vec::new();
                self.store.sample(rng, ask.max_samples, &mut s);
                for ih in &s {
                    samples_buf.extend_from_slice(&ih.0);
                }
                resp.samples = Samples::new(&samples_buf);
                resp.num = Some(self.store.len() as i64);
                resp.interval = Some(ask.sample_interval as i64);
            }
            QueryKind::Unknown {
                target, info_hash, ..
            } => match target.map(|t| t.0).or(info_hash.map(|h| h.0)) {
                // Forward compatibility: a newer query that names a key gets nodes.
                Some(key) => compact_nodes(ask, &key, want, &mut n4, &mut n6),
                None => return error(error_code::METHOD_UNKNOWN, b"method unknown", None),
            },
        }
        if !values.is_empty() {
            resp.values = Some(values);
        }
        // Every query that names a key gets the wanted node keys, empty when we
        // know nobody (as libtorrent does; some clients treat a missing key as an
        // error). get_peers carries them next to `values` too, as libtorrent's
        // replies do: BEP 5 allows either, and nodes help the asker's traversal.
        let carries_nodes = match q.kind {
            QueryKind::Ping | QueryKind::AnnouncePeer { .. } => false,
            QueryKind::FindNode { .. }
            | QueryKind::GetPeers { .. }
            | QueryKind::SampleInfohashes { .. }
            | QueryKind::Unknown { .. } => true,
        };
        if carries_nodes && want.n4 {
            resp.nodes = CompactNodesV4::new(&n4);
        }
        if carries_nodes && want.n6 {
            resp.nodes6 = CompactNodesV6::new(&n6);
        }
        let reply = Message {
            tid,
            version: ask.version,
            ip: Some(from),
            read_only: false,
            body: Body::Response(resp),
        };
        (Reply::Response(encode(&reply)), capture)
    }
}

/// A KRPC message, encoded.
pub(crate) fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    krpc::encode(msg, &mut buf);
    buf
}

/// An encoded KRPC error for transaction `tid`.
pub(crate) fn error_datagram(
    tid: &[u8],
    version: Option<&[u8]>,
    code: i64,
    text: &[u8],
) -> Vec<u8> {
    encode(&Message {
        tid,
        version,
        ip: None,
        read_only: false,
        body: Body::Error(KrpcError {
            code,
            message: text,
        }),
    })
}

/// The `k` closest nodes to `target` in each wanted family, compact.
fn compact_nodes(ask: &Ask<'_>, target: &[u8; 20], want: Want, n4: &mut Vec<u8>, n6: &mut Vec<u8>) {
    let mut near = Vec::new();
    for (fam, on, buf) in [(Family::V4, want.n4, n4), (Family::V6, want.n6, n6)] {
        if !on {
            continue;
        }
        // Prefer the identity that received the query, else any of that family.
        let table = match ask.ids.get(ask.ident).filter(|x| x.family == fam) {
            Some(x) => &x.table,
            None => match ask.ids.iter().find(|x| x.family == fam) {
                Some(x) => &x.table,
                None => continue,
            },
        };
        near.clear();
        table.closest(target, ask.k, &mut near);
        for n in &near {
            krpc::write_compact_node(&n.id, &n.addr, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn store_bounds_expiry_and_sample() {
        let mut s = AnnounceStore::new(3, 2, Duration::from_secs(60));
        let t = Timestamp::from_secs(1);
        let ih = |b: u8| InfoHash([b; 20]);
        s.announce(t, ih(1), a("1.1.1.1:1"), false);
        s.announce(t, ih(1), a("1.1.1.2:1"), true);
        s.announce(t, ih(1), a("1.1.1.3:1"), false);
        assert_eq!(s.peers(t, &ih(1), false, false, 10).len(), 2);
        assert_eq!(s.evictions, 1);
        s.announce(t, ih(2), a("[::1]:1"), false);
        assert_eq!(s.peers(t, &ih(2), true, false, 10), vec![a("[::1]:1")]);
        assert!(s.peers(t, &ih(2), false, false, 10).is_empty());
        s.announce(Timestamp::from_secs(2), ih(3), a("1.1.1.1:1"), false);
        s.announce(Timestamp::from_secs(3), ih(4), a("1.1.1.1:1"), false);
        assert_eq!(s.len(), 3);
        assert!(
            s.peers(t, &ih(1), false, false, 10).is_empty()
                || s.peers(t, &ih(2), true, false, 10).is_empty()
        );
        let mut out = Vec::new();
        s.sample(&mut Rng::new(1), 10, &mut out);
        assert_eq!(out.len(), 3);
        out.sort();
        out.dedup();
        assert_eq!(out.len(), 3);
        // Expiry.
        let later = Timestamp::from_secs(1000);
        assert!(s.peers(later, &ih(4), false, false, 10).is_empty());
        s.expire(later, 100);
        assert!(s.is_empty());
    }

    #[test]
    fn scrape_filters() {
        let mut s = AnnounceStore::new(3, 10, Duration::from_secs(60));
        let t = Timestamp::ZERO;
        let ih = InfoHash([7; 20]);
        s.announce(t, ih, a("1.1.1.1:1"), true);
        s.announce(t, ih, a("1.1.1.2:1"), false);
        s.announce(t, ih, a("1.1.1.3:1"), false);
        let (seeds, peers) = s.scrape(t, &ih);
        assert_eq!(seeds.estimate().round(), 1.0);
        assert_eq!(peers.estimate().round(), 2.0);
        assert_eq!(s.peers(t, &ih, false, true, 10).len(), 2);
    }
}
