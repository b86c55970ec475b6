//! Metadata scenarios: the crawler fetches metadata from the world's seeders over
//! the TCP model; hostile seeders never yield invalid metadata.
//!
//! Clients serve through core's testkit fake seeder (`magnetar_tests::seeder`).

use std::time::Duration;

use magnetar_core::fetch::{SessionOutcome, Transport};
use magnetar_core::session::FailReason;
use magnetar_core::Event;
use magnetar_tests::client::SeedBehaviour;
use magnetar_tests::truth::sha1;
use magnetar_tests::util::seed_from_env;
use magnetar_tests::{HonestSpec, NetConfig, NodeIdx, RuntimePolicy, World};

fn world(
    seed: u64,
    behaviour: impl Fn(usize) -> SeedBehaviour,
    clients: usize,
) -> (World, NodeIdx) {
    let mut w = World::new(seed, NetConfig::default());
    w.add_honest_nodes(&HonestSpec {
        interval: 300,
        ..HonestSpec::plain(200)
    });
    w.build_tables();
    let cl = w.add_clients(clients, behaviour, Duration::from_secs(600));
    // One holder per torrent: each torrent's fate is its client's behaviour.
    w.add_torrents(clients * 4, |r| 1 + r.below(3) as u32, 1, &cl, true);
    let c = w.add_crawler(1, RuntimePolicy::default(), |cfg| cfg.crawl.max_pps = 500);
    w.bootstrap_crawler(c, 4);
    (w, c)
}

/// Every `MetadataFetched` is exactly the torrent's info dict.
fn check_fetched(w: &World, c: NodeIdx, seed: u64) -> usize {
    let mut n = 0;
    for e in &w.crawler(c).events {
        if let Event::MetadataFetched(m) = e {
            assert_eq!(
                sha1(&m.raw),
                m.info_hash.0,
                "seed {seed}: unverified metadata"
            );
            let t = w.truth.find(&m.info_hash).expect("a real torrent");
            assert_eq!(&m.raw[..], &t.info_dict()[..], "seed {seed}");
            n += 1;
        }
    }
    n
}

#[test]

fn metadata_is_fetched_from_honest_seeders() {
    let seed = seed_from_env(61);
    let (mut w, c) = world(seed, |_| SeedBehaviour::Honest, 20);
    w.run_for(Duration::from_secs(600), 5_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let fetched = check_fetched(&w, c, seed);
    assert_eq!(fetched, w.truth.len(), "seed {seed}");
}

#[test]

fn hostile_seeders_never_yield_invalid_metadata() {
    let seed = seed_from_env(62);
    let (mut w, c) = world(seed, |i| SeedBehaviour::ALL[i % 8], 16);
    w.run_for(Duration::from_secs(900), 5_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    check_fetched(&w, c, seed);
    let fetched: Vec<_> = w.crawler(c).tally.fetched.keys().copied().collect();
    for ih in &fetched {
        let t = w.truth.find(ih).unwrap();
        let b = w
            .get::<magnetar_tests::client::Client>(t.holders[0])
            .unwrap()
            .behaviour;
        assert!(
            matches!(b, SeedBehaviour::Honest | SeedBehaviour::Slow),
            "seed {seed}: fetched from a {b:?} seeder"
        );
    }
    // Each hostile kind ends in its exact failure reason.
    let mut seen = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for e in &w.crawler(c).events {
        let Event::PeerSession(r) = e else { continue };
        let Some(ep) = w.dir.lookup(&r.peer) else {
            continue;
        };
        let node = w.dir.get(ep).node;
        let b = w
            .get::<magnetar_tests::client::Client>(node)
            .unwrap()
            .behaviour;
        let want = match b {
            SeedBehaviour::Honest | SeedBehaviour::Slow => continue,
            SeedBehaviour::LyingSize => FailReason::SizeMismatch,
            SeedBehaviour::CorruptPiece => FailReason::HashMismatch,
            SeedBehaviour::Reject => FailReason::Rejected,
            SeedBehaviour::DisconnectMidTransfer => FailReason::ClosedMidTransfer,
            SeedBehaviour::NoUtMetadata => FailReason::NoUtMetadata,
            // TCP is refused; the uTP attempt that follows gets no answer
            // (the simulated client does not speak uTP).
            SeedBehaviour::NoListener if r.transport == Transport::Utp => {
                FailReason::ConnectTimeout
            }
            SeedBehaviour::NoListener => FailReason::ConnectRefused,
        };
        match &r.outcome {
            SessionOutcome::Failed(f) => assert_eq!(*f, want, "seed {seed}: {b:?}"),
            o => panic!("seed {seed}: {b:?} seeder ended {o:?}"),
        }
        seen += 1;
        kinds.insert(format!("{b:?}"));
    }
    assert!(seen >= 12, "seed {seed}: only {seen} hostile sessions");
    // Every hostile kind was met (else its check above proved nothing).
    for b in SeedBehaviour::ALL {
        if !matches!(b, SeedBehaviour::Honest | SeedBehaviour::Slow) {
            assert!(
                kinds.contains(&format!("{b:?}")),
                "seed {seed}: no session with a {b:?} seeder"
            );
        }
    }
    // Honest and slow seeders do deliver.
    for t in &w.truth.torrents {
        let b = w
            .get::<magnetar_tests::client::Client>(t.holders[0])
            .unwrap()
            .behaviour;
        if matches!(b, SeedBehaviour::Honest | SeedBehaviour::Slow) {
            assert!(
                fetched.contains(&t.ih),
                "seed {seed}: {b:?} seeder not fetched"
            );
        }
    }
}
