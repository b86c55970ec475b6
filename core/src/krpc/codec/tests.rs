//! Unit tests of the KRPC codec: BEP examples, every message type, every error.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::*;
use crate::krpc::{error_code, write_compact_node};

fn roundtrip(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    assert_eq!(
        decode(&out).as_ref(),
        Ok(msg),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// Decodes, checks that re-encoding gives the same bytes (the input is canonical).
fn canonical(buf: &[u8]) -> Message<'_> {
    let m = decode(buf).unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(buf)));
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(buf));
    m
}

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
}

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

// ---- Malformed input ------------------------------------------------------------------

#[test]
fn malformed_cases_map_to_their_errors() {
    use DecodeError::*;
    const PING_A: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e";
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", Bencode),
        (b"d", Bencode),
        (b"d1:t2:aa", Bencode),
        (b"d1:t2:aa1:y1:qee", TrailingBytes),
        (b"d1:t2:aa1:y1:qei0e", TrailingBytes),
        (b"d1:t2:aa1:y1:qexyz", TrailingBytes),
        (b"d1:t3:aa1:y1:qe", Bencode),
        (b"di1e1:ae", Bencode),
        (b"d1:te", Bencode),
        (b"d1:ti01ee", Bencode),
        (b"d1:ti-0ee", Bencode),
        (b"d01:t1:xe", Bencode),
        (b"x", Bencode),
        (b"le", NotADict),
        (b"i1e", NotADict),
        (b"4:spam", NotADict),
        (b"d1:y1:q1:t2:aae", UnsortedKeys),
        (b"d1:t2:aa1:t2:aae", UnsortedKeys),
        (b"d1:rd2:id20:abcdefghij01234567891:ai1eee", UnsortedKeys),
        (b"d1:t2:aae", BadMessageType),
        (b"d1:t2:aa1:y1:xe", BadMessageType),
        (b"d1:t2:aa1:yi1ee", WrongType("y")),
        (b"d1:y1:qe", Missing("t")),
        (b"d1:ti5e1:y1:qe", WrongType("t")),
        (b"d1:t2:aa1:vi1e1:y1:ee", WrongType("v")),
        (b"d1:t2:aa1:y1:qe", Missing("q")),
        (b"d1:q4:ping1:t2:aa1:y1:qe", Missing("a")),
        (b"d1:ale1:q4:ping1:t2:aa1:y1:qe", WrongType("a")),
        (b"d1:ade1:q4:ping1:t2:aa1:y1:qe", Missing("id")),
        (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", BadLength("id")),
        (b"d1:ad2:idi1ee1:q4:ping1:t2:aa1:y1:qe", WrongType("id")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe", WrongType("q")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe", Missing("target")),
        (b"d1:ad2:id20:abcdefghij01234567896:target19:mnopqrstuvwxyz12345e1:q9:find_node1:t2:aa1:y1:qe", BadLength("target")),
        (b"d1:ad2:id20:abcdefghij01234567896:targetli1eee1:q9:find_node1:t2:aa1:y1:qe", WrongType("target")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:aa1:y1:qe", Missing("info_hash")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234566:scrapei2ee1:q9:get_peers1:t2:aa1:y1:qe", OutOfRange("scrape")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234566:noseed1:1e1:q9:get_peers1:t2:aa1:y1:qe", WrongType("noseed")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti65536e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti-1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti99999999999999999999e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:port4:6881e1:q13:announce_peer1:t2:aa1:y1:qe", WrongType("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe", Missing("token")),
        (b"d1:ad2:id20:abcdefghij012345678912:implied_porti7e9:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("implied_port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e4:seedi2e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("seed")),
        (b"d1:ad2:id20:abcdefghij01234567894:wanti4ee1:q4:ping1:t2:aa1:y1:qe", WrongType("want")),
        (b"d1:ad2:id20:abcdefghij01234567894:wantli4eee1:q4:ping1:t2:aa1:y1:qe", WrongType("want")),
        (b"d2:ip5:abcde1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re", BadLength("ip")),
        (b"d2:ipi1e1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re", WrongType("ip")),
        (b"d1:rd2:id20:abcdefghij0123456789e2:roi2e1:t2:aa1:y1:re", OutOfRange("ro")),
        (b"d1:rd2:id20:abcdefghij0123456789e2:ro1:11:t2:aa1:y1:re", WrongType("ro")),
        (b"d1:t2:aa1:y1:re", Missing("r")),
        (b"d1:r4:abcd1:t2:aa1:y1:re", WrongType("r")),
        (b"d1:rde1:t2:aa1:y1:re", Missing("id")),
        (b"d1:rd2:id20:abcdefghij01234567895:nodes25:abcdefghij0123456789abcdee1:t2:aa1:y1:re", BadLength("nodes")),
        (b"d1:rd2:id20:abcdefghij01234567896:nodes626:abcdefghij0123456789abcdefe1:t2:aa1:y1:re", BadLength("nodes6")),
        (b"d1:rd2:id20:abcdefghij01234567897:samples19:abcdefghij012345678e1:t2:aa1:y1:re", BadLength("samples")),
        (b"d1:rd2:id20:abcdefghij01234567897:samplesi0ee1:t2:aa1:y1:re", WrongType("samples")),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesl5:abcdeee1:t2:aa1:y1:re", BadLength("values")),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re", WrongType("values")),
        (b"d1:rd2:id20:abcdefghij01234567896:values6:abcdefe1:t2:aa1:y1:re", WrongType("values")),
        (b"d1:rd2:id20:abcdefghij01234567893:num1:1e1:t2:aa1:y1:re", WrongType("num")),
        (b"d1:rd2:id20:abcdefghij01234567898:intervali9223372036854775808ee1:t2:aa1:y1:re", OutOfRange("interval")),
        (b"d1:rd2:id20:abcdefghij01234567895:tokeni1ee1:t2:aa1:y1:re", WrongType("token")),
        (b"d1:t2:aa1:y1:ee", Missing("e")),
        (b"d1:e3:bad1:t2:aa1:y1:ee", WrongType("e")),
        (b"d1:eli201ee1:t2:aa1:y1:ee", BadLength("e")),
        (b"d1:ele1:t2:aa1:y1:ee", BadLength("e")),
        (b"d1:el3:abci201ee1:t2:aa1:y1:ee", WrongType("e")),
        (b"d1:eli99999999999999999999e1:xe1:t2:aa1:y1:ee", OutOfRange("e")),
    ];
    for (buf, want) in cases {
        assert_eq!(
            decode(buf),
            Err(*want),
            "input {:?}",
            String::from_utf8_lossy(buf)
        );
        // The lenient decoder agrees on everything except key order.
        if *want != UnsortedKeys {
            assert_eq!(
                decode_lenient(buf).map(|l| l.message),
                Err(*want),
                "lenient, input {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }
    // Keep the PING_A prefix honest.
    let mut ok = PING_A.to_vec();
    ok.extend_from_slice(b"1:q4:ping1:t2:aa1:y1:qe");
    assert!(decode(&ok).is_ok());
}

#[test]
fn nesting_is_limited() {
    let mut deep = b"d1:t2:aa1:y1:r1:z".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 10_000));
    deep.extend(std::iter::repeat_n(b'e', 10_000));
    deep.push(b'e');
    assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
    // Nesting within the limit is skipped fine (top dict + 14 lists = depth 15).
    let mut ok = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:z".to_vec();
    ok.extend(std::iter::repeat_n(b'l', MAX_DEPTH - 2));
    ok.extend(std::iter::repeat_n(b'e', MAX_DEPTH - 2));
    ok.push(b'e');
    assert!(decode(&ok).is_ok(), "{:?}", decode(&ok));
    let mut lenient_deep = b"d1:z1:x1:a".to_vec(); // unsorted: goes the lenient way
    lenient_deep.extend(std::iter::repeat_n(b'l', 10_000));
    lenient_deep.extend(std::iter::repeat_n(b'e', 10_000));
    lenient_deep.push(b'e');
    assert!(matches!(
        decode_lenient(&lenient_deep),
        Err(DecodeError::TooDeep | DecodeError::UnsortedKeys)
    ));
    let mut t = LenientTokens::new(&lenient_deep);
    let mut last = Ok(None);
    for _ in 0..100 {
        last = t.next_tok();
        if last.is_err() {
            break;
        }
    }
    assert_eq!(last, Err(DecodeError::TooDeep));
}

/// bendy 0.6 exposes no error kinds, so `classify` matches its texts: pin them.
#[test]
fn bendy_error_texts_are_recognised() {
    assert_eq!(decode(b"d1:b0:1:a0:e"), Err(DecodeError::UnsortedKeys));
    assert_eq!(decode(b"d1:a0:1:a0:e"), Err(DecodeError::UnsortedKeys));
    let mut deep = b"d1:a".to_vec();
    deep.extend(std::iter::repeat_n(b'l', MAX_DEPTH));
    assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
}

// ---- Lenient decoding -----------------------------------------------------------------

#[test]
fn lenient_accepts_unsorted_keys_and_flags_them() {
    // `ip` and `v` after `y`, `id` after `token` inside `r`.
    let buf = b"d1:rd5:token2:tk2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:v4:LT\x01\x002:ip6:\x01\x02\x03\x04\x1a\xe1e";
    assert_eq!(decode(buf), Err(DecodeError::UnsortedKeys));
    let l = decode_lenient(buf).unwrap();
    assert!(l.unsorted_keys);
    assert_eq!(l.message.ip, Some(v4([1, 2, 3, 4], 6881)));
    assert_eq!(l.message.version, Some(&b"LT\x01\x00"[..]));
    let Body::Response(r) = &l.message.body else {
        panic!()
    };
    assert_eq!(r.id, id(b"abcdefghij0123456789"));
    assert_eq!(r.token, Some(&b"tk"[..]));
    // Re-encoding sorts the keys; the strict decoder then takes it.
    let out = roundtrip(&l.message);
    assert_eq!(decode(&out), Ok(l.message.clone()));

    // Sorted input is not flagged.
    let l = decode_lenient(b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re").unwrap();
    assert!(!l.unsorted_keys);

    // A known key twice is refused, an unknown one is tolerated.
    assert_eq!(
        decode_lenient(b"d1:t2:aa1:rd2:id20:abcdefghij0123456789e1:y1:r1:t2:bbe"),
        Err(DecodeError::DuplicateKey("t"))
    );
    assert_eq!(
        decode_lenient(
            b"d1:rd2:id20:abcdefghij01234567892:id20:abcdefghij0123456789e1:t2:aa1:y1:re"
        ),
        Err(DecodeError::DuplicateKey("id"))
    );
    let l = decode_lenient(b"d1:t2:aa1:x0:1:rd2:id20:abcdefghij0123456789e1:x0:1:y1:re").unwrap();
    assert!(l.unsorted_keys);
    // Still a message error where the strict path would find one after the key order.
    assert_eq!(
        decode_lenient(b"d1:y1:q1:t2:aae"),
        Err(DecodeError::Missing("q"))
    );
}

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

// ---- Our tokenizer against bendy's --------------------------------------------------

/// Tokens from a source until it ends or fails (at most 200).
fn tokens_of<'a, S: Source<'a>>(mut src: S) -> (Vec<Token<'a>>, Option<DecodeError>, S) {
    let mut out = Vec::new();
    for _ in 0..200 {
        match src.next_tok() {
            Ok(Some(t)) => out.push(t),
            Ok(None) => return (out, None, src),
            Err(e) => return (out, Some(e), src),
        }
    }
    (out, None, src)
}

/// Differential test: on bencode-ish input, `LenientTokens` yields exactly bendy's tokens
/// and fails at the same place for the same reason, except that it goes on past
/// unsorted keys (and flags them).
#[test]
fn lenient_tokenizer_matches_bendy() {
    const ATOMS: &[&[u8]] = &[
        b"d", b"l", b"e", b"i", b"-", b"0", b"1", b"9", b":", b"x", b"1:a", b"1:b", b"2:id",
        b"i5e", b"i-3e", b"i0e", b"01:", b"3:", b"ll", b"dd", b"ee", b"d1:a", b"1:ai1e",
    ];
    fn prop(picks: Vec<u8>) -> bool {
        let buf: Vec<u8> = picks
            .iter()
            .flat_map(|&p| ATOMS[usize::from(p) % ATOMS.len()].iter().copied())
            .collect();
        let (bt, be, _) = tokens_of(Strict(
            Decoder::new(&buf).with_max_depth(MAX_DEPTH).tokens(),
        ));
        let (lt, le, l) = tokens_of(LenientTokens::new(&buf));
        match be {
            Some(DecodeError::UnsortedKeys) => {
                // Same tokens up to bendy's refusal, and we flagged it.
                lt.len() >= bt.len() && lt[..bt.len()] == bt[..] && l.unsorted
            }
            other => bt == lt && other == le && !l.unsorted,
        }
    }
    quickcheck::QuickCheck::new()
        .tests(20_000)
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

// ---- The direct decoder against the token-stream reference ---------------------------

/// splitmix64: a small deterministic generator for the inputs below.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn id(&mut self) -> [u8; 20] {
        std::array::from_fn(|_| self.next() as u8)
    }
    fn addr(&mut self) -> SocketAddr {
        let port = self.next() as u16;
        if self.below(4) == 0 {
            let oct: [u8; 16] = std::array::from_fn(|_| self.next() as u8);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(oct), port, 0, 0))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.next() as u32), port))
        }
    }
}

