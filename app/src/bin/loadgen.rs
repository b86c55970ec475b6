//! `magnetar-loadgen`: a KRPC load generator for benchmarking a running crawler
//! over loopback, in its own process.
//!
//! It binds `--sockets` UDP sockets on distinct loopback addresses (127.B.x.y), each
//! speaking as one DHT node with its own id, keeps `--window` queries outstanding
//! against `--target`, answers the target's own queries (so its nodes can enter the
//! target's routing table), and prints answered queries per second plus the
//! target's CPU time per answered query and resident memory (from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` when `--pid` is given).
//!
//! With `--announce N` it also announces N new infohashes per second (get_peers for
//! a token, then announce_peer) whose peer is a local TCP tarpit that accepts
//! connections and never answers: the target's metadata fetches pile up as
//! in-flight leeches.
//!
//! ```text
//! magnetar crawl --bind 127.0.0.1:6881 --allow-private --per-ip-answers 1000000000 \
//!     --bootstrap 127.0.0.1:9 --db /tmp/bench-db &
//! magnetar-loadgen --target 127.0.0.1:6881 --pid $! --duration 10
//! ```

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use magnetar_core::krpc::{self, Body, Message, Query, QueryKind, Response};
use magnetar_core::{InfoHash, NodeId};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mix {
    Ping,
    FindNode,
    GetPeers,
    /// One third each.
    Mixed,
}

/// KRPC load generator (see the module docs).
#[derive(Parser, Debug)]
struct Args {
    /// The crawler's UDP address.
    #[arg(long)]
    target: SocketAddr,
    /// Source sockets (distinct loopback addresses, one DHT node each).
    #[arg(long, default_value_t = 256)]
    sockets: usize,
    /// Second octet of the source addresses (127.B.x.y).
    #[arg(long, default_value_t = 1)]
    ip_base: u8,
    /// Queries kept outstanding.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seconds of warm-up (not measured).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, value_enum, default_value = "find-node")]
    mix: Mix,
    /// The crawler's pid, for CPU time and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// New infohashes announced per second (their peer is a silent TCP tarpit).
    #[arg(long, default_value_t = 0)]
    announce: u32,
    /// Send no load queries (only answer and announce).
    #[arg(long)]
    no_load: bool,
    /// Instead of generating load, be the floor to compare a crawler against: a
    /// bare KRPC responder on this address (one socket, mio, drained until
    /// WouldBlock) that answers every query with a fixed find_node-sized reply
    /// (8 compact nodes) carrying the query's transaction id. Runs for
    /// `--warmup` + `--duration` + 30 seconds.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
}

/// The `--serve` floor: what answering a query costs with no DHT work at all.
fn serve(addr: SocketAddr, secs: u64) {
    let mut poll = Poll::new().expect("poll");
    let mut sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)
        .expect("register");
    let nodes = [0x5au8; 208];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(512);
    let (mut answered, mut dropped) = (0u64, 0u64);
    while Instant::now() < end {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        loop {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => continue,
            };
            let Ok(msg) = krpc::decode(&buf[..n]) else {
                dropped += 1;
                continue;
            };
            if !matches!(msg.body, Body::Query(_)) {
                dropped += 1;
                continue;
            }
            out.clear();
            out.extend_from_slice(b"d1:rd2:id20:");
            out.extend_from_slice(&[0x11; 20]);
            out.extend_from_slice(b"5:nodes208:");
            out.extend_from_slice(&nodes);
            out.extend_from_slice(format!("e1:t{}:", msg.tid.len()).as_bytes());
            out.extend_from_slice(msg.tid);
            out.extend_from_slice(b"1:y1:re");
            if sock.send_to(&out, from).is_ok() {
                answered += 1;
            }
        }
    }
    println!("serve {addr}: answered {answered}, dropped {dropped}");
}

fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line[6..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// xorshift64*: ids and infohashes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn id(&mut self) -> [u8; 20] {
        let mut b = [0u8; 20];
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        b
    }
}

fn encode(tid: &[u8], id: NodeId, kind: QueryKind<'_>, out: &mut Vec<u8>) {
    out.clear();
    krpc::encode(
        &Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query(Query {
                id,
                want: None,
                kind,
            }),
        },
        out,
    );
}

struct Src {
    sock: UdpSocket,
    id: NodeId,
}

