use std::collections::HashSet;
use std::time::Duration;

use magnetar_storage::synth::Synth;
use magnetar_storage::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreOptions::new(dir.path().join("db"))).unwrap()
}

fn ih(n: u32) -> InfoHash {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[19] = 0xab;
    h
}

fn torrent(n: u32, name: &str, files: &[(&str, u64)], at: u64) -> TorrentInput {
    TorrentInput {
        infohash: ih(n),
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: files.iter().map(|f| f.1).sum(),
        piece_length: 1 << 18,
        piece_count: 4,
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
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: Some(format!("d4:name{}:{}e", name.len(), name).into_bytes()),
    }
}

fn put(store: &Store, ts: Vec<TorrentInput>) -> BatchReport {
    let ops: Vec<Op> = ts.into_iter().map(|t| Op::Torrent(Box::new(t))).collect();
    store.apply_batch(&ops).unwrap()
}

fn names(r: &SearchResults) -> Vec<String> {
    r.hits.iter().map(|h| h.name.clone()).collect()
}

#[test]
fn get_returns_record_and_files_and_repeats_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let t = torrent(
        1,
        "Big Buck Bunny",
        &[("bbb/video.mkv", 100), ("bbb/subs/en.srt", 2)],
        1000,
    );
    let r = put(&store, vec![t.clone()]);
    assert_eq!(r.torrents_new, 1);
    let before = store.stats().unwrap();
    let got = store.get(&ih(1)).unwrap().unwrap();
    assert_eq!(got.record.name, "Big Buck Bunny");
    assert_eq!(got.record.total_size, 102);
    assert_eq!(got.record.file_count, 2);
    assert!(got.record.has_info);
    assert_eq!(got.files, t.files);
    assert_eq!(store.info_dict(&ih(1)).unwrap(), t.info);

    // The same torrent again, seen later by another source, twice in one batch.
    let mut again = t.clone();
    again.discovered_at = 5000;
    again.sources = Sources::ANNOUNCE;
    again.seeders = Some(7);
    let r = put(&store, vec![again.clone(), again]);
    assert_eq!((r.torrents_new, r.torrents_updated), (0, 2));
    let got = store.get(&ih(1)).unwrap().unwrap();
    assert_eq!(got.record.discovered_at, 1000);
    assert_eq!(got.record.last_seen_at, 5000);
    assert_eq!(got.record.sources, Sources::SAMPLE | Sources::ANNOUNCE);
    assert_eq!(got.record.seeders, Some(7));
    assert_eq!(store.count().unwrap(), 1);
    let after = store.stats().unwrap();
    assert_eq!(
        before.posting_blocks, after.posting_blocks,
        "terms written twice"
    );

    // A sighting updates; a sighting of an unknown infohash is counted, not stored.
    let r = store
        .apply_batch(&[
            Op::Seen {
                infohash: ih(1),
                at: 9000,
                sources: Sources::GET_PEERS,
                seeders: None,
                leechers: Some(2),
            },
            Op::Seen {
                infohash: ih(2),
                at: 9000,
                sources: Sources::GET_PEERS,
                seeders: None,
                leechers: None,
            },
        ])
        .unwrap();
    assert_eq!((r.seen_updated, r.seen_unknown), (1, 1));
    let got = store.get(&ih(1)).unwrap().unwrap().record;
    assert_eq!(got.last_seen_at, 9000);
    assert!(got.sources.contains(Sources::GET_PEERS));
    assert_eq!(got.leechers, Some(2));
    assert!(store.contains(&ih(1)).unwrap());
    assert!(!store.contains(&ih(2)).unwrap());
    assert!(store.get(&ih(2)).unwrap().is_none());
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn search_unicode_paths_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(
        &store,
        vec![
            torrent(1, "Été à Paris 1080p", &[("Été à Paris.mkv", 10)], 1),
            torrent(
                2,
                "東京2020 オリンピック 開会式",
                &[("東京2020/開会式.mp4", 20)],
                2,
            ),
            torrent(3, "STRAßE der Ölsardinen", &[("a.txt", 30)], 3),
            torrent(
                4,
                "Ubuntu 22.04 Desktop",
                &[("ubuntu-22.04-desktop-amd64.iso", 40)],
                4,
            ),
            torrent(
                5,
                "Linux Collection",
                &[("isos/Ubuntu/ubuntu-20.04.iso", 50), ("isos/debian.iso", 1)],
                5,
            ),
            torrent(6, "ΣΟΦΙΑ Greek Songs", &[("01 ΑΓΑΠΗ.flac", 60)], 6),
        ],
    );
    let s = |q: &str| names(&store.search(q, 10, 0, Order::Relevance).unwrap());
    assert_eq!(s("été"), vec!["Été à Paris 1080p"]);
    assert_eq!(s("ÉTÉ PARIS"), vec!["Été à Paris 1080p"]);
    assert_eq!(s("東京2020"), vec!["東京2020 オリンピック 開会式"]);
    assert_eq!(s("開会式"), vec!["東京2020 オリンピック 開会式"]);
    assert_eq!(s("straße ölsardinen"), vec!["STRAßE der Ölsardinen"]);
    assert_eq!(s("σοφια"), vec!["ΣΟΦΙΑ Greek Songs"]);
    assert_eq!(s("αγάπη"), vec!["ΣΟΦΙΑ Greek Songs"], "accents are folded");
    assert_eq!(s("ete a paris"), vec!["Été à Paris 1080p"]);
    assert_eq!(s("strasse"), Vec::<String>::new(), "ß is not a diacritic");
    assert_eq!(s("αγαπη"), vec!["ΣΟΦΙΑ Greek Songs"], "file-path hit");
    // A word found only in a file path.
    assert_eq!(s("debian"), vec!["Linux Collection"]);
    // Name hits rank above path-only hits: "ubuntu" is in 4's name, in 5's paths.
    assert_eq!(
        s("ubuntu"),
        vec!["Ubuntu 22.04 Desktop", "Linux Collection"]
    );
    // Prefix on the last word only.
    assert_eq!(s("ubu"), vec!["Ubuntu 22.04 Desktop", "Linux Collection"]);
    assert_eq!(s("ubuntu 22.04 desk"), vec!["Ubuntu 22.04 Desktop"]);
    assert_eq!(
        s("desk 22"),
        Vec::<String>::new(),
        "only the last word is a prefix"
    );
    // "東京2020" is the bigram 東京, the unit 京 and the word 2020.
    assert_eq!(
        s("20"),
        vec!["東京2020 オリンピック 開会式", "Linux Collection"]
    );
    assert_eq!(
        s("ubuntu 2"),
        vec!["Ubuntu 22.04 Desktop", "Linux Collection"]
    );
    assert_eq!(s("  ...  "), Vec::<String>::new());
    assert_eq!(s("nothing"), Vec::<String>::new());
}

