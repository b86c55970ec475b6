//! Our own identity (issue 17 item 3): ids random in every bit BEP 42 leaves
//! free, the external address from votes of distinct networks and the switch to
//! a BEP 42 id when it settles, a configured external address that fixes it, and
//! reuse of saved ids.

use std::net::{IpAddr, SocketAddr};

use magnetar_core::krpc::{self, Body, Message, Response};
use magnetar_core::{bep42_matches, bep42_verify, Config, Crawler, Event, IdentityConfig};
use magnetar_core::{Input, NodeId, Output, SocketId, Timestamp};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The identities `magnetar crawl` runs by default with `--identities n`: one IPv4
/// and one IPv6 socket per identity, no external address configured.
fn default_binds(n: u16) -> Vec<SocketAddr> {
    let mut b = Vec::new();
    for i in 0..n {
        b.push(SocketAddr::from(([0, 0, 0, 0], 6881 + i)));
        b.push(SocketAddr::from(([0u16; 8], 6881 + i)));
    }
    b
}

fn crawler(seed: u64, idents: Vec<IdentityConfig>) -> Crawler {
    let mut c = Config::new(seed, idents[0].bind);
    c.identities = idents;
    Crawler::new(c, Timestamp::ZERO)
}

/// Which of the 160 bits took both values over `ids`.
fn varying_bits(ids: &[NodeId]) -> Vec<bool> {
    (0..160)
        .map(|b| {
            let bit = |id: &NodeId| id.0[b / 8] >> (7 - b % 8) & 1;
            ids.iter().any(|id| bit(id) == 0) && ids.iter().any(|id| bit(id) == 1)
        })
        .collect()
}

#[test]
fn ids_are_random_in_every_free_bit_with_several_identities() {
    // Without an external address: all 160 bits are free.
    let mut per_socket: Vec<Vec<NodeId>> = vec![Vec::new(); 4];
    for seed in 0..400 {
        let c = crawler(
            seed,
            IdentityConfig::for_sockets(&default_binds(2), &[], &[]),
        );
        for (i, x) in c.identities().iter().enumerate() {
            per_socket[i].push(x.id);
        }
    }
    for (i, ids) in per_socket.iter().enumerate() {
        let firsts: std::collections::BTreeSet<u8> = ids.iter().map(|id| id.0[0]).collect();
        assert!(
            firsts.len() > 150,
            "socket {i}: first byte takes {} values",
            firsts.len()
        );
        let v = varying_bits(ids);
        assert!(
            v.iter().all(|&x| x),
            "socket {i}: fixed bits at {:?}",
            fixed(&v)
        );
    }
    // With an external address: the 21 prefix bits follow from the address and `r`
    // (the last byte's low 3 bits); the other 139 vary.
    let ip: IpAddr = "93.184.216.34".parse().unwrap();
    let binds = [sa("0.0.0.0:6881"), sa("0.0.0.0:6882"), sa("0.0.0.0:6883")];
    let mut per_socket: Vec<Vec<NodeId>> = vec![Vec::new(); 3];
    for seed in 0..400 {
        let c = crawler(seed, IdentityConfig::for_sockets(&binds, &[ip], &[]));
        let ids = c.identities();
        for (i, x) in ids.iter().enumerate() {
            assert!(bep42_matches(&x.id, ip));
            per_socket[i].push(x.id);
        }
        // Identities on one address take different `r`, so different prefixes.
        let rs: std::collections::BTreeSet<u8> = ids.iter().map(|x| x.id.0[19] & 7).collect();
        assert_eq!(rs.len(), 3, "seed {seed}");
    }
    for (i, ids) in per_socket.iter().enumerate() {
        let v = varying_bits(ids);
        let free_fixed: Vec<usize> = fixed(&v).into_iter().filter(|&b| b >= 21).collect();
        assert!(
            free_fixed.is_empty(),
            "socket {i}: free bits fixed: {free_fixed:?}"
        );
    }
}

fn fixed(v: &[bool]) -> Vec<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| !**x)
        .map(|(i, _)| i)
        .collect()
}

fn drain(c: &mut Crawler, events: &mut Vec<Event>) -> Vec<(SocketId, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match c.poll_output() {
            Output::Transmit { local, to, payload } => out.push((local, to, payload.to_vec())),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) | Output::Idle => return out,
            _ => {}
        }
    }
    panic!("the crawler never stopped producing output");
}

