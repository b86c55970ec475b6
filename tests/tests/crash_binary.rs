//! Crash safety end to end: `magnetar crawl` is SIGKILLed at seeded random points of
//! a crawl, again and again. After every kill the database opens, `magnetar export`
//! still has every torrent it showed just before the kill (same records), and the
//! restarted crawler rejoins the DHT from its saved nodes (its --bootstrap points
//! at a dead address, so saved nodes are the only way back).
//!
//! The same body runs against both runtimes (`--runtime mio` and `--runtime
//! tokio`), one after the other. `CRASH_SEED=n` replays a run; a failure prints
//! its seed.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use magnetar_core::krpc::QueryKind;
use magnetar_core::metadata::{parse_info, sha1_info_hash};
use magnetar_core::testkit::{build_info, Behavior, InfoSpec};
use magnetar_core::InfoHash;
use magnetar_core::Rng;
use support::{crawl, export, wait_until, Client, Exported, Proc, Responder, Seeders};

/// Killed runs (plus one clean run before and one after).
const KILLS: usize = 12;
const SEEDERS: u8 = 5;
const PER_SEEDER: usize = 12;
/// The whole test must end within this.
const BUDGET: Duration = Duration::from_secs(240);

fn ip(p: [u8; 3], last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(p[0], p[1], p[2], last))
}

struct Torrent {
    ih: InfoHash,
    seeder: usize,
    want: Exported,
}

#[test]
fn mio_sigkill_at_random_points_loses_nothing_committed() {
    let _one = one_at_a_time();
    sigkill_at_random_points_loses_nothing_committed("mio", 1);
}

#[test]
fn tokio_sigkill_at_random_points_loses_nothing_committed() {
    let _one = one_at_a_time();
    sigkill_at_random_points_loses_nothing_committed("tokio", 3);
}

