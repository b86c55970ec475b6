//! The crawl strategy's citizenship rules and candidate handling, over the tiny
//! test network: BEP 51 support remembered, get_peers candidates (wait for the
//! announce, one peer search, never retried), per-IP pacing, the address filter
//! and the fingerprint of what we send.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{addr, error, query, reply, Net};
use magnetar_core::addr::is_sendable;
use magnetar_core::krpc::{
    self, error_code, Body, CompactNodesV4, Query, QueryKind, Response, Samples,
};
use magnetar_core::{Config, Crawler, Event, InfoHash, Input, NodeId, Output, SocketId, Timestamp};

fn get_peers(ih: InfoHash) -> QueryKind<'static> {
    QueryKind::GetPeers {
        info_hash: ih,
        scrape: false,
        noseed: false,
    }
}

/// Queries the crawler sent to `to` (method name, transaction id), in order.
fn queries_to(net: &Net, to: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    net.outside
        .iter()
        .filter(|s| s.to == to)
        .filter_map(|s| {
            let m = krpc::decode(&s.bytes).ok()?;
            match m.body {
                Body::Query(q) => Some((method(&q.kind), m.tid.to_vec())),
                _ => None,
            }
        })
        .collect()
}

fn method(k: &QueryKind<'_>) -> &'static str {
    match k {
        QueryKind::Ping => "ping",
        QueryKind::FindNode { .. } => "find_node",
        QueryKind::GetPeers { .. } => "get_peers",
        QueryKind::AnnouncePeer { .. } => "announce_peer",
        QueryKind::SampleInfohashes { .. } => "sample_infohashes",
        QueryKind::Unknown { .. } => "unknown",
    }
}

/// get_peers queries for `ih` sent to anyone.
fn get_peers_for(net: &Net, ih: InfoHash) -> usize {
    net.outside
        .iter()
        .filter(|s| {
            matches!(
                krpc::decode(&s.bytes).map(|m| m.body),
                Ok(Body::Query(Query { kind: QueryKind::GetPeers { info_hash, .. }, .. })) if info_hash == ih
            )
        })
        .count()
}

#[test]
fn nodes_without_bep51_are_remembered_and_not_sampled_again() {
    let mut net = Net::new(1, 21, |_, c| c.crawl.explore_pps = 1);
    let without: SocketAddr = "127.0.9.9:7000".parse().unwrap();
    let with: SocketAddr = "127.0.9.10:7000".parse().unwrap();
    let (id_without, id_with) = (NodeId([0x51; 20]), NodeId([0xa5; 20]));
    net.send(without, addr(0), query(b"p1", id_without, QueryKind::Ping));
    net.send(with, addr(0), query(b"p2", id_with, QueryKind::Ping));
    // Two fake nodes answer every query for 30 minutes: one says "method unknown"
    // to sample_infohashes, the other samples with a 10-minute interval.
    let mut answered = 0;
    let ih = InfoHash([0x33; 20]);
    for step in 1..=1800u64 {
        net.run_until(Timestamp::from_secs(step), 10_000);
        let fresh: Vec<_> = net.outside[answered..]
            .iter()
            .filter_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                match m.body {
                    Body::Query(q) => Some((s.to, m.tid.to_vec(), method(&q.kind))),
                    _ => None,
                }
            })
            .collect();
        answered = net.outside.len();
        for (to, tid, m) in fresh {
            let id = if to == with { id_with } else { id_without };
            let bytes = match (m, to == with) {
                ("sample_infohashes", false) => error(&tid, error_code::METHOD_UNKNOWN),
                ("sample_infohashes", true) => reply(
                    &tid,
                    Response {
                        id,
                        samples: Samples::new(&ih.0),
                        num: Some(40),
                        interval: Some(600),
                        ..Response::default()
                    },
                ),
                _ => reply(
                    &tid,
                    Response {
                        id,
                        ..Response::default()
                    },
                ),
            };
            net.send(to, addr(0), bytes);
        }
    }
    let sampled = |to| {
        queries_to(&net, to)
            .iter()
            .filter(|q| q.0 == "sample_infohashes")
            .count()
    };
    assert_eq!(sampled(without), 1, "asked once, never again");
    // The BEP 51 node is revisited once per its interval: at 0, 10, 20 minutes.
    assert_eq!(sampled(with), 3);
    let s = net.nodes[0].crawl_stats();
    assert_eq!((s.bep51_yes, s.bep51_no), (1, 1));
    assert_eq!(s.book_nodes, 2, "both still known");
    // `num` estimates what the sampled node stores.
    assert_eq!(s.stored_estimate, 40);
}

