//! The discovery benchmark: one world per strategy (same seed, same world, same
//! outgoing packet budget), run in virtual time; prints recall against time,
//! packets per new infohash, metadata success and failures by reason, the
//! strategy's heap (metered by this binary's allocator, see
//! `magnetar_tests::alloc_meter`), and simulator speed in node events per second
//! of wall time and of CPU time (the machine may be shared).
//!
//! `cargo run --release -p magnetar-tests --bin sim -- --nodes 10000 --infohashes 100000 --hours 1 --seed 1`
//!
//! The worlds are independent and each runs on one thread; `--jobs N` runs up
//! to N of them side by side (default: the number of cores). Results, traces
//! and figures do not depend on it, only the wall time does.
//!
//! `--strategies` picks the crawlers, run one after the other in identical worlds:
//! `magnetar`, `magnetar-idN` (N identities, up to 64), `magnetar-neighbour`
//! (neighbour mode), `magnetar-noutp` (the fetcher on TCP only), combinations
//! such as `magnetar-id16-neighbour`, and the `magnetico` and `bitmagnet` models.
//!
//! The NAT world (issue 15): `--nat F` puts a share of the clients behind NATs
//! (address-and-port-restricted, no port forwarding: reached only over uTP from
//! a socket they sent to lately), `--utp-only F` turns TCP off on a share of
//! the others, `--utp-dual F` gives uTP to a share of the rest; the crawler is
//! put in every client's routing table (unless `--not-in-tables`). The
//! metadata report then gives fetched
//! per discovered by class of torrent (TCP-reachable, uTP-only, behind NATs):
//!
//! `cargo run -p magnetar-tests --bin sim -- --nodes 10000 --infohashes 10000 --hours 1 --nat 0.3 --utp-only 0.3 --utp-dual 1 --strategies magnetar,magnetar-noutp --jobs 2`
//! (BENCHMARKS.md, uTP).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use magnetar_core::pump::AcquirePolicy;
use magnetar_core::{InfoHash, Timestamp};
use magnetar_tests::alloc_meter::{self, Meter};
use magnetar_tests::baseline::{Baseline, Model};
use magnetar_tests::client::Client;
use magnetar_tests::nat::{self, ClientMix};
use magnetar_tests::net::TokenBucket;
use magnetar_tests::soak::{self, Hour, Sampler};
use magnetar_tests::{Kind, NodeIdx, RuntimePolicy, World};

#[global_allocator]
static ALLOC: Meter = Meter;

