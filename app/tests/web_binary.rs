//! The web server in the real binary: `magnetar crawl --http` serves the pages,
//! the API and /metrics while it crawls, and `magnetar serve` in another process
//! serves the same database while the crawler writes it (LMDB readers in a second
//! process, no `magnetar.lock`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` on a fresh connection: (status, body), or None when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[test]
fn crawl_http_and_serve_beside_it() {
    let w = world(220, 3, "served-crawl.bin", 44_444);
    let db = tempfile::tempdir().unwrap();
    let boot = w.net.addrs[0].to_string();
    let http = free_port();
    let http_s = http.to_string();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        &boot,
        "--allow-private",
        "--duration",
        "120",
        "--http",
        &http_s,
    ];
    let mut p = crawl("mio", db.path(), &args);
    let hash = hex(&w.seeder.info_hash.0);
    let found = |addr: SocketAddr| {
        http_get(addr, "/api/v1/search?q=served+crawl")
            .is_some_and(|(st, body)| st == 200 && body.contains(&hash))
    };
    assert!(
        wait_until(Duration::from_secs(60), || found(http)),
        "the crawler's --http never showed its torrent; log:\n{}",
        p.log()
    );
    // /metrics moved onto it.
    let (st, metrics) = http_get(http, "/metrics").unwrap();
    assert_eq!(st, 200);
    assert!(
        metrics.contains("magnetar_dht_datagrams_in_total"),
        "{metrics}"
    );
    let (st, page) = http_get(http, &format!("/torrent/{hash}")).unwrap();
    assert_eq!(st, 200);
    assert!(page.contains("served-crawl.bin"));

    // A second process serves the same database while the crawler runs.
    let listen = free_port();
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--db",
            db.path().to_str().unwrap(),
            "--listen",
            &listen.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ok = wait_until(Duration::from_secs(30), || found(listen));
    let serve_alive = serve.try_wait().unwrap().is_none();
    if !ok || !serve_alive {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!(
            "`magnetar serve` beside the crawler: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(http_get(listen, "/metrics").unwrap().0, 404);
    let (st, body) = http_get(listen, &format!("/api/v1/torrents/{hash}")).unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("\"name\":\"served-crawl.bin\""), "{body}");
    // The crawler still commits: its session record is written at the end.
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "crawler exit {st:?}; log:\n{}", p.log());
    let (st, stats) = http_get(listen, "/api/v1/stats").unwrap();
    assert_eq!(st, 200);
    assert!(stats.contains("\"torrents\":1"), "{stats}");
    // SIGINT stops the server cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &serve.id().to_string()])
        .status();
    let out = serve.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "serve exit: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    magnetar_storage::wait_closed(db.path());
    let (st, _, err) = run(&["serve", "--db", dbs, "--listen", "0.0.0.0:0"]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("not a loopback address") && err.contains("--token"),
        "{err}"
    );
    let (st, _, err) = run(&[
        "serve",
        "--db",
        dbs,
        "--listen",
        "0.0.0.0:0",
        "--token",
        "short",
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    let (st, _, err) = run(&[
        "crawl",
        "--db",
        dbs,
        "--bind",
        "127.0.0.1:0",
        "--http",
        "0.0.0.0:0",
        "--duration",
        "1",
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("--http-token") && err.contains("--http-no-auth"),
        "{err}"
    );
}
