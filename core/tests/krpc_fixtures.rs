//! Real datagrams from libtorrent 2.1.1, captured on loopback (see
//! `fixtures/krpc/README.md`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use magnetar_core::krpc::{
    decode, decode_lenient, encode, error_code, Body, Message, Query, QueryKind, Response,
};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/krpc/",
            $name
        ))
    };
}

const ALL: &[(&str, &[u8])] = &[
    ("lt_get_peers_query", fixture!("lt_get_peers_query.bin")),
    ("lt_ping_response", fixture!("lt_ping_response.bin")),
    (
        "lt_find_node_response",
        fixture!("lt_find_node_response.bin"),
    ),
    (
        "lt_get_peers_response_nodes",
        fixture!("lt_get_peers_response_nodes.bin"),
    ),
    (
        "lt_announce_peer_response",
        fixture!("lt_announce_peer_response.bin"),
    ),
    (
        "lt_get_peers_scrape_response",
        fixture!("lt_get_peers_scrape_response.bin"),
    ),
    (
        "lt_get_peers_response_values",
        fixture!("lt_get_peers_response_values.bin"),
    ),
    (
        "lt_sample_infohashes_response",
        fixture!("lt_sample_infohashes_response.bin"),
    ),
    (
        "lt_unknown_method_response",
        fixture!("lt_unknown_method_response.bin"),
    ),
    ("lt_error_bad_id", fixture!("lt_error_bad_id.bin")),
    ("lt_error_with_r", fixture!("lt_error_with_r.bin")),
];

/// What libtorrent saw us as (the Python socket on 127.0.0.1:47001).
fn us() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 47001))
}

fn response<'a>(m: &'a Message<'a>) -> &'a Response<'a> {
    match &m.body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn every_fixture_decodes_strictly_and_reencodes() {
    for (name, buf) in ALL {
        let m = decode(buf).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(m.version, Some(&b"LT\x02\x11"[..]), "{name}");
        // Sorted keys: the lenient path has nothing to flag.
        let l = decode_lenient(buf).unwrap();
        assert!(!l.unsorted_keys, "{name}");
        assert_eq!(l.message, m);
        let mut out = Vec::new();
        encode(&m, &mut out);
        assert_eq!(decode(&out), Ok(m.clone()), "{name}");
        // Our encoding drops only what we do not model (libtorrent's `p`, and an `r` next
        // to `e`), so it is never longer.
        assert!(out.len() <= buf.len(), "{name}");
    }
}

#[test]
fn libtorrent_query() {
    let m = decode(fixture!("lt_get_peers_query.bin")).unwrap();
    assert_eq!(m.tid.len(), 2);
    assert!(!m.read_only);
    assert!(matches!(
        m.body,
        Body::Query(Query {
            kind: QueryKind::GetPeers {
                scrape: false,
                noseed: false,
                ..
            },
            want: None,
            ..
        })
    ));
}

#[test]
fn libtorrent_responses() {
    let ping = decode(fixture!("lt_ping_response.bin")).unwrap();
    assert_eq!(ping.tid, b"p1");
    assert_eq!(ping.ip, Some(us()));
    let r = response(&ping);
    assert_eq!(r.nodes, None);

    let find = decode(fixture!("lt_find_node_response.bin")).unwrap();
    assert_eq!(find.tid, b"f1");
    let nodes: Vec<_> = response(&find).nodes.unwrap().iter().collect();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().any(|(_, a)| *a == us()));

    let gp = decode(fixture!("lt_get_peers_response_nodes.bin")).unwrap();
    let r = response(&gp);
    assert_eq!(r.token.map(<[u8]>::len), Some(4));
    assert_eq!(r.nodes.unwrap().len(), 3);
    assert_eq!(r.values, None);

    let ann = decode(fixture!("lt_announce_peer_response.bin")).unwrap();
    assert_eq!(ann.tid, b"a1");

    let scrape = decode(fixture!("lt_get_peers_scrape_response.bin")).unwrap();
    let r = response(&scrape);
    let ones = |bf: &[u8; 256]| bf.iter().map(|b| b.count_ones()).sum::<u32>();
    // One IP (127.0.0.1) announced, as a seed and as a peer: a few bits each.
    assert!(ones(r.bf_seeds.unwrap()) > 0);
    assert!(ones(r.bf_peers.unwrap()) > 0);
    assert_eq!(r.values, None);

    let vals = decode(fixture!("lt_get_peers_response_values.bin")).unwrap();
    assert_eq!(vals.tid, b"g3");
    assert_eq!(response(&vals).values, Some(vec![us()]));

    let s = decode(fixture!("lt_sample_infohashes_response.bin")).unwrap();
    let r = response(&s);
    assert_eq!(r.interval, Some(21600));
    assert_eq!(r.num, Some(1));
    let samples: Vec<_> = r.samples.unwrap().iter().collect();
    let announced: [u8; 20] = std::array::from_fn(|i| i as u8);
    assert_eq!(samples, vec![magnetar_core::InfoHash(announced)]);

    let u = decode(fixture!("lt_unknown_method_response.bin")).unwrap();
    assert_eq!(u.tid, b"u1");
    assert!(response(&u).nodes.is_some());
}

#[test]
fn libtorrent_errors() {
    let e = decode(fixture!("lt_error_bad_id.bin")).unwrap();
    match e.body {
        Body::Error(err) => {
            assert_eq!(err.code, error_code::PROTOCOL);
            assert_eq!(err.message, b"invalid value for 'id'");
        }
        other => panic!("{other:?}"),
    }
    // `y: e` with `e`, `ip` and an `r` dict: an error, and the `ip` is kept.
    let e = decode(fixture!("lt_error_with_r.bin")).unwrap();
    assert_eq!(e.ip, Some(us()));
    match e.body {
        Body::Error(err) => assert_eq!(err.message, b"missing 'info_hash' key"),
        other => panic!("{other:?}"),
    }
}