#[derive(Clone, Debug)]
struct Args {
    nodes: usize,
    infohashes: usize,
    hours: f64,
    seed: u64,
    budget: u32,
    clients: Option<usize>,
    strategies: Vec<String>,
    jobs: usize,
    /// Print a row per virtual hour for each magnetar world (`--hourly`).
    hourly: bool,
    /// New torrents per virtual hour (`--arrivals N`; default 0).
    arrivals: u32,
    /// Share of honest nodes that are silent: in others' tables but never
    /// answering (behind a NAT). `--silent F`; default the realistic 0.15.
    silent: Option<f64>,
    /// The clients' transports and NATs (`--nat`, `--utp-only`, `--utp-dual`).
    mix: ClientMix,
    /// With a mix, the crawler is put in every client's routing table unless
    /// `--not-in-tables` (then clients learn of it only through traversals).
    introduce: bool,
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
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hourly: false,
        arrivals: 0,
        silent: None,
        mix: ClientMix::TCP_ONLY,
        introduce: true,
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
            "--jobs" => a.jobs = v.parse().expect("--jobs N"),
            "--arrivals" => a.arrivals = v.parse().expect("--arrivals PER_HOUR"),
            "--silent" => a.silent = Some(v.parse().expect("--silent SHARE")),
            "--nat" => a.mix.nat = v.parse().expect("--nat SHARE"),
            "--utp-only" => a.mix.utp_only = v.parse().expect("--utp-only SHARE"),
            "--utp-dual" => a.mix.dual = v.parse().expect("--utp-dual SHARE"),
            "--not-in-tables" => {
                a.introduce = false;
                i += 1;
                continue;
            }
            "--hourly" => {
                a.hourly = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                println!("sim [--nodes N] [--infohashes N] [--hours H] [--seed S] [--budget PPS] [--clients N] [--strategies magnetar,magnetico,bitmagnet] [--jobs N (worlds run in parallel; default: cores)] [--hourly] [--arrivals PER_HOUR]");
                println!("  --hourly: a row per virtual hour for each magnetar world (heap, discoveries, fetches, datagrams, every bounded table against its bound) and a verdict");
                println!("  --silent F: share of honest nodes that never answer (behind a NAT; default 0.15)");
                println!("  --nat F: share of clients behind a NAT (address-and-port-restricted, no port forwarding; TCP and uTP on); --utp-only F: share of the others with TCP off; --utp-dual F: share of the rest that also serve uTP (default 0 each: TCP-only clients, as in earlier runs). With any of them, the crawler is in every client's routing table (unless --not-in-tables: clients learn of it only through their traversals), and the metadata report gives fetched/discovered by class of torrent; compare with --strategies magnetar,magnetar-noutp");
                println!("  --arrivals N: N new torrents per virtual hour, each given to 2 clients who announce it on their next turn (default 0: the world's torrents are all there from the start)");
                println!("  magnetar variants: magnetar-id16 (16 identities), magnetar-neighbour (neighbour mode), magnetar-id16-neighbour; a -drop or -queue suffix picks the acquire policy when acquisitions are full; -nolate: no late-transaction table (a query holds its slot until the full timeout); -noutp: the fetcher on TCP only");
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
    let clients = a.clients.unwrap_or(a.infohashes / 50 + 1);
    let mut spec = magnetar_tests::HonestSpec::realistic(a.nodes);
    if let Some(s) = a.silent {
        spec.unreachable = s;
    }
    let mut w = soak::churning_world_with(a.seed, &spec, a.infohashes, clients, a.arrivals);
    nat::apply_mix(&mut w, &a.mix);
    w
}

/// A magnetar strategy: `magnetar[-idN][-neighbour][-drop|-queue][-nolate][-noutp]`.
#[derive(Clone, Copy, Debug)]
struct Variant {
    ids: usize,
    neighbour: bool,
    /// The pump's acquire policy when acquisitions are full (drop the
    /// infohash, or queue it and retry); `None`: the runtimes' policy.
    on_full: Option<AcquirePolicy>,
    /// The fetcher may use uTP (`-noutp`: TCP only).
    utp: bool,
}

/// Parses a magnetar strategy name (see [`Variant`]).
fn magnetar_variant(name: &str) -> Option<Variant> {
    let mut parts = name.split('-');
    if parts.next() != Some("magnetar") {
        return None;
    }
    let (mut ids, mut neighbour, mut on_full, mut utp) = (1, false, None, true);
    for p in parts {
        match p {
            "neighbour" => neighbour = true,
            "noutp" => utp = false,
            // The transaction table without its late table (see `no_late`).
            "nolate" => {}
            "drop" => on_full = Some(AcquirePolicy::Drop),
            "queue" => {
                on_full = Some(AcquirePolicy::Queue {
                    max: magnetar_core::pump::ACQUIRE_QUEUE,
                })
            }
            _ => {
                ids = p
                    .strip_prefix("id")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))?
            }
        }
    }
    Some(Variant {
        ids,
        neighbour,
        on_full,
        utp,
    })
}

