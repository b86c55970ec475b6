//! BitTorrent clients: they hold torrents, announce them now and then to the
//! closest DHT nodes (get_peers for a token, then announce_peer), and serve
//! metadata over the TCP model with a chosen behaviour.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::{CloseReason, InfoHash, NodeId};

use crate::truth::info_dict;
use crate::util::FxMap;
use crate::world::{Ctx, SimNode, TcpId};

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
}

pub struct Client {
    pub id: NodeId,
    pub behaviour: SeedBehaviour,
    pub torrents: Vec<Held>,
    pub announce_every: Duration,
    next: usize,
    next_announce: Option<magnetar_core::Timestamp>,
    /// Open serving sessions.
    sessions: FxMap<TcpId, crate::seeder::Serving>,
    pub stats: ClientStats,
}

impl Client {
    pub fn new(id: NodeId, behaviour: SeedBehaviour, announce_every: Duration) -> Self {
        Client {
            id,
            behaviour,
            torrents: Vec::new(),
            announce_every,
            next: 0,
            next_announce: None,
            sessions: FxMap::default(),
            stats: ClientStats::default(),
        }
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

    /// Announces the next torrent: get_peers to its closest responsive nodes.
    fn announce_next(&mut self, ctx: &mut Ctx<'_>) {
        if self.torrents.is_empty() {
            return;
        }
        let slot = self.next % self.torrents.len();
        self.next += 1;
        let ih = self.torrents[slot].ih;
        let mut near = Vec::new();
        ctx.dir
            .closest(&ih.0, 8, &|e| e.responsive && e.alive, &mut near);
        let tid = (slot as u32).to_be_bytes();
        let q = self.query(
            &tid,
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        );
        for ep in near {
            ctx.send(0, ctx.dir.get(ep).addr, q.clone());
        }
    }

    fn pause(&self, ctx: &mut Ctx<'_>) -> Duration {
        let n = self.torrents.len().max(1) as u32;
        let base = self.announce_every / n;
        // ±25 % jitter.
        let j = base.as_nanos() as u64 / 2;
        base - Duration::from_nanos(j / 2) + Duration::from_nanos(ctx.rng.below(j + 1))
    }
}

impl SimNode for Client {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, local: u16, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = krpc::decode(bytes) else {
            return;
        };
        let Body::Response(r) = &msg.body else {
            return;
        };
        let (Some(token), Ok(slot)) = (r.token, <[u8; 4]>::try_from(msg.tid)) else {
            return;
        };
        let Some(t) = self.torrents.get(u32::from_be_bytes(slot) as usize) else {
            return;
        };
        self.stats.tokens_received += 1;
        let port = ctx.addr(local).port();
        let q = self.query(
            b"an",
            QueryKind::AnnouncePeer {
                info_hash: t.ih,
                port,
                implied_port: false,
                token,
                seed: Some(true),
            },
        );
        self.stats.announces_sent += 1;
        ctx.send(local, from, q);
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let held = crate::seeder::wake_sessions(&mut self.sessions, ctx);
        if self.next_announce.is_none_or(|t| t <= ctx.now) {
            self.announce_next(ctx);
            let p = self.pause(ctx);
            self.next_announce = Some(ctx.now.add(p));
        }
        let mut t = self.next_announce.unwrap_or(ctx.now);
        if let Some(h) = held {
            t = t.min(h);
        }
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
            // A slow session's release must not cancel the announce timer.
            if let (Some(r), Some(a)) = (s.next_release(), self.next_announce) {
                ctx.wake_at(r.min(a));
            }
        }
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
