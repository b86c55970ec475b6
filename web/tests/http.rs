//! The HTTP server over real HTTP on loopback: every endpoint, every bad input,
//! the bounds (header size, URI length, idle and slow clients, connections),
//! access control, and escaping of hostile names.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use magnetar_storage::{magnet_of, to_hex};
use magnetar_web::{Access, CSP};
use sha1::{Digest, Sha1};

fn open_server() -> (Fixture, Server) {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    (f, s)
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn api_search_pages_sorts_and_counts() {
    let (f, s) = open_server();
    let r = get(s.addr, "/api/v1/search?q=ubuntu&limit=10");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["total"], 60);
    assert_eq!(names(&v).len(), 10);

    // Size ascending: the smallest first; pages follow on.
    let a = get(
        s.addr,
        "/api/v1/search?q=ubuntu&sort=size&order=asc&limit=5",
    )
    .json();
    let b = get(
        s.addr,
        "/api/v1/search?q=ubuntu&sort=size&order=asc&limit=5&offset=5",
    )
    .json();
    let sizes: Vec<u64> = a["results"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["results"].as_array().unwrap())
        .map(|r| r["size"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..10).map(|i| 1_000_000 + i * 1_000).collect();
    assert_eq!(sizes, want);

    // Newest first by discovery time, and the other way.
    let newest = get(s.addr, "/api/v1/search?q=ubuntu&sort=discovered&limit=1").json();
    assert!(names(&newest)[0].starts_with("ubuntu 59 "));
    let oldest = get(
        s.addr,
        "/api/v1/search?q=ubuntu&sort=discovered&order=asc&limit=1",
    )
    .json();
    assert!(names(&oldest)[0].starts_with("ubuntu 00 "));

    // Fields of a hit match the database.
    let one = get(s.addr, "/api/v1/search?q=tree").json();
    let rec = f.record("tree album");
    let hit = &one["results"][0];
    assert_eq!(hit["infohash"], to_hex(&rec.infohash));
    assert_eq!(hit["size"], rec.total_size);
    assert_eq!(hit["seeders"], 12);
    assert_eq!(hit["magnet"], magnet_of(&rec));

    // No match: total 0, no results.
    let none = get(s.addr, "/api/v1/search?q=nothingmatchesthis").json();
    assert_eq!(none["total"], 0);
    assert_eq!(names(&none).len(), 0);
}

#[test]
fn api_search_filters_and_sorts_by_seeders_and_files() {
    let (_f, s) = open_server();
    let sizes = |v: &serde_json::Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["size"].as_u64().unwrap())
            .collect()
    };
    // Size range, inclusive at both ends: ubuntu 10..=19.
    let v = get(
        s.addr,
        "/api/v1/search?q=ubuntu&min_size=1010000&max_size=1019000&sort=size&order=asc&limit=100",
    )
    .json();
    assert_eq!(v["total"], 10, "{v}");
    assert_eq!(
        sizes(&v),
        (10..20)
            .map(|i| 1_000_000 + i * 1_000)
            .collect::<Vec<u64>>()
    );
    // Discovery time: at or after `after`, before `before` (exclusive): ubuntu 50..=54.
    let v = get(
        s.addr,
        &format!(
            "/api/v1/search?q=ubuntu&after={}&before={}&sort=discovered&order=asc&limit=100",
            T0 + 50 * 60,
            T0 + 55 * 60
        ),
    )
    .json();
    assert_eq!(v["total"], 5, "{v}");
    assert!(names(&v)[0].starts_with("ubuntu 50 "), "{v}");
    // Files: the hostile torrents hold two files, the TV episode one; both orders.
    let by_files = |order: &str| -> Vec<u64> {
        let v = get(
            s.addr,
            &format!("/api/v1/search?q=mkv&sort=files&order={order}&limit=100"),
        )
        .json();
        assert_eq!(v["total"], (HOSTILE.len() + 1) as u64, "{v}");
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["files"].as_u64().unwrap())
            .collect()
    };
    let desc = by_files("desc");
    assert_eq!(desc.first(), Some(&2));
    assert_eq!(desc.last(), Some(&1));
    let asc = by_files("asc");
    assert_eq!(asc.first(), Some(&1));
    // Seeders: the one torrent with known counts comes first, both ways (unknown last).
    for order in ["desc", "asc"] {
        let v = get(
            s.addr,
            &format!("/api/v1/search?q=tree&sort=seeders&order={order}"),
        )
        .json();
        assert_eq!(v["results"][0]["seeders"], 12, "{v}");
    }
}