/// Bencode fragments and KRPC keys that mutations splice in.
const ATOMS: &[&[u8]] = &[
    b"d",
    b"l",
    b"e",
    b"i",
    b"-",
    b"0",
    b"1",
    b"9",
    b":",
    b"x",
    b"1:a",
    b"1:b",
    b"2:id",
    b"i5e",
    b"i-3e",
    b"i0e",
    b"01:",
    b"3:",
    b"ll",
    b"dd",
    b"ee",
    b"d1:a",
    b"1:ai1e",
    b"1:t",
    b"1:y",
    b"1:q",
    b"1:r",
    b"1:e",
    b"1:v",
    b"2:ip",
    b"2:ro",
    b"1:z",
    b"0:",
    b"4:want",
    b"2:n4",
    b"2:n6",
    b"5:nodes",
    b"6:nodes6",
    b"6:values",
    b"5:token",
    b"7:samples",
    b"3:num",
    b"8:interval",
    b"4:BFsd",
    b"4:BFpe",
    b"6:target",
    b"4:port",
    b"9:info_hash",
    b"12:implied_port",
    b"4:seed",
    b"6:scrape",
    b"6:noseed",
    b"4:ping",
    b"9:get_peers",
    b"13:announce_peer",
    b"9:find_node",
    b"17:sample_infohashes",
    b"20:abcdefghij0123456789",
    b"6:\x01\x02\x03\x04\x1a\xe1",
    b"i1e",
    b"i2e",
    b"i65536e",
    b"i99999999999999999999e",
    b"i-0e",
    b"i01e",
    b"le",
    b"de",
    b"lle",
    b"lli1eee",
];

