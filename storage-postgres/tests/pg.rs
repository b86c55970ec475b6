//! The PostgreSQL store against a real PostgreSQL server (started by each test in
//! a temporary directory, stopped and removed when the test ends): migrations,
//! the batched writer (merging as the LMDB store does, several writers at once),
//! and reads.

use magnetar_storage::synth::Synth;
use magnetar_storage::{FileEntry, HashKind, Op, Sources, Store, StoreOptions, TorrentInput};
use magnetar_storage_pg::migrate::{migrate_with, schema_version, Migration, MIGRATIONS};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgError, PgOptions, PgStore, SCHEMA_VERSION};

/// The migrations up to `version` (a build of that schema).
fn through(version: i32) -> &'static [Migration] {
    let n = MIGRATIONS
        .iter()
        .take_while(|m| m.version <= version)
        .count();
    &MIGRATIONS[..n]
}

fn server() -> TempPostgres {
    match TempPostgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL could not start: {e}"),
    }
}

#[test]
fn migrations_run_from_empty_are_idempotent_and_refuse_a_newer_schema() {
    let pg = server();
    let url = pg.create_database("m").unwrap();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert_eq!(schema_version(&mut c).unwrap(), 0);
    assert_eq!(magnetar_storage_pg::migrate(&mut c).unwrap(), 0);
    assert_eq!(schema_version(&mut c).unwrap(), SCHEMA_VERSION);
    // Again: nothing to do, nothing applied twice.
    assert_eq!(
        magnetar_storage_pg::migrate(&mut c).unwrap(),
        SCHEMA_VERSION
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, MIGRATIONS.len() as i64);
    // The contrib extensions are in, and folding works.
    let folded: String = c
        .query_one("SELECT magnetar_fold('Épopée ÉTÉ')", &[])
        .unwrap()
        .get(0);
    assert_eq!(folded, "epopee ete");
    let sim: f32 = c
        .query_one("SELECT similarity('ubuntu', 'ubuntu desktop')", &[])
        .unwrap()
        .get(0);
    assert!(sim > 0.0 && sim < 1.0, "{sim}");
    // A newer build's migration: applied once, in its own transaction.
    let newer: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|m| Migration {
            version: m.version,
            name: m.name,
            sql: m.sql,
        })
        .chain([Migration {
            version: SCHEMA_VERSION + 1,
            name: "test column",
            sql: "ALTER TABLE torrents ADD COLUMN test_col integer",
        }])
        .collect();
    assert_eq!(migrate_with(&mut c, &newer).unwrap(), SCHEMA_VERSION);
    assert_eq!(migrate_with(&mut c, &newer).unwrap(), SCHEMA_VERSION + 1);
    // A failing migration leaves nothing behind (one transaction).
    let broken = [Migration {
        version: SCHEMA_VERSION + 2,
        name: "broken",
        sql: "ALTER TABLE torrents ADD COLUMN other integer; SELECT no_such_function()",
    }];
    let all: Vec<Migration> = newer
        .into_iter()
        .chain(broken.iter().map(|m| Migration {
            version: m.version,
            name: m.name,
            sql: m.sql,
        }))
        .collect();
    let e = migrate_with(&mut c, &all).unwrap_err();
    assert!(e.to_string().contains("no_such_function"), "{e}");
    let cols: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'torrents' AND column_name = 'other'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cols, 0);
    assert_eq!(schema_version(&mut c).unwrap(), SCHEMA_VERSION + 1);
    // This build knows only SCHEMA_VERSION: it refuses the newer database.
    match PgStore::connect(&url, PgOptions::default()) {
        Err(PgError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("a newer schema was not refused: {other:?}"),
    }
}

