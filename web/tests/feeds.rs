//! The RSS feed and Torznab answers, parsed by independent parsers (Python's
//! `feedparser`, installed by `.ci/test`, and `xml.etree` for the
//! `torznab:attr` elements feedparser does not list), compared with the database.

mod common;

use std::process::Command;

use common::*;
use magnetar_storage::synth::Rng;
use magnetar_storage::{magnet_of, to_hex, Op, TorrentRecord};
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
        "category": [t.get("term") for t in e.get("tags", [])],
    })
ns = {"torznab": "http://torznab.com/schemas/2015/feed"}
root = ET.fromstring(raw)
out["attrs"] = [{a.get("name"): a.get("value") for a in item.findall("torznab:attr", ns)}
                for item in root.iter("item")]
out["cats"] = [[a.get("value") for a in item.findall("torznab:attr", ns) if a.get("name") == "category"]
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

/// The category ids (`category` and `subcat`) of a caps document, read by Python's
/// `xml.etree`.
fn caps_categories(xml: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("caps.xml");
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, json, xml.etree.ElementTree as ET\n\
             r = ET.parse(sys.argv[1]).getroot()\n\
             print(json.dumps([c.get('id') for c in r.iter() if c.tag in ('category', 'subcat')]))",
        )
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Categories round-trip: every Torznab item carries the category the store holds
/// for its torrent (and its parent), the RSS `<category>` is the same, `cat=`
/// selects by it, tvsearch uses the stored season and episode, and t=movie the
/// movie category and the year.
#[test]
fn torznab_categories_round_trip() {
    let f = fixture();
    let mut rng = Rng::new(11);
    let extra: Vec<Op> = [
        (
            "Big Film 2019 1080p BluRay x264",
            "Big.Film.2019.1080p.BluRay.x264.mkv",
            8_000_000_000,
        ),
        (
            "Big Film 2019 720p WEB-DL",
            "Big.Film.2019.720p.WEB-DL.mkv",
            2_000_000_000,
        ),
        (
            "Some Show S01E03 720p HDTV",
            "Some.Show.S01E03.720p.HDTV.mkv",
            500_000_000,
        ),
        (
            "Some Show S02 Complete 1080p",
            "Some.Show.S02E01.mkv",
            900_000_000,
        ),
        ("Some Author - A Novel (epub)", "A Novel.epub", 1_000_000),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, path, size))| {
        let files = vec![magnetar_storage::FileEntry {
            path: path.into(),
            size,
        }];
        Op::Torrent(Box::new(input(
            name,
            files,
            T0 + 30_000 + i as u64,
            true,
            &mut rng,
        )))
    })
    .collect();
    f.store.apply_batch(&extra).unwrap();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let cat_of = |rec: &TorrentRecord| -> u32 {
        u32::from(
            f.store
                .facets(&rec.infohash)
                .unwrap()
                .expect("classified")
                .category,
        )
    };
    // Every item of a wide search: its categories are the stored one and its parent.
    let all = parse(&get(s.addr, "/torznab/api?t=search&limit=100").body);
    let recs = check_entries(&f, &all);
    assert_eq!(recs.len(), 72);
    let mut seen = std::collections::BTreeSet::new();
    for ((rec, cats), e) in recs
        .iter()
        .zip(all["cats"].as_array().unwrap())
        .zip(all["entries"].as_array().unwrap())
    {
        let c = cat_of(rec);
        seen.insert(c / 1000 * 1000);
        let mut want = vec![];
        if c % 1000 != 0 {
            want.push((c / 1000 * 1000).to_string());
        }
        want.push(c.to_string());
        assert_eq!(cats, &serde_json::json!(want), "{}", rec.name);
        assert_eq!(
            e["category"],
            serde_json::json!([c.to_string()]),
            "{}",
            rec.name
        );
    }
    assert!(seen.len() >= 5, "{seen:?}");
    // cat= selects by the stored category, parents include their sub-categories.
    for cat in [2000u32, 2040, 5000, 7000, 3000, 4000, 8000] {
        let v = parse(
            &get(
                s.addr,
                &format!("/torznab/api?t=search&cat={cat}&limit=100"),
            )
            .body,
        );
        let got = check_entries(&f, &v);
        let want: Vec<&TorrentRecord> = recs
            .iter()
            .filter(|r| {
                let c = cat_of(r);
                c == cat || (cat % 1000 == 0 && c / 1000 * 1000 == cat)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "cat {cat}");
        assert_eq!(v["response"]["total"], want.len().to_string(), "cat {cat}");
        assert!(got
            .iter()
            .all(|r| want.iter().any(|w| w.infohash == r.infohash)));
    }
    let names = |path: &str| -> Vec<String> {
        let mut v: Vec<String> = check_entries(&f, &parse(&get(s.addr, path).body))
            .into_iter()
            .map(|r| r.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("/torznab/api?t=movie&q=big+film"),
        [
            "Big Film 2019 1080p BluRay x264",
            "Big Film 2019 720p WEB-DL"
        ]
    );
    assert_eq!(names("/torznab/api?t=movie&q=big+film&year=2019").len(), 2);
    assert!(names("/torznab/api?t=movie&q=big+film&year=2018").is_empty());
    assert_eq!(
        names("/torznab/api?t=movie&q=big+film&cat=2040"),
        [
            "Big Film 2019 1080p BluRay x264",
            "Big Film 2019 720p WEB-DL"
        ]
    );
    assert_eq!(
        names("/torznab/api?t=tvsearch&q=some+show&season=1&ep=3"),
        ["Some Show S01E03 720p HDTV"]
    );
    assert_eq!(
        names("/torznab/api?t=tvsearch&q=some+show&season=1"),
        ["Some Show S01E02 1080p", "Some Show S01E03 720p HDTV"]
    );
    assert_eq!(
        names("/torznab/api?t=tvsearch&q=some+show&season=2"),
        ["Some Show S02 Complete 1080p"]
    );
    // No text: the newest of the category (Prowlarr's RSS sync).
    let tv = recs.iter().filter(|r| cat_of(r) / 1000 == 5).count();
    assert!(tv >= 3);
    assert_eq!(names("/torznab/api?t=tvsearch").len(), tv);
    assert!(names("/torznab/api?t=search&cat=7000")
        .contains(&"Some Author - A Novel (epub)".to_string()));
}

#[test]
fn torznab_caps_search_tvsearch_movie_and_paging() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let caps = get(s.addr, "/torznab/api?t=caps");
    assert_eq!(caps.status, 200);
    let text = caps.text();
    assert!(text.contains("<caps>") && text.contains("tv-search available=\"yes\""));
    let ids = caps_categories(&caps.body);
    for id in [
        "2000", "5000", "3000", "7000", "4000", "6000", "8000", "2040", "5040",
    ] {
        assert!(ids.iter().any(|c| c == id), "caps lacks {id}: {ids:?}");
    }

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
        // .iso files: a disc image, PC/ISO.
        assert_eq!(attrs["category"], "4020");
    }
    assert!(a["cats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c == &serde_json::json!(["4000", "4020"])));

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
    // t=movie looks only at movies: the album is not one.
    let mv = parse(&get(s.addr, "/torznab/api?t=movie&q=tree").body);
    assert_eq!(check_entries(&f, &mv).len(), 0);
    // No query: the newest torrents (what Prowlarr's test asks for).
    let any = parse(&get(s.addr, "/torznab/api?t=search").body);
    assert_eq!(check_entries(&f, &any).len(), 50);
    // Another category: nothing.
    let other = parse(&get(s.addr, "/torznab/api?t=search&q=ubuntu&cat=5000").body);
    assert_eq!(other["entries"].as_array().unwrap().len(), 0);
    let same = parse(
        &get(
            s.addr,
            "/torznab/api?t=search&q=ubuntu&cat=5000,4000&limit=5",
        )
        .body,
    );
    assert_eq!(same["entries"].as_array().unwrap().len(), 5);
    // Categories no classifier gives: nothing (not an error).
    let none = parse(&get(s.addr, "/torznab/api?t=search&q=ubuntu&cat=100000,x").body);
    assert_eq!(none["entries"].as_array().unwrap().len(), 0);

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

/// Daily shows (issue 20): `Show.Name.2026.12.07.720p.WEB` is a TV episode with an air
/// date; Sonarr's daily search `t=tvsearch&season=2026&ep=12/07` (`/` encoded or
/// not) finds it and only it, with no text too, and its item carries the date
/// (`tvairdate`); another day or a malformed date finds nothing or is refused.
#[test]
fn torznab_daily_shows_by_air_date() {
    let f = fixture();
    let mut rng = Rng::new(12);
    let extra: Vec<Op> = [
        "Show.Name.2026.12.07.720p.WEB",
        "Show.Name.2026.12.08.720p.WEB",
        "Show.Name.2025.12.07.1080p.WEB",
        "Show.Name.S01E07.720p.WEB",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, name)| {
        let files = vec![magnetar_storage::FileEntry {
            path: format!("{name}.mkv"),
            size: 700_000_000,
        }];
        Op::Torrent(Box::new(input(
            name,
            files,
            T0 + 40_000 + i as u64,
            true,
            &mut rng,
        )))
    })
    .collect();
    f.store.apply_batch(&extra).unwrap();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let names = |path: &str| -> (Vec<String>, Value) {
        let v = parse(&get(s.addr, path).body);
        let mut n: Vec<String> = check_entries(&f, &v).into_iter().map(|r| r.name).collect();
        n.sort();
        (n, v)
    };
    let (n, v) = names("/torznab/api?t=tvsearch&q=show+name&season=2026&ep=12/07");
    assert_eq!(n, ["Show.Name.2026.12.07.720p.WEB"]);
    let attrs = &v["attrs"][0];
    assert_eq!(attrs["tvairdate"], "2026-12-07T00:00:00Z", "{attrs}");
    assert_eq!(attrs["category"], "5040", "a TV episode in HD: {attrs}");
    let (n, _) = names("/torznab/api?t=tvsearch&q=show+name&season=2026&ep=12%2F07");
    assert_eq!(n, ["Show.Name.2026.12.07.720p.WEB"]);
    let (n, _) = names("/torznab/api?t=tvsearch&season=2026&ep=12/07");
    assert_eq!(n, ["Show.Name.2026.12.07.720p.WEB"], "no text");
    let (n, _) = names("/torznab/api?t=tvsearch&q=show+name&season=2026&ep=12/08");
    assert_eq!(n, ["Show.Name.2026.12.08.720p.WEB"]);
    assert!(
        names("/torznab/api?t=tvsearch&q=show+name&season=2024&ep=12/07")
            .0
            .is_empty()
    );
    // The numbered episode is no daily one, and season 1 episode 7 is not 12/07.
    let (n, v) = names("/torznab/api?t=tvsearch&q=show+name&season=1&ep=7");
    assert_eq!(n, ["Show.Name.S01E07.720p.WEB"]);
    assert!(v["attrs"][0].get("tvairdate").is_none());
    for bad in [
        "ep=13/07&season=2026",
        "ep=12/7&season=2026",
        "ep=12/07&season=26",
        "ep=12/07",
    ] {
        let r = get(s.addr, &format!("/torznab/api?t=tvsearch&{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert!(String::from_utf8_lossy(&r.body).contains("MM/DD"), "{bad}");
    }
}
