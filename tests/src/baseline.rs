//! Models of other crawlers for the discovery comparison.
//!
//! - **magnetico v0.12**: a neighbour set of up to 1 000 nodes filled from
//!   `nodes` in replies; every second it sends `sample_infohashes` to every
//!   neighbour and empties the set; it counts only the first infohash of each
//!   `samples` and sends one get_peers for it to the node that gave it.
//! - **bitmagnet**: samples at most 60 nodes per second from a queue of learned
//!   nodes, revisits productive nodes after 60 s, and sends one get_peers per new
//!   sampled infohash to the node that gave it.
//!
//! Both bootstrap with find_node when they know nobody. The network gives them the
//! same outgoing packet budget as magnetar.

use std::any::Any;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::{InfoHash, NodeId, Timestamp};

use crate::util::{FxMap, FxSet};
use crate::world::{Ctx, SimNode};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Model {
    Magnetico,
    Bitmagnet,
}

#[derive(Copy, Clone, Debug)]
enum Purpose {
    FindNode,
    Sample,
    GetPeers(InfoHash),
}

#[derive(Clone, Debug, Default)]
pub struct BaselineStats {
    pub queries_sent: u64,
    pub replies: u64,
    pub samples_received: u64,
    pub get_peers_sent: u64,
}

pub struct Baseline {
    pub id: NodeId,
    pub model: Model,
    pub routers: Vec<SocketAddr>,
    /// magnetico: the neighbour set; bitmagnet: the queue of nodes to sample.
    nodes: VecDeque<SocketAddr>,
    known: FxSet<SocketAddr>,
    /// bitmagnet: productive nodes to sample again, with their time.
    revisit: VecDeque<(Timestamp, SocketAddr)>,
    txs: FxMap<u16, Purpose>,
    next_tid: u16,
    /// First time each infohash was discovered.
    pub discovered: FxMap<InfoHash, Timestamp>,
    /// Infohashes for which get_peers returned peers.
    pub with_peers: FxMap<InfoHash, Vec<SocketAddr>>,
    pub stats: BaselineStats,
}

const MAGNETICO_MAX_NEIGHBOURS: usize = 1000;
const BITMAGNET_PER_SEC: usize = 60;
const BITMAGNET_REVISIT: Duration = Duration::from_secs(60);
const MAX_KNOWN: usize = 200_000;

impl Baseline {
    pub fn new(id: NodeId, model: Model, routers: Vec<SocketAddr>) -> Self {
        Baseline {
            id,
            model,
            routers,
            nodes: VecDeque::new(),
            known: FxSet::default(),
            revisit: VecDeque::new(),
            txs: FxMap::default(),
            next_tid: 0,
            discovered: FxMap::default(),
            with_peers: FxMap::default(),
            stats: BaselineStats::default(),
        }
    }

    /// Memory figure: nodes held plus transactions outstanding.
    pub fn held(&self) -> (usize, usize, usize) {
        (
            self.nodes.len() + self.revisit.len(),
            self.known.len(),
            self.txs.len(),
        )
    }

    fn send(&mut self, ctx: &mut Ctx<'_>, to: SocketAddr, purpose: Purpose, kind: QueryKind<'_>) {
        self.next_tid = self.next_tid.wrapping_add(1);
        let tid = self.next_tid.to_be_bytes();
        // 65 536 tids in flight at most: an old one is simply overwritten.
        self.txs.insert(self.next_tid, purpose);
        let m = Message {
            tid: &tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query(Query {
                id: self.id,
                want: None,
                kind,
            }),
        };
        let mut b = Vec::with_capacity(96);
        krpc::encode(&m, &mut b);
        self.stats.queries_sent += 1;
        ctx.send(0, to, b);
    }

    fn learn(&mut self, a: SocketAddr) {
        match self.model {
            Model::Magnetico => {
                // `known` mirrors the neighbour set (emptied with it each second).
                if self.nodes.len() < MAGNETICO_MAX_NEIGHBOURS && self.known.insert(a) {
                    self.nodes.push_back(a);
                }
            }
            Model::Bitmagnet => {
                if self.known.len() < MAX_KNOWN && self.known.insert(a) {
                    self.nodes.push_back(a);
                }
            }
        }
    }

    fn bootstrap(&mut self, ctx: &mut Ctx<'_>) {
        let routers = self.routers.clone();
        for r in routers {
            let target = NodeId::random(ctx.rng);
            self.send(ctx, r, Purpose::FindNode, QueryKind::FindNode { target });
        }
    }
}

impl SimNode for Baseline {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, _l: u16, from: SocketAddr, bytes: &[u8]) {
        let Ok(m) = krpc::decode(bytes) else {
            return;
        };
        let Body::Response(r) = &m.body else {
            return;
        };
        let Ok(tid) = <[u8; 2]>::try_from(m.tid) else {
            return;
        };
        let Some(purpose) = self.txs.remove(&u16::from_be_bytes(tid)) else {
            return;
        };
        self.stats.replies += 1;
        if let Some(nodes) = &r.nodes {
            for (_, a) in nodes.iter() {
                self.learn(a);
            }
        }
        match purpose {
            Purpose::FindNode => {}
            Purpose::Sample => {
                let Some(samples) = &r.samples else {
                    return;
                };
                self.stats.samples_received += samples.len() as u64;
                let mut new = false;
                let take = match self.model {
                    Model::Magnetico => 1,
                    Model::Bitmagnet => usize::MAX,
                };
                for ih in samples.iter().take(take) {
                    if self.discovered.contains_key(&ih) {
                        continue;
                    }
                    new = true;
                    self.discovered.insert(ih, ctx.now);
                    self.stats.get_peers_sent += 1;
                    self.send(
                        ctx,
                        from,
                        Purpose::GetPeers(ih),
                        QueryKind::GetPeers {
                            info_hash: ih,
                            scrape: false,
                            noseed: false,
                        },
                    );
                }
                if new && self.model == Model::Bitmagnet {
                    self.revisit
                        .push_back((ctx.now.add(BITMAGNET_REVISIT), from));
                }
            }
            Purpose::GetPeers(ih) => {
                if let Some(v) = &r.values {
                    if !v.is_empty() {
                        self.with_peers.entry(ih).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        match self.model {
            Model::Magnetico => {
                if self.nodes.is_empty() {
                    self.bootstrap(ctx);
                } else {
                    let all: Vec<SocketAddr> = self.nodes.drain(..).collect();
                    self.known.clear();
                    for a in all {
                        let target = NodeId::random(ctx.rng);
                        self.send(
                            ctx,
                            a,
                            Purpose::Sample,
                            QueryKind::SampleInfohashes { target },
                        );
                    }
                }
            }
            Model::Bitmagnet => {
                let mut n = 0;
                while n < BITMAGNET_PER_SEC {
                    let a = if self.revisit.front().is_some_and(|r| r.0 <= ctx.now) {
                        self.revisit.pop_front().map(|r| r.1)
                    } else {
                        self.nodes.pop_front()
                    };
                    let Some(a) = a else {
                        break;
                    };
                    let target = NodeId::random(ctx.rng);
                    self.send(
                        ctx,
                        a,
                        Purpose::Sample,
                        QueryKind::SampleInfohashes { target },
                    );
                    n += 1;
                }
                if n == 0 {
                    self.bootstrap(ctx);
                }
            }
        }
        ctx.wake_at(ctx.now.add(Duration::from_secs(1)));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
