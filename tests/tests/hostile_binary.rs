//! Hostile input against the running `magnetar crawl` binary on loopback: malformed
//! KRPC, a flood of 100 000 get_peers queries with random infohashes, hostile peers
//! (lying metadata_size, out-of-range piece, hash mismatch, slowloris, huge frames,
//! a flood of connections to a tarpit). Passes when the binary stays up, its RSS
//! stays under a stated bound, legitimate queries from other addresses are still
//! answered throughout, and only the honest torrents are stored.
//!
//! Addresses: a private 127.X.Y.0/24 per test process and runtime. The crawler
//! answers at most 10 queries/s per source IP, so every legitimate querier has its
//! own address.
//!
//! The same body runs against both runtimes (`--runtime mio` and `--runtime
//! tokio`), one after the other: two floods at once on a small CI machine would
//! measure the machine rather than the binary.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use magnetar_core::krpc::QueryKind;
use magnetar_core::metadata::sha1_info_hash;
use magnetar_core::testkit::{build_info, Behavior, InfoSpec};
use magnetar_core::Rng;
use magnetar_core::{InfoHash, NodeId};
use support::{crawl, export, rss_kib, wait_until, Client, Responder, Seeders};

/// RSS bound for the crawler (debug build) after the whole attack.
const RSS_BOUND_KIB: u64 = 128 * 1024;
/// Datagrams in the get_peers flood.
const FLOOD: usize = 100_000;

struct Net {
    p: [u8; 3],
}

impl Net {
    fn ip(&self, last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(self.p[0], self.p[1], self.p[2], last))
    }
    fn addr(&self, last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(last), port)
    }
    fn v4(&self, last: u8) -> [u8; 4] {
        [self.p[0], self.p[1], self.p[2], last]
    }
}

/// Legitimate pings from fresh addresses (10..=59, round robin): each must be
/// answered within a few tries. Returns (asked, answered, worst latency).
struct Legit {
    clients: Vec<Client>,
    next: usize,
    asked: u32,
    answered: u32,
    worst: Duration,
}

impl Legit {
    fn new(net: &Net) -> Legit {
        Legit {
            clients: (10..60).map(|i| Client::bind(net.ip(i))).collect(),
            next: 0,
            asked: 0,
            answered: 0,
            worst: Duration::ZERO,
        }
    }

    fn ping(&mut self, to: SocketAddr) -> bool {
        let c = &mut self.clients[self.next % 50];
        self.next += 1;
        self.asked += 1;
        let t = Instant::now();
        let ok = c
            .ask(to, QueryKind::Ping, 5, Duration::from_millis(400))
            .is_some();
        if ok {
            self.answered += 1;
            self.worst = self.worst.max(t.elapsed());
        }
        ok
    }
}

