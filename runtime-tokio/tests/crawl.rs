//! The tokio driver on real loopback sockets: crawl, fetch, storage, shutdown.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{announce, crawler_config, serve, wait_for, Dht};
use magnetar_core::fetch::FailReason;
use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec};
use magnetar_core::{Event, InfoHash};
use magnetar_tokio::{Crawler, Decision, Error, MemoryStorage, Snapshot, Storage};

const LIMIT: Duration = Duration::from_secs(30);

fn torrent(name: &str, size: u64) -> (Vec<u8>, InfoHash) {
    let info = build_info(&InfoSpec::single(name, size));
    let ih = FakeSeeder::new(info.clone().into(), Behavior::Honest).info_hash();
    (info, ih)
}

#[tokio::test]
async fn crawls_a_loopback_dht_and_stores_what_it_fetches() {
    let dht = Dht::start(8, 100).await;
    let mut want = BTreeSet::new();
    for (name, size) in [("debian.iso", 1 << 20), ("film.mkv", 5 << 20)] {
        let (info, ih) = torrent(name, size);
        let seeder = serve(info, Behavior::Honest).await;
        assert_eq!(announce(&dht.addrs(), ih, seeder.port()).await, 8);
        want.insert((ih, name.to_string()));
    }

    let store = MemoryStorage::new();
    let (crawler, mut events) =
        Crawler::spawn(crawler_config(1), Some(Box::new(store.clone()))).unwrap();
    crawler.bootstrap(&[dht.router()]).await.unwrap();
    let mut got = BTreeSet::new();
    tokio::time::timeout(LIMIT, async {
        while got != want {
            match events.recv().await.expect("crawler running") {
                Event::MetadataFetched(m) => {
                    got.insert((m.info_hash, m.info.name.clone()));
                }
                Event::MetadataFailed(m) => panic!("fetch failed: {m:?}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fetched only {got:?} within {LIMIT:?}"));

    let snap = crawler.stats().await.unwrap();
    assert!(snap.stats.dht.datagrams_in > 0 && snap.stats.dht.datagrams_out > 0);
    assert!(snap.runtime.infohashes_new >= 2);
    assert_eq!(snap.runtime.tcp_connect_local_errors, 0);

    // Returns (a bound on the wait, not a speed claim), with no error: the
    // flush finished within the shutdown timeout.
    let report = tokio::time::timeout(LIMIT, crawler.shutdown())
        .await
        .expect("shutdown returned")
        .unwrap();
    assert_eq!(report.stats.fetch.fetched, 2);
    let stored: BTreeSet<_> = store
        .torrents()
        .into_iter()
        .map(|(ih, name, _)| (ih, name))
        .collect();
    assert_eq!(stored, want, "shutdown flushed every fetched torrent");
    // The stream ends with the crawler.
    while events.recv().await.is_some() {}
    assert!(matches!(crawler.stats().await, Err(Error::Stopped)));
    dht.stop().await;
}

#[tokio::test]
async fn infohashes_storage_knows_are_not_acquired() {
    let dht = Dht::start(6, 200).await;
    let (info, ih) = torrent("known.bin", 1 << 16);
    let seeder = serve(info, Behavior::Honest).await;
    announce(&dht.addrs(), ih, seeder.port()).await;

    let store = MemoryStorage::new();
    store.insert(ih, "known.bin", 1 << 16);
    let (crawler, _events) =
        Crawler::spawn(crawler_config(2), Some(Box::new(store.clone()))).unwrap();
    crawler.bootstrap(&[dht.router()]).await.unwrap();
    wait_for(LIMIT, "the known infohash to be discovered", || {
        let c = crawler.clone();
        async move {
            let s = c.stats().await.unwrap();
            (s.runtime.infohashes_known >= 1).then_some(())
        }
    })
    .await;
    let report = crawler.shutdown().await.unwrap();
    assert_eq!(report.stats.fetch.started, 0, "nothing was fetched");
    assert_eq!(report.stats.crawl.acquisitions_started, 0);
    assert_eq!(report.counters.infohashes_new, 0);
    dht.stop().await;
}

#[tokio::test]
async fn handle_fetch_reports_success_and_each_failure() {
    // TCP only: with uTP on, the refused peer is tried again over uTP (issue 15),
    // and which of the two failures it reports then depends on the machine's
    // load; the transport strategy has its own tests in core.
    let mut cfg = crawler_config(3);
    cfg.fetch.utp = false;
    let (crawler, mut events) = Crawler::spawn(cfg, None).unwrap();
    let (info, ih) = torrent("direct.bin", 300_000);
    let honest = serve(info, Behavior::Honest).await;
    crawler.fetch(ih, &[honest]).await.unwrap();

    let (info2, ih2) = torrent("corrupt.bin", 100_000);
    let corrupt = serve(info2, Behavior::CorruptPiece(0)).await;
    crawler.fetch(ih2, &[corrupt]).await.unwrap();

    // A port nobody listens on: bind, note the port, close.
    let refused: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_, ih3) = torrent("refused.bin", 1000);
    crawler.fetch(ih3, &[refused]).await.unwrap();

    let mut fetched = None;
    let mut failed = std::collections::BTreeMap::new();
    tokio::time::timeout(LIMIT, async {
        while fetched.is_none() || failed.len() < 2 {
            match events.recv().await.unwrap() {
                Event::MetadataFetched(m) => fetched = Some(m),
                Event::MetadataFailed(m) => {
                    failed.insert(m.info_hash, m.reasons.clone());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("every fetch ends");
    let m = fetched.unwrap();
    assert_eq!((m.info_hash, m.info.name.as_str()), (ih, "direct.bin"));
    assert_eq!(m.peer, honest);
    assert_eq!(failed[&ih2], vec![(corrupt, FailReason::HashMismatch)]);
    assert_eq!(failed[&ih3], vec![(refused, FailReason::ConnectRefused)]);

    // Misuse is an error, not a panic.
    assert!(matches!(crawler.fetch(ih, &[]).await, Err(Error::Api(_))));
    let r = crawler.shutdown().await.unwrap();
    assert_eq!(r.counters.tcp_open, 0);
    assert!(matches!(crawler.shutdown().await, Err(Error::Stopped)));
}

/// A slow storage: each event takes a while; the final calls are observed.
#[derive(Clone)]
struct Slow {
    records: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    /// Datagrams in, as the last status (at shutdown) saw them.
    last_status: Arc<AtomicU64>,
    record_delay: Duration,
    close_delay: Duration,
}

impl Slow {
    fn new(record_delay: Duration, close_delay: Duration) -> Self {
        Slow {
            records: Arc::default(),
            closed: Arc::default(),
            last_status: Arc::default(),
            record_delay,
            close_delay,
        }
    }
}

impl Storage for Slow {
    fn on_event(&mut self, _: u64, _: &Event) -> Result<Decision, String> {
        std::thread::sleep(self.record_delay);
        self.records.fetch_add(1, Ordering::Relaxed);
        Ok(Decision::Acquire)
    }
    fn status(&mut self, _: u64, s: &Snapshot, last: bool) -> Result<(), String> {
        if last {
            self.last_status
                .store(s.stats.dht.datagrams_in, Ordering::Relaxed);
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<(), String> {
        std::thread::sleep(self.close_delay);
        self.closed.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test]
async fn slow_storage_applies_backpressure_and_loses_nothing() {
    let dht = Dht::start(8, 300).await;
    let store = Slow::new(Duration::from_millis(2), Duration::from_millis(50));
    let (crawler, mut events) = Crawler::builder(crawler_config(4))
        .storage(Box::new(store.clone()))
        .storage_capacity(1)
        .start()
        .unwrap();
    crawler.bootstrap(&[dht.router()]).await.unwrap();
    // Count what the stream sees (it is large enough to see everything here).
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        while events.recv().await.is_some() {
            n += 1;
        }
        n
    });
    wait_for(LIMIT, "the driver to wait for storage", || {
        let c = crawler.clone();
        async move {
            let s = c.stats().await.unwrap();
            (s.runtime.storage_waits > 0 && s.stats.nodes >= 4).then_some(())
        }
    })
    .await;
    let report = crawler.shutdown().await.unwrap();
    let streamed = counter.await.unwrap();
    assert_eq!(report.counters.stream_dropped, 0);
    assert!(store.closed.load(Ordering::Relaxed));
    assert_eq!(
        store.last_status.load(Ordering::Relaxed),
        report.stats.dht.datagrams_in
    );
    assert_eq!(
        store.records.load(Ordering::Relaxed),
        streamed,
        "storage recorded every event"
    );
    dht.stop().await;
}

#[tokio::test]
async fn shutdown_is_bounded_when_storage_hangs() {
    let store = Slow::new(Duration::ZERO, Duration::from_secs(20));
    let (crawler, _events) = Crawler::builder(crawler_config(5))
        .storage(Box::new(store))
        .shutdown_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    // The storage would hang for 20 s: shutdown returns before (the bound on
    // this wait is below that), by its timeout, and says so.
    match tokio::time::timeout(Duration::from_secs(15), crawler.shutdown()).await {
        Ok(Err(Error::Storage(e))) => assert!(e.contains("did not finish"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dropping_every_handle_stops_the_crawler() {
    let (crawler, mut events) = Crawler::spawn(crawler_config(6), None).unwrap();
    drop(crawler);
    // EventStream is a futures `Stream`.
    use tokio_stream::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), async {
        while events.next().await.is_some() {}
    })
    .await
    .expect("the stream ends");
}

#[tokio::test]
async fn a_fresh_socket_sends_its_first_datagram() {
    // Regression: tokio's `try_send_to` reports WouldBlock until the reactor has
    // seen a new socket writable, which silently lost the first bootstrap query.
    let router = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (crawler, _events) = Crawler::spawn(crawler_config(7), None).unwrap();
    crawler
        .bootstrap(&[router.local_addr().unwrap()])
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (_, from) = tokio::time::timeout(Duration::from_secs(2), router.recv_from(&mut buf))
        .await
        .expect("the bootstrap query arrives at once")
        .unwrap();
    assert_eq!(from, crawler.local_addrs()[0]);
    let r = crawler.shutdown().await.unwrap();
    assert_eq!(r.counters.udp_send_would_block, 0);
}

#[tokio::test]
async fn a_udp_flood_does_not_starve_the_handle() {
    let (crawler, _events) = Crawler::spawn(crawler_config(8), None).unwrap();
    let target = crawler.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(ping, target);
                sent += 1;
            }
            sent
        })
    };
    // Wait until the flood is being read, then ask for the counters.
    wait_for(LIMIT, "the flood to arrive", || {
        let c = crawler.clone();
        async move { (c.stats().await.unwrap().stats.dht.datagrams_in > 10_000).then_some(()) }
    })
    .await;
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), crawler.stats()).await;
    let waited = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let snap = r.expect("the handle is answered during a flood").unwrap();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert!(snap.stats.dht.datagrams_in > 0 && sent > 0);
    crawler.shutdown().await.unwrap();
}

/// A storage whose every call blocks for a long time.
struct Stuck;

impl Storage for Stuck {
    fn on_event(&mut self, _: u64, _: &Event) -> Result<Decision, String> {
        std::thread::sleep(Duration::from_secs(30));
        Ok(Decision::Nothing)
    }
}

#[tokio::test]
async fn shutdown_is_bounded_when_storage_blocks_the_driver() {
    let dht = Dht::start(4, 400).await;
    let (crawler, _events) = Crawler::builder(crawler_config(10))
        .storage(Box::new(Stuck))
        .storage_capacity(1)
        .shutdown_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    crawler.bootstrap(&[dht.router()]).await.unwrap();
    // The driver is soon stuck waiting for room in the storage channel: it answers
    // no command any more.
    wait_for(LIMIT, "the driver to be stuck", || {
        let c = crawler.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(200), c.stats())
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    // The storage never returns: shutdown does, by its timeout, and says so.
    match tokio::time::timeout(LIMIT, crawler.shutdown()).await {
        Ok(Err(Error::Storage(e))) => assert!(e.contains("did not"), "{e}"),
        other => panic!("{other:?}"),
    }
    dht.stop().await;
}

#[tokio::test]
async fn core_timeouts_close_connections_and_free_their_sockets() {
    let mut c = crawler_config(12);
    c.fetch.idle_timeout = Duration::from_millis(200);
    let (crawler, mut events) = Crawler::spawn(c, None).unwrap();
    let mut want = std::collections::BTreeMap::new();
    for (i, b) in [Behavior::Silent, Behavior::Stall].into_iter().enumerate() {
        let (info, ih) = torrent(&format!("slow{i}.bin"), 50_000);
        let peer = serve(info, b).await;
        crawler.fetch(ih, &[peer]).await.unwrap();
        want.insert(ih, peer);
    }
    let mut failed = std::collections::BTreeMap::new();
    tokio::time::timeout(LIMIT, async {
        while failed.len() < want.len() {
            if let Event::MetadataFailed(m) = events.recv().await.unwrap() {
                failed.insert(m.info_hash, m.reasons.clone());
            }
        }
    })
    .await
    .expect("both fetches time out");
    for (ih, peer) in want {
        assert_eq!(failed[&ih], vec![(peer, FailReason::IdleTimeout)]);
    }
    let snap = crawler.stats().await.unwrap();
    assert_eq!(snap.runtime.tcp_open, 0, "closed connections are dropped");
    crawler.shutdown().await.unwrap();
}

/// Fails every event from the `fail_at`-th on.
struct FailingEvents {
    events: u64,
    fail_at: u64,
}

impl Storage for FailingEvents {
    fn on_event(&mut self, _: u64, _: &Event) -> Result<Decision, String> {
        self.events += 1;
        if self.events >= self.fail_at {
            return Err("no space left on device (test)".into());
        }
        Ok(Decision::Acquire)
    }
}

#[tokio::test]
async fn a_storage_failure_stops_the_crawler_and_shutdown_says_why() {
    let dht = Dht::start(6, 400).await;
    let (crawler, mut events) = Crawler::builder(crawler_config(7))
        .storage(Box::new(FailingEvents {
            events: 0,
            fail_at: 3,
        }))
        .start()
        .unwrap();
    crawler.bootstrap(&[dht.router()]).await.unwrap();
    // Bootstrapping yields events (nodes added): the third one fails.
    tokio::time::timeout(LIMIT, crawler.stopped())
        .await
        .expect("the crawler stops by itself after a storage failure");
    assert!(matches!(crawler.stats().await, Err(Error::Stopped)));
    tokio::time::timeout(Duration::from_secs(5), async {
        while events.recv().await.is_some() {}
    })
    .await
    .expect("the event stream ends");
    match crawler.shutdown().await {
        Err(Error::Storage(e)) => assert!(e.contains("no space left"), "{e}"),
        other => panic!("{other:?}"),
    }
    dht.stop().await;
}
