//! Unit tests of the environment (schema migration and refusal), `ids_delta` merges,
//! corrupt records and the intersection of posting lists.

use super::search::intersect;
use super::*;
use crate::types::*;

fn t(n: u8, name: &str) -> Op {
    torrent([n; 20], u64::from(n), name, "f.txt")
}

/// A torrent `name` with one file `name/file`, of `ih`, discovered at `at`.
fn torrent(ih: [u8; 20], at: u64, name: &str, file: &str) -> Op {
    Op::Torrent(Box::new(TorrentInput {
        infohash: ih,
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: 1,
        piece_length: 1,
        piece_count: 1,
        private: false,
        source: Some("SRC".into()),
        files: vec![FileEntry {
            path: format!("{name}/{file}"),
            size: 1,
        }],
        discovered_at: at,
        sources: Sources::SAMPLE,
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: None,
    }))
}

/// Each group's facets are its own first torrent's, in group order, in small
/// and large batches with repeated infohashes.
#[test]
fn facets_line_up_with_groups_in_small_and_large_batches() {
    use super::prepare::{sorted_torrents, PreparedBatch};
    for n in [10u16, 768] {
        // Names that classify differently (a year and an episode per torrent);
        // every seventh infohash comes twice (a later copy, not classified).
        let mut ops = Vec::new();
        for i in 0..n {
            let name = if i % 2 == 0 {
                format!("Film {i} {} 1080p BluRay x264", 1900 + i % 120)
            } else {
                format!("Show {i} S{:02}E{:02} 720p WEB-DL", i % 30 + 1, i % 90 + 1)
            };
            let mut ih = [0u8; 20];
            ih[..2].copy_from_slice(&(n - i).to_be_bytes());
            ops.push(torrent(ih, 10, &name, "video.mkv"));
            if i % 7 == 0 {
                ops.push(torrent(ih, 20, &format!("later copy {i}"), "video.mkv"));
            }
        }
        let b = PreparedBatch::new_classified(ops.clone(), true);
        let ts = sorted_torrents(&b.ops, &b.order);
        let mut want = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            if i == 0 || ts[i - 1].infohash != t.infohash {
                want.push(super::facets::Facets::of_torrent(&t.name, &t.files));
            }
        }
        assert_eq!(want.len(), usize::from(n));
        assert_eq!(b.tokens.facets, want, "batch of {n}");
        // They differ from torrent to torrent: a shifted list would not match.
        let years: std::collections::BTreeSet<_> =
            want.iter().filter_map(|f| f.class.year).collect();
        assert!(years.len() >= 5, "{years:?}");
        assert!(PreparedBatch::new_classified(ops, false)
            .tokens
            .facets
            .is_empty());
    }
}

