//! The classifier's categories over HTTP: the JSON API's `category` and attribute
//! filters and the facets of every result, the torrent's facets, the search page's
//! category select.

mod common;

use common::*;
use magnetar_storage::to_hex;
use magnetar_web::Access;

/// Every API result carries the category and facets the store holds; `category=`
/// and the attribute filters select by them; an unknown category is a 400 naming
/// the known ones; a filter without `q` lists every torrent that passes it.
#[test]
fn api_search_filters_by_category_and_returns_facets() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let cat_of = |hex: &str| -> u64 {
        let ih = magnetar_storage::parse_infohash_hex(hex).unwrap();
        u64::from(f.store.facets(&ih).unwrap().expect("classified").category)
    };
    let r = get(s.addr, "/api/v1/search?q=ubuntu&limit=100").json();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 60);
    for h in results {
        let c = cat_of(h["infohash"].as_str().unwrap());
        assert_eq!(h["category"], c);
        assert_eq!(h["facets"]["category"], c);
        assert_eq!(h["facets"]["kind"], "disc_image");
    }
    // By category: the TV episode, with its season and episode.
    let tv = get(s.addr, "/api/v1/search?category=tv").json();
    assert_eq!(tv["total"], 1);
    let ep = &tv["results"][0];
    assert_eq!(ep["name"], "Some Show S01E02 1080p");
    assert_eq!(ep["facets"]["kind"], "tv_episode");
    assert_eq!(ep["facets"]["seasons"], serde_json::json!([1, 1]));
    assert_eq!(ep["facets"]["episodes"], serde_json::json!([2, 2]));
    assert_eq!(ep["facets"]["resolution"], "1080p");
    assert_eq!(ep["category"], 5040);
    for (path, total) in [
        ("/api/v1/search?q=ubuntu&category=pc", 60),
        ("/api/v1/search?q=ubuntu&category=4020", 60),
        ("/api/v1/search?q=ubuntu&category=movies", 0),
        ("/api/v1/search?q=some+show&season=1&episode=2", 1),
        ("/api/v1/search?q=some+show&season=2", 0),
        ("/api/v1/search?resolution=1080p", 1),
        ("/api/v1/search?category=tv&resolution=720p", 0),
    ] {
        assert_eq!(get(s.addr, path).json()["total"], total, "{path}");
    }
    let bad = get(s.addr, "/api/v1/search?q=ubuntu&category=flicks");
    assert_eq!(bad.status, 400);
    let msg = bad.text();
    assert!(
        msg.contains("unknown category") && msg.contains("movie"),
        "{msg}"
    );
    assert_eq!(
        get(
            s.addr,
            &format!("/api/v1/search?category={}", "x".repeat(65))
        )
        .status,
        400
    );
    assert_eq!(
        get(s.addr, "/api/v1/search").status,
        400,
        "no q and no filter"
    );

    // A torrent's JSON has its facets.
    let ep_hex = ep["infohash"].as_str().unwrap();
    let t = get(s.addr, &format!("/api/v1/torrents/{ep_hex}")).json();
    assert_eq!(t["facets"]["kind"], "tv_episode");
    assert_eq!(t["category"], 5040);
    // And recent lists carry them too.
    let rec = get(s.addr, "/api/v1/recent?limit=100").json();
    for h in rec["results"].as_array().unwrap() {
        assert_eq!(h["category"], cat_of(h["infohash"].as_str().unwrap()));
    }
}

/// The search page has a category select (the chosen one selected), shows each
/// row's category, filters by it, and lists a category without words.
#[test]
fn search_page_has_a_category_select() {
    let f = fixture();
    let s = start(f.store.clone(), Access::Open, test_limits());
    let page = get(s.addr, "/search?q=some+show&category=tv").text();
    assert!(page.contains("<select name=\"category\""), "{page}");
    assert!(page.contains("<option value=\"tv\" selected>"), "{page}");
    assert!(page.contains("Some Show S01E02 1080p"));
    assert!(page.contains("TV/HD"), "the row's category");
    let none = get(s.addr, "/search?q=some+show&category=movies").text();
    assert!(none.contains("No torrent matches."));
    let browse = get(s.addr, "/search?category=pc").text();
    assert!(browse.contains("of 60 matches"), "{browse}");
    assert_eq!(get(s.addr, "/search?q=x&category=nonsense").status, 400);
    // The torrent page shows the category and attributes.
    let ih = f.by_name("Some Show S01E02 1080p").infohash;
    let t = get(s.addr, &format!("/torrent/{}", to_hex(&ih))).text();
    assert!(t.contains("TV/HD (5040, tv_episode)"), "{t}");
}