/// Answers every query `c` sent to one of `nodes` (an id each), with `seen` as
/// the BEP 42 `ip` field.
fn answer_all(
    c: &mut Crawler,
    at: Timestamp,
    sent: &[(SocketId, SocketAddr, Vec<u8>)],
    nodes: &[(NodeId, SocketAddr)],
    seen: SocketAddr,
) -> usize {
    let mut n = 0;
    for (sock, to, b) in sent {
        let Some((id, _)) = nodes.iter().find(|(_, a)| a == to) else {
            continue;
        };
        let m = krpc::decode(b).unwrap();
        if !matches!(m.body, Body::Query(_)) {
            continue;
        }
        let mut reply = Vec::new();
        krpc::encode(
            &Message {
                tid: m.tid,
                version: None,
                ip: Some(seen),
                read_only: false,
                body: Body::Response(Response {
                    id: *id,
                    ..Response::default()
                }),
            },
            &mut reply,
        );
        c.handle_input(Input::Datagram {
            at,
            local: *sock,
            from: *to,
            bytes: &reply,
        });
        n += 1;
    }
    n
}

/// `n` nodes, each in its own /24.
fn nodes(n: u32) -> Vec<(NodeId, SocketAddr)> {
    (0..n)
        .map(|i| {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&(0x1234_5678u32.wrapping_mul(i + 1)).to_be_bytes());
            id[19] = 1;
            let ip = std::net::Ipv4Addr::from(0x5100_0000 + (i << 8) + 9);
            (NodeId(id), SocketAddr::new(IpAddr::V4(ip), 6881))
        })
        .collect()
}

/// Bootstraps `c` from `ns` and answers every query to them with `seen`, for a
/// few rounds.
fn run_votes(c: &mut Crawler, ns: &[(NodeId, SocketAddr)], seen: SocketAddr) -> Vec<Event> {
    let mut events = Vec::new();
    let routers: Vec<SocketAddr> = ns.iter().map(|(_, a)| *a).collect();
    c.bootstrap(Timestamp::from_secs(1), &routers);
    let mut sent = drain(c, &mut events);
    for round in 0..5 {
        let at = Timestamp::from_secs(2 + round);
        answer_all(c, at, &sent, ns, seen);
        sent = drain(c, &mut events);
        c.handle_input(Input::Timeout(at));
        sent.extend(drain(c, &mut events));
    }
    events
}

#[test]
fn a_settled_vote_switches_to_a_bep42_id_keeping_the_known_nodes() {
    let binds = [sa("0.0.0.0:6881"), sa("0.0.0.0:6882")];
    // As `magnetar crawl` makes them: ids drawn into the config first.
    let mut cfg = Config::new(5, binds[0]);
    cfg.identities = IdentityConfig::for_sockets(&binds, &[], &[]);
    cfg.fill_node_ids();
    let mut c = Crawler::new(cfg, Timestamp::ZERO);
    let before: Vec<NodeId> = c.identities().iter().map(|x| x.id).collect();
    let us = sa("93.184.216.34:6881");
    for id in &before {
        assert!(
            !bep42_matches(id, us.ip()),
            "a random id is not BEP 42 (seed 5)"
        );
    }
    let ns = nodes(30);
    let events = run_votes(&mut c, &ns, us);
    let changed: Vec<(SocketId, NodeId, NodeId, IpAddr)> = events
        .iter()
        .filter_map(|e| match e {
            Event::IdentityChanged {
                socket,
                old,
                new,
                external_ip,
            } => Some((*socket, *old, *new, *external_ip)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "both identities behind 0.0.0.0 switch once"
    );
    for (sock, old, new, ip) in &changed {
        assert_eq!(*ip, us.ip());
        assert_eq!(*old, before[sock.0 as usize]);
        let x = &c.identities()[sock.0 as usize];
        assert_eq!(x.id, *new);
        assert!(
            bep42_matches(&x.id, us.ip()),
            "the new id is BEP 42 for {ip}"
        );
        assert_eq!(
            x.table.own_id(),
            x.id,
            "the table is built around the new id"
        );
        assert!(
            x.table.len() >= 10,
            "the known nodes were kept: {}",
            x.table.len()
        );
        // The new id is not made of the old one's bytes (linkable ids).
        for old in &before {
            for w in new.0[3..].windows(4) {
                assert!(
                    !old.0.windows(4).any(|o| o == w),
                    "{new} repeats bytes of {old}"
                );
            }
        }
    }
    let s = c.stats();
    assert_eq!(s.dht.identity_switches, 2);
    assert_eq!(s.dht.external_address_changes, 1);
    let ea = c.external_addresses();
    assert_eq!(ea.len(), 1, "one voter for the one bind address");
    assert_eq!((ea[0].0, ea[0].1), (binds[0].ip(), Some(us.ip())));
    // More of the same votes change nothing.
    let again = run_votes(&mut c, &ns, us);
    assert!(!again
        .iter()
        .any(|e| matches!(e, Event::IdentityChanged { .. })));
}

#[test]
fn votes_from_one_network_or_for_private_addresses_do_not_switch() {
    let binds = [sa("0.0.0.0:6881")];
    // 30 nodes in one /24.
    let one_net: Vec<(NodeId, SocketAddr)> = nodes(30)
        .into_iter()
        .enumerate()
        .map(|(i, (id, _))| (id, SocketAddr::from(([81, 0, 0, 10 + i as u8], 6881))))
        .collect();
    let mut c = crawler(5, IdentityConfig::for_sockets(&binds, &[], &[]));
    let before = c.identities()[0].id;
    let ev = run_votes(&mut c, &one_net, sa("93.184.216.34:6881"));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::IdentityChanged { .. })));
    assert_eq!(c.identities()[0].id, before);
    // Many networks, but a private address.
    let mut c = crawler(5, IdentityConfig::for_sockets(&binds, &[], &[]));
    let ev = run_votes(&mut c, &nodes(30), sa("192.168.1.20:6881"));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::IdentityChanged { .. })));
    assert!(c.stats().dht.external_votes_ignored > 0);
}