#[test]
fn schema_2_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    store.apply_batch(&[t(1, "kept")]).unwrap();
    // A schema 2 database: version 2, no `ids_delta` (its entry moved to `ids`).
    store
        .write(|txn, dbs| {
            merge_ids_delta(txn, dbs, Some(0))?;
            dbs.meta
                .put(txn, K_SCHEMA, &2u32.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    let in_ids = store
        .read(|txn, dbs| Ok((dbs.ids.len(txn).unwrap(), dbs.ids_delta.len(txn).unwrap())))
        .unwrap();
    assert_eq!(in_ids, (1, 0));
    drop(store);
    wait_closed(&opts.path);
    let store = Store::open(opts).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.get(&[1; 20]).unwrap().unwrap().record.name, "kept");
    store.apply_batch(&[t(1, "kept"), t(2, "new")]).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    assert!(store.integrity_check().unwrap().is_ok());
}

/// A schema 3 database, whose `torrents` values are layout 2 (no scrape time, no
/// v2 hash) and which has no `ids_v2` entries, opens as schema 4 without losing a
/// field; its records take scrapes and hybrids afterwards.
#[test]
fn schema_3_is_migrated_on_open_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    let Op::Torrent(mut old) = t(1, "kept") else {
        unreachable!()
    };
    old.seeders = Some(7);
    old.leechers = Some(3);
    store.apply_batch(&[Op::Torrent(old)]).unwrap();
    // Rewrite the record as schema 3 wrote it: layout 2, byte for byte.
    let docid = store
        .read(|txn, dbs| docid_of(txn, dbs, &[1; 20]))
        .unwrap()
        .unwrap();
    let mut v2rec = vec![2u8, 2 | 4, Sources::SAMPLE.0];
    v2rec.extend_from_slice(&[1; 20]);
    v2rec.extend_from_slice(&1u64.to_le_bytes()); // total_size
    v2rec.extend_from_slice(&1u32.to_le_bytes()); // piece_length
    v2rec.extend_from_slice(&1u32.to_le_bytes()); // piece_count
    v2rec.extend_from_slice(&1u32.to_le_bytes()); // file_count
    v2rec.extend_from_slice(&1u64.to_le_bytes()); // discovered_at
    v2rec.extend_from_slice(&1u64.to_le_bytes()); // last_seen_at
    v2rec.extend_from_slice(&7u32.to_le_bytes());
    v2rec.extend_from_slice(&3u32.to_le_bytes());
    v2rec.extend_from_slice(b"\x04kept\x03SRC");
    store
        .write(|txn, dbs| {
            dbs.torrents
                .put(txn, &codec::docid_key(docid), &v2rec)
                .map_err(lmdb("test"))?;
            // `info` was not kept by this fixture; the flag above says it was.
            dbs.info
                .put(txn, &codec::docid_key(docid), b"d4:name4:kepte")
                .map_err(lmdb("test"))?;
            put_u64(txn, &dbs.meta, K_WITH_INFO, 1)?;
            dbs.meta
                .put(txn, K_SCHEMA, &3u32.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
    let store = Store::open(opts).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.integrity_check().unwrap().is_ok());
    let r = store.get(&[1; 20]).unwrap().unwrap().record;
    assert_eq!(
        (r.name.as_str(), r.source.as_deref(), r.has_info),
        ("kept", Some("SRC"), true)
    );
    assert_eq!(
        (r.seeders, r.leechers, r.scraped_at),
        (Some(7), Some(3), None)
    );
    assert_eq!((r.kind, r.v2), (HashKind::V1, None));
    // A dated scrape replaces counts of unknown age; the record is rewritten as
    // layout 3 and keeps everything else.
    store
        .apply_batch(&[Op::Scrape {
            infohash: [1; 20],
            at: 500,
            seeders: 9,
            leechers: 4,
        }])
        .unwrap();
    let r2 = store.get(&[1; 20]).unwrap().unwrap().record;
    assert_eq!(
        (r2.seeders, r2.leechers, r2.scraped_at),
        (Some(9), Some(4), Some(500))
    );
    assert_eq!((r2.name, r2.source, r2.has_info), (r.name, r.source, true));
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn ids_delta_merges_keep_every_lookup_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::new(dir.path().join("db"));
    opts.ids_delta_max = Some(60);
    let store = Store::open(opts).unwrap();
    let mut synth = crate::synth::Synth::new(5);
    let mut all = Vec::new();
    let mut merges = 0;
    let mut last_delta = 0;
    for b in 0..40u64 {
        let mut ops: Vec<Op> = (0..25)
            .map(|i| Op::Torrent(Box::new(synth.torrent(1000 + b * 100 + i, false))))
            .collect();
        // Repeats of earlier torrents, wherever their ids entry now is.
        for old in all.iter().step_by(7).take(10) {
            ops.push(Op::Torrent(Box::new(Clone::clone(old))));
        }
        for o in &ops[..25] {
            if let Op::Torrent(t) = o {
                all.push((**t).clone());
            }
        }
        let rep = store.apply_batch(&ops).unwrap();
        assert_eq!(rep.torrents_new, 25, "batch {b}");
        let delta = store
            .read(|txn, dbs| Ok(dbs.ids_delta.len(txn).unwrap()))
            .unwrap();
        if delta < last_delta {
            merges += 1;
        }
        last_delta = delta;
    }
    assert!(merges >= 3, "only {merges} merges");
    assert_eq!(store.count().unwrap(), all.len() as u64);
    for t in &all {
        let got = store.get(&t.infohash).unwrap().unwrap();
        assert_eq!(got.record.name, t.name);
    }
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn other_schema_version_is_refused_with_a_clear_message() {
    // Schema 1 (torrents keyed by infohash, before doc id keyed tables) is the real
    // older version; 99 stands for a newer one.
    for old in [1u32, 99] {
        refused_with_a_clear_message(old);
    }
}

fn refused_with_a_clear_message(old: u32) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    store.apply_batch(&[t(1, "kept")]).unwrap();
    store
        .write(|txn, dbs| {
            dbs.meta
                .put(txn, K_SCHEMA, &old.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
    let err = Store::open(opts.clone()).unwrap_err();
    assert!(matches!(
        err,
        StoreError::SchemaVersion {
            found,
            supported: SCHEMA_VERSION,
            ..
        } if found == old
    ));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema version {old},"))
            && msg.contains(&format!("supports schema version {SCHEMA_VERSION}"))
            && msg.contains(&format!("no migration from {old}"))
            && msg.contains("export JSON lines"),
        "{msg}"
    );
    wait_closed(&opts.path);
    // Nothing was changed: restoring the version gives the data back.
    let env = open_env(&opts).unwrap();
    let rtxn = env.read_txn().unwrap();
    let meta: Db = env
        .open_databases_and_commit(rtxn, |o, r| {
            o.open_database::<Bytes, Bytes>(r, Some("meta"))
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let mut w = env.write_txn().unwrap();
    meta.put(&mut w, K_SCHEMA, &SCHEMA_VERSION.to_le_bytes())
        .unwrap();
    w.commit().unwrap();
    env.prepare_for_closing().wait();
    let store = Store::open(opts).unwrap();
    assert_eq!(store.get(&[1; 20]).unwrap().unwrap().record.name, "kept");
}

#[test]
fn corrupt_records_are_errors_or_counted_skips_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
    store
        .apply_batch(&[t(1, "alpha one"), t(2, "alpha two"), t(3, "alpha three")])
        .unwrap();
    // Damage torrent 2's record and torrent 3's file list.
    store
        .write(|txn, dbs| {
            // Doc ids follow discovery order: torrent n has doc id n - 1.
            dbs.torrents
                .put(txn, &codec::docid_key(1), &[2, 0, 0])
                .map_err(lmdb("test"))?;
            dbs.files
                .put(txn, &codec::docid_key(2), &[1, 200])
                .map_err(lmdb("test"))
        })
        .unwrap();
    assert!(matches!(
        store.get(&[2; 20]),
        Err(StoreError::Corrupt { db: "torrents", .. })
    ));
    assert!(matches!(
        store.get(&[3; 20]),
        Err(StoreError::Corrupt { db: "files", .. })
    ));
    let r = store.search("alpha", 10, 0, Order::Relevance).unwrap();
    assert_eq!(r.total, 3);
    assert_eq!(r.hits.len(), 2);
    assert_eq!(r.skipped_corrupt, 1);
    assert_eq!(store.recent(10).unwrap().len(), 2);
    let rep = store.integrity_check().unwrap();
    assert!(!rep.is_ok());
    assert!(
        rep.problems.iter().any(|p| p.contains("truncated")),
        "{:?}",
        rep.problems
    );
    // Writing the damaged torrent again leaves it alone and counts it.
    let b = store
        .apply_batch(&[t(2, "alpha two"), t(1, "alpha one")])
        .unwrap();
    assert_eq!((b.skipped_corrupt, b.torrents_updated), (1, 1));
    let mut out = Vec::new();
    let e = store.export_jsonl(&mut out, None).unwrap();
    assert_eq!((e.torrents, e.skipped_corrupt), (1, 2));
}

#[test]
fn intersect_gallops_correctly() {
    // Raw postings: docid << 2 | flags (1 in name, 2 in a path).
    let a: Vec<u32> = (0..1000).map(|d| (d << 2) | 2).collect();
    let b: Vec<u32> = (0..1000)
        .filter(|d| d % 7 == 0)
        .map(|d| (d << 2) | 3)
        .collect();
    let c: Vec<u32> = (0..1000)
        .filter(|d| d % 3 == 0)
        .map(|d| (d << 2) | 2)
        .collect();
    let r = intersect(vec![a, b, c]);
    let want: Vec<(u32, u32)> = (0..1000).filter(|d| d % 21 == 0).map(|d| (d, 1)).collect();
    assert_eq!(r, want);
}

/// The tokenizer of schemas 2 to 4: maximal alphanumeric runs, `str::to_lowercase`,
/// cut at 64 bytes; no folding, no bigrams.
fn old_terms(name: &str, files: &[FileEntry]) -> Vec<(String, bool)> {
    let norm = |w: &str| {
        let mut t = w.to_lowercase();
        let mut cut = t.len().min(64);
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t
    };
    let mut v: Vec<(String, bool)> = Vec::new();
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(norm)
            .collect()
    };
    v.extend(split(name).into_iter().map(|w| (w, true)));
    for f in files {
        v.extend(split(&f.path).into_iter().map(|w| (w, false)));
    }
    v.sort();
    // (w, false) sorts before (w, true): keep the last of each run.
    let mut out: Vec<(String, bool)> = Vec::new();
    for (w, n) in v {
        match out.last_mut() {
            Some(l) if l.0 == w => l.1 |= n,
            _ => out.push((w, n)),
        }
    }
    out
}

/// A schema-4 posting block: `(delta << 1) | in_name` varints.
fn old_block(postings: &[(u32, bool)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&postings[0].0.to_be_bytes());
    b.extend_from_slice(&postings[postings.len() - 1].0.to_le_bytes());
    let mut prev = postings[0].0;
    for &(d, n) in postings {
        let mut v = (u64::from(d - prev) << 1) | u64::from(n);
        prev = d;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                b.push(byte);
                break;
            }
            b.push(byte | 0x80);
        }
    }
    b
}

/// Turns the store at `opts` into a schema 4 database: `terms` as the old tokenizer
/// and posting layout made them, version 4.
fn downgrade_to_schema_4(opts: &StoreOptions) {
    let store = Store::open(opts.clone()).unwrap();
    store
        .write(|txn, dbs| {
            let mut per_term: std::collections::BTreeMap<String, Vec<(u32, bool)>> =
                Default::default();
            let docs: Vec<(u32, String, Vec<FileEntry>)> = dbs
                .torrents
                .iter(txn)
                .map_err(lmdb("test"))?
                .map(|r| {
                    let (k, v) = r.unwrap();
                    let d = codec::docid_from(k).unwrap();
                    let st = codec::decode_torrent(d, v).unwrap();
                    let f = codec::decode_files(dbs.files.get(txn, k).unwrap().unwrap()).unwrap();
                    (d, st.rec.name, f)
                })
                .collect();
            for (d, name, files) in docs {
                for (t, n) in old_terms(&name, &files) {
                    per_term.entry(t).or_default().push((d, n));
                }
            }
            dbs.terms.clear(txn).map_err(lmdb("test"))?;
            for (t, ps) in per_term {
                dbs.terms
                    .put(txn, t.as_bytes(), &old_block(&ps))
                    .map_err(lmdb("test"))?;
            }
            dbs.meta
                .put(txn, K_SCHEMA, &4u32.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
}

fn named(n: u8, name: &str, path: &str) -> Op {
    let Op::Torrent(mut t) = t(n, name) else {
        unreachable!()
    };
    t.files = vec![FileEntry {
        path: path.into(),
        size: 5,
    }];
    Op::Torrent(t)
}

/// A schema 4 database (built here with the old tokenizer and posting layout) is
/// upgraded on open: `terms` is rebuilt, so accent folding, bigrams and the path
/// flag work on what was stored before; nothing else changes. An upgrade cut short
/// before its commit leaves the schema 4 database as it was, and the next open
/// finishes it.
#[test]
fn schema_4_terms_are_rebuilt_on_open_and_an_interrupted_upgrade_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    store
        .apply_batch(&[
            named(1, "Épopée Finale", "extras/making of.mkv"),
            named(2, "日本語字幕 collection", "x/ÉTÉ.srt"),
            named(3, "plain words", "plain/words.txt"),
        ])
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
    downgrade_to_schema_4(&opts);
    // The fixture really is the old index: "Épopée" is indexed unfolded.
    let raw = |opts: &StoreOptions| {
        let env = open_env(opts).unwrap();
        let rtxn = env.read_txn().unwrap();
        let (terms, meta): (Db, Db) = env
            .open_databases_and_commit(rtxn, |o, r| {
                let t = o.open_database::<Bytes, Bytes>(r, Some("terms"))?;
                let m = o.open_database::<Bytes, Bytes>(r, Some("meta"))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((t.unwrap(), m.unwrap())))
            })
            .unwrap()
            .unwrap_commit();
        let rtxn = env.read_txn().unwrap();
        let keys: Vec<String> = terms
            .iter(&rtxn)
            .unwrap()
            .map(|r| String::from_utf8(r.unwrap().0.to_vec()).unwrap())
            .collect();
        let v = meta.get(&rtxn, K_SCHEMA).unwrap().unwrap().to_vec();
        drop(rtxn);
        env.prepare_for_closing().wait();
        (keys, v)
    };
    let (old_keys, v) = raw(&opts);
    assert!(old_keys.contains(&"épopée".to_string()));
    assert!(old_keys.contains(&"日本語字幕".to_string()));
    assert_eq!(v, 4u32.to_le_bytes());

    // Another process holds the database (an older crawler, say): no upgrade.
    // flock(1) holds the lock while its shell waits for a line on stdin.
    let mut holder = std::process::Command::new("flock")
        .arg(opts.path.join(crate::LOCK_FILE))
        .args(["-c", "read x"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let held = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        matches!(crate::DbLock::holder(&opts.path), Ok(Some(_)))
    });
    if held {
        let e = Store::open(opts.clone()).unwrap_err().to_string();
        assert!(
            e.contains("must be upgraded") && e.contains("stop that process"),
            "{e}"
        );
        wait_closed(&opts.path);
    }
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(held, "the flock(1) child never took the lock");
    assert_eq!(raw(&opts).1, 4u32.to_le_bytes().to_vec());

    // Interrupted: the open fails, and the database is still the schema 4 one.
    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(true));
    let e = Store::open(opts.clone()).unwrap_err();
    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(false));
    assert!(e.to_string().contains("upgrade interrupted"), "{e}");
    wait_closed(&opts.path);
    assert_eq!(raw(&opts), (old_keys, 4u32.to_le_bytes().to_vec()));

    // Upgraded.
    let store = Store::open(opts.clone()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.count().unwrap(), 3);
    let rep = store.integrity_check().unwrap();
    assert!(rep.is_ok(), "{rep:?}");
    let s = |q: &str| -> Vec<String> {
        store
            .query(&SearchQuery::new(q))
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.name)
            .collect()
    };
    assert_eq!(s("epopee"), vec!["Épopée Finale"]);
    assert_eq!(s("語"), vec!["日本語字幕 collection"]);
    assert_eq!(s("字幕"), vec!["日本語字幕 collection"]);
    assert_eq!(s("path:ete"), vec!["日本語字幕 collection"]);
    assert_eq!(s("name:ete"), Vec::<String>::new());
    assert_eq!(s("\"making of\""), vec!["Épopée Finale"]);
    assert_eq!(s("plain"), vec!["plain words"]);
    // The records are untouched, and new writes index alongside.
    assert_eq!(
        store.get(&[3; 20]).unwrap().unwrap().record.name,
        "plain words"
    );
    store
        .apply_batch(&[named(4, "Épopée two", "a.txt")])
        .unwrap();
    assert_eq!(s("épopée").len(), 2);
    assert!(store.integrity_check().unwrap().is_ok());
}

