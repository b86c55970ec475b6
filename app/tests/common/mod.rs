//! End-to-end harness: a small DHT on loopback built from `magnetar_core::Crawler`
//! in plain mode on real UDP sockets, a TCP seeder serving metadata through
//! `magnetar_core::testkit::FakeSeeder`, and the `magnetar` binary driven as a child
//! process. Every test takes the runtime name (`mio` or `tokio`) so the same
//! tests run against both event loops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec};
use magnetar_core::{Config, Crawler, InfoHash, Input, NodeId, Output, SocketId, Timestamp};

pub const BIN: &str = env!("CARGO_BIN_EXE_magnetar");

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A few plain DHT nodes on 127.0.0.x, driven by one thread.
pub struct DhtNet {
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DhtNet {
    /// `n` nodes at 127.0.0.{base}, 127.0.0.{base+1}, …; all bootstrap from the first.
    pub fn start(n: usize, base: u8, seed: u64) -> DhtNet {
        let ips: Vec<IpAddr> = (0..n)
            .map(|i| IpAddr::from([127, 0, 0, base + i as u8]))
            .collect();
        DhtNet::start_at(&ips, seed)
    }

    /// One node per address in `ips` (which may repeat, e.g. `::1`); all bootstrap
    /// from the first.
    pub fn start_at(ips: &[IpAddr], seed: u64) -> DhtNet {
        let n = ips.len();
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        for ip in ips {
            let s = UdpSocket::bind(SocketAddr::new(*ip, 0)).unwrap();
            s.set_nonblocking(true).unwrap();
            addrs.push(s.local_addr().unwrap());
            sockets.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let boot = addrs[0];
        let addrs2 = addrs.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let now = || Timestamp(t0.elapsed().as_nanos() as u64);
            let mut nodes: Vec<Crawler> = addrs2
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut c = Config::plain_node(seed + i as u64, *a);
                    c.allow_private = true;
                    c.dht.routing.one_per_subnet = false;
                    c.dht.per_ip_answers_per_sec = 1000;
                    Crawler::new(c, now())
                })
                .collect();
            for (i, node) in nodes.iter_mut().enumerate() {
                if i > 0 {
                    node.bootstrap(now(), &[boot]);
                }
            }
            let mut deadlines = vec![None; n];
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let mut busy = false;
                for i in 0..n {
                    // Drain outputs.
                    loop {
                        match nodes[i].poll_output() {
                            Output::Transmit { to, payload, .. } => {
                                let _ = sockets[i].send_to(&payload, to);
                            }
                            Output::Timeout(t) => {
                                deadlines[i] = Some(t);
                                break;
                            }
                            Output::Idle => {
                                deadlines[i] = None;
                                break;
                            }
                            _ => {}
                        }
                    }
                    loop {
                        match sockets[i].recv_from(&mut buf) {
                            Ok((len, from)) => {
                                busy = true;
                                nodes[i].handle_input(Input::Datagram {
                                    at: now(),
                                    local: SocketId(0),
                                    from,
                                    bytes: &buf[..len],
                                });
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {}
                        }
                    }
                    if deadlines[i].is_some_and(|d| d <= now()) {
                        nodes[i].handle_input(Input::Timeout(now()));
                        busy = true;
                    }
                }
                if !busy {
                    // Idle: a short nap between socket polls (this is a test peer, not
                    // the system under test).
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        DhtNet {
            addrs,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DhtNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Announces `ih` at `peer` (port of `peer`, sent from `peer`'s IP) to `node`:
/// get_peers for a token, then announce_peer. Retries until the node answers.
pub fn announce(node: SocketAddr, ih: InfoHash, peer: SocketAddr) {
    let s = UdpSocket::bind(SocketAddr::new(peer.ip(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = NodeId([0x77; 20]);
    let send = |tid: &[u8], kind: QueryKind<'_>| {
        let msg = Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query(Query {
                id: me,
                want: None,
                kind,
            }),
        };
        let mut out = Vec::new();
        krpc::encode(&msg, &mut out);
        s.send_to(&out, node).unwrap();
    };
    let mut buf = [0u8; 2048];
    let mut token = None;
    for _ in 0..50 {
        send(
            b"gp",
            QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            },
        );
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if let Ok(m) = krpc::decode(&buf[..n]) {
                if let Body::Response(r) = m.body {
                    if m.tid == b"gp" {
                        token = r.token.map(|t| t.to_vec());
                        break;
                    }
                }
            }
        }
    }
    let token = token.expect("the DHT node answered get_peers with a token");
    for _ in 0..50 {
        send(
            b"ap",
            QueryKind::AnnouncePeer {
                info_hash: ih,
                port: peer.port(),
                implied_port: false,
                token: &token,
                seed: Some(true),
            },
        );
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if let Ok(m) = krpc::decode(&buf[..n]) {
                match m.body {
                    Body::Response(_) if m.tid == b"ap" => return,
                    Body::Error(e) if m.tid == b"ap" => panic!("announce_peer refused: {e:?}"),
                    _ => {} // the node querying us back, or a late get_peers answer
                }
            }
        }
    }
    panic!("announce_peer got no answer");
}

/// A TCP seeder serving one torrent's metadata honestly (one thread per connection).
pub struct Seeder {
    pub addr: SocketAddr,
    pub info_hash: InfoHash,
    pub info: Vec<u8>,
    pub connections: Arc<Mutex<u32>>,
    /// The source IP of each connection accepted.
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Seeder {
    pub fn start(ip: [u8; 4], spec: &InfoSpec) -> Seeder {
        Seeder::start_at(IpAddr::from(ip), spec, Duration::ZERO)
    }

    /// A seeder at `ip` that waits `delay` after each accept before it speaks.
    pub fn start_at(ip: IpAddr, spec: &InfoSpec, delay: Duration) -> Seeder {
        let info = build_info(spec);
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let info_hash = FakeSeeder::new(info.clone().into(), Behavior::Honest).info_hash();
        let connections = Arc::new(Mutex::new(0));
        let conns = connections.clone();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let from = peers.clone();
        let served = info.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                *conns.lock().unwrap() += 1;
                if let Ok(a) = stream.peer_addr() {
                    from.lock().unwrap().push(a.ip());
                }
                let info = served.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let mut seeder = FakeSeeder::new(info.into(), Behavior::Honest);
                    seeder.on_connected();
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                    let mut buf = [0u8; 16384];
                    loop {
                        let out = seeder.take_output();
                        if !out.is_empty() && stream.write_all(&out).is_err() {
                            return;
                        }
                        if seeder.wants_close() {
                            return;
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seeder.on_data(&buf[..n]),
                        }
                    }
                });
            }
        });
        Seeder {
            addr,
            info_hash,
            info,
            connections,
            peers,
        }
    }
}

