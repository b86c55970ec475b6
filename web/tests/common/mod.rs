//! A real server on an ephemeral loopback port over a store of fixture torrents,
//! and a minimal blocking HTTP/1.1 client over `std::net::TcpStream` (raw so that
//! tests can also send what no well-behaved client sends).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use magnetar_storage::synth::{bencode_info, Rng};
use magnetar_storage::{
    FileEntry, HashKind, Op, Sources, Store, StoreOptions, TorrentInput, TorrentRecord,
};
use magnetar_web::{Access, Config, Limits, ServerCounters};
use sha1::{Digest, Sha1};

/// Names a stranger might give a torrent.
pub const HOSTILE: [&str; 4] = [
    "<script>alert('pwned')</script> hostile one",
    "\"><img src=x onerror=alert(1)> hostile two",
    "hostile three ]]></title><title>&amp; '\u{1}",
    "hostile four javascript:alert(1) <svg onload=alert(1)>",
];

/// Base Unix time of the fixtures (2026-12-01 00:00 UTC).
pub const T0: u64 = 1_796_083_200;

pub struct Fixture {
    pub store: Store,
    pub _dir: tempfile::TempDir,
    /// Every torrent stored, in insertion order.
    pub inputs: Vec<TorrentInput>,
}

pub fn input(
    name: &str,
    files: Vec<FileEntry>,
    at: u64,
    keep_info: bool,
    rng: &mut Rng,
) -> TorrentInput {
    let info = bencode_info(name, 1 << 18, 4, &files, rng);
    let infohash: [u8; 20] = Sha1::digest(&info).into();
    TorrentInput {
        infohash,
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: files.iter().map(|f| f.size).sum(),
        piece_length: 1 << 18,
        piece_count: 4,
        private: false,
        source: None,
        files,
        discovered_at: at,
        sources: Sources::SAMPLE | Sources::ANNOUNCE,
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: keep_info.then_some(info),
    }
}

/// A store with: 60 "ubuntu" torrents of growing size and time (for paging and
/// sorting), the hostile names, a TV episode, a torrent with a nested file tree
/// and scrape counts, and one whose info dict is not kept.
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreOptions::new(dir.path())).expect("open store");
    let mut rng = Rng::new(7);
    let mut inputs = Vec::new();
    for i in 0..60u64 {
        let name =
            format!("ubuntu {i:02} desktop amd64 a rather long release name to fill the row");
        let files = vec![FileEntry {
            path: format!("ubuntu-{i:02}.iso"),
            size: 1_000_000 + i * 1_000,
        }];
        inputs.push(input(&name, files, T0 + i * 60, true, &mut rng));
    }
    for (j, h) in HOSTILE.iter().enumerate() {
        let files = vec![
            FileEntry {
                path: format!("{h}/<b>bold</b>.txt"),
                size: 10,
            },
            FileEntry {
                path: format!("{h}/x\"y'.mkv"),
                size: 20,
            },
        ];
        inputs.push(input(h, files, T0 + 10_000 + j as u64, true, &mut rng));
    }
    inputs.push(input(
        "Some Show S01E02 1080p",
        vec![FileEntry {
            path: "Some.Show.S01E02.mkv".into(),
            size: 700_000_000,
        }],
        T0 + 20_000,
        true,
        &mut rng,
    ));
    let mut tree = input(
        "tree album",
        vec![
            FileEntry {
                path: "disc 1/01 intro.flac".into(),
                size: 100,
            },
            FileEntry {
                path: "disc 1/02 song.flac".into(),
                size: 200,
            },
            FileEntry {
                path: "disc 2/extras/booklet.pdf".into(),
                size: 300,
            },
        ],
        T0 + 20_001,
        true,
        &mut rng,
    );
    tree.seeders = Some(12);
    tree.leechers = Some(3);
    tree.scraped_at = Some(T0 + 20_100);
    tree.source = Some("<i>src</i>".into());
    inputs.push(tree);
    inputs.push(input(
        "no info kept",
        vec![FileEntry {
            path: "x.bin".into(),
            size: 5,
        }],
        T0 + 20_002,
        false,
        &mut rng,
    ));
    let ops: Vec<Op> = inputs
        .iter()
        .cloned()
        .map(|t| Op::Torrent(Box::new(t)))
        .collect();
    store.apply_batch(&ops).expect("fill store");
    Fixture {
        store,
        _dir: dir,
        inputs,
    }
}

