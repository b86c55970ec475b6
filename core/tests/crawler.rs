//! Integration tests of the Crawler façade: honest answers, capture, lookups,
//! bootstrap, sampling, budget, faults and determinism, over a tiny network.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{addr, query, Net};
use magnetar_core::krpc::{
    self, Body, CompactNodesV4, Message, Query, QueryKind, Response, Samples,
};
use magnetar_core::Fault;
use magnetar_core::Rng;
use magnetar_core::{
    CloseReason, DiscoverySource, Event, InfoHash, Input, NodeId, Output, SocketId, Timestamp,
};

const PROBE: &str = "127.0.9.9:7000";

fn probe() -> SocketAddr {
    PROBE.parse().unwrap()
}

/// The reply the probe got for its last query.
fn last_reply(net: &Net) -> Message<'_> {
    net.outside
        .iter()
        .rev()
        .filter(|s| s.to == probe())
        .map(|s| krpc::decode(&s.bytes).expect("our own messages decode"))
        .find(|m| !matches!(m.body, Body::Query(_)))
        .expect("a reply to the probe")
}

/// Answers the crawler's latest ping to the probe, as node `id`.
fn answer_ping(net: &mut Net, id: NodeId) {
    let tid = net
        .outside
        .iter()
        .rev()
        .filter(|s| s.to == probe())
        .filter_map(|s| {
            krpc::decode(&s.bytes)
                .ok()
                .map(|m| (m.tid.to_vec(), m.body))
        })
        .find_map(|(tid, b)| {
            matches!(
                b,
                Body::Query(Query {
                    kind: QueryKind::Ping,
                    ..
                })
            )
            .then_some(tid)
        })
        .expect("the crawler pinged the probe");
    let m = Message {
        tid: &tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Response(Response {
            id,
            ..Response::default()
        }),
    };
    let mut b = Vec::new();
    krpc::encode(&m, &mut b);
    net.send(probe(), addr(0), b);
    let until = net.now.add(Duration::from_millis(100));
    net.run_until(until, 100);
}

fn quiet_net(n: usize) -> Net {
    Net::new(n, 1, |_, c| c.crawl.enabled = false)
}

#[test]
fn answers_ping_find_node_and_unknown_methods() {
    let mut net = quiet_net(1);
    let me = NodeId([9; 20]);
    net.send(probe(), addr(0), query(b"aa", me, QueryKind::Ping));
    net.run_until(Timestamp::from_secs(1), 100);
    let r = last_reply(&net);
    assert_eq!(r.tid, b"aa");
    let Body::Response(resp) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(resp.id, net.nodes[0].identities()[0].id);
    // BEP 42: our reply tells the querier its address.
    assert_eq!(r.ip, Some(probe()));

    // A querier is not trusted into the table until it answers our ping.
    assert!(net.nodes[0].identities()[0].table.is_empty());
    answer_ping(&mut net, me);
    assert_eq!(net.nodes[0].identities()[0].table.len(), 1);

    // find_node answers with nodes (the probe itself is now in the table).
    net.send(
        probe(),
        addr(0),
        query(
            b"ab",
            me,
            QueryKind::FindNode {
                target: NodeId([1; 20]),
            },
        ),
    );
    net.run_until(Timestamp::from_secs(2), 100);
    let r = last_reply(&net);
    let Body::Response(resp) = &r.body else {
        panic!()
    };
    let nodes: Vec<_> = resp.nodes.expect("nodes").iter().collect();
    assert_eq!(nodes, vec![(me, probe())]);

    // Unknown method: error 204, echoing a long tid.
    net.send(
        probe(),
        addr(0),
        query(
            b"long-tid-xyz",
            me,
            QueryKind::Unknown {
                method: b"vote",
                target: None,
                info_hash: None,
            },
        ),
    );
    net.run_until(Timestamp::from_secs(3), 100);
    let r = last_reply(&net);
    assert_eq!(r.tid, b"long-tid-xyz");
    let Body::Error(e) = &r.body else { panic!() };
    assert_eq!(e.code, 204);
}