/// A crawler that captures; `from` asks it for `ih` and gets a token back.
fn captured_candidate(seed: u64, ih: InfoHash, from: SocketAddr) -> (Net, Vec<u8>) {
    let mut net = Net::new(1, seed, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
    });
    net.send(from, addr(0), query(b"g1", NodeId([7; 20]), get_peers(ih)));
    net.run_until(Timestamp::from_millis(100), 1000);
    let token = net
        .outside
        .iter()
        .filter(|s| s.to == from)
        .find_map(|s| match krpc::decode(&s.bytes).ok()?.body {
            Body::Response(r) => r.token.map(|t| t.to_vec()),
            _ => None,
        })
        .expect("a token for the asker");
    (net, token)
}

#[test]
fn a_get_peers_candidate_waits_for_the_announce_and_fetches_from_it() {
    let ih = InfoHash([0x44; 20]);
    let client: SocketAddr = "127.0.9.30:7000".parse().unwrap();
    let (mut net, token) = captured_candidate(3, ih, client);
    // The client traverses on, then announces to us 5 s later.
    net.run_until(Timestamp::from_secs(5), 100_000);
    assert_eq!(
        get_peers_for(&net, ih),
        0,
        "no peer search during the grace"
    );
    assert!(net.connects.is_empty());
    let ann = QueryKind::AnnouncePeer {
        info_hash: ih,
        port: 51413,
        implied_port: false,
        token: &token,
        seed: Some(true),
    };
    net.send(client, addr(0), query(b"a1", NodeId([7; 20]), ann));
    net.run_until(Timestamp::from_secs(60), 100_000);
    let peer: SocketAddr = "127.0.9.30:51413".parse().unwrap();
    assert_eq!(
        net.connects,
        vec![(0, peer)],
        "fetched from the announced peer"
    );
    assert_eq!(get_peers_for(&net, ih), 0, "no traversal was needed");
    // The announce confirms the candidate for the runtime.
    let found: Vec<_> = net
        .events_of(0)
        .filter_map(|e| match e {
            Event::PeersFound {
                info_hash, peers, ..
            } if *info_hash == ih => Some(peers.clone()),
            _ => None,
        })
        .collect();
    // First the announced peer; the fetch from it fails here (nothing listens),
    // so a peer search follows, which finds nobody else in this one-node world.
    assert_eq!(found.first(), Some(&vec![peer]), "{found:?}");
    assert!(found[1..].iter().all(|p| p.is_empty()), "{found:?}");
    let s = net.nodes[0].crawl_stats();
    assert_eq!((s.candidates_deferred, s.candidates_announced), (1, 1));
}

#[test]
fn a_get_peers_candidate_nobody_holds_gets_a_second_peer_search_then_none() {
    let ih = InfoHash([0x45; 20]);
    let asker: SocketAddr = "127.0.9.31:7000".parse().unwrap();
    let (mut net, _) = captured_candidate(4, ih, asker);
    // The asker answers whatever the crawler asks it for 10 s (so it is in the
    // crawler's table), then falls silent.
    let mut answered = 0;
    for ms in (200..=10_000).step_by(200) {
        net.run_until(Timestamp::from_millis(ms), 100_000);
        let tids: Vec<Vec<u8>> = net.outside[answered..]
            .iter()
            .filter(|s| s.to == asker)
            .filter_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                matches!(m.body, Body::Query(_)).then(|| m.tid.to_vec())
            })
            .collect();
        answered = net.outside.len();
        for tid in tids {
            let r = Response {
                id: NodeId([7; 20]),
                ..Response::default()
            };
            net.send(asker, addr(0), reply(&tid, r));
        }
    }
    assert_eq!(get_peers_for(&net, ih), 0, "waits for an announce first");
    // No announce: after the grace a bounded traversal runs (towards the asker,
    // the only node known, which never answers) and finds nobody.
    net.run_until(Timestamp::from_secs(120), 100_000);
    let searched = get_peers_for(&net, ih);
    assert!(searched >= 1, "one peer search");
    let s = net.nodes[0].crawl_stats();
    assert_eq!(s.candidates_retried, 1, "{s:?}");
    assert_eq!(s.candidates_dropped, 0);
    assert_eq!(s.given_up, 0);
    // Its clients may not have announced yet when that search ran (the query
    // we heard was part of the traversal that ends with the announce): one
    // more search 5 minutes later (`candidate_retry`), then it is dropped.
    net.run_until(Timestamp::from_secs(120 + 300 + 60), 1_000_000);
    // (The asker is silent and gone from the table by now: the second search
    // may have nobody left to ask.)
    let again = get_peers_for(&net, ih);
    let s = net.nodes[0].crawl_stats();
    assert_eq!(
        (s.retries, s.candidates_dropped, s.given_up),
        (1, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.acquire_no_peers, 2, "two searches found nobody");
    // A sampled infohash would be retried after 30 minutes and 3 hours too; a
    // candidate is not (most are table-refresh targets).
    net.run_until(Timestamp::from_secs(3 * 3600), 1_000_000);
    assert_eq!(get_peers_for(&net, ih), again);
    assert_eq!(net.nodes[0].crawl_stats().retries, 1);
}