/// A torrent with the given search fields, discovered at `at`.
fn sized(n: u32, name: &str, path: &str, size: u64, files: usize, at: u64) -> Op {
    let mut ih = [0u8; 20];
    ih[..4].copy_from_slice(&n.to_be_bytes());
    ih[19] = 0x5e;
    Op::Torrent(Box::new(TorrentInput {
        infohash: ih,
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: size,
        piece_length: 1,
        piece_count: 1,
        private: false,
        source: None,
        files: (0..files)
            .map(|i| FileEntry {
                path: format!("{path} {i}"),
                size: 1,
            })
            .collect(),
        discovered_at: at,
        sources: Sources::SAMPLE,
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: None,
    }))
}

/// The `columns` entries of every stored torrent, read back, against its record.
fn columns_agree(store: &Store) -> usize {
    store
        .read(|txn, dbs| {
            let mut n = 0;
            for r in dbs.torrents.iter(txn).map_err(lmdb("test"))? {
                let (k, v) = r.map_err(lmdb("test"))?;
                let d = codec::docid_from(k).unwrap();
                let want = codec::torrent_sort_fields(v).unwrap();
                assert_eq!(columns::get(txn, dbs, d)?, Some(want), "doc {d}");
                n += 1;
            }
            assert_eq!(columns::count(txn, dbs)?, (n as u64, 0));
            // `by_seeders` lists exactly the entries with known seeders.
            let problems = columns::check_seeders(txn, dbs)?;
            assert!(problems.is_empty(), "{problems:?}");
            Ok(n)
        })
        .unwrap()
}