#[test]
fn api_search_rejects_bad_parameters_with_json_messages() {
    let (_f, s) = open_server();
    let long = "a".repeat(257);
    for (path, needle) in [
        ("/api/v1/search", "`q` is required"),
        ("/api/v1/search?q=", "`q` is required"),
        ("/api/v1/search?q=x&limit=0", "`limit`"),
        ("/api/v1/search?q=x&limit=101", "`limit`"),
        ("/api/v1/search?q=x&limit=-1", "`limit`"),
        (
            "/api/v1/search?q=x&offset=9999999999999999999999",
            "`offset`",
        ),
        ("/api/v1/search?q=x&offset=9990&limit=20", "`offset`"),
        ("/api/v1/search?q=x&sort=random", "`sort`"),
        ("/api/v1/search?q=x&order=sideways", "`order`"),
        // The store's own refusals arrive as 400s with its message.
        ("/api/v1/search?q=-x", "invalid search query"),
        (
            &format!("/api/v1/search?q={}", enc(&"w ".repeat(40))),
            "invalid search query",
        ),
        ("/api/v1/search?q=x&min_size=ten", "`min_size`"),
        (&format!("/api/v1/search?q={long}"), "256 bytes"),
        ("/api/v1/recent?limit=1000", "`limit`"),
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
}

#[test]
fn api_torrent_has_every_field_and_the_file_tree() {
    let (f, s) = open_server();
    let input = f.by_name("tree album").clone();
    let rec = f.record("tree album");
    let hex = to_hex(&input.infohash);
    let r = get(s.addr, &format!("/api/v1/torrents/{hex}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["infohash"], hex);
    assert_eq!(v["hash_kind"], "v1");
    assert_eq!(v["name"], "tree album");
    assert_eq!(v["size"], 600);
    assert_eq!(v["piece_length"], rec.piece_length);
    assert_eq!(v["piece_count"], rec.piece_count);
    assert_eq!(v["file_count"], 3);
    assert_eq!(v["private"], false);
    assert_eq!(v["source"], "<i>src</i>");
    assert_eq!(v["discovered_at"], input.discovered_at);
    assert_eq!(v["last_seen_at"], rec.last_seen_at);
    assert_eq!(v["seeders"], 12);
    assert_eq!(v["leechers"], 3);
    assert_eq!(v["scraped_at"], input.scraped_at.unwrap());
    assert_eq!(v["has_info"], true);
    assert_eq!(v["magnet"], magnet_of(&rec));
    assert_eq!(v["sources"], serde_json::json!(["announce", "sample"]));
    assert_eq!(v["torrent_url"], format!("/api/v1/torrents/{hex}.torrent"));
    let paths: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "disc 1/01 intro.flac",
            "disc 1/02 song.flac",
            "disc 2/extras/booklet.pdf"
        ]
    );
    // The tree: two directories, the second nested.
    let tree = v["tree"].as_array().unwrap();
    assert_eq!(tree[0]["name"], "disc 1");
    assert_eq!(tree[0]["size"], 300);
    assert_eq!(tree[0]["children"].as_array().unwrap().len(), 2);
    assert_eq!(tree[1]["children"][0]["name"], "extras");
    assert_eq!(tree[1]["children"][0]["children"][0]["name"], "booklet.pdf");
}

#[test]
fn api_torrent_file_is_the_kept_info_dict() {
    let (f, s) = open_server();
    let input = f.by_name("tree album");
    let hex = to_hex(&input.infohash);
    let r = get(s.addr, &format!("/api/v1/torrents/{hex}.torrent"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-bittorrent"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .contains("tree album.torrent"));
    let info = input.info.as_ref().unwrap();
    assert!(r.body.starts_with(b"d4:info") && r.body.ends_with(b"e"));
    let inner = &r.body[7..r.body.len() - 1];
    assert_eq!(inner, &info[..]);
    let h: [u8; 20] = Sha1::digest(inner).into();
    assert_eq!(h, input.infohash);

    // Not kept: 404 with a reason; unknown and malformed infohashes.
    let nk = to_hex(&f.by_name("no info kept").infohash);
    let r = get(s.addr, &format!("/api/v1/torrents/{nk}.torrent"));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not kept"));
    let unknown = "00".repeat(20);
    for p in [
        format!("/api/v1/torrents/{unknown}"),
        format!("/api/v1/torrents/{unknown}.torrent"),
    ] {
        let r = get(s.addr, &p);
        assert_eq!(r.status, 404, "{p}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no torrent"));
    }
    for bad in [
        "xyz",
        "0123",
        &"g".repeat(40),
        &"0".repeat(41),
        "%3Cscript%3E",
    ] {
        let r = get(s.addr, &format!("/api/v1/torrents/{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("40 hexadecimal"));
    }
}

#[test]
fn api_recent_and_stats_match_the_database() {
    let (f, s) = open_server();
    let v = get(s.addr, "/api/v1/recent?limit=3").json();
    let want: Vec<String> = f
        .store
        .recent(3)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names(&v), want);
    assert_eq!(names(&v)[0], "no info kept");
    let v2 = get(s.addr, "/api/v1/recent?limit=2&offset=1").json();
    assert_eq!(names(&v2), want[1..3]);

    let st = get(s.addr, "/api/v1/stats").json();
    assert_eq!(st["totals"]["torrents"], f.inputs.len());
    let with_info = f.inputs.iter().filter(|t| t.info.is_some()).count();
    assert_eq!(st["totals"]["torrents_with_info"], with_info);
    assert_eq!(
        st["discoveries_per_hour"]["counts"]
            .as_array()
            .unwrap()
            .len(),
        48
    );
    assert!(st["funnel"].is_array());
}

#[test]
fn stats_count_activity_per_hour_funnel_reasons_and_clients() {
    let f = fixture();
    let now = magnetar_web::index::now_secs();
    let (per_hour, requests, failed) = add_activity(&f.store, now);
    let s = start(f.store.clone(), Access::Open, test_limits());
    let v = get(s.addr, "/api/v1/stats").json();
    let d = &v["discoveries_per_hour"];
    let counts: Vec<u64> = d["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let start = d["start"].as_u64().unwrap();
    assert_eq!(start % 3600, 0);
    // Each torrent lands in the bucket of its hour.
    let mut want = vec![0u64; counts.len()];
    for (k, n) in per_hour {
        for i in 0..n {
            let t = now - k * 3600 + i;
            want[((t - start) / 3600) as usize] += 1;
        }
    }
    assert_eq!(counts, want);
    let r = &v["requests_per_hour"];
    let sum = |k: &str| -> u64 {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("counts"), requests);
    assert_eq!(sum("failed"), failed);
    assert_eq!(v["funnel"][0]["count"], 1000);
    assert_eq!(v["funnel"][2]["count"], 15);
    let reasons: u64 = v["failure_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(reasons, failed);
    assert_eq!(v["top_clients"].as_array().unwrap().len(), 2);
    // The page draws them, with the client name as text.
    let page = get(s.addr, "/stats").text();
    assert!(page.contains("&lt;b&gt;evil&lt;/b&gt; 1.0"));
    assert!(!page.contains("<b>evil"));
    assert!(page.contains("timeout"));
}

#[test]
fn unknown_endpoints_methods_and_metrics() {
    let (_f, s) = open_server();
    let r = get(s.addr, "/api/v1/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(get(s.addr, "/nope").status, 404);
    let r = request(
        s.addr,
        "POST",
        "/api/v1/search?q=x",
        &[("Content-Length", "0")],
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(s.addr, "DELETE", "/api/v1/torrents/x", &[]);
    assert_eq!(r.status, 405);
    let r = get(s.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "# TYPE magnetar_test gauge\nmagnetar_test 1\n");
}

#[test]
fn pages_escape_hostile_names_and_forbid_scripts() {
    let (f, s) = open_server();
    for path in [
        "/search?q=hostile".to_string(),
        "/recent".to_string(),
        format!("/torrent/{}", to_hex(&f.by_name(HOSTILE[0]).infohash)),
        format!("/torrent/{}", to_hex(&f.by_name(HOSTILE[1]).infohash)),
        format!("/torrent/{}", to_hex(&f.by_name(HOSTILE[3]).infohash)),
    ] {
        let r = get(s.addr, &path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let body = r.text();
        assert!(!body.contains("<script"), "{path}: a script element");
        assert!(!body.contains("<img"), "{path}: an img element");
        assert!(!body.contains("<svg onload"), "{path}");
        assert!(!body.contains("<b>bold"), "{path}");
        assert!(body.contains("&lt;"), "{path}: escaped text expected");
    }
    let body = get(s.addr, "/search?q=hostile").text();
    assert!(body.contains("&lt;script&gt;alert('pwned')&lt;/script&gt; hostile one"));
    assert!(body.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt; hostile two"));
    // The CSP allows no script source at all.
    assert!(!CSP.contains("script-src") && CSP.contains("default-src 'none'"));
}

#[test]
fn search_page_sorts_pages_and_stays_small() {
    let (f, s) = open_server();
    let r = get(s.addr, "/search?q=ubuntu");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.contains("1–50 of 60 matches"), "{body}");
    // 50 rows, each with a magnet link.
    assert_eq!(body.matches("href=\"magnet:?").count(), 50);
    assert!(body.contains("rel=\"next\""));
    assert!(
        r.body.len() <= 50 * 1024,
        "search page is {} bytes, over 50 KB",
        r.body.len()
    );
    let p2 = get(s.addr, "/search?q=ubuntu&offset=50").text();
    assert!(p2.contains("51–60 of 60 matches"));
    assert!(p2.contains("rel=\"prev\""));
    let sized = get(s.addr, "/search?q=ubuntu&sort=size&order=asc").text();
    let first = sized.find("ubuntu 00 ").unwrap();
    let second = sized.find("ubuntu 01 ").unwrap();
    assert!(first < second);
    // Compressed on request.
    let gz = request(
        s.addr,
        "GET",
        "/search?q=ubuntu",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < r.body.len() / 2);
    // A bad parameter is a 400 page.
    assert_eq!(get(s.addr, "/search?q=x&limit=5000").status, 400);
    let _ = f;
}

#[test]
fn torrent_page_has_fields_tree_magnet_and_download() {
    let (f, s) = open_server();
    let rec = f.record("tree album");
    let hex = to_hex(&rec.infohash);
    let body = get(s.addr, &format!("/torrent/{hex}")).text();
    assert!(body.contains(&hex));
    assert!(body.contains("<details"));
    assert!(body.contains("disc 1/"));
    assert!(body.contains("booklet.pdf"));
    assert!(body.contains("12 / 3"));
    assert!(body.contains(&format!("/api/v1/torrents/{hex}.torrent")));
    let magnet = magnet_of(&rec).replace('&', "&amp;");
    assert!(body.contains(&magnet), "{magnet}");
    assert!(body.contains("&lt;i&gt;src&lt;/i&gt;"));
    // Without a kept info dict there is no download link.
    let nk = to_hex(&f.by_name("no info kept").infohash);
    let body = get(s.addr, &format!("/torrent/{nk}")).text();
    assert!(!body.contains(".torrent\""));
    assert_eq!(
        get(s.addr, &format!("/torrent/{}", "00".repeat(20))).status,
        404
    );
    assert_eq!(get(s.addr, "/torrent/nothex").status, 400);
}

#[test]
fn stats_page_draws_svg_charts() {
    // Nothing in the window yet: said in words, no empty chart.
    let (_f, s) = open_server();
    let body = get(s.addr, "/stats").text();
    assert_eq!(body.matches("None in this window.").count(), 2, "{body}");
    drop(s);
    // With activity: five charts (discoveries, requests, funnel, reasons, clients).
    let f = fixture();
    add_activity(&f.store, magnetar_web::index::now_secs());
    let s = start(f.store.clone(), Access::Open, test_limits());
    let r = get(s.addr, "/stats");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert_eq!(body.matches("<svg").count(), 5, "{body}");
    assert!(body.contains("Torrents discovered per hour"));
    assert!(!body.contains("None in this window."));
    let css = get(s.addr, "/static/style.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

#[test]
fn oversized_headers_and_targets_are_refused() {
    let (_f, s) = open_server();
    let big = "x".repeat(20 * 1024);
    let r = request(s.addr, "GET", "/api/v1/stats", &[("X-Big", &big)]);
    assert_eq!(r.status, 431);
    let long = "a".repeat(3000);
    let r = get(s.addr, &format!("/api/v1/search?q={long}"));
    assert_eq!(r.status, 414);
    // A body on a GET is refused past 1 KiB.
    let mut c = connect(s.addr);
    let body = "y".repeat(4096);
    write!(
        c,
        "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = read_response(&mut c).unwrap();
    // Declared too large: refused before any handler runs.
    assert_eq!(r.status, 413);
}

#[test]
fn idle_and_slow_clients_are_cut_off() {
    let (_f, s) = open_server();
    // Idle: connects and sends nothing. The server closes the connection after the
    // header timeout (1 s here); the read ends with EOF or a reset, not our 20 s
    // read timeout.
    let mut idle = connect(s.addr);
    let mut buf = [0u8; 256];
    let n = match idle.read(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "the idle connection was not cut off: {e}"
            );
            0
        }
    };
    // hyper may answer 408 before closing; either way no request was served.
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");

    // Slowloris: a header started, never finished.
    let mut slow = connect(s.addr);
    slow.write_all(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nX-A: ")
        .unwrap();
    let n = match slow.read(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "the slow connection was not cut off: {e}"
            );
            0
        }
    };
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    // Keep-alive idle after a request is cut off too.
    let mut ka = connect(s.addr);
    ka.write_all(b"GET /api/v1/recent?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut ka).unwrap();
    assert_eq!(r.status, 200);
    let n = ka.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn connections_past_the_bound_are_closed() {
    let f = fixture();
    let mut limits = test_limits();
    limits.max_connections = 3;
    limits.header_timeout = Duration::from_secs(30);
    let s = start(f.store.clone(), Access::Open, limits);
    // Three keep-alive connections, each certainly accepted (it got an answer).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect(s.addr);
        c.write_all(b"GET /api/v1/recent?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut c).unwrap().status, 200);
        held.push(c);
    }
    // The fourth is closed without an answer, and counted.
    let mut c = connect(s.addr);
    let _ = c.write_all(b"GET /api/v1/recent?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(
        s.counters
            .refused_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The held ones still work.
    held[0]
        .write_all(b"GET /api/v1/recent?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut held[0]).unwrap().status, 200);
}

#[test]
fn a_token_guards_every_route_but_the_stylesheet() {
    let f = fixture();
    let token = "0123456789abcdef-secret";
    let access = Access::decide("0.0.0.0:8080".parse().unwrap(), Some(token), false).unwrap();
    let s = start(f.store.clone(), access, test_limits());
    for path in [
        "/",
        "/search?q=ubuntu",
        "/api/v1/stats",
        "/torznab/api?t=caps",
        "/feed",
        "/metrics",
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    assert_eq!(get(s.addr, "/static/style.css").status, 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        request(
            s.addr,
            "GET",
            "/api/v1/stats",
            &[("Authorization", &bearer)]
        )
        .status,
        200
    );
    let wrong = "Bearer 0123456789abcdef-wrong";
    assert_eq!(
        request(s.addr, "GET", "/api/v1/stats", &[("Authorization", wrong)]).status,
        401
    );
    // Basic auth: any user, the token as password ("u:<token>" in base64).
    let basic = format!("Basic {}", b64(&format!("u:{token}")));
    assert_eq!(
        request(
            s.addr,
            "GET",
            "/search?q=ubuntu",
            &[("Authorization", &basic)]
        )
        .status,
        200
    );
    assert_eq!(
        get(s.addr, &format!("/torznab/api?t=caps&apikey={token}")).status,
        200
    );
    assert_eq!(get(s.addr, "/torznab/api?t=caps&apikey=nope").status, 401);
}

#[test]
fn non_loopback_needs_a_token_or_no_auth() {
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
    let e = Access::decide(any, None, false).unwrap_err();
    assert_eq!(e, magnetar_web::AccessError::NeedsToken(any));
    assert!(e.message("--token", "--no-auth").contains("give --token"));
    assert!(matches!(Access::decide(any, None, true), Ok(Access::Open)));
    assert!(matches!(Access::decide(lo, None, false), Ok(Access::Open)));
    assert!(matches!(Access::decide(lo6, None, false), Ok(Access::Open)));
    assert!(Access::decide(any, Some("short"), false).is_err());
    assert!(matches!(
        Access::decide(lo, Some("a-long-enough-token"), false),
        Ok(Access::Token(_))
    ));
}

#[test]
fn reads_run_while_a_writer_commits() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let store = f.store.clone();
    let writer = std::thread::spawn(move || {
        let mut rng = magnetar_storage::synth::Synth::new(3);
        for b in 0..20u64 {
            let ops: Vec<magnetar_storage::Op> = (0..200)
                .map(|i| {
                    magnetar_storage::Op::Torrent(Box::new(
                        rng.torrent(T0 + 30_000 + b * 1000 + i, false),
                    ))
                })
                .collect();
            store.apply_batch(&ops).unwrap();
        }
    });
    let mut last = 0u64;
    for _ in 0..40 {
        let v = get(s.addr, "/api/v1/stats").json();
        let n = v["totals"]["torrents"].as_u64().unwrap();
        assert!(n >= last);
        last = n;
        assert_eq!(
            get(s.addr, "/api/v1/search?q=ubuntu&limit=1").json()["total"],
            60
        );
    }
    writer.join().unwrap();
    let n = get(s.addr, "/api/v1/recent?limit=1").json();
    assert_eq!(names(&n).len(), 1);
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut o = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// A server guarded by a credentials file of one user, `alice`, made by the same
/// function `magnetar serve hash-password` prints with.
fn users_server(password: &str) -> (Fixture, Server, Access) {
    let f = fixture();
    let line = magnetar_web::basic::credential_line("alice", password).unwrap();
    assert!(line.starts_with("alice:$argon2id$v=19$"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, format!("# magnetar users\n\n{line}\n")).unwrap();
    let users = magnetar_web::Credentials::load(&path).unwrap();
    // Credentials satisfy the non-loopback rule as a token does.
    let access =
        Access::decide_with("0.0.0.0:8080".parse().unwrap(), None, Some(users), false).unwrap();
    let s = start(f.store.clone(), access.clone(), test_limits());
    (f, s, access)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

#[test]
fn basic_auth_credentials_are_checked_with_argon2_over_http() {
    let pw = "correct horse battery staple";
    let (_f, s, access) = users_server(pw);
    let counts = || access.auth_counts().unwrap();
    // Nothing presented: 401 with the challenge, no argon2 run.
    let r = get(s.addr, "/api/v1/stats");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(counts().argon2_runs, 0);
    assert_eq!(get(s.addr, "/static/style.css").status, 200);
    // The right password.
    let good = basic("alice", pw);
    let r = request(s.addr, "GET", "/api/v1/stats", &[("Authorization", &good)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counts().argon2_runs, 1);
    // Again: from the cache, without argon2.
    let r = request(
        s.addr,
        "GET",
        "/search?q=ubuntu",
        &[("Authorization", &good)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(counts().argon2_runs, 1);
    assert_eq!(counts().cache_hits, 1);
    // A wrong password, an unknown user, the password as a bearer token: 401.
    for auth in [
        basic("alice", "correct horse battery stapler"),
        basic("bob", pw),
        format!("Bearer {pw}"),
    ] {
        let r = request(s.addr, "GET", "/api/v1/stats", &[("Authorization", &auth)]);
        assert_eq!(r.status, 401, "{auth}");
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Basic"),
            "{auth}"
        );
    }
    let c = counts();
    assert_eq!(
        c,
        magnetar_web::AuthCounts {
            accepted: 2,
            cache_hits: 1,
            // The right password once, the wrong one, and the unknown user (checked
            // against a hash all the same).
            argon2_runs: 3,
            // No credentials, wrong password, unknown user, bearer.
            rejected: 4,
            busy: 0,
        }
    );
}

#[test]
fn basic_auth_and_a_token_together_each_open_the_server() {
    let f = fixture();
    let line = magnetar_web::basic::credential_line("alice", "pw-of-alice").unwrap();
    let users = magnetar_web::Credentials::parse(&line).unwrap();
    let token = "0123456789abcdef-secret";
    let access = Access::decide_with(
        "0.0.0.0:8080".parse().unwrap(),
        Some(token),
        Some(users),
        false,
    )
    .unwrap();
    let s = start(f.store.clone(), access, test_limits());
    let bearer = format!("Bearer {token}");
    for auth in [basic("alice", "pw-of-alice"), bearer, basic("x", token)] {
        let r = request(s.addr, "GET", "/api/v1/stats", &[("Authorization", &auth)]);
        assert_eq!(r.status, 200, "{auth}");
    }
    assert_eq!(
        get(s.addr, &format!("/api/v1/stats?apikey={token}")).status,
        200
    );
    let r = request(
        s.addr,
        "GET",
        "/api/v1/stats",
        &[("Authorization", &basic("alice", "nope"))],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn a_malformed_credentials_file_is_refused_with_its_line() {
    let good = magnetar_web::basic::credential_line("alice", "pw").unwrap();
    let phc = good.split_once(':').unwrap().1;
    let cases = [
        (format!("{good}\nbob\n"), "line 2: expected USER:PHC-HASH"),
        (format!("# c\n\nbob:{phc}x$\n"), "line 3: not a PHC string"),
        (
            "carol:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW\n".into(),
            "line 1: not a PHC string",
        ),
        (
            "dave:$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E\n".into(),
            "line 1: the hash is scrypt, not argon2id",
        ),
        (format!("{good}\n{good}\n"), "line 2: user \"alice\" is given twice"),
        (format!(":{phc}\n"), "line 1: the user name is empty"),
        (format!("al ice:{phc}\n"), "line 1: the user name contains a space"),
        (
            format!("alice:{}\n", phc.replace("m=19456", "m=1")),
            "line 1: bad argon2 parameters",
        ),
        ("# nobody\n\n".into(), "no USER:PHC-HASH line"),
    ];
    for (text, want) in cases {
        let e = magnetar_web::Credentials::parse(&text).unwrap_err();
        assert!(e.starts_with(want), "{text:?}: {e}");
    }
    let e =
        magnetar_web::Credentials::load(std::path::Path::new("/nonexistent/users")).unwrap_err();
    assert!(e.starts_with("/nonexistent/users: cannot read"), "{e}");
    // The refusal names the credentials flag beside the token's.
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let e = Access::decide_with(any, None, None, false).unwrap_err();
    let m = e.message_with("--token", Some("--basic-auth-file"), "--no-auth");
    assert!(m.contains("--basic-auth-file"), "{m}");
}

#[test]
fn hash_password_output_verifies_only_its_password() {
    let line = magnetar_web::basic::credential_line("alice", "s3cret:with colon").unwrap();
    let (user, phc) = line.split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(magnetar_web::basic::verify("s3cret:with colon", phc));
    assert!(!magnetar_web::basic::verify("s3cret:with colo", phc));
    // Two lines for one password differ (random salts).
    let again = magnetar_web::basic::credential_line("alice", "s3cret:with colon").unwrap();
    assert_ne!(line, again);
    assert!(magnetar_web::basic::credential_line("a:b", "x").is_err());
    assert!(magnetar_web::basic::credential_line("alice", "").is_err());
}