#[test]
fn search_paging_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // 25 matches with distinct sizes; times given out of order so the exact time
    // ordering path is used as well as the fast one.
    let mut ts = Vec::new();
    for i in 0..25u32 {
        let at = 1000 + u64::from((i * 7) % 25);
        ts.push(torrent(
            i,
            &format!("common item{i}"),
            &[("f.bin", 100 + u64::from(i * 13 % 25))],
            at,
        ));
    }
    // Later times first, then earlier ones: doc id order is no longer time order.
    let (late, early): (Vec<_>, Vec<_>) = ts.iter().cloned().partition(|t| t.discovered_at >= 1012);
    put(&store, late);
    put(&store, early);
    let all = store.search("common", 100, 0, Order::Relevance).unwrap();
    assert_eq!(all.total, 25);
    let mut seen = HashSet::new();
    for page in 0..3 {
        let r = store
            .search("common", 10, page * 10, Order::Relevance)
            .unwrap();
        assert_eq!(r.total, 25);
        assert_eq!(r.hits.len(), if page < 2 { 10 } else { 5 });
        for h in r.hits {
            assert!(seen.insert(h.infohash), "page overlap");
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(store
        .search("common", 10, 25, Order::Relevance)
        .unwrap()
        .hits
        .is_empty());

    let by = |o: Order| store.search("common", 25, 0, o).unwrap().hits;
    let newest: Vec<u64> = by(Order::Newest).iter().map(|h| h.discovered_at).collect();
    let mut sorted = newest.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(newest, sorted);
    let oldest: Vec<u64> = by(Order::Oldest).iter().map(|h| h.discovered_at).collect();
    sorted.reverse();
    assert_eq!(oldest, sorted);
    let largest: Vec<u64> = by(Order::Largest).iter().map(|h| h.total_size).collect();
    let mut s = largest.clone();
    s.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(largest, s);
    let smallest: Vec<u64> = by(Order::Smallest).iter().map(|h| h.total_size).collect();
    s.reverse();
    assert_eq!(smallest, s);
    // Paging in time order stays consistent.
    let p2 = store.search("common", 5, 5, Order::Newest).unwrap();
    assert_eq!(
        p2.hits.iter().map(|h| h.discovered_at).collect::<Vec<_>>(),
        newest[5..10]
    );

    // Walking by_time/by_size (many matches) orders exactly like per-match lookups.
    for o in [
        Order::Newest,
        Order::Oldest,
        Order::Largest,
        Order::Smallest,
    ] {
        store.set_order_mode(1);
        let lookups = store.search("common", 7, 3, o).unwrap().hits;
        store.set_order_mode(2);
        let walked = store.search("common", 7, 3, o).unwrap().hits;
        store.set_order_mode(0);
        let key = |h: &TorrentRecord| (h.discovered_at, h.total_size);
        assert_eq!(
            lookups.iter().map(key).collect::<Vec<_>>(),
            walked.iter().map(key).collect::<Vec<_>>(),
            "{o:?}"
        );
    }

    // recent() is by discovered_at.
    let recent: Vec<u64> = store
        .recent(3)
        .unwrap()
        .iter()
        .map(|r| r.discovered_at)
        .collect();
    assert_eq!(recent, vec![1024, 1023, 1022]);
}

#[test]
fn size_orders_walking_size_classes_match_exact_lookups() {
    // Sizes over many size classes, with repeats (ties are broken by doc id), and
    // every third torrent not matching the query.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ts = Vec::new();
    let mut x: u64 = 12345;
    for i in 0..900u32 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let size = ((x >> 33) % 50) << ((x >> 20) % 40);
        let name = if i % 3 == 0 { "other" } else { "bulk" };
        ts.push(torrent(
            i,
            &format!("{name} {i}"),
            &[("f", size)],
            1000 + u64::from(i),
        ));
    }
    put(&store, ts);
    let key = |r: &SearchResults| {
        r.hits
            .iter()
            .map(|h| (h.total_size, h.infohash))
            .collect::<Vec<_>>()
    };
    for o in [Order::Largest, Order::Smallest] {
        for (limit, offset) in [(20, 0), (50, 17), (100, 500), (10, 595)] {
            store.set_order_mode(1);
            let lookups = store.search("bulk", limit, offset, o).unwrap();
            store.set_order_mode(2);
            let walked = store.search("bulk", limit, offset, o).unwrap();
            store.set_order_mode(0);
            assert_eq!(lookups.total, 600);
            assert_eq!(key(&lookups), key(&walked), "{o:?} {limit} {offset}");
            assert_eq!(lookups.hits.len(), limit.min(600 - offset));
            let sizes: Vec<u64> = lookups.hits.iter().map(|h| h.total_size).collect();
            let mut sorted = sizes.clone();
            sorted.sort_unstable();
            if o == Order::Largest {
                sorted.reverse();
            }
            assert_eq!(sizes, sorted);
        }
    }
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn newest_fast_path_when_inserted_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for batch in 0..3u32 {
        // Within a batch the keys are written in infohash order, but doc ids follow
        // discovery time.
        let ts = (0..10u32).rev().map(|i| {
            torrent(
                batch * 10 + i,
                "word",
                &[("x", 1)],
                u64::from(batch * 10 + i),
            )
        });
        put(&store, ts.collect());
    }
    let r = store.search("word", 30, 0, Order::Newest).unwrap();
    let at: Vec<u64> = r.hits.iter().map(|h| h.discovered_at).collect();
    assert_eq!(at, (0..30).rev().collect::<Vec<u64>>());
}

