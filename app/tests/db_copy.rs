//! `magnetar db copy` end to end, with a real PostgreSQL server: LMDB →
//! PostgreSQL → LMDB through the binary gives the same `magnetar export`, a second
//! run copies nothing twice, and the refusals (the same directory, the same
//! database written differently, an LMDB target a crawler holds) exit non-zero
//! with a message saying why.

use std::process::{Command, Stdio};

use magnetar_storage::synth::Synth;
use magnetar_storage::{DbLock, Op, Store, StoreOptions};
use magnetar_storage_pg::testing::TempPostgres;

const BIN: &str = env!("CARGO_BIN_EXE_magnetar");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run magnetar");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn db_copy_round_trips_through_postgres_and_refuses_the_same_store() {
    let pg = TempPostgres::start().unwrap_or_else(|e| panic!("PostgreSQL could not start: {e}"));
    let url = pg.create_database("c").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    {
        let store = Store::open(StoreOptions::new(&a)).unwrap();
        let mut s = Synth::new(3);
        let ops: Vec<Op> = (0..300)
            .map(|i| {
                let mut t = s.torrent(1_700_000_000 + i / 3, i % 2 == 0);
                if i == 7 {
                    t.name = "a\0nul".into();
                }
                Op::Torrent(Box::new(t))
            })
            .collect();
        store.apply_batch(&ops).unwrap();
    }
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    let (ok, _, err) = run(&["db", "copy", "--from", a_s, "--to", &url, "--batch", "40"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("copied 300 torrent(s)") && err.contains("300 new"),
        "{err}"
    );
    let (ok, _, err) = run(&["db", "copy", "--from", a_s, "--to", &url]);
    assert!(ok, "{err}");
    assert!(err.contains("0 new, 300 already there"), "{err}");
    let (ok, _, err) = run(&["db", "copy", "--from", &url, "--to", b_s]);
    assert!(ok, "{err}");
    assert!(err.contains("300 new"), "{err}");

    let (ok, ea, err) = run(&["export", "--db", a_s]);
    assert!(ok, "{err}");
    let (ok, eb, err) = run(&["export", "--db", b_s]);
    assert!(ok, "{err}");
    assert_eq!(ea.lines().count(), 300);
    assert!(ea == eb, "the exports differ");

    // The same directory; the same database named another way.
    let (ok, _, err) = run(&["db", "copy", "--from", a_s, "--to", a_s]);
    assert!(
        !ok && err.contains("both the source and the target"),
        "{err}"
    );
    let other = format!(
        "dbname=c user={} host={}",
        magnetar_storage_pg::testing::ROLE,
        pg.socket_dir().display()
    );
    assert_ne!(other, url);
    let (ok, _, err) = run(&["db", "copy", "--from", &url, "--to", &other]);
    assert!(!ok && err.contains("are the same database"), "{err}");
    // An LMDB target a crawler holds.
    let lock = DbLock::acquire(&b, "crawl").unwrap();
    let (ok, _, err) = run(&["db", "copy", "--from", &url, "--to", b_s]);
    assert!(!ok && err.contains("crawl"), "{err}");
    drop(lock);
    let (ok, _, err) = run(&["db", "copy", "--from", &url, "--to", b_s]);
    assert!(ok && err.contains("0 new"), "{err}");
}
