//! Everything besides search, in both stores: the same batches of ops (synthetic
//! torrents, sightings, crawl sessions, metadata requests past the retention bound,
//! peers, DHT nodes, tombstones and hidden marks, some before their torrents) are
//! applied to an LMDB store and to a PostgreSQL store (a real server), and every
//! read the web server and the CLI make is compared value by value: totals, the
//! newest torrents, rankings, activity per hour, sessions, peers, nodes, requests,
//! filter marks, facets, point reads and infohash prefixes. Hidden and tombstoned
//! torrents are checked to be absent from search, `recent` and facet filters in
//! both.
//!
//! Intentional differences (not compared): `Stats::posting_blocks`, `disk_bytes`,
//! `used_bytes` and `map_size` describe each engine's storage (see the `stats`
//! module of magnetar-storage-pg).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use magnetar_storage::synth::Synth;
use magnetar_storage::{
    FacetFilter, FilterMark, InfoHash, NodeRecord, NodeStatus, Op, PeerRecord, PeerStatus,
    QueryCounts, RequestOutcome, RequestRecord, SearchQuery, SessionCounters, SessionRecord,
    Sources, Store, StoreOptions, TorrentInput,
};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

/// "Now" of the test: the activity windows end in this hour.
const NOW: u64 = 1_700_000_000;
const N: usize = 3_000;
const MAX_REQUESTS: u64 = 700;

fn server() -> TempPostgres {
    match TempPostgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL could not start: {e}"),
    }
}

fn addr(i: u64) -> SocketAddr {
    if i % 3 == 0 {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
        SocketAddr::new(IpAddr::V6(ip), 6881 + (i % 7) as u16)
    } else {
        let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
        SocketAddr::new(IpAddr::V4(ip), 6881 + (i % 5) as u16)
    }
}

fn torrents() -> Vec<TorrentInput> {
    let mut s = Synth::new(4242);
    (0..N)
        .map(|i| {
            // Over the last ~60 hours, several per second, not quite in order.
            let at = NOW - 60 * 3600 + (i as u64 * 72) - (i as u64 % 4) * 30;
            let mut t = s.torrent(at, i % 3 == 0);
            match i % 7 {
                0 => t.name = format!("{}.S01E{:02}.1080p.WEB-DL.x264", t.name, i % 20),
                1 => t.name = format!("{}.{}.720p.BluRay", t.name, 1980 + i % 40),
                _ => {}
            }
            t
        })
        .collect()
}

