//! Hostile worlds: floods, garbage and spoofers against the crawler; and the
//! determinism oracle over a world with everything in it.

use std::time::Duration;

use magnetar_core::Fault;
use magnetar_core::Timestamp;
use magnetar_tests::adversary::{Adversary, Attack, Prober};
use magnetar_tests::client::SeedBehaviour;
use magnetar_tests::util::seed_from_env;
use magnetar_tests::{GilbertElliott, HonestSpec, Kind, NetConfig, NodeIdx, RuntimePolicy, World};

fn base(seed: u64, net: NetConfig, honest: usize) -> (World, NodeIdx) {
    let mut w = World::new(seed, net);
    w.add_honest_nodes(&HonestSpec::realistic(honest));
    w.build_tables();
    let c = w.add_crawler(
        1,
        RuntimePolicy {
            record: false,
            ..RuntimePolicy::default()
        },
        |cfg| {
            cfg.crawl.max_pps = 300;
            cfg.dht.max_stored_infohashes = 256;
            cfg.dht.max_transactions = 512;
            cfg.dht.rate_limit_table = 1024;
        },
    );
    w.bootstrap_crawler(c, 4);
    (w, c)
}

struct FloodOutcome {
    seed: u64,
    unconfirmed: usize,
    table_len: usize,
}

