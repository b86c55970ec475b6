//! Operations end to end, on both runtimes: a second signal exits at once, a tight
//! file-descriptor limit (EMFILE) slows the fetches but loses none, and a crawl
//! that runs over IPv6 only.

mod common;

use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::time::Duration;

use common::*;
use magnetar_core::testkit::InfoSpec;

/// The value of `key=` in the last log line containing `marker`.
fn log_field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Two signals: the first starts the graceful shutdown, the second ends the process
/// at once with status 130 (no "crawl stopped"). The process is stopped while both
/// are sent, so that both are pending together and the order is fixed (SIGINT is
/// delivered before SIGTERM), and the database still opens afterwards.
fn second_signal_exits_at_once(runtime: &str) {
    let db = tempfile::tempdir().unwrap();
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            "127.0.0.1:9",
            "--allow-private",
            "--status-interval",
            "1",
        ],
    );
    assert!(
        p.wait_log("fetched", Duration::from_secs(20)),
        "no status line; log:\n{}",
        p.log()
    );
    p.signal("STOP");
    p.signal("TERM");
    p.signal("INT");
    p.signal("CONT");
    let st = p.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(130), "exit {st:?}; log:\n{}", p.log());
    assert!(!p.log().contains("crawl stopped"), "{}", p.log());
    let store =
        magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    let report = store.integrity_check().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Under a file-descriptor limit far tighter than the leech budget assumes (the
/// process starts with most of its 100 descriptors taken), thirty slow seeders
/// make connects fail with EMFILE. The crawler counts that, backs off, retries the
/// same peers, and fetches every torrent.
fn fetches_everything_despite_emfile(runtime: &str, net_octet: u8) {
    const TORRENTS: usize = 30;
    let dht_ips: Vec<IpAddr> = (1..=3)
        .map(|i| IpAddr::from([127, 0, net_octet, i]))
        .collect();
    let net = DhtNet::start_at(&dht_ips, 7000 + net_octet as u64);
    let seeders: Vec<Seeder> = (0..TORRENTS)
        .map(|i| {
            Seeder::start_at(
                IpAddr::from([127, 0, net_octet, 10 + i as u8]),
                &InfoSpec::single(&format!("fd-pressure-{runtime}-{i}.bin"), 1 << 20),
                Duration::from_millis(1500),
            )
        })
        .collect();
    for (i, s) in seeders.iter().enumerate() {
        announce(net.addrs[i % net.addrs.len()], s.info_hash, s.addr);
    }
    let db = tempfile::tempdir().unwrap();
    let boot = net.addrs[0].to_string();
    // 100 descriptors in all, 3..82 taken by /dev/null: 18 left for the crawler's
    // own sockets, epoll, LMDB and its peer connections (it would use up to 36).
    let script = "ulimit -n 100 || exit 99; i=3; \
                  while [ $i -lt 82 ]; do eval \"exec $i</dev/null\"; i=$((i+1)); done; \
                  exec \"$@\"";
    let mut p = crawl_wrapped(
        &["bash", "-c", script, "fdfill"],
        runtime,
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &boot,
            "--allow-private",
        ],
    );
    let all = || {
        let log = p.log();
        seeders
            .iter()
            .all(|s| log.contains(&format!("info_hash={}", hex(&s.info_hash.0))))
    };
    let done = wait_until(Duration::from_secs(120), all);
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    let log = p.log();
    assert!(done, "not every torrent was fetched; log:\n{log}");
    assert!(st.success(), "exit {st:?}; log:\n{log}");
    assert!(
        log.contains("leech concurrency capped under RLIMIT_NOFILE") && log.contains("using=36"),
        "the leech budget was not reported; log:\n{log}"
    );
    let emfile = log_field(&log, "session totals", "emfile");
    eprintln!("{runtime}: {TORRENTS} torrents fetched under the fd limit, emfile={emfile:?}");
    assert!(
        emfile.is_some_and(|n| n > 0),
        "EMFILE was never hit (emfile={emfile:?}): the test did not test it; log:\n{log}"
    );
    assert!(log.contains("out of file descriptors"), "{log}");
    let store =
        magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    for s in &seeders {
        let t = store.get(&s.info_hash.0).unwrap().expect("stored");
        assert_eq!(t.record.total_size, 1 << 20);
    }
}