/// A random valid message, encoded.
fn random_message(rng: &mut Mix) -> Vec<u8> {
    let tid = rng.bytes(4);
    let version = rng.bytes(5);
    let token = rng.bytes(10);
    let method = rng.bytes(6);
    let message = rng.bytes(12);
    let nodes: Vec<u8> = (0..rng.below(4) * 26).map(|_| rng.next() as u8).collect();
    let nodes6: Vec<u8> = (0..rng.below(3) * 38).map(|_| rng.next() as u8).collect();
    let samples: Vec<u8> = (0..rng.below(4) * 20).map(|_| rng.next() as u8).collect();
    let bf = [0x5au8; 256];
    let opt = |rng: &mut Mix| rng.below(3) != 0;
    let body = match rng.below(3) {
        0 => {
            let ih = InfoHash(rng.id());
            let target = NodeId(rng.id());
            let kind = match rng.below(6) {
                0 => QueryKind::Ping,
                1 => QueryKind::FindNode { target },
                2 => QueryKind::GetPeers {
                    info_hash: ih,
                    scrape: rng.coin(),
                    noseed: rng.coin(),
                },
                3 => QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: rng.next() as u16,
                    implied_port: rng.coin(),
                    token: &token,
                    seed: rng.coin().then(|| rng.coin()),
                },
                4 => QueryKind::SampleInfohashes { target },
                _ => QueryKind::Unknown {
                    method: &method,
                    target: rng.coin().then_some(target),
                    info_hash: rng.coin().then_some(ih),
                },
            };
            let want = rng.coin().then(|| Want {
                n4: rng.coin(),
                n6: rng.coin(),
            });
            Body::Query(Query {
                id: NodeId(rng.id()),
                want,
                kind,
            })
        }
        1 => Body::Response(Response {
            id: NodeId(rng.id()),
            nodes: opt(rng).then(|| CompactNodesV4::new(&nodes)).flatten(),
            nodes6: opt(rng).then(|| CompactNodesV6::new(&nodes6)).flatten(),
            values: opt(rng).then(|| (0..rng.below(5)).map(|_| rng.addr()).collect()),
            token: opt(rng).then_some(&token[..]),
            samples: opt(rng).then(|| Samples::new(&samples)).flatten(),
            num: opt(rng).then(|| rng.next() as i64),
            interval: opt(rng).then(|| rng.next() as i64 >> rng.below(64)),
            bf_seeds: (rng.below(6) == 0).then_some(&bf),
            bf_peers: (rng.below(6) == 0).then_some(&bf),
        }),
        _ => Body::Error(KrpcError {
            code: rng.next() as i64 >> rng.below(64),
            message: &message,
        }),
    };
    let m = Message {
        tid: &tid,
        version: rng.coin().then_some(&version[..]),
        ip: rng.coin().then(|| rng.addr()),
        read_only: rng.coin(),
        body,
    };
    let mut out = Vec::new();
    encode(&m, &mut out);
    out
}