/// The writer keeps `columns` in step with `torrents`: new torrents, repeats, late
/// sightings and scrapes that change the seeders (newer wins, older is ignored);
/// `remove` drops an entry (and an emptied chunk); the integrity check notices an
/// entry out of step.
#[test]
fn columns_stay_in_step_with_counts_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
    let ops: Vec<Op> = (0..600u32)
        .map(|i| {
            sized(
                i,
                &format!("w{} x", i % 7),
                "p",
                u64::from(i) * 1000,
                1 + i as usize % 4,
                100 + u64::from(i),
            )
        })
        .collect();
    store.apply_batch(&ops).unwrap();
    assert_eq!(columns_agree(&store), 600);
    let ih = |i: u32| {
        let mut ih = [0u8; 20];
        ih[..4].copy_from_slice(&i.to_be_bytes());
        ih[19] = 0x5e;
        ih
    };
    let scrape = |i: u32, s: u32, at: u64| Op::Scrape {
        infohash: ih(i),
        at,
        seeders: s,
        leechers: 1,
    };
    // Scrapes (one torrent twice in a batch: the later wins), an older scrape that
    // must not win, and a sighting with counts.
    store
        .apply_batch(&[
            scrape(3, 50, 1_000),
            scrape(3, 60, 1_001),
            scrape(150, 7, 1_000),
        ])
        .unwrap();
    store.apply_batch(&[scrape(3, 1, 999)]).unwrap();
    store
        .apply_batch(&[Op::Seen {
            infohash: ih(4),
            at: 2_000,
            sources: Sources::SAMPLE,
            seeders: Some(9),
            leechers: None,
        }])
        .unwrap();
    assert_eq!(columns_agree(&store), 600);
    let seeders = |i: u32| {
        store
            .read(|txn, dbs| {
                let d = docid_of(txn, dbs, &ih(i))?.unwrap();
                Ok(columns::get(txn, dbs, d)?.unwrap().seeders)
            })
            .unwrap()
    };
    assert_eq!(
        (seeders(3), seeders(4), seeders(150), seeders(5)),
        (Some(60), Some(9), Some(7), None)
    );
    let top = store
        .query(&SearchQuery::new("x").sort(SortBy::Seeders).page(0, 3))
        .unwrap();
    let names: Vec<u64> = top.hits.iter().map(|h| h.total_size / 1000).collect();
    assert_eq!(names, vec![3, 4, 150]);
    // A repeat of a stored torrent in a new batch rewrites its record and entry.
    store
        .apply_batch(&[sized(7, "w0 x", "p", 7000, 2, 5_000)])
        .unwrap();
    assert_eq!(columns_agree(&store), 600);
    assert!(store.integrity_check().unwrap().is_ok());

    // Removal (what deleting a torrent must do): entries go, an emptied chunk too
    // (doc ids 504 to 599 are the second chunk).
    store
        .write(|txn, dbs| {
            for d in 504..600 {
                columns::remove(txn, dbs, d)?;
            }
            columns::remove(txn, dbs, 100)
        })
        .unwrap();
    store
        .read(|txn, dbs| {
            assert_eq!(columns::get(txn, dbs, 100)?, None);
            assert!(columns::get(txn, dbs, 101)?.is_some());
            assert!(dbs.columns.get(txn, &0u32.to_be_bytes()).unwrap().is_some());
            assert_eq!(dbs.columns.get(txn, &1u32.to_be_bytes()).unwrap(), None);
            assert_eq!(columns::count(txn, dbs)?, (600 - 97, 0));
            Ok(())
        })
        .unwrap();
    // The integrity check reports the torrents whose entries are gone.
    let rep = store.integrity_check().unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.contains("columns entry disagrees"))
            && rep
                .problems
                .iter()
                .any(|p| p.contains("columns has 503 entries")),
        "{rep:?}"
    );
    // Rebuilt from `torrents`, it agrees again.
    store.write(columns::rebuild).unwrap();
    assert_eq!(columns_agree(&store), 600);
    assert!(store.integrity_check().unwrap().is_ok());
}

