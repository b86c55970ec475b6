//! Hostile DHT parties and a well-behaved probe.
//!
//! - [`Adversary`]: garbage senders, id spoofers and floods, aimed at one target.
//! - [`Prober`]: an honest node that keeps asking the target and counts answers
//!   (are honest nodes still served during an attack?).

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use magnetar_core::krpc::{self, Body, CompactNodesV4, Message, Query, QueryKind, Response};
use magnetar_core::{InfoHash, NodeId, Timestamp};

use crate::world::{Ctx, SimNode};

/// What an adversary does, every `every`.
#[derive(Clone, Debug)]
pub enum Attack {
    /// Random bytes, truncated and mistyped bencode, unknown methods.
    Garbage,
    /// Queries and answers that claim the target's id or other nodes' ids, and
    /// unsolicited responses with forged `nodes` pointing at nowhere.
    Spoof { victim_ids: Vec<NodeId> },
    /// Queries (get_peers, find_node, sample_infohashes, announce_peer with bad
    /// tokens) from `sources` forged source addresses.
    Flood { sources: u32 },
    /// Valid announces of random infohashes (get_peers for a token first).
    AnnounceFlood,
}

#[derive(Clone, Debug, Default)]
pub struct AdversaryStats {
    pub sent: u64,
    pub replies: u64,
}

pub struct Adversary {
    pub id: NodeId,
    pub target: SocketAddr,
    pub attack: Attack,
    /// Datagrams per wake.
    pub burst: u32,
    pub every: Duration,
    pub until: Timestamp,
    pub stats: AdversaryStats,
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    krpc::encode(m, &mut b);
    b
}

fn query(id: NodeId, tid: &[u8], kind: QueryKind<'_>) -> Vec<u8> {
    encode(&Message {
        tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Query(Query {
            id,
            want: None,
            kind,
        }),
    })
}

impl Adversary {
    pub fn new(
        id: NodeId,
        target: SocketAddr,
        attack: Attack,
        burst: u32,
        every: Duration,
    ) -> Self {
        Adversary {
            id,
            target,
            attack,
            burst,
            every,
            until: Timestamp::MAX,
            stats: AdversaryStats::default(),
        }
    }

    fn one(&mut self, ctx: &mut Ctx<'_>) {
        let r = &mut *ctx.rng;
        let tid = r.bytes::<2>();
        match &self.attack {
            Attack::Garbage => {
                let b: Vec<u8> = match r.below(6) {
                    0 => {
                        let mut v = vec![0u8; 1 + r.index(300)];
                        r.fill(&mut v);
                        v
                    }
                    1 => b"d1:ad2:id20:".to_vec(),
                    2 => b"d1:q4:ping1:t2:aa1:y1:qe".to_vec(),
                    3 => b"d1:ad2:idi5ee1:q9:find_node1:t2:aa1:y1:qe".to_vec(),
                    4 => b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:xyze1:t2:zz1:y1:re".to_vec(),
                    _ => query(
                        self.id,
                        &tid,
                        QueryKind::Unknown {
                            method: b"vote",
                            target: None,
                            info_hash: None,
                        },
                    ),
                };
                ctx.send(0, self.target, b);
            }
            Attack::Spoof { victim_ids } => {
                let claimed = if victim_ids.is_empty() || r.chance(0.3) {
                    NodeId::random(r)
                } else {
                    victim_ids[r.index(victim_ids.len())]
                };
                if r.chance(0.5) {
                    // A query claiming someone else's id.
                    let b = query(claimed, &tid, QueryKind::Ping);
                    ctx.send(0, self.target, b);
                } else {
                    // An unsolicited answer with forged nodes at made-up addresses.
                    let mut nodes = Vec::new();
                    for _ in 0..8 {
                        let ip = Ipv4Addr::from(r.next_u32() | 0x0100_0000);
                        let a = SocketAddr::new(IpAddr::V4(ip), 1 + r.below(65_000) as u16);
                        krpc::write_compact_node(&NodeId::random(r), &a, &mut nodes);
                    }
                    let b = encode(&Message {
                        tid: &tid,
                        version: None,
                        ip: None,
                        read_only: false,
                        body: Body::Response(Response {
                            id: claimed,
                            nodes: CompactNodesV4::new(&nodes),
                            ..Response::default()
                        }),
                    });
                    ctx.send(0, self.target, b);
                }
            }
            Attack::Flood { sources } => {
                let src_ip =
                    Ipv4Addr::from(0x2d00_0000 + r.below(*sources as u64) as u32 * 256 + 7);
                let src = SocketAddr::new(IpAddr::V4(src_ip), 6881);
                let id = NodeId::random(r);
                let ih = InfoHash::random(r);
                let b = match r.below(4) {
                    0 => query(
                        id,
                        &tid,
                        QueryKind::GetPeers {
                            info_hash: ih,
                            scrape: true,
                            noseed: false,
                        },
                    ),
                    1 => query(id, &tid, QueryKind::FindNode { target: id }),
                    2 => query(id, &tid, QueryKind::SampleInfohashes { target: id }),
                    _ => query(
                        id,
                        &tid,
                        QueryKind::AnnouncePeer {
                            info_hash: ih,
                            port: 6881,
                            implied_port: false,
                            token: b"forged",
                            seed: None,
                        },
                    ),
                };
                ctx.send_spoofed(src, self.target, b);
            }
            Attack::AnnounceFlood => {
                let ih = InfoHash::random(r);
                let b = query(
                    self.id,
                    b"gp",
                    QueryKind::GetPeers {
                        info_hash: ih,
                        scrape: false,
                        noseed: false,
                    },
                );
                ctx.send(0, self.target, b);
            }
        }
        self.stats.sent += 1;
    }
}

