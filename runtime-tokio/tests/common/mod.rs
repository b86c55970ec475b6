//! A loopback world for the integration tests: plain DHT nodes on real UDP
//! sockets (core crawlers with harvesting off, driven by magnetar-tokio), fake
//! BitTorrent peers serving metadata over real TCP (core's testkit `FakeSeeder`),
//! and a client that announces infohashes to the nodes.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::testkit::{Behavior, FakeSeeder};
use magnetar_core::{Config, InfoHash, NodeId};
use magnetar_tokio::{Crawler, EventStream, Handle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// A config for a crawler on loopback: everything runs on 127.0.0.1, so per-IP
/// answer limits are off and bootstrap needs only a few nodes.
pub fn crawler_config(seed: u64) -> Config {
    let mut c = Config::loopback_test(seed);
    c.dht.bootstrap_nodes = 4;
    c.dht.per_ip_answers_per_sec = 1_000_000;
    c
}

/// A plain DHT node config (no harvesting).
pub fn plain_config(seed: u64) -> Config {
    let mut c = crawler_config(seed);
    c.crawl.enabled = false;
    c
}

pub struct Dht {
    pub nodes: Vec<Handle>,
    _events: Vec<EventStream>,
}

impl Dht {
    /// `n` plain nodes, all bootstrapped from the first.
    pub async fn start(n: usize, seed: u64) -> Dht {
        let mut nodes = Vec::new();
        let mut events = Vec::new();
        for i in 0..n {
            let b = Crawler::builder(plain_config(seed + i as u64)).event_capacity(0);
            let (h, e) = b.start().expect("spawn node");
            nodes.push(h);
            events.push(e);
        }
        let first = nodes[0].local_addrs()[0];
        for n in &nodes[1..] {
            n.bootstrap(&[first]).await.unwrap();
        }
        Dht {
            nodes,
            _events: events,
        }
    }

    pub fn router(&self) -> SocketAddr {
        self.nodes[0].local_addrs()[0]
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.local_addrs()[0]).collect()
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.shutdown().await.unwrap();
        }
    }
}

fn query(tid: &[u8], kind: QueryKind<'_>) -> Vec<u8> {
    let body = Body::Query(Query {
        id: NodeId([7; 20]),
        want: None,
        kind,
    });
    let mut buf = Vec::new();
    krpc::encode(
        &Message {
            tid,
            version: None,
            ip: None,
            read_only: true,
            body,
        },
        &mut buf,
    );
    buf
}

/// Announces `ih` at 127.0.0.1:`port` to every node (get_peers for a token, then
/// announce_peer). Returns how many nodes accepted the announce.
pub async fn announce(nodes: &[SocketAddr], ih: InfoHash, port: u16) -> usize {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let gp = query(
        b"gp",
        QueryKind::GetPeers {
            info_hash: ih,
            scrape: false,
            noseed: false,
        },
    );
    for n in nodes {
        udp.send_to(&gp, n).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let mut acked = 0;
    let mut tokens = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while acked < nodes.len() {
        let Ok(Ok((len, from))) = tokio::time::timeout_at(deadline, udp.recv_from(&mut buf)).await
        else {
            break;
        };
        let Ok(msg) = krpc::decode(&buf[..len]) else {
            continue;
        };
        let Body::Response(r) = &msg.body else {
            continue;
        };
        if msg.tid == b"an" {
            acked += 1;
            continue;
        }
        let Some(token) = r.token else { continue };
        tokens += 1;
        let an = query(
            b"an",
            QueryKind::AnnouncePeer {
                info_hash: ih,
                port,
                implied_port: false,
                token,
                seed: Some(true),
            },
        );
        udp.send_to(&an, from).await.unwrap();
    }
    assert_eq!(tokens, nodes.len(), "every node hands out a token");
    acked
}

/// Serves `info` over real TCP with `behavior`, one `FakeSeeder` per connection.
pub async fn serve(info: Vec<u8>, behavior: Behavior) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut s = FakeSeeder::new(info.clone().into(), behavior.clone());
            tokio::spawn(async move {
                s.on_connected();
                if s.wants_close() {
                    return;
                }
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    s.on_data(&buf[..n]);
                    let out = s.take_output();
                    if tcp.write_all(&out).await.is_err() || s.wants_close() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Polls `check` until it yields a value or `limit` passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