#[test]
fn map_grows_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::new(dir.path().join("db"));
    opts.initial_map_size = 64 * 1024; // 64 KiB: full after a few torrents
    let store = Store::open(opts).unwrap();
    let start = store.stats().unwrap().map_size;
    let writer = store.writer(WriterConfig::default()).unwrap();
    let mut synth = Synth::new(7);
    let mut all = Vec::new();
    for i in 0..3000 {
        let t = synth.torrent(i, i % 2 == 0);
        all.push(t.infohash);
        writer.send(Op::Torrent(Box::new(t))).unwrap();
    }
    let totals = writer.close().unwrap();
    assert!(totals.map_grown > 0, "the map never grew");
    let end = store.stats().unwrap().map_size;
    assert!(end > start, "{start} -> {end}");
    for h in &all {
        assert!(store.contains(h).unwrap());
    }
    assert_eq!(store.count().unwrap(), 3000);
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn writer_errors_surface_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::new(dir.path().join("db"));
    opts.initial_map_size = 64 * 1024;
    opts.max_map_size = 256 * 1024; // cannot hold the data below
    let store = Store::open(opts).unwrap();
    let writer = store.writer(WriterConfig::default()).unwrap();
    let mut synth = Synth::new(1);
    for i in 0..2000 {
        if writer
            .send(Op::Torrent(Box::new(synth.torrent(i, true))))
            .is_err()
        {
            break;
        }
    }
    let err = writer.flush().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("map is full") && msg.contains("records not written"),
        "{msg}"
    );
    assert!(writer
        .send(Op::Torrent(Box::new(synth.torrent(0, false))))
        .is_err());
    assert!(writer.close().is_err());
    // What was committed before is intact.
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn flush_waits_for_commit_and_reports_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let commits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = commits.clone();
    let writer = store
        .writer(WriterConfig {
            max_delay: Duration::from_secs(3600), // only flush or size commits
            on_commit: Some(Box::new(move |i: &CommitInfo| {
                c.lock().unwrap().push((i.seq, i.records))
            })),
            ..WriterConfig::default()
        })
        .unwrap();
    assert!(
        store.writer(WriterConfig::default()).is_err(),
        "a second writer"
    );
    writer
        .send(Op::Torrent(Box::new(torrent(1, "a", &[("a", 1)], 1))))
        .unwrap();
    writer
        .send(Op::Torrent(Box::new(torrent(2, "b", &[("b", 1)], 2))))
        .unwrap();
    assert_eq!(writer.flush().unwrap(), 1);
    assert!(store.contains(&ih(2)).unwrap());
    assert_eq!(writer.flush().unwrap(), 1, "nothing pending: no new commit");
    writer
        .send(Op::Torrent(Box::new(torrent(3, "c", &[("c", 1)], 3))))
        .unwrap();
    writer.close().unwrap();
    assert_eq!(*commits.lock().unwrap(), vec![(1, 2), (2, 1)]);
    assert_eq!(store.count().unwrap(), 3);
    // The writer slot is free again.
    store
        .writer(WriterConfig::default())
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn commit_after_max_delay_and_reads_run_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let writer = store
        .writer(WriterConfig {
            max_delay: Duration::from_millis(20),
            channel_capacity: 16,
            ..Default::default()
        })
        .unwrap();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            for _ in 0..200 {
                let n = store.search("item", 5, 0, Order::Newest).unwrap().total;
                assert!(n >= last, "counts went backwards");
                last = n;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    for i in 0..500u32 {
        writer
            .send(Op::Torrent(Box::new(torrent(
                i,
                &format!("item {i}"),
                &[("x", 1)],
                u64::from(i),
            ))))
            .unwrap();
    }
    // No flush: the 20 ms timer commits.
    let t0 = std::time::Instant::now();
    while store.count().unwrap() < 500 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timer commit never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    reader.join().unwrap();
    writer.close().unwrap();
}

#[test]
fn export_import_jsonl_and_torrent_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(
        &store,
        vec![
            torrent(1, "One & Only", &[("one/a b.txt", 5)], 100),
            torrent(2, "Two", &[("two.iso", 6)], 200),
            torrent(3, "Three", &[("three.iso", 7)], 300),
        ],
    );
    let mut out = Vec::new();
    let r = store.export_jsonl(&mut out, None).unwrap();
    assert_eq!(r.torrents, 3);
    assert_eq!(r.last_discovered_at, Some(300));
    let text = String::from_utf8(out.clone()).unwrap();
    let first: JsonTorrent = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first.infohash, to_hex(&ih(1)));
    assert_eq!(
        first.magnet,
        format!(
            "magnet:?xt=urn:btih:{}&dn=One%20%26%20Only&xl=5",
            to_hex(&ih(1))
        )
    );
    assert_eq!(
        first.files,
        vec![JsonFile {
            path: "one/a b.txt".into(),
            size: 5
        }]
    );
    // Incremental.
    let mut inc = Vec::new();
    assert_eq!(store.export_jsonl(&mut inc, Some(200)).unwrap().torrents, 2);

    // .torrent files.
    let tdir = dir.path().join("torrents");
    assert_eq!(store.export_torrent_files(&tdir, None).unwrap().torrents, 3);
    let bytes = std::fs::read(tdir.join(format!("{}.torrent", to_hex(&ih(2))))).unwrap();
    assert_eq!(bytes, b"d4:infod4:name3:Twoee");

    // Import into another store, twice, with a bad line.
    let dir2 = tempfile::tempdir().unwrap();
    let other = open(&dir2);
    let mut input = out.clone();
    input.extend_from_slice(b"not json\n{\"infohash\":\"zz\",\"name\":\"x\",\"size\":1,\"files\":[],\"discovered_at\":1}\n");
    let rep = other.import_jsonl(&input[..]).unwrap();
    assert_eq!((rep.new, rep.skipped), (3, 2));
    assert_eq!(rep.errors.len(), 2);
    let rep = other.import_jsonl(&out[..]).unwrap();
    assert_eq!((rep.new, rep.updated), (0, 3));
    let a = store.get(&ih(1)).unwrap().unwrap();
    let b = other.get(&ih(1)).unwrap().unwrap();
    assert_eq!((a.record.name, a.files), (b.record.name, b.files));
    assert!(b.record.sources.contains(Sources::IMPORT));
    assert!(other.integrity_check().unwrap().is_ok());
}

