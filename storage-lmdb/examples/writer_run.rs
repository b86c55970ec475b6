//! The writer path on `N` synthetic torrents (first argument, default 100,000), with
//! classification on (second argument `1`, the default) or off (`0`): a fixed
//! workload for profiles and instruction counts of what classifying costs the
//! writer, e.g.
//!
//!     cargo build --release -p magnetar-storage --no-default-features --example writer_run
//!     perf stat -e instructions:u target/release/examples/writer_run 100000 0
//!     perf stat -e instructions:u target/release/examples/writer_run 100000 1
//!
//! The torrents are generated before the writer starts (as in the store bench's
//! writer path); the store is made in a temporary directory (third argument: its
//! parent, default the system's) with durability `Durability::NoSync`, so that the
//! figures are CPU work and not fsync waits. Prints the wall and CPU seconds of the
//! writer part.

use std::time::Instant;

use magnetar_storage::synth::Synth;
use magnetar_storage::{wait_closed, Durability, Op, Store, StoreOptions, WriterConfig};

fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let classify = args.next().is_none_or(|a| a != "0");
    let parent = args.next().map(std::path::PathBuf::from);
    let dir = match &parent {
        Some(p) => tempfile::tempdir_in(p),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let path = dir.path().join("store");
    let mut synth = Synth::new(1);
    let ops: Vec<Op> = (0..n)
        .map(|i| Op::Torrent(Box::new(synth.torrent(1_600_000_000 + i as u64, false))))
        .collect();
    let mut opts = StoreOptions::new(&path);
    opts.keep_info = false;
    opts.durability = Durability::NoSync;
    opts.classify = classify;
    let store = Store::open(opts).expect("open");
    let w = store.writer(WriterConfig::default()).expect("writer");
    let t0 = Instant::now();
    let c0 = process_cpu();
    for op in ops {
        w.send(op).expect("send");
    }
    let totals = w.close().expect("close");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu() - c0;
    println!(
        "writer path, classify {classify}: {} new torrents in {wall:.2} s wall, {cpu:.2} s CPU",
        totals.torrents_new
    );
    drop(store);
    wait_closed(&path);
}