#[test]
fn queries_to_one_ip_stay_under_libtorrents_ban_threshold() {
    let mut net = Net::new(1, 22, |_, c| {
        c.crawl.per_ip_pps = 2;
        c.crawl.per_ip_burst = 8;
        c.dht.per_ip_answers_per_sec = 1_000_000;
    });
    // 500 nodes behind one IP, all new and due for sampling at once.
    let ip = [127, 0, 9, 40];
    let mut id = NodeId([0x10; 20]);
    for port in 1000..1500u16 {
        id.0[18..].copy_from_slice(&port.to_be_bytes());
        let from = SocketAddr::from((ip, port));
        net.send(from, addr(0), query(b"pi", id, QueryKind::Ping));
    }
    net.run_until(Timestamp::from_secs(30), 1_000_000);
    let mut at: Vec<Timestamp> = net
        .outside
        .iter()
        .filter(|s| s.to.ip() == std::net::IpAddr::from(ip))
        .filter(|s| matches!(krpc::decode(&s.bytes).map(|m| m.body), Ok(Body::Query(_))))
        .map(|s| s.at)
        .collect();
    at.sort();
    assert!(at.len() >= 30, "the IP is queried: {}", at.len());
    // libtorrent bans an IP that sends 50 packets within 10 s.
    let worst = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| t.since(at[i]) < Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(worst <= 2 * 10 + 8, "{worst} queries in 10 s to one IP");
    assert!(net.nodes[0].crawl_stats().per_ip_refused > 0);
}

