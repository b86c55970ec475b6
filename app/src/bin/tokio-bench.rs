//! Load benchmark of the tokio driver: a load generator (threads of plain UDP
//! sockets) sends KRPC queries over loopback to a magnetar node driven by
//! magnetar-tokio, and reports answered queries per second and the driver's CPU
//! time per answered query (from `/proc/self/task/<tid>/stat`).
//!
//! ```text
//! cargo run --release -p magnetar --bin magnetar-tokio-bench -- [options]
//!   --secs N        measured seconds (default 10, after 1 s of warm-up)
//!   --senders N     load generator threads, one socket each (default 4)
//!   --window N      queries in flight per sender (default 64; closed loop)
//!   --rate N        fixed offered load, queries/s in total (default 0: closed loop)
//!   --query Q       ping | find_node | get_peers (default find_node)
//!   --target ADDR   load an external node instead (e.g. the mio runtime)
//!   --pid PID       with --target: measure that process's CPU (/proc/PID/stat)
//!   --serve ADDR    only run the tokio node on ADDR for --secs (for an external
//!                   load generator, e.g. the mio runtime's magnetar-loadgen)
//!   --crawl         with --serve: harvest as `magnetar crawl` does (wide routing
//!                   table) instead of a plain node
//!   --db DIR        with --serve: store through the LMDB ingest glue, as
//!                   `magnetar crawl` does (default: no storage)
//! ```
//! Core rate-limits answers per IP (`per_ip_answers_per_sec`, 10/s by default);
//! the node started here lifts that limit, as every sender is 127.0.0.1. An
//! external node must be started with the same setting.

#[path = "../filter.rs"]
#[allow(dead_code)]
mod filter;
#[path = "../ingest.rs"]
#[allow(dead_code)]
mod ingest;
#[path = "../sink.rs"]
#[allow(dead_code)]
mod sink;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::{Config, InfoHash, NodeId};

struct Args {
    secs: u64,
    senders: usize,
    window: usize,
    rate: u64,
    query: String,
    target: Option<SocketAddr>,
    pid: Option<u32>,
    serve: Option<SocketAddr>,
    crawl: bool,
    db: Option<String>,
}

