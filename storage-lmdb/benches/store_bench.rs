//! Storage bench: batched inserts/s, search latency over N torrents, bytes per torrent.
//!
//! `cargo bench -p magnetar-storage --bench store_bench`
//! Environment: BENCH_TORRENTS (default 1,000,000), BENCH_INFO_TORRENTS (default
//! 20,000), BENCH_QUERIES (default 1,000 per kind), BENCH_DIR (default a temp dir),
//! BENCH_WRITER_TORRENTS (default BENCH_TORRENTS; 0 skips the writer-path run),
//! BENCH_WRITER_BASELINE (default 1: the writer path also runs with classification
//! off, first, in the same process, for the before/after ratio; 0 skips it),
//! BENCH_WRITER_ROUNDS (default 2: pairs of runs off then on; the spread of one mode's
//! runs is printed as the noise).
//! BENCH_BEFORE (default 0; 1 also times every query shape on the search of schema 5,
//! without the `columns` table, in the same run: `Store::set_order_mode(3)`),
//! BENCH_SHAPES (default all; `seeders,phrase` times only the query shapes whose
//! label contains one of the words), BENCH_BEFORE_MODE (default 3: the order mode
//! BENCH_BEFORE times as "before"; 4 is this build's search with the relevance walk
//! of plain unscoped words only, as before exclusions, phrases and scopes were
//! walked; 5 is the search of schema 6, without the `by_seeders` and one-word order
//! walks), BENCH_KEEP (default 0; 1 keeps the 1 M store and its sampled names under
//! BENCH_DIR and reuses them on the next run with the same BENCH_TORRENTS, skipping
//! the inserts).
//! Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use magnetar_storage::synth::{Rng, Synth};
use magnetar_storage::{
    tokenize, wait_closed, Durability, FacetFilter, FileEntry, Op, SearchQuery, SortBy, Store,
    StoreOptions, TorrentInput, WriterConfig,
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
                let mut t = synth.torrent(1_600_000_000 + (done + i) as u64, with_info);
                if (done + i) % 500 == 7 {
                    sample.push(t.name.clone());
                }
                // Two torrents in three have known seeders (a fixed-size field: the
                // record is as large either way), for the seeders sort.
                let j = (done + i) as u64;
                if j % 3 != 0 {
                    t.seeders = Some((j.wrapping_mul(0x9e37_79b9) >> 7) as u32 % 5_000);
                    t.scraped_at = Some(t.discovered_at);
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

/// A few CJK characters with a Zipf-like popularity.
fn cjk_word(rng: &mut Rng) -> String {
    let len = 2 + rng.below(4);
    (0..len)
        .map(|_| {
            let r = (2_000f64).powf(rng.f64()) as u32;
            char::from_u32(0x4E00 + r).unwrap_or('中')
        })
        .collect()
}

/// Adds `n` torrents with Chinese/Japanese-style names (words run together, no
/// spaces) after the timed inserts; returns about 1 name in 50.
fn add_cjk(store: &Store, n: usize, t0: u64) -> Vec<String> {
    let mut rng = Rng::new(77);
    let mut sample = Vec::new();
    let mut done = 0;
    while done < n {
        let k = 10_000.min(n - done);
        let ops: Vec<Op> = (0..k)
            .map(|i| {
                let words = 1 + rng.below(3);
                let name: String = (0..words).map(|_| cjk_word(&mut rng)).collect();
                let name = format!("{name} 1080p");
                if (done + i) % 50 == 3 {
                    sample.push(name.clone());
                }
                let mut ih = [0u8; 20];
                ih[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
                ih[8..16].copy_from_slice(&rng.next_u64().to_le_bytes());
                ih[16..].copy_from_slice(&[0xc0, 0x1c, 0, 0]);
                Op::Torrent(Box::new(TorrentInput {
                    infohash: ih,
                    kind: magnetar_storage::HashKind::V1,
                    v2: None,
                    total_size: 1 << 30,
                    piece_length: 1 << 20,
                    piece_count: 1 << 10,
                    private: false,
                    source: None,
                    files: vec![FileEntry {
                        path: format!("{name}.mkv"),
                        size: 1 << 30,
                    }],
                    discovered_at: t0 + (done + i) as u64,
                    sources: magnetar_storage::Sources::SAMPLE,
                    seeders: None,
                    leechers: None,
                    scraped_at: None,
                    info: None,
                    name,
                }))
            })
            .collect();
        store.apply_batch(&ops).expect("apply_batch");
        done += k;
    }
    sample
}

/// Accents every vowel: the query folds back to the stored (unaccented) word.
fn accented(w: &str) -> String {
    w.chars()
        .map(|c| match c {
            'a' => 'á',
            'e' => 'è',
            'i' => 'î',
            'o' => 'ö',
            'u' => 'ú',
            c => c,
        })
        .collect()
}

/// Every query shape of the bench, `nq` queries each.
fn query_shapes(
    names: &[String],
    cjk: &[String],
    nq: usize,
    recent_since: u64,
) -> Vec<(String, Vec<SearchQuery>)> {
    let mut qsynth = Synth::new(99);
    let mut one = Vec::with_capacity(nq);
    let mut two = Vec::with_capacity(nq);
    let mut prefix = Vec::with_capacity(nq);
    let mut phrase = Vec::with_capacity(nq);
    let mut exclude = Vec::with_capacity(nq);
    while one.len() < nq || two.len() < nq || phrase.len() < nq || prefix.len() < nq {
        let name = &names[qsynth.rng().below(names.len() as u64) as usize];
        let words: Vec<String> = tokenize(name).collect();
        let i = qsynth.rng().below(words.len() as u64) as usize;
        if one.len() < nq {
            one.push(words[i].clone());
        }
        if words.len() >= 2 {
            let j = (i + 1 + qsynth.rng().below(words.len() as u64 - 1) as usize) % words.len();
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
    // Exclusion: a word of one name minus a word of another (popular words come up
    // as often as they occur).
    for (k, w) in one.iter().enumerate() {
        let other = &one[(k * 7 + 3) % one.len()];
        if other != w {
            exclude.push(format!("{w} -{other}"));
        }
    }
    let mut cjk_q = [Vec::new(), Vec::new(), Vec::new()];
    let mut rng = Rng::new(5);
    if !cjk.is_empty() {
        while cjk_q.iter().any(|v| v.len() < nq) {
            let name = &cjk[rng.below(cjk.len() as u64) as usize];
            let chars: Vec<char> = name.split(' ').next().unwrap_or("").chars().collect();
            for (len, v) in cjk_q.iter_mut().enumerate() {
                let len = len + 1;
                if v.len() < nq && chars.len() >= len {
                    let at = rng.below((chars.len() - len + 1) as u64) as usize;
                    v.push(chars[at..at + len].iter().collect::<String>());
                }
            }
        }
    }
    let plain = |v: &[String]| -> Vec<SearchQuery> { v.iter().map(SearchQuery::new).collect() };
    let sorted = |by: SortBy, desc: bool| -> Vec<SearchQuery> {
        one.iter()
            .map(|w| {
                let q = SearchQuery::new(w).sort(by);
                if desc {
                    q
                } else {
                    q.ascending()
                }
            })
            .collect()
    };
    let [cjk1, cjk2, cjk3] = cjk_q;
    let facet = |cat: Option<&str>, attrs: &[(&str, &str)]| FacetFilter {
        category: cat.map(str::to_string),
        attributes: attrs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    let cats = [
        "movie", "tv", "audio", "books", "pc", "8000", "music", "2040",
    ];
    let with_cat = |v: &[String]| -> Vec<SearchQuery> {
        v.iter()
            .enumerate()
            .map(|(i, w)| SearchQuery::new(w).facets(facet(Some(cats[i % cats.len()]), &[])))
            .collect()
    };
    let only_cat: Vec<SearchQuery> = (0..nq)
        .map(|i| SearchQuery::new("").facets(facet(Some(cats[i % cats.len()]), &[])))
        .collect();
    let res = ["720p", "1080p", "2160p"];
    vec![
        ("one-word".into(), plain(&one)),
        ("two-word".into(), plain(&two)),
        ("word + prefix".into(), plain(&prefix)),
        ("phrase".into(), plain(&phrase)),
        ("exclusion".into(), plain(&exclude)),
        (
            "name:word".into(),
            one.iter()
                .map(|w| SearchQuery::new(format!("name:{w}")))
                .collect(),
        ),
        (
            "path:word".into(),
            one.iter()
                .map(|w| SearchQuery::new(format!("path:{w}")))
                .collect(),
        ),
        (
            "accented word".into(),
            one.iter().map(|w| SearchQuery::new(accented(w))).collect(),
        ),
        ("CJK 1 char".into(), plain(&cjk1)),
        ("CJK 2 chars".into(), plain(&cjk2)),
        ("CJK 3 chars".into(), plain(&cjk3)),
        (
            "one-word relevance asc".into(),
            sorted(SortBy::Relevance, false),
        ),
        ("one-word newest".into(), sorted(SortBy::Discovered, true)),
        ("one-word oldest".into(), sorted(SortBy::Discovered, false)),
        ("one-word largest".into(), sorted(SortBy::Size, true)),
        ("one-word smallest".into(), sorted(SortBy::Size, false)),
        ("one-word seeders".into(), sorted(SortBy::Seeders, true)),
        (
            "one-word seeders asc".into(),
            sorted(SortBy::Seeders, false),
        ),
        ("one-word files".into(), sorted(SortBy::Files, true)),
        (
            "two-word largest".into(),
            two.iter()
                .map(|w| SearchQuery::new(w).sort(SortBy::Size))
                .collect(),
        ),
        (
            "one-word size 0.1-5 GB".into(),
            one.iter()
                .map(|w| SearchQuery::new(w).size_range(Some(100_000_000), Some(5_000_000_000)))
                .collect(),
        ),
        (
            "one-word since (10 %)".into(),
            one.iter()
                .map(|w| SearchQuery::new(w).discovered_range(Some(recent_since), None))
                .collect(),
        ),
        ("one-word + category".into(), with_cat(&one)),
        ("two-word + category".into(), with_cat(&two)),
        (
            "one-word + category newest".into(),
            with_cat(&one)
                .into_iter()
                .map(|q| q.sort(SortBy::Discovered))
                .collect(),
        ),
        ("category only (no text)".into(), only_cat.clone()),
        (
            "category only, size desc".into(),
            only_cat
                .iter()
                .map(|q| q.clone().sort(SortBy::Size))
                .collect(),
        ),
        (
            "one-word + resolution".into(),
            one.iter()
                .enumerate()
                .map(|(i, w)| {
                    SearchQuery::new(w).facets(facet(None, &[("resolution", res[i % 3])]))
                })
                .collect(),
        ),
        (
            "movie + year (no text)".into(),
            (0..nq)
                .map(|i| {
                    let y = (1950 + i % 76).to_string();
                    SearchQuery::new("").facets(facet(Some("movies"), &[("year", y.as_str())]))
                })
                .collect(),
        ),
        (
            "one-word size+since newest".into(),
            one.iter()
                .map(|w| {
                    SearchQuery::new(w)
                        .sort(SortBy::Discovered)
                        .size_range(Some(100_000_000), None)
                        .discovered_range(Some(recent_since), None)
                })
                .collect(),
        ),
    ]
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
    let keep = env("BENCH_KEEP", 0) == 1;
    let names_file = base.join(format!("bench-noinfo-names-{n}.txt"));
    let cjk_file = base.join(format!("bench-noinfo-cjk-{n}.txt"));
    let reuse = keep && names_file.exists() && cjk_file.exists() && path.exists();
    if !reuse {
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&names_file);
        let _ = std::fs::remove_file(&cjk_file);
    }
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
    let read_lines = |f: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(f)
            .expect("read names")
            .lines()
            .map(str::to_string)
            .collect()
    };
    let cjk_names = if reuse {
        names = read_lines(&names_file);
        println!("reused the store of {n} torrents under {}", path.display());
        read_lines(&cjk_file)
    } else {
        insert_and_report(&store, n, &mut names)
    };
    if keep && !reuse {
        let lines = |v: &[String]| {
            v.iter()
                .map(|x| x.replace('\n', " ") + "\n")
                .collect::<String>()
        };
        std::fs::write(&names_file, lines(&names)).expect("write names");
        std::fs::write(&cjk_file, lines(&cjk_names)).expect("write names");
    }
    search_shapes(&store, n, nq, &names, &cjk_names);
    drop(store);
    wait_closed(&path);
    if !keep {
        let _ = std::fs::remove_dir_all(&path);
    }
    after_search(&base, n, n_info, durability);
}

/// Fills the store (timed) and prints the insert figures and its size; then adds
/// the CJK names, whose sample it returns.
fn insert_and_report(store: &Store, n: usize, names: &mut Vec<String>) -> Vec<String> {
    let w0 = written_bytes();
    let (secs, cpu) = fill(store, n, false, 1, names);
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

    add_cjk(store, n / 100, 1_600_000_000 + n as u64)
}

/// Search latency, per query shape. Queries are made from stored names (a
/// popular word is queried as often as it occurs).
fn search_shapes(store: &Store, n: usize, nq: usize, names: &[String], cjk_names: &[String]) {
    let shapes = query_shapes(names, cjk_names, nq, 1_600_000_000 + (n as u64) * 9 / 10);
    let before = env("BENCH_BEFORE", 0) == 1;
    let before_mode = env("BENCH_BEFORE_MODE", 3);
    // BENCH_SHAPES=a,b: only the shapes whose label contains one of these.
    let only: Vec<String> = std::env::var("BENCH_SHAPES")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for (label, queries) in &shapes {
        if !only.is_empty() && !only.iter().any(|o| label.contains(o.as_str())) {
            continue;
        }
        // Before (schema 5's search, no `columns`), then this build's, alternated
        // shape by shape.
        let both = [before_mode, 0];
        for mode in if before { &both[..] } else { &both[1..] } {
            store.set_order_mode(*mode);
            let mut lat = Vec::with_capacity(queries.len());
            let mut total = 0usize;
            let mut empty = 0;
            for q in queries.iter() {
                let t0 = Instant::now();
                let r = store.query(q).expect("search");
                lat.push(t0.elapsed());
                total += r.total;
                if r.hits.is_empty() {
                    empty += 1;
                }
            }
            let max = *lat.iter().max().unwrap_or(&Duration::ZERO);
            println!(
                "search {label:<26} {} over {n}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; mean matches {:.0}, no-hit queries {empty}/{}",
                if *mode != 0 { "before" } else { "after " },
                pct(&mut lat, 0.5).as_secs_f64() * 1e3,
                pct(&mut lat, 0.99).as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3,
                total as f64 / queries.len().max(1) as f64,
                queries.len()
            );
        }
    }
    store.set_order_mode(0);
    let t0 = Instant::now();
    let recent = store.recent(100).expect("recent");
    println!(
        "recent(100): {:.3} ms ({} rows)",
        t0.elapsed().as_secs_f64() * 1e3,
        recent.len()
    );
}

/// The writer-path inserts and the size with info dicts.
fn after_search(base: &std::path::Path, n: usize, n_info: usize, durability: Durability) {
    // 2b. The same torrents through the writer thread (what a crawler does).
    // With BENCH_WRITER_BASELINE (the default), first without classification (the
    // baseline), then with it (what the crawler runs), alternating for the ratio.
    let nw = env("BENCH_WRITER_TORRENTS", n);
    // BENCH_WRITER_ROUNDS (default 2) pairs of runs, off then on; the spread of the
    // runs of one mode is the noise the ratio is to be read against.
    let rounds = env("BENCH_WRITER_ROUNDS", 2).max(1);
    let modes: Vec<bool> = if env("BENCH_WRITER_BASELINE", 1) > 0 {
        (0..rounds).flat_map(|_| [false, true]).collect()
    } else {
        vec![true]
    };
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for &classify in modes.iter().filter(|_| nw > 0) {
        let path = base.join("bench-writer");
        let _ = std::fs::remove_dir_all(&path);
        let mut opts = StoreOptions::new(&path);
        opts.keep_info = false;
        opts.durability = durability;
        opts.classify = classify;
        let store = Store::open(opts).expect("open");
        let (wall, cpu) = fill_writer(&store, nw, 1);
        println!(
            "writer path{}: {nw} torrents sent and committed ({durability:?}) in {wall:.2} s = {:.0} torrents/s wall (generated beforehand); CPU {cpu:.2} s = {:.0} torrents per CPU-second",
            if classify { ", classified" } else { ", NOT classified (baseline)" },
            nw as f64 / wall,
            nw as f64 / cpu.max(0.01)
        );
        runs[usize::from(classify)].push((wall, cpu));
        drop(store);
        wait_closed(&path);
        let _ = std::fs::remove_dir_all(&path);
    }
    if nw > 0 && modes.len() > 1 {
        let sum = |v: &[(f64, f64)]| v.iter().fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
        let (b, c) = (sum(&runs[0]), sum(&runs[1]));
        println!(
            "writer path, classified / baseline (sum of {rounds} runs each): wall time {:.3}, CPU time {:.3}",
            c.0 / b.0.max(1e-9),
            c.1 / b.1.max(1e-9)
        );
        // Noise: the largest / smallest run of each mode.
        let spread = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            let max = v.iter().map(f).fold(f64::MIN, f64::max);
            let min = v.iter().map(f).fold(f64::MAX, f64::min);
            max / min.max(1e-9)
        };
        println!(
            "writer path, noise (largest / smallest run of one mode): baseline wall {:.3}, CPU {:.3}; classified wall {:.3}, CPU {:.3}",
            spread(&runs[0], |r| r.0),
            spread(&runs[0], |r| r.1),
            spread(&runs[1], |r| r.0),
            spread(&runs[1], |r| r.1)
        );
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
