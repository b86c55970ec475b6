//! The encoder: every type round-trips, output is deterministic, and the digit and
//! compact writers match their formats.

use super::*;

// ---- Encoding -------------------------------------------------------------------------

#[test]
fn encode_every_type_roundtrips() {
    let ih = InfoHash([7; 20]);
    let me = NodeId([1; 20]);
    let mut nodes = Vec::new();
    for i in 0..8u8 {
        write_compact_node(&NodeId([i; 20]), &v4([10, 0, 0, i], 6881), &mut nodes);
    }
    let bf = [0xa5u8; 256];
    let samples = [9u8; 400];
    let kinds = [
        QueryKind::Ping,
        QueryKind::FindNode { target: me },
        QueryKind::GetPeers {
            info_hash: ih,
            scrape: true,
            noseed: false,
        },
        QueryKind::AnnouncePeer {
            info_hash: ih,
            port: 65535,
            implied_port: true,
            token: b"\x00\x01",
            seed: Some(false),
        },
        QueryKind::SampleInfohashes { target: me },
        QueryKind::Unknown {
            method: b"vote",
            target: None,
            info_hash: None,
        },
        QueryKind::Unknown {
            method: b"vote",
            target: Some(me),
            info_hash: Some(InfoHash([3; 20])),
        },
    ];
    for kind in kinds {
        for want in [
            None,
            Some(Want::default()),
            Some(Want { n4: true, n6: true }),
        ] {
            roundtrip(&Message {
                tid: b"\xff\x00",
                version: Some(b"MG01"),
                ip: Some(v4([8, 8, 8, 8], 53)),
                read_only: true,
                body: Body::Query(Query {
                    id: me,
                    want,
                    kind: kind.clone(),
                }),
            });
        }
    }
    let full = Response {
        id: me,
        nodes: CompactNodesV4::new(&nodes),
        nodes6: CompactNodesV6::new(&[]),
        values: Some(vec![
            v4([1, 1, 1, 1], 1),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 2, 0, 0)),
        ]),
        token: Some(b"token"),
        samples: Samples::new(&samples),
        num: Some(-3),
        interval: Some(i64::MAX),
        bf_seeds: Some(&bf),
        bf_peers: Some(&bf),
    };
    let out = roundtrip(&Message {
        tid: b"",
        version: None,
        ip: None,
        read_only: false,
        body: Body::Response(full),
    });
    assert!(out.starts_with(b"d1:rd4:BFpe256:"));
    roundtrip(&Message {
        tid: b"t",
        version: None,
        ip: None,
        read_only: false,
        body: Body::Error(KrpcError {
            code: i64::MIN,
            message: b"",
        }),
    });
}

#[test]
fn encode_appends_and_is_deterministic() {
    let m = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
    let mut out = b"prefix".to_vec();
    encode(&m, &mut out);
    assert_eq!(
        &out[..],
        &b"prefixd1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"[..]
    );
}

/// The digit writer against `format!`, at every length boundary.
#[test]
fn put_uint_matches_format() {
    let mut values: Vec<u64> = (0..1000).collect();
    for p in 1..20 {
        let t = 10u64.pow(p);
        values.extend([t - 1, t, t + 1]);
    }
    values.push(u64::MAX);
    for v in values {
        let mut out = b"x".to_vec();
        put_uint(&mut out, v);
        assert_eq!(out, format!("x{v}").into_bytes());
    }
}

/// The compact writers against the obvious byte layout.
#[test]
fn compact_writers_match_the_layout() {
    let id = NodeId(std::array::from_fn(|i| i as u8));
    let v4a = v4([1, 2, 3, 4], 0x1ae1);
    let v6a = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| 0xf0 + i as u8)),
        0x0102,
        7,
        9,
    ));
    for addr in [v4a, v6a] {
        let mut want = b"pre".to_vec();
        want.extend_from_slice(&id.0);
        match addr {
            SocketAddr::V4(a) => want.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => want.extend_from_slice(&a.ip().octets()),
        }
        want.extend_from_slice(&addr.port().to_be_bytes());
        let mut out = b"pre".to_vec();
        write_compact_node(&id, &addr, &mut out);
        assert_eq!(out, want);
        let mut peer = b"pre".to_vec();
        crate::krpc::write_compact_peer(&addr, &mut peer);
        assert_eq!(peer[3..], want[23..]);
        assert_eq!(
            crate::krpc::peer_from_compact(&peer[3..]).map(|a| a.port()),
            Some(addr.port())
        );
    }
}