fn parse() -> Args {
    let mut a = Args {
        secs: 10,
        senders: 4,
        window: 64,
        rate: 0,
        query: "find_node".into(),
        target: None,
        pid: None,
        serve: None,
        crawl: false,
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--crawl" {
            a.crawl = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--secs" => a.secs = v.parse().expect("--secs"),
            "--senders" => a.senders = v.parse().expect("--senders"),
            "--window" => a.window = v.parse().expect("--window"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--query" => a.query = v,
            "--target" => a.target = Some(v.parse().expect("--target")),
            "--pid" => a.pid = Some(v.parse().expect("--pid")),
            "--serve" => a.serve = Some(v.parse().expect("--serve")),
            "--db" => a.db = Some(v),
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

/// utime + stime, in seconds, from a `/proc/.../stat` file.
fn cpu_secs(path: &str) -> f64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

fn this_tid() -> u32 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

fn encode_query(kind: &str, n: u64) -> Vec<u8> {
    let mut target = [0u8; 20];
    target[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    let kind = match kind {
        "ping" => QueryKind::Ping,
        "get_peers" => QueryKind::GetPeers {
            info_hash: InfoHash(target),
            scrape: false,
            noseed: false,
        },
        _ => QueryKind::FindNode {
            target: NodeId(target),
        },
    };
    let tid = (n as u32).to_be_bytes();
    let msg = Message {
        tid: &tid,
        version: None,
        ip: None,
        read_only: true,
        body: Body::Query(Query {
            id: NodeId([0x42; 20]),
            want: None,
            kind,
        }),
    };
    let mut buf = Vec::with_capacity(128);
    krpc::encode(&msg, &mut buf);
    buf
}

/// One sender: closed loop with `window` queries in flight, or paced at `rate`/s.
fn sender(
    target: SocketAddr,
    query: String,
    window: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut n = 0u64;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let send = |s: &UdpSocket, n: &mut u64| {
        *n += 1;
        let _ = s.send_to(&encode_query(&query, *n), target);
        sent.fetch_add(1, Ordering::Relaxed);
    };
    if rate == 0 {
        for _ in 0..window {
            send(&s, &mut n);
        }
    }
    while !stop.load(Ordering::Relaxed) {
        if rate > 0 {
            // Send what is due, then read what arrived.
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while n < due {
                send(&s, &mut n);
            }
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        }
        match s.recv_from(&mut buf) {
            Ok((len, _)) => {
                let Ok(m) = krpc::decode(&buf[..len]) else {
                    continue;
                };
                // The node may ping us (to verify a querier): not an answer.
                if matches!(m.body, Body::Response(_)) {
                    answered.fetch_add(1, Ordering::Relaxed);
                    if rate == 0 {
                        send(&s, &mut n);
                    }
                }
            }
            Err(_) if rate == 0 => {
                // Losses: refill the window.
                for _ in 0..window {
                    send(&s, &mut n);
                }
            }
            Err(_) => {}
        }
    }
}

/// The node under test: a plain DHT node without per-IP answer limits.
fn node_config(bind: SocketAddr) -> Config {
    let mut c = Config::loopback_test(7);
    c.identities[0].bind = bind;
    c.crawl.enabled = false;
    c.dht.per_ip_answers_per_sec = u32::MAX;
    c
}

fn serve(addr: SocketAddr, a: &Args) {
    let secs = a.secs;
    let mut config = node_config(addr);
    if a.crawl {
        // As `magnetar crawl --allow-private`: harvesting on, a crawler-sized table.
        config.crawl.enabled = true;
        config.dht.routing = magnetar_core::routing::RoutingConfig::wide(4096);
        config.dht.routing.one_per_subnet = false;
        let d = magnetar_core::crawl::CrawlConfig::default();
        config.crawl.per_ip_pps = d.per_ip_pps;
        config.crawl.max_pps = 2000; // the CLI's default
    }
    let storage: Option<Box<dyn magnetar_tokio::Storage>> = match &a.db {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("--db");
            let store = magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(dir))
                .expect("open --db");
            let writer = store
                .writer(magnetar_storage::WriterConfig::default())
                .expect("writer");
            Some(Box::new(ingest::Ingest::new(store, writer)))
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut b = magnetar_tokio::Crawler::builder(config).event_capacity(0);
        if let Some(s) = storage {
            b = b.storage(s);
        }
        let (h, _events) = b.start().unwrap();
        let cpu0 = cpu_secs("/proc/self/stat");
        println!(
            "tokio node on {} pid {} for {secs} s",
            h.local_addrs()[0],
            std::process::id()
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let s = h.stats().await.unwrap();
        let _ = h.shutdown().await;
        let cpu = cpu_secs("/proc/self/stat") - cpu0;
        let answered = s.stats.dht.responses_out.max(1);
        println!(
            "answered {} queries | CPU {:.2} s | {:.2} µs per answered query",
            s.stats.dht.responses_out,
            cpu,
            1e6 * cpu / answered as f64
        );
    });
}

fn main() {
    let a = parse();
    if let Some(addr) = a.serve {
        return serve(addr, &a);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));

    // The node: a plain DHT node on the tokio driver, on this (main) thread.
    let (target, cpu_path, rt, handle) = match a.target {
        Some(t) => {
            let path = match a.pid {
                Some(p) => format!("/proc/{p}/stat"),
                None => String::new(),
            };
            (t, path, None, None)
        }
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let c = node_config("127.0.0.1:0".parse().unwrap());
            let (h, events) = rt.block_on(async {
                magnetar_tokio::Crawler::builder(c)
                    .event_capacity(0)
                    .start()
                    .unwrap()
            });
            drop(events);
            let t = h.local_addrs()[0];
            let path = format!("/proc/self/task/{}/stat", this_tid());
            (t, path, Some(rt), Some(h))
        }
    };
    let per_sender_rate = a.rate / a.senders.max(1) as u64;
    let mut threads = Vec::new();
    for _ in 0..a.senders {
        let (stop, answered, sent, q) = (
            stop.clone(),
            answered.clone(),
            sent.clone(),
            a.query.clone(),
        );
        let window = a.window;
        threads.push(std::thread::spawn(move || {
            sender(target, q, window, per_sender_rate, stop, answered, sent)
        }));
    }

    // Keep the driver running on this thread while measuring.
    let measure = |d: Duration| match &rt {
        Some(rt) => rt.block_on(async move { tokio::time::sleep(d).await }),
        None => std::thread::sleep(d),
    };
    measure(Duration::from_secs(1));
    let (a0, s0, c0, p0, t0) = (
        answered.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        cpu_secs(&cpu_path),
        cpu_secs("/proc/self/stat"),
        Instant::now(),
    );
    measure(Duration::from_secs(a.secs));
    let (a1, s1, c1, p1, el) = (
        answered.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        cpu_secs(&cpu_path),
        cpu_secs("/proc/self/stat"),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let stats = match (&rt, &handle) {
        (Some(rt), Some(h)) => rt.block_on(async {
            let s = h.stats().await.ok();
            let _ = h.shutdown().await;
            s
        }),
        _ => None,
    };
    let q = (a1 - a0) as f64;
    let cpu = c1 - c0;
    println!(
        "runtime {} | query {} | senders {} | {} | {:.1} s",
        if a.target.is_some() {
            "external"
        } else {
            "tokio"
        },
        a.query,
        a.senders,
        if a.rate > 0 {
            format!("offered {} q/s", a.rate)
        } else {
            format!("closed loop, window {}", a.window)
        },
        el
    );
    println!(
        "sent {:.0} q/s | answered {:.0} q/s ({:.1} %)",
        (s1 - s0) as f64 / el,
        q / el,
        100.0 * q / ((s1 - s0).max(1) as f64)
    );
    if !cpu_path.is_empty() {
        println!(
            "node CPU {:.2} s ({:.0} % of a core) | {:.2} µs CPU per answered query",
            cpu,
            100.0 * cpu / el,
            1e6 * cpu / q.max(1.0)
        );
    }
    println!(
        "whole process CPU (with the load generator) {:.2} s",
        p1 - p0
    );
    if let Some(s) = stats {
        println!(
            "node: datagrams in {} out {} | faults {} | udp send would-block {}",
            s.stats.dht.datagrams_in,
            s.stats.dht.datagrams_out,
            s.stats.dht.faults_total(),
            s.runtime.udp_send_would_block
        );
    }
}