/// Turns the store at `opts` into a schema 5 database: no `columns` entries, version 5.
/// The stored schema version and the entry count of `table`, read straight from
/// the environment (no migration).
fn schema_and_entries(opts: &StoreOptions, table: &str) -> (Vec<u8>, u64) {
    let env = open_env(opts).unwrap();
    let rtxn = env.read_txn().unwrap();
    let (t, meta): (Db, Db) = env
        .open_databases_and_commit(rtxn, |o, r| {
            let c = o.open_database::<Bytes, Bytes>(r, Some(table))?;
            let m = o.open_database::<Bytes, Bytes>(r, Some("meta"))?;
            Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((c.unwrap(), m.unwrap())))
        })
        .unwrap()
        .unwrap_commit();
    let rtxn = env.read_txn().unwrap();
    let n = t.len(&rtxn).unwrap();
    let v = meta.get(&rtxn, K_SCHEMA).unwrap().unwrap().to_vec();
    drop(rtxn);
    env.prepare_for_closing().wait();
    (v, n)
}

fn downgrade_to_schema_5(opts: &StoreOptions) {
    let store = Store::open(opts.clone()).unwrap();
    store
        .write(|txn, dbs| {
            dbs.columns.clear(txn).map_err(lmdb("test"))?;
            dbs.meta
                .put(txn, K_SCHEMA, &5u32.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
}

/// A schema 5 database (no `columns`) is upgraded on open: `columns` is filled from
/// the records, so sorts by seeders and files and size filters answer from it; an
/// upgrade cut short before its commit leaves the schema 5 database as it was.
#[test]
fn schema_5_gets_its_columns_on_open_and_an_interrupted_upgrade_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    let ops: Vec<Op> = (0..300u32)
        .map(|i| {
            sized(
                i,
                "same words",
                "p",
                u64::from(i % 37) * 1000,
                1 + i as usize % 5,
                10 + u64::from(i),
            )
        })
        .collect();
    store.apply_batch(&ops).unwrap();
    let want = |store: &Store, mode: usize| {
        store.set_order_mode(mode);
        let mut out = Vec::new();
        for sort in [SortBy::Files, SortBy::Size, SortBy::Seeders] {
            let r = store
                .query(
                    &SearchQuery::new("same")
                        .sort(sort)
                        .size_range(Some(5_000), Some(30_000))
                        .page(3, 40),
                )
                .unwrap();
            out.push((
                r.total,
                r.skipped_corrupt,
                r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>(),
            ));
        }
        store.set_order_mode(0);
        out
    };
    let before = want(&store, 1);
    assert_eq!(before, want(&store, 0));
    drop(store);
    wait_closed(&opts.path);
    downgrade_to_schema_5(&opts);
    let version_and_entries = |opts: &StoreOptions| schema_and_entries(opts, "columns");
    assert_eq!(version_and_entries(&opts), (5u32.to_le_bytes().to_vec(), 0));

    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(true));
    let e = Store::open(opts.clone()).unwrap_err();
    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(false));
    assert!(e.to_string().contains("upgrade interrupted"), "{e}");
    wait_closed(&opts.path);
    assert_eq!(version_and_entries(&opts), (5u32.to_le_bytes().to_vec(), 0));

    let store = Store::open(opts.clone()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(columns_agree(&store), 300);
    assert!(store.integrity_check().unwrap().is_ok());
    assert_eq!(want(&store, 0), before);
    drop(store);
    wait_closed(&opts.path);
    // 300 doc ids: one chunk.
    assert_eq!(
        version_and_entries(&opts),
        (SCHEMA_VERSION.to_le_bytes().to_vec(), 1)
    );
}

/// Turns the store at `opts` into a schema 6 database: no `by_seeders`, version 6.
fn downgrade_to_schema_6(opts: &StoreOptions) {
    let store = Store::open(opts.clone()).unwrap();
    store
        .write(|txn, dbs| {
            dbs.by_seeders.clear(txn).map_err(lmdb("test"))?;
            dbs.meta
                .put(txn, K_SCHEMA, &6u32.to_le_bytes())
                .map_err(lmdb("test"))
        })
        .unwrap();
    drop(store);
    wait_closed(&opts.path);
}

/// A schema 6 database (no `by_seeders`) is upgraded on open: `by_seeders` is filled
/// from `columns` (every torrent with known seeders, none other), so seeders sorts
/// walk it and answer as before; an upgrade cut short before its commit leaves the
/// schema 6 database as it was.
#[test]
fn schema_6_gets_its_seeders_order_on_open_and_an_interrupted_upgrade_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let store = Store::open(opts.clone()).unwrap();
    let ops: Vec<Op> = (0..700u32)
        .map(|i| {
            let mut op = sized(i, "same words", "p", 1000, 1, 10 + u64::from(i));
            if let Op::Torrent(t) = &mut op {
                if i % 3 != 0 {
                    t.seeders = Some(i * 7 % 50);
                    t.scraped_at = Some(10);
                }
            }
            op
        })
        .collect();
    store.apply_batch(&ops).unwrap();
    let known = 700 - 700_usize.div_ceil(3);
    let want = |store: &Store, mode: usize| {
        store.set_order_mode(mode);
        let mut out = Vec::new();
        for asc in [false, true] {
            let mut q = SearchQuery::new("same").sort(SortBy::Seeders).page(5, 30);
            if asc {
                q = q.ascending();
            }
            let r = store.query(&q).unwrap();
            out.push((
                r.total,
                r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>(),
            ));
        }
        store.set_order_mode(0);
        out
    };
    let before = want(&store, 1);
    assert_eq!(before, want(&store, 2));
    drop(store);
    wait_closed(&opts.path);
    downgrade_to_schema_6(&opts);
    let version_and_entries = |opts: &StoreOptions| schema_and_entries(opts, "by_seeders");
    assert_eq!(version_and_entries(&opts), (6u32.to_le_bytes().to_vec(), 0));

    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(true));
    let e = Store::open(opts.clone()).unwrap_err();
    migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(false));
    assert!(e.to_string().contains("upgrade interrupted"), "{e}");
    wait_closed(&opts.path);
    assert_eq!(version_and_entries(&opts), (6u32.to_le_bytes().to_vec(), 0));

    let store = Store::open(opts.clone()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(columns_agree(&store), 700);
    assert!(store.integrity_check().unwrap().is_ok());
    assert_eq!(want(&store, 2), before);
    assert_eq!(want(&store, 0), before);
    drop(store);
    wait_closed(&opts.path);
    assert_eq!(
        version_and_entries(&opts),
        (SCHEMA_VERSION.to_le_bytes().to_vec(), known as u64)
    );
}

