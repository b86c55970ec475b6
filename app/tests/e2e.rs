//! End-to-end: the `magnetar` binary crawls a small DHT on loopback and stores the
//! metadata it fetches. Each scenario is a function of the runtime name; the
//! `#[test]`s at the bottom instantiate them per runtime.

mod common;

use std::time::Duration;

use common::*;
use magnetar_core::testkit::InfoSpec;

/// Crawl a 4-node DHT whose last node holds an announce; the binary must fetch the
/// torrent's metadata (right name and size) and exit 0 at --duration.
fn fetches_announced_metadata(runtime: &str, base: u8) {
    let w = world(base, 4, "e2e-ubuntu.iso", 3 * 1024 * 1024 + 17);
    let db = tempfile::tempdir().unwrap();
    let boot = w.net.addrs[0].to_string();
    // The crawler at an address of its own (after the nodes' and the seeder's):
    // it connects to the seeder from that address, not the host's default.
    let own = format!("127.0.0.{}", base + 5);
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            &format!("{own}:0"),
            "--bootstrap",
            &boot,
            "--allow-private",
            "--duration",
            "60",
            "--status-interval",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics_at = metrics_addr(&p);
    let ih = hex(&w.seeder.info_hash.0);
    assert!(
        p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
        "no metadata fetched; log:\n{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains(&format!("name={}", w.name)), "{log}");
    assert!(log.contains(&format!("size={}", w.size)), "{log}");
    let from = w.seeder.peers.lock().unwrap().clone();
    assert!(
        !from.is_empty() && from.iter().all(|ip| ip.to_string() == own),
        "the seeder's connections came from {from:?}, not the crawler's bind {own}"
    );
    // The funnel in /metrics (rendered every second): the torrent went through
    // every step.
    let step = |body: &str, s: &str| -> Option<u64> {
        let name = format!("magnetar_funnel_infohashes_total{{step=\"{s}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse().ok())
    };
    let stored = || step(&http_get(&metrics_at, "/metrics"), "stored") == Some(1);
    assert!(wait_until(Duration::from_secs(10), stored), "{}", p.log());
    let body = http_get(&metrics_at, "/metrics");
    for s in ["discovered", "peers_found", "connected", "handshake"] {
        assert!(step(&body, s).is_some_and(|n| n >= 1), "{s}: {body}");
    }
    assert_eq!(step(&body, "metadata"), Some(1), "{body}");
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    // The last log line has the counters; the tokio driver's own ones too.
    let log = p.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("crawl stopped"))
        .unwrap_or("");
    assert!(stopped.contains("fetched=1"), "{log}");
    for c in ["storage_waits=", "storage_errors=0", "stream_dropped="] {
        assert_eq!(stopped.contains(c), runtime == "tokio", "{c}: {stopped}");
    }

    // Stored: `show` prints the fields, the file and the magnet link…
    let dbs = db.path().to_str().unwrap();
    let (st, out, err) = run(&["show", &ih, "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&format!("name:          {}", w.name)), "{out}");
    assert!(out.contains(&format!("({} bytes)", w.size)), "{out}");
    assert!(out.contains(&format!("magnet:?xt=urn:btih:{ih}")), "{out}");
    assert!(out.contains("info dict:     kept"), "{out}");
    // …search finds it by a word of its name, export has it, stats counts it.
    let (st, out, _) = run(&["search", "ubuntu", "--json", "--db", dbs]);
    assert!(st.success() && out.contains(&ih), "{out}");
    let (st, out, _) = run(&["export", "--db", dbs]);
    assert!(
        st.success() && out.contains(&ih) && out.contains(&format!("\"size\":{}", w.size)),
        "{out}"
    );
    let (st, out, _) = run(&["stats", "--db", dbs]);
    assert!(st.success() && out.contains("torrents:         1"), "{out}");
    // The funnel as stored: the session's counters and the request records.
    let funnel = out
        .lines()
        .find(|l| l.starts_with("  infohashes:  discovered "))
        .unwrap_or_else(|| panic!("no funnel in\n{out}"));
    assert!(
        funnel.contains(" → metadata 1 (lost ") && funnel.ends_with(" → stored 1 (lost 0 %)"),
        "{out}"
    );
    assert!(
        out.lines().any(
            |l| l.starts_with("  peer sessions (kept request records): attempts ")
                && l.contains(" → metadata 1 (lost ")
        ),
        "{out}"
    );
    // Each request record keeps its session's handshake and transport (issues
    // 15 and 16): the plaintext TCP seeder served it.
    for (section, name) in [
        ("handshakes (kept request records):", "plaintext"),
        ("transports (kept request records):", "tcp"),
    ] {
        let rows: Vec<&str> = out
            .lines()
            .skip_while(|l| *l != section)
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert!(
            rows.iter()
                .any(|l| l.ends_with(&format!("% ok  {name}")) && !l.contains(" 0.0% ok")),
            "{section} {name}: {out}"
        );
    }
    let torrents = tempfile::tempdir().unwrap();
    let (st, _, err) = run(&[
        "export",
        "--format",
        "torrent",
        "--out",
        torrents.path().to_str().unwrap(),
        "--db",
        dbs,
    ]);
    assert!(st.success(), "{err}");
    let file = std::fs::read(torrents.path().join(format!("{ih}.torrent"))).unwrap();
    assert!(file
        .windows(w.seeder.info.len())
        .any(|x| x == w.seeder.info.as_slice()));

    // A second crawl of the same network skips the known infohash.
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &boot,
            "--allow-private",
            "--duration",
            "60",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    assert!(
        p.wait_log("bootstrapping from saved nodes", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    let metrics_addr = metrics_addr(&p);
    let known = || {
        let body = http_get(&metrics_addr, "/metrics");
        body.lines()
            .find(|l| l.starts_with("magnetar_runtime_infohashes_known_total "))
            .is_some_and(|l| !l.ends_with(" 0"))
    };
    assert!(wait_until(Duration::from_secs(40), known), "{}", p.log());
    let body = http_get(&metrics_addr, "/metrics");
    assert!(body.contains("magnetar_storage_torrents 1"), "{body}");
    assert!(body.contains("magnetar_fetch_fetched_total 0"), "{body}");
    assert_runtime_metrics(runtime, &body);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(5)).success());
}

/// The runtime's own counters in `/metrics`: those both runtimes have, under the
/// same names, and those only the tokio driver has (its storage channel and the
/// library's event stream). Each must be there with a value.
fn assert_runtime_metrics(runtime: &str, body: &str) {
    let value = |name: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    let both = [
        "magnetar_runtime_infohashes_new_total",
        "magnetar_runtime_infohashes_known_total",
        "magnetar_runtime_acquire_full_total",
        "magnetar_runtime_udp_send_errors_total",
        "magnetar_runtime_udp_send_would_block_total",
        "magnetar_runtime_udp_recv_errors_total",
        "magnetar_runtime_tcp_local_errors_total",
        "magnetar_runtime_emfile_total",
        "magnetar_runtime_tcp_open",
        "magnetar_runtime_tcp_max",
        "magnetar_runtime_dns_failures_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "magnetar_storage_torrents_written_total",
        "magnetar_storage_dropped_total",
    ];
    let tokio_only = [
        "magnetar_runtime_storage_waits_total",
        "magnetar_runtime_storage_errors_total",
        "magnetar_runtime_stream_dropped_total",
    ];
    for name in both {
        assert!(value(name).is_some(), "{runtime}: no {name} in\n{body}");
    }
    for name in tokio_only {
        assert_eq!(
            value(name).is_some(),
            runtime == "tokio",
            "{runtime}: {name} in\n{body}"
        );
    }
    assert!(value("magnetar_runtime_tcp_max").unwrap() >= 1.0, "{body}");
    assert_eq!(
        value("magnetar_runtime_storage_errors_total").unwrap_or(0.0),
        0.0
    );
}

/// The address the crawler's `/metrics` listens on (from its log).
fn metrics_addr(p: &CrawlProc) -> String {
    assert!(
        p.wait_log("metrics at http://", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    let log = p.log();
    let at = log.find("metrics at http://").unwrap() + "metrics at http://".len();
    log[at..].split('/').next().unwrap().to_string()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// SIGTERM in the middle of a crawl: exit 0, the session closed, the torrent
/// stored.
fn sigterm_mid_crawl(runtime: &str, base: u8) {
    let w = world(base, 3, "sigterm.bin", 100_000);
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
            "--status-interval",
            "1",
        ],
    );
    // In the middle: the torrent is fetched and the crawl goes on.
    assert!(
        p.wait_log("metadata fetched", Duration::from_secs(45)),
        "{}",
        p.log()
    );
    p.signal("TERM");
    // Exit 0 with the crawl stopped cleanly and everything stored (below). The
    // wait's bound only keeps a hung shutdown from hanging the test.
    let st = p.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    assert!(p.log().contains("crawl stopped"), "{}", p.log());
    // The database reopens, with the session closed.
    let dbs = db.path().to_str().unwrap();
    let (st, out, err) = run(&["stats", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("sessions:         1"), "{out}");
    assert!(!out.contains("running or killed"), "{out}");
    // Consistent: the store's own integrity check passes and the torrent is there.
    let store =
        magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    let report = store.integrity_check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let t = store
        .get(&w.seeder.info_hash.0)
        .unwrap()
        .expect("stored before exit");
    assert_eq!(t.record.name, "sigterm.bin");
    assert_eq!(t.record.total_size, 100_000);
}

/// SIGTERM while a load generator floods the crawler with queries: still exit 0
/// (the UDP batches leave room for the signal; without that the flood would
/// hold the loop until the wait's bound).
fn sigterm_under_flood(runtime: &str) {
    let db = tempfile::tempdir().unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let bind = format!("127.0.0.1:{port}");
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            &bind,
            "--bootstrap",
            "127.0.0.1:9",
            "--allow-private",
            "--per-ip-answers",
            "1000000000",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = metrics_addr(&p);
    let mut gen = std::process::Command::new(env!("CARGO_BIN_EXE_magnetar-loadgen"))
        .args([
            "--target",
            &bind,
            "--sockets",
            "16",
            "--window",
            "512",
            "--warmup",
            "0",
        ])
        .args(["--duration", "60", "--mix", "ping", "--ip-base", "9"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Under load: wait until the crawler has answered a good many queries.
    let answered = || {
        http_get(&metrics, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("magnetar_dht_responses_out_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(20), || answered() > 20_000),
        "{}",
        p.log()
    );
    p.signal("TERM");
    // As above: the outcome, not the speed (the wait's bound is generous) —
    // and the crawler ended while the flood was still on (the generator runs
    // for a minute): the signal got through it.
    let st = p.wait_exit(Duration::from_secs(30));
    let flooding = gen.try_wait().unwrap().is_none();
    let _ = gen.kill();
    let _ = gen.wait();
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    assert!(flooding, "the crawler exited only once the flood had ended");
    let (st, out, _) = run(&["stats", "--db", db.path().to_str().unwrap()]);
    assert!(st.success() && out.contains("sessions:         1"), "{out}");
}

/// Nobody answers: the binary says so plainly (with the addresses tried and the
/// names that did not resolve) instead of exiting silently, and counts the DNS
/// failures in `/metrics`. Uses a short --duration; the warning comes at 30 s.
fn says_when_bootstrap_fails(runtime: &str) {
    let db = tempfile::tempdir().unwrap();
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &addr,
            "--bootstrap",
            "no-such-host.invalid:6881",
            "--allow-private",
            "--duration",
            "40",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = metrics_addr(&p);
    assert!(
        p.wait_log("no bootstrap node has answered", Duration::from_secs(45)),
        "{}",
        p.log()
    );
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("no bootstrap node has answered"))
        .unwrap();
    assert!(line.contains(&addr), "{line}");
    assert!(line.contains("no-such-host.invalid"), "{line}");
    assert!(line.contains("still retrying"), "{line}");
    let dns_failures = || {
        http_get(&metrics, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("magnetar_runtime_dns_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || dns_failures() >= 1),
        "{}",
        http_get(&metrics, "/metrics")
    );
    let st = p.wait_exit(Duration::from_secs(15));
    assert!(st.success());
}

/// The disk fills up mid-crawl (RLIMIT_FSIZE on the process, so LMDB's write of a
/// large torrent fails with EFBIG): the crawler stops at once (not at --duration),
/// exits non-zero saying storage failed, and the database still opens with what
/// was committed before (a small torrent), consistent.
fn stops_when_storage_fails(runtime: &str, base: u8) {
    let db = tempfile::tempdir().unwrap();
    let net = DhtNet::start(2, base, base as u64 * 1000);
    let small = Seeder::start([127, 0, 0, base + 2], &InfoSpec::single("small.bin", 5000));
    // An info dict of about 300 KiB: its commit cannot fit under the limit.
    let big = Seeder::start(
        [127, 0, 0, base + 3],
        &InfoSpec::many_files("big", 6000, 1000),
    );
    assert!(big.info.len() > 250_000, "{}", big.info.len());
    let port = {
        let s =
            std::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, base + 4), 0)).unwrap();
        s.local_addr().unwrap().port()
    };
    let crawler: std::net::SocketAddr = ([127, 0, 0, base + 4], port).into();
    let bind = crawler.to_string();
    let boot = net.addrs[0].to_string();
    let mut p = crawl_with_rlimit(
        runtime,
        db.path(),
        &[
            "--bind",
            &bind,
            "--bootstrap",
            &boot,
            "--allow-private",
            "--duration",
            "300",
            "--status-interval",
            "1",
        ],
        &format!("--fsize={STORE_FSIZE_LIMIT}"),
    );
    // The small torrent, announced straight to the crawler, is stored.
    announce(crawler, small.info_hash, small.addr);
    let dbs = db.path().to_str().unwrap();
    let small_hex = hex(&small.info_hash.0);
    let stored = |ih: &str| {
        let (st, out, _) = run(&["export", "--db", dbs]);
        st.success() && out.contains(ih)
    };
    assert!(
        wait_until(Duration::from_secs(45), || stored(&small_hex)),
        "small torrent not stored:\n{}",
        p.log()
    );
    // The premise: the store has room left for small records, not for the big one.
    let used = std::fs::metadata(db.path().join("data.mdb")).unwrap().len();
    assert!(used < STORE_FSIZE_LIMIT / 2, "{used}");
    // The big one does not fit: the crawl stops by itself, soon.
    announce(crawler, big.info_hash, big.addr);
    let t = std::time::Instant::now();
    let st = p.wait_exit(Duration::from_secs(60));
    let log = p.log();
    assert!(!st.success(), "exit {st:?}; log:\n{log}");
    assert!(
        log.contains("metadata fetched") && log.contains("name=big"),
        "{log}"
    );
    assert!(log.contains("crawl failed: storage failed"), "{log}");
    eprintln!(
        "{runtime}: stopped {:?} after the big announce",
        t.elapsed()
    );
    // Nothing committed is lost: the store opens, is consistent, has the small one.
    let store =
        magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    let report = store.integrity_check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let t = store.get(&small.info_hash.0).unwrap().expect("small kept");
    assert_eq!(t.record.name, "small.bin");
    assert!(store.get(&big.info_hash.0).unwrap().is_none());
}

/// RLIMIT_FSIZE for [`stops_when_storage_fails`]: room for a new store (LMDB's
/// lock file, meta pages, every database's root) and a small torrent, not for a
/// 300 KiB info dict.
const STORE_FSIZE_LIMIT: u64 = 512 * 1024;

/// The fd budget: under RLIMIT_NOFILE 256 the leeches are capped at 256 - 64
/// (`/metrics` says so, and the log), and a flood of announces whose peers are
/// silent tarpits (from 200 addresses, so up to 400 connections would be allowed
/// per-IP) fills the budget without ever passing it or running out of descriptors.
fn fd_budget_holds_under_a_leech_flood(runtime: &str, ip_base: u8) {
    let db = tempfile::tempdir().unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let bind = format!("127.0.0.1:{port}");
    let mut p = crawl_with_rlimit(
        runtime,
        db.path(),
        &[
            "--bind",
            &bind,
            "--bootstrap",
            "127.0.0.1:9",
            "--allow-private",
            "--per-ip-answers",
            "1000000000",
            "--metrics",
            "127.0.0.1:0",
            "--duration",
            "120",
        ],
        "--nofile=256",
    );
    let metrics = metrics_addr(&p);
    let value = |body: &str, name: &str| -> Option<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    let ip_base = ip_base.to_string();
    let mut gen = std::process::Command::new(env!("CARGO_BIN_EXE_magnetar-loadgen"))
        .args(["--target", &bind, "--sockets", "200", "--window", "64"])
        .args(["--warmup", "0", "--duration", "25", "--mix", "ping"])
        .args(["--announce", "200", "--ip-base", &ip_base])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let mut max = None;
    let full = wait_until(Duration::from_secs(30), || {
        let body = http_get(&metrics, "/metrics");
        if let (Some(open), Some(m)) = (
            value(&body, "magnetar_runtime_tcp_open"),
            value(&body, "magnetar_runtime_tcp_max"),
        ) {
            peak = peak.max(open);
            max = Some(m);
            assert!(open <= m, "{runtime}: {open} connections open, budget {m}");
        }
        max.is_some_and(|m| peak >= m)
    });
    let body = http_get(&metrics, "/metrics");
    let _ = gen.kill();
    let _ = gen.wait();
    assert_eq!(max, Some(256 - 64), "{body}");
    assert!(
        full,
        "{runtime}: peak {peak} of {max:?} connections\n{body}"
    );
    assert_eq!(
        value(&body, "magnetar_runtime_emfile_total"),
        Some(0),
        "{body}"
    );
    assert!(
        p.log()
            .contains("leech concurrency capped under RLIMIT_NOFILE"),
        "{}",
        p.log()
    );
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
}

fn rejects_bad_arguments(runtime: &str) {
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    for args in [
        vec!["crawl", "--runtime", runtime, "--db", dbs, "--bind", "nope"],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--db",
            dbs,
            "--max-leeches",
            "0",
        ],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--db",
            dbs,
            "--bootstrap",
            "hostwithoutport",
        ],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--db",
            dbs,
            "--log-format",
            "xml",
        ],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--db",
            dbs,
            "--duration",
            "-3",
        ],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--db",
            dbs,
            "--bind",
            "192.0.2.1:1",
        ],
        vec!["no-such-command"],
    ] {
        let (st, _out, err) = run(&args);
        assert!(!st.success(), "{args:?} succeeded");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
    }
    // The metrics address is taken.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    let args = [
        "crawl",
        "--runtime",
        runtime,
        "--db",
        dbs,
        "--bind",
        "127.0.0.1:0",
        "--metrics",
        &taken,
    ];
    let (st, _out, err) = run(&args);
    assert!(!st.success() && err.contains("--metrics"), "{err}");
    // Nothing was written for rejected runs.
    assert_eq!(std::fs::read_dir(db.path()).unwrap().count(), 0);

    // Bad database paths: a file, an uncreatable directory, a missing database.
    let file = db.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = db.path().join("missing");
    for args in [
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--bind",
            "127.0.0.1:0",
            "--db",
            file.to_str().unwrap(),
            "--duration",
            "1",
        ],
        vec![
            "crawl",
            "--runtime",
            runtime,
            "--bind",
            "127.0.0.1:0",
            "--db",
            "/proc/magnetar-nope",
            "--duration",
            "1",
        ],
        vec![
            "show",
            "0123456789012345678901234567890123456789",
            "--db",
            missing.to_str().unwrap(),
        ],
        vec!["search", "x", "--db", missing.to_str().unwrap()],
        vec!["show", "not-hex", "--db", missing.to_str().unwrap()],
        vec![
            "export",
            "--since",
            "yesterday",
            "--db",
            missing.to_str().unwrap(),
        ],
    ] {
        let (st, _out, err) = run(&args);
        assert!(!st.success(), "{args:?} succeeded");
        assert!(
            err.contains("magnetar:") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
    assert!(!missing.exists(), "a read-only command created a database");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn mio_fetches_announced_metadata() {
    fetches_announced_metadata("mio", 10);
}

#[test]
fn mio_sigterm_mid_crawl() {
    sigterm_mid_crawl("mio", 30);
}

#[test]
fn mio_sigterm_under_flood() {
    sigterm_under_flood("mio");
}

#[test]
fn mio_says_when_bootstrap_fails() {
    says_when_bootstrap_fails("mio");
}

#[test]
fn mio_stops_when_storage_fails() {
    stops_when_storage_fails("mio", 90);
}

#[test]
fn mio_fd_budget_holds_under_a_leech_flood() {
    fd_budget_holds_under_a_leech_flood("mio", 20);
}

#[test]
fn mio_rejects_bad_arguments() {
    rejects_bad_arguments("mio");
}

#[test]
fn tokio_fetches_announced_metadata() {
    fetches_announced_metadata("tokio", 50);
}

#[test]
fn tokio_sigterm_mid_crawl() {
    sigterm_mid_crawl("tokio", 70);
}

#[test]
fn tokio_sigterm_under_flood() {
    sigterm_under_flood("tokio");
}

#[test]
fn tokio_says_when_bootstrap_fails() {
    says_when_bootstrap_fails("tokio");
}

#[test]
fn tokio_stops_when_storage_fails() {
    stops_when_storage_fails("tokio", 100);
}

#[test]
fn tokio_fd_budget_holds_under_a_leech_flood() {
    fd_budget_holds_under_a_leech_flood("tokio", 21);
}

#[test]
fn tokio_rejects_bad_arguments() {
    rejects_bad_arguments("tokio");
}