#[test]
fn announce_needs_a_valid_token_and_is_captured_then_served() {
    let mut net = quiet_net(1);
    let me = NodeId([9; 20]);
    let ih = InfoHash([0x42; 20]);
    net.send(
        probe(),
        addr(0),
        query(
            b"g1",
            me,
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        ),
    );
    net.run_until(Timestamp::from_secs(1), 100);
    let token = {
        let r = last_reply(&net);
        let Body::Response(resp) = &r.body else {
            panic!()
        };
        assert!(resp.values.is_none());
        resp.token.expect("get_peers gives a token").to_vec()
    };
    assert!(net.events_of(0).any(|e| matches!(e, Event::InfohashDiscovered { source: DiscoverySource::GetPeers, peer: None, info_hash, .. } if *info_hash == ih)));

    // A bad token: error 203 and nothing stored.
    let bad = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 5000,
        implied_port: false,
        token: b"nope",
        seed: None,
    };
    net.send(probe(), addr(0), query(b"a0", me, bad));
    net.run_until(Timestamp::from_secs(2), 100);
    let Body::Error(e) = &last_reply(&net).body else {
        panic!()
    };
    assert_eq!(e.code, 203);
    assert_eq!(
        net.nodes[0].stats().dht.faults.get(&Fault::BadToken),
        Some(&1)
    );

    // A good one with implied_port: the peer is the source port.
    let good = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 5000,
        implied_port: true,
        token: &token,
        seed: Some(true),
    };
    net.send(probe(), addr(0), query(b"a1", me, good));
    net.run_until(Timestamp::from_secs(3), 100);
    assert!(matches!(last_reply(&net).body, Body::Response(_)));
    let peer = probe();
    assert!(net.events_of(0).any(|e| matches!(e, Event::InfohashDiscovered { source: DiscoverySource::Announce, peer: Some(p), .. } if *p == peer)));

    // get_peers now returns the peer, and a scrape counts one seed.
    net.send(
        probe(),
        addr(0),
        query(
            b"g2",
            me,
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: true,
                noseed: false,
            },
        ),
    );
    net.run_until(Timestamp::from_secs(4), 100);
    let r = last_reply(&net);
    let Body::Response(resp) = &r.body else {
        panic!()
    };
    assert_eq!(resp.values.clone().unwrap(), vec![peer]);
    let seeds = resp.bf_seeds.expect("BFsd");
    let mut b = magnetar_core::Bloom::default();
    b.union(seeds);
    assert_eq!(b.estimate().round(), 1.0);

    // sample_infohashes lists it, with interval and num.
    net.send(
        probe(),
        addr(0),
        query(
            b"s1",
            me,
            QueryKind::SampleInfohashes {
                target: NodeId([0; 20]),
            },
        ),
    );
    net.run_until(Timestamp::from_secs(5), 100);
    let r = last_reply(&net);
    let Body::Response(resp) = &r.body else {
        panic!()
    };
    assert_eq!(resp.samples.unwrap().iter().collect::<Vec<_>>(), vec![ih]);
    assert_eq!(resp.num, Some(1));
    assert_eq!(resp.interval, Some(21600));
}

#[test]
fn rate_limit_per_ip() {
    let mut net = quiet_net(1);
    for i in 0..50u8 {
        net.send(
            probe(),
            addr(0),
            query(&[i], NodeId([9; 20]), QueryKind::Ping),
        );
    }
    net.run_until(Timestamp::from_millis(100), 1000);
    let to_probe: Vec<_> = net
        .outside
        .iter()
        .filter(|s| s.to == probe())
        .map(|s| krpc::decode(&s.bytes).unwrap().body)
        .collect();
    let answered = to_probe
        .iter()
        .filter(|b| !matches!(b, Body::Query(_)))
        .count();
    assert_eq!(answered, 10, "10/s burst per IP");
    // One verification ping, not one per query.
    assert_eq!(to_probe.len() - answered, 1);
    assert_eq!(
        net.nodes[0].stats().dht.faults.get(&Fault::RateLimited),
        Some(&40)
    );
}

#[test]
fn malformed_datagrams_are_counted_not_answered() {
    let mut net = quiet_net(1);
    let junk: [&[u8]; 5] = [
        b"",
        b"garbage",
        b"d1:t2:aa1:y1:qe",
        b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
        b"li1ee",
    ];
    for j in junk {
        net.send(probe(), addr(0), j.to_vec());
    }
    net.run_until(Timestamp::from_secs(1), 100);
    assert!(net.outside.is_empty());
    let s = net.nodes[0].stats();
    let malformed: u64 = s
        .dht
        .faults
        .iter()
        .filter(|(f, _)| matches!(f, Fault::Malformed(_)))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(malformed, 5);
}

#[test]
fn read_only_nodes_stay_out_of_the_table() {
    let mut net = quiet_net(1);
    let m = Message {
        tid: b"r1",
        version: None,
        ip: None,
        read_only: true,
        body: Body::Query(Query {
            id: NodeId([7; 20]),
            want: None,
            kind: QueryKind::Ping,
        }),
    };
    let mut b = Vec::new();
    krpc::encode(&m, &mut b);
    net.send(probe(), addr(0), b);
    let other: SocketAddr = "127.0.9.10:7000".parse().unwrap();
    net.send(
        other,
        addr(0),
        query(b"r2", NodeId([8; 20]), QueryKind::Ping),
    );
    net.run_until(Timestamp::from_secs(1), 100);
    // The ordinary querier is pinged for verification; the read-only one is not.
    let pinged = |a: SocketAddr| {
        net.outside.iter().any(|s| {
            s.to == a
                && matches!(
                    krpc::decode(&s.bytes).map(|m| m.body),
                    Ok(Body::Query(Query {
                        kind: QueryKind::Ping,
                        ..
                    }))
                )
        })
    };
    assert!(pinged(other));
    assert!(!pinged(probe()));
    assert!(net.nodes[0].identities()[0].table.is_empty());
}