#[cfg(feature = "magnetico")]
#[test]
fn import_magnetico_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("magnetico.sqlite3");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE torrents (id INTEGER PRIMARY KEY, info_hash BLOB NOT NULL UNIQUE, name TEXT NOT NULL,
                total_size INTEGER NOT NULL, discovered_on INTEGER NOT NULL);
             CREATE TABLE files (id INTEGER PRIMARY KEY, torrent_id INTEGER REFERENCES torrents, size INTEGER NOT NULL, path TEXT NOT NULL);",
        )
        .unwrap();
        for i in 1..=50i64 {
            c.execute(
                "INSERT INTO torrents (id, info_hash, name, total_size, discovered_on) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![i, ih(i as u32).to_vec(), format!("Magnetico Torrent {i}"), i * 10, 1_500_000_000 + i],
            )
            .unwrap();
            for f in 0..(i % 4) {
                c.execute(
                    "INSERT INTO files (torrent_id, size, path) VALUES (?1, ?2, ?3)",
                    rusqlite::params![i, f + 1, format!("dir{i}/file{f}.bin")],
                )
                .unwrap();
            }
        }
        // A bad row: 3-byte info hash.
        c.execute(
            "INSERT INTO torrents (id, info_hash, name, total_size, discovered_on) VALUES (99, x'010203', 'bad', 1, 1)",
            [],
        )
        .unwrap();
    }
    let store = open(&dir);
    let rep = store.import_magnetico(&db).unwrap();
    assert_eq!((rep.read, rep.new, rep.skipped), (51, 50, 1));
    let t = store.get(&ih(7)).unwrap().unwrap();
    assert_eq!(t.record.name, "Magnetico Torrent 7");
    assert_eq!(t.record.discovered_at, 1_500_000_007);
    assert_eq!(t.files.len(), 3);
    assert_eq!(t.files[2].path, "dir7/file2.bin");
    assert_eq!(
        store
            .search("file2", 100, 0, Order::Relevance)
            .unwrap()
            .total,
        12
    ); // i % 4 == 3
    let rep = store.import_magnetico(&db).unwrap();
    assert_eq!((rep.new, rep.updated), (0, 50), "idempotent");
    assert!(store.integrity_check().unwrap().is_ok());
}

fn peer(port: u16, last_seen: u64, client: &str, ok: bool, status: PeerStatus) -> PeerRecord {
    PeerRecord {
        addr: format!("10.0.0.1:{port}").parse().unwrap(),
        client: client.into(),
        attempts: 1,
        successes: u32::from(ok),
        failures: u32::from(!ok),
        rtt_ms: Some(30),
        ut_metadata: Some(ok),
        last_error: String::new(),
        status,
        last_seen,
    }
}

fn node(n: u8, last_seen: u64, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        id: [n; 20],
        addr: format!("192.0.2.{n}:6881").parse().unwrap(),
        rtt_ms: Some(n.into()),
        queries: QueryCounts {
            find_node: 3,
            ..Default::default()
        },
        responses: QueryCounts {
            find_node: 2,
            ..Default::default()
        },
        status,
        last_seen,
    }
}

fn request(ms: u64, client: &str, ok: bool, reason: &str) -> RequestRecord {
    RequestRecord {
        infohash: ih(1),
        peer: "10.0.0.1:1".parse().unwrap(),
        started_at_ms: ms,
        duration_ms: 100,
        outcome: if ok {
            RequestOutcome::Success
        } else {
            RequestOutcome::Failure
        },
        reason: reason.into(),
        pieces: u32::from(ok),
        client: client.into(),
        encryption: String::new(),
        transport: String::new(),
    }
}

#[test]
fn peers_nodes_sessions_requests_stats_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ops = vec![
        Op::Peer(peer(1, 100, "qB", true, PeerStatus::Good)),
        Op::Peer(peer(2, 10, "Tr", false, PeerStatus::Bad)),
        Op::Peer(peer(3, 10, "X", false, PeerStatus::Blacklisted)),
        Op::Node(node(1, 50, NodeStatus::Questionable)),
        Op::Node(node(2, 40, NodeStatus::Good)),
        Op::Node(node(3, 90, NodeStatus::Bad)),
        Op::Node(node(4, 5, NodeStatus::Good)),
        Op::Session(SessionRecord {
            id: 1,
            started_at: 0,
            ended_at: Some(7200),
            counters: SessionCounters {
                torrents_new: 100,
                ..Default::default()
            },
            ..Default::default()
        }),
    ];
    for i in 0..10 {
        let mut r = request(
            i * 1000,
            if i % 2 == 0 { "qB" } else { "Tr" },
            i % 3 == 0,
            if i % 3 == 0 { "" } else { "timeout" },
        );
        r.encryption = if i % 2 == 0 { "rc4" } else { "plaintext" }.into();
        ops.push(Op::Request(r));
    }
    store.apply_batch(&ops).unwrap();
    assert_eq!(
        store
            .peer(&"10.0.0.1:1".parse().unwrap())
            .unwrap()
            .unwrap()
            .client,
        "qB"
    );
    let nodes: Vec<u8> = store
        .saved_nodes(10)
        .unwrap()
        .iter()
        .map(|n| n.id[0])
        .collect();
    assert_eq!(
        nodes,
        vec![2, 4, 1],
        "good first, newest first, bad left out"
    );
    assert_eq!(store.saved_nodes(1).unwrap().len(), 1);
    let y = store.session_yields(0).unwrap();
    assert!((y[0].torrents_per_hour - 50.0).abs() < 1e-9);
    assert_eq!(
        store.failure_reasons().unwrap(),
        vec![("timeout".to_string(), 6)]
    );
    // Even requests over RC4 (successes 0 and 6), odd in plaintext (3 and 9).
    assert_eq!(
        store.encryption_outcomes().unwrap(),
        vec![("plaintext".to_string(), 5, 2), ("rc4".to_string(), 5, 2)]
    );
    let top = store.top_clients(10).unwrap();
    // qB succeeds on requests 0 and 6, Tr on 3 and 9: the tie is broken by name.
    assert_eq!(top[0].client, "Tr");
    assert_eq!(top[0].successes, 2);
    assert_eq!(store.recent_requests(2).unwrap()[0].started_at_ms, 9000);
    let st = store.stats().unwrap();
    assert_eq!(
        (st.peers, st.nodes, st.sessions, st.requests),
        (3, 4, 1, 10)
    );

    let rep = store
        .prune(&RetentionPolicy {
            now: 100,
            requests_max_age_secs: Some(96), // drops started before 4 s
            requests_max_count: Some(4),
            peers_max_age_secs: Some(50),
            nodes_max_age_secs: Some(60),
        })
        .unwrap();
    assert_eq!(
        rep,
        PruneReport {
            requests: 6,
            peers: 1,
            nodes: 1 // last seen at 5 < 100 - 60
        }
    );
    assert_eq!(store.stats().unwrap().requests, 4);
    assert_eq!(
        store
            .recent_requests(10)
            .unwrap()
            .last()
            .unwrap()
            .started_at_ms,
        6000
    );
    assert!(
        store
            .peer(&"10.0.0.1:3".parse().unwrap())
            .unwrap()
            .is_some(),
        "blacklist kept"
    );
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn request_log_is_bounded_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::new(dir.path().join("db"));
    opts.max_requests = 100;
    let store = Store::open(opts).unwrap();
    for b in 0..5 {
        let ops: Vec<Op> = (0..60)
            .map(|i| Op::Request(request(b * 100 + i, "c", true, "")))
            .collect();
        store.apply_batch(&ops).unwrap();
    }
    assert_eq!(store.stats().unwrap().requests, 100);
    assert_eq!(store.recent_requests(1000).unwrap().len(), 100);
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn compact_swaps_in_a_smaller_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let opts = StoreOptions::new(&path);
    let mut synth = Synth::new(3);
    let keep: Vec<TorrentInput> = (0..300).map(|i| synth.torrent(i, true)).collect();
    {
        let store = Store::open(opts.clone()).unwrap();
        put(&store, keep.clone());
        // Churn: many requests then prune them, leaving free pages.
        let ops: Vec<Op> = (0..20_000)
            .map(|i| Op::Request(request(i, "c", true, "")))
            .collect();
        store.apply_batch(&ops).unwrap();
        store
            .prune(&RetentionPolicy {
                requests_max_count: Some(0),
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(
            compact(&opts),
            Err(StoreError::AlreadyOpen { .. })
        ));
    }
    wait_closed(&path);
    let (before, after) = compact(&opts).unwrap();
    assert!(after < before, "{before} -> {after}");
    let store = Store::open(opts).unwrap();
    assert!(store.integrity_check().unwrap().is_ok());
    for t in &keep {
        assert_eq!(store.get(&t.infohash).unwrap().unwrap().files, t.files);
    }
}