/// The ops, in batches: torrents with sightings, scrapes, sessions, requests,
/// peers, nodes and filter marks mixed in.
fn batches(ts: &[TorrentInput]) -> (Vec<Vec<Op>>, Vec<InfoHash>, Vec<InfoHash>) {
    let mut s = Synth::new(77);
    let mut out = Vec::new();
    let mut tombstoned = Vec::new();
    let mut hidden = Vec::new();
    let reasons = ["timeout", "no_ut_metadata", "hash_mismatch", "refused"];
    let clients = [
        "qBittorrent 4.6",
        "Transmission 4.0",
        "",
        "µTorrent 3.5",
        "aria2",
    ];
    let mut req = 0u64;
    for (b, chunk) in ts.chunks(250).enumerate() {
        let mut ops: Vec<Op> = Vec::new();
        // Marks before torrents: some for torrents stored earlier, some for
        // torrents of this very batch or of later ones (the mark precedes them).
        if b > 0 {
            for k in 0..3 {
                let ih = ts[(b - 1) * 250 + k * 17].infohash;
                ops.push(Op::Tombstone {
                    infohash: ih,
                    at: NOW - 1000 + k as u64,
                    label: if k == 0 {
                        "delete".into()
                    } else {
                        "spam rule".into()
                    },
                });
                tombstoned.push(ih);
                let ih = ts[(b - 1) * 250 + k * 17 + 5].infohash;
                ops.push(Op::Hide {
                    infohash: ih,
                    at: NOW - 900,
                    label: "hide rule".into(),
                });
                hidden.push(ih);
            }
        }
        if let Some(t) = ts.get((b + 1) * 250 + 3) {
            ops.push(Op::Tombstone {
                infohash: t.infohash,
                at: NOW - 500,
                label: "early rule".into(),
            });
            tombstoned.push(t.infohash);
        }
        if let Some(t) = ts.get((b + 1) * 250 + 9) {
            ops.push(Op::Hide {
                infohash: t.infohash,
                at: NOW - 400,
                label: "early hide".into(),
            });
            hidden.push(t.infohash);
        }
        // A tombstone and a hide for infohashes never stored; a tombstone written
        // twice (the later label wins).
        ops.push(Op::Tombstone {
            infohash: [
                0xee, b as u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            ],
            at: NOW - 10,
            label: "first".into(),
        });
        ops.push(Op::Tombstone {
            infohash: [
                0xee, b as u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            ],
            at: NOW - 5,
            label: "second, a very long label ".repeat(12),
        });
        ops.push(Op::Hide {
            infohash: [0xdd; 20],
            at: NOW,
            label: "nowhere".into(),
        });
        for t in chunk {
            ops.push(Op::Torrent(Box::new(t.clone())));
        }
        // Sightings and scrapes of earlier torrents, and of unknown ones.
        for k in 0..20 {
            let t = &ts[s.rng().below(((b + 1) * 250) as u64) as usize];
            ops.push(Op::Seen {
                infohash: t.infohash,
                at: t.discovered_at + 100 + k,
                sources: Sources::ANNOUNCE,
                seeders: Some(k as u32),
                leechers: None,
            });
            ops.push(Op::Scrape {
                infohash: t.infohash,
                at: NOW - k,
                seeders: 5,
                leechers: 7,
            });
        }
        ops.push(Op::Seen {
            infohash: [0xcc; 20],
            at: NOW,
            sources: Sources::SAMPLE,
            seeders: None,
            leechers: None,
        });
        // Requests: 100 a batch (1,200 in all, past the retention bound), over
        // the last ~70 hours, mostly in order.
        for _ in 0..100 {
            req += 1;
            let fail = s.rng().below(3) > 0;
            let back = (1200 - req) * 200 + s.rng().below(500);
            ops.push(Op::Request(RequestRecord {
                infohash: ts[(req as usize * 7) % N].infohash,
                peer: addr(s.rng().below(400)),
                started_at_ms: (NOW - back) * 1000 + s.rng().below(1000),
                duration_ms: s.rng().below(20_000) as u32,
                outcome: if fail {
                    RequestOutcome::Failure
                } else {
                    RequestOutcome::Success
                },
                reason: if fail {
                    reasons[s.rng().below(4) as usize].into()
                } else {
                    String::new()
                },
                pieces: s.rng().below(100) as u32,
                client: clients[s.rng().below(5) as usize].into(),
                encryption: ["plaintext", "rc4", ""][s.rng().below(3) as usize].into(),
                transport: ["tcp", "utp"][s.rng().below(2) as usize].into(),
            }));
        }
        // Peers and nodes: some written again (in this batch and later ones).
        for k in 0..40u64 {
            let i = s.rng().below(120);
            ops.push(Op::Peer(PeerRecord {
                addr: addr(i),
                client: clients[(i % 5) as usize].into(),
                attempts: (b as u32 + 1) * 3 + k as u32,
                successes: b as u32,
                failures: k as u32 % 4,
                rtt_ms: (k % 3 != 0).then_some(k as u32 * 11),
                ut_metadata: [None, Some(true), Some(false)][(k % 3) as usize],
                last_error: if k % 2 == 0 {
                    "reset".into()
                } else {
                    String::new()
                },
                status: [
                    PeerStatus::Good,
                    PeerStatus::Unknown,
                    PeerStatus::Bad,
                    PeerStatus::Blacklisted,
                ][(i % 4) as usize],
                last_seen: NOW - s.rng().below(10_000),
            }));
            let j = s.rng().below(90);
            let mut id = [0u8; 20];
            id[0] = j as u8;
            id[19] = 0x5a;
            let c = |x: u64| QueryCounts {
                ping: x as u32,
                find_node: x as u32 + 1,
                get_peers: 2,
                announce_peer: 3,
                sample_infohashes: x as u32 * 2,
                other: 0,
            };
            ops.push(Op::Node(NodeRecord {
                id,
                addr: addr(1000 + j),
                rtt_ms: (j % 4 != 0).then_some(j as u32),
                queries: c(k),
                responses: c(k / 2),
                status: [NodeStatus::Good, NodeStatus::Questionable, NodeStatus::Bad]
                    [(j % 3) as usize],
                // Few distinct times: ties are broken by id in both.
                last_seen: NOW - s.rng().below(8) * 60,
            }));
        }
        // Sessions: one per batch, written at start and again at its end; the
        // last one is still running.
        let id = 1_699_000_000_000 + b as u64;
        let mut sess = SessionRecord {
            id,
            started_at: NOW - 70 * 3600 + b as u64 * 3600,
            ended_at: None,
            counters: SessionCounters::default(),
            peak_rss_bytes: 100 << 20,
            cpu_ms: 0,
        };
        ops.push(Op::Session(sess.clone()));
        if b + 1 < ts.len().div_ceil(250) {
            sess.ended_at = Some(sess.started_at + 3000);
        }
        sess.counters = SessionCounters {
            infohashes_discovered: 1000 + b as u64,
            metadata_fetched: 300,
            metadata_failed: 50,
            torrents_new: 250,
            dht_queries_sent: 10_000,
            dht_responses_received: 8_000,
        };
        sess.cpu_ms = 12_345;
        ops.push(Op::Session(sess));
        out.push(ops);
    }
    (out, tombstoned, hidden)
}