#[test]
fn network_bootstraps_and_lookups_find_the_true_closest() {
    let n = 60;
    let mut net = Net::new(n, 7, |_, c| {
        c.crawl.enabled = false;
        c.dht.bootstrap_nodes = 8;
    });
    net.bootstrap_all_from(0);
    net.run_until(Timestamp::from_secs(120), 2_000_000);
    for i in 0..n {
        let t = &net.nodes[i].identities()[0].table;
        t.check_invariant().unwrap();
        assert!(t.len() >= 8, "node {i} has {} nodes", t.len());
    }
    let boots = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Bootstrapped { .. }))
        .count();
    assert!(boots >= n - 1, "{boots} bootstrapped");

    // A find_node lookup from node 5 for random targets finds the 8 true closest.
    let mut rng = Rng::new(3);
    for _ in 0..5 {
        let target = NodeId::random(&mut rng);
        let now = net.now;
        let lid = net.nodes[5].find_node(now, SocketId(0), target).unwrap();
        net.drain(5);
        net.run_until(now.add(Duration::from_secs(30)), 1_000_000);
        let found = net
            .events_of(5)
            .find_map(|e| match e {
                Event::LookupDone { id, closest, .. } if *id == lid => Some(closest.clone()),
                _ => None,
            })
            .expect("lookup finished");
        let mut truth: Vec<(NodeId, SocketAddr)> = (0..n)
            .filter(|&i| i != 5)
            .map(|i| (net.nodes[i].identities()[0].id, net.addrs[i]))
            .collect();
        truth.sort_by_key(|(id, _)| id.distance(&target.0));
        truth.truncate(8);
        assert_eq!(found, truth);
    }
    // Table entries count our finished queries and their answers per method.
    let t = &net.nodes[5].identities()[0].table;
    let (mut q, mut r) = ([0u32; 5], [0u32; 5]);
    for e in t.nodes() {
        for k in 0..5 {
            assert!(
                e.counts.responses[k] <= e.counts.queries[k],
                "{:?}",
                e.counts
            );
            q[k] += e.counts.queries[k];
            r[k] += e.counts.responses[k];
        }
    }
    let find_node =
        magnetar_core::routing::MethodCounts::slot(magnetar_core::routing::Method::FindNode);
    assert!(r[find_node] > 0, "queries {q:?}, responses {r:?}");
}

#[test]
fn same_seed_same_trace() {
    let run = |seed: u64| {
        let mut net = Net::new(12, seed, |_, c| {
            c.dht.bootstrap_nodes = 4;
            c.crawl.explore_pps = 20;
        });
        net.bootstrap_all_from(0);
        net.run_until(Timestamp::from_secs(20), 1_000_000);
        (net.trace, net.delivered)
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert!(a.1 > 100);
    assert_ne!(a.0, run(12).0);
}

/// A fake BEP 51 node: answers sample_infohashes with `samples`.
fn sample_reply(tid: &[u8], id: NodeId, samples: &[u8], nodes: &[u8]) -> Vec<u8> {
    let resp = Response {
        id,
        samples: Samples::new(samples),
        num: Some((samples.len() / 20) as i64 + 100),
        interval: Some(600),
        nodes: CompactNodesV4::new(nodes),
        ..Response::default()
    };
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

#[test]
fn a_sample_reply_with_n_samples_yields_exactly_those_n() {
    let mut net = Net::new(1, 5, |_, c| c.crawl.explore_pps = 1);
    let fake_id = NodeId([0x77; 20]);
    // The fake node queries us, so the crawler learns of it and samples it.
    net.send(probe(), addr(0), query(b"hi", fake_id, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(200), 1000);
    let q = net
        .outside
        .iter()
        .find_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            match m.body {
                Body::Query(Query {
                    kind: QueryKind::SampleInfohashes { .. },
                    ..
                }) => Some(m.tid.to_vec()),
                _ => None,
            }
        })
        .expect("the crawler samples the node that contacted it");
    let n = 17;
    let mut rng = Rng::new(1);
    let ihs: Vec<InfoHash> = (0..n).map(|_| InfoHash::random(&mut rng)).collect();
    let samples: Vec<u8> = ihs.iter().flat_map(|i| i.0).collect();
    net.send(probe(), addr(0), sample_reply(&q, fake_id, &samples, &[]));
    net.run_until(Timestamp::from_millis(400), 1000);
    let got: Vec<InfoHash> = net
        .events_of(0)
        .filter_map(|e| match e {
            Event::InfohashDiscovered {
                info_hash,
                source: DiscoverySource::Sample,
                ..
            } => Some(*info_hash),
            _ => None,
        })
        .collect();
    assert_eq!(got, ihs);
    let s = net.nodes[0].crawl_stats();
    assert_eq!(s.samples_received, n as u64);
    assert_eq!(s.new_from_sample, n as u64);
    assert_eq!(s.bep51_yes, 1);
}

#[test]
fn the_packet_budget_caps_every_query() {
    // 2,000 nodes known to a crawler with a 50 packets/s budget: over 10 s it wants
    // to sample them all but sends at most 50 * 10 + burst queries.
    let mut net = Net::new(1, 9, |_, c| {
        c.crawl.max_pps = 50;
        c.crawl.burst = 20;
    });
    let mut rng = Rng::new(2);
    for i in 0..2000u32 {
        let from = SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 7000));
        net.send(
            from,
            addr(0),
            query(&i.to_be_bytes(), NodeId::random(&mut rng), QueryKind::Ping),
        );
    }
    net.run_until(Timestamp::from_secs(10), 1_000_000);
    let s = net.nodes[0].stats();
    let queries = s.dht.queries_out.total();
    assert!(queries <= 50 * 10 + 20, "{queries} queries");
    assert!(queries >= 50 * 9, "the budget is used: {queries}");
    // Demand exceeded the budget: most nodes were not sampled yet.
    assert!(s.crawl.samples_sent < 1000, "{}", s.crawl.samples_sent);
}

