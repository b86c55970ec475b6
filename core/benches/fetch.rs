//! Criterion benchmarks: the metadata fetcher (session + scheduler) against the
//! in-memory fake seeder, and SHA-1 verification of large metadata.
//!
//! `cargo bench -p magnetar-core --features testkit --bench fetch -- --warm-up-time 1 --measurement-time 3`
//!
//! The `fetch/` and `large/` groups measure wall time. The `cpu/` group repeats the
//! one-piece fetches but reports this thread's CPU time (Linux
//! `/proc/thread-self/schedstat`), which stays meaningful on a loaded, shared host
//! where wall time also counts time spent waiting for a core.
#[cfg(not(feature = "testkit"))]
use criterion::criterion_group;
use criterion::criterion_main;

#[cfg(feature = "testkit")]
mod real {
    use std::hint::black_box;
    use std::net::SocketAddr;
    use std::time::Duration;

    use criterion::{Criterion, Throughput};
    use magnetar_core::fetch::{FetchConfig, Fetcher};
    use magnetar_core::metadata::{sha1_info_hash, verify};
    use magnetar_core::testkit::{build_info, Behavior, InfoSpec, Swarm};
    use magnetar_core::Rng;
    use magnetar_core::{Event, Timestamp};

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            6881,
        )
    }

    fn count_fetched(ev: &[Event]) -> usize {
        ev.iter()
            .filter(|e| matches!(e, Event::MetadataFetched(_)))
            .count()
    }

    /// ~8 MiB info dict: a single file with 16 KiB pieces.
    fn info_8mib() -> Vec<u8> {
        let spec = InfoSpec {
            piece_length: 16 * 1024,
            ..InfoSpec::single("large.bin", 419_000 * 16 * 1024)
        };
        build_info(&spec)
    }

    /// This thread's CPU time in ns (Linux schedstat; 0 elsewhere).
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// One-piece metadata, one fetch at a time through a long-lived Fetcher: a
    /// typical small torrent (~2 KiB info dict: 100 MiB in 1 MiB pieces) and the
    /// worst case for one piece (~16 KiB).
    pub fn one_piece(c: &mut Criterion, group: &str, cpu: bool) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        if cpu {
            g.sample_size(20);
        }
        for (label, piece_length, size) in [
            ("1piece_2kib", 1u64 << 20, 100u64 << 20),
            ("1piece_16kib", 256 << 10, 200 << 20),
        ] {
            let spec = InfoSpec {
                piece_length,
                ..InfoSpec::single("one-piece.bin", size)
            };
            let info = build_info(&spec);
            assert!(info.len() <= 16 * 1024, "{}", info.len());
            g.bench_function(label, |b| {
                let mut sw = Swarm::new(1);
                let ih = sw.add_seeder(addr(1), info.clone().into(), Behavior::Honest);
                let mut f =
                    Fetcher::new(FetchConfig::default(), Rng::new(1)).with_allow_private(true);
                let mut ev = Vec::with_capacity(4);
                let mut one = || {
                    ev.clear();
                    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
                    sw.run_into(&mut f, 1000, &mut ev);
                    assert_eq!(count_fetched(&ev), 1);
                };
                if cpu {
                    // schedstat advances in scheduler ticks: repeat the sample until
                    // at least 50 ms of CPU time and report the per-round average.
                    b.iter_custom(|iters| {
                        let start = thread_cpu_ns();
                        let mut rounds = 0u64;
                        loop {
                            for _ in 0..iters {
                                one();
                            }
                            rounds += 1;
                            let d = thread_cpu_ns().saturating_sub(start);
                            if d >= 50_000_000 {
                                return Duration::from_nanos(d / rounds);
                            }
                        }
                    });
                } else {
                    b.iter(&mut one);
                }
            });
        }
        g.finish();
    }

    pub fn cpu(c: &mut Criterion) {
        one_piece(c, "cpu", true);
    }

    pub fn benches(c: &mut Criterion) {
        one_piece(c, "fetch", false);
        let mut g = c.benchmark_group("fetch");

        // 100 infohashes in flight at once, each from its own peer.
        let n = 100u32;
        let mut sw = Swarm::new(2);
        let mut ihs = Vec::new();
        for i in 0..n {
            let spec = InfoSpec {
                piece_length: 1 << 20,
                ..InfoSpec::single(&format!("t{i}.bin"), 100 << 20)
            };
            let inf = build_info(&spec);
            ihs.push(sw.add_seeder(addr(100 + i), inf.into(), Behavior::Honest));
        }
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function("1piece_batch100", |b| {
            let mut f = Fetcher::new(FetchConfig::default(), Rng::new(1)).with_allow_private(true);
            let mut ev = Vec::with_capacity(4 * n as usize);
            b.iter(|| {
                ev.clear();
                for (i, ih) in ihs.iter().enumerate() {
                    f.fetch(Timestamp::ZERO, *ih, &[addr(100 + i as u32)])
                        .unwrap();
                }
                sw.run_into(&mut f, 100_000, &mut ev);
                assert_eq!(count_fetched(&ev), n as usize);
            });
        });
        g.finish();

        // SHA-1 verification of ~8 MiB metadata, and a full 8 MiB fetch.
        let big = info_8mib();
        let ih = sha1_info_hash(&big);
        let mut g = c.benchmark_group("large");
        g.sample_size(10);
        g.throughput(Throughput::Bytes(big.len() as u64));
        g.bench_function("sha1_verify_8mib", |b| {
            b.iter(|| assert!(verify(black_box(&big), &ih).is_some()));
        });
        g.bench_function("fetch_8mib", |b| {
            let mut sw = Swarm::new(3);
            sw.add_seeder(addr(1), big.clone().into(), Behavior::Honest);
            let mut f = Fetcher::new(FetchConfig::default(), Rng::new(1)).with_allow_private(true);
            let mut ev = Vec::new();
            b.iter(|| {
                ev.clear();
                f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
                sw.run_into(&mut f, 100_000, &mut ev);
                assert_eq!(count_fetched(&ev), 1);
            });
        });
        g.finish();
    }
}

#[cfg(feature = "testkit")]
mod groups {
    use super::real;
    use criterion::criterion_group;
    criterion_group!(wall, real::benches);
    criterion_group!(cpu, real::cpu);
}
#[cfg(feature = "testkit")]
criterion_main!(groups::wall, groups::cpu);

#[cfg(not(feature = "testkit"))]
fn fetch_benches(_c: &mut criterion::Criterion) {
    eprintln!("fetch benches need --features testkit");
}
#[cfg(not(feature = "testkit"))]
criterion_group!(benches, fetch_benches);
#[cfg(not(feature = "testkit"))]
criterion_main!(benches);
