//! `Store::open_read_only` never waits for a writer: it opens while another process
//! holds LMDB's write transaction (a crawler's commit in progress), reads, and
//! cannot write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use magnetar_storage::synth::Synth;
use magnetar_storage::{wait_closed, Op, Store, StoreError, StoreOptions};

/// A guard against a hang, not a measurement: a read-only open that waited for
/// the writer would wait until the child lets go, which it does only after the
/// parent got its answer (or this guard fired).
const HANG_GUARD: Duration = Duration::from_secs(120);

#[test]
fn a_reader_opens_and_reads_while_another_process_holds_the_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut synth = Synth::new(7);
    let inputs: Vec<_> = (0..50)
        .map(|i| synth.torrent(1_700_000_000 + i, true))
        .collect();
    {
        let store = Store::open(StoreOptions::new(&path)).unwrap();
        let ops: Vec<Op> = inputs
            .iter()
            .map(|t| Op::Torrent(Box::new(t.clone())))
            .collect();
        store.apply_batch(&ops).unwrap();
    }
    wait_closed(&path);

    let mut child = Command::new(env!("CARGO_BIN_EXE_storage-hold-writer"))
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Synchronised on the pipe: the child has begun its write transaction.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "holding\n");

    let (tx, rx) = mpsc::channel();
    let reader_path = path.clone();
    let want = inputs[17].infohash;
    let reader = std::thread::spawn(move || {
        let got = Store::open_read_only(StoreOptions::new(&reader_path)).and_then(|s| {
            let torrents = s.stats()?.torrents;
            let name = s.record(&want)?.map(|r| r.name);
            // Writes are refused (a read-only environment), at once.
            let write = s.apply_batch(&[]).err().map(|e| e.to_string());
            Ok((torrents, name, write))
        });
        let _ = tx.send(got.map_err(|e| e.to_string()));
    });
    let got = rx.recv_timeout(HANG_GUARD);
    // Let the child go whatever happened: closing its stdin ends it.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let got = got.expect("the read-only open waited for the other process's writer");
    reader.join().unwrap();
    assert!(status.success(), "the writer child failed: {status:?}");
    let (torrents, name, write) = got.unwrap();
    assert_eq!(torrents, 50);
    assert_eq!(name.as_deref(), Some(inputs[17].name.as_str()));
    let write = write.expect("a write through a read-only store must fail");
    assert!(write.contains("write transaction"), "{write}");
}

#[test]
fn a_read_only_open_creates_nothing_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent");
    let e = Store::open_read_only(StoreOptions::new(&absent)).unwrap_err();
    assert!(e.to_string().contains("no magnetar database"), "{e}");
    assert!(!absent.exists());
    // An empty directory: still nothing created.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = Store::open_read_only(StoreOptions::new(&empty)).unwrap_err();
    assert!(e.to_string().contains("no magnetar database"), "{e}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // A database opened read-only reads what a writing open wrote, and the writing
    // open may follow in the same process once it is closed.
    let path = dir.path().join("db");
    Store::open(StoreOptions::new(&path)).unwrap();
    wait_closed(&path);
    let ro = Store::open_read_only(StoreOptions::new(&path)).unwrap();
    assert_eq!(ro.stats().unwrap().torrents, 0);
    assert!(matches!(
        Store::open(StoreOptions::new(&path)),
        Err(StoreError::AlreadyOpen { .. })
    ));
    drop(ro);
    wait_closed(&path);
    Store::open(StoreOptions::new(&path)).unwrap();
}

/// Every query shape answers the same through the read-only open as through the
/// writing one: the same tables, opened with the same flags (the facet postings are
/// DUP_SORT like `terms`), including category and attribute filters and the
/// `columns` sorts.
#[test]
fn a_read_only_store_answers_every_query_shape_like_the_writing_one() {
    use magnetar_storage::{FacetFilter, SearchQuery, SortBy};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut synth = Synth::new(11);
    let inputs: Vec<_> = (0..400)
        .map(|i| synth.torrent(1_700_000_000 + i, true))
        .collect();
    let queries: Vec<SearchQuery> = {
        let words = ["a", "the", "linux", "2019", "1080p", "x264", "e"];
        let mut q = Vec::new();
        for w in words {
            q.push(SearchQuery::new(w).page(0, 50));
            q.push(SearchQuery::new(w).sort(SortBy::Seeders).page(0, 50));
            q.push(
                SearchQuery::new(w)
                    .sort(SortBy::Size)
                    .ascending()
                    .page(0, 50),
            );
        }
        for (cat, attrs) in [
            (Some("movies"), vec![]),
            (Some("tv"), vec![]),
            (None, vec![("resolution".to_string(), "1080p".to_string())]),
        ] {
            q.push(SearchQuery::new("").page(0, 50).facets(FacetFilter {
                category: cat.map(str::to_string),
                attributes: attrs,
            }));
        }
        q
    };
    let answers = |s: &Store| -> Vec<String> {
        queries
            .iter()
            .map(|q| match s.query(q) {
                Ok(r) => format!(
                    "{} {:?}",
                    r.total,
                    r.hits.iter().map(|h| h.infohash).collect::<Vec<_>>()
                ),
                Err(e) => format!("error {e}"),
            })
            .collect()
    };
    let written = {
        let store = Store::open(StoreOptions::new(&path)).unwrap();
        let ops: Vec<Op> = inputs
            .iter()
            .map(|t| Op::Torrent(Box::new(t.clone())))
            .collect();
        store.apply_batch(&ops).unwrap();
        answers(&store)
    };
    wait_closed(&path);
    let reader = Store::open_read_only(StoreOptions::new(&path)).unwrap();
    let read = answers(&reader);
    assert!(
        written
            .iter()
            .any(|a| !a.starts_with("0 ") && !a.starts_with("error")),
        "the queries must find something: {written:?}"
    );
    assert_eq!(read, written);
}
