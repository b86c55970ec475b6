//! `magnetar_tokio::run`, the entry point of `magnetar crawl --runtime tokio`.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magnetar_core::{Config, Event};
use magnetar_tokio::{run, Decision, Error, MemoryStorage, RunOptions, Snapshot, Storage};

#[test]
fn run_resolves_routers_bootstraps_reports_status_and_stops_after_its_duration() {
    // A "router" that only receives: the bootstrap find_node must reach it.
    let router = UdpSocket::bind("127.0.0.1:0").unwrap();
    router
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let name = format!("localhost:{}", router.local_addr().unwrap().port());

    let statuses = Arc::new(AtomicU64::new(0));
    let mut opts = RunOptions::new(Config::loopback_test(11));
    opts.routers = vec![name, "no-such-host.invalid:6881".into()];
    opts.duration = Some(Duration::from_millis(600));
    opts.storage = Some(Box::new(MemoryStorage::new()));
    opts.status_interval = Duration::from_millis(100);
    opts.handle_signals = false;
    // A socket bound by the caller (as the binary does, with its own fallbacks).
    let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours_addr = ours.local_addr().unwrap();
    opts.sockets = vec![ours];
    let seen = statuses.clone();
    opts.on_status = Some(Box::new(move |s| {
        assert!(s.stats.dht.datagrams_out >= 1);
        seen.fetch_add(1, Ordering::Relaxed);
    }));
    // Every resolution, failures included, reaches the caller.
    let dns = Arc::new(Mutex::new(Vec::new()));
    let dns2 = dns.clone();
    opts.on_dns = Some(Box::new(move |name, r| {
        dns2.lock().unwrap().push((name.to_string(), r.clone()));
    }));

    let t0 = Instant::now();
    let runner = std::thread::spawn(move || run(opts));
    let mut buf = [0u8; 1500];
    let (n, from) = router.recv_from(&mut buf).expect("bootstrap query");
    assert_eq!(from, ours_addr, "the given socket is used");
    let msg = magnetar_core::krpc::decode(&buf[..n]).unwrap();
    assert!(matches!(msg.body, magnetar_core::krpc::Body::Query(_)));

    let report = runner.join().unwrap().expect("run succeeds");
    let took = t0.elapsed();
    assert_eq!(report.stop_reason, "duration reached");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(report.stats.dht.datagrams_out >= 1);
    assert!(statuses.load(Ordering::Relaxed) >= 3);
    let dns = dns.lock().unwrap();
    assert!(
        dns.iter()
            .any(|(n, r)| n.starts_with("localhost:") && r.as_ref().is_ok_and(|a| !a.is_empty())),
        "{dns:?}"
    );
    assert!(
        dns.iter()
            .any(|(n, r)| n == "no-such-host.invalid:6881" && r.is_err()),
        "{dns:?}"
    );
}

/// A storage that fails at its `fail_at`-th status tick (the last call, at
/// shutdown, is not counted); it records whether it was closed.
struct Failing {
    calls: Arc<AtomicU64>,
    fail_at: u64,
    closed: Arc<AtomicBool>,
}

impl Storage for Failing {
    fn on_event(&mut self, _: u64, _: &Event) -> Result<Decision, String> {
        Ok(Decision::Acquire)
    }
    fn status(&mut self, _: u64, _: &Snapshot, last: bool) -> Result<(), String> {
        if last {
            return Ok(());
        }
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if calls >= self.fail_at {
            return Err("disk full (test)".into());
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<(), String> {
        self.closed.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// As the mio runtime: a storage failure stops the crawl at once (not at the end
/// of its duration) and is the error `run` returns; storage is still closed.
#[test]
fn run_stops_at_once_when_storage_fails() {
    let closed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut opts = RunOptions::new(Config::loopback_test(12));
    opts.duration = Some(Duration::from_secs(120));
    opts.status_interval = Duration::from_millis(100);
    opts.handle_signals = false;
    opts.storage = Some(Box::new(Failing {
        calls: calls.clone(),
        fail_at: 3,
        closed: closed.clone(),
    }));
    // On a thread, so that a run that went on to its duration fails the test
    // (at the bound on this wait) instead of holding it for two minutes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(opts));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::Storage(e))) => {
            assert!(e.contains("disk full (test)"), "{e}");
            assert!(
                Error::Storage(e)
                    .to_string()
                    .starts_with("storage failed: "),
                "the same words as the mio runtime"
            );
        }
        other => panic!("{other:?}"),
    }
    // Stopped at the failing status tick: none after it (a crawl that went
    // on would have made hundreds more, one per 100 ms).
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert!(
        closed.load(Ordering::Relaxed),
        "storage closed after the failure"
    );
}
