//! Crawl scenarios: discovering the world's infohashes, fetching their metadata.

use std::time::Duration;

use magnetar_tests::client::SeedBehaviour;
use magnetar_tests::util::seed_from_env;
use magnetar_tests::{HonestSpec, NetConfig, NodeIdx, RuntimePolicy, World};

/// Honest nodes (a realistic mix), honest clients with preloaded announces, and
/// one crawler running core's strategy.
fn crawl_world(seed: u64, honest: usize, torrents: usize) -> (World, NodeIdx) {
    let mut w = World::new(seed, NetConfig::default());
    w.add_honest_nodes(&HonestSpec {
        interval: 600,
        ..HonestSpec::realistic(honest)
    });
    w.build_tables();
    let clients = w.add_clients(
        torrents / 10 + 1,
        |_| SeedBehaviour::Honest,
        Duration::from_secs(1800),
    );
    w.add_torrents(torrents, |r| 1 + r.below(3) as u32, 2, &clients, true);
    let c = w.add_crawler(
        1,
        RuntimePolicy {
            record: false,
            ..RuntimePolicy::default()
        },
        |cfg| {
            cfg.crawl.max_pps = 500;
        },
    );
    w.bootstrap_crawler(c, 4);
    (w, c)
}

#[test]
fn the_crawler_discovers_the_worlds_infohashes() {
    let seed = seed_from_env(31);
    let (mut w, c) = crawl_world(seed, 400, 400);
    w.run_for(Duration::from_secs(600), 3_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &w.crawler(c).tally;
    let recall = w.recall(t.discovered.keys());
    let stats = w.crawler(c).crawler.stats();
    eprintln!(
        "seed {seed}: recall {recall:.3}, discovered {}, immediate timeouts {}, crawl {:?}",
        t.discovered.len(),
        t.immediate_timeouts,
        stats.crawl
    );
    // Read-only and NAT-ed nodes hide some announces; the rest is found.
    assert!(recall >= 0.8, "seed {seed}: recall {recall:.3}");
}

/// Honest nodes that all answer, clients that announce `torrents` torrents (one
/// holder each, nothing preloaded: every announce is a client's traversal).
fn announce_world(seed: u64, no_bep51: f64) -> World {
    let mut w = World::new(seed, NetConfig::default());
    w.add_honest_nodes(&HonestSpec {
        no_bep51,
        ..HonestSpec::plain(500)
    });
    w.build_tables();
    let clients = w.add_clients(50, |_| SeedBehaviour::Honest, Duration::from_secs(300));
    w.add_torrents(200, |_| 1, 1, &clients, false);
    w
}

#[test]
fn clients_announce_to_the_closest_nodes_their_traversal_finds() {
    use magnetar_tests::client::Client;
    use magnetar_tests::honest::HonestNode;
    let seed = seed_from_env(41);
    let mut w = announce_world(seed, 0.0);
    w.run_for(Duration::from_secs(600), 5_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let now = w.now();
    let mut held_by_closest = Vec::new();
    for t in &w.truth.torrents {
        let near = w.dir.closest_responsive(&t.ih.0, 8);
        let n = near
            .iter()
            .filter(|&&ep| {
                w.get::<HonestNode>(w.dir.get(ep).node)
                    .is_some_and(|h| h.holds(&t.ih, now))
            })
            .count();
        held_by_closest.push(n);
    }
    let mean = held_by_closest.iter().sum::<usize>() as f64 / held_by_closest.len() as f64;
    let (mut traversals, mut queries) = (0, 0);
    for n in 0..w.node_count() as u32 {
        if let Some(c) = w.get::<Client>(n) {
            traversals += c.stats.traversals;
            queries += c.stats.traversal_queries;
        }
    }
    let per = queries as f64 / traversals.max(1) as f64;
    eprintln!("seed {seed}: {mean:.2} of the 8 closest hold each torrent; {traversals} traversals, {per:.1} queries each");
    // Converged traversals reach the true closest nodes (ground truth is never
    // consulted by the clients).
    assert!(mean >= 7.0, "seed {seed}: {mean:.2}");
    assert!(traversals >= 250, "seed {seed}: {traversals}");
    assert!((4.0..40.0).contains(&per), "seed {seed}: {per:.1}");
}

/// A crawler in a world without BEP 51: all it finds comes from capture.
fn capture_recall(seed: u64, tune: impl FnOnce(&mut magnetar_core::Config)) -> (f64, usize, usize) {
    let mut w = announce_world(seed, 1.0);
    let c = w.add_crawler(
        1,
        RuntimePolicy {
            record: false,
            ..RuntimePolicy::default()
        },
        tune,
    );
    w.bootstrap_crawler(c, 4);
    w.run_for(Duration::from_secs(900), 5_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &w.crawler(c).tally;
    let outside_truth = t
        .discovered
        .keys()
        .filter(|ih| w.truth.find(ih).is_none())
        .count();
    (
        w.recall(t.discovered.keys()),
        t.candidates.len(),
        outside_truth,
    )
}

#[test]
fn neighbour_mode_captures_the_announces_of_traversing_clients() {
    let seed = seed_from_env(42);
    let (plain, _, noise_plain) = capture_recall(seed, |_| {});
    let (neighbour, candidates, noise) = capture_recall(seed, |c| c.crawl.neighbour_mode = true);
    eprintln!("seed {seed}: capture recall {plain:.3} plain, {neighbour:.3} neighbour mode ({candidates} unconfirmed candidates)");
    assert!(neighbour >= 0.8, "seed {seed}: {neighbour:.3}");
    assert!(
        neighbour > plain + 0.3,
        "seed {seed}: {plain:.3} vs {neighbour:.3}"
    );
    // Table-refresh targets reach the crawler too, but are never confirmed.
    assert_eq!((noise_plain, noise), (0, 0), "seed {seed}");
}