#[test]
fn default_dir_follows_xdg() {
    // Only reads the environment: XDG_DATA_HOME wins when absolute.
    let d = default_data_dir();
    if let Some(x) =
        std::env::var_os("XDG_DATA_HOME").filter(|x| std::path::Path::new(x).is_absolute())
    {
        assert_eq!(d.unwrap(), std::path::PathBuf::from(x).join("magnetar"));
    } else if let Some(h) = std::env::var_os("HOME") {
        assert_eq!(
            d.unwrap(),
            std::path::PathBuf::from(h).join(".local/share/magnetar")
        );
    }
}

#[test]
fn second_open_in_process_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _a = open(&dir);
    let e = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap_err();
    assert!(
        e.to_string().contains("already open in this process"),
        "{e}"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Writer>();
    check::<StoreError>();
}

/// A v2 hash for tests: its first 20 bytes are `ih(n)` with the last byte changed.
fn v2(n: u32) -> InfoHashV2 {
    let mut h = [0x5au8; 32];
    h[..20].copy_from_slice(&ih(n));
    h[19] = 0xcd;
    h
}

#[test]
fn hybrid_is_stored_once_and_found_by_either_hash_v2_only_by_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut hybrid = torrent(1, "Hybrid Torrent", &[("h.bin", 10)], 100);
    hybrid.kind = HashKind::Hybrid;
    hybrid.v2 = Some(v2(1));
    let mut v2only = torrent(2, "Vtwo Only", &[("v.bin", 20)], 101);
    v2only.infohash = truncate_v2(&v2(2));
    v2only.kind = HashKind::V2;
    v2only.v2 = Some(v2(2));
    let v1 = torrent(3, "Vone Plain", &[("p.bin", 30)], 102);
    let r = put(&store, vec![hybrid.clone(), v2only.clone(), v1]);
    assert_eq!(r.torrents_new, 3);
    // The hybrid again, as a sighting by its v2 hash: the same record.
    let r = store
        .apply_batch(&[Op::Seen {
            infohash: truncate_v2(&v2(1)),
            at: 900,
            sources: Sources::GET_PEERS,
            seeders: None,
            leechers: None,
        }])
        .unwrap();
    assert_eq!((r.seen_updated, r.seen_unknown), (1, 0));
    let by_v1 = store.get(&ih(1)).unwrap().unwrap().record;
    let by_v2 = store.get(&truncate_v2(&v2(1))).unwrap().unwrap().record;
    assert_eq!(by_v1, by_v2);
    assert_eq!((by_v1.kind, by_v1.v2), (HashKind::Hybrid, Some(v2(1))));
    assert_eq!(by_v1.infohash, ih(1));
    assert_eq!(by_v1.last_seen_at, 900);
    // The full v2 hash as a user types it, and a btmh magnet.
    let full = to_hex(&v2(1));
    let TorrentRef::Full(k) = parse_torrent_ref(&full).unwrap() else {
        panic!("a full hash")
    };
    assert_eq!(store.get(&k).unwrap().unwrap().record.infohash, ih(1));
    let TorrentRef::Full(k) =
        parse_torrent_ref(&format!("magnet:?xt=urn:btmh:1220{}", to_hex(&v2(2)))).unwrap()
    else {
        panic!("a full hash")
    };
    let got = store.get(&k).unwrap().unwrap().record;
    assert_eq!(
        (got.kind, got.v2, got.name.as_str()),
        (HashKind::V2, Some(v2(2)), "Vtwo Only")
    );
    // A prefix of the v2 hash finds the hybrid too.
    let p = store
        .infohashes_with_prefix(&truncate_v2(&v2(1))[..5], 10, 10)
        .unwrap();
    assert!(p.contains(&truncate_v2(&v2(1))), "{p:?}");
    // Stored once: one count, one search hit, a repeat of the hybrid is an update.
    assert_eq!(store.count().unwrap(), 3);
    let hits = store.search("hybrid", 10, 0, Order::Relevance).unwrap();
    assert_eq!(hits.total, 1);
    let r = put(&store, vec![hybrid]);
    assert_eq!((r.torrents_new, r.torrents_updated), (0, 1));
    assert_eq!(store.count().unwrap(), 3);
    // Magnets: both xt for the hybrid, btmh only for v2-only.
    let m = magnet_of(&by_v1);
    assert!(m.starts_with(&format!(
        "magnet:?xt=urn:btih:{}&xt=urn:btmh:1220{}&dn=Hybrid%20Torrent",
        to_hex(&ih(1)),
        to_hex(&v2(1))
    )));
    assert!(magnet_of(&got).starts_with(&format!("magnet:?xt=urn:btmh:1220{}&dn=", to_hex(&v2(2)))));
    assert!(store.integrity_check().unwrap().is_ok());

    // The export carries kind and hash; an import into another store keeps them.
    let mut out = Vec::new();
    store.export_jsonl(&mut out, None).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("\"hash_kind\":\"hybrid\""), "{text}");
    assert!(text.contains(&format!("\"v2_infohash\":\"{}\"", to_hex(&v2(2)))));
    let dir2 = tempfile::tempdir().unwrap();
    let other = open(&dir2);
    assert_eq!(other.import_jsonl(&out[..]).unwrap().new, 3);
    let back = other.get(&truncate_v2(&v2(1))).unwrap().unwrap().record;
    assert_eq!(
        (back.infohash, back.kind, back.v2),
        (ih(1), HashKind::Hybrid, Some(v2(1)))
    );
    assert!(other.integrity_check().unwrap().is_ok());
}

