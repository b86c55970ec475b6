//! Shared by the tests that drive the real `magnetar` binary (interop, hostile_binary,
//! crash_binary): finding/building the binary, network namespaces, child processes
//! with captured logs, `magnetar export`, and RSS from /proc.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `magnetar` binary of this build profile, built once per test process with
/// `cargo build -p magnetar --bin magnetar` (a no-op when `cargo test --workspace`
/// already built it). It sits next to this test's `deps/` directory.
/// `MAGNETAR_BIN=/path/to/magnetar` uses that binary instead.
pub fn magnetar_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MAGNETAR_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "-p", "magnetar", "--bin", "magnetar"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build -p magnetar");
        assert!(st.success(), "cargo build -p magnetar failed");
        let bin = profile_dir.join("magnetar");
        assert!(bin.exists(), "no magnetar binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with only `lo` up, deleted on drop. Panics with a clear
/// message when `ip netns` is unavailable (the tests need root and iproute2).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("magnetar-{tag}-{}", std::process::id());
        // A leftover from a crashed earlier run with the same pid.
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        if let Err(e) = run(Command::new("ip").args(["netns", "add", &name])) {
            panic!(
                "this test needs a network namespace (root and iproute2's `ip netns`), \
                 and `ip netns add {name}` failed: {e}"
            );
        }
        let ns = Netns { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]))
            .unwrap_or_else(|e| panic!("bringing lo up in {}: {e}", ns.name));
        ns
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Pids of every process still inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only processes this test started live here; end them by pid.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A child process with its stdout and stderr collected into one log.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub what: String,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr (stdin null unless set already).
    pub fn spawn(what: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
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
                    // Bounded: a chatty child cannot grow the test without limit.
                    if l.len() < 4 << 20 {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        Proc {
            child,
            log,
            what: what.into(),
        }
    }

    /// Spawns `cmd` (a helper script speaking JSON lines) with piped stdio: its
    /// stdin for commands, its stdout's JSON objects on a channel (other stdout
    /// lines and all of stderr go to the log, bounded like [`Proc::spawn`]'s).
    pub fn spawn_json(
        what: &str,
        mut cmd: Command,
    ) -> (
        Proc,
        std::process::ChildStdin,
        std::sync::mpsc::Receiver<serde_json::Value>,
    ) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let push = |log: &Arc<Mutex<String>>, line: &str| {
            let mut l = log.lock().unwrap();
            if l.len() < 4 << 20 {
                l.push_str(line);
                l.push('\n');
            }
        };
        let (tx, events) = std::sync::mpsc::channel();
        let out_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(_) => push(&out_log, &format!("stdout: {line}")),
                }
            }
        });
        let err_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                push(&err_log, &line);
            }
        });
        let proc = Proc {
            child,
            log,
            what: what.into(),
        };
        (proc, stdin, events)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (SIGKILL after that).
    /// Returns the exit status when it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Asserts that python3 has libtorrent 2.1 (`who`: the test, for the message).
pub fn require_libtorrent(who: &str) {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import libtorrent; assert libtorrent.__version__.startswith('2.1')",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{who} needs libtorrent 2.1 for python3: python3 -m pip install 'libtorrent>=2.1,<2.2'"
    );
}

/// `magnetar crawl --db DB ARGS…`, optionally inside a namespace.
pub fn crawl(ns: Option<&Netns>, db: &Path, args: &[String]) -> Proc {
    let bin = magnetar_bin();
    let mut cmd = match ns {
        Some(ns) => ns.command(&bin),
        None => Command::new(&bin),
    };
    cmd.arg("crawl")
        .arg("--db")
        .arg(db)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("MAGNETAR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
    Proc::spawn("magnetar crawl", cmd)
}

/// One torrent as `magnetar export --format jsonl` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    pub infohash: String,
    pub name: String,
    pub size: u64,
    pub files: usize,
}

/// `magnetar export --db DB --format jsonl`, parsed, by infohash.
pub fn export(db: &Path) -> Result<BTreeMap<String, Exported>, String> {
    let out = run(Command::new(magnetar_bin())
        .arg("export")
        .arg("--db")
        .arg(db)
        .args(["--format", "jsonl"]))?;
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad export line {line:?}: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| format!("export line lacks {k}: {line}"))
        };
        let e = Exported {
            infohash: field("infohash")?
                .as_str()
                .unwrap_or_default()
                .to_lowercase(),
            name: field("name")?.as_str().unwrap_or_default().to_string(),
            size: field("size")?.as_u64().unwrap_or(u64::MAX),
            files: field("files")?.as_array().map_or(usize::MAX, Vec::len),
        };
        m.insert(e.infohash.clone(), e);
    }
    Ok(m)
}

