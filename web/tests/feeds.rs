//! The RSS feed and Torznab answers, parsed by independent parsers (Python's
//! `feedparser`, installed by `.ci/test`, and `xml.etree` for the
//! `torznab:attr` elements feedparser does not list), compared with the database.

mod common;

use std::process::Command;

use common::*;
use magnetar_storage::{magnet_of, to_hex, TorrentRecord};
use magnetar_web::Access;
use serde_json::Value;

const PARSER: &str = r#"
import email.utils, json, sys
import xml.etree.ElementTree as ET
import feedparser
raw = open(sys.argv[1], 'rb').read()
d = feedparser.parse(raw)
out = {"bozo": int(d.bozo), "bozo_exception": str(d.get("bozo_exception", "")),
       "version": d.version, "title": d.feed.get("title"), "entries": []}
for e in d.entries:
    enc = e.get("enclosures", [{}])
    out["entries"].append({
        "title": e.get("title"), "link": e.get("link"), "id": e.get("id"),
        "published": e.get("published"),
        "published_unix": email.utils.mktime_tz(email.utils.parsedate_tz(e.get("published"))),
        "enclosure": enc[0].get("href") if enc else None,
        "length": enc[0].get("length") if enc else None,
    })
ns = {"torznab": "http://torznab.com/schemas/2015/feed"}
root = ET.fromstring(raw)
out["attrs"] = [{a.get("name"): a.get("value") for a in item.findall("torznab:attr", ns)}
                for item in root.iter("item")]
resp = root.find("channel/torznab:response", ns)
out["response"] = dict(resp.attrib) if resp is not None else None
print(json.dumps(out))
"#;

fn parse(xml: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.xml");
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PARSER)
        .arg(&path)
        .output()
        .expect("python3 (with feedparser: .ci/test installs it)");
    assert!(
        out.status.success(),
        "the parser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every entry's fields equal the stored record with that infohash.
fn check_entries(f: &Fixture, v: &Value) -> Vec<TorrentRecord> {
    assert_eq!(v["bozo"], 0, "not well-formed: {}", v["bozo_exception"]);
    assert_eq!(v["version"], "rss20");
    let mut recs = Vec::new();
    for e in v["entries"].as_array().unwrap() {
        let ih = magnetar_storage::parse_infohash_hex(e["id"].as_str().unwrap()).unwrap();
        let rec = f
            .store
            .record(&ih)
            .unwrap()
            .expect("entry of a stored torrent");
        // feedparser drops the characters XML cannot carry, as we do.
        let want_title: String = rec.name.chars().filter(|c| *c >= ' ').collect();
        assert_eq!(e["title"], want_title);
        assert_eq!(e["link"], magnet_of(&rec));
        assert_eq!(e["enclosure"], magnet_of(&rec));
        assert_eq!(e["length"], rec.total_size.to_string());
        assert_eq!(e["published_unix"], rec.discovered_at);
        recs.push(rec);
    }
    recs
}

#[test]
fn rss_feed_parses_and_matches_the_database() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let r = get(s.addr, "/feed");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/rss+xml"));
    let v = parse(&r.body);
    let recs = check_entries(&f, &v);
    let want: Vec<String> = f
        .store
        .recent(50)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(recs.into_iter().map(|r| r.name).collect::<Vec<_>>(), want);

    // For a query: hostile names come through as text.
    let v = parse(&get(s.addr, "/feed?q=hostile").body);
    let recs = check_entries(&f, &v);
    assert_eq!(recs.len(), HOSTILE.len());
    assert!(v["title"].as_str().unwrap().contains("hostile"));
    assert_eq!(
        get(s.addr, &format!("/feed?q={}", "a".repeat(300))).status,
        400
    );
}

#[test]
fn torznab_caps_search_tvsearch_movie_and_paging() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let caps = get(s.addr, "/torznab/api?t=caps");
    assert_eq!(caps.status, 200);
    let text = caps.text();
    assert!(text.contains("<caps>") && text.contains("tv-search available=\"yes\""));
    assert!(text.contains("category id=\"8000\""));

    // search, with paging: two pages of 30 make the 60 matches, newest first.
    let a = parse(&get(s.addr, "/torznab/api?t=search&q=ubuntu&limit=30").body);
    let b = parse(&get(s.addr, "/torznab/api?t=search&q=ubuntu&limit=30&offset=30").body);
    assert_eq!(a["response"]["total"], "60");
    assert_eq!(b["response"]["offset"], "30");
    let mut all = check_entries(&f, &a);
    all.extend(check_entries(&f, &b));
    assert_eq!(all.len(), 60);
    assert!(all
        .windows(2)
        .all(|w| w[0].discovered_at >= w[1].discovered_at));
    // Attributes match the records.
    for (attrs, rec) in a["attrs"].as_array().unwrap().iter().zip(&all) {
        assert_eq!(attrs["infohash"], to_hex(&rec.infohash));
        assert_eq!(attrs["size"], rec.total_size.to_string());
        assert_eq!(attrs["files"], rec.file_count.to_string());
        assert_eq!(attrs["magneturl"], magnet_of(rec));
        assert_eq!(attrs["category"], "8000");
    }

    // Seeders and peers where a scrape is known.
    let t = parse(&get(s.addr, "/torznab/api?t=search&q=tree").body);
    assert_eq!(t["attrs"][0]["seeders"], "12");
    assert_eq!(t["attrs"][0]["peers"], "15");

    // tvsearch: season and episode narrow the query.
    let tv = parse(&get(s.addr, "/torznab/api?t=tvsearch&q=some+show&season=1&ep=2").body);
    let recs = check_entries(&f, &tv);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name, "Some Show S01E02 1080p");
    let tv = parse(&get(s.addr, "/torznab/api?t=tvsearch&q=some+show&season=1").body);
    assert_eq!(check_entries(&f, &tv).len(), 1);
    let tv = parse(&get(s.addr, "/torznab/api?t=tvsearch&q=some+show&season=2").body);
    assert_eq!(check_entries(&f, &tv).len(), 0);
    let mv = parse(&get(s.addr, "/torznab/api?t=movie&q=tree").body);
    assert_eq!(check_entries(&f, &mv).len(), 1);
    // No query: the newest torrents (what Prowlarr's test asks for).
    let any = parse(&get(s.addr, "/torznab/api?t=search").body);
    assert_eq!(check_entries(&f, &any).len(), 50);
    // Another category: nothing.
    let other = parse(&get(s.addr, "/torznab/api?t=search&q=ubuntu&cat=5000").body);
    assert_eq!(other["entries"].as_array().unwrap().len(), 0);
    let same = parse(
        &get(
            s.addr,
            "/torznab/api?t=search&q=ubuntu&cat=5000,8000&limit=5",
        )
        .body,
    );
    assert_eq!(same["entries"].as_array().unwrap().len(), 5);

    // Errors are Torznab error documents.
    for (path, code) in [
        ("/torznab/api", "202"),
        ("/torznab/api?t=nonsense", "202"),
        ("/torznab/api?t=search&limit=0", "201"),
        ("/torznab/api?t=search&limit=500", "201"),
        ("/torznab/api?t=tvsearch&q=x&season=x", "201"),
        ("/torznab/api?t=tvsearch&q=x&ep=3", "201"),
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 400, "{path}");
        assert!(
            r.text().contains(&format!("<error code=\"{code}\"")),
            "{path}: {}",
            r.text()
        );
    }
}
