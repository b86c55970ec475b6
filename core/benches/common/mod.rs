//! What the plain bench binaries `mse` and `utp` share: this thread's CPU
//! time, operations per CPU-second, medians, and the one-piece fetch loop
//! through the TCP sans-IO pair (a long-lived `Fetcher` against the testkit's
//! fake seeder, bytes handed over whole, both in this thread).
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::fetch::{EncryptionPolicy, FetchConfig, Fetcher};
use magnetar_core::testkit::{build_info, Behavior, InfoSpec, SeederEncryption, Swarm};
use magnetar_core::{Event, Rng, Timestamp};

/// This thread's CPU time in nanoseconds (Linux `/proc/thread-self/schedstat`),
/// so that a loaded, shared host does not inflate it.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The seeder's address.
pub fn addr() -> SocketAddr {
    "10.0.0.1:6881".parse().unwrap()
}

/// `MetadataFetched` events in `ev`.
pub fn fetched(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::MetadataFetched(_)))
        .count()
}

/// Runs `one` until at least `min` of CPU time; returns operations per CPU-second.
pub fn per_cpu_sec(min: Duration, mut one: impl FnMut()) -> f64 {
    let start = thread_cpu_ns();
    let mut n = 0u64;
    loop {
        for _ in 0..16 {
            one();
        }
        n += 16;
        let d = thread_cpu_ns().saturating_sub(start);
        if d >= min.as_nanos() as u64 {
            return n as f64 / (d as f64 / 1e9);
        }
    }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A ~2 KiB info dict: one metadata piece.
pub fn one_piece_info() -> Vec<u8> {
    build_info(&InfoSpec {
        piece_length: 1 << 20,
        ..InfoSpec::single("one-piece.bin", 100 << 20)
    })
}

/// One-piece fetches over the TCP pair, the seeder accepting `enc`, the
/// fetcher under `policy` with the Diffie-Hellman budget off.
pub fn tcp_pair_loop(enc: SeederEncryption, policy: EncryptionPolicy) -> impl FnMut() {
    let mut sw = Swarm::new(1);
    let ih = sw.add_seeder(addr(), one_piece_info().into(), Behavior::Honest);
    sw.set_encryption(addr(), enc);
    let cfg = FetchConfig {
        encryption: policy,
        max_dh_per_sec: 0,
        ..FetchConfig::default()
    };
    let mut f = Fetcher::new(cfg, Rng::new(1)).with_allow_private(true);
    let mut ev = Vec::with_capacity(4);
    move || {
        ev.clear();
        f.fetch(Timestamp::ZERO, ih, &[addr()]).unwrap();
        sw.run_into(&mut f, 1000, &mut ev);
        assert_eq!(fetched(&ev), 1);
    }
}