/// Schema 6 on a schema-5 database that already holds torrents: the two order
/// indexes are built over the existing rows and give the seeders order (unknown
/// last, both directions) and the file-count order without a sort.
#[test]
fn migration_6_adds_indexes_that_serve_the_seeders_and_files_orders() {
    let pg = server();
    let url = pg.create_database("m6").unwrap();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let five = through(5);
    assert_eq!(migrate_with(&mut c, five).unwrap(), 0);
    assert_eq!(schema_version(&mut c).unwrap(), 5);
    // 2,000 rows: seeders unknown for every seventh, else (i * 37) % 101; file
    // counts (i * 13) % 50.
    c.batch_execute(
        "INSERT INTO torrents (infohash, id, kind, name, total_size, piece_length,
             piece_count, file_count, private, discovered_at, last_seen_at, sources,
             seeders, has_info, search)
         SELECT decode(lpad(to_hex(i), 40, '0'), 'hex'), i, 1, 't' || i, i, 16384, 1,
             (i * 13) % 50, false, i, i, 1,
             CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37) % 101 END, false, ''
         FROM generate_series(1, 2000) i",
    )
    .unwrap();
    assert_eq!(magnetar_storage_pg::migrate(&mut c).unwrap(), 5);
    assert_eq!(schema_version(&mut c).unwrap(), SCHEMA_VERSION);
    let idx: Vec<String> = c
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'torrents' \
             AND indexname IN ('torrents_seeders_desc', 'torrents_files') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(idx, ["torrents_files", "torrents_seeders_desc"]);
    // With sorting disabled the planner can only give these orders from an index:
    // the plan names the one it walks, and the rows come in the expected order.
    c.batch_execute("SET enable_sort = off; SET enable_seqscan = off")
        .unwrap();
    let rows: Vec<(i64, Option<i64>, i64)> = (1..=2000i64)
        .map(|i| (i, (i % 7 != 0).then_some((i * 37) % 101), (i * 13) % 50))
        .collect();
    let cases: [(&str, &str, Vec<i64>); 3] = [
        (
            "t.seeders DESC NULLS LAST, t.id DESC",
            "torrents_seeders_desc",
            {
                let mut v = rows.clone();
                v.sort_by_key(|r| (r.1.is_none(), std::cmp::Reverse((r.1, r.0))));
                v.iter().map(|r| r.0).collect()
            },
        ),
        ("t.seeders ASC NULLS LAST, t.id ASC", "torrents_seeders", {
            let mut v = rows.clone();
            v.sort_by_key(|r| (r.1.is_none(), r.1, r.0));
            v.iter().map(|r| r.0).collect()
        }),
        ("t.file_count DESC, t.id DESC", "torrents_files", {
            let mut v = rows.clone();
            v.sort_by_key(|r| std::cmp::Reverse((r.2, r.0)));
            v.iter().map(|r| r.0).collect()
        }),
    ];
    for (order, index, want) in cases {
        let sql = format!("SELECT t.id FROM torrents t ORDER BY {order} LIMIT 60 OFFSET 900");
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN {sql}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains(&format!("using {index} ")) && !plan.contains("Sort"),
            "{order}: {plan}"
        );
        let got: Vec<i64> = c
            .query(&sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, want[900..960], "{order}");
    }
}