#[test]
fn replies_from_the_wrong_address_do_not_match() {
    let mut net = quiet_net(1);
    net.nodes[0].bootstrap(Timestamp::ZERO, &[probe()]);
    net.drain(0);
    let q = net
        .outside
        .iter()
        .find(|s| s.to == probe())
        .expect("bootstrap query")
        .bytes
        .clone();
    let tid = krpc::decode(&q).unwrap().tid.to_vec();
    let reply = sample_reply(&tid, NodeId([5; 20]), &[], &[]);
    net.send("127.0.9.8:7000".parse().unwrap(), addr(0), reply.clone());
    net.run_until(Timestamp::from_millis(100), 100);
    assert_eq!(
        net.nodes[0].stats().dht.faults.get(&Fault::WrongAddress),
        Some(&1)
    );
    net.send(probe(), addr(0), reply);
    net.run_until(Timestamp::from_millis(200), 100);
    assert_eq!(net.nodes[0].identities()[0].table.len(), 1);
}

#[test]
fn bootstrap_retries_with_backoff_and_says_so() {
    let mut net = quiet_net(1);
    net.nodes[0].bootstrap(Timestamp::ZERO, &[probe()]);
    net.drain(0);
    net.run_until(Timestamp::from_secs(100), 100_000);
    let fails: Vec<u32> = net
        .events_of(0)
        .filter_map(|e| match e {
            Event::BootstrapFailed { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    // 5 s, then 10, 20, 40: attempts at ~5, 15, 35, 75 s.
    assert_eq!(fails, vec![1, 2, 3, 4]);
    let sent_to_router = net.outside.iter().filter(|s| s.to == probe()).count();
    assert_eq!(sent_to_router, 5);
}

#[test]
fn flood_of_random_get_peers_keeps_memory_bounded() {
    let mut net = Net::new(1, 3, |_, c| {
        c.crawl.seen_window = 1000;
        c.crawl.max_book = 500;
        c.dht.per_ip_answers_per_sec = 1_000_000;
    });
    let mut rng = Rng::new(8);
    for i in 0..20_000u32 {
        let from = SocketAddr::from(([127, 2, (i >> 8) as u8, i as u8], 7000));
        let ih = InfoHash::random(&mut rng);
        let q = query(
            &i.to_be_bytes(),
            NodeId::random(&mut rng),
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        );
        net.nodes[0].handle_input(Input::Datagram {
            at: net.now,
            local: SocketId(0),
            from,
            bytes: &q,
        });
        while !matches!(
            net.nodes[0].poll_output(),
            Output::Timeout(_) | Output::Idle
        ) {}
    }
    let s = net.nodes[0].stats();
    assert_eq!(s.dht.responses_out, 20_000);
    assert!(s.crawl.book_nodes <= 500);
    assert!(s.transactions <= 4096);
    assert_eq!(s.crawl.new_from_get_peers, 20_000);
    assert!(s.nodes <= 10_000);
}

#[test]
fn unknown_methods_with_a_target_get_nodes() {
    let mut net = quiet_net(1);
    let me = NodeId([9; 20]);
    net.send(probe(), addr(0), query(b"hi", me, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(100), 100);
    answer_ping(&mut net, me);
    let q = QueryKind::Unknown {
        method: b"get_future",
        target: Some(NodeId([1; 20])),
        info_hash: None,
    };
    net.send(probe(), addr(0), query(b"fw", me, q));
    net.run_until(Timestamp::from_secs(1), 100);
    let r = last_reply(&net);
    let Body::Response(resp) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(
        resp.nodes
            .expect("nodes")
            .iter()
            .map(|n| n.1)
            .collect::<Vec<_>>(),
        vec![probe()]
    );
}

/// Sets up an acquisition that is asking its source (the probe, as `fake_id`) for
/// peers of `ih`, then has `other` announce it. Returns the ask's tid.
fn ask_then_announce(net: &mut Net, fake_id: NodeId, ih: InfoHash, other: SocketAddr) -> Vec<u8> {
    net.send(probe(), addr(0), query(b"hi", fake_id, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(200), 1000);
    let sample_tid = net
        .outside
        .iter()
        .find_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            matches!(
                m.body,
                Body::Query(Query {
                    kind: QueryKind::SampleInfohashes { .. },
                    ..
                })
            )
            .then(|| m.tid.to_vec())
        })
        .expect("sampled");
    net.send(
        probe(),
        addr(0),
        sample_reply(&sample_tid, fake_id, &ih.0, &[]),
    );
    net.run_until(Timestamp::from_millis(400), 1000);
    let ask_tid = net
        .outside
        .iter()
        .find_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            match m.body {
                Body::Query(Query {
                    kind: QueryKind::GetPeers { info_hash, .. },
                    ..
                }) if info_hash == ih && s.to == probe() => Some(m.tid.to_vec()),
                _ => None,
            }
        })
        .expect("the source is asked for peers");
    net.send(
        other,
        addr(0),
        query(
            b"g1",
            NodeId([7; 20]),
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        ),
    );
    net.run_until(Timestamp::from_millis(500), 1000);
    let token = net
        .outside
        .iter()
        .rev()
        .filter(|s| s.to == other)
        .find_map(|s| match krpc::decode(&s.bytes).ok()?.body {
            Body::Response(r) => r.token.map(|t| t.to_vec()),
            _ => None,
        })
        .expect("token");
    let ann = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 51413,
        implied_port: false,
        token: &token,
        seed: None,
    };
    net.send(other, addr(0), query(b"a1", NodeId([7; 20]), ann));
    net.run_until(Timestamp::from_millis(600), 1000);
    ask_tid
}

