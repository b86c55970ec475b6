//! Search latency, p50 and p99, in PostgreSQL against the LMDB store, in the same
//! run, on the same synthetic torrents and the same queries (the query shapes of
//! the storage bench: words, two words, prefixes, phrases, exclusions, scopes,
//! sorts, ranges).
//!
//! `MAGNETAR_BENCH_N=1000000 cargo bench -p magnetar-storage-pg --bench pg_search`
//! (N torrents, default 100,000, no info dicts; `MAGNETAR_BENCH_QUERIES` queries
//! per shape, default 200). Both stores are loaded first (the load rates are
//! printed too), PostgreSQL is `VACUUM ANALYZE`d, each shape runs once unmeasured
//! on both, then measured: one query at a time, wall time of the call returning
//! the first page of 50 with its total. The server is the throw-away one of
//! `testing::TempPostgres` (`fsync = off`, default `shared_buffers`).
//!
//! `MAGNETAR_BENCH_BEFORE=1` also runs every query with the first version's SQL
//! (`PgStore::query_before`) right after the current one, on the same database,
//! and checks that both give the same page: before/after ratios from one run.
//! `MAGNETAR_BENCH_PG_URL=…` uses that database instead of a throw-away server,
//! and does not load it again when it already holds the N torrents (the same
//! seeded ones): a 1M database loads once (~9 min) for several runs.

use std::time::{Duration, Instant};

use magnetar_storage::synth::Synth;
use magnetar_storage::{tokenize, Durability, Op, SearchQuery, SortBy, Store, StoreOptions};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