/// Property: on random stores (random sizes, file counts, seeders known or not,
/// scrapes that change them, imports out of time order) and random queries (every
/// sort and direction, size and time ranges, phrases, exclusions, pages), the
/// `columns` paths (modes 0 and 2) return exactly what per-match lookups in
/// `torrents` return (mode 1), and so do the schema 5 search (mode 3) and the
/// schema 6 search (mode 5; mode 2 always walks `by_seeders` for seeders sorts); by
/// relevance with a size range, modes 0 and 2 take the relevance walk (each
/// candidate's size from `columns`). A page is always identical; the total too
/// unless it was estimated.
#[test]
fn column_paths_agree_with_record_lookups_on_random_stores() {
    use crate::synth::Rng;
    const WORDS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];
    for seed in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
        let mut rng = Rng::new(seed);
        let n = 200 + rng.below(2_500) as u32;
        let word = |rng: &mut Rng| WORDS[rng.below(WORDS.len() as u64) as usize];
        let mut next = 0u32;
        let mut t = 1_000u64;
        while next < n {
            let k = (1 + rng.below(700) as u32).min(n - next);
            let ops: Vec<Op> = (next..next + k)
                .map(|i| {
                    let name: Vec<&str> = (0..1 + rng.below(4)).map(|_| word(&mut rng)).collect();
                    let path = format!("{} {}", word(&mut rng), word(&mut rng));
                    // Sizes: few distinct values (ties), or spread over many size classes.
                    let size = if rng.below(2) == 0 {
                        rng.below(4) * 1_000
                    } else {
                        rng.below(1 << 40)
                    };
                    // Mostly in time order; now and then an import of an older one.
                    let at = if rng.below(50) == 0 {
                        rng.below(t)
                    } else {
                        t += 1 + rng.below(3);
                        t
                    };
                    let mut op = sized(i, &name.join(" "), &path, size, rng.below(6) as usize, at);
                    if let Op::Torrent(tt) = &mut op {
                        if rng.below(3) != 0 {
                            tt.seeders = Some(rng.below(20) as u32);
                            tt.scraped_at = Some(at);
                        }
                    }
                    op
                })
                .collect();
            store.apply_batch(&ops).unwrap();
            next += k;
            // Scrapes of random stored torrents.
            let scrapes: Vec<Op> = (0..rng.below(60))
                .map(|_| {
                    let i = rng.below(u64::from(next)) as u32;
                    let mut ih = [0u8; 20];
                    ih[..4].copy_from_slice(&i.to_be_bytes());
                    ih[19] = 0x5e;
                    Op::Scrape {
                        infohash: ih,
                        at: 5_000 + rng.below(100),
                        seeders: rng.below(30) as u32,
                        leechers: 0,
                    }
                })
                .collect();
            store.apply_batch(&scrapes).unwrap();
        }
        assert_eq!(columns_agree(&store), n as usize);
        for _ in 0..150 {
            let mut text = word(&mut rng).to_string();
            match rng.below(5) {
                0 => text = format!("{text} {}", word(&mut rng)),
                1 => text = format!("\"{text} {}\"", word(&mut rng)),
                2 => text = format!("{text} -{}", word(&mut rng)),
                3 => text = format!("name:{text}"),
                _ => {}
            }
            let sort = [
                SortBy::Relevance,
                SortBy::Discovered,
                SortBy::Size,
                SortBy::Seeders,
                SortBy::Files,
            ][rng.below(5) as usize];
            let mut q = SearchQuery::new(text)
                .sort(sort)
                .page(rng.below(40) as usize, 1 + rng.below(30) as usize);
            if rng.below(2) == 0 {
                q = q.ascending();
            }
            if rng.below(3) == 0 {
                let a = rng.below(1 << 39);
                q = q.size_range(
                    Some(a).filter(|_| rng.below(2) == 0),
                    Some(a + rng.below(1 << 40)).filter(|_| rng.below(2) == 0),
                );
            }
            if rng.below(3) == 0 {
                let a = 1_000 + rng.below(t - 1_000);
                q = q.discovered_range(
                    Some(a),
                    Some(a + 1 + rng.below(t)).filter(|_| rng.below(2) == 0),
                );
            }
            let run = |mode: usize| {
                store.set_order_mode(mode);
                let r = store.query(&q).unwrap();
                store.set_order_mode(0);
                r
            };
            let want = run(1);
            for mode in [0, 2, 3, 5] {
                let got = run(mode);
                let ids = |r: &SearchResults| r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "seed {seed} mode {mode} {q:?}");
                if !got.total_estimated && !want.total_estimated {
                    assert_eq!(got.total, want.total, "seed {seed} mode {mode} {q:?}");
                }
                assert_eq!(got.skipped_corrupt, 0);
            }
        }
    }
}