fn drain(c: &mut Crawler, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Option<Timestamp> {
    for _ in 0..100_000 {
        match c.poll_output() {
            Output::Transmit { to, payload, .. } => out.push((to, payload.to_vec())),
            Output::Timeout(t) => return Some(t),
            Output::Idle => return None,
            _ => {}
        }
    }
    panic!("the crawler never stopped producing output");
}

#[test]
fn never_sends_to_unroutable_addresses_and_leaves_no_fixed_pattern() {
    let bind: SocketAddr = "93.184.216.34:6881".parse().unwrap();
    let router: SocketAddr = "1.1.1.1:6881".parse().unwrap();
    let public: SocketAddr = "5.6.7.9:6881".parse().unwrap();
    let mut c = Crawler::new(Config::new(5, bind), Timestamp::ZERO);
    c.bootstrap(Timestamp::ZERO, &[router]);
    let mut out = Vec::new();
    drain(&mut c, &mut out);
    let tid = out
        .iter()
        .find(|(to, _)| *to == router)
        .map(|(_, b)| krpc::decode(b).expect("ours").tid.to_vec())
        .expect("a bootstrap query to the router");
    let listed = [
        "10.1.2.3:6881",
        "192.168.1.1:6881",
        "172.16.0.9:6881",
        "127.0.0.1:6881",
        "0.0.0.0:6881",
        "224.0.0.5:6881",
        "255.255.255.255:6881",
        "100.64.0.1:6881",
        "169.254.1.1:6881",
        "5.6.7.8:0",
        "5.6.7.9:6881",
    ];
    let mut nodes = Vec::new();
    for (i, a) in listed.iter().enumerate() {
        let mut id = NodeId([0x20; 20]);
        id.0[0] = i as u8 * 16;
        krpc::write_compact_node(&id, &a.parse().unwrap(), &mut nodes);
    }
    let r = reply(
        &tid,
        Response {
            id: NodeId([0x99; 20]),
            nodes: CompactNodesV4::new(&nodes),
            ..Response::default()
        },
    );
    c.handle_input(Input::Datagram {
        at: Timestamp::from_millis(50),
        local: SocketId(0),
        from: router,
        bytes: &r,
    });
    let mut next = drain(&mut c, &mut out);
    let end = Timestamp::from_secs(120);
    let mut steps = 0;
    while let Some(t) = next.filter(|t| *t <= end && steps < 100_000) {
        steps += 1;
        c.handle_input(Input::Timeout(t));
        next = drain(&mut c, &mut out);
    }
    for (to, _) in &out {
        assert!(is_sendable(to, false), "sent to {to}");
    }
    assert!(
        out.iter().any(|(to, _)| *to == public),
        "the public node is used"
    );
    // Fingerprint: no `v` by default, random transaction ids.
    let tids: Vec<Vec<u8>> = out
        .iter()
        .filter_map(|(_, b)| {
            let m = krpc::decode(b).ok()?;
            assert_eq!(m.version, None, "no fixed version string");
            matches!(m.body, Body::Query(_)).then(|| m.tid.to_vec())
        })
        .collect();
    assert!(tids.len() >= 4, "{} queries", tids.len());
    let distinct: BTreeSet<&Vec<u8>> = tids.iter().collect();
    assert_eq!(distinct.len(), tids.len(), "transaction ids are not reused");
    let as_int = |t: &Vec<u8>| t.iter().fold(0u64, |a, b| a << 8 | *b as u64);
    let steps_between: BTreeSet<i128> = tids
        .windows(2)
        .map(|w| as_int(&w[1]) as i128 - as_int(&w[0]) as i128)
        .collect();
    assert!(steps_between.len() > 1, "transaction ids are not a counter");
}

#[test]
fn a_failed_fetch_is_retried_with_backoff_then_given_up_and_says_so() {
    use magnetar_core::fetch::AfterFailure;
    let mut net = Net::new(1, 23, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
        c.fetch.connect_timeout = Duration::from_secs(5);
    });
    let source: SocketAddr = "127.0.9.50:7000".parse().unwrap();
    // A peer that never accepts (the test network never completes a connect).
    let peer: SocketAddr = "127.0.9.51:51413".parse().unwrap();
    let source_id = NodeId([0x3c; 20]);
    let ih = InfoHash([0x46; 20]);
    net.send(source, addr(0), query(b"hi", source_id, QueryKind::Ping));
    // The source samples `ih` and answers every get_peers with the peer.
    let mut answered = 0;
    let mut seen_events = 0;
    let mut failures: Vec<(Timestamp, AfterFailure)> = Vec::new();
    let step = Duration::from_secs(5);
    let mut t = Timestamp::ZERO;
    while t < Timestamp::from_secs(4 * 3600) {
        t = t.add(step);
        net.run_until(t, 100_000);
        let fresh: Vec<_> = net.outside[answered..]
            .iter()
            .filter(|s| s.to == source)
            .filter_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                match m.body {
                    Body::Query(q) => Some((m.tid.to_vec(), method(&q.kind))),
                    _ => None,
                }
            })
            .collect();
        answered = net.outside.len();
        for (tid, m) in fresh {
            let r = match m {
                "sample_infohashes" => Response {
                    id: source_id,
                    samples: Samples::new(&ih.0),
                    num: Some(1),
                    interval: Some(21_600),
                    ..Response::default()
                },
                "get_peers" => Response {
                    id: source_id,
                    token: Some(b"tk"),
                    values: Some(vec![peer]),
                    ..Response::default()
                },
                _ => Response {
                    id: source_id,
                    ..Response::default()
                },
            };
            net.send(source, addr(0), reply(&tid, r));
        }
        for e in net.events_of(0).skip(seen_events) {
            if let Event::MetadataFailed(m) = e {
                if m.info_hash == ih {
                    failures.push((t, m.next));
                }
            }
        }
        seen_events = net.events_of(0).count();
    }
    // A retry first tries the peers that failed before; when they fail again the
    // search goes on (`StillSearching`), and only the end of that round counts.
    assert!(failures
        .iter()
        .all(|f| !matches!(f.1, AfterFailure::NotManaged)));
    let early = failures
        .iter()
        .filter(|f| matches!(f.1, AfterFailure::StillSearching))
        .count();
    failures.retain(|f| !matches!(f.1, AfterFailure::StillSearching));
    let kinds: Vec<&str> = failures
        .iter()
        .map(|f| match f.1 {
            AfterFailure::RetryAt(_) => "retry",
            AfterFailure::GivenUp => "given up",
            AfterFailure::NotManaged => "not managed",
            AfterFailure::StillSearching => "still searching",
            _ => "unknown",
        })
        .collect();
    assert_eq!(
        kinds,
        ["retry", "retry", "retry", "given up"],
        "{failures:?}"
    );
    // 5 min, 30 min, 3 h: each retry comes when it was promised, not before.
    let backoff = [300, 1800, 3 * 3600];
    for (i, w) in failures.windows(2).enumerate() {
        let AfterFailure::RetryAt(at) = w[0].1 else {
            unreachable!()
        };
        assert!(at.since(w[0].0) + step >= Duration::from_secs(backoff[i]));
        assert!(w[1].0 >= at, "retried before {at:?}: {failures:?}");
    }
    // One connect per round, plus one for each round that began with the old peers.
    assert_eq!(
        net.connects.iter().filter(|c| c.1 == peer).count(),
        4 + early
    );
    let s = net.nodes[0].crawl_stats();
    assert_eq!((s.retries, s.given_up), (3, 1));
}

