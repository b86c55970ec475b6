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

/// `GET path` with an `Authorization` header: the status, or None.
fn http_get_auth(addr: SocketAddr, path: &str, auth: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
         Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_whitespace().nth(1)?.parse().ok()
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            o.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    o
}

#[test]
fn serve_with_a_hash_password_credentials_file() {
    // `hash-password` reads the password on stdin and prints the line.
    let mut hp = Command::new(BIN)
        .args(["serve", "hash-password", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    hp.stdin
        .take()
        .unwrap()
        .write_all(b"open sesame\n")
        .unwrap();
    let out = hp.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("alice:$argon2id$"), "{line}");
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    magnetar_storage::Store::open(magnetar_storage::StoreOptions::new(db.path())).unwrap();
    magnetar_storage::wait_closed(db.path());
    // A malformed file is refused at start, with its line.
    let bad = db.path().join("bad-users");
    std::fs::write(&bad, format!("{line}bob:plaintext\n")).unwrap();
    let (st, _, err) = run(&[
        "serve",
        "--db",
        dbs,
        "--listen",
        "0.0.0.0:0",
        "--basic-auth-file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("--basic-auth-file") && err.contains("line 2: not a PHC string"),
        "{err}"
    );
    // The good file lets the server start and admits alice's password only.
    let users = db.path().join("users");
    std::fs::write(&users, &line).unwrap();
    let listen = free_port();
    let mut serve = Command::new(BIN)
        .args(["serve", "--db", dbs, "--listen", &listen.to_string()])
        .args(["--basic-auth-file", users.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let good = format!("Basic {}", b64("alice:open sesame"));
    let up = wait_until(Duration::from_secs(30), || {
        http_get_auth(listen, "/api/v1/stats", &good).is_some()
    });
    let status = http_get_auth(listen, "/api/v1/stats", &good);
    let wrong = http_get_auth(
        listen,
        "/api/v1/stats",
        &format!("Basic {}", b64("alice:x")),
    );
    let none = http_get(listen, "/api/v1/stats").map(|r| r.0);
    let _ = serve.kill();
    let out = serve.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(up, "serve never answered: {log}");
    assert_eq!(status, Some(200), "{log}");
    assert_eq!(wrong, Some(401), "{log}");
    assert_eq!(none, Some(401), "{log}");
}
