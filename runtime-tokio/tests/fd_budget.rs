//! Running out of file descriptors is never fatal: the connect is answered with
//! `TcpClosed { LocalError }` and counted; core keeps the peer (not its fault) and
//! pauses new connects; once descriptors are free again every fetch connects.
//! (Its own test binary: it lowers the process's RLIMIT_NOFILE.)

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
    // Out of descriptors: counted, backed off, nothing failed.
    let mut failed = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap = crawler.stats().await.unwrap();
        if snap.runtime.emfile >= 1 && snap.stats.fetch.local_backoffs >= 1 {
            break snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no EMFILE counted: {:?}",
            snap.runtime
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(snap.runtime.tcp_connect_local_errors >= 1);
    assert!(snap.runtime.tcp_open <= 8, "{:?}", snap.runtime);
    // Sessions ended by it are counted under their reason.
    assert!(snap
        .stats
        .fetch
        .failures
        .get(&FailReason::LocalError)
        .is_some_and(|n| *n >= 1));
    Resource::NOFILE.set(soft, hard).unwrap();

    // Descriptors again: the peers were kept, so every fetch connects (the
    // back-off is at most 8 s; the peers never answer and time out after 30 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(20), events.recv()).await
        {
            if let Event::MetadataFailed(m) = e {
                failed.insert(m.info_hash, m.reasons.clone());
            }
        }
        let snap = crawler.stats().await.unwrap();
        if snap.runtime.tcp_open == peers.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every fetch connected after the limit was lifted: {:?}",
            snap.runtime
        );
    }
    assert!(failed.is_empty(), "{failed:?}");
    crawler.shutdown().await.unwrap();
    drop(listeners);
}
