//! Running out of file descriptors is never fatal: the connect is answered with
//! `TcpClosed { LocalError }`, counted, and the crawler goes on. (Its own test
//! binary: it lowers the process's RLIMIT_NOFILE.)

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use magnetar_core::fetch::FailReason;
use magnetar_core::{Config, Event, InfoHash};
use magnetar_tokio::Crawler;
use rlimit::Resource;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test]
async fn fd_exhaustion_fails_connects_locally_and_is_counted() {
    let mut c = Config::loopback_test(9);
    c.fetch.peer_timeout = Duration::from_secs(30);
    c.fetch.idle_timeout = Duration::from_secs(30);
    let (crawler, mut events) = Crawler::spawn(c, None).unwrap();
    // Peers that accept at the TCP level (the backlog) and never answer, one per
    // loopback address (the fetcher allows two sessions per IP).
    let listeners: Vec<TcpListener> = (2..22)
        .map(|i| TcpListener::bind(SocketAddr::from(([127, 0, 0, i], 0))).unwrap())
        .collect();
    let peers: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();

    let (soft, hard) = Resource::NOFILE.get().unwrap();
    // Room for four more descriptors (a couple may be taken by the runtime).
    Resource::NOFILE.set(open_fds() + 4, hard).unwrap();
    for (i, p) in peers.iter().enumerate() {
        crawler
            .fetch(InfoHash([i as u8 + 1; 20]), &[*p])
            .await
            .unwrap();
    }
    let mut failed = BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while failed.len() < 10 {
            if let Event::MetadataFailed(m) = events.recv().await.unwrap() {
                failed.insert(m.info_hash, m.reasons.clone());
            }
        }
    })
    .await
    .expect("local failures are reported at once");
    Resource::NOFILE.set(soft, hard).unwrap();
    assert!(failed
        .values()
        .all(|r| r.len() == 1 && r[0].1 == FailReason::LocalError));
    let snap = crawler.stats().await.unwrap();
    assert!(snap.runtime.emfile >= 1, "{:?}", snap.runtime);
    assert!(snap.runtime.tcp_connect_local_errors >= 10);
    // Every connect either holds a socket or failed locally.
    assert_eq!(
        snap.runtime.tcp_open as u64 + snap.runtime.tcp_connect_local_errors,
        20
    );
    assert!(snap.runtime.tcp_open <= 8, "{:?}", snap.runtime);
    assert!(
        snap.stats
            .fetch
            .failures
            .get(&FailReason::LocalError)
            .copied()
            .unwrap_or(0)
            >= 10
    );
    crawler.shutdown().await.unwrap();
    drop(listeners);
}