/// Mutates `buf` in place: byte changes, deletions, duplications, splices of atoms.
fn mutate(rng: &mut Mix, buf: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        let at = rng.below(buf.len() + 1);
        match rng.below(6) {
            0 if at < buf.len() => buf[at] = rng.next() as u8,
            1 if at < buf.len() => buf[at] = b"dlei019:-x"[rng.below(10)],
            2 => {
                let end = (at + rng.below(8)).min(buf.len());
                buf.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(24)).min(buf.len());
                let copy = buf[at..end].to_vec();
                let to = rng.below(buf.len() + 1);
                buf.splice(to..to, copy);
            }
            4 => buf.truncate(at),
            _ => {
                let atom = ATOMS[rng.below(ATOMS.len())];
                buf.splice(at..at, atom.iter().copied());
            }
        }
    }
}

/// Values that replace a value of a valid message: strings of the lengths KRPC checks,
/// integers at the edges of its ranges, containers of the wrong shape.
const VALUES: &[&[u8]] = &[
    b"0:",
    b"1:x",
    b"1:q",
    b"1:r",
    b"1:e",
    b"2:n4",
    b"5:abcde",
    b"6:\x01\x02\x03\x04\x1a\xe1",
    b"18:abcdefghijabcdefgh",
    b"19:abcdefghij012345678",
    b"20:abcdefghij0123456789",
    b"26:abcdefghij0123456789abcdef",
    b"i0e",
    b"i1e",
    b"i2e",
    b"i-1e",
    b"i65535e",
    b"i65536e",
    b"i9223372036854775807e",
    b"i99999999999999999999e",
    b"le",
    b"de",
    b"l2:n4e",
    b"l2:n42:n6e",
    b"li1ee",
    b"l6:\x01\x02\x03\x04\x1a\xe1e",
    b"l5:abcdee",
    b"li201e3:msge",
    b"l3:msgi201ee",
    b"li99999999999999999999e0:e",
    b"d1:ai1ee",
];

