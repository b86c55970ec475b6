//! The fleet's shared queue (issue 21 §2) against a real PostgreSQL: concurrent
//! claimers, lease expiry and takeover, concurrent offers, a claimer that dies.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use magnetar_storage::synth::Synth;
use magnetar_storage::{InfoHash, Op};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{ClaimOptions, PgOptions, PgStore, Queue};

fn server() -> TempPostgres {
    match TempPostgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL could not start: {e}"),
    }
}

/// Infohash `k` with its top byte `top` (shard 0 of 3: top < 0x55).
fn ih(top: u8, k: u32) -> InfoHash {
    let mut h = [0u8; 20];
    h[0] = top;
    h[1..5].copy_from_slice(&k.to_be_bytes());
    h
}

fn count(q: &mut Queue, sql: &str) -> i64 {
    q.client().query_one(sql, &[]).unwrap().get(0)
}

const LONG: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(3600),
    grace: Duration::from_secs(300),
    orphan_after: Duration::from_secs(86_400),
};

#[test]
fn three_concurrent_claimers_never_get_the_same_row() {
    let pg = server();
    let url = pg.create_database("q1").unwrap();
    let mut q = Queue::connect(&url, "offerer").unwrap();
    // 300 rows of shard 0, 100 of shard 1 (not theirs: never taken).
    let own: Vec<(InfoHash, u16)> = (0..300).map(|k| (ih(0x10, k), 0)).collect();
    let other: Vec<(InfoHash, u16)> = (0..100).map(|k| (ih(0x60, k), 1)).collect();
    assert_eq!(q.offer(&own).unwrap(), 300);
    assert_eq!(q.offer(&other).unwrap(), 100);
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = Queue::connect(&url, &format!("claimer-{i}")).unwrap();
                barrier.wait();
                let mut got = Vec::new();
                // Bounded: 300 rows in batches of 7 need at most 43 rounds each.
                for _ in 0..200 {
                    let batch = c.claim(0, 7, &LONG).unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    got.extend(batch.into_iter().map(|r| (r.info_hash, r.attempts)));
                }
                got
            })
        })
        .collect();
    let per: Vec<Vec<(InfoHash, i32)>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut all = BTreeSet::new();
    for got in &per {
        for (h, attempts) in got {
            assert!(all.insert(*h), "{h:?} claimed twice");
            assert_eq!(*attempts, 1);
            assert_eq!(h[0], 0x10, "only shard 0's rows");
        }
    }
    eprintln!(
        "claims per claimer: {:?}",
        per.iter().map(|g| g.len()).collect::<Vec<_>>()
    );
    assert_eq!(all.len(), 300);
    assert_eq!(
        count(
            &mut q,
            "SELECT count(*) FROM crawl_queue WHERE claimed_by IS NOT NULL"
        ),
        300
    );
}

