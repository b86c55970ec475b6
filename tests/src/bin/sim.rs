//! The discovery benchmark: one world per strategy (same seed, same world, same
//! outgoing packet budget), run in virtual time; prints recall against time,
//! packets per new infohash, metadata figures, memory, and simulator speed.
//!
//! `cargo run --release -p magnetar-tests --bin sim -- --nodes 10000 --infohashes 100000 --hours 1 --seed 1`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use magnetar_core::{InfoHash, Timestamp};
use magnetar_tests::baseline::{Baseline, Model};
use magnetar_tests::client::SeedBehaviour;
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
    w.add_torrents(a.infohashes, |r| 1 + r.below(4) as u32, 2, &cl, true);
    w.start_churn(HonestSpec::realistic(0), Duration::from_secs(2));
    w
}

struct Row {
    name: String,
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
    let node: NodeIdx = match strategy {
        "magnetar" => {
            let c = w.add_crawler(
                1,
                RuntimePolicy {
                    record: false,
                    ..RuntimePolicy::default()
                },
                |cfg| {
                    cfg.crawl.max_pps = budget;
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
        let found = match strategy {
            "magnetar" => discovered_in_truth(&w, w.crawler(node).tally.discovered.keys()),
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
    let (found, with_peers, metadata, memory) = match strategy {
        "magnetar" => {
            let cn = w.crawler(node);
            let s = cn.crawler.stats();
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
