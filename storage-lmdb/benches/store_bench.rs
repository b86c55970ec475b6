//! Storage bench: batched inserts/s, search latency over N torrents, bytes per torrent.
//!
//! `cargo bench -p magnetar-storage --bench store_bench`
//! Environment: BENCH_TORRENTS (default 1,000,000), BENCH_INFO_TORRENTS (default
//! 20,000), BENCH_QUERIES (default 1,000 per kind), BENCH_DIR (default a temp dir),
//! BENCH_WRITER_TORRENTS (default BENCH_TORRENTS; 0 skips the writer-path run).
//! Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use magnetar_storage::synth::Synth;
use magnetar_storage::{
    tokenize, wait_closed, Durability, Op, Order, Store, StoreOptions, WriterConfig,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process so far, all threads (apply_batch
/// tokenizes on a second thread), from /proc (Linux; 0 elsewhere).
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process passed to write calls so far (`wchar` of /proc/self/io; LMDB
/// writes its dirty pages with pwrite/writev), 0 where unavailable.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Inserts `n` synthetic torrents in batches of 10,000; returns seconds spent in
/// `apply_batch` (generation excluded). Keeps the names of about 1 in 500 torrents
/// in `sample` (queries are drawn from stored names).
fn fill(
    store: &Store,
    n: usize,
    with_info: bool,
    seed: u64,
    sample: &mut Vec<String>,
) -> (f64, f64) {
    let mut synth = Synth::new(seed);
    let mut spent = Duration::ZERO;
    let mut cpu = 0.0;
    let mut done = 0;
    while done < n {
        let k = 10_000.min(n - done);
        let ops: Vec<Op> = (0..k)
            .map(|i| {
                let t = synth.torrent(1_600_000_000 + (done + i) as u64, with_info);
                if (done + i) % 500 == 7 {
                    sample.push(t.name.clone());
                }
                Op::Torrent(Box::new(t))
            })
            .collect();
        let t0 = Instant::now();
        let c0 = process_cpu();
        store.apply_batch(&ops).expect("apply_batch");
        cpu += process_cpu() - c0;
        spent += t0.elapsed();
        done += k;
    }
    (spent.as_secs_f64(), cpu)
}

/// Inserts `n` synthetic torrents through the real writer path: they are generated
/// first (not timed), then this thread `send`s each to a `Writer` (bounded channel →
/// batches of 10,000 or 100 ms → commit) and `close`s it (everything durable).
/// Returns the wall seconds from the first send to `close` returning, and the CPU
/// seconds of the whole process over that time (this thread only sends).
fn fill_writer(store: &Store, n: usize, seed: u64) -> (f64, f64) {
    let mut synth = Synth::new(seed);
    let ops: Vec<Op> = (0..n)
        .map(|i| Op::Torrent(Box::new(synth.torrent(1_600_000_000 + i as u64, false))))
        .collect();
    let w = store.writer(WriterConfig::default()).expect("writer");
    let t0 = Instant::now();
    let c0 = process_cpu();
    for op in ops {
        w.send(op).expect("send");
    }
    let totals = w.close().expect("close");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu() - c0;
    if totals.torrents_new != n as u64 {
        println!(
            "writer path: {} new torrents of {n} sent",
            totals.torrents_new
        );
    }
    (wall, cpu)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_TORRENTS", 1_000_000);
    let n_info = env("BENCH_INFO_TORRENTS", 20_000);
    let nq = env("BENCH_QUERIES", 1_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().to_path_buf());

    // 1. Inserts and size without info dicts.
    let path = base.join("bench-noinfo");
    let _ = std::fs::remove_dir_all(&path);
    let mut opts = StoreOptions::new(&path);
    opts.keep_info = false;
    // BENCH_DURABILITY=nosync|nometasync measures the fast modes.
    opts.durability = match std::env::var("BENCH_DURABILITY").as_deref() {
        Ok("nosync") => Durability::NoSync,
        Ok("nometasync") => Durability::NoMetaSync,
        _ => Durability::Durable,
    };
    let durability = opts.durability;
    let store = Store::open(opts).expect("open");
    let mut names = Vec::new();
    let w0 = written_bytes();
    let (secs, cpu) = fill(&store, n, false, 1, &mut names);
    let written = written_bytes() - w0;
    let st = store.stats().expect("stats");
    println!(
        "inserts: {n} torrents in {secs:.2} s in apply_batch = {:.0} torrents/s (batches of 10,000, {:?} commits); CPU {cpu:.2} s = {:.0} torrents per CPU-second",
        n as f64 / secs,
        store.options().durability,
        n as f64 / cpu.max(0.01)
    );
    println!(
        "written by commits: {written} bytes = {:.0} B per torrent inserted (copy-on-write pages)",
        written as f64 / n as f64
    );
    println!(
        "size without info dicts: data.mdb {} bytes = {:.0} B/torrent; pages in use {:.0} B/torrent; {} posting blocks",
        st.disk_bytes,
        st.disk_bytes as f64 / n as f64,
        st.used_bytes as f64 / n as f64,
        st.posting_blocks,
    );

    // 2. Search latency. Queries: words of stored names (a popular word is queried
    // as often as it occurs), one word, or two words of one name in name order.
    let mut qsynth = Synth::new(99);
    let mut one = Vec::with_capacity(nq);
    let mut two = Vec::with_capacity(nq);
    while one.len() < nq || two.len() < nq {
        let name = &names[qsynth.rng().below(names.len() as u64) as usize];
        let words: Vec<String> = tokenize(name).collect();
        let i = qsynth.rng().below(words.len() as u64) as usize;
        if one.len() < nq {
            one.push(words[i].clone());
        }
        if words.len() >= 2 && two.len() < nq {
            let j = (i + 1 + qsynth.rng().below(words.len() as u64 - 1) as usize) % words.len();
            let (a, b) = (i.min(j), i.max(j));
            two.push(format!("{} {}", words[a], words[b]));
        }
    }
    for (label, queries, order) in [
        ("one-word  relevance", &one, Order::Relevance),
        ("two-word  relevance", &two, Order::Relevance),
        ("one-word  newest   ", &one, Order::Newest),
        ("one-word  largest  ", &one, Order::Largest),
        ("two-word  largest  ", &two, Order::Largest),
    ] {
        let mut lat = Vec::with_capacity(queries.len());
        let mut total = 0usize;
        let mut empty = 0;
        for q in queries.iter() {
            let t0 = Instant::now();
            let r = store.search(q, 20, 0, order).expect("search");
            lat.push(t0.elapsed());
            total += r.total;
            if r.hits.is_empty() {
                empty += 1;
            }
        }
        let max = *lat.iter().max().unwrap_or(&Duration::ZERO);
        println!(
            "search {label} over {n}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; mean matches {:.0}, no-hit queries {empty}/{}",
            pct(&mut lat, 0.5).as_secs_f64() * 1e3,
            pct(&mut lat, 0.99).as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            total as f64 / queries.len() as f64,
            queries.len()
        );
    }
    let t0 = Instant::now();
    let recent = store.recent(100).expect("recent");
    println!(
        "recent(100): {:.3} ms ({} rows)",
        t0.elapsed().as_secs_f64() * 1e3,
        recent.len()
    );
    drop(store);
    wait_closed(&path);
    let _ = std::fs::remove_dir_all(&path);

    // 2b. The same torrents through the writer thread (what a crawler does).
    let nw = env("BENCH_WRITER_TORRENTS", n);
    if nw > 0 {
        let path = base.join("bench-writer");
        let _ = std::fs::remove_dir_all(&path);
        let mut opts = StoreOptions::new(&path);
        opts.keep_info = false;
        opts.durability = durability;
        let store = Store::open(opts).expect("open");
        let (wall, cpu) = fill_writer(&store, nw, 1);
        println!(
            "writer path: {nw} torrents sent and committed ({durability:?}) in {wall:.2} s = {:.0} torrents/s wall (generated beforehand); CPU {cpu:.2} s = {:.0} torrents per CPU-second",
            nw as f64 / wall,
            nw as f64 / cpu.max(0.01)
        );
        drop(store);
        wait_closed(&path);
        let _ = std::fs::remove_dir_all(&path);
    }

    // 3. Size with raw info dicts.
    let path = base.join("bench-info");
    let _ = std::fs::remove_dir_all(&path);
    let store = Store::open(StoreOptions::new(&path)).expect("open");
    let (secs, _) = fill(&store, n_info, true, 2, &mut Vec::new());
    let st = store.stats().expect("stats");
    println!(
        "size with info dicts ({n_info} torrents, {:.0} torrents/s): data.mdb {:.0} B/torrent; pages in use {:.0} B/torrent",
        n_info as f64 / secs,
        st.disk_bytes as f64 / n_info as f64,
        st.used_bytes as f64 / n_info as f64
    );
    drop(store);
    wait_closed(&path);
    let _ = std::fs::remove_dir_all(&path);
}
