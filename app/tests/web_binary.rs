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
    // Its own /metrics: the server's counters, no crawler's.
    let (st, m) = http_get(listen, "/metrics").unwrap();
    assert_eq!(st, 200);
    assert!(
        m.contains("magnetar_http_connections_total") && !m.contains("magnetar_dht_"),
        "{m}"
    );
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
    // serve's /metrics counts the two refusals (rendered once a second).
    let mut metrics = String::new();
    let counted = wait_until(Duration::from_secs(30), || {
        metrics = http_get_as(listen, "/metrics", Some(&good))
            .map(|r| r.1)
            .unwrap_or_default();
        refused(&metrics, "bad_password") == Some(1)
    });
    let _ = serve.kill();
    let out = serve.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(up, "serve never answered: {log}");
    assert_eq!(status, Some(200), "{log}");
    assert_eq!(wrong, Some(401), "{log}");
    assert_eq!(none, Some(401), "{log}");
    assert!(counted, "{metrics}");
    assert_eq!(refused(&metrics, "missing"), Some(1), "{metrics}");
    assert_eq!(refused(&metrics, "unknown_user"), Some(0), "{metrics}");
}

/// `GET path` with an optional `Authorization` header: (status, body), or None.
fn http_get_as(addr: SocketAddr, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the sample `name{reason="…"}` in a Prometheus text.
fn refused(metrics: &str, reason: &str) -> Option<u64> {
    let key = format!("magnetar_http_auth_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// "Works against a live crawl": a crawler with `--http` (a token and a
/// credentials file) stores a torrent announced to it; its search page, torrent
/// page, API and Torznab show it while the crawl goes on storing a second one,
/// which shows up too; every refused request is counted by reason on `/metrics`.
#[test]
fn a_live_crawl_serves_search_torrent_page_and_torznab_while_it_writes() {
    use magnetar_core::testkit::InfoSpec;
    let net = DhtNet::start(2, 230, 230_000);
    let first = Seeder::start(
        [127, 0, 0, 232],
        &InfoSpec::single("livefirst.iso", 123_456),
    );
    let second = Seeder::start(
        [127, 0, 0, 233],
        &InfoSpec::single("livesecond.iso", 65_432),
    );
    let port = std::net::UdpSocket::bind("127.0.0.234:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let crawler: SocketAddr = ([127, 0, 0, 234], port).into();
    let db = tempfile::tempdir().unwrap();
    let token = "live-crawl-token-0123456789";
    let bearer = format!("Bearer {token}");
    let users = db.path().join("users");
    let line = magnetar_web::basic::credential_line("alice", "alice's password").unwrap();
    std::fs::write(&users, format!("{line}\n")).unwrap();
    let http = free_port();
    let (bind, boot, http_s) = (
        crawler.to_string(),
        net.addrs[0].to_string(),
        http.to_string(),
    );
    let mut p = crawl(
        "mio",
        db.path(),
        &[
            "--bind",
            &bind,
            "--bootstrap",
            &boot,
            "--allow-private",
            "--duration",
            "300",
            "--status-interval",
            "1",
            "--http",
            &http_s,
            "--http-token",
            token,
            "--http-basic-auth-file",
            users.to_str().unwrap(),
        ],
    );
    let get = |path: &str| http_get_as(http, path, Some(&bearer));
    let searched = |q: &str, ih: &str| {
        get(&format!("/api/v1/search?q={q}"))
            .is_some_and(|(st, body)| st == 200 && body.contains(ih))
    };
    announce(crawler, first.info_hash, first.addr);
    let h1 = hex(&first.info_hash.0);
    assert!(
        wait_until(Duration::from_secs(60), || searched("livefirst", &h1)),
        "the first torrent never showed up; log:\n{}",
        p.log()
    );
    // The crawl goes on: a second torrent is announced, and fetched and stored
    // while the first is read.
    announce(crawler, second.info_hash, second.addr);
    let (st, page) = get("/search?q=livefirst").unwrap();
    assert_eq!(st, 200);
    assert!(
        page.contains("livefirst.iso") && page.contains(&h1),
        "{page}"
    );
    let (st, page) = get(&format!("/torrent/{h1}")).unwrap();
    assert_eq!(st, 200);
    assert!(page.contains("livefirst.iso") && page.contains("magnet:?xt=urn:btih:"));
    let (st, body) = get(&format!("/api/v1/torrents/{h1}")).unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("\"size\":123456"), "{body}");
    // Torznab, with the token as `apikey` (as Prowlarr sends it).
    let torznab = |q: &str| {
        http_get_as(
            http,
            &format!("/torznab/api?t=search&q={q}&apikey={token}"),
            None,
        )
    };
    let (st, xml) = torznab("livefirst").unwrap();
    assert_eq!(st, 200);
    assert!(
        xml.contains("<title>livefirst.iso</title>")
            && xml.contains(&format!("name=\"infohash\" value=\"{h1}\"")),
        "{xml}"
    );
    // Refusals, one of each kind that a client can cause.
    let alice = |pw: &str| format!("Basic {}", b64(&format!("alice:{pw}")));
    let api = "/api/v1/stats";
    assert_eq!(http_get_as(http, api, None).unwrap().0, 401);
    assert_eq!(
        http_get_as(http, api, Some("Bearer not-the-token-at-all"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http_get_as(http, api, Some(&format!("Basic {}", b64("bob:x"))))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http_get_as(http, api, Some(&alice("wrong"))).unwrap().0,
        401
    );
    assert_eq!(
        http_get_as(http, api, Some(&alice("alice's password")))
            .unwrap()
            .0,
        200
    );
    // The second torrent, stored while we read, is served too.
    let h2 = hex(&second.info_hash.0);
    assert!(
        wait_until(Duration::from_secs(60), || searched("livesecond", &h2)),
        "the second torrent never showed up; log:\n{}",
        p.log()
    );
    let (st, xml) = torznab("livesecond").unwrap();
    assert_eq!(st, 200);
    assert!(xml.contains(&h2), "{xml}");
    // The crawler's /metrics (rendered each status interval) counts each refusal.
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(30), || {
        last = get("/metrics").map(|r| r.1).unwrap_or_default();
        refused(&last, "bad_password") == Some(1)
    });
    assert!(counted, "{last}");
    for (reason, n) in [
        ("missing", 1),
        ("wrong_token", 1),
        ("unknown_user", 1),
        ("bad_password", 1),
        ("busy", 0),
    ] {
        assert_eq!(refused(&last, reason), Some(n), "{reason}: {last}");
    }
    assert!(
        last.contains("magnetar_http_connections_refused_total 0"),
        "{last}"
    );
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "crawler exit {st:?}; log:\n{}", p.log());
}