fn malformed(rng: &mut Rng) -> Vec<Vec<u8>> {
    let id = [b'a'; 20];
    let mut v: Vec<Vec<u8>> = vec![
        // Truncated at every interesting point.
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:q".to_vec(),
        b"d1:ad2:id20:aaaa".to_vec(),
        b"d".to_vec(),
        b"".to_vec(),
        b"d1:t".to_vec(),
        // Huge integers and lengths.
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa4:porti99999999999999999999999999999e9:info_hash20:bbbbbbbbbbbbbbbbbbbb5:token2:tke1:q13:announce_peer1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa4:porti-1e9:info_hash20:bbbbbbbbbbbbbbbbbbbb5:token2:tke1:q13:announce_peer1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id99999999999999999999:ae1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id18446744073709551617:ae1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        b"i123456789012345678901234567890e".to_vec(),
        // Wrong types everywhere.
        b"d1:ali1ee1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:idi5ee1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:qi1e1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:tle1:y1:qe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:yi0ee".to_vec(),
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodesi3ee1:t2:aa1:y1:re".to_vec(),
        b"l4:pingd2:id20:aaaaaaaaaaaaaaaaaaaaee".to_vec(),
        // Bad compact lengths in responses (unsolicited, and with odd sizes).
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes25:aaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:valuesl5:aaaaae5:token2:tke1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:nodes637:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa7:samples19:aaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re".to_vec(),
        // Unsorted and duplicate keys, unknown methods, error with garbage.
        b"d1:y1:q1:q4:ping1:t2:aa1:ad2:id20:aaaaaaaaaaaaaaaaaaaaee".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q9:frobnicat1:t2:aa1:y1:qe".to_vec(),
        b"d1:eli201ei999ee1:t2:aa1:y1:ee".to_vec(),
        b"d1:eli-99999999999999999999e0:e1:t2:aa1:y1:ee".to_vec(),
    ];
    // Deep nesting (lists and dicts), inside and outside the `a` dict.
    for depth in [64usize, 1000, 20_000] {
        let mut b = Vec::new();
        b.extend(std::iter::repeat_n(b'l', depth));
        b.extend(std::iter::repeat_n(b'e', depth));
        v.push(b);
        let mut d = b"d1:ad2:id20:".to_vec();
        d.extend_from_slice(&id);
        d.extend_from_slice(b"1:x");
        d.extend(std::iter::repeat_n(b'l', depth));
        d.extend(std::iter::repeat_n(b'e', depth));
        d.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
        v.push(d);
    }
    // 64 KiB datagrams (the IPv4 UDP maximum): a huge string and a huge list.
    let mut big = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa1:x65400:".to_vec();
    big.extend(std::iter::repeat_n(b'z', 65400));
    big.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
    big.truncate(65507);
    v.push(big);
    let mut list = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa1:xl".to_vec();
    while list.len() < 65400 {
        list.extend_from_slice(b"i1e");
    }
    list.extend_from_slice(b"ee1:q4:ping1:t2:aa1:y1:qe");
    v.push(list);
    // Random bytes, and random bytes after a valid prefix.
    for _ in 0..300 {
        let n = (rng.next_u64() % 1500) as usize;
        let mut b: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        if rng.next_u64() % 2 == 0 {
            let mut p = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa".to_vec();
            p.append(&mut b);
            b = p;
        }
        v.push(b);
    }
    v
}

#[test]
fn mio_binary_survives_hostile_input() {
    let _one = one_at_a_time();
    binary_survives_hostile_input("mio", 0);
}

#[test]
fn tokio_binary_survives_hostile_input() {
    let _one = one_at_a_time();
    binary_survives_hostile_input("tokio", 2);
}

