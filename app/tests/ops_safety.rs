//! Operating safely: no maintenance under a live crawler (two real processes),
//! `db check`, quiet ends on closed pipes, and `show` by prefix or magnet URI.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use magnetar_storage::{synth::Synth, Op, Store, StoreOptions};

const NAMED: &str = "c9e15763f722f23e98a29decdfae341b98d53056";
/// NAMED in base32 (`echo NAMED | xxd -r -p | base32`).
const NAMED_B32: &str = "ZHQVOY7XELZD5GFCTXWN7LRUDOMNKMCW";

fn ih(hex: &str) -> [u8; 20] {
    magnetar_storage::parse_infohash_hex(hex).unwrap()
}

/// A database of `n` synthetic torrents, plus two sharing the prefix `aaaaaaaa` and
/// one with the infohash NAMED. Returns the word every synthetic name starts with.
fn populate(dir: &Path, n: usize) {
    let store = Store::open(StoreOptions::new(dir)).unwrap();
    let mut s = Synth::new(18);
    let mut ops: Vec<Op> = (0..n)
        .map(|i| Op::Torrent(Box::new(s.torrent(1_700_000_000 + i as u64, true))))
        .collect();
    for (hex, name) in [
        ("aaaaaaaa00000000000000000000000000000001", "twin one"),
        ("aaaaaaaa00000000000000000000000000000002", "twin two"),
        (NAMED, "named torrent"),
    ] {
        let mut t = s.torrent(1_800_000_000, true);
        t.infohash = ih(hex);
        t.name = name.to_string();
        ops.push(Op::Torrent(Box::new(t)));
    }
    store.apply_batch(&ops).unwrap();
    drop(store);
    magnetar_storage::wait_closed(dir);
}

fn dbarg(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// While a crawler runs, `db compact`, `db prune`, `reclassify` and `import` are refused with a
/// message naming it (its pid and command), and readers work; once it has exited,
/// compaction works and what it committed is still there. A crawler refuses a
/// database whose lock another process (here: this test) holds.
#[test]
fn maintenance_is_refused_under_a_live_crawler() {
    let w = world(160, 3, "locked-crawl.bin", 77_777);
    let db = tempfile::tempdir().unwrap();
    let dbs = dbarg(db.path());
    let boot = w.net.addrs[0].to_string();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        &boot,
        "--allow-private",
        "--duration",
        "120",
        "--status-interval",
        "1",
    ];
    let mut p = crawl("mio", db.path(), &args);
    let pid = p.child.id();
    let hash = hex(&w.seeder.info_hash.0);
    // Readers work during the crawl and see its commits.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (st, out, _) = run(&["show", &hash, "--db", dbs]);
            st.success() && out.contains("locked-crawl.bin")
        }),
        "the crawl's torrent never became visible to `show`; log:\n{}",
        p.log()
    );
    let (st, out, err) = run(&["search", "locked", "--db", dbs]);
    assert!(st.success() && out.contains(&hash), "{out}{err}");
    for args in [vec!["stats"], vec!["export"], vec!["db", "check"]] {
        let mut a = args.clone();
        a.extend(["--db", dbs]);
        let (st, _, err) = run(&a);
        assert!(st.success(), "{a:?} during a crawl: {err}");
    }
    // Maintenance is refused, naming the crawler.
    let jsonl = db.path().join("import.jsonl");
    std::fs::write(&jsonl, "").unwrap();
    for args in [
        vec!["db", "compact"],
        vec!["db", "prune"],
        vec!["reclassify"],
        vec!["import", "jsonl", jsonl.to_str().unwrap()],
    ] {
        let mut a = args.clone();
        a.extend(["--db", dbs]);
        let (st, _, err) = run(&a);
        assert_eq!(st.code(), Some(2), "{a:?} under a crawler: {err}");
        assert!(
            err.contains(&format!("in use by process {pid} running `magnetar crawl`")),
            "{a:?}: {err}"
        );
    }
    p.signal("INT");
    let st = p.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit {st:?}; log:\n{}", p.log());

    // Now compaction works, and the crawl's commits (torrent and session end) survive it.
    let (st, _, err) = run(&["db", "compact", "--db", dbs]);
    assert!(st.success(), "compact after the crawl: {err}");
    let (st, out, err) = run(&["show", &hash, "--db", dbs]);
    assert!(
        st.success() && out.contains("locked-crawl.bin"),
        "{out}{err}"
    );
    let (st, out, err) = run(&["stats", "--db", dbs]);
    assert!(st.success(), "{err}");
    assert!(out.contains("torrents:         1"), "{out}");
    assert!(!out.contains("running or killed"), "{out}");
    let (st, _, err) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{err}");

    // The other way round: a crawler refuses a database under maintenance.
    let lock = magnetar_storage::DbLock::acquire(db.path(), "db compact").unwrap();
    let mut p = crawl("mio", db.path(), &args);
    let st = p.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(2), "log:\n{}", p.log());
    assert!(
        p.log().contains(&format!(
            "in use by process {} running `magnetar db compact`",
            std::process::id()
        )),
        "{}",
        p.log()
    );
    drop(lock);
}

