//! Criterion benchmarks: routing table insert throughput and closest-8 lookups.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-routing cargo bench -p magnetar-core --bench routing -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use magnetar_core::addr::Family;
use magnetar_core::routing::{Contact, NodeEntry, RoutingConfig, RoutingTable};
use magnetar_core::Rng;
use magnetar_core::{NodeId, Timestamp};

const RESP: Contact = Contact::Response {
    rtt: Duration::from_millis(80),
};

/// A public IPv4 address, each `i` in its own /24.
fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([30 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1], 6881))
}

fn candidates(n: u32, seed: u64) -> Vec<(NodeId, SocketAddr)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| (NodeId::random(&mut rng), addr(i)))
        .collect()
}

/// A table of `wide(4096)` filled from random nodes until it holds `target` nodes.
fn big_table(target: usize) -> RoutingTable {
    let mut rng = Rng::new(1);
    let own = NodeId::random(&mut rng);
    let mut rt = RoutingTable::new(own, Family::V4, RoutingConfig::wide(4096));
    for (i, (id, a)) in candidates(60_000, 2).into_iter().enumerate() {
        if rt.len() >= target {
            break;
        }
        rt.heard_from(Timestamp::from_secs(i as u64 / 1000), id, a, RESP);
    }
    assert!(rt.len() >= target, "table only reached {}", rt.len());
    rt
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing/insert");
    // Filling an empty crawler-sized table with 10,000 fresh nodes.
    let fresh = candidates(10_000, 3);
    g.sample_size(10);
    g.throughput(Throughput::Elements(fresh.len() as u64));
    g.bench_function("fill_wide4096_10k", |b| {
        b.iter_batched(
            || RoutingTable::new(NodeId([0x55; 20]), Family::V4, RoutingConfig::wide(4096)),
            |mut rt| {
                for (id, a) in &fresh {
                    black_box(rt.heard_from(Timestamp::ZERO, *id, *a, RESP));
                }
                rt
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("fill_bep5_k8_10k", |b| {
        b.iter_batched(
            || RoutingTable::new(NodeId([0x55; 20]), Family::V4, RoutingConfig::default()),
            |mut rt| {
                for (id, a) in &fresh {
                    black_box(rt.heard_from(Timestamp::ZERO, *id, *a, RESP));
                }
                rt
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Steady state on a full 8,000-node table: updates of known nodes, and
    // newcomers bouncing off full buckets of good nodes.
    let mut g = c.benchmark_group("routing/heard_from_8k");
    let mut rt = big_table(8000);
    let known: Vec<(NodeId, SocketAddr)> = rt.nodes().map(|e| (e.id, e.addr)).collect();
    let strangers = candidates(4096, 4);
    let now = Timestamp::from_secs(70);
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("update_known", |b| {
        b.iter(|| {
            i = (i + 1) % known.len();
            let (id, a) = known[i];
            black_box(rt.heard_from(now, id, a, RESP))
        })
    });
    let mut j = 0usize;
    g.bench_function("newcomer_full_bucket", |b| {
        b.iter(|| {
            j = (j + 1) % strangers.len();
            let (id, mut a) = strangers[j];
            a.set_port(7000);
            black_box(rt.heard_from(now, id, a, RESP))
        })
    });
    g.finish();
}

fn closest(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing/closest");
    let rt = big_table(8000);
    let mut rng = Rng::new(9);
    let targets: Vec<[u8; 20]> = (0..1024).map(|_| rng.bytes()).collect();
    let mut out: Vec<NodeEntry> = Vec::with_capacity(8);
    let mut i = 0usize;
    g.bench_function(format!("closest8_of_{}", rt.len()), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            rt.closest(black_box(&targets[i]), 8, &mut out);
            black_box(out.len())
        })
    });
    let mut i = 0usize;
    g.bench_function(format!("closest20_of_{}", rt.len()), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            rt.closest(black_box(&targets[i]), 20, &mut out);
            black_box(out.len())
        })
    });
    // A plain BEP 5 table for comparison.
    let mut small = RoutingTable::new(NodeId([0x55; 20]), Family::V4, RoutingConfig::default());
    for (id, a) in candidates(20_000, 5) {
        small.heard_from(Timestamp::ZERO, id, a, RESP);
    }
    let mut i = 0usize;
    g.bench_function(format!("closest8_of_{}_bep5", small.len()), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            small.closest(black_box(&targets[i]), 8, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, insert, closest);
criterion_main!(benches);