/// The spans of every value and key of a valid bencoded `buf`, in order.
fn spans(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Open containers: their start offsets.
    let mut open = Vec::new();
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'd' | b'l' => {
                open.push(p);
                p += 1;
            }
            b'e' => {
                p += 1;
                if let Some(start) = open.pop() {
                    out.push((start, p));
                }
            }
            b'i' => {
                let end = p + buf[p..].iter().position(|&c| c == b'e').unwrap() + 1;
                out.push((p, end));
                p = end;
            }
            _ => {
                let colon = p + buf[p..].iter().position(|&c| c == b':').unwrap();
                let len: usize = std::str::from_utf8(&buf[p..colon])
                    .unwrap()
                    .parse()
                    .unwrap();
                out.push((p, colon + 1 + len));
                p = colon + 1 + len;
            }
        }
    }
    out
}

/// Replaces one value or key of the valid `buf` by one of [`VALUES`] or [`ATOMS`].
fn replace_value(rng: &mut Mix, buf: &mut Vec<u8>) {
    let spans = spans(buf);
    if spans.is_empty() {
        return;
    }
    let (start, end) = spans[rng.below(spans.len())];
    let with = if rng.below(4) == 0 {
        ATOMS[rng.below(ATOMS.len())]
    } else {
        VALUES[rng.below(VALUES.len())]
    };
    buf.splice(start..end, with.iter().copied());
}