/// VmRSS of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------
// Fake DHT peers and seeders on real loopback sockets.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind, Response};
use magnetar_core::testkit::{Behavior, FakeSeeder};
use magnetar_core::{InfoHash, NodeId};

/// Encodes a query.
pub fn query_bytes(tid: &[u8], id: NodeId, kind: QueryKind<'_>) -> Vec<u8> {
    let msg = Message {
        tid,
        version: None,
        ip: None,
        read_only: false,
        body: Body::Query(Query {
            id,
            want: None,
            kind,
        }),
    };
    let mut out = Vec::new();
    krpc::encode(&msg, &mut out);
    out
}

/// A KRPC client on its own source address.
pub struct Client {
    pub sock: UdpSocket,
    pub id: NodeId,
    tid: u16,
}

impl Client {
    pub fn bind(ip: std::net::IpAddr) -> Client {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&ip_bytes(ip));
        id[19] = 0x42;
        Client {
            sock,
            id: NodeId(id),
            tid: 0,
        }
    }

    /// Sends `kind` to `to` up to `tries` times, each waiting `wait` for the reply
    /// with our transaction id; returns the reply's raw bytes (response or error).
    pub fn ask(
        &mut self,
        to: SocketAddr,
        kind: QueryKind<'_>,
        tries: u32,
        wait: Duration,
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        for _ in 0..tries {
            self.tid = self.tid.wrapping_add(1);
            let tid = self.tid.to_be_bytes();
            let q = query_bytes(&tid, self.id, kind.clone());
            let _ = self.sock.send_to(&q, to);
            let end = Instant::now() + wait;
            while Instant::now() < end {
                let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                    continue;
                };
                if from != to {
                    continue;
                }
                if let Ok(m) = krpc::decode(&buf[..n]) {
                    if m.tid == tid && !matches!(m.body, Body::Query(_)) {
                        return Some(buf[..n].to_vec());
                    }
                }
            }
        }
        None
    }

    /// get_peers `ih` for a token, then announce_peer `ih` at (our IP, `port`), as
    /// a real client announces. (Before main's ad19e55 the crawler ignored an
    /// announced peer while the acquisition that the get_peers started was still
    /// asking or traversing; the crash test found it.)
    pub fn announce(&mut self, node: SocketAddr, ih: InfoHash, port: u16) -> Result<(), String> {
        let token = self.token(node, ih)?;
        self.announce_with(node, ih, port, &token)
    }

    pub fn token(&mut self, node: SocketAddr, ih: InfoHash) -> Result<Vec<u8>, String> {
        let r = self
            .ask(
                node,
                QueryKind::GetPeers {
                    info_hash: ih,
                    scrape: false,
                    noseed: false,
                },
                10,
                Duration::from_millis(500),
            )
            .ok_or("no answer to get_peers")?;
        match krpc::decode(&r).map_err(|e| format!("{e:?}"))?.body {
            Body::Response(Response { token: Some(t), .. }) => Ok(t.to_vec()),
            b => Err(format!("get_peers answer without token: {b:?}")),
        }
    }

    pub fn announce_with(
        &mut self,
        node: SocketAddr,
        ih: InfoHash,
        port: u16,
        token: &[u8],
    ) -> Result<(), String> {
        let r = self
            .ask(
                node,
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port,
                    implied_port: false,
                    token,
                    seed: Some(true),
                },
                10,
                Duration::from_millis(500),
            )
            .ok_or("no answer to announce_peer")?;
        match krpc::decode(&r).map_err(|e| format!("{e:?}"))?.body {
            Body::Response(_) => Ok(()),
            b => Err(format!("announce_peer refused: {b:?}")),
        }
    }
}

pub fn ip_bytes(ip: std::net::IpAddr) -> [u8; 4] {
    match ip {
        std::net::IpAddr::V4(a) => a.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    }
}