#[test]
fn a_v1_record_learns_it_is_a_hybrid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(&store, vec![torrent(1, "Was Vone", &[("a", 1)], 1)]);
    assert!(store.get(&truncate_v2(&v2(1))).unwrap().is_none());
    let mut h = torrent(1, "Was Vone", &[("a", 1)], 2);
    h.kind = HashKind::Hybrid;
    h.v2 = Some(v2(1));
    put(&store, vec![h]);
    let r = store.get(&truncate_v2(&v2(1))).unwrap().unwrap().record;
    assert_eq!((r.infohash, r.kind), (ih(1), HashKind::Hybrid));
    assert!(store.integrity_check().unwrap().is_ok());
}

#[test]
fn scrapes_keep_the_latest_measurement_and_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut t = torrent(1, "Counted", &[("a", 1)], 10);
    t.seeders = Some(5);
    t.leechers = Some(6);
    t.scraped_at = Some(20);
    put(&store, vec![t]);
    let r = store.get(&ih(1)).unwrap().unwrap().record;
    assert_eq!(
        (r.seeders, r.leechers, r.scraped_at),
        (Some(5), Some(6), Some(20))
    );
    let scrape = |at, s, l| Op::Scrape {
        infohash: ih(1),
        at,
        seeders: s,
        leechers: l,
    };
    // Newer replaces (in batch order), older is ignored; last_seen is untouched.
    let rep = store
        .apply_batch(&[scrape(40, 1, 2), scrape(30, 8, 8), scrape(50, 3, 0)])
        .unwrap();
    assert_eq!(rep.scrapes_updated, 3);
    let r = store.get(&ih(1)).unwrap().unwrap().record;
    assert_eq!(
        (r.seeders, r.leechers, r.scraped_at),
        (Some(3), Some(0), Some(50))
    );
    assert_eq!(r.last_seen_at, 10);
    // Unknown infohash: counted, nothing stored.
    let rep = store
        .apply_batch(&[Op::Scrape {
            infohash: ih(9),
            at: 1,
            seeders: 1,
            leechers: 1,
        }])
        .unwrap();
    assert_eq!((rep.scrapes_updated, rep.seen_unknown), (0, 1));
    // A sighting with counts is a measurement at its time.
    store
        .apply_batch(&[Op::Seen {
            infohash: ih(1),
            at: 60,
            sources: Sources::GET_PEERS,
            seeders: Some(11),
            leechers: Some(12),
        }])
        .unwrap();
    let r = store.get(&ih(1)).unwrap().unwrap().record;
    assert_eq!(
        (r.seeders, r.leechers, r.scraped_at),
        (Some(11), Some(12), Some(60))
    );
    // The export shows the counts with their time.
    let mut out = Vec::new();
    store.export_jsonl(&mut out, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\"seeders\":11,\"leechers\":12,\"scraped_at\":60"),
        "{text}"
    );
}

#[cfg(feature = "magnetico")]
#[test]
fn import_magnetico_counts_where_present() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("magnetico.sqlite3");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE torrents (id INTEGER PRIMARY KEY, info_hash BLOB NOT NULL UNIQUE, name TEXT NOT NULL,
                total_size INTEGER NOT NULL, discovered_on INTEGER NOT NULL, updated_on INTEGER,
                n_seeders INTEGER, n_leechers INTEGER, modified_on INTEGER);
             CREATE TABLE files (id INTEGER PRIMARY KEY, torrent_id INTEGER REFERENCES torrents, size INTEGER NOT NULL, path TEXT NOT NULL);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO torrents VALUES (1, ?1, 'With Counts', 5, 1000, 1500, 42, 7, 1500)",
            rusqlite::params![ih(1).to_vec()],
        )
        .unwrap();
        c.execute(
            "INSERT INTO torrents VALUES (2, ?1, 'No Counts', 5, 1001, NULL, NULL, NULL, NULL)",
            rusqlite::params![ih(2).to_vec()],
        )
        .unwrap();
    }
    let store = open(&dir);
    let rep = store.import_magnetico(&db).unwrap();
    assert_eq!((rep.new, rep.skipped), (2, 0));
    let a = store.get(&ih(1)).unwrap().unwrap().record;
    assert_eq!(
        (a.seeders, a.leechers, a.scraped_at),
        (Some(42), Some(7), Some(1500))
    );
    let b = store.get(&ih(2)).unwrap().unwrap().record;
    assert_eq!((b.seeders, b.leechers, b.scraped_at), (None, None, None));
}

fn with_seeders(mut t: TorrentInput, s: Option<u32>) -> TorrentInput {
    t.seeders = s;
    t.scraped_at = s.map(|_| t.discovered_at);
    t
}

const GB: u64 = 1_000_000_000;

