//! `web/openapi.yaml` and the router agree: every route the router serves is a
//! path of the OpenAPI file, and every path of the file is served (over real HTTP,
//! not by the fallback).

mod common;

use std::collections::BTreeSet;

use common::*;
use magnetar_storage::to_hex;
use magnetar_web::Access;

/// The paths given to `.route("…", …)` in the router's source.
fn router_paths() -> BTreeSet<String> {
    let src = include_str!("../src/lib.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(\"") {
        rest = &rest[i + ".route(\"".len()..];
        let end = rest.find('"').expect("a closing quote");
        out.insert(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// The keys of the OpenAPI file's `paths` map (two-space indented, ending in ':').
fn openapi_paths() -> BTreeSet<String> {
    let doc = include_str!("../openapi.yaml");
    let body = doc.split_once("\npaths:\n").expect("a paths section").1;
    body.lines()
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("  /"))
        .filter_map(|l| l.strip_suffix(':'))
        .map(|p| format!("/{p}"))
        .collect()
}

#[test]
fn every_route_is_in_the_openapi_file_and_every_path_is_served() {
    let routes = router_paths();
    let paths = openapi_paths();
    // The parsers found something (a broken one would make the checks vacuous).
    assert!(routes.len() >= 10, "{routes:?}");
    assert!(paths.contains("/api/v1/search"), "{paths:?}");
    let undocumented: Vec<_> = routes.difference(&paths).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from web/openapi.yaml: {undocumented:?}"
    );
    // Every documented path answers 200 (with a stored infohash whose info dict is
    // kept), not the fallback's 404.
    let f = fixture();
    let ih = f
        .inputs
        .iter()
        .find(|t| t.info.is_some())
        .expect("a torrent with its info dict")
        .infohash;
    let s = start(f.store.clone(), Access::Open, test_limits());
    for p in &paths {
        let url = p.replace("{infohash}", &to_hex(&ih));
        // The parameters the file marks required.
        let url = match url.as_str() {
            "/torznab/api" => format!("{url}?t=caps"),
            "/api/v1/search" => format!("{url}?q=ubuntu"),
            _ => url,
        };
        let r = get(s.addr, &url);
        assert_eq!(r.status, 200, "{p} ({url}): {}", r.text());
    }
    // And a path that is in neither is the fallback's 404.
    assert_eq!(get(s.addr, "/api/v1/nothing").status, 404);
    assert!(!paths.contains("/api/v1/nothing"));
}
