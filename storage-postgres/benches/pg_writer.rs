//! Torrents per second into PostgreSQL (1 and 3 writer connections, threads of
//! this process, and 1 and 3 writer processes) against the LMDB store's batch
//! writer, in the same run, on the same synthetic torrents.
//!
//! A writer process is this bench binary run again (`MAGNETAR_BENCH_CHILD`): it
//! makes the same torrents, says `ready`, waits for a line on stdin, writes its
//! share (every third batch) and says `done`; the time is from the go line to
//! the last `done`. `MAGNETAR_BENCH_EXPLAIN=1` also prints the plan of one
//! batch's statements (`auto_explain`, with timings and buffers) from the
//! server log.
//!
//! `cargo bench -p magnetar-storage-pg --bench pg_writer` (N torrents from
//! `MAGNETAR_BENCH_N`, default 20,000; batches of 1,000; with info dicts).
//! Both sides commit without fsync (the test server runs with `fsync = off`; LMDB
//! with `Durability::NoSync`), so the figures compare the write paths, not the
//! disk. The server is the throw-away one of `testing::TempPostgres`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use magnetar_storage::synth::Synth;
use magnetar_storage::{Durability, Op, Store, StoreOptions};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

fn corpus(n: usize) -> Vec<Vec<Op>> {
    let mut s = Synth::new(7);
    (0..n)
        .map(|i| Op::Torrent(Box::new(s.torrent(1_000_000 + i as u64, true))))
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|c| c.to_vec())
        .collect()
}

/// A writer process: `MAGNETAR_BENCH_CHILD=URL K STEP`.
fn child(spec: &str, n: usize) {
    let mut it = spec.splitn(3, '\t');
    let (url, k, step) = (
        it.next().expect("url"),
        it.next().and_then(|v| v.parse::<usize>().ok()).expect("k"),
        it.next()
            .and_then(|v| v.parse::<usize>().ok())
            .expect("step"),
    );
    let batches = corpus(n);
    let mut ps = PgStore::connect(url, PgOptions::default()).expect("connect");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go");
    for b in batches.iter().skip(k).step_by(step) {
        ps.apply_batch(b).expect("PG batch");
    }
    println!("done");
}

/// Torrents/s of `procs` writer processes sharing the batches.
fn processes(url: &str, procs: usize, n: usize) -> f64 {
    let exe = std::env::current_exe().expect("exe");
    let mut kids: Vec<_> = (0..procs)
        .map(|k| {
            Command::new(&exe)
                .env("MAGNETAR_BENCH_CHILD", format!("{url}\t{k}\t{procs}"))
                .env("MAGNETAR_BENCH_N", n.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a writer process")
        })
        .collect();
    let mut outs: Vec<_> = kids
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("stdout")))
        .collect();
    for o in &mut outs {
        let mut l = String::new();
        o.read_line(&mut l).expect("ready");
        assert_eq!(l.trim(), "ready");
    }
    let t = Instant::now();
    for c in &mut kids {
        writeln!(c.stdin.as_mut().expect("stdin")).expect("go");
    }
    for o in &mut outs {
        let mut l = String::new();
        o.read_line(&mut l).expect("done");
        assert_eq!(l.trim(), "done", "a writer process failed");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    for mut c in kids {
        assert!(c.wait().expect("wait").success());
    }
    rate
}

fn main() {
    let n: usize = std::env::var("MAGNETAR_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    if let Ok(spec) = std::env::var("MAGNETAR_BENCH_CHILD") {
        return child(&spec, n);
    }
    let batches = corpus(n);

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

    // Before schema 4: the same with the foreign keys of schema 1 put back.
    let url_fk = pg.create_database("fk").expect("db");
    let mut ps = PgStore::connect(&url_fk, PgOptions::default()).expect("connect");
    ps.client()
        .batch_execute(
            "ALTER TABLE files ADD FOREIGN KEY (torrent_id) REFERENCES torrents (id) \
                 ON DELETE CASCADE; \
             ALTER TABLE info ADD FOREIGN KEY (torrent_id) REFERENCES torrents (id) \
                 ON DELETE CASCADE;",
        )
        .expect("foreign keys");
    let t = Instant::now();
    for b in &batches {
        ps.apply_batch(b).expect("PG batch");
    }
    let pg_fk = n as f64 / t.elapsed().as_secs_f64();

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

    let url = pg.create_database("p1").expect("db");
    drop(PgStore::connect(&url, PgOptions::default()).expect("connect"));
    let pp1 = processes(&url, 1, n);
    let url = pg.create_database("p3").expect("db");
    drop(PgStore::connect(&url, PgOptions::default()).expect("connect"));
    let pp3 = processes(&url, 3, n);

    if std::env::var_os("MAGNETAR_BENCH_EXPLAIN").is_some() {
        let url = pg.create_database("explain").expect("db");
        let mut ps = PgStore::connect(&url, PgOptions::default()).expect("connect");
        // Two batches stored first, so the third meets a non-empty table.
        for b in batches.iter().take(2) {
            ps.apply_batch(b).expect("PG batch");
        }
        let before = pg.log().len();
        ps.client()
            .batch_execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                 SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; \
                 SET auto_explain.log_nested_statements = on;",
            )
            .expect("auto_explain");
        if let Some(b) = batches.get(2) {
            ps.apply_batch(b).expect("PG batch");
        }
        println!("--- plans of one batch (auto_explain) ---");
        println!("{}", &pg.log()[before..]);
    }
    println!("torrents: {n}, batches of 1000, with info dicts");
    println!("LMDB apply_batch (NoSync):       {lmdb:>9.0} torrents/s  (1.00)");
    println!(
        "PostgreSQL, 1 writer (fsync=off):{pg1:>9.0} torrents/s  ({:.2} of LMDB)",
        pg1 / lmdb
    );
    println!(
        "PostgreSQL, 1 writer, schema-1 foreign keys (before): {pg_fk:>9.0} torrents/s  ({:.2} of LMDB; after/before {:.2})",
        pg_fk / lmdb,
        pg1 / pg_fk
    );
    println!(
        "PostgreSQL, 3 writers:           {pg3:>9.0} torrents/s  ({:.2} of LMDB)",
        pg3 / lmdb
    );
    println!(
        "PostgreSQL, 1 writer process:    {pp1:>9.0} torrents/s  ({:.2} of LMDB)",
        pp1 / lmdb
    );
    println!(
        "PostgreSQL, 3 writer processes:  {pp3:>9.0} torrents/s  ({:.2} of LMDB)",
        pp3 / lmdb
    );
}
