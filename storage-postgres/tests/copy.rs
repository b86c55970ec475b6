//! `db copy` against a real PostgreSQL server: LMDB → PostgreSQL → LMDB gives a
//! byte-identical JSON lines export and the same info dicts and records
//! (discovery and last-seen times, sources, counts, kind, v2 hash, private,
//! source, piece data, files in order), for synthetic torrents and hostile ones
//! (NUL in names, sources and paths; no files; 10,000 files; a 64 KiB name; equal
//! discovery times in descending infohash order across batches). A second copy
//! stores nothing twice; PostgreSQL → LMDB → PostgreSQL gives the same rows; the
//! same database as source and target is recognised.

use magnetar_storage::synth::Synth;
use magnetar_storage::{FileEntry, HashKind, Op, Sources, Store, StoreOptions, TorrentInput};
use magnetar_storage_pg::copy::{copy, same_pg_database, Source, Target};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

const T0: u64 = 1_700_000_000;

fn server() -> TempPostgres {
    match TempPostgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL could not start: {e}"),
    }
}

fn hostile(s: &mut Synth) -> Vec<TorrentInput> {
    let mut out = Vec::new();
    // NUL in the name, the source and a path.
    let mut t = s.torrent(T0 + 5, true);
    t.name = "nul\0in the\0name".into();
    t.source = Some("src\0x".into());
    t.files[0].path = "dir\0a/b\0c.bin".into();
    out.push(t);
    // No files at all.
    let mut t = s.torrent(T0 + 6, false);
    t.files.clear();
    t.total_size = 0;
    out.push(t);
    // 10,000 files, in an order that is not sorted.
    let mut t = s.torrent(T0 + 7, true);
    t.files = (0..10_000u64)
        .map(|i| FileEntry {
            path: format!("many/{:05}/f.dat", (i * 7919) % 10_000),
            size: i,
        })
        .collect();
    t.total_size = t.files.iter().map(|f| f.size).sum();
    out.push(t);
    // A 64 KiB name of many words, with accents and CJK.
    let mut t = s.torrent(T0 + 8, false);
    t.name = (0..8_000)
        .map(|i| format!("w{i} "))
        .collect::<String>()
        .chars()
        .take(60_000)
        .collect::<String>()
        + " Épopée 日本語";
    out.push(t);
    // Private, with a v2 hash (hybrid) and a v2-only one.
    let mut t = s.torrent(T0 + 9, true);
    t.private = true;
    t.kind = HashKind::Hybrid;
    t.v2 = Some([0xab; 32]);
    out.push(t);
    let mut t = s.torrent(T0 + 9, true);
    t.kind = HashKind::V2;
    t.v2 = Some([0xcd; 32]);
    out.push(t);
    // Counts without a measurement time (stored before times were kept).
    let mut t = s.torrent(T0 + 10, false);
    t.seeders = Some(3);
    t.leechers = None;
    t.scraped_at = None;
    out.push(t);
    // Every source bit.
    let mut t = s.torrent(T0 + 11, false);
    t.sources = Sources(15);
    out.push(t);
    out
}

/// The source store: synthetic torrents in several batches (so doc ids of equal
/// discovery times are not in infohash order), hostile ones, sightings later than
/// discovery, scrapes.
fn source_store(dir: &std::path::Path) -> Store {
    let store = Store::open(StoreOptions::new(dir)).unwrap();
    let mut s = Synth::new(21);
    let mut all: Vec<TorrentInput> = (0..600)
        .map(|i| {
            let mut t = s.torrent(T0 + (i / 4) as u64, i % 3 == 0);
            if i % 5 == 0 {
                t.seeders = Some(i as u32);
                t.leechers = Some(1);
                t.scraped_at = Some(T0 + 10 + i as u64);
            }
            t
        })
        .collect();
    all.extend(hostile(&mut s));
    // Batches of one, in descending infohash order within each time: doc ids of
    // equal times run against infohash order (what a batch sorting by infohash
    // would undo).
    let mut order: Vec<&TorrentInput> = all.iter().collect();
    order.sort_by(|a, b| {
        a.discovered_at
            .cmp(&b.discovered_at)
            .then(b.infohash.cmp(&a.infohash))
    });
    for chunk in order.chunks(1).take(200) {
        store
            .apply_batch(&[Op::Torrent(Box::new(chunk[0].clone()))])
            .unwrap();
    }
    let rest: Vec<Op> = order[200..]
        .iter()
        .map(|t| Op::Torrent(Box::new((*t).clone())))
        .collect();
    for b in rest.chunks(97) {
        store.apply_batch(b).unwrap();
    }
    // Seen later, from other sources; scraped later.
    let later: Vec<Op> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 == 0)
        .map(|(i, t)| Op::Seen {
            infohash: t.infohash,
            at: t.discovered_at + 1000 + i as u64,
            sources: Sources::GET_PEERS,
            seeders: None,
            leechers: None,
        })
        .chain(
            all.iter()
                .enumerate()
                .filter(|(i, _)| i % 11 == 0)
                .map(|(i, t)| Op::Scrape {
                    infohash: t.infohash,
                    at: T0 + 5000 + i as u64,
                    seeders: 40 + i as u32,
                    leechers: 2,
                }),
        )
        .collect();
    store.apply_batch(&later).unwrap();
    store
}