#[test]
fn an_expired_lease_is_taken_over_and_only_then() {
    let pg = server();
    let url = pg.create_database("q2").unwrap();
    let mut a = Queue::connect(&url, "a").unwrap();
    let mut b = Queue::connect(&url, "b").unwrap();
    let opts = ClaimOptions {
        lease: Duration::from_secs(60),
        grace: Duration::from_secs(30),
        orphan_after: Duration::from_secs(86_400),
    };
    a.set_clock(Some(1000));
    a.offer(&[(ih(0x10, 1), 0), (ih(0x10, 2), 0)]).unwrap();
    let got = a.claim(0, 10, &opts).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|c| c.lease_until == 1060 && c.attempts == 1 && c.age == 0));
    // b (shard 1) while the lease holds, and within the grace after it: nothing.
    for t in [1001, 1059, 1060, 1089] {
        b.set_clock(Some(t));
        assert!(b.claim(1, 10, &opts).unwrap().is_empty(), "t={t}");
    }
    // The owner itself does not get its claimed rows again either.
    a.set_clock(Some(1020));
    assert!(a.claim(0, 10, &opts).unwrap().is_empty());
    // Past lease + grace: b takes both over.
    b.set_clock(Some(1091));
    let taken = b.claim(1, 10, &opts).unwrap();
    assert_eq!(taken.len(), 2);
    // Their age: since the first offer, on the queue's clock.
    assert!(taken
        .iter()
        .all(|c| c.attempts == 2 && c.shard == 0 && c.age == 91));
    assert_eq!(b.totals().taken_over, 2);
    // a comes back late: its completion does not count (b holds them now).
    assert_eq!(a.complete(&[ih(0x10, 1)]).unwrap(), 0);
    assert_eq!(b.complete(&[ih(0x10, 1)]).unwrap(), 1);
    // A release makes the row due again later, for its own shard first.
    b.set_clock(Some(1100));
    assert_eq!(
        b.release(&[ih(0x10, 2)], Duration::from_secs(50)).unwrap(),
        1
    );
    a.set_clock(Some(1149));
    assert!(a.claim(0, 10, &opts).unwrap().is_empty());
    a.set_clock(Some(1150));
    let again = a.claim(0, 10, &opts).unwrap();
    assert_eq!(
        again.iter().map(|c| c.info_hash).collect::<Vec<_>>(),
        vec![ih(0x10, 2)]
    );
    // Done rows are never handed out again.
    a.set_clock(Some(1_000_000));
    assert!(a.complete(&[ih(0x10, 2)]).unwrap() == 1);
    assert!(b.claim(1, 10, &opts).unwrap().is_empty());
}

#[test]
fn offers_from_three_writers_make_one_row_and_skip_stored_torrents() {
    let pg = server();
    let url = pg.create_database("q3").unwrap();
    // One torrent already stored: never queued.
    let mut store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let stored = Synth::new(3).torrent(1_000_000, false);
    store
        .apply_batch(&[Op::Torrent(Box::new(stored.clone()))])
        .unwrap();
    let items: Vec<(InfoHash, u16)> = (0..500)
        .map(|k| (ih((k % 3 * 0x55) as u8, k), (k % 3) as u16))
        .chain([(stored.infohash, 1)])
        .collect();
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3u64)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            let mut mine = items.clone();
            // Each writer its own order and batching.
            let mut r = magnetar_storage::synth::Rng::new(i);
            for j in (1..mine.len()).rev() {
                mine.swap(j, r.below(j as u64 + 1) as usize);
            }
            std::thread::spawn(move || {
                let mut q = Queue::connect(&url, &format!("writer-{i}")).unwrap();
                barrier.wait();
                let mut inserted = 0;
                for chunk in mine.chunks(37 + 20 * i as usize) {
                    inserted += q.offer(chunk).unwrap();
                }
                inserted
            })
        })
        .collect();
    let inserted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut q = Queue::connect(&url, "check").unwrap();
    assert_eq!(inserted, 500, "each row inserted by exactly one writer");
    assert_eq!(count(&mut q, "SELECT count(*) FROM crawl_queue"), 500);
    // The first offer of each row stays: one of the writers, never overwritten.
    assert_eq!(
        count(
            &mut q,
            "SELECT count(*) FROM crawl_queue WHERE offered_by LIKE 'writer-_'"
        ),
        500
    );
    assert!(q.is_stored(&stored.infohash).unwrap());
    assert!(!q.is_stored(&ih(0, 0)).unwrap());
    assert_eq!(
        q.stored(&[ih(0, 0), stored.infohash, ih(0, 1)]).unwrap(),
        vec![stored.infohash]
    );
}