struct Row {
    name: String,
    /// What came to us (capture) and what the world's clients did.
    capture: String,
    recall: Vec<(f64, f64)>,
    sent: u64,
    found: usize,
    detail: String,
    metadata: Vec<String>,
    memory: Vec<String>,
    events: u64,
    wall: Duration,
    cpu: Option<Duration>,
    build: Duration,
    trace: u64,
    /// `--hourly` rows (magnetar strategies only).
    hours: Option<Sampler>,
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

/// CPU time of this thread (the simulation is single-threaded), from
/// `/proc/thread-self/schedstat` (nanoseconds on CPU). `None` off Linux.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    (ns > 0).then(|| Duration::from_nanos(ns))
}

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Approximate heap of a baseline's hash map, from its usable capacity (an
/// underestimate: hashbrown keeps an eighth of its buckets free). The magnetar
/// strategies' storage stand-in is metered instead ([`alloc_meter::storage`]).
fn map_bytes<K, V, S>(m: &std::collections::HashMap<K, V, S>) -> i64 {
    (m.capacity() * (std::mem::size_of::<(K, V)>() + 1)) as i64
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
    alloc_meter::reset();
    let node: NodeIdx = match strategy {
        _ if variant.is_some() => {
            let Variant {
                ids,
                neighbour,
                on_full,
                utp,
            } = variant.expect("a magnetar variant");
            let c = w.add_crawler(
                ids,
                RuntimePolicy {
                    record: false,
                    on_full,
                    ..RuntimePolicy::default()
                },
                |cfg| {
                    cfg.crawl.max_pps = budget;
                    cfg.crawl.neighbour_mode = neighbour;
                    cfg.fetch.utp = utp;
                    if no_late(strategy) {
                        cfg.dht.late_factor = 0;
                    }
                },
            );
            w.meter = Some(c);
            if !a.mix.is_tcp_only() && a.introduce {
                nat::introduce(&mut w, c);
            }
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
            w.meter = Some(b);
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
    let cpu0 = cpu_time();
    let ev0 = w.stats.node_events;
    let total = Duration::from_secs_f64(a.hours * 3600.0);
    let mut recall = Vec::new();
    let mut sampler = (a.hourly && variant.is_some()).then(|| Sampler::new(&w, node));
    let mut next_hour = 1u32;
    alloc_meter::reset_peak();
    for f in [1.0 / 12.0, 1.0 / 6.0, 0.25, 0.5, 0.75, 1.0] {
        let t = Timestamp::ZERO.add(total.mul_f64(f));
        if let Some(s) = sampler.as_mut() {
            // Whole hours up to this recall point, each recorded at its end.
            while Duration::from_secs(3600 * next_hour as u64) <= total.mul_f64(f) {
                let end = Timestamp::ZERO.add(Duration::from_secs(3600 * next_hour as u64));
                w.run_until(end, u64::MAX).expect("unbounded");
                let h = s.record(&w, next_hour);
                // Progress (stderr), so a long run can be followed (and used) as it goes.
                eprintln!("[{strategy}] {}", hour_row(h));
                for t in h.tables.iter().filter(|t| t.over()) {
                    eprintln!(
                        "[{strategy}] hour {}: {} {} over its bound {}",
                        h.hour, t.name, t.len, t.bound
                    );
                }
                alloc_meter::reset_peak();
                next_hour += 1;
            }
        }
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
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    let events = w.stats.node_events - ev0;
    let sent: u64 = w
        .endpoints(node)
        .iter()
        .map(|&ep| w.net.eps[ep as usize].sent)
        .sum();
    let metered = |extra: String| -> Vec<String> {
        if !alloc_meter::installed() {
            return vec!["(allocation meter not installed)".into()];
        }
        vec![format!(
            "heap now {}, peak {}{extra}",
            mib(alloc_meter::live()),
            mib(alloc_meter::peak())
        )]
    };
    let clients = client_totals(&w);
    let (found, detail, metadata, memory, capture) = match variant {
        Some(_) => {
            let cn = w.crawler(node);
            let s = cn.crawler.stats();
            let qi = &s.dht.queries_in;
            let capture = format!(
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
            let f = &s.fetch;
            let done = f.fetched + f.failed;
            let mut md = vec![
                format!(
                    "infohashes: {} fetch jobs started, {} fetched, {} failed ({} by the 60 s deadline), {} still running; success {:.1} % of finished jobs, {:.1} % of found",
                    f.started,
                    f.fetched,
                    f.failed,
                    f.jobs_timed_out,
                    f.started.saturating_sub(done),
                    100.0 * f.fetched as f64 / done.max(1) as f64,
                    100.0 * cn.tally.fetched.len() as f64 / found.max(1) as f64,
                ),
                format!(
                    "peer sessions: {} started, {} ok, {} failed, {} cancelled (another peer was first)",
                    f.sessions_started, f.sessions_ok, f.sessions_failed, f.sessions_cancelled
                ),
            ];
            let mut reasons: Vec<(u64, String)> = f
                .failures
                .iter()
                .map(|(r, n)| (*n, format!("{r:?}")))
                .collect();
            reasons.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            md.push(format!(
                "session failures by reason: {}",
                if reasons.is_empty() {
                    "none".to_string()
                } else {
                    reasons
                        .iter()
                        .map(|(n, r)| format!("{r} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            md.push(arrivals_account(&w, a, cn));
            if !a.mix.is_tcp_only() {
                md.push(format!(
                    "by class of torrent, fetched/discovered (torrents in the world): {}",
                    nat::account(&w, &cn.tally)
                ));
                md.push(transport_line(&f.transport));
            }
            let mut mem = metered(format!(
                " (of which the harness's maps standing in for storage, metered: {})",
                mib(alloc_meter::storage())
            ));
            mem.push(format!(
                "holds: routing table {} nodes, crawl book {} nodes, {} transactions, {} lookups, {} stored infohashes, {} metadata connections, {} acquisitions running + {} queued",
                s.nodes,
                s.crawl.book_nodes,
                s.transactions,
                s.lookups_running,
                s.stored_infohashes,
                cn.open_conns(),
                s.crawl.acquisitions_running,
                s.crawl.acquisitions_queued,
            ));
            (
                found,
                format!(
                    "queries out: sample {} get_peers {} find_node {} ping {} ({:.0} queries/s over the run against a budget of {} pkt/s: {:.1} %; not sent for a full transaction table {}; timeouts short {} full {}); ask-source hits {}/{}; {} lookups done; identities: {} on {}, {} BEP 42 after {} switches",
                    s.dht.queries_out.sample_infohashes,
                    s.dht.queries_out.get_peers,
                    s.dht.queries_out.find_node,
                    s.dht.queries_out.ping,
                    query_rate(&s.dht.queries_out, a.hours),
                    a.budget,
                    100.0 * query_rate(&s.dht.queries_out, a.hours) / a.budget.max(1) as f64,
                    s.dht.dropped_tx_full,
                    s.dht.timeouts_short,
                    s.dht.timeouts_full,
                    s.crawl.ask_source_hits,
                    s.crawl.ask_source_sent,
                    s.dht.lookups_done,
                    cn.crawler.identities().len(),
                    cn.crawler
                        .external_addresses()
                        .iter()
                        .map(|(_, ip, _)| ip.map_or("no settled address".into(), |ip| ip.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    cn.crawler
                        .identities()
                        .iter()
                        .filter(|x| magnetar_core::bep42_matches(&x.id, x.bind.ip()))
                        .count(),
                    s.dht.identity_switches,
                ),
                md,
                mem,
                capture,
            )
        }
        _ => {
            let b = w.get::<Baseline>(node).unwrap();
            let found = discovered_in_truth(&w, b.discovered.keys());
            let (held, known, tx) = b.held();
            let mut mem = metered(format!(
                " (of which the discovered map ≈ {})",
                mib(map_bytes(&b.discovered))
            ));
            mem.push(format!(
                "holds: {held} nodes queued, {known} known, {tx} transactions"
            ));
            (
                found,
                format!("{} infohashes with peers", b.with_peers.len()),
                vec!["not modelled (the baseline models only discover)".to_string()],
                mem,
                format!("clients:  {clients}"),
            )
        }
    };
    Row {
        name: strategy.to_string(),
        capture,
        recall,
        sent,
        found,
        detail,
        metadata,
        memory,
        events,
        wall,
        cpu,
        build: build_wall,
        trace: w.trace_hash(),
        hours: sampler,
    }
}

/// Sessions by transport: attempts, connected, ok.
fn transport_line(t: &magnetar_core::fetch::TransportStats) -> String {
    use magnetar_core::fetch::{Transport, TransportStats};
    let one = |x: Transport| {
        format!(
            "{x:?} {} attempts, {} connected, {} ok, {} failed",
            TransportStats::get(&t.attempts, x),
            TransportStats::get(&t.connected, x),
            TransportStats::get(&t.ok, x),
            t.failed_total(x)
        )
    };
    format!(
        "peer sessions by transport: {}; {} ({} not opened: the uTP manager's connection or half-open caps; {} waited for them); peers not reached retried on contact: {} (jobs of their own: {} fetched, {} failed; {} waiting, {} forgotten)",
        one(Transport::Tcp),
        one(Transport::Utp),
        t.utp_unavailable,
        t.utp_waited,
        t.recontact_retries,
        t.recontact_fetched,
        t.recontact_failed,
        t.recontact_waiting,
        t.recontact_evicted
    )
}

/// A `-nolate` variant: every transaction keeps its slot until its full
/// timeout (the transaction table before the late table), to compare with in
/// the same run.
fn no_late(strategy: &str) -> bool {
    strategy.split('-').any(|p| p == "nolate")
}

/// Queries sent per second of virtual time, over `hours`.
fn query_rate(q: &magnetar_core::PacketCounts, hours: f64) -> f64 {
    let n = q.ping + q.find_node + q.get_peers + q.announce_peer + q.sample_infohashes + q.other;
    n as f64 / (hours * 3600.0).max(1e-9)
}

/// Where the torrents that arrived during the run (`--arrivals`) ended up, for
/// those that arrived before the last hour (their holders have announced):
/// fetched, discovered but not fetched, heard only in get_peers queries (a
/// candidate) whose peer search came back empty, heard only in get_peers with
/// no empty search, or never heard.
fn arrivals_account(w: &World, a: &Args, cn: &magnetar_tests::crawler_node::CrawlerNode) -> String {
    let first = a.infohashes;
    let hours = a.hours.floor() as usize;
    let end = first + (a.arrivals as usize) * hours.saturating_sub(1);
    let t = &cn.tally;
    let (mut fetched, mut disc, mut cand_empty, mut cand, mut never) = (0, 0, 0, 0, 0);
    for tor in w
        .truth
        .torrents
        .iter()
        .take(end.min(w.truth.len()))
        .skip(first)
    {
        let ih = &tor.ih;
        if t.fetched.contains_key(ih) {
            fetched += 1;
        } else if t.discovered.contains_key(ih) {
            disc += 1;
        } else if t.candidates.contains_key(ih) && t.searched_empty.contains_key(ih) {
            cand_empty += 1;
        } else if t.candidates.contains_key(ih) {
            cand += 1;
        } else {
            never += 1;
        }
    }
    let n = end
        .saturating_sub(first)
        .min(w.truth.len().saturating_sub(first));
    format!(
        "arrivals before the last hour: {n}: fetched {fetched}, discovered not fetched {disc}, get_peers candidate whose peer search came back empty {cand_empty}, candidate without an empty search {cand}, never heard {never}"
    )
}

fn main() {
    let a = parse();
    println!(
        "sim: {} honest nodes (realistic mix), {} infohashes, {} h virtual, seed {}, budget {} pkt/s for every strategy",
        a.nodes, a.infohashes, a.hours, a.seed, a.budget
    );
    let started = Instant::now();
    // Each strategy's world is independent and single-threaded: with --jobs > 1
    // they run side by side, each metered in its own slot.
    let n = a.strategies.len();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Row>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..a.jobs.clamp(1, n.max(1)) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = a.strategies.get(i) else { break };
                alloc_meter::use_slot(i + 1);
                let r = run(&a, s);
                eprintln!(
                    "[{}] built in {:.1}s, ran {} node events in {:.1}s wall, trace {:016x}",
                    r.name,
                    r.build.as_secs_f64(),
                    r.events,
                    r.wall.as_secs_f64(),
                    r.trace
                );
                if let Ok(mut d) = done.lock() {
                    d[i] = Some(r);
                }
            });
        }
    });
    let total_wall = started.elapsed();
    let rows: Vec<Row> = done
        .into_inner()
        .expect("a strategy's thread panicked")
        .into_iter()
        .map(|r| r.expect("a strategy's thread panicked"))
        .collect();
    println!();
    println!("## recall against virtual time (share of the world's infohashes discovered)");
    print!("{:<10}", "minutes");
    for (m, _) in &rows[0].recall {
        print!(" {:>7.0}", m);
    }
    println!();
    for r in &rows {
        print!("{:<10}", r.name);
        for (_, x) in &r.recall {
            print!(" {:>6.1}%", x * 100.0);
        }
        println!();
    }
    println!();
    println!("## packets");
    println!(
        "{:<10} {:>10} {:>10} {:>12}  detail",
        "strategy", "sent", "found", "pkt per new"
    );
    for r in &rows {
        let per = if r.found > 0 {
            r.sent as f64 / r.found as f64
        } else {
            f64::INFINITY
        };
        println!(
            "{:<10} {:>10} {:>10} {:>12.2}  {}",
            r.name, r.sent, r.found, per, r.detail
        );
    }
    println!();
    println!("## metadata");
    for r in &rows {
        for (i, l) in r.metadata.iter().enumerate() {
            println!("{:<10} {}", if i == 0 { r.name.as_str() } else { "" }, l);
        }
    }
    println!();
    println!("## capture (queries that came to us) and the clients' announces");
    for r in &rows {
        println!("{:<10} {}", r.name, r.capture);
    }
    println!();
    println!("## memory (heap allocated by the strategy's own code and still live, metered by the sim's allocator)");
    for r in &rows {
        for (i, l) in r.memory.iter().enumerate() {
            println!("{:<10} {}", if i == 0 { r.name.as_str() } else { "" }, l);
        }
    }
    if a.hourly {
        print_hourly(&rows);
    }
    println!();
    println!(
        "## simulator speed (node events = datagrams, timers and TCP events handled by nodes)"
    );
    println!(
        "{:<10} {:>12} {:>9} {:>9} {:>13} {:>13}  trace",
        "strategy", "node events", "wall s", "cpu s", "M ev/s wall", "M ev/s cpu"
    );
    for r in &rows {
        let w = r.wall.as_secs_f64().max(1e-9);
        let (cpu_s, cpu_rate) = match r.cpu {
            Some(c) => (
                format!("{:.2}", c.as_secs_f64()),
                format!("{:.2}", r.events as f64 / c.as_secs_f64().max(1e-9) / 1e6),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{:<10} {:>12} {:>9.2} {:>9} {:>13.2} {:>13}  {:016x}",
            r.name,
            r.events,
            w,
            cpu_s,
            r.events as f64 / w / 1e6,
            cpu_rate,
            r.trace
        );
    }
    let events: u64 = rows.iter().map(|r| r.events).sum();
    let tw = total_wall.as_secs_f64().max(1e-9);
    let jobs = a.jobs.clamp(1, n.max(1));
    println!(
        "all strategies: {} node events in {:.1}s wall from start to end (world builds included; {} job{} in parallel) = {:.2} M events/s",
        events,
        tw,
        jobs,
        if jobs == 1 { "" } else { "s" },
        events as f64 / tw / 1e6
    );
    println!(
        "  (the aggregate rate: every world's node events added up, divided by the wall time of the whole run, with up to {jobs} world{} running side by side on {jobs} thread{}; the per-world lines above divide one world's events by its own wall or CPU time)",
        if jobs == 1 { "" } else { "s" },
        if jobs == 1 { "" } else { "s" },
    );
}

/// The `--hourly` report: a row per virtual hour for each magnetar world, each
/// table's largest size against its bound, and a verdict.
fn print_hourly(rows: &[Row]) {
    println!();
    println!("## per virtual hour (heap metered by the sim's allocator at the end of each hour; \"storage\" = the harness's discovered/fetched/candidate/failed maps standing in for the database, metered apart; \"crawler\" = heap less storage)");
    for r in rows {
        let Some(s) = &r.hours else {
            println!(
                "{:<10} (no hourly report: magnetar strategies only)",
                r.name
            );
            continue;
        };
        println!();
        println!("{}:", r.name);
        println!(
            "| hour | heap live MiB | heap peak MiB | storage MiB | crawler MiB | discovered | fetched | datagrams sent | torrents in world | routing | book | tx | lookups | store | acq run | acq queued | fetch jobs | sessions | peer cache | seen | get_peers in | announces in | replies out | queries out | given up | candidates dropped | candidates retried |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for h in &s.hours {
            println!("{}", hour_row(h));
        }
        let maxima = s.table_maxima();
        println!(
            "{:<10} largest over the run / bound: {}",
            r.name,
            maxima
                .iter()
                .map(|t| format!("{} {}/{}", t.name, t.len, t.bound))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("{:<10} verdict: {}", r.name, verdict(&s.hours, &maxima));
    }
}

/// Memory growth from hour 1 to the last hour, the lowest hourly rates after
/// hour 1, and any table over its bound.
fn verdict(hours: &[Hour], maxima: &[magnetar_core::TableSize]) -> String {
    let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
        return "no whole hour ran".into();
    };
    let m = |b: i64| b as f64 / (1024.0 * 1024.0);
    let later = hours.iter().skip(1);
    let min_disc = later.clone().map(|h| h.discovered).min();
    let min_fetch = later.map(|h| h.fetched).min();
    let over: Vec<String> = maxima
        .iter()
        .filter(|t| t.over())
        .map(|t| format!("{} {}/{}", t.name, t.len, t.bound))
        .collect();
    format!(
        "crawler heap hour {} {:.1} MiB -> hour {} {:.1} MiB ({:.2}x; with storage {:.1} -> {:.1} MiB); lowest hourly after hour 1: discovered {}, fetched {}; tables over their bound: {}",
        first.hour,
        m(first.crawler_heap()),
        last.hour,
        m(last.crawler_heap()),
        last.crawler_heap() as f64 / first.crawler_heap().max(1) as f64,
        m(first.live),
        m(last.live),
        min_disc.map_or("n/a".into(), |x| x.to_string()),
        min_fetch.map_or("n/a".into(), |x| x.to_string()),
        if over.is_empty() { "none".into() } else { over.join(", ") },
    )
}

/// One `--hourly` table row (markdown).
fn hour_row(h: &Hour) -> String {
    let m = |b: i64| b as f64 / (1024.0 * 1024.0);
    let t = |name: &str| -> usize {
        h.tables
            .iter()
            .filter(|x| x.name == name)
            .map(|x| x.len)
            .sum()
    };
    format!(
        "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        h.hour,
        m(h.live),
        m(h.peak),
        m(h.harness),
        m(h.crawler_heap()),
        h.discovered,
        h.fetched,
        h.sent,
        h.torrents,
        t("routing table"),
        t("crawl book"),
        t("transactions"),
        t("lookups"),
        t("announce store"),
        t("acquisitions running"),
        t("acquisitions queued"),
        t("fetch jobs"),
        t("fetch sessions"),
        t("peer cache"),
        t("seen window"),
        h.counts.get_peers_in,
        h.counts.announces_in,
        h.counts.replies_out,
        h.counts.queries_out,
        h.counts.given_up,
        h.counts.candidates_dropped,
        h.counts.candidates_retried,
    )
}