/// Migration 7 on a schema-6 database whose queue holds rows: the index of done
/// rows is built over them, the prune's lookup walks it, and the prune deletes
/// exactly the done rows whose lease ended long enough ago.
#[test]
fn migration_7_indexes_done_queue_rows_for_pruning() {
    let pg = server();
    let url = pg.create_database("m7").unwrap();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let six = through(6);
    assert_eq!(migrate_with(&mut c, six).unwrap(), 0);
    assert_eq!(schema_version(&mut c).unwrap(), 6);
    // 3,000 rows, lease until i; every third done.
    c.batch_execute(
        "INSERT INTO crawl_queue (infohash, shard, discovered_at, offered_by, claimed_by,
             lease_until, done)
         SELECT decode(lpad(to_hex(i), 40, '0'), 'hex'), 0, i, 'a', 'a', i, i % 3 = 0
         FROM generate_series(1, 3000) i",
    )
    .unwrap();
    assert_eq!(magnetar_storage_pg::migrate(&mut c).unwrap(), 6);
    assert_eq!(schema_version(&mut c).unwrap(), 7);
    c.batch_execute("ANALYZE crawl_queue; SET enable_seqscan = off")
        .unwrap();
    let plan: Vec<String> = c
        .query(
            "EXPLAIN SELECT infohash FROM crawl_queue WHERE done AND lease_until <= 1500 \
             LIMIT 100 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("crawl_queue_done"), "{plan}");
    // Done with a lease that ended at or before 1500 - 100: 1400 / 3 rows.
    let mut q = magnetar_storage_pg::Queue::connect(&url, "b").unwrap();
    q.set_clock(Some(1500));
    let keep = std::time::Duration::from_secs(100);
    assert_eq!(q.prune_done(keep, 10_000).unwrap(), 466);
    assert_eq!(q.prune_done(keep, 10_000).unwrap(), 0);
    let left: Vec<(i64, i64)> = c
        .query(
            "SELECT count(*) FILTER (WHERE done), count(*) FILTER (WHERE NOT done) \
             FROM crawl_queue",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, [(1000 - 466, 2000)]);
}

fn torrent(seed: u8, name: &str, files: &[(&str, u64)], at: u64) -> TorrentInput {
    let files: Vec<FileEntry> = files
        .iter()
        .map(|(p, s)| FileEntry {
            path: (*p).into(),
            size: *s,
        })
        .collect();
    TorrentInput {
        infohash: [seed; 20],
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: files.iter().map(|f| f.size).sum(),
        piece_length: 1 << 18,
        piece_count: 3,
        private: false,
        source: None,
        files,
        discovered_at: at,
        sources: Sources::SAMPLE,
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: Some(format!("d4:name{}:{name}e", name.len()).into_bytes()),
    }
}

/// Batches that exercise every merge rule: repeats in a batch and across batches,
/// a late v2 hash, late info, dated and undated counts, sightings and scrapes of
/// known and unknown torrents.
fn merge_batches() -> Vec<Vec<Op>> {
    let a = torrent(1, "Big Buck Bunny", &[("Big Buck Bunny.mkv", 1000)], 100);
    let mut b = torrent(2, "Épopée ÉTÉ", &[("d/one.txt", 1), ("d/two.txt", 2)], 101);
    b.info = None;
    b.private = true;
    b.source = Some("SRC".into());
    let mut b_later = b.clone();
    b_later.discovered_at = 150;
    b_later.sources = Sources::ANNOUNCE;
    b_later.info = Some(b"d4:name1:xe".to_vec());
    b_later.kind = HashKind::Hybrid;
    b_later.v2 = Some([9; 32]);
    b_later.seeders = Some(5);
    b_later.leechers = Some(6);
    b_later.scraped_at = Some(140);
    let mut c = torrent(3, "日本語 字幕", &[("日本語/字幕.srt", 7)], 99);
    c.seeders = Some(1);
    c.leechers = None;
    let mut c_again = c.clone();
    c_again.discovered_at = 120;
    c_again.seeders = Some(2);
    c_again.scraped_at = Some(119);
    vec![
        vec![
            Op::Torrent(Box::new(a.clone())),
            Op::Torrent(Box::new(c.clone())),
            Op::Torrent(Box::new(c_again)),
            Op::Seen {
                infohash: [1; 20],
                at: 130,
                sources: Sources::GET_PEERS,
                seeders: None,
                leechers: Some(4),
            },
            Op::Seen {
                infohash: [77; 20],
                at: 130,
                sources: Sources::GET_PEERS,
                seeders: None,
                leechers: None,
            },
        ],
        vec![
            Op::Torrent(Box::new(b)),
            Op::Scrape {
                infohash: [1; 20],
                at: 125,
                seeders: 10,
                leechers: 11,
            },
            Op::Scrape {
                infohash: [1; 20],
                at: 131,
                seeders: 12,
                leechers: 13,
            },
            Op::Scrape {
                infohash: [3; 20],
                at: 100,
                seeders: 50,
                leechers: 51,
            },
        ],
        vec![
            Op::Torrent(Box::new(b_later)),
            Op::Torrent(Box::new(a)),
            Op::Scrape {
                infohash: [88; 20],
                at: 1,
                seeders: 1,
                leechers: 1,
            },
        ],
    ]
}

