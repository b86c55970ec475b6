//! Replies real nodes expect (issue 17 item 1: `nodes` always present, `nodes6`
//! when asked for) and dual-stack answering and learning (item 2, BEP 32).

use std::net::SocketAddr;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind, Response, Want};
use magnetar_core::Timestamp;
use magnetar_core::{Config, Crawler, IdentityConfig, InfoHash, Input, NodeId, Output, SocketId};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A crawler with one identity per bind address, at time 0.
fn crawler(binds: &[&str]) -> Crawler {
    let mut c = Config::new(7, sa(binds[0]));
    c.identities = binds
        .iter()
        .map(|b| IdentityConfig {
            bind: sa(b),
            node_id: None,
            external_ip: None,
        })
        .collect();
    Crawler::new(c, Timestamp::ZERO)
}

fn query(tid: &[u8], want: Option<Want>, kind: QueryKind<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    krpc::encode(
        &Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query(Query {
                id: NodeId([0x42; 20]),
                want,
                kind,
            }),
        },
        &mut buf,
    );
    buf
}

/// Every datagram the crawler sends until it is idle.
fn drain(c: &mut Crawler) -> Vec<(SocketId, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match c.poll_output() {
            Output::Transmit { local, to, payload } => out.push((local, to, payload.to_vec())),
            Output::Timeout(_) | Output::Idle => return out,
            _ => {}
        }
    }
    panic!("the crawler never stopped producing output");
}