fn export(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    store.export_jsonl(&mut out, None).unwrap();
    out
}

#[test]
fn lmdb_to_postgres_to_lmdb_is_lossless_and_copies_nothing_twice() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let a = source_store(&dir.path().join("a"));
    let ea = export(&a);
    let n = ea.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(n, 608);
    // The hostile ones are in the export as they are (NUL escaped by JSON).
    let text = String::from_utf8(ea.clone()).unwrap();
    assert!(text.contains("nul\\u0000in the\\u0000name"));
    assert!(text.contains("dir\\u0000a/b\\u0000c.bin"));

    let url = pg.create_database("p").unwrap();
    let mut p = PgStore::connect(&url, PgOptions::default()).unwrap();
    let mut calls = 0;
    let rep = copy(Source::Lmdb(&a), Target::Pg(&mut p), 50, |_| calls += 1).unwrap();
    assert_eq!((rep.read, rep.new, rep.updated, rep.skipped), (n, n, 0, 0));
    assert!(calls as u64 >= rep.batches && rep.batches >= n / 50);
    assert_eq!(p.count().unwrap(), n);
    // NUL kept exactly (the raw columns), and the text column is searchable.
    let nul: String = p
        .client()
        .query_one("SELECT name FROM torrents WHERE name_raw IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(nul, "nul\u{FFFD}in the\u{FFFD}name");
    // Again: nothing new, nothing twice.
    let again = copy(Source::Lmdb(&a), Target::Pg(&mut p), 50, |_| {}).unwrap();
    assert_eq!((again.read, again.new, again.updated), (n, 0, n));
    assert_eq!(p.count().unwrap(), n);
    let files: i64 = p
        .client()
        .query_one("SELECT count(*) FROM files", &[])
        .unwrap()
        .get(0);
    let files_a: usize = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["files"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(files as usize, files_a);

    // Back into a new LMDB store: the same export, byte for byte.
    let b = Store::open(StoreOptions::new(dir.path().join("b"))).unwrap();
    let rep = copy(Source::Pg(&mut p), Target::Lmdb(&b), 64, |_| {}).unwrap();
    assert_eq!((rep.read, rep.new, rep.skipped), (n, n, 0));
    let eb = export(&b);
    if ea != eb {
        let (la, lb): (Vec<&str>, Vec<&str>) = (
            std::str::from_utf8(&ea).unwrap().lines().collect(),
            std::str::from_utf8(&eb).unwrap().lines().collect(),
        );
        let first = la.iter().zip(&lb).position(|(x, y)| x != y);
        panic!(
            "exports differ ({} vs {} lines); first difference at line {first:?}:\n{}\n{}",
            la.len(),
            lb.len(),
            first
                .map_or("", |i| la[i])
                .chars()
                .take(400)
                .collect::<String>(),
            first
                .map_or("", |i| lb[i])
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
    // Records (last-seen, sources, piece data, private, source) and info dicts.
    let mut with_info = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ih = magnetar_storage::parse_infohash_hex(v["infohash"].as_str().unwrap()).unwrap();
        let (ta, tb) = (a.get(&ih).unwrap().unwrap(), b.get(&ih).unwrap().unwrap());
        assert_eq!(ta, tb);
        let (ia, ib) = (a.info_dict(&ih).unwrap(), b.info_dict(&ih).unwrap());
        assert_eq!(ia, ib);
        with_info += usize::from(ia.is_some());
        assert_eq!(p.info(&ih).unwrap(), ia);
    }
    assert!(with_info > 150, "{with_info}");

    // PostgreSQL → LMDB → PostgreSQL: the same rows, in the same order.
    let url_q = pg.create_database("q").unwrap();
    let mut q = PgStore::connect(&url_q, PgOptions::default()).unwrap();
    let rep = copy(Source::Lmdb(&b), Target::Pg(&mut q), 1000, |_| {}).unwrap();
    assert_eq!(rep.new, n);
    assert_eq!(p.all_torrents().unwrap(), q.all_torrents().unwrap());

    // The same database is recognised; another database on the same server is not.
    let mut p2 = PgStore::connect(&url, PgOptions::default()).unwrap();
    assert!(same_pg_database(&mut p, &mut p2).unwrap());
    assert!(!same_pg_database(&mut p, &mut q).unwrap());
}