#[test]
fn batches_merge_as_the_lmdb_store_does() {
    let pg = server();
    let url = pg.create_database("w").unwrap();
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ls = Store::open(StoreOptions::new(dir.path())).unwrap();
    for batch in merge_batches() {
        let p = ps.apply_batch(&batch).unwrap();
        let l = ls.apply_batch(&batch).unwrap();
        assert_eq!(
            (
                p.torrents_new,
                p.torrents_updated,
                p.seen_updated,
                p.seen_unknown,
                p.scrapes_updated
            ),
            (
                l.torrents_new,
                l.torrents_updated,
                l.seen_updated,
                l.seen_unknown,
                l.scrapes_updated
            ),
            "batch {batch:?}"
        );
    }
    assert_eq!(ps.count().unwrap(), 3);
    for ih in [[1u8; 20], [2; 20], [3; 20], [77; 20]] {
        let p = ps.get(&ih).unwrap();
        let l = ls.get(&ih).unwrap();
        assert_eq!(p, l, "torrent {ih:?}");
        assert_eq!(
            ps.info(&ih).unwrap(),
            ls.info_dict(&ih).unwrap(),
            "info {ih:?}"
        );
    }
    // The merge rules were exercised, not skipped.
    let b = ps.get(&[2; 20]).unwrap().unwrap().record;
    assert_eq!(
        (b.kind, b.v2, b.has_info),
        (HashKind::Hybrid, Some([9; 32]), true)
    );
    assert_eq!((b.seeders, b.last_seen_at), (Some(5), 150));
    let a = ps.get(&[1; 20]).unwrap().unwrap().record;
    assert_eq!(
        (a.seeders, a.leechers, a.scraped_at),
        (Some(12), Some(13), Some(131))
    );
    // Writing the same batches again changes nothing but counters.
    for batch in merge_batches() {
        let r = ps.apply_batch(&batch).unwrap();
        assert_eq!(r.torrents_new, 0);
    }
    let files: i64 = ps
        .client()
        .query_one("SELECT count(*) FROM files", &[])
        .unwrap()
        .get(0);
    assert_eq!(files, 4);
}