/// Sends `bytes` to identity `local` from `from` and returns the reply to `from`.
fn ask(c: &mut Crawler, at: u64, local: u16, from: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    c.handle_input(Input::Datagram {
        at: Timestamp::from_secs(at),
        local: SocketId(local),
        from,
        bytes,
    });
    let tid = krpc::decode(bytes).expect("our query decodes").tid.to_vec();
    // The crawl strategy may also query the querier: keep the answer only.
    let replies: Vec<_> = drain(c)
        .into_iter()
        .filter(|(_, to, b)| {
            *to == from
                && krpc::decode(b)
                    .is_ok_and(|m| m.tid == tid && matches!(m.body, Body::Response(_)))
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply to the querier");
    replies.into_iter().next().unwrap().2
}

fn response(bytes: &[u8]) -> Response<'_> {
    match krpc::decode(bytes).expect("a valid reply").body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn an_empty_table_still_answers_with_the_nodes_key() {
    let mut c = crawler(&["0.0.0.0:6881"]);
    let ih = InfoHash([9; 20]);
    let target = NodeId([3; 20]);
    let kinds = [
        ("find_node", QueryKind::FindNode { target }),
        (
            "get_peers",
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        ),
        ("sample_infohashes", QueryKind::SampleInfohashes { target }),
    ];
    for (n, (name, kind)) in kinds.into_iter().enumerate() {
        // A fresh querier per query (the answer limiter is per IP).
        let from = SocketAddr::from(([81, 2, 3, 4 + n as u8], 6881));
        let reply = ask(&mut c, 1, 0, from, &query(b"aa", None, kind));
        let r = response(&reply);
        let nodes = r.nodes.unwrap_or_else(|| panic!("{name}: no `nodes` key"));
        assert!(nodes.is_empty(), "{name}: the table is empty");
        assert!(r.nodes6.is_none(), "{name}: nodes6 was not asked for");
    }
    // want=[n4,n6] on a v4-only crawler: both keys, both empty.
    let both = Want { n4: true, n6: true };
    let from = sa("81.2.3.100:6881");
    let reply = ask(
        &mut c,
        1,
        0,
        from,
        &query(b"ab", Some(both), QueryKind::FindNode { target }),
    );
    let r = response(&reply);
    assert!(r.nodes.is_some_and(|n| n.is_empty()), "want n4: `nodes`");
    assert!(r.nodes6.is_some_and(|n| n.is_empty()), "want n6: `nodes6`");
    // A ping carries no nodes.
    let from = sa("81.2.3.101:6881");
    let reply = ask(&mut c, 1, 0, from, &query(b"ac", None, QueryKind::Ping));
    let r = response(&reply);
    assert!(r.nodes.is_none() && r.nodes6.is_none());
}

/// The transaction id of the find_node the crawler sent to `to`, and its socket.
fn sent_to(
    sent: &[(SocketId, SocketAddr, Vec<u8>)],
    to: SocketAddr,
) -> Option<(SocketId, Vec<u8>)> {
    sent.iter().find(|(_, t, _)| *t == to).map(|(s, _, b)| {
        let m = krpc::decode(b).expect("our own query decodes");
        (*s, m.tid.to_vec())
    })
}

fn reply_bytes(tid: &[u8], id: NodeId, nodes: &[u8], nodes6: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    krpc::encode(
        &Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Response(Response {
                id,
                nodes: (!nodes.is_empty()).then(|| krpc::CompactNodesV4::new(nodes).unwrap()),
                nodes6: (!nodes6.is_empty()).then(|| krpc::CompactNodesV6::new(nodes6).unwrap()),
                ..Response::default()
            }),
        },
        &mut buf,
    );
    buf
}

#[test]
fn nodes6_in_a_v4_reply_reach_the_v6_table_and_want_is_answered_from_both() {
    // A plain node (no crawl strategy): only the DHT node's own logic is at work.
    let mut cfg = Config::plain_node(11, sa("0.0.0.0:6881"));
    cfg.identities.push(IdentityConfig {
        bind: sa("[::]:6881"),
        node_id: None,
        external_ip: None,
    });
    let mut c = Crawler::new(cfg, Timestamp::ZERO);
    let router = sa("82.1.1.1:6881");
    c.bootstrap(Timestamp::ZERO, &[router]);
    let sent = drain(&mut c);
    let (sock, tid) = sent_to(&sent, router).expect("a find_node to the v4 router");
    assert_eq!(sock, SocketId(0));
    // The router answers on v4 with three IPv6 nodes only.
    let v6: Vec<(NodeId, SocketAddr)> = (1..=3u8)
        .map(|i| {
            (
                NodeId([0x60 + i; 20]),
                SocketAddr::new(format!("2a01:4f8:{i}::1").parse().unwrap(), 6881),
            )
        })
        .collect();
    let mut n6 = Vec::new();
    for (id, a) in &v6 {
        krpc::write_compact_node(id, a, &mut n6);
    }
    c.handle_input(Input::Datagram {
        at: Timestamp::from_secs(1),
        local: SocketId(0),
        from: router,
        bytes: &reply_bytes(&tid, NodeId([0x11; 20]), &[], &n6),
    });
    let sent = drain(&mut c);
    // The v6 identity asks each of them, from the v6 socket.
    for (id, a) in &v6 {
        let (sock, tid) = sent_to(&sent, *a).unwrap_or_else(|| panic!("nothing sent to {a}"));
        assert_eq!(sock, SocketId(1), "{a} is asked from the v6 identity");
        c.handle_input(Input::Datagram {
            at: Timestamp::from_secs(2),
            local: SocketId(1),
            from: *a,
            bytes: &reply_bytes(&tid, *id, &[], &[]),
        });
    }
    drain(&mut c);
    let v6_table: Vec<SocketAddr> = c.identities()[1].table.nodes().map(|n| n.addr).collect();
    for (_, a) in &v6 {
        assert!(
            v6_table.contains(a),
            "the v6 table learned {a}: {v6_table:?}"
        );
    }
    assert!(c.identities()[0].table.get(&router).is_some());

    // A v4 query with want=[n4,n6] is answered from both tables.
    let from = sa("83.1.1.1:6881");
    let both = Want { n4: true, n6: true };
    let q = query(
        b"zz",
        Some(both),
        QueryKind::FindNode {
            target: NodeId([0x61; 20]),
        },
    );
    let reply = ask(&mut c, 3, 0, from, &q);
    let r = response(&reply);
    let got4: Vec<SocketAddr> = r.nodes.expect("nodes").iter().map(|(_, a)| a).collect();
    let got6: Vec<SocketAddr> = r.nodes6.expect("nodes6").iter().map(|(_, a)| a).collect();
    assert_eq!(got4, vec![router], "nodes from the v4 table");
    assert_eq!(got6.len(), 3, "nodes6 from the v6 table: {got6:?}");
    for (_, a) in &v6 {
        assert!(got6.contains(a));
    }
}