/// The torrents of the query-language tests: five, discovered at 100…500.
fn query_fixture(store: &Store) {
    let many: Vec<(String, u64)> = (0..40)
        .map(|i| (format!("Dune.Part.Two/part{i:02}.rar"), GB / 10))
        .collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    put(
        store,
        vec![
            with_seeders(
                torrent(
                    1,
                    "Big Buck Bunny 1080p",
                    &[
                        ("Big Buck Bunny/bunny.mkv", 700_000_000),
                        ("Big Buck Bunny/sample.txt", 1_000),
                    ],
                    100,
                ),
                Some(5),
            ),
            torrent(2, "Bunny Buck Big", &[("x/big buck.avi", 100)], 200),
            with_seeders(
                torrent(3, "Épopée Dune cam", &[("dune.mkv", 2 * GB)], 300),
                Some(50),
            ),
            torrent(4, "日本語字幕 Dune", &[("a.srt", 10)], 400),
            with_seeders(torrent(5, "Dune Part Two 2160p", &many, 500), Some(20)),
        ],
    );
}

fn q(store: &Store, query: SearchQuery) -> Vec<String> {
    names(&store.query(&query).unwrap())
}

fn set(v: Vec<String>) -> Vec<String> {
    let mut v = v;
    v.sort();
    v
}

/// Phrases, exclusions, name:/path: scopes, accent folding and CJK bigrams.
#[test]
fn query_language() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    query_fixture(&store);
    let s = |text: &str| set(q(&store, SearchQuery::new(text)));
    let v = |names: &[&str]| set(names.iter().map(|n| n.to_string()).collect());
    // A phrase: in the name (1) or in one file path (2: "x/big buck.avi").
    assert_eq!(
        s("\"big buck\""),
        v(&["Big Buck Bunny 1080p", "Bunny Buck Big"])
    );
    assert_eq!(s("name:\"big buck\""), v(&["Big Buck Bunny 1080p"]));
    assert_eq!(s("\"buck big\""), v(&["Bunny Buck Big"]));
    assert_eq!(s("\"bunny big\""), v(&[]));
    assert_eq!(s("path:avi"), v(&["Bunny Buck Big"]));
    assert_eq!(
        s("name:bunny"),
        v(&["Big Buck Bunny 1080p", "Bunny Buck Big"])
    );
    assert_eq!(s("path:sample"), v(&["Big Buck Bunny 1080p"]));
    assert_eq!(s("name:sample"), v(&[]));
    assert_eq!(s("path:sam"), v(&["Big Buck Bunny 1080p"]), "scoped prefix");
    assert_eq!(s("name:sam"), v(&[]), "scoped prefix");
    // Exclusions.
    assert_eq!(
        s("dune -cam"),
        v(&["日本語字幕 Dune", "Dune Part Two 2160p"])
    );
    assert_eq!(
        s("dune -\"part two\""),
        v(&["Épopée Dune cam", "日本語字幕 Dune"])
    );
    assert_eq!(s("dune -\"two part\""), s("dune"));
    assert_eq!(
        s("dune -path:rar"),
        v(&["Épopée Dune cam", "日本語字幕 Dune"])
    );
    assert_eq!(s("dune -name:rar"), s("dune"));
    // Accents and case.
    assert_eq!(s("epopee"), v(&["Épopée Dune cam"]));
    assert_eq!(s("ÉPOPÉE"), v(&["Épopée Dune cam"]));
    assert_eq!(s("E\u{301}POPE\u{301}E"), v(&["Épopée Dune cam"]));
    // CJK: one character anywhere in a run, pairs, the whole run.
    for cjk in [
        "語",
        "字幕",
        "日本語",
        "本",
        "幕",
        "日本語字幕",
        "\"日本語字幕\"",
    ] {
        assert_eq!(s(cjk), v(&["日本語字幕 Dune"]), "{cjk}");
    }
    assert_eq!(s("語日"), v(&[]));
    // A query of exclusions only is refused; one of punctuation finds nothing.
    let e = store.query(&SearchQuery::new("-dune")).unwrap_err();
    assert!(e.to_string().contains("at least one word"), "{e}");
    assert_eq!(s("- \"\" name:"), v(&[]));
}

/// Every sort in both directions, the filters, paging and the total; the results
/// are the same whether the store is in time order (fast paths) or not.
#[test]
fn query_sorts_filters_and_paging() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    query_fixture(&store);
    let dune = |sort: SortBy| SearchQuery::new("dune").sort(sort);
    for round in 0..2 {
        // Per-match lookups, then walks of the ordered indexes.
        for mode in [1, 2] {
            store.set_order_mode(mode);
            let o = |query: SearchQuery| q(&store, query);
            let n = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let (e3, j4, d5) = ("Épopée Dune cam", "日本語字幕 Dune", "Dune Part Two 2160p");
            assert_eq!(o(dune(SortBy::Discovered)), n(&[d5, j4, e3]));
            assert_eq!(o(dune(SortBy::Discovered).ascending()), n(&[e3, j4, d5]));
            assert_eq!(o(dune(SortBy::Size)), n(&[d5, e3, j4]));
            assert_eq!(o(dune(SortBy::Size).ascending()), n(&[j4, e3, d5]));
            // Unknown seeders (4) last both ways.
            assert_eq!(o(dune(SortBy::Seeders)), n(&[e3, d5, j4]));
            assert_eq!(o(dune(SortBy::Seeders).ascending()), n(&[d5, e3, j4]));
            // Ties (one file each) by discovery, in the sort's direction.
            assert_eq!(o(dune(SortBy::Files)), n(&[d5, j4, e3]));
            assert_eq!(o(dune(SortBy::Files).ascending()), n(&[e3, j4, d5]));
            // Relevance: "dune" is in every name: ties newest first, or oldest first.
            assert_eq!(o(dune(SortBy::Relevance)), n(&[d5, j4, e3]));
            assert_eq!(o(dune(SortBy::Relevance).ascending()), n(&[e3, j4, d5]));
            // Filters.
            let sized = |min, max| o(dune(SortBy::Discovered).size_range(min, max));
            assert_eq!(sized(Some(3 * GB), None), n(&[d5]));
            assert_eq!(sized(Some(GB), Some(3 * GB)), n(&[e3]));
            assert_eq!(sized(None, Some(10)), n(&[j4]));
            assert_eq!(sized(Some(10), Some(10)), n(&[j4]));
            let timed = |a, b| o(dune(SortBy::Discovered).discovered_range(a, b));
            assert_eq!(timed(Some(350), None), n(&[d5, j4]));
            assert_eq!(timed(None, Some(450)), n(&[j4, e3]));
            assert_eq!(timed(Some(300), Some(400)), n(&[e3]));
            assert_eq!(timed(Some(501), None), n(&[]));
            // Paging and the total.
            let r = store.query(&dune(SortBy::Size).page(1, 1)).unwrap();
            assert_eq!((r.total, names(&r)), (3, n(&[e3])));
            let r = store
                .query(&dune(SortBy::Seeders).size_range(Some(GB), None).page(1, 5))
                .unwrap();
            assert_eq!((r.total, names(&r)), (2, n(&[d5])));
            let r = store.query(&dune(SortBy::Files).page(3, 5)).unwrap();
            assert_eq!((r.total, r.hits.len()), (3, 0));
            // The classic API still answers.
            assert_eq!(
                names(&store.search("dune", 2, 0, Order::Largest).unwrap()),
                n(&[d5, e3])
            );
        }
        if round == 0 {
            // An import of an older torrent: doc ids are no longer in time order.
            put(&store, vec![torrent(6, "old unrelated", &[("z", 1)], 50)]);
        }
    }
}

