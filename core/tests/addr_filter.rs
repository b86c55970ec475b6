//! The address filter, per source: every address that comes from the network
//! (KRPC `nodes`/`nodes6`, get_peers `values`, an announcing peer, and PEX in
//! `fetch.rs`) passes `addr::is_sendable` with `Config::allow_private` before
//! anything is sent to it, and refusals are counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{query, reply};
use magnetar_core::krpc::{self, Body, CompactNodesV4, CompactNodesV6, QueryKind, Response};
use magnetar_core::Fault;
use magnetar_core::{Config, Crawler, Event, InfoHash, Input, NodeId, Output, SocketId, Timestamp};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Private, loopback and link-local addresses a hostile node hands out (IPv4).
const PRIVATE_V4: [&str; 4] = [
    "127.0.0.1:6881",
    "10.1.2.3:6881",
    "192.168.1.1:6881",
    "169.254.7.7:6881",
];
/// The same for IPv6 (unique-local, loopback, link-local, NAT64 of 10/8).
const PRIVATE_V6: [&str; 4] = [
    "[fd00::1]:6881",
    "[::1]:6881",
    "[fe80::1]:6881",
    "[64:ff9b::a00:1]:6881",
];

fn is_private(s: &SocketAddr) -> bool {
    PRIVATE_V4
        .iter()
        .chain(PRIVATE_V6.iter())
        .any(|p| a(p) == *s)
}

/// One crawler driven by hand, with every output recorded.
struct Drv {
    c: Crawler,
    now: Timestamp,
    /// Datagrams sent: (to, bytes).
    sent: Vec<(SocketAddr, Vec<u8>)>,
    /// TCP connections asked for.
    connects: Vec<SocketAddr>,
    events: Vec<Event>,
}

impl Drv {
    fn new(cfg: Config) -> Self {
        let now = Timestamp::from_secs(10);
        let mut d = Drv {
            c: Crawler::new(cfg, now),
            now,
            sent: Vec::new(),
            connects: Vec::new(),
            events: Vec::new(),
        };
        d.drain();
        d
    }

    fn drain(&mut self) {
        loop {
            match self.c.poll_output() {
                Output::Transmit { to, payload, .. } => self.sent.push((to, payload.to_vec())),
                Output::Connect { to, .. } => self.connects.push(to),
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) | Output::Idle => break,
                _ => {}
            }
        }
    }

    fn recv(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.c.handle_input(Input::Datagram {
            at: self.now,
            local: SocketId(0),
            from,
            bytes,
        });
        self.drain();
    }

    fn run(&mut self, d: Duration) {
        let end = self.now.add(d);
        while self.now < end {
            self.now = self.now.add(Duration::from_millis(100));
            self.c.handle_input(Input::Timeout(self.now));
            self.drain();
        }
    }

    /// The tid of the latest query of `method` sent to `to`.
    fn tid_of(&self, to: SocketAddr, method: &[u8]) -> Vec<u8> {
        self.sent
            .iter()
            .rev()
            .filter(|(t, _)| *t == to)
            .find_map(|(_, b)| {
                let m = krpc::decode(b).ok()?;
                match m.body {
                    Body::Query(q) if q.kind.method() == method => Some(m.tid.to_vec()),
                    _ => None,
                }
            })
            .expect("a query of that method")
    }

    fn sent_to_private(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .sent
            .iter()
            .map(|(t, _)| *t)
            .chain(self.connects.iter().copied())
            .filter(is_private)
            .collect();
        v.dedup();
        v
    }

    fn faults(&self, f: Fault) -> u64 {
        self.c.stats().dht.faults.get(&f).copied().unwrap_or(0)
    }
}

fn cfg(bind: &str, allow_private: bool, crawl: bool) -> Config {
    let mut c = Config::new(7, a(bind));
    c.allow_private = allow_private;
    c.crawl.enabled = crawl;
    c
}