fn main() {
    let a = Args::parse();
    if let Some(addr) = a.serve {
        serve(addr, a.warmup + a.duration + 30);
        return;
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut poll = Poll::new().expect("poll");
    let mut srcs = Vec::with_capacity(a.sockets);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    for i in 0..a.sockets {
        let ip = Ipv4Addr::new(127, a.ip_base, (i / 250) as u8, (i % 250 + 1) as u8);
        let mut sock = UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)
            .expect("register");
        srcs.push(Src {
            sock,
            id: NodeId(rng.id()),
        });
    }
    // The tarpit: accepts on every loopback address and never says a word.
    let tarpit_port = if a.announce > 0 {
        let l = TcpListener::bind("0.0.0.0:0").expect("tarpit");
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
                if held.len() > 50_000 {
                    held.drain(..10_000);
                }
            }
        });
        port
    } else {
        0
    };

    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(512);
    let mut outstanding = 0usize;
    let mut last_answer = Instant::now();
    let mut rr = 0usize;
    let mut seq: u16 = 0;
    let (mut sent, mut answered, mut errors, mut their_queries) = (0u64, 0u64, 0u64, 0u64);
    // Announce flows: tid -> infohash, per socket.
    let mut flows: HashMap<(usize, u16), InfoHash> = HashMap::new();
    let mut announced = 0u64;
    let mut next_announce = Instant::now();
    let announce_every = if a.announce > 0 {
        Duration::from_secs_f64(1.0 / a.announce as f64)
    } else {
        Duration::MAX
    };
    let mut aseq: u16 = 0;

    let start = Instant::now();
    let measure_at = start + Duration::from_secs(a.warmup);
    let end = measure_at + Duration::from_secs(a.duration);
    let mut measuring = false;
    let (mut m_sent, mut m_answered, mut m_cpu) = (0u64, 0u64, None);
    let mut m_start = Instant::now();

    while Instant::now() < end {
        let now = Instant::now();
        if !measuring && now >= measure_at {
            measuring = true;
            m_start = now;
            m_sent = sent;
            m_answered = answered;
            m_cpu = a.pid.and_then(cpu_time);
        }
        // Announces: a get_peers for a token first (tid 'a'+seq).
        while a.announce > 0 && now >= next_announce {
            next_announce += announce_every;
            let i = (announced as usize) % srcs.len();
            let ih = InfoHash(rng.id());
            aseq = aseq.wrapping_add(1);
            let tid = [b'a', (aseq >> 8) as u8, aseq as u8];
            encode(
                &tid,
                srcs[i].id,
                QueryKind::GetPeers {
                    info_hash: ih,
                    scrape: false,
                    noseed: false,
                },
                &mut out,
            );
            if srcs[i].sock.send_to(&out, a.target).is_ok() {
                flows.insert((i, aseq), ih);
            }
            announced += 1;
            if flows.len() > 100_000 {
                flows.clear();
            }
        }
        // Keep the window full.
        while !a.no_load && outstanding < a.window {
            let i = rr % srcs.len();
            rr += 1;
            seq = seq.wrapping_add(1);
            let tid = [b'q', (seq >> 8) as u8, seq as u8];
            let target = NodeId(rng.id());
            let kind = match (a.mix, seq % 3) {
                (Mix::Ping, _) | (Mix::Mixed, 0) => QueryKind::Ping,
                (Mix::FindNode, _) | (Mix::Mixed, 1) => QueryKind::FindNode { target },
                _ => QueryKind::GetPeers {
                    info_hash: InfoHash(target.0),
                    scrape: false,
                    noseed: false,
                },
            };
            encode(&tid, srcs[i].id, kind, &mut out);
            match srcs[i].sock.send_to(&out, a.target) {
                Ok(_) => {
                    sent += 1;
                    outstanding += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        if outstanding > 0 && last_answer.elapsed() > Duration::from_millis(20) {
            outstanding = 0; // lost: start the window over
            last_answer = Instant::now();
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(1))) {
            if e.kind() != ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                let (n, from) = match srcs[i].sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                };
                let Ok(msg) = krpc::decode(&buf[..n]) else {
                    errors += 1;
                    continue;
                };
                match &msg.body {
                    Body::Response(r) if msg.tid.first() == Some(&b'q') => {
                        answered += 1;
                        outstanding = outstanding.saturating_sub(1);
                        last_answer = Instant::now();
                        let _ = r;
                    }
                    Body::Error(_) if msg.tid.first() == Some(&b'q') => {
                        errors += 1;
                        outstanding = outstanding.saturating_sub(1);
                    }
                    Body::Response(r) if msg.tid.len() == 3 && msg.tid[0] == b'a' => {
                        let s = u16::from_be_bytes([msg.tid[1], msg.tid[2]]);
                        if let (Some(ih), Some(token)) = (flows.remove(&(i, s)), r.token) {
                            let token = token.to_vec();
                            encode(
                                b"A",
                                srcs[i].id,
                                QueryKind::AnnouncePeer {
                                    info_hash: ih,
                                    port: tarpit_port,
                                    implied_port: false,
                                    token: &token,
                                    seed: Some(true),
                                },
                                &mut out,
                            );
                            let _ = srcs[i].sock.send_to(&out, from);
                        }
                    }
                    Body::Query(_) => {
                        // The target asks us (ping, find_node, sample_infohashes,
                        // get_peers): answer with our id only.
                        their_queries += 1;
                        out.clear();
                        krpc::encode(
                            &Message {
                                tid: msg.tid,
                                version: None,
                                ip: None,
                                read_only: false,
                                body: Body::Response(Response {
                                    id: srcs[i].id,
                                    ..Response::default()
                                }),
                            },
                            &mut out,
                        );
                        let _ = srcs[i].sock.send_to(&out, from);
                    }
                    _ => {}
                }
            }
        }
    }
    let secs = m_start.elapsed().as_secs_f64();
    let (ms, ma) = (sent - m_sent, answered - m_answered);
    println!(
        "mix {:?}, {} sockets, window {}: sent {:.0}/s, answered {:.0}/s ({:.1}% answered) over {:.1}s; {} errors; {} queries from the target answered; {} infohashes announced",
        a.mix,
        a.sockets,
        a.window,
        ms as f64 / secs,
        ma as f64 / secs,
        if ms > 0 { 100.0 * ma as f64 / ms as f64 } else { 0.0 },
        secs,
        errors,
        their_queries,
        announced
    );
    if let Some(pid) = a.pid {
        if let (Some(c0), Some(c1)) = (m_cpu, cpu_time(pid)) {
            let cpu = c1.saturating_sub(c0).as_secs_f64();
            println!(
                "target pid {pid}: cpu {:.2}s over {:.1}s ({:.0}% of one core), {:.2} µs cpu per answered query, rss {} MiB",
                cpu,
                secs,
                100.0 * cpu / secs,
                if ma > 0 { cpu * 1e6 / ma as f64 } else { 0.0 },
                rss_kb(pid).unwrap_or(0) / 1024
            );
        }
    }
}
