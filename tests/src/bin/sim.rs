//! The discovery benchmark: one world per strategy (same seed, same world, same
//! outgoing packet budget), run in virtual time; prints recall against time,
//! packets per new infohash, metadata figures, memory, and simulator speed.
//!
//! `cargo run --release -p magnetar-tests --bin sim -- --nodes 10000 --infohashes 100000 --hours 1 --seed 1`
//!
//! `--strategies` picks the crawlers, run one after the other in identical worlds:
//! `magnetar`, `magnetar-idN` (N identities, up to 64), `magnetar-neighbour`
//! (neighbour mode), combinations such as `magnetar-id16-neighbour`, and the
//! `magnetico` and `bitmagnet` models.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use magnetar_core::{InfoHash, Timestamp};
use magnetar_tests::baseline::{Baseline, Model};
use magnetar_tests::client::{Client, SeedBehaviour};
use magnetar_tests::net::TokenBucket;
use magnetar_tests::{HonestSpec, Kind, NetConfig, NodeIdx, RuntimePolicy, World};

#[derive(Clone, Debug)]
struct Args {
    nodes: usize,
    infohashes: usize,
    hours: f64,
    seed: u64,
    budget: u32,
    clients: Option<usize>,
    strategies: Vec<String>,
}

fn parse() -> Args {
    let mut a = Args {
        nodes: 10_000,
        infohashes: 100_000,
        hours: 1.0,
        seed: 1,
        budget: 2000,
        clients: None,
        strategies: vec!["magnetar".into(), "magnetico".into(), "bitmagnet".into()],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--nodes" => a.nodes = v.parse().expect("--nodes N"),
            "--infohashes" => a.infohashes = v.parse().expect("--infohashes N"),
            "--hours" => a.hours = v.parse().expect("--hours H"),
            "--seed" => a.seed = v.parse().expect("--seed S"),
            "--budget" => a.budget = v.parse().expect("--budget PPS"),
            "--clients" => a.clients = Some(v.parse().expect("--clients N")),
            "--strategies" => a.strategies = v.split(',').map(String::from).collect(),
            "-h" | "--help" => {
                println!("sim [--nodes N] [--infohashes N] [--hours H] [--seed S] [--budget PPS] [--clients N] [--strategies magnetar,magnetico,bitmagnet]");
                println!("  magnetar variants: magnetar-id16 (16 identities), magnetar-neighbour (neighbour mode), magnetar-id16-neighbour");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// The shared world: same seed, same build.
fn build(a: &Args) -> World {
    let mut w = World::new(a.seed, NetConfig::default());
    w.add_honest_nodes(&HonestSpec::realistic(a.nodes));
    w.build_tables();
    let clients = a.clients.unwrap_or(a.infohashes / 50 + 1);
    let cl = w.add_clients(
        clients,
        |i| match i % 20 {
            0 => SeedBehaviour::NoListener,
            1 => SeedBehaviour::Slow,
            2 => SeedBehaviour::Reject,
            _ => SeedBehaviour::Honest,
        },
        Duration::from_secs(1800),
    );
    // A world in steady state: every client is already announcing, so each
    // torrent's next announce by each holder falls in the next 30 minutes
    // (`add_clients` would hold a client back for up to a whole round).
    for &c in &cl {
        let t = Timestamp::from_nanos(w.rng.below(20_000_000_000));
        w.wake_node_at(c, t);
    }
    w.add_torrents(a.infohashes, |r| 1 + r.below(4) as u32, 2, &cl, true);
    w.start_churn(HonestSpec::realistic(0), Duration::from_secs(2));
    w
}

/// A magnetar strategy name: `magnetar[-idN][-neighbour]`.
fn magnetar_variant(name: &str) -> Option<(usize, bool)> {
    let mut parts = name.split('-');
    if parts.next() != Some("magnetar") {
        return None;
    }
    let (mut ids, mut neighbour) = (1, false);
    for p in parts {
        match p {
            "neighbour" => neighbour = true,
            _ => {
                ids = p
                    .strip_prefix("id")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))?
            }
        }
    }
    Some((ids, neighbour))
}

struct Row {
    name: String,
    detail: String,
    recall: Vec<(f64, f64)>,
    sent: u64,
    found: usize,
    with_peers: String,
    metadata: String,
    memory: String,
    events: u64,
    wall: Duration,
}

fn discovered_in_truth<'a>(w: &World, it: impl Iterator<Item = &'a InfoHash>) -> usize {
    it.filter(|ih| w.truth.find(ih).is_some()).count()
}

