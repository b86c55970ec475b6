//! End-to-end: the `magnetar` binary crawls a small DHT on loopback and stores the
//! metadata it fetches. Each scenario is a function of the runtime name; the
//! `#[test]`s at the bottom instantiate them per runtime.

mod common;

use std::time::Duration;

use common::*;

/// Crawl a 4-node DHT whose last node holds an announce; the binary must fetch the
/// torrent's metadata (right name and size) and exit 0 at --duration.
fn fetches_announced_metadata(runtime: &str, base: u8) {
    let w = world(base, 4, "e2e-ubuntu.iso", 3 * 1024 * 1024 + 17);
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
            "--duration",
            "60",
            "--status-interval",
            "1",
        ],
    );
    let ih = hex(&w.seeder.info_hash.0);
    assert!(
        p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
        "no metadata fetched; log:\n{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains(&format!("name={}", w.name)), "{log}");
    assert!(log.contains(&format!("size={}", w.size)), "{log}");
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());

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
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(5)).success());
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

/// SIGTERM in the middle of a crawl: exit 0 within 5 s.
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
    let t = std::time::Instant::now();
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    assert!(t.elapsed() < Duration::from_secs(5));
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
/// within 5 s (the UDP batches leave room for the signal).
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
        .args(["--duration", "20", "--mix", "ping", "--ip-base", "9"])
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
    let t = std::time::Instant::now();
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    let _ = gen.kill();
    let _ = gen.wait();
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (st, out, _) = run(&["stats", "--db", db.path().to_str().unwrap()]);
    assert!(st.success() && out.contains("sessions:         1"), "{out}");
}

/// Nobody answers: the binary says so plainly (with the addresses tried) instead of
/// exiting silently. Uses a short --duration; the warning comes at 30 s.
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
        ],
    );
    assert!(
        p.wait_log("no bootstrap node has answered", Duration::from_secs(45)),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains(&addr), "{log}");
    assert!(log.contains("no-such-host.invalid"), "{log}");
    let st = p.wait_exit(Duration::from_secs(15));
    assert!(st.success());
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
fn tokio_rejects_bad_arguments() {
    rejects_bad_arguments("tokio");
}