/// A magnet leecher announces before it has the metadata. When the fetch from the
/// announcer fails, the acquisition is not over: the peers the source then gives
/// are fetched from.
#[test]
fn a_failed_announcer_does_not_end_the_search_for_peers() {
    let mut net = Net::new(1, 6, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
        // TCP only: a refused connect ends the attempt (no uTP fallback).
        c.fetch.utp = false;
    });
    let fake_id = NodeId([0x66; 20]);
    let ih = InfoHash([0x32; 20]);
    let other: SocketAddr = "127.0.9.20:7000".parse().unwrap();
    let announcer = SocketAddr::new(other.ip(), 51413);
    let ask_tid = ask_then_announce(&mut net, fake_id, ih, other);
    let (_, conn, to) = *net.conn_ids.last().expect("the announcer is fetched from");
    assert_eq!(to, announcer);
    // It refuses (or has no metadata): the fetch of that one peer fails.
    let at = net.now;
    net.nodes[0].handle_input(Input::TcpClosed {
        at,
        conn,
        reason: CloseReason::Refused,
    });
    net.drain(0);
    assert!(net
        .events_of(0)
        .any(|e| matches!(e, Event::MetadataFailed(m) if m.info_hash == ih)));
    // Then the source answers with a seeder.
    let seeder: SocketAddr = "127.0.9.30:6881".parse().unwrap();
    let m = Message {
        tid: &ask_tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Response(Response {
            id: fake_id,
            values: Some(vec![seeder]),
            token: Some(b"tk"),
            ..Response::default()
        }),
    };
    let mut b = Vec::new();
    krpc::encode(&m, &mut b);
    net.send(probe(), addr(0), b);
    net.run_until(Timestamp::from_millis(700), 1000);
    assert_eq!(net.connects, vec![(0, announcer), (0, seeder)]);
}

#[test]
fn an_announced_peer_is_fetched_from_while_the_source_is_still_asked() {
    let mut net = Net::new(1, 6, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
    });
    let fake_id = NodeId([0x66; 20]);
    net.send(probe(), addr(0), query(b"hi", fake_id, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(200), 1000);
    let sample_tid = net
        .outside
        .iter()
        .find_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            matches!(
                m.body,
                Body::Query(Query {
                    kind: QueryKind::SampleInfohashes { .. },
                    ..
                })
            )
            .then(|| m.tid.to_vec())
        })
        .expect("sampled");
    let ih = InfoHash([0x31; 20]);
    net.send(
        probe(),
        addr(0),
        sample_reply(&sample_tid, fake_id, &ih.0, &[]),
    );
    net.run_until(Timestamp::from_millis(400), 1000);
    // The crawler asks the sampling node for peers (and gets no answer).
    let asked = net.outside.iter().any(|s| {
        matches!(krpc::decode(&s.bytes).map(|m| m.body), Ok(Body::Query(Query { kind: QueryKind::GetPeers { info_hash, .. }, .. })) if info_hash == ih)
    });
    assert!(asked, "the source is asked for peers");
    assert!(net.connects.is_empty());
    // Meanwhile a peer announces the infohash.
    let other: SocketAddr = "127.0.9.20:7000".parse().unwrap();
    net.send(
        other,
        addr(0),
        query(
            b"g1",
            NodeId([7; 20]),
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        ),
    );
    net.run_until(Timestamp::from_millis(500), 1000);
    let token = net
        .outside
        .iter()
        .rev()
        .filter(|s| s.to == other)
        .find_map(|s| match krpc::decode(&s.bytes).ok()?.body {
            Body::Response(r) => r.token.map(|t| t.to_vec()),
            _ => None,
        })
        .expect("token");
    let ann = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 51413,
        implied_port: false,
        token: &token,
        seed: None,
    };
    net.send(other, addr(0), query(b"a1", NodeId([7; 20]), ann));
    net.run_until(Timestamp::from_millis(600), 1000);
    assert_eq!(net.connects, vec![(0, SocketAddr::new(other.ip(), 51413))]);
}