/// A minimal honest DHT node on a fixed address: answers every query with its id
/// (empty `nodes`, a token, an empty BEP 51 sample). Counts the queries it got, per
/// source address.
pub struct Responder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<HashMap<SocketAddr, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Responder {
    pub fn start(addr: SocketAddr) -> Responder {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let mut id = [0x5au8; 20];
        id[..4].copy_from_slice(&ip_bytes(addr.ip()));
        let id = NodeId(id);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = krpc::decode(&buf[..n]) else {
                    continue;
                };
                let Body::Query(q) = &m.body else { continue };
                *seen2.lock().unwrap().entry(from).or_insert(0) += 1;
                let mut r = Response {
                    id,
                    ..Default::default()
                };
                match q.kind {
                    QueryKind::FindNode { .. } => {
                        r.nodes = krpc::CompactNodesV4::new(&[]);
                    }
                    QueryKind::GetPeers { .. } => {
                        r.nodes = krpc::CompactNodesV4::new(&[]);
                        r.token = Some(b"tk");
                    }
                    QueryKind::SampleInfohashes { .. } => {
                        r.nodes = krpc::CompactNodesV4::new(&[]);
                        r.samples = krpc::Samples::new(&[]);
                        r.num = Some(0);
                        r.interval = Some(60);
                    }
                    _ => {}
                }
                let msg = Message {
                    tid: m.tid,
                    version: None,
                    ip: None,
                    read_only: false,
                    body: Body::Response(r),
                };
                let mut out = Vec::new();
                krpc::encode(&msg, &mut out);
                let _ = sock.send_to(&out, from);
            }
        });
        Responder { addr, seen, stop }
    }

    /// Queries received from `from` so far.
    pub fn queries_from(&self, from: SocketAddr) -> u64 {
        self.seen.lock().unwrap().get(&from).copied().unwrap_or(0)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TCP listener serving the metadata of several torrents, each with its own
/// [`Behavior`], through `FakeSeeder` (one thread per connection; the torrent is
/// picked by the infohash in the leecher's handshake).
pub struct Seeders {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Seeders {
    pub fn start(ip: [u8; 4], torrents: Vec<(InfoHash, Vec<u8>, Behavior)>) -> Seeders {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let map: Arc<HashMap<InfoHash, (Vec<u8>, Behavior)>> = Arc::new(
            torrents
                .into_iter()
                .map(|(ih, info, b)| (ih, (info, b)))
                .collect(),
        );
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stop2) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let map = map.clone();
                let stop3 = stop2.clone();
                std::thread::spawn(move || serve(stream, &map, &stop3));
            }
        });
        Seeders {
            addr,
            connections,
            stop,
        }
    }
}