fn compact_v4(nodes: &[(NodeId, SocketAddr)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (id, addr) in nodes {
        let SocketAddr::V4(v4) = addr else { panic!() };
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&v4.ip().octets());
        b.extend_from_slice(&v4.port().to_be_bytes());
    }
    b
}

fn compact_v6(nodes: &[(NodeId, SocketAddr)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (id, addr) in nodes {
        let SocketAddr::V6(v6) = addr else { panic!() };
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&v6.ip().octets());
        b.extend_from_slice(&v6.port().to_be_bytes());
    }
    b
}

/// A router answers the bootstrap find_node with `nodes`/`nodes6` that name
/// private addresses next to a public one.
fn bootstrap_with_nodes(v6: bool, allow_private: bool) -> Drv {
    let (bind, router, public, private) = if v6 {
        (
            "[::]:6881",
            a("[2001:4860::1]:6881"),
            a("[2a00:1450::5]:6881"),
            &PRIVATE_V6,
        )
    } else {
        (
            "0.0.0.0:6881",
            a("1.2.3.4:6881"),
            a("5.6.7.8:6881"),
            &PRIVATE_V4,
        )
    };
    let mut d = Drv::new(cfg(bind, allow_private, false));
    d.c.bootstrap(d.now, &[router]);
    d.drain();
    let tid = d.tid_of(router, b"find_node");
    let mut nodes: Vec<(NodeId, SocketAddr)> = private
        .iter()
        .enumerate()
        .map(|(i, p)| (NodeId([i as u8 + 1; 20]), a(p)))
        .collect();
    nodes.push((NodeId([0x77; 20]), public));
    let (b4, b6) = if v6 {
        (Vec::new(), compact_v6(&nodes))
    } else {
        (compact_v4(&nodes), Vec::new())
    };
    let resp = Response {
        id: NodeId([0x42; 20]),
        nodes: CompactNodesV4::new(&b4).filter(|_| !b4.is_empty()),
        nodes6: CompactNodesV6::new(&b6).filter(|_| !b6.is_empty()),
        ..Response::default()
    };
    d.recv(router, &reply(&tid, resp));
    d.run(Duration::from_secs(3));
    // The public node was asked either way.
    assert!(
        d.sent.iter().any(|(t, _)| *t == public),
        "public node asked"
    );
    d
}

#[test]
fn krpc_nodes_naming_private_addresses_are_dropped_and_counted() {
    // (Fails before the fix: `nodes` were dropped but not counted.)
    let d = bootstrap_with_nodes(false, false);
    assert_eq!(d.sent_to_private(), Vec::<SocketAddr>::new());
    assert_eq!(d.faults(Fault::FilteredAddress), PRIVATE_V4.len() as u64);
    let d = bootstrap_with_nodes(false, true);
    assert!(!d.sent_to_private().is_empty());
    assert_eq!(d.faults(Fault::FilteredAddress), 0);
}

#[test]
fn krpc_nodes6_naming_private_addresses_are_dropped_and_counted() {
    // (Fails before the fix: 64:ff9b::a00:1 passed as public, and nothing was counted.)
    let d = bootstrap_with_nodes(true, false);
    assert_eq!(d.sent_to_private(), Vec::<SocketAddr>::new());
    assert_eq!(d.faults(Fault::FilteredAddress), PRIVATE_V6.len() as u64);
    let d = bootstrap_with_nodes(true, true);
    assert!(!d.sent_to_private().is_empty());
    assert_eq!(d.faults(Fault::FilteredAddress), 0);
}