/// Runs the flood and checks what holds today; returns the table pollution.
fn flood(seed: u64) -> FloodOutcome {
    let (mut w, c) = base(seed, NetConfig::default(), 200);
    w.run_for(Duration::from_secs(20), 2_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let target = w.addr_of(c);
    let own_id = w.crawler(c).crawler.identities()[0].id;
    let start = w.now();
    let victims: Vec<_> = vec![own_id, w.dir.get(0).id, w.dir.get(1).id];
    let attacks = [
        (Attack::Flood { sources: 20_000 }, 20, 10),
        (Attack::Garbage, 5, 10),
        (
            Attack::Spoof {
                victim_ids: victims,
            },
            5,
            10,
        ),
    ];
    for (attack, burst, ms) in attacks {
        let a = w.add_simple(Kind::Adversary, |id, _| {
            Adversary::new(id, target, attack, burst, Duration::from_millis(ms))
        });
        w.wake_node_at(a, start);
    }
    for _ in 0..40 {
        let a = w.add_simple(Kind::Adversary, |id, _| {
            Adversary::new(
                id,
                target,
                Attack::AnnounceFlood,
                1,
                Duration::from_millis(200),
            )
        });
        w.wake_node_at(a, start);
    }
    let p = w.add_simple(Kind::Other, |id, _| {
        Prober::new(id, target, Duration::from_millis(250))
    });
    w.wake_node_at(p, start);
    // Sample the crawler's bounded state through the attack.
    let cfg = w.crawler(c).crawler.config().clone();
    for _ in 0..4 {
        w.run_for(Duration::from_secs(10), 3_000_000)
            .unwrap_or_else(|e| panic!("{e}"));
        let s = w.crawler(c).crawler.stats();
        assert!(
            s.transactions <= cfg.dht.max_transactions,
            "seed {seed}: {s:?}"
        );
        assert!(s.lookups_running <= cfg.dht.max_lookups, "seed {seed}");
        assert!(
            s.stored_infohashes <= cfg.dht.max_stored_infohashes,
            "seed {seed}"
        );
        assert!(s.nodes <= cfg.dht.routing.max_nodes, "seed {seed}");
        assert!(
            w.crawler(c).open_conns() <= cfg.fetch.max_sessions,
            "seed {seed}"
        );
    }
    let cr = &w.crawler(c).crawler;
    let s = cr.stats();
    // The attack happened and was counted.
    assert!(
        s.dht.faults_total() > 1000,
        "seed {seed}: {:?}",
        s.dht.faults
    );
    assert!(s
        .dht
        .faults
        .keys()
        .any(|f| matches!(f, Fault::Malformed(_))));
    assert!(
        s.dht.faults.contains_key(&Fault::RateLimited),
        "seed {seed}"
    );
    assert!(
        s.dht.store_evictions > 0,
        "seed {seed}: the store cap was reached"
    );
    assert!(s.dht.rate_table_evictions > 0, "seed {seed}");
    // Our identity and table are intact: no forged node got in.
    assert_eq!(cr.identities()[0].id, own_id);
    let table = &cr.identities()[0].table;
    table
        .check_invariant()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    // Nodes that only queried us (spoofed sources among them) may sit in the table
    // unconfirmed, as BEP 5 allows; every node that answered us is real.
    let mut unconfirmed = 0;
    for n in table.nodes() {
        match w.dir.lookup(&n.addr) {
            Some(ep) if n.last_response.is_some() => {
                assert_eq!(
                    w.dir.get(ep).id,
                    n.id,
                    "seed {seed}: spoofed id in the table"
                )
            }
            Some(_) => {}
            None => {
                assert!(n.last_response.is_none(), "seed {seed}: forged {n:?}");
                unconfirmed += 1;
            }
        }
    }
    let table_len = table.len();
    eprintln!(
        "seed {seed}: {unconfirmed} of {table_len} table nodes are unreachable spoofed queriers"
    );
    // The honest prober was answered throughout (the default network loses nothing).
    let pr = w.get::<Prober>(p).unwrap();
    assert!(pr.sent >= 150);
    assert_eq!(
        pr.bad,
        0,
        "seed {seed}: {:?}",
        String::from_utf8_lossy(&pr.last_bad)
    );
    assert!(
        pr.answered * 100 >= pr.sent * 95,
        "seed {seed}: {} of {} answered",
        pr.answered,
        pr.sent
    );
    FloodOutcome {
        seed,
        unconfirmed,
        table_len,
    }
}

#[test]
fn a_flood_leaves_memory_bounded_and_honest_answers_intact() {
    flood(seed_from_env(41));
}

/// Core inserts every querier into its buckets (`Crawler::on_query` → `heard` with
/// `Contact::Query`), so queries from spoofed sources fill the table with
/// unreachable nodes that we then hand to honest nodes in `nodes` answers.
#[test]
fn a_spoofed_query_flood_does_not_take_over_the_table() {
    let o = flood(seed_from_env(41));
    assert!(
        o.unconfirmed * 5 <= o.table_len,
        "seed {}: {} of {} table nodes are spoofed",
        o.seed,
        o.unconfirmed,
        o.table_len
    );
}

/// A world with every moving part: loss bursts, duplicates, reordering, churn,
/// read-only and NAT-ed nodes, clients, adversaries, a crawler.
fn everything(seed: u64, secs: u64) -> (u64, u64) {
    let net = NetConfig {
        loss: 0.02,
        burst: Some(GilbertElliott::bursty(0.002, 10.0)),
        duplicate: 0.01,
        reorder: 0.05,
        tcp_loss: 0.05,
        ..NetConfig::default()
    };
    let (mut w, c) = base(seed, net, 150);
    let clients = w.add_clients(10, |i| SeedBehaviour::ALL[i % 8], Duration::from_secs(120));
    w.add_torrents(60, |r| 1 + r.below(3) as u32, 2, &clients, true);
    w.start_churn(HonestSpec::realistic(0), Duration::from_secs(5));
    let target = w.addr_of(c);
    let a = w.add_simple(Kind::Adversary, |id, _| {
        Adversary::new(id, target, Attack::Garbage, 2, Duration::from_millis(100))
    });
    w.wake_node_at(a, Timestamp::from_secs(1));
    w.run_until(Timestamp::from_secs(secs), 5_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(w.stats.joins > 0 && w.stats.leaves > 0);
    (w.trace_hash(), w.deliveries())
}

#[test]
fn determinism_oracle_same_seed_same_trace() {
    let seed = seed_from_env(51);
    let (h1, n1) = everything(seed, 60);
    let (h2, n2) = everything(seed, 60);
    assert!(n1 > 5_000, "seed {seed}: only {n1} deliveries");
    assert_eq!((h1, n1), (h2, n2), "seed {seed}: two runs diverged");
    let (h3, _) = everything(seed ^ 0xdead_beef, 60);
    assert_ne!(h1, h3, "seed {seed}: another seed gave the same trace");
}