impl SimNode for Adversary {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, local: u16, from: SocketAddr, bytes: &[u8]) {
        self.stats.replies += 1;
        if !matches!(self.attack, Attack::AnnounceFlood) {
            return;
        }
        // Use the token on a burst of random infohashes.
        let Ok(m) = krpc::decode(bytes) else {
            return;
        };
        let Body::Response(r) = &m.body else {
            return;
        };
        let Some(token) = r.token else {
            return;
        };
        for _ in 0..4 {
            let ih = InfoHash::random(ctx.rng);
            let b = query(
                self.id,
                b"an",
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 1 + ctx.rng.below(65_000) as u16,
                    implied_port: false,
                    token,
                    seed: None,
                },
            );
            ctx.send(local, from, b);
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        if ctx.now >= self.until {
            return;
        }
        for _ in 0..self.burst {
            self.one(ctx);
        }
        ctx.wake_at(ctx.now.add(self.every));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// An honest node that pings / find_nodes / get_peers its target every `every`
/// and counts correct answers.
pub struct Prober {
    pub id: NodeId,
    pub target: SocketAddr,
    pub every: Duration,
    pub sent: u64,
    pub answered: u64,
    pub bad: u64,
    /// The last bad answer, for diagnosis.
    pub last_bad: Vec<u8>,
    /// The id the target answered with, if stable.
    pub target_id: Option<NodeId>,
    next_tid: u16,
}

impl Prober {
    pub fn new(id: NodeId, target: SocketAddr, every: Duration) -> Self {
        Prober {
            id,
            target,
            every,
            sent: 0,
            answered: 0,
            bad: 0,
            last_bad: Vec::new(),
            target_id: None,
            next_tid: 0,
        }
    }
}

impl SimNode for Prober {
    fn on_datagram(&mut self, _ctx: &mut Ctx<'_>, _l: u16, from: SocketAddr, bytes: &[u8]) {
        if from != self.target {
            return;
        }
        match krpc::decode(bytes) {
            Ok(Message {
                body: Body::Response(r),
                ..
            }) if self.target_id.is_none_or(|t| t == r.id) => {
                self.target_id = Some(r.id);
                self.answered += 1;
            }
            // The target may query us too (it crawls): not an answer.
            Ok(Message {
                body: Body::Query(_),
                ..
            }) => {}
            _ => {
                self.bad += 1;
                self.last_bad = bytes.to_vec();
            }
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        self.next_tid = self.next_tid.wrapping_add(1);
        let tid = self.next_tid.to_be_bytes();
        let kind = match self.next_tid % 3 {
            0 => QueryKind::Ping,
            1 => QueryKind::FindNode {
                target: NodeId::random(ctx.rng),
            },
            _ => QueryKind::GetPeers {
                info_hash: InfoHash::random(ctx.rng),
                scrape: false,
                noseed: false,
            },
        };
        ctx.send(0, self.target, query(self.id, &tid, kind));
        self.sent += 1;
        ctx.wake_at(ctx.now.add(self.every));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