/// Property: on random stores where a few words are common (many posting blocks,
/// in names and in paths) and others rare, plain-word relevance queries (one to
/// three words, any page) return from the walk of the posting blocks
/// (`relevance_walk`, modes 0 and 2) exactly the page of the general path (mode 1:
/// every posting decoded, intersected, ranked), and the same total unless the walk
/// stopped early on several words and estimated it (`total_estimated`); an
/// estimate is never below the matches of the page. Both ways are taken.
#[test]
fn relevance_walk_agrees_with_the_general_path_on_random_stores() {
    use crate::synth::Rng;
    // Some words are prefixes of others: the last word of a query is a prefix.
    const WORDS: [&str; 10] = [
        "alpha", "beta", "gamma", "alphabet", "delta", "gammas", "zeta", "theta", "kappa",
        "betamax",
    ];
    let (mut estimated, mut exact_multi, mut single) = (0, 0, 0);
    for seed in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
        let mut rng = Rng::new(100 + seed);
        let n = 500 + rng.below(3_000) as u32;
        // Skewed popularity: the first words are far more common.
        let word = |rng: &mut Rng| {
            let a = rng.below(WORDS.len() as u64);
            WORDS[rng.below(a + 1) as usize]
        };
        let mut next = 0u32;
        while next < n {
            let k = (1 + rng.below(900) as u32).min(n - next);
            let ops: Vec<Op> = (next..next + k)
                .map(|i| {
                    let name: Vec<&str> = (0..1 + rng.below(4)).map(|_| word(&mut rng)).collect();
                    let path = format!("{} {}", word(&mut rng), word(&mut rng));
                    let files = rng.below(3) as usize;
                    sized(i, &name.join(" "), &path, 1, files, 1_000 + u64::from(i))
                })
                .collect();
            store.apply_batch(&ops).unwrap();
            next += k;
        }
        for _ in 0..120 {
            let nw = 1 + rng.below(3);
            let mut text: Vec<String> = (0..nw).map(|_| word(&mut rng).to_string()).collect();
            match rng.below(4) {
                // A short prefix (several terms), or no prefix at all.
                0 => text.push(word(&mut rng)[..2].to_string()),
                1 => text.push(format!("\"{}\"", word(&mut rng))),
                _ => {}
            }
            let q = SearchQuery::new(text.join(" "))
                .page(rng.below(60) as usize, rng.below(40) as usize);
            let run = |mode: usize| {
                store.set_order_mode(mode);
                let r = store.query(&q).unwrap();
                store.set_order_mode(0);
                r
            };
            let want = run(1);
            assert!(!want.total_estimated);
            for mode in [0, 2] {
                let got = run(mode);
                let ids = |r: &SearchResults| r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "seed {seed} mode {mode} {q:?}");
                if got.total_estimated {
                    estimated += 1;
                    assert!(got.total >= q.offset + got.hits.len(), "{q:?}");
                } else {
                    assert_eq!(got.total, want.total, "seed {seed} mode {mode} {q:?}");
                    let mut distinct = text.clone();
                    distinct.sort();
                    distinct.dedup();
                    if distinct.len() == 1 {
                        single += 1;
                    } else {
                        exact_multi += 1;
                    }
                }
                assert_eq!(got.skipped_corrupt, 0);
            }
        }
    }
    assert!(
        estimated > 0 && exact_multi > 0 && single > 0,
        "{estimated} {exact_multi} {single}"
    );
}

/// Property: on random stores where a few words are common (many posting blocks,
/// in names and in paths, phrases in both), relevance queries with exclusions
/// (`-word`, `-"a b"`, `-name:w`), phrases (`"a b"`, `name:"a b"`, `path:"a b"`)
/// and scoped words (`name:w`, `path:w`, a scoped prefix) return from the walk of
/// the posting blocks (`relevance_walk`, modes 0 and 2) exactly the page of the
/// general path (mode 1: every posting decoded, intersected, excluded, checked,
/// ranked), and the same total unless one of them estimated it; an estimate is
/// never below the matches of the page. Every kind of query is met with hits, and
/// the walk both stops early and goes to the end.
#[test]
fn relevance_walk_with_exclusions_phrases_and_scopes_agrees_with_the_general_path() {
    use crate::synth::Rng;
    const WORDS: [&str; 8] = [
        "alpha", "beta", "gamma", "alphabet", "delta", "gammas", "zeta", "betamax",
    ];
    // Hits per kind: exclusion, phrase, scoped; and estimated / exact totals.
    let mut kinds = [0usize; 3];
    let (mut estimated, mut exact) = (0, 0);
    for seed in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
        let mut rng = Rng::new(300 + seed);
        let n = 500 + rng.below(3_000) as u32;
        let word = |rng: &mut Rng| {
            let a = rng.below(WORDS.len() as u64);
            WORDS[rng.below(a + 1) as usize]
        };
        let mut next = 0u32;
        while next < n {
            let k = (1 + rng.below(900) as u32).min(n - next);
            let ops: Vec<Op> = (next..next + k)
                .map(|i| {
                    let name: Vec<&str> = (0..1 + rng.below(4)).map(|_| word(&mut rng)).collect();
                    let path = format!("{} {}", word(&mut rng), word(&mut rng));
                    let files = rng.below(3) as usize;
                    sized(i, &name.join(" "), &path, 1, files, 1_000 + u64::from(i))
                })
                .collect();
            store.apply_batch(&ops).unwrap();
            next += k;
        }
        for _ in 0..150 {
            let scope = |rng: &mut Rng| ["", "", "name:", "path:"][rng.below(4) as usize];
            let mut text: Vec<String> = Vec::new();
            let kind = rng.below(3) as usize;
            match kind {
                0 => {
                    text.push(word(&mut rng).to_string());
                    for _ in 0..1 + rng.below(2) {
                        text.push(match rng.below(3) {
                            0 => format!("-\"{} {}\"", word(&mut rng), word(&mut rng)),
                            _ => format!("-{}{}", scope(&mut rng), word(&mut rng)),
                        });
                    }
                    if rng.below(2) == 0 {
                        text.push(word(&mut rng).to_string());
                    }
                }
                1 => {
                    if rng.below(2) == 0 {
                        text.push(word(&mut rng).to_string());
                    }
                    text.push(format!(
                        "{}\"{} {}\"",
                        scope(&mut rng),
                        word(&mut rng),
                        word(&mut rng)
                    ));
                    if rng.below(3) == 0 {
                        text.push(format!("-{}", word(&mut rng)));
                    }
                }
                _ => {
                    for _ in 0..1 + rng.below(2) {
                        text.push(format!("{}{}", scope(&mut rng), word(&mut rng)));
                    }
                    if rng.below(3) == 0 {
                        // A scoped prefix of several terms.
                        text.push(format!("{}{}", scope(&mut rng), &word(&mut rng)[..2]));
                    }
                }
            }
            let q = SearchQuery::new(text.join(" "))
                .page(rng.below(60) as usize, rng.below(40) as usize);
            let run = |mode: usize| {
                store.set_order_mode(mode);
                let r = store.query(&q).unwrap();
                store.set_order_mode(0);
                r
            };
            let want = run(1);
            for mode in [0, 2] {
                let got = run(mode);
                let ids = |r: &SearchResults| r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "seed {seed} mode {mode} {q:?}");
                if got.total_estimated {
                    estimated += 1;
                    assert!(got.total >= q.offset + got.hits.len(), "{q:?}");
                } else if !want.total_estimated {
                    exact += 1;
                    assert_eq!(got.total, want.total, "seed {seed} mode {mode} {q:?}");
                }
                assert_eq!(got.skipped_corrupt, 0);
                if !got.hits.is_empty() {
                    kinds[kind] += 1;
                }
            }
        }
    }
    assert!(
        kinds.iter().all(|&k| k > 20) && estimated > 0 && exact > 0,
        "{kinds:?} {estimated} {exact}"
    );
}

