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