#[test]
fn every_read_gives_the_same_answer_in_lmdb_and_postgres() {
    let pg = server();
    let url = pg.create_database("records").unwrap();
    let mut ps = PgStore::connect(
        &url,
        PgOptions {
            max_requests: MAX_REQUESTS,
            ..PgOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lo = StoreOptions::new(dir.path());
    lo.max_requests = MAX_REQUESTS;
    let ls = Store::open(lo).unwrap();

    let ts = torrents();
    let (batches, tombstoned, hidden) = batches(&ts);
    for ops in &batches {
        let l = ls.apply_batch(ops).unwrap();
        let p = ps.apply_batch(ops).unwrap();
        assert_eq!(p.torrents_new, l.torrents_new);
        assert_eq!(p.tombstoned, l.tombstoned);
        assert_eq!(p.seen_updated, l.seen_updated);
        assert_eq!(p.scrapes_updated, l.scrapes_updated);
        assert_eq!(p.seen_unknown, l.seen_unknown);
        assert_eq!(
            (p.peers, p.nodes, p.sessions, p.requests),
            (l.peers, l.nodes, l.sessions, l.requests)
        );
        assert_eq!((p.ignored, p.rejected), (0, 0));
    }
    // The same batches again (without their requests, which would be appended
    // again: old ones, newest by id): nothing changes, in both.
    for ops in batches.iter().take(2) {
        let ops: Vec<Op> = ops
            .iter()
            .filter(|o| !matches!(o, Op::Request(_)))
            .cloned()
            .collect();
        let l = ls.apply_batch(&ops).unwrap();
        let p = ps.apply_batch(&ops).unwrap();
        assert_eq!((p.torrents_new, l.torrents_new), (0, 0));
        assert_eq!(p.tombstoned, l.tombstoned);
    }

    // Totals.
    let (l, p) = (ls.stats().unwrap(), ps.stats().unwrap());
    assert_eq!(
        (
            p.torrents,
            p.torrents_with_info,
            p.peers,
            p.nodes,
            p.sessions,
            p.requests
        ),
        (
            l.torrents,
            l.torrents_with_info,
            l.peers,
            l.nodes,
            l.sessions,
            l.requests
        )
    );
    assert_eq!(p.requests, MAX_REQUESTS);
    assert!(p.torrents > 0 && p.torrents < N as u64, "{p:?}");
    assert!(p.used_bytes > 0 && p.disk_bytes >= p.used_bytes, "{p:?}");
    assert_eq!(ps.count().unwrap(), ls.count().unwrap());

    // Filter marks.
    assert_eq!(ps.filter_totals().unwrap(), ls.filter_totals().unwrap());
    assert_eq!(
        ps.filter_labels(1_000).unwrap(),
        ls.filter_labels(1_000).unwrap()
    );
    assert_eq!(ps.filter_labels(3).unwrap(), ls.filter_labels(3).unwrap());
    let mut probe: Vec<InfoHash> = tombstoned.clone();
    probe.extend(&hidden);
    probe.extend(ts.iter().step_by(37).map(|t| t.infohash));
    probe.push([
        0xee, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
    ]);
    probe.push([0xdd; 20]);
    probe.push([0x01; 20]);
    for ih in &probe {
        assert_eq!(ps.tombstone(ih).unwrap(), ls.tombstone(ih).unwrap());
        assert_eq!(ps.hidden_mark(ih).unwrap(), ls.hidden_mark(ih).unwrap());
        assert_eq!(ps.get(ih).unwrap(), ls.get(ih).unwrap());
        assert_eq!(ps.record(ih).unwrap(), ls.record(ih).unwrap());
        assert_eq!(ps.contains(ih).unwrap(), ls.contains(ih).unwrap());
        assert_eq!(ps.info_dict(ih).unwrap(), ls.info_dict(ih).unwrap());
        assert_eq!(ps.facets(ih).unwrap(), ls.facets(ih).unwrap());
    }
    let long = ps.tombstone(&[
        0xee, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
    ]);
    let long = long.unwrap().unwrap();
    assert!(long.label.starts_with("second") && long.label.len() <= 200);
    for ih in &tombstoned {
        assert!(!ps.contains(ih).unwrap(), "a tombstoned torrent is stored");
    }
    for ih in &hidden {
        if !tombstoned.contains(ih) {
            assert!(ps.contains(ih).unwrap(), "a hidden torrent is stored");
        }
    }

    // Facets of every torrent, in one call.
    let all: Vec<InfoHash> = ts.iter().map(|t| t.infohash).collect();
    let (lf, pf) = (ls.facets_of(&all).unwrap(), ps.facets_of(&all).unwrap());
    assert_eq!(pf, lf);
    assert!(pf.iter().flatten().count() > N / 2);

    // The newest torrents: hidden ones never listed.
    for n in [0, 1, 50, N] {
        let (l, p) = (ls.recent(n).unwrap(), ps.recent(n).unwrap());
        assert_eq!(p, l, "recent({n})");
    }
    let listed: Vec<InfoHash> = ps.recent(N).unwrap().iter().map(|r| r.infohash).collect();
    for ih in hidden.iter().chain(&tombstoned) {
        assert!(!listed.contains(ih));
    }

    // Hidden and tombstoned torrents are not found, by words or by facets.
    let mut found_any = false;
    for ih in hidden.iter().chain(&tombstoned) {
        let Some(t) = ts.iter().find(|t| &t.infohash == ih) else {
            continue;
        };
        let words: Vec<String> = magnetar_storage::tokenize(&t.name).take(3).collect();
        let q = SearchQuery::new(format!("\"{}\"", words.join(" "))).page(0, 100);
        let (l, p) = (ls.query(&q).unwrap(), ps.query(&q).unwrap());
        assert_eq!(p.hits, l.hits);
        assert_eq!(p.total, l.total);
        assert!(!p.hits.iter().any(|r| &r.infohash == ih));
        found_any |= !p.hits.is_empty();
    }
    // The phrases found other torrents (the check above is not vacuous).
    assert!(found_any);
    for cat in ["tv", "movies", "other", "8000"] {
        let q = SearchQuery::new("").page(0, 100).facets(FacetFilter {
            category: Some(cat.into()),
            attributes: vec![],
        });
        let mut q_all = q.clone();
        q_all.limit = magnetar_storage::MAX_SEARCH_LIMIT;
        let (l, p) = (ls.query(&q).unwrap(), ps.query(&q).unwrap());
        assert_eq!((p.total, &p.hits), (l.total, &l.hits), "{cat}");
        let mut off = 0;
        while off < p.total {
            q_all.offset = off;
            let r = ps.query(&q_all).unwrap();
            for h in &r.hits {
                assert!(!hidden.contains(&h.infohash) && !tombstoned.contains(&h.infohash));
            }
            off += r.hits.len().max(1);
        }
    }

    // The JSON export (three pages of the PostgreSQL walk): the same bytes.
    let (mut l, mut p) = (Vec::new(), Vec::new());
    let lr = ls.export_jsonl(&mut l, None).unwrap();
    let pr = ps.export_jsonl(&mut p, None).unwrap();
    assert_eq!(pr, lr);
    assert!(pr.torrents > 2 * magnetar_storage_pg::exports::PAGE as u64);
    assert!(p == l, "the JSON exports differ");

    // Every torrent in doc id order (three pages of the PostgreSQL walk).
    let (mut lw, mut pw) = (Vec::new(), Vec::new());
    ls.for_each_torrent(|r, f, h| {
        lw.push((r.clone(), f.to_vec(), h));
        true
    })
    .unwrap();
    ps.for_each_torrent(|r, f, h| {
        pw.push((r.clone(), f.to_vec(), h));
        true
    })
    .unwrap();
    assert!(pw == lw, "for_each_torrent differs");

    // Sessions and their yields.
    assert_eq!(ps.sessions().unwrap(), ls.sessions().unwrap());
    assert_eq!(
        ps.session_yields(NOW).unwrap(),
        ls.session_yields(NOW).unwrap()
    );
    assert_eq!(ps.sessions().unwrap().len(), batches.len());

    // Peers, nodes, requests.
    for i in 0..130 {
        let a = addr(i);
        assert_eq!(ps.peer(&a).unwrap(), ls.peer(&a).unwrap(), "{a}");
    }
    for n in [0, 5, 30, 1000] {
        assert_eq!(
            ps.saved_nodes(n).unwrap(),
            ls.saved_nodes(n).unwrap(),
            "{n}"
        );
    }
    assert!(ps
        .saved_nodes(1000)
        .unwrap()
        .iter()
        .all(|n| n.status != NodeStatus::Bad));
    for n in [0, 1, 100, 5000] {
        assert_eq!(
            ps.recent_requests(n).unwrap(),
            ls.recent_requests(n).unwrap(),
            "{n}"
        );
    }
    assert_eq!(
        ps.recent_requests(5000).unwrap().len(),
        MAX_REQUESTS as usize
    );

    // Rankings over the kept requests.
    assert_eq!(ps.failure_reasons().unwrap(), ls.failure_reasons().unwrap());
    assert_eq!(
        ps.encryption_outcomes().unwrap(),
        ls.encryption_outcomes().unwrap()
    );
    assert_eq!(
        ps.transport_outcomes().unwrap(),
        ls.transport_outcomes().unwrap()
    );
    for n in [0, 2, 10] {
        assert_eq!(ps.top_clients(n).unwrap(), ls.top_clients(n).unwrap());
    }

    // Activity per hour, over windows that cut the data and that hold it all.
    for (now, hours) in [
        (NOW, 48),
        (NOW, 1),
        (NOW, 24 * 31),
        (NOW - 20 * 3600 + 17, 10),
        (NOW + 5 * 3600, 24),
        (0, 5),
    ] {
        let (l, p) = (
            ls.discoveries_per_hour(now, hours).unwrap(),
            ps.discoveries_per_hour(now, hours).unwrap(),
        );
        assert_eq!(p, l, "discoveries_per_hour({now}, {hours})");
        let (l, p) = (
            ls.requests_per_hour(now, hours).unwrap(),
            ps.requests_per_hour(now, hours).unwrap(),
        );
        assert_eq!(p, l, "requests_per_hour({now}, {hours})");
    }
    let h = ps.discoveries_per_hour(NOW, 48).unwrap();
    assert!(h.counts.iter().sum::<u64>() > 1000);
    let h = ps.requests_per_hour(NOW, 48).unwrap();
    assert!(h.failed.iter().sum::<u64>() > 0);

    // Infohash prefixes (odd and even lengths).
    for t in ts.iter().step_by(101) {
        for nibbles in [8usize, 9, 40] {
            let hex = magnetar_storage::to_hex(&t.infohash);
            let bytes: Vec<u8> = (0..nibbles.div_ceil(2))
                .map(|i| {
                    let hi = u8::from_str_radix(&hex[2 * i..2 * i + 1], 16).unwrap();
                    let lo = if 2 * i + 1 < nibbles {
                        u8::from_str_radix(&hex[2 * i + 1..2 * i + 2], 16).unwrap()
                    } else {
                        0
                    };
                    hi << 4 | lo
                })
                .collect();
            assert_eq!(
                ps.infohashes_with_prefix(&bytes, nibbles, 5).unwrap(),
                ls.infohashes_with_prefix(&bytes, nibbles, 5).unwrap()
            );
        }
    }
}

/// Two writers at once: one stores torrents, the other tombstones some of them
/// (without waiting for the first to commit). Whatever the interleaving, no
/// tombstoned infohash stays stored.
#[test]
fn a_tombstone_written_while_another_writer_stores_the_torrent_wins() {
    let pg = server();
    let url = pg.create_database("race").unwrap();
    let ts = torrents();
    let ts = &ts[..1000];
    PgStore::connect(&url, PgOptions::default()).unwrap();
    let dead: Vec<InfoHash> = ts.iter().step_by(3).map(|t| t.infohash).collect();
    std::thread::scope(|s| {
        let url = &url;
        s.spawn(move || {
            let mut w = PgStore::connect(url, PgOptions::default()).unwrap();
            for chunk in ts.chunks(50) {
                let ops: Vec<Op> = chunk
                    .iter()
                    .map(|t| Op::Torrent(Box::new(t.clone())))
                    .collect();
                w.apply_batch(&ops).unwrap();
            }
        });
        let dead = &dead;
        s.spawn(move || {
            let mut w = PgStore::connect(url, PgOptions::default()).unwrap();
            for chunk in dead.chunks(10) {
                let ops: Vec<Op> = chunk
                    .iter()
                    .map(|ih| Op::Tombstone {
                        infohash: *ih,
                        at: NOW,
                        label: "race".into(),
                    })
                    .collect();
                w.apply_batch(&ops).unwrap();
            }
        });
    });
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    for ih in &dead {
        assert!(!ps.contains(ih).unwrap());
        assert!(ps.tombstone(ih).unwrap().is_some());
    }
    assert_eq!(ps.count().unwrap(), (ts.len() - dead.len()) as u64);
}

/// Waiting backends (on a lock) in the database, for the test below.
fn waiting(c: &mut postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The interleaving that loses a tombstone without the bucket locks, forced: a
/// writer has stored torrents but not committed (it waits on a session row that
/// a third connection is inserting) when another writer tombstones them. The
/// tombstone's writer must wait for the first to commit, then remove them.
#[test]
fn a_tombstone_waits_for_a_writer_storing_its_torrent() {
    let pg = server();
    let url = pg.create_database("race2").unwrap();
    let ts = torrents();
    let ts = &ts[..20];
    PgStore::connect(&url, PgOptions::default()).unwrap();
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "INSERT INTO sessions VALUES (1, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0)",
        &[],
    )
    .unwrap();
    std::thread::scope(|s| {
        let url = &url;
        let a = s.spawn(move || {
            let mut w = PgStore::connect(url, PgOptions::default()).unwrap();
            let mut ops: Vec<Op> = ts
                .iter()
                .map(|t| Op::Torrent(Box::new(t.clone())))
                .collect();
            ops.push(Op::Session(SessionRecord {
                id: 1,
                ..SessionRecord::default()
            }));
            w.apply_batch(&ops).unwrap()
        });
        // Writer A has stored the torrents and waits on the session row.
        let mut polls = 0;
        while waiting(&mut watch) < 1 {
            polls += 1;
            assert!(polls < 6000, "writer A never waited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let b = s.spawn(move || {
            let mut w = PgStore::connect(url, PgOptions::default()).unwrap();
            let ops: Vec<Op> = ts
                .iter()
                .map(|t| Op::Tombstone {
                    infohash: t.infohash,
                    at: NOW,
                    label: "race".into(),
                })
                .collect();
            w.apply_batch(&ops).unwrap()
        });
        // Writer B either waits too (the bucket locks) or is done.
        let mut polls = 0;
        while waiting(&mut watch) < 2 && !b.is_finished() {
            polls += 1;
            assert!(polls < 6000, "writer B neither waited nor finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        hold.rollback().unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    for t in ts {
        assert!(
            !ps.contains(&t.infohash).unwrap(),
            "a tombstoned torrent is stored"
        );
    }
    assert_eq!(ps.count().unwrap(), 0);
}

/// `magnetar delete` and `filter apply`'s calls: removing (with and without
/// tombstones), hiding and unhiding give the same counts and leave the same
/// stores behind.
#[test]
fn removing_hiding_and_unhiding_match_the_lmdb_store() {
    let pg = server();
    let url = pg.create_database("remove").unwrap();
    let mut ps = PgStore::connect(&url, PgOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ls = Store::open(StoreOptions::new(dir.path())).unwrap();
    let ts = torrents();
    let ts = &ts[..600];
    let ops: Vec<Op> = ts
        .iter()
        .map(|t| Op::Torrent(Box::new(t.clone())))
        .collect();
    ls.apply_batch(&ops).unwrap();
    ps.apply_batch(&ops).unwrap();
    let ih = |i: usize| ts[i].infohash;
    let mark = |l: &str| FilterMark {
        at: NOW,
        label: l.into(),
    };
    // Removed with tombstones: stored ones, a repeat, one never stored.
    let dead = [ih(1), ih(2), ih(2), ih(3), [0x42; 20]];
    assert_eq!(
        ps.remove_torrents(&dead, Some(&mark("delete"))).unwrap(),
        ls.remove_torrents(&dead, Some(&mark("delete"))).unwrap()
    );
    // Removed without: they may come back.
    let gone = [ih(10), ih(11), [0x43; 20]];
    assert_eq!(
        ps.remove_torrents(&gone, None).unwrap(),
        ls.remove_torrents(&gone, None).unwrap()
    );
    // Hidden: stored ones, a repeat, an already hidden one, one not stored yet.
    let marks = vec![
        (ih(20), mark("rule a")),
        (ih(21), mark("rule a")),
        (ih(21), mark("rule b")),
        ([0x44; 20], mark("rule c")),
    ];
    assert_eq!(
        ps.hide_torrents(&marks).unwrap(),
        ls.hide_torrents(&marks).unwrap()
    );
    assert_eq!(
        ps.hide_torrents(&marks[..1]).unwrap(),
        ls.hide_torrents(&marks[..1]).unwrap()
    );
    let un = [ih(21), ih(30), [0x44; 20]];
    assert_eq!(
        ps.unhide_torrents(&un).unwrap(),
        ls.unhide_torrents(&un).unwrap()
    );
    // The same ops again: tombstoned ones stay out, removed ones come back.
    let l = ls.apply_batch(&ops).unwrap();
    let p = ps.apply_batch(&ops).unwrap();
    assert_eq!(
        (p.torrents_new, p.tombstoned),
        (l.torrents_new, l.tombstoned)
    );
    assert_eq!((p.torrents_new, p.tombstoned), (2, 3));
    assert_eq!(ps.count().unwrap(), ls.count().unwrap());
    assert_eq!(ps.filter_totals().unwrap(), ls.filter_totals().unwrap());
    assert_eq!(
        ps.filter_labels(100).unwrap(),
        ls.filter_labels(100).unwrap()
    );
    for i in [1, 2, 3, 10, 11, 20, 21, 30] {
        assert_eq!(ps.tombstone(&ih(i)).unwrap(), ls.tombstone(&ih(i)).unwrap());
        assert_eq!(
            ps.hidden_mark(&ih(i)).unwrap(),
            ls.hidden_mark(&ih(i)).unwrap()
        );
        assert_eq!(ps.contains(&ih(i)).unwrap(), ls.contains(&ih(i)).unwrap());
    }
    assert_eq!(ps.recent(600).unwrap(), ls.recent(600).unwrap());

    // Every torrent in doc id order, with files and the hidden flag; and a walk
    // stopped early.
    let (mut lw, mut pw) = (Vec::new(), Vec::new());
    let ln = ls
        .for_each_torrent(|r, f, h| {
            lw.push((r.clone(), f.to_vec(), h));
            true
        })
        .unwrap();
    let pn = ps
        .for_each_torrent(|r, f, h| {
            pw.push((r.clone(), f.to_vec(), h));
            true
        })
        .unwrap();
    assert_eq!((pn, &pw), (ln, &lw));
    assert!(pw.iter().any(|x| x.2) && pw.iter().any(|x| !x.2));
    let mut k = 0;
    let stopped = ps
        .for_each_torrent(|_, _, _| {
            k += 1;
            k < 7
        })
        .unwrap();
    assert_eq!(stopped, 7);

    // Classified again: the same report, the same facets; a changed facet row
    // (PostgreSQL only) is counted as changed and put right.
    ps.client()
        .execute(
            "UPDATE facets SET kind = 0, category = 8000 WHERE torrent_id = \
             (SELECT torrent_id FROM facets WHERE kind <> 0 ORDER BY torrent_id LIMIT 1)",
            &[],
        )
        .unwrap();
    let (l, p) = (ls.reclassify().unwrap(), ps.reclassify().unwrap());
    assert_eq!(p.changed, 1);
    assert_eq!((p.torrents, &p.per_kind), (l.torrents, &l.per_kind));
    assert_eq!((l.changed, l.skipped_corrupt, p.skipped_corrupt), (0, 0, 0));
    assert_eq!(p.torrents, ps.count().unwrap());
    let every: Vec<InfoHash> = ts.iter().map(|t| t.infohash).collect();
    assert_eq!(ps.facets_of(&every).unwrap(), ls.facets_of(&every).unwrap());
    for order in [
        magnetar_storage::Order::Relevance,
        magnetar_storage::Order::Newest,
    ] {
        let w = magnetar_storage::tokenize(&ts[40].name).next().unwrap();
        let (l, p) = (
            ls.search(&w, 20, 0, order).unwrap(),
            ps.search(&w, 20, 0, order).unwrap(),
        );
        assert_eq!((p.total, &p.hits), (l.total, &l.hits));
    }
    assert_eq!(
        ps.schema_version().unwrap(),
        magnetar_storage_pg::SCHEMA_VERSION as u32
    );

    // Exports: the same bytes, hidden torrents left out, tombstoned ones absent.
    for since in [None, Some(ts[300].discovered_at), Some(u64::MAX)] {
        let (mut l, mut p) = (Vec::new(), Vec::new());
        let lr = ls.export_jsonl(&mut l, since).unwrap();
        let pr = ps.export_jsonl(&mut p, since).unwrap();
        assert_eq!(pr, lr, "{since:?}");
        assert!(p == l, "the JSON exports differ from {since:?}");
    }
    let mut all = Vec::new();
    ps.export_jsonl(&mut all, None).unwrap();
    let all = String::from_utf8(all).unwrap();
    for i in [1, 2, 3, 20] {
        assert!(
            !all.contains(&magnetar_storage::to_hex(&ih(i))),
            "{i} exported"
        );
    }
    assert!(all.contains(&magnetar_storage::to_hex(&ih(21))));
    let (ld, pd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lr = ls.export_torrent_files(ld.path(), None).unwrap();
    let pr = ps.export_torrent_files(pd.path(), None).unwrap();
    assert_eq!(pr, lr);
    assert!(pr.torrents > 100 && pr.skipped_no_info > 100, "{pr:?}");
    let mut names: Vec<_> = std::fs::read_dir(pd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len() as u64, pr.torrents);
    for n in &names {
        assert_eq!(
            std::fs::read(pd.path().join(n)).unwrap(),
            std::fs::read(ld.path().join(n)).unwrap()
        );
    }
}