#[test]
fn a_configured_external_address_fixes_the_id() {
    let binds = [sa("0.0.0.0:6881")];
    let ext: IpAddr = "151.101.1.69".parse().unwrap();
    let mut c = crawler(5, IdentityConfig::for_sockets(&binds, &[ext], &[]));
    let id = c.identities()[0].id;
    assert!(bep42_matches(&id, ext));
    let ev = run_votes(&mut c, &nodes(30), sa("93.184.216.34:6881"));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::IdentityChanged { .. })));
    assert_eq!(c.identities()[0].id, id);
}

#[test]
fn saved_ids_are_reused_while_valid() {
    let binds = [sa("0.0.0.0:6881"), sa("[::]:6881")];
    let ext: IpAddr = "151.101.1.69".parse().unwrap();
    let mut rng = magnetar_core::Rng::new(3);
    let valid = magnetar_core::bep42_node_id(ext, &mut rng);
    let other = NodeId([0x77; 20]);
    // No external address configured: any saved id is reused.
    let ic = IdentityConfig::for_sockets(&binds, &[], &[Some(other), Some(other)]);
    assert_eq!(ic[0].node_id, Some(other));
    assert_eq!(crawler(1, ic).identities()[1].id, other);
    // A configured v4 address: a saved v4 id that is not valid for it is dropped,
    // a valid one kept; the v6 identity is not concerned.
    let ic = IdentityConfig::for_sockets(&binds, &[ext], &[Some(other), Some(other)]);
    assert_eq!(ic[0].node_id, None);
    assert_eq!(ic[1].node_id, Some(other));
    let c = crawler(1, ic);
    assert!(bep42_verify(&c.identities()[0].id, ext));
    let ic = IdentityConfig::for_sockets(&binds, &[ext], &[Some(valid)]);
    assert_eq!(ic[0].node_id, Some(valid));
    assert_eq!(crawler(1, ic).identities()[0].id, valid);
}

#[test]
fn filled_ids_are_the_ids_the_crawler_would_draw() {
    let binds = default_binds(2);
    let ext: IpAddr = "151.101.1.69".parse().unwrap();
    for external in [vec![], vec![ext]] {
        let mut cfg = Config::new(9, binds[0]);
        cfg.identities = IdentityConfig::for_sockets(&binds, &external, &[]);
        let drawn: Vec<NodeId> = Crawler::new(cfg.clone(), Timestamp::ZERO)
            .identities()
            .iter()
            .map(|x| x.id)
            .collect();
        cfg.fill_node_ids();
        let filled: Vec<NodeId> = cfg.identities.iter().map(|c| c.node_id.unwrap()).collect();
        assert_eq!(filled, drawn);
        assert_eq!(cfg.identities[0].external_ip, external.first().copied());
    }
}