#[test]
fn a_claimer_killed_mid_lease_loses_nothing() {
    let pg = server();
    let url = pg.create_database("q4").unwrap();
    let mut o = Queue::connect(&url, "offerer").unwrap();
    o.set_clock(Some(10_000));
    let rows: Vec<(InfoHash, u16)> = (0..20).map(|k| (ih(0x10, k), 0)).collect();
    o.offer(&rows).unwrap();
    let opts = ClaimOptions {
        lease: Duration::from_secs(60),
        grace: Duration::from_secs(30),
        orphan_after: Duration::from_secs(86_400),
    };
    // A claimer dies between its claim and its fetch: the connection drops.
    let mut dead = Queue::connect(&url, "dead").unwrap();
    dead.set_clock(Some(10_000));
    assert_eq!(dead.claim(0, 5, &opts).unwrap().len(), 5);
    drop(dead);
    // Another dies inside its claim transaction: its row locks go with it.
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = raw.transaction().unwrap();
    let locked = tx
        .query(
            "SELECT infohash FROM crawl_queue WHERE claimed_by IS NULL \
             ORDER BY discovered_at, infohash LIMIT 5 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .unwrap();
    assert_eq!(locked.len(), 5);
    // While it holds its locks, a live claimer skips those rows (no waiting).
    let mut live = Queue::connect(&url, "live").unwrap();
    live.set_clock(Some(10_001));
    let first = live.claim(0, 100, &opts).unwrap();
    assert_eq!(first.len(), 10, "20 rows, 5 claimed by the dead, 5 locked");
    drop(tx);
    drop(raw);
    // The locked rows come free at once; the dead claimer's after lease + grace.
    let second = live.claim(0, 100, &opts).unwrap();
    assert_eq!(second.len(), 5);
    live.set_clock(Some(10_000 + 60 + 31));
    let third = live.claim(0, 100, &opts).unwrap();
    assert_eq!(third.len(), 5);
    let all: BTreeSet<InfoHash> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|c| c.info_hash)
        .collect();
    assert_eq!(all, rows.iter().map(|r| r.0).collect());
    let done = live
        .complete(&all.iter().copied().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(done, 20);
    assert_eq!(o.pending().unwrap(), (0, 0));
}

#[test]
fn done_rows_are_pruned_after_keep_and_offered_again_only_if_unstored() {
    let pg = server();
    let url = pg.create_database("qprune").unwrap();
    let mut q = Queue::connect(&url, "a").unwrap();
    let opts = ClaimOptions {
        lease: Duration::from_secs(60),
        grace: Duration::from_secs(30),
        orphan_after: Duration::from_secs(86_400),
    };
    q.set_clock(Some(1000));
    let (a, b, c) = (ih(0x10, 1), ih(0x10, 2), ih(0x10, 3));
    q.offer(&[(a, 0), (b, 0), (c, 0)]).unwrap();
    assert_eq!(q.claim(0, 2, &opts).unwrap().len(), 2);
    // a and b done (lease until 1060); c pending.
    assert_eq!(q.complete(&[a, b]).unwrap(), 2);
    let keep = Duration::from_secs(3600);
    // Not before the lease's end + keep.
    q.set_clock(Some(1060 + 3599));
    assert_eq!(q.prune_done(keep, 100).unwrap(), 0);
    q.set_clock(Some(1060 + 3600));
    // Bounded: one per call.
    assert_eq!(q.prune_done(keep, 1).unwrap(), 1);
    assert_eq!(q.prune_done(keep, 100).unwrap(), 1);
    assert_eq!(q.prune_done(keep, 100).unwrap(), 0);
    assert_eq!(q.totals().pruned, 2);
    // The pending row stays.
    assert_eq!(count(&mut q, "SELECT count(*) FROM crawl_queue"), 1);
    assert_eq!(
        count(&mut q, "SELECT count(*) FROM crawl_queue WHERE NOT done"),
        1
    );
    // a stored meanwhile: its offer is skipped; b (given up) is work again.
    let mut store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let mut t = Synth::new(7).torrent(0, false);
    t.infohash = a;
    store.apply_batch(&[Op::Torrent(Box::new(t))]).unwrap();
    assert_eq!(q.offer(&[(a, 0), (b, 0)]).unwrap(), 1);
    let again: BTreeSet<InfoHash> = q
        .claim(0, 10, &opts)
        .unwrap()
        .into_iter()
        .map(|c| c.info_hash)
        .collect();
    assert_eq!(again, BTreeSet::from([b, c]));
}