/// A DHT node and a seeder on `::1` only: the binary joins over IPv6, fetches the
/// torrent from the IPv6 peer and stores it.
fn crawls_over_ipv6(runtime: &str) {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED crawls_over_ipv6: this machine has no ::1");
        return;
    }
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let net = DhtNet::start_at(&[v6], 8600);
    let name = format!("ipv6-only-{runtime}.iso");
    let seeder = Seeder::start_at(v6, &InfoSpec::single(&name, 123_457), Duration::ZERO);
    announce(net.addrs[0], seeder.info_hash, seeder.addr);
    let db = tempfile::tempdir().unwrap();
    let boot = net.addrs[0].to_string();
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            "[::1]:0",
            "--bootstrap",
            &boot,
            "--allow-private",
            "--duration",
            "60",
        ],
    );
    let ih = hex(&seeder.info_hash.0);
    assert!(
        p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
        "no metadata fetched over IPv6; log:\n{}",
        p.log()
    );
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    let (st, out, err) = run(&["show", &ih, "--db", db.path().to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&name), "{out}");
    assert!(out.contains("(123457 bytes)"), "{out}");
}

/// `--no-info-dicts --durability no-sync`: the options reach the store. The torrent
/// is stored with its fields and files but without its raw info dict, so `show` says
/// so and `export --format torrent` writes nothing for it.
fn stores_without_info_dicts(runtime: &str, base: u8) {
    let w = world(base, 3, "no-info-dict.bin", 54_321);
    let db = tempfile::tempdir().unwrap();
    let boot = w.net.addrs[0].to_string();
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &boot,
            "--allow-private",
            "--no-info-dicts",
            "--durability",
            "no-sync",
        ],
    );
    let ih = hex(&w.seeder.info_hash.0);
    assert!(
        p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
        "no metadata fetched; log:\n{}",
        p.log()
    );
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(6)).success(), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("durability=NoSync") && log.contains("info_dicts=false"),
        "{log}"
    );
    let dbs = db.path().to_str().unwrap();
    let (st, out, err) = run(&["show", &ih, "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("name:          no-info-dict.bin"), "{out}");
    assert!(out.contains("(54321 bytes)"), "{out}");
    assert!(out.contains("info dict:     not kept"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let (st, _, err) = run(&[
        "export",
        "--format",
        "torrent",
        "--out",
        dir.path().to_str().unwrap(),
        "--db",
        dbs,
    ]);
    assert!(st.success(), "{err}");
    assert!(
        !dir.path().join(format!("{ih}.torrent")).exists(),
        "a .torrent was written without an info dict"
    );
}

#[test]
fn mio_stores_without_info_dicts() {
    stores_without_info_dicts("mio", 200);
}

#[test]
fn tokio_stores_without_info_dicts() {
    stores_without_info_dicts("tokio", 210);
}

#[test]
fn mio_second_signal_exits_at_once() {
    second_signal_exits_at_once("mio");
}

#[test]
fn tokio_second_signal_exits_at_once() {
    second_signal_exits_at_once("tokio");
}

#[test]
fn mio_fetches_everything_despite_emfile() {
    fetches_everything_despite_emfile("mio", 41);
}

#[test]
fn tokio_fetches_everything_despite_emfile() {
    fetches_everything_despite_emfile("tokio", 42);
}

#[test]
fn mio_crawls_over_ipv6() {
    crawls_over_ipv6("mio");
}

#[test]
fn tokio_crawls_over_ipv6() {
    crawls_over_ipv6("tokio");
}