/// A get_peers lookup whose only node answers with private `values` next to a
/// public peer; returns the driver and the peers of `PeersFound`.
fn get_peers_with_values(allow_private: bool) -> (Drv, Vec<SocketAddr>) {
    let router = a("1.2.3.4:6881");
    let public = a("8.8.4.4:6881");
    let mut d = Drv::new(cfg("0.0.0.0:6881", allow_private, false));
    d.c.bootstrap(d.now, &[router]);
    d.drain();
    let tid = d.tid_of(router, b"find_node");
    let id = NodeId([0x42; 20]);
    d.recv(
        router,
        &reply(
            &tid,
            Response {
                id,
                ..Response::default()
            },
        ),
    );
    let ih = InfoHash([0x42; 20]);
    d.c.get_peers(d.now, ih, false).unwrap();
    d.drain();
    let tid = d.tid_of(router, b"get_peers");
    let mut values: Vec<SocketAddr> = PRIVATE_V4.iter().map(|p| a(p)).collect();
    values.push(public);
    let resp = Response {
        id,
        token: Some(b"tok"),
        values: Some(values),
        ..Response::default()
    };
    d.recv(router, &reply(&tid, resp));
    d.run(Duration::from_secs(3));
    let found: Vec<SocketAddr> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeersFound {
                info_hash, peers, ..
            } if *info_hash == ih => Some(peers.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    (d, found)
}

#[test]
fn get_peers_values_naming_private_addresses_are_dropped_and_counted() {
    // (Fails before the fix: the private peers reached `PeersFound` and were
    // not counted.)
    let (d, found) = get_peers_with_values(false);
    assert_eq!(found, vec![a("8.8.4.4:6881")]);
    assert_eq!(d.faults(Fault::FilteredAddress), PRIVATE_V4.len() as u64);
    assert_eq!(d.sent_to_private(), Vec::<SocketAddr>::new());
    let (d, found) = get_peers_with_values(true);
    assert_eq!(found.len(), PRIVATE_V4.len() + 1);
    assert!(PRIVATE_V4.iter().all(|p| found.contains(&a(p))));
    assert_eq!(d.faults(Fault::FilteredAddress), 0);
}

/// A node at `from` asks get_peers, then announces itself on port 7777 with
/// the token it got (if any). Returns the driver.
fn announce_from(from: SocketAddr, allow_private: bool) -> Drv {
    let mut c = cfg("0.0.0.0:6881", allow_private, true);
    c.crawl.auto_acquire = true;
    let mut d = Drv::new(c);
    let ih = InfoHash([0x21; 20]);
    let me = NodeId([0x33; 20]);
    let q = QueryKind::GetPeers {
        info_hash: ih,
        scrape: false,
        noseed: false,
    };
    d.recv(from, &query(b"g1", me, q));
    let token = d
        .sent
        .iter()
        .filter(|(t, _)| *t == from)
        .find_map(|(_, b)| match krpc::decode(b).ok()?.body {
            Body::Response(r) => r.token.map(|t| t.to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| b"none".to_vec());
    let q = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 7777,
        implied_port: false,
        token: &token,
        seed: None,
    };
    d.recv(from, &query(b"a1", me, q));
    d.run(Duration::from_secs(2));
    d
}

#[test]
fn an_announcing_peer_at_a_private_address_is_never_contacted() {
    // (Passes before the fix as well: the datagram source was already filtered,
    // and the announced peer shares its IP. A regression guard.)
    for src in [
        "10.0.0.5:7000",
        "127.0.0.1:7000",
        "[::ffff:192.168.0.9]:7000",
    ] {
        let from = a(src);
        let d = announce_from(from, false);
        let peer = SocketAddr::new(magnetar_core::addr::canonical(from).ip(), 7777);
        assert!(d.sent.is_empty(), "{src}: nothing answered");
        assert!(!d.connects.contains(&peer), "{src}: never fetched from");
        assert_eq!(d.faults(Fault::FilteredSource), 2, "{src}");
    }
    // With allow_private the announcer is fetched from.
    let d = announce_from(a("10.0.0.5:7000"), true);
    assert!(d.connects.contains(&a("10.0.0.5:7777")), "{:?}", d.connects);
    assert_eq!(d.faults(Fault::FilteredSource), 0);
}
