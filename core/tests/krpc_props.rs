//! Property tests of the KRPC codec: round trips, and no panics on any input.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use magnetar_core::krpc::{
    decode, decode_lenient, encode, peer_from_compact, write_compact_node, write_compact_peer,
    Body, CompactNodesV4, CompactNodesV6, KrpcError, Message, Query, QueryKind, Response, Samples,
    Want,
};
use magnetar_core::{InfoHash, NodeId};
use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

fn bytes(g: &mut Gen, max: usize) -> Vec<u8> {
    let n = usize::arbitrary(g) % (max + 1);
    (0..n).map(|_| u8::arbitrary(g)).collect()
}

fn id20(g: &mut Gen) -> [u8; 20] {
    std::array::from_fn(|_| u8::arbitrary(g))
}

/// Addresses as the wire carries them: no IPv6 flow info or scope id.
fn addr(g: &mut Gen) -> SocketAddr {
    if bool::arbitrary(g) {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::arbitrary(g), u16::arbitrary(g)))
    } else {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::arbitrary(g),
            u16::arbitrary(g),
            0,
            0,
        ))
    }
}

fn opt<T>(g: &mut Gen, f: impl FnOnce(&mut Gen) -> T) -> Option<T> {
    bool::arbitrary(g).then(|| f(g))
}

#[derive(Clone, Debug)]
enum OwnedKind {
    Ping,
    FindNode([u8; 20]),
    GetPeers([u8; 20], bool, bool),
    Announce([u8; 20], u16, bool, Vec<u8>, Option<bool>),
    Sample([u8; 20]),
    Unknown(Vec<u8>),
}

#[derive(Clone, Debug)]
enum OwnedBody {
    Query {
        id: [u8; 20],
        want: Option<Want>,
        kind: OwnedKind,
    },
    Response {
        id: [u8; 20],
        nodes: Option<Vec<u8>>,
        nodes6: Option<Vec<u8>>,
        values: Option<Vec<SocketAddr>>,
        token: Option<Vec<u8>>,
        samples: Option<Vec<u8>>,
        num: Option<i64>,
        interval: Option<i64>,
        bf_seeds: Option<Box<[u8; 256]>>,
        bf_peers: Option<Box<[u8; 256]>>,
    },
    Error(i64, Vec<u8>),
}

/// Owned data for one message; [`OwnedMsg::borrow`] makes the `Message` view.
#[derive(Clone, Debug)]
struct OwnedMsg {
    tid: Vec<u8>,
    version: Option<Vec<u8>>,
    ip: Option<SocketAddr>,
    read_only: bool,
    body: OwnedBody,
}

fn nodes(g: &mut Gen, v6: bool) -> Vec<u8> {
    let n = usize::arbitrary(g) % 9;
    let mut out = Vec::new();
    for _ in 0..n {
        let a = loop {
            let a = addr(g);
            if a.is_ipv6() == v6 {
                break a;
            }
        };
        write_compact_node(&NodeId(id20(g)), &a, &mut out);
    }
    out
}

fn bloom(g: &mut Gen) -> Box<[u8; 256]> {
    Box::new(std::array::from_fn(|_| u8::arbitrary(g)))
}