/// `db check` passes a sound database and fails (exit 2, the problem printed) one
/// whose `by_time` index points at a torrent that does not exist.
#[test]
fn db_check_reports_damage() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path(), 50);
    let dbs = dbarg(db.path());
    let (st, out, err) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("torrents:         53"), "{out}");
    assert!(out.contains("ok: no problems found"), "{out}");

    {
        let mut b = heed::EnvOpenOptions::new();
        b.max_dbs(16);
        // SAFETY: the store is closed in this process (populate waited for it) and no
        // other process has it open.
        #[allow(unsafe_code)]
        let env = unsafe { b.open(db.path()) }.unwrap();
        type Db = heed::Database<'static, heed::types::Bytes, heed::types::Bytes>;
        let by_time: Db = env
            .open_databases_and_commit(env.read_txn().unwrap(), |o, r| {
                o.open_database::<heed::types::Bytes, heed::types::Bytes>(r, Some("by_time"))
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit()
            .unwrap();
        let mut txn = env.write_txn().unwrap();
        let mut key = 1_750_000_000u64.to_be_bytes().to_vec();
        key.extend(999_999u32.to_be_bytes());
        by_time.put(&mut txn, &key, &[]).unwrap();
        txn.commit().unwrap();
        env.prepare_for_closing().wait();
    }
    let (st, out, err) = run(&["db", "check", "--db", dbs]);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(out.contains("has no matching torrent"), "{out}");
    assert!(err.contains("problem(s) found"), "{err}");
}

/// Opens the closed store at `dir` with heed and runs `f` on its `facets` and
/// `facet_terms` tables in one write transaction.
fn with_facet_tables(dir: &Path, f: impl FnOnce(&mut heed::RwTxn, Db, Db)) {
    let mut b = heed::EnvOpenOptions::new();
    b.max_dbs(32);
    // SAFETY: the store is closed in this process (populate and the commands waited
    // for it) and no other process has it open.
    #[allow(unsafe_code)]
    let env = unsafe { b.open(dir) }.unwrap();
    let open = |name: &'static str| -> Db {
        env.open_databases_and_commit(env.read_txn().unwrap(), |o, r| {
            o.open_database::<heed::types::Bytes, heed::types::Bytes>(r, Some(name))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap()
    };
    let (facets, facet_terms) = (open("facets"), open("facet_terms"));
    let mut txn = env.write_txn().unwrap();
    f(&mut txn, facets, facet_terms);
    txn.commit().unwrap();
    env.prepare_for_closing().wait();
}

type Db = heed::Database<'static, heed::types::Bytes, heed::types::Bytes>;

/// `db check` verifies the classifier's tables (issue 20): a wrong facet (a record
/// whose kind and category are not the classifier's), a dangling `facet_terms`
/// posting (a doc id that is no torrent) and a missing `facets` entry are each
/// reported with their own message and exit status 2; `magnetar reclassify`, which the
/// messages advise, repairs each.
#[test]
fn db_check_verifies_the_facets() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path(), 30);
    let dbs = dbarg(db.path());
    let (st, out, err) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("facets:           33"), "{out}");
    assert!(!out.contains("facet postings:   0\n"), "{out}");
    let check_fails_with = |what: &str, msg: &str| {
        let (st, out, err) = run(&["db", "check", "--db", dbs]);
        assert_eq!(st.code(), Some(2), "{what}: {out}{err}");
        assert!(out.contains(msg), "{what}: {out}");
        assert!(err.contains("problem(s) found"), "{what}: {err}");
        let (st, out, err) = run(&["reclassify", "--db", dbs]);
        assert!(st.success(), "{what}: reclassify: {out}{err}");
        let (st, out, err) = run(&["db", "check", "--db", dbs]);
        assert!(st.success(), "{what}: after reclassify: {out}{err}");
    };
    let doc0 = 0u32.to_be_bytes();

    // 1. A wrong facet: doc 0's kind and category rewritten (layout 1, kind code,
    // category u16 LE, ...) to Adult / 6000, which no synthetic name is.
    with_facet_tables(db.path(), |txn, facets, _| {
        let mut v = facets
            .get(txn, &doc0)
            .unwrap()
            .expect("doc 0 has facets")
            .to_vec();
        assert_ne!(v[1], 13, "doc 0 is already adult");
        v[1] = 13;
        v[2..4].copy_from_slice(&6000u16.to_le_bytes());
        facets.put(txn, &doc0, &v).unwrap();
    });
    check_fails_with("wrong facet", "differ from a fresh classification");

    // 2. A dangling posting: doc 999,999 (no torrent) under the key of kind Other.
    with_facet_tables(db.path(), |txn, _, terms| {
        let mut block = 999_999u32.to_be_bytes().to_vec();
        block.extend(999_999u32.to_le_bytes());
        block.push(0); // the posting's flags (a varint): 0
        terms.put(txn, b"k\x00", &block).unwrap();
    });
    check_fails_with(
        "dangling posting",
        "facet_terms: postings for doc 999999, which has no facets",
    );

    // 3. A missing entry: doc 0's facets record deleted (its postings stay).
    with_facet_tables(db.path(), |txn, facets, _| {
        assert!(facets.delete(txn, &doc0).unwrap());
    });
    check_fails_with("missing entry", "no facets entry");
}