#[test]
fn an_acquisition_asks_the_sampling_node_at_once_not_at_the_next_tick() {
    let mut net = Net::new(1, 7, |_, c| c.crawl.explore_pps = 1);
    let fake_id = NodeId([0x55; 20]);
    net.send(probe(), addr(0), query(b"hi", fake_id, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(200), 1000);
    let sample = net
        .outside
        .iter()
        .find_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            matches!(
                m.body,
                Body::Query(Query {
                    kind: QueryKind::SampleInfohashes { .. },
                    ..
                })
            )
            .then(|| (m.tid.to_vec(), s.at))
        })
        .expect("sampled");
    let ih = InfoHash([0x42; 20]);
    net.send(
        probe(),
        addr(0),
        sample_reply(&sample.0, fake_id, &ih.0, &[]),
    );
    // Deliver the reply (and nothing else) and note the moment.
    net.run_until(net.now.add(net.latency), 1);
    let at = net.now;
    assert!(net
        .events_of(0)
        .any(|e| matches!(e, Event::InfohashDiscovered { info_hash, .. } if *info_hash == ih)));
    // The runtime, having checked storage, acquires it at once.
    net.nodes[0].acquire(at, ih).unwrap();
    net.drain(0);
    let ask = net.outside.iter().find(|s| {
        matches!(krpc::decode(&s.bytes).map(|m| m.body), Ok(Body::Query(Query { kind: QueryKind::GetPeers { info_hash, .. }, .. })) if info_hash == ih)
    });
    let ask = ask.expect("the sampling node is asked for peers without waiting for a tick");
    assert_eq!((ask.to, ask.at), (probe(), at));
    assert_eq!(net.nodes[0].crawl_stats().ask_source_sent, 1);
    // Acquiring it again changes nothing.
    net.nodes[0].acquire(at, ih).unwrap();
    net.drain(0);
    assert_eq!(net.nodes[0].crawl_stats().acquisitions_started, 1);
}

/// An acquisition that starts with an announced peer in hand fetches from it
/// without a peer search. When that fails, the search starts at once (not at the
/// first retry, minutes later).
#[test]
fn when_only_announcers_were_tried_and_failed_a_peer_search_follows() {
    let mut net = Net::new(1, 8, |_, c| {
        c.crawl.explore_pps = 1;
        // TCP only: a refused connect ends the attempt (no uTP fallback).
        c.fetch.utp = false;
    });
    let ih = InfoHash([0x33; 20]);
    let other: SocketAddr = "127.0.9.21:7000".parse().unwrap();
    let announcer = SocketAddr::new(other.ip(), 51413);
    let gp = QueryKind::GetPeers {
        info_hash: ih,
        scrape: false,
        noseed: false,
    };
    net.send(other, addr(0), query(b"g1", NodeId([8; 20]), gp));
    net.run_until(Timestamp::from_millis(100), 1000);
    let token = net
        .outside
        .iter()
        .rev()
        .filter(|s| s.to == other)
        .find_map(|s| match krpc::decode(&s.bytes).ok()?.body {
            Body::Response(r) => r.token.map(|t| t.to_vec()),
            _ => None,
        })
        .expect("token");
    let asks = |net: &Net| {
        net.outside
            .iter()
            .filter(|s| {
                matches!(krpc::decode(&s.bytes).map(|m| m.body), Ok(Body::Query(Query { kind: QueryKind::GetPeers { info_hash, .. }, .. })) if info_hash == ih)
            })
            .count()
    };
    let before = asks(&net);
    let ann = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 51413,
        implied_port: false,
        token: &token,
        seed: None,
    };
    net.send(other, addr(0), query(b"a1", NodeId([8; 20]), ann));
    net.run_until(Timestamp::from_millis(200), 1000);
    // The runtime acquires it (storage does not have it).
    let at = net.now;
    net.nodes[0].acquire(at, ih).unwrap();
    net.drain(0);
    let (_, conn, to) = *net.conn_ids.last().expect("the announcer is fetched from");
    assert_eq!(to, announcer);
    assert_eq!(
        asks(&net),
        before,
        "no peer search while the announcer is tried"
    );
    assert!(!net
        .events_of(0)
        .any(|e| matches!(e, Event::LookupDone { target, .. } if *target == ih.0)));
    let at = net.now;
    net.nodes[0].handle_input(Input::TcpClosed {
        at,
        conn,
        reason: CloseReason::Refused,
    });
    net.drain(0);
    net.run_until(Timestamp::from_millis(300), 1000);
    // (This lone crawler knows no nodes, so the traversal ends at once, but it ran.)
    let searches = net
        .events_of(0)
        .filter(|e| matches!(e, Event::LookupDone { target, .. } if *target == ih.0))
        .count();
    assert_eq!(searches, 1, "a peer search follows the failed announcer");
}