impl Arbitrary for OwnedMsg {
    fn arbitrary(g: &mut Gen) -> Self {
        let body = match u8::arbitrary(g) % 3 {
            0 => {
                let kind = match u8::arbitrary(g) % 6 {
                    0 => OwnedKind::Ping,
                    1 => OwnedKind::FindNode(id20(g)),
                    2 => OwnedKind::GetPeers(id20(g), bool::arbitrary(g), bool::arbitrary(g)),
                    3 => OwnedKind::Announce(
                        id20(g),
                        u16::arbitrary(g),
                        bool::arbitrary(g),
                        bytes(g, 24),
                        Option::<bool>::arbitrary(g),
                    ),
                    4 => OwnedKind::Sample(id20(g)),
                    _ => {
                        let known: [&[u8]; 5] = [
                            b"ping",
                            b"find_node",
                            b"get_peers",
                            b"announce_peer",
                            b"sample_infohashes",
                        ];
                        let mut m = bytes(g, 20);
                        if known.contains(&&m[..]) {
                            m.push(b'!');
                        }
                        OwnedKind::Unknown(m)
                    }
                };
                OwnedBody::Query {
                    id: id20(g),
                    want: opt(g, |g| Want {
                        n4: bool::arbitrary(g),
                        n6: bool::arbitrary(g),
                    }),
                    kind,
                }
            }
            1 => OwnedBody::Response {
                id: id20(g),
                nodes: opt(g, |g| nodes(g, false)),
                nodes6: opt(g, |g| nodes(g, true)),
                values: opt(g, |g| {
                    (0..usize::arbitrary(g) % 10).map(|_| addr(g)).collect()
                }),
                token: opt(g, |g| bytes(g, 20)),
                samples: opt(g, |g| {
                    (0..usize::arbitrary(g) % 21)
                        .flat_map(|_| id20(g))
                        .collect()
                }),
                num: Option::<i64>::arbitrary(g),
                interval: Option::<i64>::arbitrary(g),
                bf_seeds: opt(g, bloom),
                bf_peers: opt(g, bloom),
            },
            _ => OwnedBody::Error(i64::arbitrary(g), bytes(g, 40)),
        };
        OwnedMsg {
            tid: bytes(g, 8),
            version: opt(g, |g| bytes(g, 6)),
            ip: opt(g, addr),
            read_only: bool::arbitrary(g),
            body,
        }
    }
}

impl OwnedMsg {
    fn borrow(&self) -> Message<'_> {
        let body = match &self.body {
            OwnedBody::Query { id, want, kind } => Body::Query(Query {
                id: NodeId(*id),
                want: *want,
                kind: match kind {
                    OwnedKind::Ping => QueryKind::Ping,
                    OwnedKind::FindNode(t) => QueryKind::FindNode { target: NodeId(*t) },
                    OwnedKind::GetPeers(ih, scrape, noseed) => QueryKind::GetPeers {
                        info_hash: InfoHash(*ih),
                        scrape: *scrape,
                        noseed: *noseed,
                    },
                    OwnedKind::Announce(ih, port, implied_port, token, seed) => {
                        QueryKind::AnnouncePeer {
                            info_hash: InfoHash(*ih),
                            port: *port,
                            implied_port: *implied_port,
                            token,
                            seed: *seed,
                        }
                    }
                    OwnedKind::Sample(t) => QueryKind::SampleInfohashes { target: NodeId(*t) },
                    OwnedKind::Unknown(m) => QueryKind::Unknown {
                        method: m,
                        target: None,
                        info_hash: None,
                    },
                },
            }),
            OwnedBody::Response {
                id,
                nodes,
                nodes6,
                values,
                token,
                samples,
                num,
                interval,
                bf_seeds,
                bf_peers,
            } => Body::Response(Response {
                id: NodeId(*id),
                nodes: nodes.as_deref().map(|b| CompactNodesV4::new(b).unwrap()),
                nodes6: nodes6.as_deref().map(|b| CompactNodesV6::new(b).unwrap()),
                values: values.clone(),
                token: token.as_deref(),
                samples: samples.as_deref().map(|b| Samples::new(b).unwrap()),
                num: *num,
                interval: *interval,
                bf_seeds: bf_seeds.as_deref(),
                bf_peers: bf_peers.as_deref(),
            }),
            OwnedBody::Error(code, message) => Body::Error(KrpcError {
                code: *code,
                message,
            }),
        };
        Message {
            tid: &self.tid,
            version: self.version.as_deref(),
            ip: self.ip,
            read_only: self.read_only,
            body,
        }
    }
}

fn encoded(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(m, &mut out);
    out
}

