//! `magnetar search` and `recent` through the real binary: the query language,
//! every sort and direction, paging, the size and time filters, `--category` and
//! the attribute filters, clear errors for bad input, `recent --json`, the facets
//! in `--json`, `show` and `export`, and `reclassify`.

use std::path::Path;
use std::process::{Command, Stdio};

use magnetar_storage::{FileEntry, HashKind, Op, Sources, Store, StoreOptions, TorrentInput};

const BIN: &str = env!("CARGO_BIN_EXE_magnetar");
const GB: u64 = 1_000_000_000;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("MAGNETAR_DB")
        .output()
        .expect("run magnetar");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn torrent(n: u8, name: &str, files: &[(&str, u64)], at: u64, seeders: Option<u32>) -> Op {
    Op::Torrent(Box::new(TorrentInput {
        infohash: [n; 20],
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: files.iter().map(|f| f.1).sum(),
        piece_length: 1 << 20,
        piece_count: 1,
        private: false,
        source: None,
        files: files
            .iter()
            .map(|(p, s)| FileEntry {
                path: (*p).into(),
                size: *s,
            })
            .collect(),
        discovered_at: at,
        sources: Sources::SAMPLE,
        seeders,
        leechers: None,
        scraped_at: seeders.map(|_| at),
        info: None,
    }))
}

// 2021-01-01, 2022-01-01, 2023-01-01 (UTC).
const T1: u64 = 1_609_459_200;
const T2: u64 = 1_640_995_200;
const T3: u64 = 1_672_531_200;

fn populate(dir: &Path) {
    let store = Store::open(StoreOptions::new(dir)).unwrap();
    let parts: Vec<(String, u64)> = (0..12)
        .map(|i| (format!("Dune.Part.Two/p{i:02}.rar"), GB / 2))
        .collect();
    let parts: Vec<(&str, u64)> = parts.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    store
        .apply_batch(&[
            torrent(1, "Épopée Dune cam", &[("dune.mkv", 2 * GB)], T1, Some(50)),
            torrent(2, "日本語字幕 Dune", &[("a.srt", 10)], T2, None),
            torrent(3, "Dune Part Two 2160p", &parts, T3, Some(20)),
        ])
        .unwrap();
    drop(store);
    magnetar_storage::wait_closed(dir);
}

/// The names of `search --json` output lines, in order.
fn names(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["name"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn search_sorts_filters_pages_and_speaks_the_query_language() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path());
    let dbs = db.path().to_str().unwrap();
    let (e, j, d) = ("Épopée Dune cam", "日本語字幕 Dune", "Dune Part Two 2160p");
    let search = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["search", "--json", "--db", dbs];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&args);
        assert!(ok, "{extra:?}: {err}");
        names(&out)
    };
    let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(search(&["dune"]), n(&[d, j, e]));
    assert_eq!(search(&["dune", "--sort", "size"]), n(&[d, e, j]));
    assert_eq!(
        search(&["dune", "--sort", "size", "--order", "asc"]),
        n(&[j, e, d])
    );
    assert_eq!(search(&["dune", "--sort", "seeders"]), n(&[e, d, j]));
    assert_eq!(search(&["dune", "--sort", "files"]), n(&[d, j, e]));
    assert_eq!(
        search(&["dune", "--sort", "newest", "--order", "asc"]),
        n(&[e, j, d])
    );
    assert_eq!(
        search(&["dune", "--sort", "newest", "--offset", "1", "-n", "1"]),
        n(&[j])
    );
    assert_eq!(search(&["dune", "--min-size", "1GB"]), n(&[d, e]));
    assert_eq!(
        search(&["dune", "--min-size", "5.5GB", "--max-size", "6.5GB"]),
        n(&[d])
    );
    assert_eq!(search(&["dune", "--max-size", "1K"]), n(&[j]));
    assert_eq!(search(&["dune", "--since", "2021-06-01"]), n(&[d, j]));
    assert_eq!(
        search(&["dune", "--since", "2022-06-01", "--sort", "size"]),
        n(&[d])
    );
    // The query language, as one argument or after `--`.
    assert_eq!(search(&["dune -cam"]), n(&[d, j]));
    assert_eq!(search(&["--", "dune", "-cam", "-\"part two\""]), n(&[j]));
    assert_eq!(search(&["\"part two\""]), n(&[d]));
    assert_eq!(search(&["path:rar"]), n(&[d]));
    assert_eq!(search(&["name:rar"]), n(&[]));
    assert_eq!(search(&["epopee"]), n(&[e]));
    assert_eq!(search(&["語"]), n(&[j]));
    // The table form says how many matched in all.
    let (ok, _, err) = run(&["search", "dune", "-n", "1", "--db", dbs]);
    assert!(ok && err.contains("1 of 3 match"), "{err}");
}

