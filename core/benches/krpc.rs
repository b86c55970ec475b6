//! Criterion benchmarks: KRPC decode and encode, one typical message of each kind.
//!
//! `cargo bench -p magnetar-core --bench krpc -- --warm-up-time 1 --measurement-time 3`
//!
//! `krpc_decode_reference` runs the token-stream decoder that `decode` replaced on the
//! same messages, so one run gives the ratio between the two.
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use magnetar_core::krpc::{
    decode, decode_lenient, decode_reference, encode, write_compact_node, Body, CompactNodesV4,
    KrpcError, Message, Query, QueryKind, Response, Samples,
};
use magnetar_core::{InfoHash, NodeId};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(81, 2, 3, i),
        6881 + u16::from(i),
    ))
}

fn msg<'a>(body: Body<'a>) -> Message<'a> {
    Message {
        tid: b"\x12\x34",
        version: Some(b"LT\x02\x11"),
        ip: Some(addr(200)),
        read_only: false,
        body,
    }
}

fn query(kind: QueryKind<'_>) -> Body<'_> {
    Body::Query(Query {
        id: NodeId([0x11; 20]),
        want: None,
        kind,
    })
}

fn bench(c: &mut Criterion) {
    let mut nodes = Vec::new();
    for i in 0..8 {
        write_compact_node(&NodeId([i; 20]), &addr(i), &mut nodes);
    }
    let samples: Vec<u8> = (0..20u8).flat_map(|i| [i; 20]).collect();
    let id = NodeId([0x22; 20]);
    let token: &[u8] = b"\x01\x02\x03\x04";
    let cases: Vec<(&str, Message<'_>)> = vec![
        ("ping_query", msg(query(QueryKind::Ping))),
        (
            "find_node_query",
            msg(query(QueryKind::FindNode {
                target: NodeId([0x33; 20]),
            })),
        ),
        (
            "find_node_response_8",
            msg(Body::Response(Response {
                id,
                nodes: CompactNodesV4::new(&nodes),
                ..Response::default()
            })),
        ),
        (
            "get_peers_response_values_8",
            msg(Body::Response(Response {
                id,
                token: Some(token),
                values: Some((0..8).map(addr).collect()),
                ..Response::default()
            })),
        ),
        (
            "announce_peer_query",
            msg(query(QueryKind::AnnouncePeer {
                info_hash: InfoHash([0x44; 20]),
                port: 51413,
                implied_port: true,
                token,
                seed: Some(true),
            })),
        ),
        (
            "sample_infohashes_response_20",
            msg(Body::Response(Response {
                id,
                interval: Some(21600),
                num: Some(1234),
                nodes: CompactNodesV4::new(&nodes),
                samples: Samples::new(&samples),
                ..Response::default()
            })),
        ),
        (
            "error",
            msg(Body::Error(KrpcError {
                code: 203,
                message: b"invalid token",
            })),
        ),
    ];

    let mut g = c.benchmark_group("krpc_decode");
    g.throughput(Throughput::Elements(1));
    for (name, m) in &cases {
        let mut buf = Vec::new();
        encode(m, &mut buf);
        assert_eq!(decode(&buf).as_ref(), Ok(m));
        g.bench_function(*name, |b| b.iter(|| decode(black_box(&buf)).is_ok()));
    }
    // The lenient path: bendy refuses the key order, our own tokenizer decodes.
    let unsorted: &[u8] = b"d1:rd5:token4:\x01\x02\x03\x042:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:v4:LT\x02\x112:ip6:\x01\x02\x03\x04\x1a\xe1e";
    assert!(decode_lenient(unsorted).is_ok_and(|l| l.unsorted_keys));
    g.bench_function("lenient_unsorted_get_peers_response", |b| {
        b.iter(|| decode_lenient(black_box(unsorted)).is_ok())
    });
    g.finish();

    let mut g = c.benchmark_group("krpc_decode_reference");
    g.throughput(Throughput::Elements(1));
    for (name, m) in &cases {
        let mut buf = Vec::new();
        encode(m, &mut buf);
        assert_eq!(decode_reference(&buf).as_ref(), Ok(m));
        g.bench_function(*name, |b| {
            b.iter(|| decode_reference(black_box(&buf)).is_ok())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("krpc_encode");
    g.throughput(Throughput::Elements(1));
    for (name, m) in &cases {
        let mut out = Vec::with_capacity(1500);
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(m), &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
