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
    assert!(
        p.wait_log("magnetar::status", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    let t = std::time::Instant::now();
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(6));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(p.log().contains("crawl stopped"), "{}", p.log());
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
    // Nothing was written for rejected runs.
    assert_eq!(std::fs::read_dir(db.path()).unwrap().count(), 0);
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
fn mio_says_when_bootstrap_fails() {
    says_when_bootstrap_fails("mio");
}

#[test]
fn mio_rejects_bad_arguments() {
    rejects_bad_arguments("mio");
}

#[test]
fn tokio_is_not_yet_available() {
    let (st, _, err) = run(&["crawl", "--runtime", "tokio", "--duration", "1"]);
    assert!(!st.success());
    assert!(err.contains("not yet implemented"), "{err}");
}