#[test]
fn bad_values_are_counted_rejections_not_errors() {
    let pg = server();
    let url = pg.create_database("r").unwrap();
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    let mut huge = torrent(5, "huge", &[("a", u64::MAX)], 10);
    huge.total_size = u64::MAX;
    let nul = torrent(6, "nul\0name", &[("p\0ath", 3)], 11);
    let r = ps
        .apply_batch(&[Op::Torrent(Box::new(huge)), Op::Torrent(Box::new(nul))])
        .unwrap();
    assert_eq!((r.torrents_new, r.rejected), (1, 1));
    // NUL is kept exactly (schema 4's raw columns); the text columns hold U+FFFD.
    let t = ps.get(&[6; 20]).unwrap().unwrap();
    assert_eq!(t.record.name, "nul\0name");
    assert_eq!(t.files[0].path, "p\0ath");
    let (name, path): (String, String) = {
        let r = ps
            .client()
            .query_one(
                "SELECT t.name, f.path FROM torrents t JOIN files f ON f.torrent_id = t.id",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (name.as_str(), path.as_str()),
        ("nul\u{FFFD}name", "p\u{FFFD}ath")
    );
    assert!(ps.get(&[5; 20]).unwrap().is_none());
    // Deleting a torrent deletes its files and info dict (schema 4's trigger, in
    // place of ON DELETE CASCADE), and only its own.
    let count =
        |ps: &mut PgStore, sql: &str| -> i64 { ps.client().query_one(sql, &[]).unwrap().get(0) };
    let t7 = torrent(7, "seven", &[("x", 1), ("y", 2)], 12);
    ps.apply_batch(&[Op::Torrent(Box::new(t7))]).unwrap();
    assert_eq!(count(&mut ps, "SELECT count(*) FROM files"), 3);
    assert_eq!(count(&mut ps, "SELECT count(*) FROM info"), 2);
    ps.client()
        .execute(
            "DELETE FROM torrents WHERE infohash = $1",
            &[&&[7u8; 20][..]],
        )
        .unwrap();
    assert_eq!(count(&mut ps, "SELECT count(*) FROM files"), 1);
    assert_eq!(count(&mut ps, "SELECT count(*) FROM info"), 1);
    assert!(ps.get(&[6; 20]).unwrap().is_some());
}

#[test]
fn three_writers_storing_overlapping_batches_store_each_torrent_once() {
    let pg = server();
    let url = pg.create_database("c").unwrap();
    // Migrate once first (concurrent first connects would also work: the
    // migration lock serialises them; that is tested below).
    drop(PgStore::connect(&url, PgOptions::default()).unwrap());
    let mut synth = Synth::new(21);
    let all: Vec<TorrentInput> = (0..3000)
        .map(|i| synth.torrent(1_000_000 + i, i % 2 == 0))
        .collect();
    let want_files: usize = all.iter().map(|t| t.files.len()).sum();
    let batches: Vec<Vec<Op>> = all
        .chunks(150)
        .map(|c| c.iter().map(|t| Op::Torrent(Box::new(t.clone()))).collect())
        .collect();
    let nb = batches.len();
    let batches = std::sync::Arc::new(batches);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|k| {
            let (url, batches, barrier) = (url.clone(), batches.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::connect(&url, PgOptions::default()).unwrap();
                barrier.wait();
                let mut new = 0u64;
                let mut retries = 0u32;
                // Writer k writes every batch, starting at batch k·nb/6: the
                // three overlap on most batches, some at the same moment.
                for j in 0..nb {
                    let b = &batches[(j + k * nb / 6) % nb];
                    let r = s.apply_batch(b).unwrap();
                    new += r.torrents_new;
                    retries += r.retries;
                }
                (new, retries)
            })
        })
        .collect();
    let mut new = 0;
    for t in threads {
        let (n, _retries) = t.join().unwrap();
        new += n;
    }
    let mut s = PgStore::connect(&url, PgOptions::default()).unwrap();
    assert_eq!(new, 3000, "each torrent is new to exactly one writer");
    assert_eq!(s.count().unwrap(), 3000);
    let c = s.client();
    let q = |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(q(c, "SELECT count(*) FROM files") as usize, want_files);
    assert_eq!(
        q(
            c,
            "SELECT count(*) FROM torrents t WHERE t.file_count <> \
             (SELECT count(*) FROM files f WHERE f.torrent_id = t.id)"
        ),
        0
    );
    assert_eq!(q(c, "SELECT count(*) FROM info"), 1500);
    assert_eq!(q(c, "SELECT count(DISTINCT id) FROM torrents"), 3000);
    // Every stored torrent is the one written.
    for t in all.iter().step_by(97) {
        let got = s.get(&t.infohash).unwrap().unwrap();
        assert_eq!(got.record.name, t.name);
        assert_eq!(got.files, t.files);
    }
}

#[test]
fn concurrent_first_connects_migrate_once() {
    let pg = server();
    let url = pg.create_database("mc").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::connect(&url, PgOptions::default()).map(drop))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, MIGRATIONS.len() as i64);
}