/// What the world's BitTorrent clients did (their announce traversals).
fn client_totals(w: &World) -> String {
    let (mut tr, mut q, mut to, mut an, mut rf) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for n in 0..w.node_count() as NodeIdx {
        if let Some(c) = w.get::<Client>(n) {
            tr += c.stats.traversals;
            q += c.stats.traversal_queries;
            to += c.stats.traversal_timeouts;
            an += c.stats.announces_sent;
            rf += c.stats.refresh_queries;
        }
    }
    format!(
        "{tr} announce traversals, {:.1} queries each ({to} timed out), {an} announce_peer, {rf} refresh get_peers",
        q as f64 / tr.max(1) as f64
    )
}

fn run(a: &Args, strategy: &str) -> Row {
    let t0 = Instant::now();
    let mut w = build(a);
    let routers: Vec<SocketAddr> = {
        let mut v: Vec<SocketAddr> = w
            .dir
            .entries
            .iter()
            .filter(|e| e.responsive && e.kind == Kind::Honest)
            .map(|e| e.addr)
            .take(8)
            .collect();
        v.sort();
        v
    };
    let budget = a.budget;
    let variant = magnetar_variant(strategy);
    let node: NodeIdx = match strategy {
        _ if variant.is_some() => {
            let (ids, neighbour) = variant.unwrap_or((1, false));
            let c = w.add_crawler(
                ids,
                RuntimePolicy {
                    record: false,
                    ..RuntimePolicy::default()
                },
                |cfg| {
                    cfg.crawl.max_pps = budget;
                    cfg.crawl.neighbour_mode = neighbour;
                },
            );
            w.crawler_call(c, |cr, now| cr.bootstrap(now, &routers));
            c
        }
        "magnetico" | "bitmagnet" => {
            let model = if strategy == "magnetico" {
                Model::Magnetico
            } else {
                Model::Bitmagnet
            };
            let r = routers.clone();
            let b = w.add_simple(Kind::Baseline, |id, _| Baseline::new(id, model, r));
            w.wake_node_at(b, Timestamp::ZERO);
            b
        }
        other => panic!("unknown strategy {other}"),
    };
    for &ep in w.endpoints(node).to_vec().iter() {
        w.net.eps[ep as usize].budget = Some(TokenBucket::new(budget));
    }
    let build_wall = t0.elapsed();
    let t1 = Instant::now();
    let ev0 = w.stats.node_events;
    let total = Duration::from_secs_f64(a.hours * 3600.0);
    let mut recall = Vec::new();
    for f in [1.0 / 12.0, 1.0 / 6.0, 0.25, 0.5, 0.75, 1.0] {
        let t = Timestamp::ZERO.add(total.mul_f64(f));
        w.run_until(t, u64::MAX).expect("unbounded");
        let found = match variant {
            Some(_) => discovered_in_truth(&w, w.crawler(node).tally.discovered.keys()),
            _ => discovered_in_truth(&w, w.get::<Baseline>(node).unwrap().discovered.keys()),
        };
        recall.push((
            t.as_secs() as f64 / 60.0,
            found as f64 / w.truth.len() as f64,
        ));
    }
    let wall = t1.elapsed();
    let events = w.stats.node_events - ev0;
    let sent: u64 = w
        .endpoints(node)
        .iter()
        .map(|&ep| w.net.eps[ep as usize].sent)
        .sum();
    let clients = client_totals(&w);
    let (found, with_peers, metadata, memory, detail) = match variant {
        Some(_) => {
            let cn = w.crawler(node);
            let s = cn.crawler.stats();
            let qi = &s.dht.queries_in;
            let detail = format!(
                "queries in: get_peers {} announce_peer {} find_node {} sample {} ping {}; new by source (core): sample {} announce {} get_peers {} (deferred {}, announced meanwhile {}, dropped {}); confirmed by first source: sample {} announce {} get_peers {}; unconfirmed get_peers candidates {} (in truth {})\n{:<10} clients:  {clients}",
                qi.get_peers,
                qi.announce_peer,
                qi.find_node,
                qi.sample_infohashes,
                qi.ping,
                s.crawl.new_from_sample,
                s.crawl.new_from_announce,
                s.crawl.new_from_get_peers,
                s.crawl.candidates_deferred,
                s.crawl.candidates_announced,
                s.crawl.candidates_dropped,
                cn.tally.by_source[0],
                cn.tally.by_source[1],
                cn.tally.by_source[2],
                cn.tally.candidates.len(),
                discovered_in_truth(&w, cn.tally.candidates.keys()),
                strategy
            );
            let found = discovered_in_truth(&w, cn.tally.discovered.keys());
            (
                found,
                format!(
                    "{} lookups done; queries out: sample {} get_peers {} find_node {} ping {}; ask-source hits {}/{}",
                    s.dht.lookups_done,
                    s.dht.queries_out.sample_infohashes,
                    s.dht.queries_out.get_peers,
                    s.dht.queries_out.find_node,
                    s.dht.queries_out.ping,
                    s.crawl.ask_source_hits,
                    s.crawl.ask_source_sent
                ),format!(
                    "fetched {} failed {} (fetch started {}, crawl fetched {} failed {})",
                    cn.tally.fetched.len(),
                    cn.tally.failed.len(),
                    cn.tally.fetch_started,
                    s.crawl.fetched,
                    s.crawl.fetch_failed
                ),
                format!(
                    "acq running {} queued {}; table {} book {} tx {} lookups {} store {} (immediate timeouts {})",
                    s.crawl.acquisitions_running,
                    s.crawl.acquisitions_queued,
                    s.nodes,s.crawl.book_nodes,
                    s.transactions,
                    s.lookups_running,
                    s.stored_infohashes,
                    cn.tally.immediate_timeouts
                ),
                detail,
            )
        }
        _ => {
            let b = w.get::<Baseline>(node).unwrap();
            let found = discovered_in_truth(&w, b.discovered.keys());
            let (held, known, tx) = b.held();
            (
                found,
                format!("{} with peers", b.with_peers.len()),
                "n/a (model)".to_string(),
                format!("nodes {held} known {known} tx {tx}"),
                format!("clients:  {clients}"),
            )
        }
    };
    eprintln!(
        "[{strategy}] build {:.1}s, run {:.1}s, {} events, {} datagrams, {} deliveries, trace {:016x}",
        build_wall.as_secs_f64(),
        wall.as_secs_f64(),
        events,
        w.net.stats.datagrams_sent,
        w.deliveries(),
        w.trace_hash()
    );
    Row {
        name: strategy.to_string(),
        detail,
        recall,
        sent,
        found,
        with_peers,
        metadata,
        memory,
        events,
        wall,
    }
}

