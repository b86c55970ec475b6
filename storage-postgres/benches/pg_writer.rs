//! Torrents per second into PostgreSQL (1 and 3 writer connections) against the
//! LMDB store's batch writer, in the same run, on the same synthetic torrents.
//!
//! `cargo bench -p magnetar-storage-pg --bench pg_writer` (N torrents from
//! `MAGNETAR_BENCH_N`, default 20,000; batches of 1,000; with info dicts).
//! Both sides commit without fsync (the test server runs with `fsync = off`; LMDB
//! with `Durability::NoSync`), so the figures compare the write paths, not the
//! disk. The server is the throw-away one of `testing::TempPostgres`.

use std::time::Instant;

use magnetar_storage::synth::Synth;
use magnetar_storage::{Durability, Op, Store, StoreOptions};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

fn main() {
    let n: usize = std::env::var("MAGNETAR_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut s = Synth::new(7);
    let batches: Vec<Vec<Op>> = (0..n)
        .map(|i| Op::Torrent(Box::new(s.torrent(1_000_000 + i as u64, true))))
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|c| c.to_vec())
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = StoreOptions::new(dir.path());
    o.durability = Durability::NoSync;
    let store = Store::open(o).expect("LMDB");
    let t = Instant::now();
    for b in &batches {
        store.apply_batch(b).expect("LMDB batch");
    }
    let lmdb = n as f64 / t.elapsed().as_secs_f64();

    let pg = TempPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url1 = pg.create_database("one").expect("db");
    let mut ps = PgStore::connect(&url1, PgOptions::default()).expect("connect");
    let t = Instant::now();
    for b in &batches {
        ps.apply_batch(b).expect("PG batch");
    }
    let pg1 = n as f64 / t.elapsed().as_secs_f64();

    // Three writers, each a third of the batches (distinct torrents).
    let url3 = pg.create_database("three").expect("db");
    drop(PgStore::connect(&url3, PgOptions::default()).expect("connect"));
    let t = Instant::now();
    std::thread::scope(|sc| {
        for k in 0..3 {
            let (url, batches) = (&url3, &batches);
            sc.spawn(move || {
                let mut ps = PgStore::connect(url, PgOptions::default()).expect("connect");
                for b in batches.iter().skip(k).step_by(3) {
                    ps.apply_batch(b).expect("PG batch");
                }
            });
        }
    });
    let pg3 = n as f64 / t.elapsed().as_secs_f64();
    println!("torrents: {n}, batches of 1000, with info dicts");
    println!("LMDB apply_batch (NoSync):       {lmdb:>9.0} torrents/s  (1.00)");
    println!(
        "PostgreSQL, 1 writer (fsync=off):{pg1:>9.0} torrents/s  ({:.2} of LMDB)",
        pg1 / lmdb
    );
    println!(
        "PostgreSQL, 3 writers:           {pg3:>9.0} torrents/s  ({:.2} of LMDB)",
        pg3 / lmdb
    );
}