#[test]
fn the_writer_buffers_while_postgres_is_down_and_writes_everything_once() {
    use magnetar_storage_pg::{PgWriter, PgWriterConfig};
    use std::time::{Duration, Instant};
    let mut pg = server();
    let url = pg.create_database("wd").unwrap();
    let cfg = PgWriterConfig {
        // 500 ops fit while the server is down (a batch of 100 plus 400
        // buffered); 500 more do not.
        capacity: 600,
        batch: 100,
        linger: Duration::from_millis(20),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..PgWriterConfig::default()
    };
    let mut w = PgWriter::start(&url, cfg);
    let mut synth = Synth::new(5);
    let all: Vec<TorrentInput> = (0..1500).map(|i| synth.torrent(100 + i, true)).collect();
    for t in &all[..500] {
        w.send(Op::Torrent(Box::new(t.clone()))).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(w.totals().torrents_new, 500);
    // The server goes away (a clean shutdown ends the writer's session).
    pg.stop().unwrap();
    for t in &all[500..1000] {
        w.send(Op::Torrent(Box::new(t.clone()))).unwrap();
    }
    // The writer notices when it tries (waiting for a state, bounded; not a timing
    // assertion).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.totals().down {
        assert!(
            Instant::now() < deadline,
            "the outage was never noticed: {:?}",
            w.totals()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Past the bound, try_send hands ops back instead of losing them.
    let mut handed_back = 0;
    for t in &all[1000..] {
        if w.try_send(Op::Torrent(Box::new(t.clone())))
            .unwrap()
            .is_some()
        {
            handed_back += 1;
        }
    }
    assert!(handed_back > 0, "the buffer has no bound");
    let t = w.totals();
    assert!(t.outages == 1 && t.retries >= 1, "{t:?}");
    assert!(t.last_error.is_some());
    pg.start_again().unwrap();
    w.flush().unwrap();
    // Everything accepted is stored, once; then all of the last 500 again (the
    // ones accepted before are stored once).
    for t in &all[1000..] {
        w.send(Op::Torrent(Box::new(t.clone()))).unwrap();
    }
    let totals = w.close().unwrap();
    assert!(!totals.down);
    let mut s = PgStore::connect(&url, PgOptions::default()).unwrap();
    assert_eq!(s.count().unwrap(), 1500);
    let files: i64 = s
        .client()
        .query_one("SELECT count(*) FROM files", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        files as usize,
        all.iter().map(|t| t.files.len()).sum::<usize>()
    );
    assert_eq!(totals.torrents_new, 1500);
}

/// Schema 5: node ids kept per (host, identity key); hosts sharing one database
/// keep theirs apart, a save replaces, and a restart of the server is survived
/// (the connection is made again).
#[test]
fn node_ids_are_kept_per_host_and_key() {
    use magnetar_storage_pg::PgIdentities;
    let mut pg = server();
    let url = pg.create_database("ids").unwrap();
    let a = PgIdentities::connect(&url, "host-a").unwrap();
    let b = PgIdentities::connect(&url, "host-b").unwrap();
    let k = "node_id/127.0.0.1#0";
    assert_eq!(a.get(k).unwrap(), None);
    a.save(k, &[1; 20]).unwrap();
    assert_eq!(a.get(k).unwrap(), Some(vec![1; 20]));
    assert_eq!(b.get(k).unwrap(), None, "another host's id is not ours");
    b.save(k, &[2; 20]).unwrap();
    a.save(k, &[3; 20]).unwrap();
    assert_eq!(a.get(k).unwrap(), Some(vec![3; 20]));
    assert_eq!(b.get(k).unwrap(), Some(vec![2; 20]));
    assert_eq!(a.get("node_id/::1#0").unwrap(), None);
    pg.stop().unwrap();
    assert!(a.get(k).is_err(), "the server is down");
    pg.start_again().unwrap();
    assert_eq!(a.get(k).unwrap(), Some(vec![3; 20]), "connected again");
}