/// An acquisition that needs a traversal (a get_peers capture: no source to ask,
/// no peers) waits for the crawl tick, after sampling, as a backlog does.
#[test]
fn an_acquisition_that_needs_a_traversal_waits_for_the_tick() {
    let mut net = Net::new(1, 9, |_, c| c.crawl.explore_pps = 1);
    let ih = InfoHash([0x44; 20]);
    let gp = QueryKind::GetPeers {
        info_hash: ih,
        scrape: false,
        noseed: false,
    };
    net.send(probe(), addr(0), query(b"g1", NodeId([9; 20]), gp));
    net.run_until(net.now.add(net.latency), 1);
    let at = net.now;
    net.nodes[0].acquire(at, ih).unwrap();
    net.drain(0);
    let s = net.nodes[0].crawl_stats();
    assert_eq!((s.acquisitions_started, s.acquisitions_queued), (0, 1));
    net.run_until(at.add(Duration::from_millis(20)), 1000);
    // At the tick it is taken up: as a get_peers candidate, it then waits its grace
    // for the announce that usually follows (see `crawl_strategy.rs`).
    let s = net.nodes[0].crawl_stats();
    assert_eq!(
        (
            s.acquisitions_queued,
            s.acquisitions_started,
            s.candidates_deferred
        ),
        (0, 0, 1)
    );
}

/// When the node that sampled an infohash is paced, the crawler asks another node
/// that sampled it too, rather than wait for the first.
#[test]
fn a_paced_source_gives_way_to_another_that_sampled_the_same_infohash() {
    let mut net = Net::new(1, 10, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
        c.crawl.per_ip_pps = 1;
        c.crawl.per_ip_burst = 3;
    });
    let p1 = probe();
    let p2: SocketAddr = "127.0.9.10:7000".parse().unwrap();
    let (id1, id2) = (NodeId([0x11; 20]), NodeId([0x22; 20]));
    net.send(p1, addr(0), query(b"h1", id1, QueryKind::Ping));
    net.send(p2, addr(0), query(b"h2", id2, QueryKind::Ping));
    net.run_until(Timestamp::from_millis(200), 1000);
    let sample_tid = |net: &Net, to: SocketAddr| {
        net.outside
            .iter()
            .filter(|s| s.to == to)
            .find_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                matches!(
                    m.body,
                    Body::Query(Query {
                        kind: QueryKind::SampleInfohashes { .. },
                        ..
                    })
                )
                .then(|| m.tid.to_vec())
            })
            .expect("sampled")
    };
    let (t1, t2) = (sample_tid(&net, p1), sample_tid(&net, p2));
    let ihs: Vec<u8> = (0..6u8).flat_map(|i| [0x50 + i; 20]).collect();
    net.send(p1, addr(0), sample_reply(&t1, id1, &ihs, &[]));
    net.send(p2, addr(0), sample_reply(&t2, id2, &ihs, &[]));
    net.run_until(Timestamp::from_millis(300), 1000);
    let asks_to = |to: SocketAddr| {
        net.outside
            .iter()
            .filter(|s| s.to == to)
            .filter(|s| {
                matches!(
                    krpc::decode(&s.bytes).map(|m| m.body),
                    Ok(Body::Query(Query {
                        kind: QueryKind::GetPeers { .. },
                        ..
                    }))
                )
            })
            .count()
    };
    let (a1, a2) = (asks_to(p1), asks_to(p2));
    assert!(a1 >= 1, "the first source is asked ({a1}, {a2})");
    assert!(a2 >= 1, "the second source is asked too ({a1}, {a2})");
    // Each within its pace: burst 3, 1/s, one of which went to its sample query.
    assert!(a1 <= 2 && a2 <= 2, "({a1}, {a2})");
}