quickcheck! {
    fn every_message_roundtrips(o: OwnedMsg) -> bool {
        let m = o.borrow();
        let buf = encoded(&m);
        // Encoding is a function of the message: the same bytes again.
        decode(&buf) == Ok(m.clone()) && encoded(&decode(&buf).unwrap()) == buf
    }

    fn arbitrary_bytes_never_panic(buf: Vec<u8>) -> bool {
        let strict = decode(&buf);
        let lenient = decode_lenient(&buf);
        // Whatever is accepted re-encodes into something the strict decoder takes back.
        if let Ok(m) = &strict {
            assert_eq!(decode(&encoded(m)).as_ref(), Ok(m));
        }
        if let Ok(l) = &lenient {
            assert_eq!(decode(&encoded(&l.message)).as_ref(), Ok(&l.message));
        }
        strict.is_ok() <= lenient.is_ok()
    }

    fn mutated_messages_never_panic(o: OwnedMsg, edits: Vec<(u16, u8, u8)>) -> bool {
        let mut buf = encoded(&o.borrow());
        for (pos, op, byte) in edits {
            if buf.is_empty() {
                break;
            }
            let i = usize::from(pos) % buf.len();
            match op % 4 {
                0 => buf[i] = byte,
                1 => { buf.remove(i); }
                2 => buf.insert(i, byte),
                // Insert bencode-meaningful bytes, which random ones rarely are.
                _ => buf.insert(i, b"ield:0123456789"[usize::from(byte) % 15]),
            }
        }
        let strict = decode(&buf);
        let lenient = decode_lenient(&buf);
        if let Ok(m) = &strict {
            assert_eq!(decode(&encoded(m)).as_ref(), Ok(m));
        }
        strict.is_ok() <= lenient.is_ok()
    }

    fn truncations_never_panic(o: OwnedMsg) -> bool {
        let buf = encoded(&o.borrow());
        (0..buf.len()).all(|n| decode(&buf[..n]).is_err() && decode_lenient(&buf[..n]).is_err())
    }

    fn compact_peer_roundtrips(g: Addr) -> bool {
        let mut out = Vec::new();
        write_compact_peer(&g.0, &mut out);
        out.len() == if g.0.is_ipv4() { 6 } else { 18 } && peer_from_compact(&out) == Some(g.0)
    }

    fn compact_nodes_roundtrip(list: Vec<(Id, Addr)>) -> TestResult {
        let (mut b4, mut b6, mut w4, mut w6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, a) in &list {
            if a.0.is_ipv4() {
                write_compact_node(&id.0, &a.0, &mut b4);
                w4.push((id.0, a.0));
            } else {
                write_compact_node(&id.0, &a.0, &mut b6);
                w6.push((id.0, a.0));
            }
        }
        let n4 = CompactNodesV4::new(&b4).unwrap();
        let n6 = CompactNodesV6::new(&b6).unwrap();
        TestResult::from_bool(
            n4.len() == w4.len()
                && n6.len() == w6.len()
                && n4.iter().collect::<Vec<_>>() == w4
                && n6.iter().collect::<Vec<_>>() == w6
                && CompactNodesV4::new(&b6).is_none() == (b6.len() % 26 != 0)
        )
    }
}

#[derive(Clone, Debug)]
struct Addr(SocketAddr);
impl Arbitrary for Addr {
    fn arbitrary(g: &mut Gen) -> Self {
        Addr(addr(g))
    }
}

#[derive(Clone, Debug)]
struct Id(NodeId);
impl Arbitrary for Id {
    fn arbitrary(g: &mut Gen) -> Self {
        Id(NodeId(id20(g)))
    }
}

/// The fast strict decoder and the bendy-based reference accept the same datagrams
/// and produce the same messages (for valid messages, mutations and noise).
#[test]
fn fast_decode_agrees_with_bendy() {
    fn prop(bytes: Vec<u8>, flips: Vec<(usize, u8)>) -> bool {
        let mut variants = vec![bytes.clone()];
        // A valid message, then mutated.
        let mut valid = b"d1:ad2:id20:abcdefghij01234567896:target20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe".to_vec();
        for (i, b) in &flips {
            let n = valid.len();
            valid[i % n] = *b;
        }
        variants.push(valid);
        variants.into_iter().all(|v| {
            let a = magnetar_core::krpc::decode(&v);
            let b = magnetar_core::krpc::decode_bendy(&v);
            match (&a, &b) {
                (Ok(x), Ok(y)) => x == y,
                (Err(_), Err(_)) => true,
                _ => false,
            }
        })
    }
    quickcheck::QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>, Vec<(usize, u8)>) -> bool);
}
