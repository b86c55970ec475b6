//! Classification facets through the public API: stored by the writer, answered by
//! `FacetFilter` queries (the posting-list path and the per-record path agree with
//! the stored facets of every torrent), `reclassify`.

use magnetar_storage::classify::ContentKind;
use magnetar_storage::synth::Synth;
use magnetar_storage::*;

fn open(dir: &tempfile::TempDir, classify: bool) -> Store {
    let mut o = StoreOptions::new(dir.path().join("db"));
    o.classify = classify;
    Store::open(o).unwrap()
}

fn fill(store: &Store, n: usize, seed: u64) -> Vec<TorrentInput> {
    let mut s = Synth::new(seed);
    let ts: Vec<TorrentInput> = (0..n)
        .map(|i| s.torrent(1_600_000_000 + i as u64, false))
        .collect();
    for chunk in ts.chunks(1_000) {
        let ops: Vec<Op> = chunk
            .iter()
            .cloned()
            .map(|t| Op::Torrent(Box::new(t)))
            .collect();
        store.apply_batch(&ops).unwrap();
    }
    ts
}

/// Every match of `q` (all pages), as infohashes.
fn all(store: &Store, q: &SearchQuery) -> Vec<InfoHash> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let r = store.query(&q.clone().page(off, MAX_SEARCH_LIMIT)).unwrap();
        assert!(!r.total_estimated);
        out.extend(r.hits.iter().map(|h| h.infohash));
        off += r.hits.len();
        if r.hits.is_empty() || off >= r.total {
            assert_eq!(out.len(), r.total, "{q:?}");
            break;
        }
    }
    out.sort_unstable();
    out
}

fn filter(cat: Option<&str>, attrs: &[(&str, &str)]) -> FacetFilter {
    FacetFilter {
        category: cat.map(str::to_string),
        attributes: attrs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

/// A filtered query returns exactly the unfiltered query's matches whose stored
/// facets pass the filter: for a word matching thousands of torrents (the filter's
/// posting lists are decoded) and for rarer words (each match's record is read), and
/// with no text at all (every torrent that passes).
#[test]
fn filtered_queries_equal_the_facets_of_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    let ts = fill(&store, 6_000, 7);
    let ihs: Vec<InfoHash> = ts.iter().map(|t| t.infohash).collect();
    let facets: std::collections::BTreeMap<InfoHash, Facets> = ihs
        .iter()
        .zip(store.facets_of(&ihs).unwrap())
        .map(|(ih, f)| (*ih, f.expect("every stored torrent is classified")))
        .collect();
    // The synthetic corpus spreads over several kinds.
    let kinds: std::collections::BTreeSet<ContentKind> =
        facets.values().map(|f| f.class.kind).collect();
    assert!(kinds.len() >= 5, "{kinds:?}");

    // Words from common to rare (the vocabulary is Zipf-like).
    let mut words: Vec<(usize, String)> = Vec::new();
    for t in ts.iter().step_by(300) {
        for w in tokenize(&t.name).take(2) {
            let n = store.query(&SearchQuery::new(&w)).unwrap().total;
            words.push((n, w));
        }
    }
    words.sort();
    words.dedup();
    assert!(
        words.iter().any(|(n, _)| *n > 1_000),
        "a word matching > 1,000"
    );
    assert!(words.iter().any(|(n, _)| *n < 100), "a rare word");
    let filters = [
        filter(Some("movie"), &[]),
        filter(Some("tv"), &[]),
        filter(Some("audio"), &[]),
        filter(Some("8000"), &[]),
        filter(Some("music,ebook"), &[]),
        filter(None, &[("resolution", "1080p")]),
        filter(Some("movies"), &[("year", "1990-2010")]),
        filter(None, &[("codec", "x265")]),
    ];
    let step = (words.len() / 6).max(1);
    let mut texts: Vec<String> = words.iter().step_by(step).map(|w| w.1.clone()).collect();
    texts.push(words.last().unwrap().1.clone());
    texts.push(String::new());
    let mut nonempty = 0;
    for text in &texts {
        let base = if text.is_empty() {
            let mut v = ihs.clone();
            v.sort_unstable();
            v
        } else {
            all(&store, &SearchQuery::new(text))
        };
        for f in &filters {
            let c = magnetar_storage_filter(f);
            let want: Vec<InfoHash> = base.iter().copied().filter(|ih| c(&facets[ih])).collect();
            let got = all(&store, &SearchQuery::new(text).facets(f.clone()));
            assert_eq!(got, want, "text {text:?}, filter {f:?}");
            nonempty += usize::from(!got.is_empty());
        }
    }
    assert!(nonempty > 10, "the filters select something: {nonempty}");
}

/// The filter's meaning, written again from the facets (the test's oracle).
fn magnetar_storage_filter(f: &FacetFilter) -> impl Fn(&Facets) -> bool + '_ {
    move |x: &Facets| {
        let c = &x.class;
        let cat_ok = match f.category.as_deref() {
            None => true,
            Some("movie") => c.kind == ContentKind::Movie,
            Some("tv") => x.category / 1000 == 5,
            Some("audio") => x.category / 1000 == 3,
            Some("8000") => x.category / 1000 == 8,
            Some("movies") => x.category / 1000 == 2,
            Some("music,ebook") => matches!(c.kind, ContentKind::Music | ContentKind::Ebook),
            Some(o) => panic!("oracle lacks {o}"),
        };
        cat_ok
            && f.attributes.iter().all(|(k, v)| match k.as_str() {
                "resolution" => c.resolution.map(|r| r.as_str()) == Some(v.as_str()),
                "year" => c.year.is_some_and(|y| (1990..=2010).contains(&y)),
                "codec" => c.video_codec.map(|r| r.as_str()) == Some("H.265"),
                o => panic!("oracle lacks {o}"),
            })
    }
}

