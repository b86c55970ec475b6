//! `magnetar_tokio::run`, the entry point of `magnetar crawl --runtime tokio`.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_core::Config;
use magnetar_tokio::{run, MemoryStorage, RunOptions};

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
}
