//! The same synthetic torrents (10,000, and the 100,000) in the LMDB store
//! and in the PostgreSQL store (a real server) give the same search results: the same totals and the same pages in the
//! same order, for a fixed list of queries (words, prefixes, phrases, exclusions,
//! `name:`/`path:` scopes, accents, CJK) under every sort in both directions, two
//! pages, and size and discovery-time ranges; and category and attribute filters
//! (the classifier's facets), alone and with words.
//!
//! Every order is deterministic (ties by doc id, and both stores give doc ids in
//! the same order), so every page is compared in order. Where the LMDB store
//! estimates a total (`total_estimated`, phrase queries past its check budget) the
//! totals are not compared; the pages still are. See the `search` module of
//! magnetar-storage-pg for the intentional differences.

use magnetar_storage::synth::Synth;
use magnetar_storage::{
    to_hex, tokenize, FacetFilter, FileEntry, Op, SearchQuery, SortBy, Store, StoreOptions,
    TorrentInput,
};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

const T0: u64 = 1_600_000_000;

fn corpus(n: usize) -> Vec<TorrentInput> {
    let mut s = Synth::new(2026);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Three torrents per second: ties on discovered_at are broken by doc id.
        let mut t = s.torrent(T0 + (i / 3) as u64, i % 4 == 0);
        let r = s.rng().below(1000);
        if r < 600 {
            let seeders = s.rng().below(50) as u32;
            t.seeders = Some(seeders);
            t.leechers = Some(seeders / 2);
            t.scraped_at = Some(T0 + i as u64);
        }
        // Release names the classifier reads: episodes, season packs, movies with
        // a year, resolution, source and codec, music, books, languages.
        match i % 13 {
            0 => t.name = format!("{}.S0{}E{:02}.720p.HDTV.x264", t.name, i % 5, i % 23),
            1 => t.name = format!("{}.S0{}.COMPLETE.1080p.WEB-DL.MULTi", t.name, i % 4),
            2 => t.name = format!("{}.{}.2160p.BluRay.x265.FRENCH", t.name, 1990 + i % 30),
            3 => {
                t.name = format!("{} - Discography FLAC", t.name);
                for f in &mut t.files {
                    f.path = format!("{}.flac", f.path);
                }
            }
            4 => t.name = format!("{} (ebook) epub", t.name),
            _ => {}
        }
        // Some accents and space-less scripts, in names and paths.
        match i % 97 {
            0 => t.name = format!("Épopée {}", t.name),
            1 => t.name = format!("{} 日本語字幕", t.name),
            2 => t.files.push(FileEntry {
                path: "Été/Ça va.txt".into(),
                size: 1,
            }),
            3 => t.files.push(FileEntry {
                path: "東京/語学 1.srt".into(),
                size: 1,
            }),
            _ => {}
        }
        t.total_size = t.files.iter().map(|f| f.size).sum();
        out.push(t);
    }
    out
}

/// Query texts from the corpus (deterministic: it is seeded).
fn queries(ts: &[TorrentInput]) -> Vec<String> {
    let name_words = |i: usize| -> Vec<String> { tokenize(&ts[i].name).collect() };
    let w = |i: usize, k: usize| -> String {
        let v = name_words(i);
        v[k.min(v.len() - 1)].clone()
    };
    let mut q = vec![
        w(10, 0),
        w(11, 0),
        w(12, 1),
        format!("{} {}", w(13, 0), w(14, 0)),
        // Prefixes: the last word, three letters of a common word.
        w(15, 0).chars().take(3).collect::<String>(),
        format!(
            "{} {}",
            w(16, 0),
            w(17, 0).chars().take(2).collect::<String>()
        ),
        // Phrases: two consecutive words of a name; a phrase scoped to names.
        format!("\"{} {}\"", w(18, 0), w(18, 1)),
        format!("name:\"{} {}\"", w(19, 0), w(19, 1)),
        format!("\"{} {}\" {}", w(20, 1), w(20, 2), w(21, 0)),
        // Exclusions.
        format!("{} -{}", w(22, 0), w(23, 0)),
        format!("{} -\"{} {}\"", w(24, 0), w(25, 0), w(25, 1)),
        // Scopes.
        format!("name:{}", w(26, 0)),
        format!("path:{}", w(27, 0)),
        "path:extras".into(),
        "extras mkv".into(),
        "name:mkv".into(),
        "-path:mkv mkv".into(),
        "1080p".into(),
        "x264 1080p".into(),
        "WEB-DL".into(),
        "\"web dl\"".into(),
        "1999".into(),
        "19".into(),
        "0".into(),
        // Accents and CJK.
        "épopée".into(),
        "EPOPEE".into(),
        "ete".into(),
        "path:ça".into(),
        "日本語".into(),
        "語".into(),
        "\"日本語 字幕\"".into(),
        "語学".into(),
        "東京".into(),
        // Nothing matches.
        "zzzqqqxxx".into(),
        format!("{} zzzqqqxxx", w(10, 0)),
    ];
    // A few more common words, as they come.
    for i in 30..40 {
        q.push(w(i, 0));
    }
    q
}

