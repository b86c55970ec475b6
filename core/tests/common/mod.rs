//! A tiny deterministic network for core's integration tests: crawlers on
//! 127.0.0.x:6881, fixed latency, a priority queue of deliveries. (The full
//! simulator with loss, TCP and adversaries lives in the `magnetar-tests` crate.)
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::krpc::{self, Body, KrpcError, Message, Query, QueryKind, Response};
use magnetar_core::{Config, ConnId, Crawler, Event, Input, NodeId, Output, SocketId, Timestamp};

/// (time, sequence, destination index, source, bytes)
type Delivery = (Timestamp, u64, usize, SocketAddr, Vec<u8>);

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i >> 8) as u8, (i & 0xff) as u8 + 1], 6881))
}

/// A datagram sent by a crawler.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Timestamp,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Net {
    pub now: Timestamp,
    pub nodes: Vec<Crawler>,
    pub addrs: Vec<SocketAddr>,
    pub timers: Vec<Option<Timestamp>>,
    queue: BinaryHeap<Reverse<Delivery>>,
    seq: u64,
    pub latency: Duration,
    /// Datagrams sent to addresses that are not crawlers (probes, fakes).
    pub outside: Vec<Sent>,
    pub events: Vec<(usize, Event)>,
    pub trace: u64,
    pub delivered: u64,
    /// TCP connects asked for: (node, peer).
    pub connects: Vec<(usize, SocketAddr)>,
    /// The same with their connection ids.
    pub conn_ids: Vec<(usize, ConnId, SocketAddr)>,
}

impl Net {
    pub fn new(n: usize, seed: u64, tweak: impl Fn(usize, &mut Config)) -> Net {
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let mut c = Config::loopback_test(seed.wrapping_mul(1000).wrapping_add(i as u64));
            c.identities[0].bind = addr(i);
            tweak(i, &mut c);
            nodes.push(Crawler::new(c, Timestamp::ZERO));
            addrs.push(addr(i));
        }
        Net {
            now: Timestamp::ZERO,
            timers: vec![None; n],
            nodes,
            addrs,
            queue: BinaryHeap::new(),
            seq: 0,
            latency: Duration::from_millis(10),
            outside: Vec::new(),
            events: Vec::new(),
            trace: 0xcbf29ce484222325,
            delivered: 0,
            connects: Vec::new(),
            conn_ids: Vec::new(),
        }
    }

    fn index_of(&self, a: &SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|x| x == a)
    }

    fn hash(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.trace ^= *b as u64;
            self.trace = self.trace.wrapping_mul(0x100000001b3);
        }
    }

    /// Drains node `i`'s outputs into the network.
    pub fn drain(&mut self, i: usize) {
        for _ in 0..100_000 {
            match self.nodes[i].poll_output() {
                Output::Transmit { to, payload, .. } => {
                    let from = self.addrs[i];
                    self.send(from, to, payload.to_vec());
                }
                Output::Event(e) => self.events.push((i, e)),
                Output::Timeout(t) => {
                    // Core must never ask to be woken for work it could do now.
                    assert!(
                        t > self.now,
                        "node {i} asked for a timer at {t:?}, now {:?}",
                        self.now
                    );
                    self.timers[i] = Some(t);
                    return;
                }
                Output::Idle => {
                    self.timers[i] = None;
                    return;
                }
                Output::Connect { conn, to } => {
                    self.connects.push((i, to));
                    self.conn_ids.push((i, conn, to));
                }
                Output::Send { .. } | Output::Close { .. } => {}
            }
        }
        panic!("node {i} never stopped producing output");
    }

    /// Queues a datagram (from a crawler or from the test itself).
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        match self.index_of(&to) {
            Some(j) => {
                self.seq += 1;
                let at = self.now.add(self.latency);
                self.queue.push(Reverse((at, self.seq, j, from, bytes)));
            }
            None => self.outside.push(Sent {
                at: self.now,
                from,
                to,
                bytes,
            }),
        }
    }

    pub fn drain_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
    }

    /// One step: the earliest delivery or timer. False when nothing is left before `until`.
    pub fn step(&mut self, until: Timestamp) -> bool {
        let next_msg = self.queue.peek().map(|Reverse(d)| d.0);
        let next_timer = self.timers.iter().flatten().min().copied();
        let t = match (next_msg, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return false,
        };
        if t > until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(t);
        if next_msg == Some(t) {
            let Reverse((_, _, j, from, bytes)) = self.queue.pop().unwrap();
            self.hash(&bytes);
            self.delivered += 1;
            self.nodes[j].handle_input(Input::Datagram {
                at: self.now,
                local: SocketId(0),
                from,
                bytes: &bytes,
            });
            self.drain(j);
        } else {
            for i in 0..self.nodes.len() {
                if self.timers[i].is_some_and(|x| x <= self.now) {
                    self.nodes[i].handle_input(Input::Timeout(self.now));
                    self.drain(i);
                }
            }
        }
        true
    }

    /// Runs until virtual time `until` or `max_steps`, whichever first.
    pub fn run_until(&mut self, until: Timestamp, max_steps: u64) {
        let mut n = 0;
        while n < max_steps && self.step(until) {
            n += 1;
        }
    }

    pub fn bootstrap_all_from(&mut self, router: usize) {
        let r = self.addrs[router];
        for i in 0..self.nodes.len() {
            if i != router {
                self.nodes[i].bootstrap(self.now, &[r]);
            }
            self.drain(i);
        }
    }

    pub fn events_of(&self, i: usize) -> impl Iterator<Item = &Event> + '_ {
        self.events
            .iter()
            .filter(move |(j, _)| *j == i)
            .map(|(_, e)| e)
    }

    pub fn counts(&self) -> BTreeMap<usize, usize> {
        let mut m = BTreeMap::new();
        for (i, _) in &self.events {
            *m.entry(*i).or_insert(0) += 1;
        }
        m
    }
}

/// A KRPC query, encoded.
pub fn query(tid: &[u8], id: NodeId, kind: QueryKind<'_>) -> Vec<u8> {
    let m = Message {
        tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Query(Query {
            id,
            want: None,
            kind,
        }),
    };
    let mut out = Vec::new();
    krpc::encode(&m, &mut out);
    out
}

/// A KRPC response, encoded.
pub fn reply(tid: &[u8], resp: Response<'_>) -> Vec<u8> {
    let m = Message {
        tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Response(resp),
    };
    let mut out = Vec::new();
    krpc::encode(&m, &mut out);
    out
}

/// A KRPC error reply, encoded.
pub fn error(tid: &[u8], code: i64) -> Vec<u8> {
    let m = Message {
        tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Error(KrpcError {
            code,
            message: b"no",
        }),
    };
    let mut out = Vec::new();
    krpc::encode(&m, &mut out);
    out
}