#[test]
fn search_refuses_bad_input_and_categories_clearly() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path());
    let dbs = db.path().to_str().unwrap();
    let fails = |args: &[&str], want: &[&str]| {
        let mut a = vec!["search", "--db", dbs];
        a.extend_from_slice(args);
        let (ok, out, err) = run(&a);
        assert!(!ok, "{args:?} succeeded: {out}");
        for w in want {
            assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
        }
    };
    fails(
        &["dune", "--category", "flicks"],
        &["unknown category \"flicks\"", "movie", "2000"],
    );
    fails(&["dune", "--year", "soon"], &["year \"soon\""]);
    fails(
        &["dune", "--min-size", "12XB"],
        &["--min-size 12XB", "700MB"],
    );
    fails(
        &["dune", "--min-size", "2GB", "--max-size", "1GB"],
        &["minimum size"],
    );
    fails(&["dune", "--since", "yesterday"], &["--since yesterday"]);
    fails(
        &["dune", "--offset", "100001"],
        &["offset 100001", "100000"],
    );
    fails(&["dune", "--sort", "name"], &["invalid value 'name'"]);
    fails(&[&"x".repeat(600)], &["600 bytes", "512"]);
    fails(&["--", "-dune"], &["at least one word"]);
}

/// Categories and attributes filter; `--json`, `show` and `export` print the facets;
/// `reclassify` counts per kind, and is refused while another process holds the
/// database.
#[test]
fn categories_filter_and_facets_are_printed() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path());
    let dbs = db.path().to_str().unwrap();
    let (e, j, d) = ("Épopée Dune cam", "日本語字幕 Dune", "Dune Part Two 2160p");
    let search = |extra: &[&str]| -> (Vec<String>, Vec<serde_json::Value>) {
        let mut args = vec!["search", "--json", "--db", dbs];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&args);
        assert!(ok, "{extra:?}: {err}");
        let facets = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["facets"].clone())
            .collect();
        (names(&out), facets)
    };
    let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (all, facets) = search(&["dune"]);
    assert_eq!(all, n(&[d, j, e]));
    assert_eq!(facets[2]["kind"], "movie");
    assert_eq!(facets[2]["source"], "Camera");
    assert_eq!(facets[0]["resolution"], "2160p");
    assert_eq!(search(&["dune", "--category", "movie"]).0, n(&[e]));
    assert_eq!(search(&["dune", "--category", "2000"]).0, n(&[e]));
    assert_eq!(search(&["dune", "--resolution", "2160p"]).0, n(&[d]));
    // Without words: every torrent of the category.
    assert_eq!(search(&["--category", "movies"]).0, n(&[e]));
    let (ok, out, err) = run(&[
        "show",
        "0101010101010101010101010101010101010101",
        "--db",
        dbs,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("kind:          movie (Torznab 2000 Movies)"),
        "{out}"
    );
    assert!(out.contains("source:      Camera"), "{out}");
    let (ok, out, err) = run(&["export", "--db", dbs]);
    assert!(ok, "{err}");
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["facets"]["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[0], "movie");

    // reclassify: counts per kind (stdout), a summary (stderr).
    let (ok, out, err) = run(&["reclassify", "--db", dbs]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.trim() == "1  movie"), "{out}");
    let total: u64 = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 3, "{out}");
    assert!(
        err.contains("classified 3 torrent(s)") && err.contains("0 changed"),
        "{err}"
    );
    // Refused while another process holds the database (as under a crawler).
    let lock = magnetar_storage::DbLock::acquire(db.path(), "crawl").unwrap();
    let (ok, _, err) = run(&["reclassify", "--db", dbs]);
    assert!(!ok);
    assert!(err.contains("in use by process"), "{err}");
    drop(lock);
    let (ok, _, err) = run(&["reclassify", "--db", "/nonexistent/magnetar-db"]);
    assert!(!ok && err.contains("no magnetar database"), "{err}");
}

#[test]
fn recent_speaks_json_as_search_does() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path());
    let dbs = db.path().to_str().unwrap();
    let (ok, out, err) = run(&["recent", "-n", "2", "--json", "--db", dbs]);
    assert!(ok, "{err}");
    assert_eq!(names(&out), vec!["Dune Part Two 2160p", "日本語字幕 Dune"]);
    let (ok, sout, _) = run(&["search", "part two", "--json", "--db", dbs]);
    assert!(ok);
    // The same fields, apart from the ages computed at print time.
    let strip = |l: &str| {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v.as_object_mut().unwrap().remove("scrape_age_secs");
        v
    };
    assert_eq!(
        strip(out.lines().next().unwrap()),
        strip(sout.lines().next().unwrap())
    );
}