fn server() -> TempPostgres {
    match TempPostgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL could not start: {e}"),
    }
}

#[test]
fn lmdb_and_postgres_give_the_same_results_on_10000_synthetic_torrents() {
    equivalence(10_000, 1_000, &[(0, 50), (7, 13)]);
}

/// The figure: 100,000 torrents (loaded through COPY in batches of
/// 5,000), every query under every sort in both directions, the first page of
/// 50, with the ranges (the deeper page is the 10,000 test's: it halves this
/// test's time). Its runtime is in BENCHMARKS.md.
#[test]
fn lmdb_and_postgres_give_the_same_results_on_100000_synthetic_torrents() {
    equivalence(100_000, 5_000, &[(0, 50)]);
}

fn equivalence(n: usize, batch: usize, pages: &[(usize, usize)]) {
    let started = std::time::Instant::now();
    let pg = server();
    let url = pg.create_database("eq").unwrap();
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ls = Store::open(StoreOptions::new(dir.path())).unwrap();
    let ts = corpus(n);
    for chunk in ts.chunks(batch) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|t| Op::Torrent(Box::new(t.clone())))
            .collect();
        let p = ps.apply_batch(&ops).unwrap();
        let l = ls.apply_batch(&ops).unwrap();
        assert_eq!(p.torrents_new, l.torrents_new);
    }
    assert_eq!(ps.count().unwrap(), n as u64);
    assert_eq!(ls.count().unwrap(), n as u64);
    let loaded = started.elapsed();

    let sorts = [
        SortBy::Relevance,
        SortBy::Discovered,
        SortBy::Size,
        SortBy::Seeders,
        SortBy::Files,
    ];
    let (mut compared, mut nonempty, mut estimated) = (0usize, 0usize, 0usize);
    let mut check = |q: SearchQuery| {
        let l = ls.query(&q).unwrap_or_else(|e| panic!("LMDB {q:?}: {e}"));
        let p = ps
            .query(&q)
            .unwrap_or_else(|e| panic!("PostgreSQL {q:?}: {e}"));
        assert_eq!(l.skipped_corrupt + p.skipped_corrupt, 0);
        if l.total_estimated {
            estimated += 1;
        } else {
            assert_eq!(p.total, l.total, "total of {q:?}");
        }
        let lh: Vec<String> = l.hits.iter().map(|r| to_hex(&r.infohash)).collect();
        let ph: Vec<String> = p.hits.iter().map(|r| to_hex(&r.infohash)).collect();
        assert_eq!(ph, lh, "page of {q:?}");
        // The records too, not only the hashes.
        assert_eq!(p.hits, l.hits, "records of {q:?}");
        compared += 1;
        nonempty += usize::from(!l.hits.is_empty());
    };
    let qs = queries(&ts);
    for text in &qs {
        for sort in sorts {
            for desc in [true, false] {
                for &(offset, limit) in pages {
                    let mut q = SearchQuery::new(text.clone())
                        .sort(sort)
                        .page(offset, limit);
                    if !desc {
                        q = q.ascending();
                    }
                    check(q.clone());
                    // Ranges: sizes 100 MB..5 GB; the middle third of the
                    // discovery times; both.
                    let sized = q.clone().size_range(Some(100_000_000), Some(5_000_000_000));
                    check(sized.clone());
                    let t1 = T0 + (n / 9) as u64;
                    let t2 = T0 + (2 * n / 9) as u64;
                    check(q.clone().discovered_range(Some(t1), Some(t2)));
                    check(sized.discovered_range(Some(t1), None));
                }
            }
        }
    }
    // The list found things (a comparison of empty pages proves little).
    assert!(
        nonempty * 2 > compared,
        "only {nonempty} of {compared} queries found anything"
    );
    eprintln!(
        "{n} torrents: {} queries, {compared} comparisons, {nonempty} non-empty pages, \
         {estimated} LMDB totals estimated (not compared); loaded in {:.1} s, \
         compared in {:.1} s",
        qs.len(),
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    // Category and attribute filters, alone (no words: every torrent passing the
    // filter) and with words, under every sort in both directions.
    type Filter<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);
    let filters: Vec<Filter> = vec![
        (Some("movies"), vec![]),
        (Some("tv"), vec![]),
        (Some("tv_episode"), vec![]),
        (Some("2040"), vec![]),
        (Some("5000"), vec![]),
        (Some("audio,books"), vec![]),
        (Some("music, ebook"), vec![]),
        (None, vec![("resolution", "1080p")]),
        (None, vec![("resolution", "4k")]),
        (None, vec![("codec", "x264")]),
        (None, vec![("source", "bluray")]),
        (None, vec![("year", "2000-2010")]),
        (None, vec![("season", "2")]),
        (None, vec![("season", "1-3"), ("resolution", "1080p")]),
        (None, vec![("episode", "5")]),
        (None, vec![("language", "fr")]),
        (None, vec![("language", "multi")]),
        (Some("tv"), vec![("season", "3"), ("category", "5040")]),
        (Some("movies"), vec![("year", "1999")]),
    ];
    let mut texts: Vec<String> = vec![String::new(), "-zzzqqqxxx".into()];
    texts.extend(["1080p", "x264", "extras", "web dl"].map(String::from));
    texts.extend(qs.iter().take(4).cloned());
    let (mut fcompared, mut fnonempty) = (0usize, 0usize);
    for (cat, attrs) in &filters {
        let f = FacetFilter {
            category: cat.map(str::to_string),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for text in &texts {
            for sort in sorts {
                for desc in [true, false] {
                    let mut q = SearchQuery::new(text.clone())
                        .sort(sort)
                        .page(3, 40)
                        .facets(f.clone());
                    if !desc {
                        q = q.ascending();
                    }
                    let l = ls.query(&q).unwrap_or_else(|e| panic!("LMDB {q:?}: {e}"));
                    let p = ps
                        .query(&q)
                        .unwrap_or_else(|e| panic!("PostgreSQL {q:?}: {e}"));
                    if !l.total_estimated {
                        assert_eq!(p.total, l.total, "total of {q:?}");
                    }
                    assert_eq!(p.hits, l.hits, "page of {q:?}");
                    fcompared += 1;
                    fnonempty += usize::from(!l.hits.is_empty());
                }
            }
            // With a size range too.
            let q = SearchQuery::new(text.clone())
                .facets(f.clone())
                .size_range(Some(50_000_000), None);
            let (l, p) = (ls.query(&q).unwrap(), ps.query(&q).unwrap());
            assert_eq!((p.total, &p.hits), (l.total, &l.hits), "{q:?}");
        }
    }
    assert!(
        fnonempty * 2 > fcompared,
        "only {fnonempty} of {fcompared} filtered queries found anything"
    );
    eprintln!("{fcompared} filtered comparisons, {fnonempty} non-empty pages");
    // The same errors for the same bad queries.
    let bad_filter = |c: Option<&str>, a: &[(&str, &str)]| {
        SearchQuery::new("x").facets(FacetFilter {
            category: c.map(str::to_string),
            attributes: a
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    for bad in [
        bad_filter(Some("nonsense"), &[]),
        bad_filter(Some("999"), &[]),
        bad_filter(None, &[("year", "2010-2000")]),
        bad_filter(None, &[("colour", "red")]),
        bad_filter(None, &[("resolution", "potato")]),
        bad_filter(Some("movies"), &[]).page(100_001, 10),
        SearchQuery::new("-only -excluded"),
        SearchQuery::new("x").page(100_001, 10),
        SearchQuery::new("x").size_range(Some(10), Some(1)),
        SearchQuery::new("x").discovered_range(Some(10), Some(10)),
        SearchQuery::new("a ".repeat(300)),
    ] {
        let l = ls.query(&bad).unwrap_err().to_string();
        let p = ps.query(&bad).unwrap_err().to_string();
        assert_eq!(p, l, "error of {bad:?}");
    }
}