/// Bad queries get clear errors; an unknown category or attribute value is refused
/// with the known ones (filters themselves: tests/facets.rs).
#[test]
fn query_bounds_and_unsupported_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    query_fixture(&store);
    let err = |query: SearchQuery| store.query(&query).unwrap_err().to_string();
    let e = err(SearchQuery::new("dune").facets(FacetFilter {
        category: Some("films-of-the-80s".into()),
        attributes: vec![],
    }));
    assert!(e.contains("unknown category") && e.contains("movie"), "{e}");
    let e = err(SearchQuery::new("dune").facets(FacetFilter {
        category: Some("movie".into()),
        attributes: vec![("resolution".into(), "1081p".into())],
    }));
    assert!(
        e.contains("unknown resolution") && e.contains("1080p"),
        "{e}"
    );
    let e = err(SearchQuery::new("dune").page(MAX_SEARCH_OFFSET + 1, 10));
    assert!(e.contains("offset") && e.contains("100000"), "{e}");
    assert!(store
        .query(&SearchQuery::new("dune").page(MAX_SEARCH_OFFSET, 10))
        .is_ok());
    let e = err(SearchQuery::new("dune").size_range(Some(2), Some(1)));
    assert!(e.contains("minimum size"), "{e}");
    let e = err(SearchQuery::new("dune").discovered_range(Some(5), Some(5)));
    assert!(e.contains("empty"), "{e}");
    let e = err(SearchQuery::new("x".repeat(MAX_QUERY_BYTES + 1)));
    assert!(e.contains("bytes long"), "{e}");
    let many: String = (0..=MAX_QUERY_TERMS).map(|i| format!("w{i} ")).collect();
    let e = err(SearchQuery::new(many));
    assert!(e.contains("search terms"), "{e}");
    // A page larger than the cap is cut to it.
    let r = store
        .query(&SearchQuery::new("dune").page(0, usize::MAX))
        .unwrap();
    assert_eq!(r.hits.len(), 3);
}

/// Names of any length or script are stored and found; tokenizing them is bounded.
#[test]
fn hostile_names_are_indexed_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let huge = format!("{} needle", "ж".repeat(1_000_000));
    let words: String = (0..200_000).map(|i| format!("w{i} ")).collect();
    let zalgo = format!("z{}", "\u{301}".repeat(100_000));
    let cjk = "漢".repeat(100_000);
    put(
        &store,
        vec![
            torrent(1, &huge, &[("a", 1)], 1),
            torrent(2, &words, &[("b", 1)], 2),
            torrent(3, &zalgo, &[("c", 1)], 3),
            torrent(4, &cjk, &[("d", 1)], 4),
        ],
    );
    let s = |text: &str| names(&store.search(text, 10, 0, Order::Relevance).unwrap()).len();
    assert_eq!(s("needle"), 1);
    assert_eq!(s("w1"), 1);
    assert_eq!(s("z"), 1);
    assert_eq!(s("漢"), 1);
    assert_eq!(s("漢漢漢"), 1);
    assert!(store.integrity_check().unwrap().is_ok());
}

/// A phrase whose words are in more than PHRASE_CHECK_BUDGET torrents: the page is
/// the exact page (the same as when every candidate is checked), the total an
/// estimate, flagged, close to the true count.
#[test]
fn phrase_over_many_candidates_checks_a_budget_and_estimates_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let n = PHRASE_CHECK_BUDGET as u32 * 2 + 100;
    let ts: Vec<TorrentInput> = (0..n)
        .map(|i| {
            let name = if i % 3 == 0 {
                format!("alpha beta {i}")
            } else {
                format!("beta x alpha {i}")
            };
            torrent(i + 1, &name, &[("f", 1)], u64::from(i) + 1)
        })
        .collect();
    put(&store, ts);
    let exact = n.div_ceil(3) as usize;
    let base = SearchQuery::new("\"alpha beta\"");
    for q in [
        base.clone().page(0, 10),
        base.clone().page(PHRASE_CHECK_BUDGET / 2, 7),
        base.clone().ascending().page(5, 10),
        base.clone().sort(SortBy::Discovered).page(0, 10),
        base.clone()
            .sort(SortBy::Discovered)
            .ascending()
            .page(100, 10),
    ] {
        store.set_order_mode(0);
        let r = store.query(&q).unwrap();
        assert!(r.total_estimated, "{q:?}");
        let err = (r.total as f64 - exact as f64).abs() / exact as f64;
        assert!(err < 0.1, "estimate {} for {exact}", r.total);
        // A size filter that keeps everything, with per-match lookups: every
        // candidate is checked.
        store.set_order_mode(1);
        let e = store.query(&q.clone().size_range(Some(0), None)).unwrap();
        assert!(!e.total_estimated);
        assert_eq!(e.total, exact);
        assert_eq!(names(&r), names(&e), "{q:?}");
        assert_eq!(r.hits.len(), q.limit);
    }
    // Few candidates: exact.
    store.set_order_mode(0);
    let r = store.query(&SearchQuery::new("\"alpha beta 9\"")).unwrap();
    assert_eq!((r.total, r.total_estimated), (1, false));
}