/// Trackers are asked only about infohashes with evidence of being torrents. An
/// infohash heard only in get_peers queries from one address (however often) is
/// most likely another node's random lookup target: when its peer search finds
/// nobody it is counted, not asked. One heard from two addresses is asked. (Before,
/// every infohash whose search found nobody was asked: on the real DHT, junk that
/// filled the trackers' queues.)
#[test]
fn trackers_are_asked_only_about_infohashes_with_evidence() {
    let mut net = Net::new(1, 5, |_, c| {
        c.crawl.auto_acquire = true;
        c.trackers.urls = vec!["udp://127.0.5.5:6969".parse().unwrap()];
    });
    let junk = InfoHash([0x11; 20]);
    let real = InfoHash([0x22; 20]);
    let other: SocketAddr = "127.0.9.8:7000".parse().unwrap();
    let get_peers = |ih| QueryKind::GetPeers {
        info_hash: ih,
        scrape: false,
        noseed: false,
    };
    // The junk target three times from one address, the real one from two.
    for (i, (from, ih)) in [
        (probe(), junk),
        (probe(), junk),
        (probe(), real),
        (probe(), junk),
        (other, real),
    ]
    .into_iter()
    .enumerate()
    {
        let tid = [b'g', i as u8];
        net.send(from, addr(0), query(&tid, NodeId([9; 20]), get_peers(ih)));
        let until = net.now.add(Duration::from_millis(100));
        net.run_until(until, 1000);
    }
    // Past the candidates' grace: both are searched, nobody holds either.
    net.run_until(Timestamp::from_secs(60), 100_000);
    let s = net.nodes[0].stats();
    assert!(
        net.nodes[0].crawl_stats().acquire_no_peers >= 2,
        "{:?}",
        net.nodes[0].crawl_stats()
    );
    assert_eq!(s.tracker.asked, 1, "only the real one: {:?}", s.tracker);
    assert_eq!(s.tracker.unconfirmed, 1, "{:?}", s.tracker);
}

/// A uTP SYN (type 4, version 1) in `net.outside` to `to`.
fn utp_syns_to(net: &Net, to: SocketAddr) -> usize {
    net.outside
        .iter()
        .filter(|s| s.to == to && s.bytes.first() == Some(&0x41))
        .count()
}

/// The connection strategy in the crawler: a peer that queried us is fetched
/// from over uTP first, from the DHT socket (a SYN leaves as a datagram); a
/// peer that did not gets a TCP connect, and uTP after TCP is refused.
#[test]
fn a_peer_that_queried_us_is_fetched_over_utp_and_another_after_tcp_is_refused() {
    let mut net = quiet_net(1);
    let talker: SocketAddr = "127.0.9.40:6881".parse().unwrap();
    let silent: SocketAddr = "127.0.9.41:6881".parse().unwrap();
    net.send(
        talker,
        addr(0),
        query(b"p1", NodeId([9; 20]), QueryKind::Ping),
    );
    net.run_until(Timestamp::from_millis(50), 100);
    let at = net.now;
    net.nodes[0]
        .fetch_metadata(at, InfoHash([0x51; 20]), &[talker])
        .unwrap();
    net.nodes[0]
        .fetch_metadata(at, InfoHash([0x52; 20]), &[silent])
        .unwrap();
    net.drain(0);
    assert_eq!(utp_syns_to(&net, talker), 1);
    assert!(!net.connects.iter().any(|(_, to)| *to == talker));
    assert_eq!(utp_syns_to(&net, silent), 0);
    let (_, conn, to) = *net
        .conn_ids
        .last()
        .expect("a TCP connect to the silent peer");
    assert_eq!(to, silent);
    net.nodes[0].handle_input(Input::TcpClosed {
        at,
        conn,
        reason: CloseReason::Refused,
    });
    net.drain(0);
    assert_eq!(utp_syns_to(&net, silent), 1);
    let t = net.nodes[0].stats().fetch.transport;
    use magnetar_core::fetch::{Transport, TransportChoice};
    assert_eq!(
        t.chosen.get(&(Transport::Utp, TransportChoice::UdpContact)),
        Some(&1)
    );
    assert_eq!(
        t.chosen.get(&(Transport::Utp, TransportChoice::Fallback)),
        Some(&1)
    );
    assert_eq!(net.nodes[0].utp_stats().connects, 2);
}

/// uTP datagrams have a transfer budget of their own: over it they wait.
#[test]
fn utp_datagrams_wait_for_the_transfer_budget() {
    let mut net = Net::new(1, 1, |_, c| {
        c.crawl.enabled = false;
        c.fetch.utp_packets_per_sec = 1;
    });
    let peers: Vec<SocketAddr> = (0..3)
        .map(|i| format!("127.0.9.{}:6881", 50 + i).parse().unwrap())
        .collect();
    for (i, p) in peers.iter().enumerate() {
        net.send(
            *p,
            addr(0),
            query(&[b'q', i as u8], NodeId([9; 20]), QueryKind::Ping),
        );
    }
    net.run_until(Timestamp::from_millis(50), 100);
    let at = net.now;
    for (i, p) in peers.iter().enumerate() {
        net.nodes[0]
            .fetch_metadata(at, InfoHash([0x60 + i as u8; 20]), &[*p])
            .unwrap();
    }
    net.drain(0);
    let syns = |net: &Net| peers.iter().map(|p| utp_syns_to(net, *p)).sum::<usize>();
    // One second's worth (one datagram) at once, the others one per second.
    assert_eq!(syns(&net), 1);
    net.run_until(at.add(Duration::from_millis(1100)), 1000);
    assert_eq!(syns(&net), 2);
    net.run_until(at.add(Duration::from_millis(2100)), 1000);
    assert!(peers.iter().all(|p| utp_syns_to(&net, *p) >= 1));
    assert!(net.nodes[0].stats().fetch.transport.utp_budget_waits > 0);
}