/// The tests of this file run one at a time (a failed one does not stop the next).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole kill-and-restart sequence against `magnetar crawl --runtime
/// RUNTIME`, on the addresses of `private_prefix(salt)`.
fn sigkill_at_random_points_loses_nothing_committed(runtime: &str, salt: u8) {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC4A5_4000);
    eprintln!("{runtime}: CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    // Build (or find) the binary before the clock starts.
    support::magnetar_bin();
    let t_start = Instant::now();
    let p = support::private_prefix(salt);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let crawler = SocketAddr::new(ip(p, 1), 6881);
    let boot = Responder::start(SocketAddr::new(ip(p, 2), 6881));
    let dead_boot = SocketAddr::new(ip(p, 250), 9).to_string();

    // SEEDERS honest peers, PER_SEEDER torrents each.
    let mut torrents = Vec::new();
    let mut seeders = Vec::new();
    for s in 0..SEEDERS {
        let mut served = Vec::new();
        for k in 0..PER_SEEDER {
            let name = format!("crash-{s}-{k}");
            let info = build_info(&InfoSpec::many_files(&name, 1 + k * 3, 333));
            let ih = sha1_info_hash(&info);
            let t = parse_info(&info).unwrap();
            torrents.push(Torrent {
                ih,
                seeder: s as usize,
                want: Exported {
                    infohash: ih.to_hex(),
                    name: t.name.clone(),
                    size: t.total_size,
                    files: t.files.len(),
                },
            });
            served.push((ih, info, Behavior::Honest));
        }
        seeders.push(Seeders::start([p[0], p[1], p[2], 3 + s], served));
    }
    let mut clients: Vec<Client> = seeders.iter().map(|s| Client::bind(s.addr.ip())).collect();
    let mut pinger = Client::bind(ip(p, 9));
    let mut next = 0usize; // next torrent to announce
    let announce_next = |n: usize, clients: &mut Vec<Client>, next: &mut usize| {
        for _ in 0..n {
            let Some(t) = torrents.get(*next) else { return };
            *next += 1;
            let port = seeders[t.seeder].addr.port();
            // May fail if the kill lands first; a later run re-announces.
            let _ = clients[t.seeder].announce(crawler, t.ih, port);
        }
    };
    let start = |bootstrap: &str| -> Proc {
        let args: Vec<String> = vec![
            "--runtime".into(),
            runtime.into(),
            "--bind".into(),
            crawler.to_string(),
            "--bootstrap".into(),
            bootstrap.into(),
            "--allow-private".into(),
            "--duration".into(),
            "120".into(),
        ];
        crawl(None, &db, &args)
    };

    // Run 0, clean: join through the bootstrap node, index a few, stop with SIGTERM
    // (the routing table is saved).
    let mut c = start(&boot.addr.to_string());
    assert!(
        wait_until(Duration::from_secs(20), || boot.queries_from(crawler) > 0),
        "the crawler never queried its bootstrap node:\n{}",
        c.tail(40)
    );
    announce_next(5, &mut clients, &mut next);
    let first: Vec<String> = torrents[..5].iter().map(|t| t.ih.to_hex()).collect();
    assert!(
        wait_until(Duration::from_secs(60), || export(&db)
            .is_ok_and(|m| first.iter().all(|ih| m.contains_key(ih)))),
        "first torrents not stored:\n{}",
        c.tail(40)
    );
    let st = c.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", c.tail(40));

    let mut grew = 0;
    let mut resumed = 0;
    let mut prev_count = export(&db).unwrap().len();
    for run in 1..=KILLS {
        assert!(
            t_start.elapsed() < BUDGET,
            "{runtime}: CRASH_SEED={seed}: over the time budget at run {run}"
        );
        let mut c = start(&dead_boot);
        // Every fourth kill lands while starting; the others mid-crawl.
        let early = run % 4 == 1;
        let plan;
        if early {
            // Killed while starting: opening the database, loading saved nodes.
            plan = Duration::from_millis(rng.below(400));
            let t = Instant::now();
            while t.elapsed() < plan && c.alive() {
                std::hint::spin_loop();
            }
        } else {
            // The only way back into the DHT is the saved nodes.
            let before = boot.queries_from(crawler);
            assert!(
                wait_until(Duration::from_secs(20), || boot.queries_from(crawler) > before),
                "{runtime}: CRASH_SEED={seed} run {run}: the restarted crawler did not rejoin from its saved nodes:\n{}",
                c.tail(40)
            );
            resumed += 1;
            assert!(
                pinger
                    .ask(crawler, QueryKind::Ping, 10, Duration::from_millis(300))
                    .is_some(),
                "run {run}: no answer to ping after restart"
            );
            announce_next(1 + rng.below(4) as usize, &mut clients, &mut next);
            // Kill at a random point of the fetch → store → commit pipeline.
            plan = Duration::from_millis(rng.below(2500));
            let t = Instant::now();
            while t.elapsed() < plan {
                assert!(c.alive(), "run {run}: exited by itself:\n{}", c.tail(40));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let before_kill = if early {
            None
        } else {
            Some(export(&db).unwrap_or_else(|e| {
                panic!(
                    "{runtime}: CRASH_SEED={seed} run {run}: export during the crawl failed: {e}"
                )
            }))
        };
        assert!(
            c.alive(),
            "{runtime}: CRASH_SEED={seed} run {run}: died before the kill:\n{}",
            c.tail(40)
        );
        c.kill9();
        // The database opens after the crash and lost nothing.
        let after = export(&db).unwrap_or_else(|e| {
            panic!("{runtime}: CRASH_SEED={seed} run {run}: export after SIGKILL failed: {e}")
        });
        if let Some(b) = &before_kill {
            for (ih, e) in b {
                assert_eq!(
                    after.get(ih),
                    Some(e),
                    "{runtime}: CRASH_SEED={seed} run {run}: {ih} was exported before the kill but not after"
                );
            }
        }
        assert!(
            after.len() >= prev_count,
            "{runtime}: CRASH_SEED={seed} run {run}: torrents lost"
        );
        if after.len() > prev_count {
            grew += 1;
        }
        prev_count = after.len();
        eprintln!(
            "{runtime} run {run}: killed after {plan:?}{}; {} torrents stored",
            if early { " (while starting)" } else { "" },
            after.len()
        );
    }

    // Final clean run: everything announced so far (and the rest) gets indexed.
    let mut c = start(&dead_boot);
    let before = boot.queries_from(crawler);
    assert!(
        wait_until(Duration::from_secs(20), || boot.queries_from(crawler)
            > before),
        "final run did not rejoin from saved nodes:\n{}",
        c.tail(40)
    );
    let stored = export(&db).unwrap();
    for t in &torrents {
        if !stored.contains_key(&t.ih.to_hex()) {
            let port = seeders[t.seeder].addr.port();
            clients[t.seeder].announce(crawler, t.ih, port).unwrap();
        }
    }
    let all = wait_until(Duration::from_secs(90), || {
        export(&db).is_ok_and(|m| torrents.iter().all(|t| m.contains_key(&t.ih.to_hex())))
    });
    let st = c.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "final run: {st:?}\n{}",
        c.tail(40)
    );
    let m: BTreeMap<String, Exported> = export(&db).unwrap();
    if !all {
        let log = c.log();
        let missing: Vec<String> = torrents
            .iter()
            .map(|t| t.ih.to_hex())
            .filter(|ih| !m.contains_key(ih))
            .collect();
        for ih in &missing {
            eprintln!("missing {ih}:");
            for l in log.lines().filter(|l| l.contains(ih.as_str())) {
                eprintln!("  {l}");
            }
        }
        panic!(
            "{runtime}: CRASH_SEED={seed}: not every torrent indexed in the end: {} of {}; missing {missing:?}\n{}",
            m.len(),
            torrents.len(),
            c.tail(30)
        );
    }
    for t in &torrents {
        assert_eq!(m.get(&t.want.infohash), Some(&t.want));
    }
    assert_eq!(m.len(), torrents.len());
    eprintln!(
        "CRASH {runtime}: {KILLS} SIGKILLs, {resumed} restarts rejoined from saved nodes, {grew} runs committed new torrents before their kill; {} s",
        t_start.elapsed().as_secs()
    );
    assert_eq!(
        resumed,
        KILLS - KILLS.div_ceil(4),
        "every mid-crawl run resumed"
    );
    assert!(
        grew >= 3,
        "too few kills came after a commit: the test proved little"
    );
}
