//! End-to-end: content filters (issue 20 §2, §4) through the real binary — a crawl
//! with a rules file on a loopback DHT (drop, hide, SIGHUP), `delete` and its
//! tombstone across a restart, `filter check`/`filter apply`, `db prune`'s torrent
//! rules and `stats`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use magnetar_core::testkit::InfoSpec;

/// The crawler with `magnetar::filter` at debug (tombstone skips are logged there).
fn crawl_debug(runtime: &str, db: &Path, args: &[&str]) -> CrawlProc {
    crawl_wrapped(
        &["env", "RUST_LOG=info,magnetar::filter=debug"],
        runtime,
        db,
        args,
    )
}

fn crawl_args<'a>(boot: &'a str, rules: Option<&'a str>) -> Vec<&'a str> {
    let mut v = vec![
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        boot,
        "--allow-private",
        "--status-interval",
        "1",
    ];
    if let Some(r) = rules {
        v.extend(["--filter-rules", r]);
    }
    v
}

fn connections(s: &Seeder) -> u32 {
    *s.connections.lock().unwrap()
}

fn stop(mut p: CrawlProc) -> String {
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(10));
    let log = p.log();
    assert!(st.success(), "{log}");
    log
}

/// A `drop words` rule: the torrent is fetched once, never stored, tombstoned, and
/// never fetched again after a restart (the seeder sees no new connection though
/// the crawler rediscovers the infohash). A broken rules file sent by SIGHUP before
/// the torrent is announced is refused with its line and column, and the old rules
/// stay in force; a good one is then loaded.
fn drop_rule_tombstones_and_survives_a_bad_reload(runtime: &str, base: u8) {
    let net = DhtNet::start(3, base, u64::from(base) * 1000);
    let seeder = Seeder::start(
        [127, 0, 0, base + 3],
        &InfoSpec::single("Casino Royale bonus.bin", 40_000),
    );
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    let rules = db.path().join("rules.txt");
    std::fs::write(&rules, "# spam\nspam: drop words casino\n").unwrap();
    let rules_s = rules.to_str().unwrap();
    let boot = net.addrs[0].to_string();
    let p = crawl(runtime, db.path(), &crawl_args(&boot, Some(rules_s)));
    assert!(
        p.wait_log("filter rules loaded", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    std::fs::write(&rules, "spam: drop words casino\nhide wurds x\n").unwrap();
    p.signal("HUP");
    assert!(
        p.wait_log("filter rules refused", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    assert!(p.log().contains("line 2, column 6"), "{}", p.log());
    // Announced only now (to the crawler itself, and to a DHT node for the
    // restart below): the old rule decides.
    let log = p.log();
    let at = log.find("UDP socket bound addr=").unwrap() + "UDP socket bound addr=".len();
    let me: std::net::SocketAddr = log[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    announce(*net.addrs.last().unwrap(), seeder.info_hash, seeder.addr);
    announce(me, seeder.info_hash, seeder.addr);
    let ih = hex(&seeder.info_hash.0);
    assert!(
        p.wait_log("rule=spam", Duration::from_secs(45)),
        "no filter decision; log:\n{}",
        p.log()
    );
    std::fs::write(&rules, "spam: drop words casino\nother: hide kinds adult\n").unwrap();
    p.signal("HUP");
    assert!(
        p.wait_log("filter rules reloaded", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    let log = stop(p);
    assert!(log.contains(&format!("infohash={ih}")), "{log}");
    assert!(log.contains("action=\"drop\""), "{log}");
    let (st, _, err) = run(&["show", &ih, "--db", dbs]);
    assert!(!st.success(), "a dropped torrent was stored: {err}");
    let (st, out, err) = run(&["stats", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("filtered:         1 tombstone(s)"), "{out}");
    assert!(out.contains("spam"), "{out}");
    // Restart: the infohash is rediscovered but never fetched again.
    let fetched_by_then = connections(&seeder);
    assert!(fetched_by_then >= 1);
    let p = crawl_debug(runtime, db.path(), &crawl_args(&boot, Some(rules_s)));
    assert!(
        p.wait_log("tombstoned infohash not fetched", Duration::from_secs(45)),
        "not rediscovered; log:\n{}",
        p.log()
    );
    let log = stop(p);
    assert!(!log.contains("metadata fetched"), "{log}");
    assert_eq!(connections(&seeder), fetched_by_then, "{log}");
    let (st, _, _) = run(&["show", &ih, "--db", dbs]);
    assert!(!st.success());
}

/// A `hide` rule: the torrent is stored (show finds it) but absent from search,
/// recent and export. `delete` of the other torrent (refused while the crawler
/// runs) leaves a tombstone that stops its re-fetching after a restart.
fn hide_rule_and_delete_tombstone(runtime: &str, base: u8) {
    let net = DhtNet::start(3, base, u64::from(base) * 1000);
    let hidden = Seeder::start(
        [127, 0, 0, base + 3],
        &InfoSpec::single("Secret Hidden Film.mkv", 70_000),
    );
    let plain = Seeder::start(
        [127, 0, 0, base + 4],
        &InfoSpec::single("Plain Film.mkv", 80_000),
    );
    for s in [&hidden, &plain] {
        announce(*net.addrs.last().unwrap(), s.info_hash, s.addr);
    }
    let db = tempfile::tempdir().unwrap();
    let dbs = db.path().to_str().unwrap();
    let rules = db.path().join("rules.txt");
    std::fs::write(&rules, "keep-out: hide words \"secret hidden\"\n").unwrap();
    let boot = net.addrs[0].to_string();
    let (h_ih, p_ih) = (hex(&hidden.info_hash.0), hex(&plain.info_hash.0));
    let p = crawl(
        runtime,
        db.path(),
        &crawl_args(&boot, Some(rules.to_str().unwrap())),
    );
    for ih in [&h_ih, &p_ih] {
        assert!(
            p.wait_log(&format!("info_hash={ih}"), Duration::from_secs(45)),
            "{ih} not fetched; log:\n{}",
            p.log()
        );
    }
    assert!(
        p.wait_log("rule=keep-out", Duration::from_secs(10)),
        "{}",
        p.log()
    );
    // Maintenance is refused while the crawler holds the database.
    let (st, _, err) = run(&["delete", &p_ih, "--db", dbs]);
    assert!(!st.success());
    assert!(err.contains("in use by"), "{err}");
    let log = stop(p);
    assert!(log.contains("action=\"hide\""), "{log}");
    let (st, out, err) = run(&["show", &h_ih, "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("Secret Hidden Film.mkv"), "{out}");
    for q in ["film", "secret", "hidden"] {
        let (st, out, err) = run(&["search", q, "--json", "--db", dbs]);
        assert!(st.success(), "{err}");
        assert!(!out.contains(&h_ih), "search {q}: {out}");
    }
    let (_, out, _) = run(&["search", "film", "--json", "--db", dbs]);
    assert!(out.contains(&p_ih), "{out}");
    let (st, out, err) = run(&["recent", "--json", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&p_ih) && !out.contains(&h_ih), "{out}");
    let (st, out, err) = run(&["export", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&p_ih) && !out.contains(&h_ih), "{out}");
    let (st, out, _) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}");
    // delete: removed, tombstoned; never fetched again.
    let (st, _, err) = run(&["delete", &p_ih, "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(err.contains("removed 1 torrent(s)"), "{err}");
    let (st, _, _) = run(&["show", &p_ih, "--db", dbs]);
    assert!(!st.success());
    let (st, out, _) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}");
    let before = connections(&plain);
    let p = crawl_debug(runtime, db.path(), &crawl_args(&boot, None));
    assert!(
        p.wait_log("tombstoned infohash not fetched", Duration::from_secs(45)),
        "not rediscovered; log:\n{}",
        p.log()
    );
    assert!(p.log().contains(&format!("infohash={p_ih}")), "{}", p.log());
    let log = stop(p);
    assert!(!log.contains(&format!("info_hash={p_ih}")), "{log}");
    assert_eq!(connections(&plain), before, "{log}");
    let (st, _, _) = run(&["show", &p_ih, "--db", dbs]);
    assert!(!st.success());
}

#[test]
fn mio_drop_rule_tombstones_and_survives_a_bad_reload() {
    drop_rule_tombstones_and_survives_a_bad_reload("mio", 200);
}

#[test]
fn tokio_drop_rule_tombstones_and_survives_a_bad_reload() {
    drop_rule_tombstones_and_survives_a_bad_reload("tokio", 210);
}

#[test]
fn mio_hide_rule_and_delete_tombstone() {
    hide_rule_and_delete_tombstone("mio", 220);
}

#[test]
fn tokio_hide_rule_and_delete_tombstone() {
    hide_rule_and_delete_tombstone("tokio", 230);
}

/// A JSON-lines export line for `import`.
fn line(ih: &str, name: &str, path: &str, at: u64, seeders: Option<u32>) -> String {
    let s = seeders
        .map(|n| format!(",\"seeders\":{n},\"leechers\":0,\"scraped_at\":{at}"))
        .unwrap_or_default();
    format!(
        "{{\"infohash\":\"{ih}\",\"name\":\"{name}\",\"size\":1000,\"files\":[{{\"path\":\"{path}\",\"size\":1000}}],\"discovered_at\":{at}{s}}}\n"
    )
}

fn ihx(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

/// `filter check`, `filter apply` (dry run, then for real), `db prune`'s torrent
/// rules (dry run, unseen, category; not tombstoned) and `stats`, on an imported
/// database.
#[test]
fn filter_and_prune_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let dbs = db.to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = now - 40 * 86_400;
    let jsonl = dir.path().join("in.jsonl");
    let mut text = String::new();
    text += &line(
        &ihx(1),
        "Free Money Casino",
        "casino/readme.txt",
        now,
        Some(5),
    );
    text += &line(&ihx(2), "Holiday Photos", "photos/a.txt", now, Some(5));
    text += &line(&ihx(3), "Old Thing", "old/thing.txt", old, None);
    text += &line(&ihx(4), "Some Tool Setup", "tool/setup.exe", now, Some(9));
    text += &line(&ihx(5), "Ancient Popular", "anc/a.txt", old, Some(50));
    std::fs::write(&jsonl, text).unwrap();
    let (st, _, err) = run(&["import", "jsonl", jsonl.to_str().unwrap(), "--db", dbs]);
    assert!(st.success(), "{err}");

    // check
    let bad = dir.path().join("bad.rules");
    std::fs::write(&bad, "a: drop words x\n\nb: hide kinds nonsense\n").unwrap();
    let (st, _, err) = run(&["filter", "check", bad.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("line 3, column 15"), "{err}");
    let huge = dir.path().join("huge.rules");
    std::fs::write(&huge, "#".repeat(5 << 20)).unwrap();
    let (st, _, err) = run(&["filter", "check", huge.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("over"), "{err}");
    let good = dir.path().join("good.rules");
    std::fs::write(
        &good,
        "spam: drop words \"free money\"\nnopics: hide words photos\n",
    )
    .unwrap();
    let (st, out, err) = run(&["filter", "check", good.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(out.contains("ok: 2 rule(s)"), "{out}");

    // apply, dry run: says, changes nothing.
    let g = good.to_str().unwrap();
    let (st, out, err) = run(&["filter", "apply", "--rules", g, "--dry-run", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("rule spam: would remove 1, would hide 0"),
        "{out}"
    );
    assert!(
        out.contains("rule nopics: would remove 0, would hide 1"),
        "{out}"
    );
    let (_, out, _) = run(&["search", "casino", "--json", "--db", dbs]);
    assert!(out.contains(&ihx(1)), "{out}");
    // apply.
    let (st, out, err) = run(&["filter", "apply", "--rules", g, "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("removed 1 torrent(s) (tombstoned), hid 1"),
        "{out}"
    );
    let (_, out, _) = run(&["search", "casino", "--json", "--db", dbs]);
    assert!(!out.contains(&ihx(1)), "{out}");
    let (_, out, _) = run(&["search", "photos", "--json", "--db", dbs]);
    assert!(!out.contains(&ihx(2)), "{out}");
    let (_, out, _) = run(&["recent", "--json", "--db", dbs]);
    assert!(!out.contains(&ihx(2)) && out.contains(&ihx(4)), "{out}");
    let (st, out, _) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}");
    // --unhide with a file that no longer hides photos: shown again.
    let fewer = dir.path().join("fewer.rules");
    std::fs::write(&fewer, "spam: drop words \"free money\"\n").unwrap();
    let f = fewer.to_str().unwrap();
    let (st, out, err) = run(&[
        "filter",
        "apply",
        "--rules",
        f,
        "--unhide",
        "--dry-run",
        "--db",
        dbs,
    ]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("would show again 1 hidden by no rule"),
        "{out}"
    );
    let (_, out, _) = run(&["search", "photos", "--json", "--db", dbs]);
    assert!(!out.contains(&ihx(2)), "{out}");
    let (st, out, err) = run(&["filter", "apply", "--rules", f, "--unhide", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("showed again 1 hidden by no rule"), "{out}");
    let (_, out, _) = run(&["search", "photos", "--json", "--db", dbs]);
    assert!(out.contains(&ihx(2)), "{out}");
    let (st, out, _) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}");
    // Hidden again for the checks below.
    let (st, _, err) = run(&["filter", "apply", "--rules", g, "--db", dbs]);
    assert!(st.success(), "{err}");
    // A tombstoned infohash is not imported again.
    let again = dir.path().join("again.jsonl");
    std::fs::write(
        &again,
        line(&ihx(1), "Free Money Casino", "c/r.txt", now, None),
    )
    .unwrap();
    let (st, _, err) = run(&["import", "jsonl", again.to_str().unwrap(), "--db", dbs]);
    assert!(st.success(), "{err}");
    let (st, _, _) = run(&["show", &ihx(1), "--db", dbs]);
    assert!(!st.success());
    let (st, out, err) = run(&["stats", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("1 tombstone(s) (never fetched again), 1 hidden"),
        "{out}"
    );
    assert!(out.contains("growth:"), "{out}");

    // prune: dry run says, changes nothing.
    let (st, out, err) = run(&[
        "db",
        "prune",
        "--unseen-days",
        "30",
        "--dry-run",
        "--db",
        dbs,
    ]);
    assert!(st.success(), "{err}");
    assert!(err.contains("would remove 2 torrent(s)"), "{err}");
    assert!(out.contains(&ihx(3)) && out.contains(&ihx(5)), "{out}");
    let (st, _, _) = run(&["show", &ihx(3), "--db", dbs]);
    assert!(st.success());
    // no seeders for 30 days: only the old one without seeders.
    let (st, _, err) = run(&["db", "prune", "--no-seeders-days", "30", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(err.contains("removed 1 torrent(s)"), "{err}");
    let (st, _, _) = run(&["show", &ihx(3), "--db", dbs]);
    assert!(!st.success());
    let (st, _, _) = run(&["show", &ihx(5), "--db", dbs]);
    assert!(st.success());
    // by category: the installer is software.
    let (st, _, err) = run(&["db", "prune", "--category", "nonsense", "--db", dbs]);
    assert!(!st.success());
    assert!(err.contains("not a content kind"), "{err}");
    let (st, _, err) = run(&["db", "prune", "--category", "software", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(err.contains("removed 1 torrent(s)"), "{err}");
    let (st, _, _) = run(&["show", &ihx(4), "--db", dbs]);
    assert!(!st.success());
    let (st, out, _) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}");
    // Pruned, not tombstoned: it comes back.
    let back = dir.path().join("back.jsonl");
    std::fs::write(
        &back,
        line(&ihx(4), "Some Tool Setup", "tool/setup.exe", now, None),
    )
    .unwrap();
    let (st, _, err) = run(&["import", "jsonl", back.to_str().unwrap(), "--db", dbs]);
    assert!(st.success(), "{err}");
    let (st, _, _) = run(&["show", &ihx(4), "--db", dbs]);
    assert!(st.success());
}