#[test]
fn paced_acquisitions_wait_without_asking_the_limiter_every_tick() {
    // One node gives us 200 infohashes at once; its IP may be asked 2 times a
    // second (8 at once), so asking it about each takes about 100 s. Meanwhile
    // the backlog waits for the IP's pace: each acquisition checks the limiter
    // a bounded number of times over its life, not once per 10 ms tick.
    let n = 200usize;
    let mut net = Net::new(1, 23, |_, c| {
        c.crawl.explore_pps = 1;
        c.crawl.auto_acquire = true;
        c.crawl.lookup_on_miss = false;
        c.crawl.per_ip_pps = 2;
        c.crawl.per_ip_burst = 8;
        c.dht.per_ip_answers_per_sec = 1_000_000;
    });
    let source: SocketAddr = "127.0.9.60:7000".parse().unwrap();
    let source_id = NodeId([0x3d; 20]);
    net.send(source, addr(0), query(b"hi", source_id, QueryKind::Ping));
    let ihs: Vec<InfoHash> = (0..n)
        .map(|i| {
            let mut b = [0x5a; 20];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            InfoHash(b)
        })
        .collect();
    let samples: Vec<u8> = ihs.iter().flat_map(|i| i.0).collect();
    let mut answered = 0;
    let mut t = Timestamp::ZERO;
    // Stop at the first retries (5 minutes after a miss).
    while t < Timestamp::from_secs(150) {
        t = t.add(Duration::from_millis(100));
        net.run_until(t, 100_000);
        let fresh: Vec<_> = net.outside[answered..]
            .iter()
            .filter(|s| s.to == source)
            .filter_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                match m.body {
                    Body::Query(q) => Some((m.tid.to_vec(), method(&q.kind))),
                    _ => None,
                }
            })
            .collect();
        answered = net.outside.len();
        for (tid, m) in fresh {
            let r = match m {
                "sample_infohashes" => Response {
                    id: source_id,
                    samples: Samples::new(&samples),
                    num: Some(n as i64),
                    interval: Some(21_600),
                    ..Response::default()
                },
                _ => Response {
                    id: source_id,
                    token: Some(b"tk"),
                    ..Response::default()
                },
            };
            net.send(source, addr(0), reply(&tid, r));
        }
    }
    // Every infohash was asked about, once, within the IP's pace.
    let asked: BTreeSet<InfoHash> = ihs
        .iter()
        .copied()
        .filter(|ih| get_peers_for(&net, *ih) == 1)
        .collect();
    assert_eq!(asked.len(), n, "each infohash asked about exactly once");
    let s = net.nodes[0].crawl_stats();
    assert_eq!(s.ask_source_sent, n as u64);
    // 150 s of ticks is 15,000 ticks: going round the backlog every tick cost
    // hundreds of thousands of refused checks; waiting costs none per tick.
    assert!(
        s.per_ip_refused <= n as u64,
        "{} per-IP refusals for {n} paced acquisitions",
        s.per_ip_refused
    );
}