impl Fixture {
    pub fn by_name(&self, name: &str) -> &TorrentInput {
        self.inputs
            .iter()
            .find(|t| t.name == name)
            .expect("fixture name")
    }
    pub fn record(&self, name: &str) -> TorrentRecord {
        self.store
            .record(&self.by_name(name).infohash)
            .unwrap()
            .unwrap()
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub counters: Arc<ServerCounters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Test limits: small, so that the bounds are reached with a few connections.
pub fn test_limits() -> Limits {
    Limits {
        max_connections: 8,
        max_in_flight: 8,
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        connection_lifetime: Duration::from_secs(60),
        max_header_bytes: 16 * 1024,
        max_store_reads: 2,
    }
}

pub fn start(store: Store, access: Access, limits: Limits) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(ServerCounters::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = Config {
        access,
        limits,
        metrics: Some(Arc::new(std::sync::Mutex::new(
            "# TYPE magnetar_test gauge\nmagnetar_test 1\n".into(),
        ))),
    };
    rt.spawn(magnetar_web::serve(
        listener,
        store,
        cfg,
        counters.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        counters,
        stop: Some(stop),
        rt: Some(rt),
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one response from `s` (by Content-Length, chunked, or to EOF).
pub fn read_response(s: &mut TcpStream) -> Option<Resp> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("reading the head: {e}"),
        }
        assert!(buf.len() < 64 * 1024, "head too long");
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(n) = get("content-length") {
        let n: usize = n.parse().ok()?;
        body.resize(n, 0);
        s.read_exact(&mut body).ok()?;
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let mut rest = &raw[..];
        loop {
            let pos = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..pos]).ok()?.trim(), 16).ok()?;
            rest = &rest[pos + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else {
        s.read_to_end(&mut body).ok()?;
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut s = connect(addr);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut s).unwrap_or_else(|| panic!("no response to {method} {path}"))
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[])
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Activity over the last hours, as a crawler leaves it: torrents discovered
/// `k` per hour `k` hours ago (k = 1..=5), metadata requests (two of three
/// succeed; failures "timeout" or "no_ut_metadata"; clients by name), and a session.
/// Returns (torrents per hours-ago, requests, failed requests).
pub fn add_activity(store: &Store, now: u64) -> (Vec<(u64, u64)>, u64, u64) {
    use magnetar_storage::synth::Synth;
    use magnetar_storage::{RequestOutcome, RequestRecord, SessionCounters, SessionRecord};
    let mut synth = Synth::new(11);
    let mut ops = Vec::new();
    let mut per_hour = Vec::new();
    for k in 1..=5u64 {
        for i in 0..k {
            ops.push(Op::Torrent(Box::new(
                synth.torrent(now - k * 3600 + i, false),
            )));
        }
        per_hour.push((k, k));
    }
    let (mut n, mut failed) = (0, 0);
    for i in 0..30u64 {
        let fail = i % 3 == 0;
        n += 1;
        failed += u64::from(fail);
        ops.push(Op::Request(RequestRecord {
            infohash: [i as u8; 20],
            peer: format!("10.0.0.{}:6881", i + 1).parse().unwrap(),
            started_at_ms: (now - 7200 + i * 60) * 1000,
            duration_ms: 100,
            outcome: if fail {
                RequestOutcome::Failure
            } else {
                RequestOutcome::Success
            },
            reason: match (fail, i % 2) {
                (false, _) => String::new(),
                (true, 0) => "timeout".into(),
                (true, _) => "no_ut_metadata".into(),
            },
            pieces: 1,
            client: if i % 2 == 0 {
                "libtorrent/2.0"
            } else {
                "<b>evil</b> 1.0"
            }
            .into(),
            encryption: "plaintext".into(),
            transport: "tcp".into(),
        }));
    }
    ops.push(Op::Session(SessionRecord {
        id: 1,
        started_at: now - 6 * 3600,
        ended_at: Some(now - 60),
        counters: SessionCounters {
            infohashes_discovered: 1000,
            metadata_fetched: 40,
            metadata_failed: 10,
            torrents_new: 15,
            dht_queries_sent: 5000,
            dht_responses_received: 4000,
        },
        peak_rss_bytes: 1 << 26,
        cpu_ms: 1000,
    }));
    store.apply_batch(&ops).expect("activity");
    (per_hour, n, failed)
}