fn serve(
    mut stream: std::net::TcpStream,
    map: &HashMap<InfoHash, (Vec<u8>, Behavior)>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut first = Vec::new();
    let mut buf = [0u8; 16384];
    let start = Instant::now();
    // Read the leecher's handshake to learn the infohash.
    while first.len() < 48 {
        if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(30) {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => first.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
    let Some(ih) = InfoHash::from_slice(&first[28..48]) else {
        return;
    };
    let Some((info, behavior)) = map.get(&ih) else {
        return;
    };
    let mut seeder = FakeSeeder::with_info_hash(info.clone().into(), ih, behavior.clone());
    seeder.on_connected();
    seeder.on_data(&first);
    let started = Instant::now();
    loop {
        let out = seeder.take_output();
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if seeder.wants_close()
            || stop.load(Ordering::Relaxed)
            || started.elapsed() > Duration::from_secs(60)
        {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => seeder.on_data(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

impl Drop for Seeders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A distinct 127.X.Y.0/24 for this test process, so parallel tests and other
/// processes on the machine never share addresses: returns [127, X, Y].
pub fn private_prefix(salt: u8) -> [u8; 3] {
    let p = std::process::id();
    [
        127,
        100 + (p % 100) as u8 + salt,
        ((p / 100) % 250) as u8 + 1,
    ]
}

// ---------------------------------------------------------------------------------
// NAT: home networks behind routers doing MASQUERADE, on a shared "public" network.

/// Runs `args` (a program and its arguments) inside `ns`, panicking with the
/// command's stderr on failure.
fn in_ns(ns: &Netns, args: &[&str]) {
    let mut c = ns.command(args[0]);
    c.args(&args[1..]);
    if let Err(e) = run(&mut c) {
        panic!("in namespace {}: {e}", ns.name);
    }
}

/// A small Internet: one `public` namespace whose bridge `br0` holds the
/// public addresses (10.77.0.0/24), and behind it any number of home networks,
/// each a `router` namespace (WAN 10.77.0.(200+n), LAN 192.168.(100+n).1/24,
/// IPv4 forwarding, iptables `MASQUERADE` out of the WAN side, no port
/// forwarding, inbound forwarding only for connections the NAT already
/// tracks, and new inbound packets to the router itself dropped) and a `home` namespace on that LAN whose default route is the
/// router. The public side has no route to any LAN: from there a home host is
/// reachable only through a mapping its own outbound traffic opened (Linux
/// conntrack: for the same remote address and port only). Needs root,
/// iproute2 and iptables; panics saying which command failed.
pub struct NatWorld {
    pub public: Netns,
    pub homes: Vec<Home>,
    tag: String,
}

/// One home network of a [`NatWorld`].
pub struct Home {
    pub router: Netns,
    pub lan: Netns,
    /// The router's public address (what the public side sees as the source).
    pub wan: std::net::Ipv4Addr,
    /// The LAN prefix, e.g. "192.168.101." (hosts are at prefix + octet).
    pub lan_prefix: String,
}

impl NatWorld {
    /// The public namespace with `public_hosts` (last octets, 1..=199) on its bridge.
    pub fn new(tag: &str, public_hosts: &[u8]) -> NatWorld {
        require_iptables();
        let public = Netns::new(&format!("{tag}-pub"));
        in_ns(&public, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&public, &["ip", "link", "set", "br0", "up"]);
        for h in public_hosts {
            assert!((1..200).contains(h), "public host octet {h}");
            in_ns(
                &public,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.77.0.{h}/24"),
                    "dev",
                    "br0",
                ],
            );
        }
        NatWorld {
            public,
            homes: Vec::new(),
            tag: tag.to_string(),
        }
    }

    /// Adds a home network with `hosts` (last octets, 2..=254) on its LAN;
    /// returns its index in `homes`.
    pub fn add_home(&mut self, hosts: &[u8]) -> usize {
        let n = self.homes.len() + 1;
        let router = Netns::new(&format!("{}-r{n}", self.tag));
        let lan = Netns::new(&format!("{}-h{n}", self.tag));
        let wan = std::net::Ipv4Addr::new(10, 77, 0, 200 + n as u8);
        let lan_prefix = format!("192.168.{}.", 100 + n);
        // WAN: a veth from the router to the public bridge.
        in_ns(
            &router,
            &[
                "ip",
                "link",
                "add",
                "wan",
                "type",
                "veth",
                "peer",
                "name",
                &format!("r{n}"),
                "netns",
                &self.public.name,
            ],
        );
        in_ns(
            &self.public,
            &["ip", "link", "set", &format!("r{n}"), "master", "br0"],
        );
        in_ns(&self.public, &["ip", "link", "set", &format!("r{n}"), "up"]);
        in_ns(
            &router,
            &["ip", "addr", "add", &format!("{wan}/24"), "dev", "wan"],
        );
        in_ns(&router, &["ip", "link", "set", "wan", "up"]);
        // LAN: a veth from the router to the home namespace.
        in_ns(
            &router,
            &[
                "ip", "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
                &lan.name,
            ],
        );
        in_ns(
            &router,
            &[
                "ip",
                "addr",
                "add",
                &format!("{lan_prefix}1/24"),
                "dev",
                "lan",
            ],
        );
        in_ns(&router, &["ip", "link", "set", "lan", "up"]);
        in_ns(&lan, &["ip", "link", "set", "eth0", "up"]);
        for h in hosts {
            assert!((2..255).contains(h), "LAN host octet {h}");
            in_ns(
                &lan,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{lan_prefix}{h}/24"),
                    "dev",
                    "eth0",
                ],
            );
        }
        in_ns(
            &lan,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{lan_prefix}1"),
            ],
        );
        // The home router: forwarding, NAT out of the WAN side, and nothing
        // inbound but what belongs to connections the NAT tracks.
        in_ns(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        in_ns(
            &router,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
            ],
        );
        in_ns(
            &router,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        in_ns(
            &router,
            &["iptables", "-A", "FORWARD", "-i", "wan", "-j", "DROP"],
        );
        // No service on the WAN side, as home routers' firewalls have it: new
        // inbound packets to the router are dropped (silently, so a TCP connect
        // times out). Dropped before conntrack confirms them, they leave no
        // entry behind: else a peer's uTP SYN that arrives before the target's
        // own SYN left would make MASQUERADE map the target's SYN to another
        // port (a clash with that entry) and defeat a BEP 55 holepunch.
        in_ns(
            &router,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW,INVALID",
                "-j",
                "DROP",
            ],
        );
        self.homes.push(Home {
            router,
            lan,
            wan,
            lan_prefix,
        });
        self.homes.len() - 1
    }
}

/// The NAT tests' home routers need iptables (Debian's `iptables`; `.ci/test`
/// installs it).
fn require_iptables() {
    let ok = Command::new("iptables")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs iptables for its home routers: apt-get install iptables"
    );
}