/// The binary, crawling, with its stderr collected.
pub struct CrawlProc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

/// `magnetar crawl` with the given runtime and extra arguments.
pub fn crawl(runtime: &str, db: &Path, args: &[&str]) -> CrawlProc {
    crawl_wrapped(&[], runtime, db, args)
}

/// As [`crawl`], under a resource limit set by util-linux `prlimit` (`limit` is
/// one of its options, e.g. `--fsize=524288` or `--nofile=256`), without root.
/// SIGXFSZ is ignored, so that a write past RLIMIT_FSIZE fails with EFBIG (a disk
/// that fills up, for real) instead of killing the process.
pub fn crawl_with_rlimit(runtime: &str, db: &Path, args: &[&str], limit: &str) -> CrawlProc {
    let script = format!(r#"trap "" XFSZ; exec prlimit {limit} -- "$@""#);
    crawl_wrapped(&["sh", "-c", &script, "sh"], runtime, db, args)
}

/// `crawl`, started through `wrapper` (a program and its arguments that end by
/// `exec`ing the rest of the command line, e.g. a shell setting limits) when given.
pub fn crawl_wrapped(wrapper: &[&str], runtime: &str, db: &Path, args: &[&str]) -> CrawlProc {
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = cmd
        .arg("crawl")
        .arg("--runtime")
        .arg(runtime)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn magnetar");
    let log = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    CrawlProc { child, log }
}

impl CrawlProc {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// Waits for the exit (kills and panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the log readers catch the last lines.
                wait_until(Duration::from_secs(2), || {
                    self.log().contains("crawl stopped")
                });
                return st;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "magnetar did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CrawlProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `magnetar ARGS…` to completion; returns (status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run magnetar");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A network of `nodes` DHT nodes (at 127.0.0.{base}…) where the last one holds an
/// announce for a torrent served by a seeder at 127.0.0.{base+nodes}.
pub struct World {
    pub net: DhtNet,
    pub seeder: Seeder,
    pub name: String,
    pub size: u64,
}

pub fn world(base: u8, nodes: usize, name: &str, size: u64) -> World {
    let net = DhtNet::start(nodes, base, base as u64 * 1000);
    let seeder = Seeder::start(
        [127, 0, 0, base + nodes as u8],
        &InfoSpec::single(name, size),
    );
    announce(*net.addrs.last().unwrap(), seeder.info_hash, seeder.addr);
    World {
        net,
        seeder,
        name: name.to_string(),
        size,
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