/// The tests of this file run one at a time (a failed one does not stop the next).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole attack against `magnetar crawl --runtime RUNTIME`, on the addresses
/// of `private_prefix(salt)`.
fn binary_survives_hostile_input(runtime: &str, salt: u8) {
    eprintln!("runtime {runtime}");
    let net = Net {
        p: support::private_prefix(salt),
    };
    let mut rng = Rng::new(0x4057_11e5);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let crawler = net.addr(1, 6881);
    let boot = Responder::start(net.addr(2, 6881));

    // Honest torrents (served by one peer) and hostile ones (one peer each).
    let honest: Vec<(InfoHash, Vec<u8>)> = (0..3)
        .map(|i| {
            let info = build_info(&InfoSpec::many_files(&format!("honest-{i}"), 20 + i, 1000));
            (sha1_info_hash(&info), info)
        })
        .collect();
    let honest_peer = Seeders::start(
        net.v4(3),
        honest
            .iter()
            .map(|(ih, info)| (*ih, info.clone(), Behavior::Honest))
            .collect(),
    );
    let behaviours = [
        Behavior::LieMetadataSize(1 << 40),
        Behavior::LieMetadataSize(7),
        Behavior::LieMetadataSize(-5),
        Behavior::OutOfRangePiece,
        Behavior::CorruptPiece(0),
        Behavior::ShortPiece,
        Behavior::UnrequestedPiece,
        Behavior::Stall,
        Behavior::Silent,
        Behavior::HugeFrame,
        Behavior::WrongInfoHash,
        Behavior::CloseAfterPieces(1),
    ];
    let mut hostile_ihs = BTreeSet::new();
    let mut hostile_peers = Vec::new();
    for (i, b) in behaviours.iter().enumerate() {
        // Several pieces, so piece-level lies have room.
        let info = build_info(&InfoSpec::many_files(&format!("hostile-{i}"), 600, 7));
        let ih = sha1_info_hash(&info);
        hostile_ihs.insert(ih.to_hex());
        let s = Seeders::start(net.v4(100 + i as u8), vec![(ih, info, b.clone())]);
        hostile_peers.push((ih, s));
    }

    let args: Vec<String> = vec![
        "--runtime".into(),
        runtime.into(),
        "--bind".into(),
        crawler.to_string(),
        "--bootstrap".into(),
        boot.addr.to_string(),
        "--allow-private".into(),
        "--duration".into(),
        "300".into(),
    ];
    let mut p = crawl(None, &db, &args);
    let mut legit = Legit::new(&net);
    assert!(
        wait_until(Duration::from_secs(30), || legit.ping(crawler)),
        "the crawler never answered a ping:\n{}",
        p.tail(40)
    );
    let rss_before = rss_kib(p.pid()).unwrap();

    // 1. Malformed KRPC, each datagram followed now and then by a legitimate ping.
    let bad = malformed(&mut rng);
    let attacker = UdpSocket::bind(SocketAddr::new(net.ip(200), 0)).unwrap();
    for (i, d) in bad.iter().enumerate() {
        let _ = attacker.send_to(d, crawler);
        if i % 25 == 0 {
            assert!(
                legit.ping(crawler),
                "no answer after malformed datagram {i}: {d:?}"
            );
        }
    }
    assert!(p.alive(), "crashed on malformed KRPC:\n{}", p.tail(40));

    // 2. Hostile peers, announced from their own addresses, and one honest torrent.
    for (ih, s) in &hostile_peers {
        let mut c = Client::bind(s.addr.ip());
        c.announce(crawler, *ih, s.addr.port())
            .unwrap_or_else(|e| panic!("announce to the crawler: {e}"));
    }
    let mut honest_client = Client::bind(honest_peer.addr.ip());
    honest_client
        .announce(crawler, honest[0].0, honest_peer.addr.port())
        .unwrap();

    // Every hostile peer was actually tried.
    let untried = || -> Vec<String> {
        hostile_peers
            .iter()
            .zip(&behaviours)
            .filter(|((_, s), _)| s.connections.load(std::sync::atomic::Ordering::Relaxed) == 0)
            .map(|(_, b)| format!("{b:?}"))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || untried().is_empty()),
        "the crawler never connected to these hostile peers: {:?}\n{}",
        untried(),
        p.tail(40)
    );

    // 3. Connection flood: 300 infohashes whose only peers are tarpits that accept
    //    and never answer. announce_peer stores the querier's IP, so each of 20
    //    tarpits (127.X.Y.60..=79) announces its own 15, paced under 10 queries/s.
    let tarpit_info = build_info(&InfoSpec::single("tarpit", 1));
    let mut tarpits = Vec::new();
    for t in 0..20u8 {
        let torrents: Vec<(InfoHash, Vec<u8>, Behavior)> = (0..15)
            .map(|_| (InfoHash(rng.bytes()), tarpit_info.clone(), Behavior::Silent))
            .collect();
        let ihs: Vec<InfoHash> = torrents.iter().map(|t| t.0).collect();
        tarpits.push((Seeders::start(net.v4(60 + t), torrents), ihs));
    }
    std::thread::scope(|sc| {
        for (tp, ihs) in &tarpits {
            sc.spawn(move || {
                let mut c = Client::bind(tp.addr.ip());
                let token = c.token(crawler, ihs[0]).unwrap();
                for ih in ihs {
                    // Client-side pacing for the server's documented per-IP limit.
                    std::thread::sleep(Duration::from_millis(120));
                    c.announce_with(crawler, *ih, tp.addr.port(), &token)
                        .unwrap_or_else(|e| panic!("tarpit announce: {e}"));
                }
            });
        }
        assert!(legit.ping(crawler), "no answer during the connection flood");
    });
    let tarpit_conns = |tarpits: &Vec<(Seeders, Vec<InfoHash>)>| -> u64 {
        tarpits
            .iter()
            .map(|t| t.0.connections.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(20), || tarpit_conns(&tarpits) >= 100),
        "the crawler did not connect to the tarpits: {}",
        tarpit_conns(&tarpits)
    );

    // 4. The get_peers flood, from 100 addresses, random infohashes, with a
    //    legitimate ping between bursts.
    let flooders: Vec<UdpSocket> = (140..240)
        .map(|i| UdpSocket::bind(SocketAddr::new(net.ip(i), 0)).unwrap())
        .collect();
    let t_flood = Instant::now();
    let mut sent = 0usize;
    while sent < FLOOD {
        for s in &flooders {
            let h: [u8; 20] = rng.bytes();
            let id: [u8; 20] = rng.bytes();
            let q = support::query_bytes(
                &(sent as u32).to_be_bytes(),
                NodeId(id),
                QueryKind::GetPeers {
                    info_hash: InfoHash(h),
                    scrape: false,
                    noseed: false,
                },
            );
            let _ = s.send_to(&q, crawler);
            sent += 1;
        }
        if sent % 10_000 < flooders.len() {
            assert!(
                legit.ping(crawler),
                "no legitimate answer during the get_peers flood after {sent} datagrams"
            );
            assert!(p.alive(), "crashed during the flood:\n{}", p.tail(40));
        }
    }
    let flood_secs = t_flood.elapsed().as_secs_f64();

    // 5. After all that, an honest torrent announced now is still fetched and stored.
    honest_client
        .announce(crawler, honest[1].0, honest_peer.addr.port())
        .unwrap();
    let want: BTreeSet<String> = honest[..2].iter().map(|h| h.0.to_hex()).collect();
    let stored = wait_until(Duration::from_secs(60), || {
        export(&db).is_ok_and(|m| want.iter().all(|ih| m.contains_key(ih)))
    });
    assert!(p.alive(), "crashed:\n{}", p.tail(40));
    let rss_after = rss_kib(p.pid()).unwrap();
    for _ in 0..10 {
        assert!(legit.ping(crawler), "no answer after the attack");
    }
    eprintln!(
        "HOSTILE {runtime}: RSS before {} KiB, after {} KiB (bound {} KiB); {FLOOD} get_peers in {flood_secs:.2} s; \
         {} malformed datagrams; legit pings {}/{} answered, worst {:?}; tarpit connections {}",
        rss_before,
        rss_after,
        RSS_BOUND_KIB,
        bad.len(),
        legit.answered,
        legit.asked,
        legit.worst,
        tarpit_conns(&tarpits),
    );
    assert!(
        rss_after <= RSS_BOUND_KIB,
        "RSS {rss_after} KiB above the bound {RSS_BOUND_KIB} KiB"
    );
    assert_eq!(legit.answered, legit.asked);
    assert!(
        stored,
        "honest torrents not stored after the attack:\n{}",
        p.tail(60)
    );

    // Stop cleanly; only honest torrents are in the database.
    let st = p.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "no clean exit after the attack ({st:?}):\n{}",
        p.tail(40)
    );
    let m = export(&db).unwrap();
    let honest_hex: BTreeSet<String> = honest.iter().map(|h| h.0.to_hex()).collect();
    for (ih, e) in &m {
        assert!(
            honest_hex.contains(ih),
            "stored something that is not an honest torrent: {e:?} (hostile: {})",
            hostile_ihs.contains(ih)
        );
    }
    for (ih, info) in &honest[..2] {
        let e = &m[&ih.to_hex()];
        let t = magnetar_core::metadata::parse_info(info).unwrap();
        assert_eq!(e.name, t.name);
        assert_eq!(e.size, t.total_size);
        assert_eq!(e.files, t.files.len());
    }
}