/// Runs `magnetar ARGS` with stdout a pipe whose reading end is already closed:
/// its first write fails with EPIPE. It must end quietly with status 0.
fn into_closed_pipe(args: &[&str]) {
    let (r, w) = rustix::pipe::pipe().unwrap();
    drop(r);
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {:?}: {err}", out.status);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{args:?}: {err}"
    );
}

/// `magnetar … | head -1`: a reader that goes away ends the command quietly.
#[test]
fn closed_pipes_end_quietly() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path(), 3000);
    let dbs = dbarg(db.path());
    into_closed_pipe(&["search", "twin", "--db", dbs]);
    into_closed_pipe(&["search", "twin", "--json", "--db", dbs]);
    into_closed_pipe(&["stats", "--db", dbs]);
    into_closed_pipe(&["export", "--db", dbs]);
    into_closed_pipe(&["show", NAMED, "--db", dbs]);
    into_closed_pipe(&["recent", "--db", dbs]);
    into_closed_pipe(&["db", "check", "--db", dbs]);
    // As `head -1` does: read one line, then close. The export (~1 MB) is far larger
    // than a pipe's buffer, so the writer is still writing when the pipe closes.
    let mut child = Command::new(BIN)
        .args(["export", "--db", dbs])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with('{'), "{line}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// `show` takes a unique prefix (8+ hex digits) or a magnet URI (hex or base32),
/// and says when a prefix is ambiguous (listing the candidates) or unknown.
#[test]
fn show_by_prefix_and_magnet() {
    let db = tempfile::tempdir().unwrap();
    populate(db.path(), 20);
    let dbs = dbarg(db.path());
    for r in [
        NAMED.to_string(),
        NAMED[..8].to_string(),
        NAMED[..13].to_uppercase(),
        format!("magnet:?xt=urn:btih:{NAMED}&dn=named"),
        format!("magnet:?xt=urn:btih:{NAMED_B32}"),
    ] {
        let (st, out, err) = run(&["show", &r, "--db", dbs]);
        assert!(st.success(), "show {r}: {err}");
        assert!(
            out.contains("name:          named torrent"),
            "show {r}: {out}"
        );
        assert!(out.contains(&format!("infohash:      {NAMED}")), "{out}");
    }
    let (st, _, err) = run(&["show", "aaaaaaaa", "--db", dbs]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("ambiguous"), "{err}");
    assert!(
        err.contains("aaaaaaaa00000000000000000000000000000001  twin one")
            && err.contains("aaaaaaaa00000000000000000000000000000002  twin two"),
        "{err}"
    );
    let (st, out, err) = run(&[
        "show",
        "aaaaaaaa000000000000000000000000000000020",
        "--db",
        dbs,
    ]);
    assert_eq!(st.code(), Some(2), "{out}");
    assert!(err.contains("longer than 40"), "{err}");
    // An odd number of digits, and the twins told apart by their last digit.
    let (st, out, err) = run(&["show", &NAMED[..39], "--db", dbs]);
    assert!(st.success() && out.contains("named torrent"), "{out}{err}");
    let (st, out, err) = run(&[
        "show",
        "aaaaaaaa00000000000000000000000000000002",
        "--db",
        dbs,
    ]);
    assert!(st.success() && out.contains("twin two"), "{out}{err}");
    let (st, _, err) = run(&["show", "0123456789", "--db", dbs]);
    assert_eq!(st.code(), Some(2));
    assert!(
        err.contains("no torrent in the database has an infohash starting with 0123456789"),
        "{err}"
    );
    let (st, _, err) = run(&["show", "c9e1576", "--db", dbs]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("at least 8 hex digits"), "{err}");
}

/// A crawler killed with SIGKILL leaves its record in `magnetar.lock`, but the kernel
/// released its flock: maintenance works at once.
#[test]
fn a_killed_crawlers_lock_file_blocks_nothing() {
    let db = tempfile::tempdir().unwrap();
    let dbs = dbarg(db.path());
    let mut p = crawl(
        "mio",
        db.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            "127.0.0.1:9",
            "--allow-private",
        ],
    );
    let pid = p.child.id();
    assert!(
        p.wait_log("database open", Duration::from_secs(20)),
        "{}",
        p.log()
    );
    let (st, _, err) = run(&["db", "compact", "--db", dbs]);
    assert_eq!(st.code(), Some(2), "{err}");
    p.signal("KILL");
    let _ = p.child.wait();
    let record = std::fs::read_to_string(db.path().join(magnetar_storage::LOCK_FILE)).unwrap();
    assert!(record.contains(&format!("\"pid\":{pid}")), "{record}");
    let (st, _, err) = run(&["db", "compact", "--db", dbs]);
    assert!(st.success(), "compact after the crawler was killed: {err}");
    let (st, _, err) = run(&["db", "check", "--db", dbs]);
    assert!(st.success(), "{err}");
}