const T0: u64 = 1_600_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shapes(names: &[String], nq: usize, n: usize) -> Vec<(&'static str, Vec<SearchQuery>)> {
    let mut s = Synth::new(99);
    let (mut one, mut two, mut prefix, mut phrase) = (vec![], vec![], vec![], vec![]);
    while one.len() < nq || two.len() < nq || prefix.len() < nq || phrase.len() < nq {
        let name = &names[s.rng().below(names.len() as u64) as usize];
        let words: Vec<String> = tokenize(name).collect();
        if words.is_empty() {
            continue;
        }
        let i = s.rng().below(words.len() as u64) as usize;
        if one.len() < nq {
            one.push(words[i].clone());
        }
        if words.len() >= 2 {
            let j = (i + 1 + s.rng().below(words.len() as u64 - 1) as usize) % words.len();
            let (a, b) = (i.min(j), i.max(j));
            if two.len() < nq {
                two.push(format!("{} {}", words[a], words[b]));
            }
            if prefix.len() < nq && words[b].chars().count() >= 4 {
                let cut: String = words[b].chars().take(3).collect();
                prefix.push(format!("{} {cut}", words[a]));
            }
            if phrase.len() < nq && i + 1 < words.len() {
                phrase.push(format!("\"{} {}\"", words[i], words[i + 1]));
            }
        }
    }
    let plain = |v: &[String]| -> Vec<SearchQuery> { v.iter().map(SearchQuery::new).collect() };
    let map =
        |f: &dyn Fn(&String) -> SearchQuery| -> Vec<SearchQuery> { one.iter().map(f).collect() };
    let exclude: Vec<SearchQuery> = one
        .iter()
        .enumerate()
        .filter(|(k, w)| one[(k * 7 + 3) % one.len()] != **w)
        .map(|(k, w)| SearchQuery::new(format!("{w} -{}", one[(k * 7 + 3) % one.len()])))
        .collect();
    let since = T0 + (n as u64) * 9 / 10;
    vec![
        ("one-word", plain(&one)),
        ("two-word", plain(&two)),
        ("prefix", plain(&prefix)),
        ("phrase", plain(&phrase)),
        ("exclusion", exclude),
        ("name:word", map(&|w| SearchQuery::new(format!("name:{w}")))),
        ("path:word", map(&|w| SearchQuery::new(format!("path:{w}")))),
        (
            "one-word newest",
            map(&|w| SearchQuery::new(w).sort(SortBy::Discovered)),
        ),
        (
            "one-word largest",
            map(&|w| SearchQuery::new(w).sort(SortBy::Size)),
        ),
        (
            "one-word seeders",
            map(&|w| SearchQuery::new(w).sort(SortBy::Seeders)),
        ),
        (
            "one-word files",
            map(&|w| SearchQuery::new(w).sort(SortBy::Files)),
        ),
        (
            "one-word size 0.1-5 GB",
            map(&|w| SearchQuery::new(w).size_range(Some(100_000_000), Some(5_000_000_000))),
        ),
        (
            "one-word since (10 %)",
            map(&|w| SearchQuery::new(w).discovered_range(Some(since), None)),
        ),
    ]
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let n = env("MAGNETAR_BENCH_N", 100_000);
    let nq = env("MAGNETAR_BENCH_QUERIES", 200);
    let batch = 10_000;
    let mut s = Synth::new(7);
    let mut names = Vec::with_capacity(n);
    let batches: Vec<Vec<Op>> = (0..n)
        .map(|i| {
            let mut t = s.torrent(T0 + i as u64, false);
            if s.rng().below(10) < 6 {
                t.seeders = Some(s.rng().below(500) as u32);
                t.leechers = Some(1);
                t.scraped_at = Some(T0 + i as u64);
            }
            names.push(t.name.clone());
            Op::Torrent(Box::new(t))
        })
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|c| c.to_vec())
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = StoreOptions::new(dir.path());
    o.durability = Durability::NoSync;
    let ls = Store::open(o).expect("LMDB");
    let t = Instant::now();
    for b in &batches {
        ls.apply_batch(b).expect("LMDB batch");
    }
    let lmdb_load = n as f64 / t.elapsed().as_secs_f64();

    // An existing database (`MAGNETAR_BENCH_PG_URL`) is reused as it is when it
    // already holds the N torrents (same seed, so the same ones), else loaded.
    let (_pg, url) = match std::env::var("MAGNETAR_BENCH_PG_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = TempPostgres::start().unwrap_or_else(|e| panic!("{e}"));
            let url = pg.create_database("search").expect("db");
            (Some(pg), url)
        }
    };
    let mut ps = PgStore::connect(&url, PgOptions::default()).expect("connect");
    let t = Instant::now();
    let reused = ps.count().expect("count") == n as u64;
    if !reused {
        for b in &batches {
            ps.apply_batch(b).expect("PG batch");
        }
    }
    let pg_load = if reused {
        String::from("reused, loaded earlier")
    } else {
        format!("{:.0}/s", n as f64 / t.elapsed().as_secs_f64())
    };
    let t = Instant::now();
    ps.client()
        .batch_execute("VACUUM ANALYZE torrents, files")
        .expect("vacuum");
    let vacuum = t.elapsed().as_secs_f64();
    println!(
        "torrents: {n} (no info dicts), batches of {batch}; load: LMDB {lmdb_load:.0}/s, \
         PostgreSQL {pg_load} (VACUUM ANALYZE {vacuum:.1} s); {nq} queries per shape, \
         first page of 50 with its total"
    );
    // `MAGNETAR_BENCH_BEFORE=1`: also the first version's SQL ("before"), on the
    // same database, query by query in the same loop.
    let before = std::env::var_os("MAGNETAR_BENCH_BEFORE").is_some();
    print!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "shape", "LMDB p50", "LMDB p99", "PG p50", "PG p99", "p50 x", "p99 x"
    );
    if before {
        print!(
            " {:>10} {:>10} {:>8} {:>8}",
            "before p50", "before p99", "p50 x", "p99 x"
        );
    }
    println!();
    for (shape, qs) in shapes(&names, nq, n) {
        let qs: Vec<SearchQuery> = qs.into_iter().map(|q| q.page(0, 50)).collect();
        for q in &qs {
            let _ = ls.query(q);
            let _ = ps.query(q);
            if before {
                let _ = ps.query_before(q);
            }
        }
        let (mut lt, mut pt, mut bt) = (Vec::new(), Vec::new(), Vec::new());
        for q in &qs {
            let t = Instant::now();
            let l = ls.query(q).expect("LMDB query");
            lt.push(t.elapsed());
            let t = Instant::now();
            let p = ps.query(q).expect("PG query");
            pt.push(t.elapsed());
            assert_eq!(
                l.hits.len(),
                p.hits.len(),
                "{shape}: {q:?} pages differ in length"
            );
            if before {
                let t = Instant::now();
                let b = ps.query_before(q).expect("PG query (before)");
                bt.push(t.elapsed());
                assert_eq!(b.hits, p.hits, "{shape}: {q:?} before and after differ");
            }
        }
        let (l50, l99, p50, p99) = (
            pct(&mut lt, 0.5),
            pct(&mut lt, 0.99),
            pct(&mut pt, 0.5),
            pct(&mut pt, 0.99),
        );
        print!(
            "{shape:<24} {l50:>7.2}ms {l99:>7.2}ms {p50:>7.2}ms {p99:>7.2}ms {:>8.1} {:>8.1}",
            p50 / l50,
            p99 / l99
        );
        if before {
            let (b50, b99) = (pct(&mut bt, 0.5), pct(&mut bt, 0.99));
            print!(
                " {b50:>8.2}ms {b99:>8.2}ms {:>8.1} {:>8.1}",
                b50 / l50,
                b99 / l99
            );
        }
        println!();
    }
}
