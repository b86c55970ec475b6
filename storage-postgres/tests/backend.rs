//! The PostgreSQL store behind the common storage interface, against a real
//! server: `PgSink` answers "known?" from its cache for what it found or sent
//! (before the writer commits), keeps the cached counts in step with the scrapes it
//! sends, and counts its cache hits; `PgReader` answers like the LMDB store where
//! it can, says clearly what it cannot do yet, and reconnects after its
//! connection was killed.

use magnetar_storage::backend::{IndexSink, ReadIndex};
use magnetar_storage::synth::Synth;
use magnetar_storage::{Op, Store, StoreOptions};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgReader, PgSink, PgWriterConfig};

#[test]
fn sink_knows_what_it_sent_and_found_and_counts_its_cache_hits() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("sink").unwrap();
    let mut s = Synth::new(7);
    let a = s.torrent(1_700_000_000, true);
    let b = s.torrent(1_700_000_001, false);

    let mut sink = PgSink::start(&url, PgWriterConfig::default());
    assert_eq!(sink.record(&a.infohash).unwrap(), None);
    sink.send(Op::Torrent(Box::new(a.clone()))).unwrap();
    // Known at once (from the cache), committed or not.
    let r = sink.record(&a.infohash).unwrap().expect("known once sent");
    assert_eq!(r.name, a.name);
    assert_eq!(sink.remote_totals().unwrap().cache_hits, 1);
    sink.flush().unwrap();
    let rt = sink.remote_totals().unwrap();
    assert_eq!((rt.buffered, rt.down, rt.retries), (0, false, 0));
    assert_eq!(sink.totals().torrents_new, 1);
    // Tombstones, nodes and statistics come from PostgreSQL (schema 2).
    assert_eq!(sink.tombstone(&a.infohash).unwrap(), None);
    assert!(sink.saved_nodes(10).unwrap().is_empty());
    assert_eq!(sink.stats().unwrap().torrents, 1);
    let totals = Box::new(sink).close().unwrap();
    assert_eq!(totals.torrents_new, 1);

    // A new sink (empty cache) finds it in PostgreSQL, then in its cache; a scrape
    // it sends updates the cached counts.
    let mut sink = PgSink::start(&url, PgWriterConfig::default());
    assert_eq!(sink.record(&a.infohash).unwrap().unwrap().name, a.name);
    assert_eq!(sink.remote_totals().unwrap().cache_hits, 0);
    sink.send(Op::Scrape {
        infohash: a.infohash,
        at: 1_700_000_500,
        seeders: 9,
        leechers: 4,
    })
    .unwrap();
    let r = sink.record(&a.infohash).unwrap().unwrap();
    assert_eq!(
        (r.seeders, r.leechers, r.scraped_at),
        (Some(9), Some(4), Some(1_700_000_500))
    );
    assert_eq!(sink.remote_totals().unwrap().cache_hits, 1);
    assert_eq!(sink.record(&b.infohash).unwrap(), None);
    sink.flush().unwrap();
    let reader = PgReader::connect(&url, 2).unwrap();
    assert_eq!(
        reader.record(&a.infohash).unwrap().unwrap().seeders,
        Some(9)
    );
    Box::new(sink).close().unwrap();
}

#[test]
fn reader_answers_like_lmdb_refuses_clearly_and_reconnects() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("reader").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lmdb = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut s = Synth::new(8);
    let ops: Vec<Op> = (0..300)
        .map(|i| Op::Torrent(Box::new(s.torrent(1_700_000_000 + i / 2, i % 3 == 0))))
        .collect();
    lmdb.apply_batch(&ops).unwrap();
    let mut pg_store =
        magnetar_storage_pg::PgStore::connect(&url, magnetar_storage_pg::PgOptions::default())
            .unwrap();
    pg_store.apply_batch(&ops).unwrap();
    let reader = PgReader::connect(&url, 3).unwrap();
    let (l, p): (&dyn ReadIndex, &dyn ReadIndex) = (&lmdb, &reader);
    assert_eq!((l.kind(), p.kind()), ("lmdb", "postgres"));
    assert_eq!(l.count().unwrap(), p.count().unwrap());
    assert_eq!(l.recent(40).unwrap(), p.recent(40).unwrap());
    let ihs: Vec<_> = l.recent(300).unwrap().iter().map(|r| r.infohash).collect();
    assert_eq!(l.facets_of(&ihs).unwrap(), p.facets_of(&ihs).unwrap());
    for ih in ihs.iter().take(30) {
        assert_eq!(l.get(ih).unwrap(), p.get(ih).unwrap());
        assert_eq!(l.info_dict(ih).unwrap(), p.info_dict(ih).unwrap());
        assert_eq!(l.facets(ih).unwrap(), p.facets(ih).unwrap());
        // Prefixes of 7 (odd) and 8 hex digits.
        for nibbles in [7usize, 8] {
            assert_eq!(
                l.infohashes_with_prefix(&ih[..4], nibbles, 5).unwrap(),
                p.infohashes_with_prefix(&ih[..4], nibbles, 5).unwrap(),
            );
        }
    }
    let (mut el, mut ep) = (Vec::new(), Vec::new());
    let rl = l.export_jsonl(&mut el, Some(1_700_000_050)).unwrap();
    let rp = p.export_jsonl(&mut ep, Some(1_700_000_050)).unwrap();
    assert_eq!(rl, rp);
    assert_eq!(rl.torrents, 200);
    assert_eq!(el, ep);
    // The dashboard's reads answer as LMDB's (the crawl records are compared
    // one by one in tests/records.rs).
    assert_eq!(l.stats().unwrap().torrents, p.stats().unwrap().torrents);
    assert_eq!(l.failure_reasons().unwrap(), p.failure_reasons().unwrap());
    assert_eq!(l.top_clients(3).unwrap(), p.top_clients(3).unwrap());
    assert_eq!(
        l.discoveries_per_hour(1_700_000_000, 48).unwrap(),
        p.discoveries_per_hour(1_700_000_000, 48).unwrap()
    );
    // Every connection of the pool killed by the server: a read may fail once
    // per slot with a clear error, then the slots reconnect.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 2, "killed {killed}");
    let mut failed = 0;
    for _ in 0..10 {
        match p.count() {
            Ok(n) => assert_eq!(n, 300),
            Err(e) => {
                failed += 1;
                assert!(e.to_string().contains("PostgreSQL"), "{e}");
            }
        }
    }
    assert!(failed <= 3, "{failed} reads failed after the kill");
    assert_eq!(p.count().unwrap(), 300);
}