/// A random input: a valid message, often mutated, or a soup of atoms.
fn random_input(rng: &mut Mix) -> Vec<u8> {
    if rng.below(8) == 0 {
        return (0..rng.below(40))
            .flat_map(|_| ATOMS[rng.below(ATOMS.len())].iter().copied())
            .collect();
    }
    let mut buf = random_message(rng);
    match rng.below(4) {
        0 => {}
        1 => mutate(rng, &mut buf),
        _ => {
            for _ in 0..1 + rng.below(2) {
                replace_value(rng, &mut buf);
                if decode_bendy(&buf).is_err() {
                    break;
                }
            }
        }
    }
    buf
}

/// The direct decoder against the reference: the same message or the same error, and
/// bendy accepts exactly what it accepts.
fn agrees(buf: &[u8]) -> Result<(), String> {
    let fast = decode(buf);
    let reference = decode_reference(buf);
    if fast != reference {
        return Err(format!("fast {fast:?} vs reference {reference:?}"));
    }
    let bendy = decode_bendy(buf);
    if fast.is_ok() != bendy.is_ok() || (fast.is_ok() && fast != bendy) {
        return Err(format!("fast {fast:?} vs bendy {bendy:?}"));
    }
    Ok(())
}

#[test]
fn decode_matches_reference() {
    fn prop(seed: u64) -> quickcheck::TestResult {
        let buf = random_input(&mut Mix(seed));
        match agrees(&buf) {
            Ok(()) => quickcheck::TestResult::passed(),
            Err(e) => {
                quickcheck::TestResult::error(format!("{e} on {:?}", String::from_utf8_lossy(&buf)))
            }
        }
    }
    quickcheck::QuickCheck::new()
        .tests(20_000)
        .quickcheck(prop as fn(u64) -> quickcheck::TestResult);
}

/// The same comparison over a fixed stream of inputs, checking that the inputs reach
/// every outcome: accepted messages of each kind and each error of the decoder.
#[test]
fn decode_matches_reference_on_every_outcome() {
    use std::collections::BTreeMap;
    let mut rng = Mix(6);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40_000 {
        let buf = random_input(&mut rng);
        if let Err(e) = agrees(&buf) {
            panic!("input {i}: {e} on {:?}", String::from_utf8_lossy(&buf));
        }
        let outcome = match decode(&buf) {
            Ok(m) => match m.body {
                Body::Query(_) => "query".to_string(),
                Body::Response(_) => "response".to_string(),
                Body::Error(_) => "error".to_string(),
            },
            Err(e) => format!("{e:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        *seen.entry(outcome).or_default() += 1;
    }
    for want in [
        "query",
        "response",
        "error",
        "Bencode",
        "UnsortedKeys",
        "TrailingBytes",
        "NotADict",
        "BadMessageType",
        "Missing",
        "WrongType",
        "BadLength",
        "OutOfRange",
    ] {
        assert!(seen.get(want).is_some_and(|&n| n >= 10), "{want}: {seen:?}");
    }
}

/// Nesting: the direct decoder refuses and accepts depths exactly as the reference.
#[test]
fn decode_matches_reference_on_nesting() {
    for depth in 0..=MAX_DEPTH + 2 {
        for open in [&b"l"[..], b"d1:k", b"ld1:k"] {
            let mut buf = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:z".to_vec();
            for _ in 0..depth {
                buf.extend_from_slice(open);
            }
            buf.extend_from_slice(b"i1e");
            buf.extend(std::iter::repeat_n(b'e', depth * open.len().min(2)));
            buf.push(b'e');
            agrees(&buf).unwrap();
        }
    }
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