/// Property: on random stores in time order where a few words are common (many
/// posting blocks) and some are prefixes of others, with sizes that tie, seeders
/// known or not and scrapes that change them, one word or a prefix (of one dominant
/// term or of several) sorted by discovery time, size or seeders, either way, any
/// page, returns from the order walks (`one_word_walk` for time and seeders, modes 0
/// and 2; mode 2 always walks) exactly the page and total of per-match lookups (mode 1) and of the
/// search of schema 6 (mode 5); two words by seeders take `seeders_walk` and agree
/// too. Every walk is taken.
#[test]
fn order_walks_agree_with_the_general_path_on_random_stores() {
    use crate::synth::Rng;
    const WORDS: [&str; 10] = [
        "alpha", "beta", "gamma", "alphabet", "delta", "gammas", "zeta", "theta", "kappa",
        "betamax",
    ];
    super::search::WALKS_TAKEN.with(|w| w.set([0; 4]));
    for seed in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
        let mut rng = Rng::new(500 + seed);
        let n = 400 + rng.below(3_000) as u32;
        let word = |rng: &mut Rng| {
            let a = rng.below(WORDS.len() as u64);
            WORDS[rng.below(a + 1) as usize]
        };
        let mut next = 0u32;
        while next < n {
            let k = (1 + rng.below(900) as u32).min(n - next);
            let ops: Vec<Op> = (next..next + k)
                .map(|i| {
                    let name: Vec<&str> = (0..1 + rng.below(3)).map(|_| word(&mut rng)).collect();
                    let path = format!("{} {}", word(&mut rng), word(&mut rng));
                    let size = if rng.below(2) == 0 {
                        rng.below(4) * 1_000
                    } else {
                        rng.below(1 << 40)
                    };
                    let mut op = sized(
                        i,
                        &name.join(" "),
                        &path,
                        size,
                        rng.below(3) as usize,
                        1_000 + u64::from(i),
                    );
                    if let Op::Torrent(tt) = &mut op {
                        if rng.below(3) != 0 {
                            tt.seeders = Some(rng.below(20) as u32);
                            tt.scraped_at = Some(1_000);
                        }
                    }
                    op
                })
                .collect();
            store.apply_batch(&ops).unwrap();
            next += k;
            let scrapes: Vec<Op> = (0..rng.below(80))
                .map(|_| {
                    let i = rng.below(u64::from(next)) as u32;
                    let mut ih = [0u8; 20];
                    ih[..4].copy_from_slice(&i.to_be_bytes());
                    ih[19] = 0x5e;
                    Op::Scrape {
                        infohash: ih,
                        at: 5_000 + rng.below(100),
                        seeders: rng.below(30) as u32,
                        leechers: 0,
                    }
                })
                .collect();
            store.apply_batch(&scrapes).unwrap();
        }
        assert_eq!(columns_agree(&store), n as usize);
        for _ in 0..150 {
            let text = match rng.below(4) {
                0 => word(&mut rng)[..2].to_string(),
                1 => format!("{} {}", word(&mut rng), word(&mut rng)),
                _ => word(&mut rng).to_string(),
            };
            let sort = [SortBy::Discovered, SortBy::Size, SortBy::Seeders][rng.below(3) as usize];
            let mut q = SearchQuery::new(text)
                .sort(sort)
                .page(rng.below(60) as usize, rng.below(40) as usize);
            if rng.below(2) == 0 {
                q = q.ascending();
            }
            let run = |mode: usize| {
                store.set_order_mode(mode);
                let r = store.query(&q).unwrap();
                store.set_order_mode(0);
                r
            };
            let want = run(1);
            for mode in [0, 2, 5] {
                let got = run(mode);
                let ids = |r: &SearchResults| r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "seed {seed} mode {mode} {q:?}");
                assert_eq!(got.total, want.total, "seed {seed} mode {mode} {q:?}");
                assert_eq!(got.skipped_corrupt, 0);
            }
        }
    }
    let taken = super::search::WALKS_TAKEN.with(|w| w.get());
    assert!(taken[0] > 20 && taken[2] > 20 && taken[3] > 20, "{taken:?}");
}