/// A store written without classification has no facets; `reclassify` classifies
/// everything, reports counts per kind, and the filters then find the torrents.
/// Running it again changes nothing.
#[test]
fn reclassify_fills_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, false);
    let ts = fill(&store, 2_500, 3);
    assert_eq!(store.facets(&ts[0].infohash).unwrap(), None);
    let movies = || {
        store
            .query(&SearchQuery::new("").facets(filter(Some("movie"), &[])))
            .unwrap()
            .total
    };
    assert_eq!(movies(), 0);
    let rep = store.reclassify().unwrap();
    assert_eq!(rep.torrents, 2_500);
    assert_eq!(rep.changed, 0);
    assert_eq!(rep.per_kind.iter().map(|k| k.1).sum::<u64>(), 2_500);
    let want_movies = rep
        .per_kind
        .iter()
        .find(|k| k.0 == ContentKind::Movie)
        .map_or(0, |k| k.1);
    assert!(want_movies > 0);
    assert_eq!(movies() as u64, want_movies);
    let again = store.reclassify().unwrap();
    assert_eq!(again.per_kind, rep.per_kind);
    assert_eq!(again.changed, 0);
    assert_eq!(movies() as u64, want_movies);
    assert!(store.integrity_check().unwrap().is_ok());
}

/// Bad filters are refused with the known names; a query that is only a filter works.
#[test]
fn bad_filters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, true);
    fill(&store, 50, 1);
    for f in [
        filter(Some("films-of-the-80s"), &[]),
        filter(None, &[("year", "nineteen")]),
        filter(None, &[("colour", "red")]),
        filter(Some("12"), &[]),
    ] {
        let e = store
            .query(&SearchQuery::new("").facets(f.clone()))
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidQuery(_)), "{f:?}: {e}");
    }
    let e = store
        .query(&SearchQuery::new("").facets(filter(Some("nope"), &[])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("movie") && e.contains("2000"), "{e}");
    // No text and no filter is still nothing.
    assert_eq!(store.query(&SearchQuery::new("")).unwrap().total, 0);
}