#[test]
fn paced_peer_searches_wait_for_the_pace_without_asking_it_every_tick() {
    // 40 silent nodes behind one IP each ask us get_peers for an infohash of
    // their own (a table refresh's random targets): 40 candidates, whose peer
    // searches all ask nodes of that IP, paced at 2 queries a second (8 at
    // once). A search held back by the pace waits until the pace has room
    // for its next query; it used to be asked again at every 5 ms retry, each
    // ask a refusal (hundreds of thousands in a 240 s interop run).
    let n = 40u16;
    let mut net = Net::new(1, 24, |_, c| {
        c.crawl.auto_acquire = true;
        c.crawl.explore_pps = 1;
        c.crawl.per_ip_pps = 2;
        c.crawl.per_ip_burst = 8;
        c.dht.per_ip_answers_per_sec = 1_000_000;
    });
    let ip = [127, 0, 9, 80];
    let id_of = |port: u16| {
        let mut id = NodeId([0x20; 20]);
        id.0[18..].copy_from_slice(&port.to_be_bytes());
        id
    };
    for port in 0..n {
        let mut ih = [0x6c; 20];
        ih[..2].copy_from_slice(&port.to_be_bytes());
        let from = SocketAddr::from((ip, 3000 + port));
        net.send(from, addr(0), query(b"pi", id_of(port), QueryKind::Ping));
        net.send(
            from,
            addr(0),
            query(b"gp", id_of(port), get_peers(InfoHash(ih))),
        );
    }
    // They answer every query, knowing nobody and no peers (so they stay in
    // the table, and every search asks them until it has k answers).
    let mut answered = 0;
    let mut t = Timestamp::ZERO;
    while t < Timestamp::from_secs(120) {
        t = t.add(Duration::from_millis(100));
        net.run_until(t, 100_000);
        let fresh: Vec<_> = net.outside[answered..]
            .iter()
            .filter(|s| s.to.ip() == std::net::IpAddr::from(ip))
            .filter_map(|s| {
                let m = krpc::decode(&s.bytes).ok()?;
                match m.body {
                    Body::Query(q) => Some((s.to, m.tid.to_vec(), method(&q.kind))),
                    _ => None,
                }
            })
            .collect();
        answered = net.outside.len();
        for (to, tid, m) in fresh {
            // An empty store for 6 h: sampled once.
            let sample = m == "sample_infohashes";
            let r = Response {
                id: id_of(to.port() - 3000),
                token: Some(b"tk"),
                samples: sample.then(|| Samples::new(&[])).flatten(),
                num: sample.then_some(0),
                interval: sample.then_some(21_600),
                ..Response::default()
            };
            net.send(to, addr(0), reply(&tid, r));
        }
    }
    let queries: Vec<&'static str> = net
        .outside
        .iter()
        .filter(|s| s.to.ip() == std::net::IpAddr::from(ip))
        .filter_map(|s| match krpc::decode(&s.bytes).ok()?.body {
            Body::Query(q) => Some(method(&q.kind)),
            _ => None,
        })
        .collect();
    let sent = queries.len() as u64;
    let searched = queries.iter().filter(|m| **m == "get_peers").count();
    let s = net.nodes[0].crawl_stats();
    assert!(
        s.candidates_deferred > 0 && searched > 0,
        "{searched} {s:?}"
    );
    assert!(sent >= 100, "the IP is queried at its pace: {sent}");
    // A query may be refused a few times on its way (when a reply frees a
    // search's slot, or the walk takes the room first), never at every retry:
    // asking every 5 ms made 336,288 refusals of these 244 queries.
    assert!(
        s.per_ip_refused <= 4 * sent,
        "{} per-IP refusals for {sent} queries",
        s.per_ip_refused
    );
}