fn main() {
    let a = parse();
    println!(
        "sim: {} honest nodes (realistic mix), {} infohashes, {} h virtual, seed {}, budget {} pkt/s",
        a.nodes, a.infohashes, a.hours, a.seed, a.budget
    );
    let rows: Vec<Row> = a.strategies.iter().map(|s| run(&a, s)).collect();
    println!();
    print!("{:<10}", "recall @");
    for (m, _) in &rows[0].recall {
        print!(" {:>7.0}m", m);
    }
    println!();
    for r in &rows {
        print!("{:<10}", r.name);
        for (_, x) in &r.recall {
            print!(" {:>7.1}%", x * 100.0);
        }
        println!();
    }
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>10}  peers",
        "strategy", "sent", "found", "pkt/new"
    );
    for r in &rows {
        let per = if r.found > 0 {
            r.sent as f64 / r.found as f64
        } else {
            f64::INFINITY
        };
        println!(
            "{:<10} {:>10} {:>10} {:>10.1}  {}",
            r.name, r.sent, r.found, per, r.with_peers
        );
    }
    println!();
    for r in &rows {
        println!("{:<10} metadata: {}", r.name, r.metadata);
        println!("{:<10} memory:   {}", r.name, r.memory);
        println!("{:<10} {}", r.name, r.detail);
    }
    println!();
    for r in &rows {
        println!(
            "{:<10} {} node events in {:.2}s wall = {:.2} M events/s",
            r.name,
            r.events,
            r.wall.as_secs_f64(),
            r.events as f64 / r.wall.as_secs_f64().max(1e-9) / 1e6
        );
    }
}
