//! BEP 33 counts kept fresh, end to end: a crawl stores a torrent and scrapes it
//! once fetched (one seeder), a leecher joins the swarm, and a later
//! crawl that sees the stored torrent again scrapes it again and stores the new
//! counts with a later time. On both runtimes (the refresh decision crosses the
//! tokio driver's storage thread).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::{InfoHash, NodeId};

/// Announces `ih` for `peer` to `node` (from `peer`'s IP) as a seed or a leecher.
fn announce_as(node: SocketAddr, ih: InfoHash, peer: SocketAddr, seed: bool) {
    let s = UdpSocket::bind(SocketAddr::new(peer.ip(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let send = |tid: &[u8], kind: QueryKind<'_>| {
        let msg = Message {
            tid,
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query(Query {
                id: NodeId([0x66; 20]),
                want: None,
                kind,
            }),
        };
        let mut out = Vec::new();
        krpc::encode(&msg, &mut out);
        s.send_to(&out, node).unwrap();
    };
    let mut buf = [0u8; 2048];
    let mut token = None;
    for _ in 0..50 {
        let q = QueryKind::GetPeers {
            info_hash: ih,
            scrape: false,
            noseed: false,
        };
        send(b"gp", q);
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if let Ok(m) = krpc::decode(&buf[..n]) {
                if let (Body::Response(r), true) = (m.body, m.tid == b"gp") {
                    token = r.token.map(|t| t.to_vec());
                    break;
                }
            }
        }
    }
    let token = token.expect("the DHT node answered get_peers with a token");
    for _ in 0..50 {
        send(
            b"ap",
            QueryKind::AnnouncePeer {
                info_hash: ih,
                port: peer.port(),
                implied_port: false,
                token: &token,
                seed: seed.then_some(true),
            },
        );
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if let Ok(m) = krpc::decode(&buf[..n]) {
                if matches!(m.body, Body::Response(_)) && m.tid == b"ap" {
                    return;
                }
            }
        }
    }
    panic!("announce_peer got no answer");
}

/// The `seeders:` line of `show` (empty while the torrent is not stored yet).
fn counts_line(dbs: &str, ih: &str) -> String {
    let (_, out, _) = run(&["show", ih, "--db", dbs]);
    out.lines()
        .find(|l| l.starts_with("seeders:"))
        .unwrap_or("")
        .to_string()
}

/// `scraped_at` of the exported torrent.
fn scraped_at(dbs: &str) -> Option<u64> {
    let (st, out, _) = run(&["export", "--db", dbs]);
    assert!(st.success());
    let v: serde_json::Value = serde_json::from_str(out.lines().next()?).ok()?;
    v.get("scraped_at")?.as_u64()
}

fn counts_are_filled_then_refreshed(runtime: &str, base: u8) {
    let w = world(base, 3, "scrape-refresh.bin", 65_432);
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    let boot = w.net.addrs[0].to_string();
    let ih = hex(&w.seeder.info_hash.0);
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        &boot,
        "--allow-private",
    ];
    // 1. Fetched, stored, then scraped: the one seeder.
    let mut p = crawl(runtime, db.path(), &args);
    assert!(
        p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
        "no metadata fetched; log:\n{}",
        p.log()
    );
    let scraped = wait_until(Duration::from_secs(30), || {
        counts_line(dbs, &ih).starts_with("seeders:       1   leechers: 0   (measured ")
    });
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(6)).success(), "{}", p.log());
    assert!(scraped, "no counts: {}\n{}", counts_line(dbs, &ih), p.log());
    let t1 = scraped_at(dbs).expect("counts stored with their time");

    // 2. A leecher joins; a second later (scrape times are in seconds) a crawl
    // that may refresh any counts sees the torrent again and scrapes it again.
    let leecher: SocketAddr = format!("127.0.0.{}:7000", base + 4).parse().unwrap();
    announce_as(
        *w.net.addrs.last().unwrap(),
        w.seeder.info_hash,
        leecher,
        false,
    );
    std::thread::sleep(Duration::from_millis(1100));
    let mut args2 = args.to_vec();
    args2.extend(["--scrape-max-age", "0"]);
    let mut p = crawl(runtime, db.path(), &args2);
    let refreshed = wait_until(Duration::from_secs(45), || {
        counts_line(dbs, &ih).starts_with("seeders:       1   leechers: 1   (measured ")
    });
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(6)).success(), "{}", p.log());
    assert!(
        refreshed,
        "counts never refreshed: {}; log:\n{}",
        counts_line(dbs, &ih),
        p.log()
    );
    let t2 = scraped_at(dbs).expect("counts stored with their time");
    assert!(t2 > t1, "measured at {t2}, after {t1}");
    // Still one torrent: a refresh updates, never adds.
    let (_, out, _) = run(&["stats", "--db", dbs]);
    assert!(out.contains("torrents:         1"), "{out}");
}

#[test]
fn counts_are_filled_then_refreshed_mio() {
    counts_are_filled_then_refreshed("mio", 180);
}

#[test]
fn counts_are_filled_then_refreshed_tokio() {
    counts_are_filled_then_refreshed("tokio", 190);
}
