//! Node ids persist (issue 17 item 3): `magnetar crawl` run several times on one
//! database keeps each identity's id, and `--external-ip` makes it take (and then
//! keep) a BEP 42 id for that address. Loopback only, nothing answers: the ids
//! are read from the "DHT identity" log line each run prints.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use magnetar_core::{bep42_matches, NodeId};
use support::{crawl, wait_until};

/// Runs `magnetar crawl` on `db` for a moment; the node id and `reused` of each
/// identity, in socket order.
fn run(db: &std::path::Path, extra: &[&str]) -> Vec<(NodeId, bool)> {
    let mut args: Vec<String> = [
        "--bind",
        "127.0.0.1:0,[::1]:0",
        "--bootstrap",
        "127.0.0.1:9",
        "--allow-private",
        "--duration",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = crawl(None, db, &args);
    let ended = wait_until(Duration::from_secs(60), || !p.alive());
    let log = p.log();
    assert!(ended, "the crawl did not stop:\n{log}");
    let mut ids = Vec::new();
    for line in log.lines().filter(|l| l.contains("DHT identity")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        let id = NodeId::from_hex(&field("node_id=")).expect("a node id");
        ids.push((id, field("reused=") == "true"));
    }
    assert_eq!(ids.len(), 2, "one line per identity:\n{log}");
    ids
}

#[test]
fn node_ids_persist_across_runs_and_follow_external_ip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let first = run(&db, &[]);
    assert!(
        first.iter().all(|(_, reused)| !reused),
        "a new database has no ids"
    );
    assert_ne!(first[0].0, first[1].0);
    let second = run(&db, &[]);
    assert_eq!(second, vec![(first[0].0, true), (first[1].0, true)]);

    // A configured IPv4 address the saved id is not valid for: a new BEP 42 id
    // for the v4 identity, kept by the next run; the v6 identity keeps its id.
    let ext: IpAddr = "151.101.1.69".parse().unwrap();
    assert!(
        !bep42_matches(&first[0].0, ext),
        "a random id is not BEP 42"
    );
    let third = run(&db, &["--external-ip", "151.101.1.69"]);
    assert!(!third[0].1 && third[0].0 != first[0].0);
    assert!(bep42_matches(&third[0].0, ext));
    assert_eq!(third[1], (first[1].0, true));
    let fourth = run(&db, &["--external-ip", "151.101.1.69"]);
    assert_eq!(fourth, vec![(third[0].0, true), (first[1].0, true)]);
    // Without --external-ip the BEP 42 id is still ours.
    let fifth = run(&db, &[]);
    assert_eq!(fifth[0], (third[0].0, true));
}
