//! The examples of BEP 5 and the fields of BEP 32, 33, 42, 43 and 51.

use super::*;

// ---- BEP 5 examples -------------------------------------------------------------------

#[test]
fn bep5_error() {
    let m = canonical(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee");
    assert_eq!(m.tid, b"aa");
    assert_eq!(
        m.body,
        Body::Error(KrpcError {
            code: error_code::GENERIC,
            message: b"A Generic Error Ocurred"
        })
    );
}

#[test]
fn bep5_ping() {
    let m = canonical(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe");
    assert_eq!(
        m.body,
        Body::Query(Query {
            id: id(b"abcdefghij0123456789"),
            want: None,
            kind: QueryKind::Ping
        })
    );
    let r = canonical(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re");
    assert_eq!(
        r.body,
        Body::Response(Response {
            id: id(b"mnopqrstuvwxyz123456"),
            ..Response::default()
        })
    );
}

#[test]
fn bep5_find_node() {
    let m = canonical(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
    );
    assert_eq!(
        m.body,
        Body::Query(Query {
            id: id(b"abcdefghij0123456789"),
            want: None,
            kind: QueryKind::FindNode {
                target: id(b"mnopqrstuvwxyz123456")
            }
        })
    );
    // The BEP's response example abbreviates `nodes` to 9 bytes: not a multiple of 26.
    assert_eq!(
        decode(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re"),
        Err(DecodeError::BadLength("nodes"))
    );
}

#[test]
fn bep5_get_peers() {
    let m = canonical(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
    );
    assert_eq!(
        m.body,
        Body::Query(Query {
            id: id(b"abcdefghij0123456789"),
            want: None,
            kind: QueryKind::GetPeers {
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                scrape: false,
                noseed: false
            }
        })
    );
    let r = canonical(
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    );
    let Body::Response(resp) = r.body else {
        panic!("not a response")
    };
    assert_eq!(resp.token, Some(&b"aoeusnth"[..]));
    assert_eq!(
        resp.values,
        Some(vec![
            v4(*b"axje", u16::from_be_bytes(*b".u")),
            v4(*b"idht", u16::from_be_bytes(*b"nm")),
        ])
    );
    assert_eq!(resp.nodes, None);
}

#[test]
fn bep5_announce_peer() {
    let m = canonical(
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    );
    assert_eq!(
        m.body,
        Body::Query(Query {
            id: id(b"abcdefghij0123456789"),
            want: None,
            kind: QueryKind::AnnouncePeer {
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                port: 6881,
                implied_port: true,
                token: b"aoeusnth",
                seed: None
            }
        })
    );
}

// ---- BEP 32, 33, 42, 43, 51 -----------------------------------------------------------

#[test]
fn bep51_example() {
    let mut nodes = Vec::new();
    write_compact_node(
        &id(b"NNNNNNNNNNNNNNNNNNNN"),
        &v4([1, 2, 3, 4], 6881),
        &mut nodes,
    );
    let mut buf = Vec::new();
    buf.extend_from_slice(b"d1:rd2:id20:abcdefghij01234567898:intervali21600e5:nodes26:");
    buf.extend_from_slice(&nodes);
    buf.extend_from_slice(
        b"3:numi1234e7:samples40:AAAAAAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBBBBBe1:t2:aa1:y1:re",
    );
    let m = canonical(&buf);
    let Body::Response(r) = m.body else {
        panic!("not a response")
    };
    assert_eq!(r.interval, Some(21600));
    assert_eq!(r.num, Some(1234));
    let samples: Vec<_> = r.samples.unwrap().iter().collect();
    assert_eq!(samples, vec![InfoHash([b'A'; 20]), InfoHash([b'B'; 20])]);
    let nodes: Vec<_> = r.nodes.unwrap().iter().collect();
    assert_eq!(
        nodes,
        vec![(id(b"NNNNNNNNNNNNNNNNNNNN"), v4([1, 2, 3, 4], 6881))]
    );

    let q = canonical(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q17:sample_infohashes1:t2:aa1:y1:qe",
    );
    assert!(matches!(
        q.body,
        Body::Query(Query {
            kind: QueryKind::SampleInfohashes { .. },
            ..
        })
    ));
}

/// magnetico kept only the first sample; every one of the N must come out, in order.
#[test]
fn sample_infohashes_keeps_all_samples_in_order() {
    for n in [0usize, 1, 2, 7, 20, 50] {
        let hashes: Vec<[u8; 20]> = (0..n)
            .map(|i| {
                let mut h = [0u8; 20];
                h[0] = i as u8;
                h[19] = 0xff - i as u8;
                h
            })
            .collect();
        let flat: Vec<u8> = hashes.concat();
        let mut buf = Vec::new();
        buf.extend_from_slice(b"d1:rd2:id20:abcdefghij01234567897:samples");
        buf.extend_from_slice(format!("{}:", flat.len()).as_bytes());
        buf.extend_from_slice(&flat);
        buf.extend_from_slice(b"e1:t2:aa1:y1:re");
        let m = decode(&buf).unwrap();
        let Body::Response(r) = m.body else {
            panic!("not a response")
        };
        let s = r.samples.unwrap();
        assert_eq!(s.len(), n);
        let got: Vec<InfoHash> = s.iter().collect();
        let want: Vec<InfoHash> = hashes.into_iter().map(InfoHash).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn bep33_scrape_fields() {
    let q = canonical(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234566:noseedi1e6:scrapei1ee1:q9:get_peers1:t2:aa1:y1:qe",
    );
    assert!(matches!(
        q.body,
        Body::Query(Query {
            kind: QueryKind::GetPeers {
                scrape: true,
                noseed: true,
                ..
            },
            ..
        })
    ));
    let a = canonical(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e4:seedi1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
    );
    assert!(matches!(
        a.body,
        Body::Query(Query {
            kind: QueryKind::AnnouncePeer {
                seed: Some(true),
                implied_port: false,
                port: 1,
                ..
            },
            ..
        })
    ));
    let mut buf = b"d1:rd4:BFpe256:".to_vec();
    buf.extend_from_slice(&[0x11; 256]);
    buf.extend_from_slice(b"4:BFsd256:");
    buf.extend_from_slice(&[0x22; 256]);
    buf.extend_from_slice(b"2:id20:abcdefghij0123456789e1:t2:aa1:y1:re");
    let m = canonical(&buf);
    let Body::Response(r) = m.body else {
        panic!("not a response")
    };
    assert_eq!(r.bf_peers, Some(&[0x11; 256]));
    assert_eq!(r.bf_seeds, Some(&[0x22; 256]));

    // A bloom filter of any other size is refused.
    let mut bad = b"d1:rd4:BFsd255:".to_vec();
    bad.extend_from_slice(&[0; 255]);
    bad.extend_from_slice(b"2:id20:abcdefghij0123456789e1:t2:aa1:y1:re");
    assert_eq!(decode(&bad), Err(DecodeError::BadLength("BFsd")));
}

#[test]
fn bep32_want_and_nodes6() {
    let q = canonical(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee1:q9:find_node1:t2:aa1:y1:qe",
    );
    let Body::Query(q) = q.body else { panic!() };
    assert_eq!(q.want, Some(Want { n4: true, n6: true }));
    // Unknown families are ignored; the list may be empty.
    let q = decode(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n92:n6ee1:q9:find_node1:t2:aa1:y1:qe",
    )
    .unwrap();
    let Body::Query(q) = q.body else { panic!() };
    assert_eq!(
        q.want,
        Some(Want {
            n4: false,
            n6: true
        })
    );

    let a6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6881, 0, 0));
    let mut n6 = Vec::new();
    write_compact_node(&id(b"66666666666666666666"), &a6, &mut n6);
    let mut buf = b"d1:rd2:id20:abcdefghij01234567896:nodes638:".to_vec();
    buf.extend_from_slice(&n6);
    buf.extend_from_slice(b"6:valuesl18:");
    let mut p6 = Vec::new();
    write_compact_peer(&a6, &mut p6);
    buf.extend_from_slice(&p6);
    buf.extend_from_slice(b"ee1:t2:aa1:y1:re");
    let m = canonical(&buf);
    let Body::Response(r) = m.body else { panic!() };
    assert_eq!(
        r.nodes6.unwrap().iter().collect::<Vec<_>>(),
        vec![(id(b"66666666666666666666"), a6)]
    );
    assert_eq!(r.values, Some(vec![a6]));
}

#[test]
fn bep42_ip_and_bep43_ro() {
    let m = canonical(b"d1:ad2:id20:abcdefghij0123456789e2:ip6:\x01\x02\x03\x04\x1a\xe11:q4:ping2:roi1e1:t2:aa1:v4:LT\x02\x111:y1:qe");
    assert_eq!(m.ip, Some(v4([1, 2, 3, 4], 6881)));
    assert!(m.read_only);
    assert_eq!(m.version, Some(&b"LT\x02\x11"[..]));
    // ro=0 is accepted as not read-only (and then not written back).
    let m = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi0e1:t2:aa1:y1:qe").unwrap();
    assert!(!m.read_only);
    let mut ip6 = b"d2:ip18:".to_vec();
    ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    ip6.extend_from_slice(b"\x1a\xe11:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re");
    let m = canonical(&ip6);
    assert_eq!(
        m.ip,
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::LOCALHOST,
            6881,
            0,
            0
        )))
    );
}

#[test]
fn unknown_method_and_unknown_keys() {
    // Unknown keys at every level, of every shape (nested dicts and lists), are skipped.
    // (`target` is not kept for unknown methods, so this one does not re-encode as is.)
    let m = decode(b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q10:frobnicate1:t2:aa1:y1:qe").unwrap();
    assert_eq!(
        m.body,
        Body::Query(Query {
            id: id(b"abcdefghij0123456789"),
            want: None,
            kind: QueryKind::Unknown {
                method: b"frobnicate",
                target: Some(NodeId(*b"mnopqrstuvwxyz123456")),
                info_hash: None,
            }
        })
    );
    let m = decode(b"d1:ad2:id20:abcdefghij01234567895:xtrald1:ali1ed1:bleeeee1:q4:ping1:t2:aa2:xxi-5e1:y1:q1:zd1:kl1:veee").unwrap();
    assert!(matches!(
        m.body,
        Body::Query(Query {
            kind: QueryKind::Ping,
            ..
        })
    ));
    let m =
        decode(b"d1:rd2:id20:abcdefghij01234567891:pi6881e1:zld1:ali1eeeee1:t2:aa1:y1:re").unwrap();
    assert!(matches!(m.body, Body::Response(_)));
    // Extra items after [code, message] are ignored.
    let m = decode(b"d1:eli202e6:Serveri7e3:abce1:t0:1:y1:ee").unwrap();
    assert_eq!(
        m.body,
        Body::Error(KrpcError {
            code: 202,
            message: b"Server"
        })
    );
    assert_eq!(m.tid, b"");
}

#[test]
fn only_the_selected_body_is_validated() {
    // y=e with a broken `r` (libtorrent sends `r` next to `e`): the `r` is ignored.
    let m = decode(b"d1:eli203e3:bade1:rd2:id3:abce1:t2:aa1:y1:ee").unwrap();
    assert!(matches!(m.body, Body::Error(_)));
    // …but the same `r` in a response is an error.
    assert_eq!(
        decode(b"d1:eli203e3:bade1:rd2:id3:abce1:t2:aa1:y1:re"),
        Err(DecodeError::BadLength("id"))
    );
    // Method-specific arguments are only checked for that method.
    let m = decode(
        b"d1:ad2:id20:abcdefghij01234567894:porti99999e6:target3:xyze1:q4:ping1:t2:aa1:y1:qe",
    );
    assert!(m.is_ok());
}

#[test]
fn announce_without_port_when_implied() {
    let m = decode(b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe").unwrap();
    assert!(matches!(
        m.body,
        Body::Query(Query {
            kind: QueryKind::AnnouncePeer {
                port: 0,
                implied_port: true,
                ..
            },
            ..
        })
    ));
    assert_eq!(
        decode(b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe"),
        Err(DecodeError::Missing("port"))
    );
}
