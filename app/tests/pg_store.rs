//! `--store postgres://…` through the real binary, against a real PostgreSQL
//! (`TempPostgres`): the read commands give the same output on a PostgreSQL store
//! as on an LMDB store loaded with the same torrents; `serve` answers the API
//! alike; `crawl` stores what it fetches on a loopback DHT in PostgreSQL; the
//! commands PostgreSQL cannot do yet refuse it clearly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{hex, wait_until, world};
use magnetar_storage::synth::Synth;
use magnetar_storage::{tokenize, Op, Store, StoreOptions, TorrentInput};
use magnetar_storage_pg::testing::TempPostgres;
use magnetar_storage_pg::{PgOptions, PgStore};

const BIN: &str = env!("CARGO_BIN_EXE_magnetar");
const T0: u64 = 1_650_000_000;

/// `magnetar ARGS…` without MAGNETAR_DB / MAGNETAR_STORE from the environment.
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("MAGNETAR_DB")
        .env_remove("MAGNETAR_STORE")
        .output()
        .expect("run magnetar");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 400 synthetic torrents: a quarter with info dicts, most with counts, some
/// sharing a discovery second (ties are ordered by doc id in both stores).
fn corpus() -> Vec<TorrentInput> {
    let mut s = Synth::new(21);
    (0..400)
        .map(|i| {
            let mut t = s.torrent(T0 + (i / 3) as u64, i % 4 == 0);
            if i % 5 != 0 {
                let n = s.rng().below(90) as u32;
                t.seeders = Some(n);
                t.leechers = Some(n / 3);
                t.scraped_at = Some(T0 + i as u64);
            }
            t
        })
        .collect()
}

/// The same torrents in a new LMDB store at `dir` and in the PostgreSQL
/// database at `url`, in the same batches.
fn load_both(dir: &Path, url: &str, ts: &[TorrentInput]) {
    let store = Store::open(StoreOptions::new(dir)).unwrap();
    let mut pg = PgStore::connect(url, PgOptions::default()).unwrap();
    for chunk in ts.chunks(100) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|t| Op::Torrent(Box::new(t.clone())))
            .collect();
        store.apply_batch(&ops).unwrap();
        pg.apply_batch(&ops).unwrap();
    }
    drop(store);
    magnetar_storage::wait_closed(dir);
}

/// JSON lines without the fields that depend on the second they were printed.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            if let Some(o) = v.as_object_mut() {
                o.remove("scrape_age_secs");
            }
            v
        })
        .collect()
}

#[test]
fn read_commands_give_the_same_output_on_postgres_and_lmdb() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("cli").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ts = corpus();
    load_both(dir.path(), &url, &ts);
    let db = dir.path().to_str().unwrap();
    let lmdb = ["--db", db];
    let post = ["--store", url.as_str()];

    let both = |args: &[&str]| -> (String, String) {
        let go = |sel: &[&str]| {
            let mut a = args.to_vec();
            a.extend_from_slice(sel);
            let (ok, out, err) = run(&a);
            assert!(ok, "{a:?}: {err}\n{}", pg.log());
            out
        };
        (go(&lmdb), go(&post))
    };

    // Searches: words, a prefix, an exclusion, a phrase, every sort, paging.
    let word = |i: usize| tokenize(&ts[i].name).next().unwrap();
    let prefix: String = word(7).chars().take(3).collect();
    let two = format!("{} {}", word(11), word(12));
    let excl = format!("{} -{}", word(20), word(21));
    let phrase = format!("\"{}\"", ts[30].name);
    let mut searched = 0;
    for q in [word(3), prefix, two, excl, phrase] {
        for extra in [
            &[][..],
            &["--sort", "size"],
            &["--sort", "newest", "--order", "asc"],
            &["--sort", "seeders"],
            &["--sort", "files", "-n", "5", "--offset", "2"],
        ] {
            let mut a = vec!["search", "--json", q.as_str()];
            a.extend_from_slice(extra);
            let (l, p) = both(&a);
            assert_eq!(json_lines(&l), json_lines(&p), "{a:?}");
            searched += json_lines(&l).len();
        }
    }
    assert!(searched > 20, "the queries found too little: {searched}");

    // show, by full infohash and by a prefix (one with an info dict).
    for i in [0usize, 1, 42, 399] {
        let ih = hex(&ts[i].infohash);
        let (l, p) = both(&["show", &ih]);
        assert_eq!(l, p, "show {ih}");
        assert!(l.contains(&format!("infohash:      {ih}")), "{l}");
        let (l, p) = both(&["show", &ih[..10]]);
        assert_eq!(l, p, "show {}", &ih[..10]);
    }

    // recent, export (JSON lines, from a time on, and .torrent files).
    let (l, p) = both(&["recent", "-n", "25", "--json"]);
    assert_eq!(json_lines(&l), json_lines(&p));
    assert_eq!(json_lines(&l).len(), 25);
    let (l, p) = both(&["export"]);
    assert_eq!(l, p);
    assert_eq!(l.lines().count(), ts.len());
    let since = (T0 + 100).to_string();
    let (l, p) = both(&["export", "--since", &since]);
    assert_eq!(l, p);
    assert!(l.lines().count() < ts.len());
    let (dl, dp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (sel, d) in [(&lmdb, dl.path()), (&post, dp.path())] {
        let mut a = vec![
            "export",
            "--format",
            "torrent",
            "--out",
            d.to_str().unwrap(),
        ];
        a.extend_from_slice(&sel[..]);
        let (ok, _, err) = run(&a);
        assert!(ok, "{err}");
    }
    let files = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let fl = files(dl.path());
    assert_eq!(fl.len(), ts.len() / 4);
    assert_eq!(fl, files(dp.path()));

    // stats: the same counts (the disk lines differ: PostgreSQL's own sizes).
    let (sl, sp) = both(&["stats"]);
    let counts = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| {
                [
                    "torrents:",
                    "peers:",
                    "dht nodes:",
                    "sessions:",
                    "requests:",
                    "filtered:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(counts(&sl).len(), 6, "{sl}");
    assert!(counts(&sl)[0].contains(&ts.len().to_string()), "{sl}");
    assert_eq!(counts(&sl), counts(&sp), "LMDB:\n{sl}\nPostgreSQL:\n{sp}");
}

#[test]
fn commands_postgres_cannot_do_refuse_it_and_db_with_store_is_an_error() {
    let url = "postgres://nobody@localhost/none";
    for cmd in [
        &["reclassify", "--store", url][..],
        &["db", "compact", "--store", url],
        &["db", "check", "--store", url],
        &[
            "delete",
            "0123456789abcdef0123456789abcdef01234567",
            "--store",
            url,
        ],
        &["import", "jsonl", "/dev/null", "--store", url],
    ] {
        let (ok, _, err) = run(cmd);
        assert!(!ok, "{cmd:?}");
        assert!(
            err.contains("works on an LMDB database only"),
            "{cmd:?}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&[
        "search",
        "x",
        "--db",
        dir.path().to_str().unwrap(),
        "--store",
        url,
    ]);
    assert!(!ok);
    assert!(err.contains("--db and --store"), "{err}");
    // An LMDB path given as --store is LMDB (here: none there yet).
    let (ok, _, err) = run(&["search", "x", "--store", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no magnetar database at"), "{err}");
}

/// Reading commands change no schema: on an empty database they refuse (and
/// create nothing), on an older schema they say how to upgrade (and leave it
/// as it was); on this build's schema they read.
#[test]
fn read_commands_refuse_an_empty_or_older_postgres_schema_and_change_nothing() {
    use magnetar_storage_pg::migrate::{migrate_with, schema_version, MIGRATIONS};
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("readonly").unwrap();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for args in [
        &["stats", "--store", url.as_str()][..],
        &["search", "x", "--store", url.as_str()],
    ] {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?}");
        assert!(err.contains("holds no magnetar tables"), "{args:?}: {err}");
    }
    assert_eq!(schema_version(&mut c).unwrap(), 0, "nothing created");
    // A build of the schema before: every migration but the last.
    migrate_with(&mut c, &MIGRATIONS[..MIGRATIONS.len() - 1]).unwrap();
    let was = schema_version(&mut c).unwrap();
    let (ok, _, err) = run(&["recent", "--store", url.as_str()]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "schema version {was} and must be upgraded to {}",
            magnetar_storage_pg::SCHEMA_VERSION
        )),
        "{err}"
    );
    assert_eq!(schema_version(&mut c).unwrap(), was, "not migrated");
    // Upgraded (as a crawler of this build does): read.
    magnetar_storage_pg::migrate(&mut c).unwrap();
    let (ok, out, err) = run(&["stats", "--store", url.as_str()]);
    assert!(ok, "{err}");
    assert!(!out.is_empty());
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path`: (status, body), or None when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A child process killed on drop, its stderr kept.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("MAGNETAR_DB")
            .env_remove("MAGNETAR_STORE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn magnetar");
        let log = Arc::new(Mutex::new(String::new()));
        let (l, err) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Proc { child, log }
    }
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON body without the fields that depend on the second it was rendered.
fn json_body(body: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("scrape_age_secs");
                o.remove("took_ms");
                for x in o.values_mut() {
                    strip(x);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    strip(&mut v);
    v
}

#[test]
fn serve_answers_the_api_alike_from_postgres_and_lmdb() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("serve").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ts = corpus();
    load_both(dir.path(), &url, &ts);
    let (al, ap) = (free_port(), free_port());
    let (sl, sp) = (al.to_string(), ap.to_string());
    let lm = Proc::spawn(&[
        "serve",
        "--listen",
        &sl,
        "--db",
        dir.path().to_str().unwrap(),
    ]);
    let po = Proc::spawn(&["serve", "--listen", &sp, "--store", &url]);
    for (a, p) in [(al, &lm), (ap, &po)] {
        assert!(
            wait_until(Duration::from_secs(20), || http_get(
                a,
                "/api/v1/search?q=x"
            )
            .is_some()),
            "serve did not answer; log:\n{}",
            p.log()
        );
    }
    let word = tokenize(&ts[5].name).next().unwrap();
    let ih = hex(&ts[8].infohash);
    let missing = "00".repeat(20);
    for path in [
        format!("/api/v1/search?q={word}"),
        format!("/api/v1/search?q={word}&sort=size&order=asc&limit=7"),
        format!("/api/v1/torrents/{ih}"),
        format!("/api/v1/torrents/{missing}"),
    ] {
        let (s1, b1) = http_get(al, &path).expect("LMDB serve answers");
        let (s2, b2) = http_get(ap, &path).expect("PostgreSQL serve answers");
        assert_eq!(s1, s2, "{path}: {b1} / {b2}\n{}", po.log());
        if s1 == 200 {
            assert_eq!(json_body(&b1), json_body(&b2), "{path}");
        }
    }
    let (st, body) = http_get(ap, &format!("/api/v1/torrents/{ih}")).unwrap();
    assert_eq!(st, 200);
    assert!(body.contains(&ih), "{body}");
    // The pages work too (the dashboard leaves out what PostgreSQL has no
    // figures for yet).
    let (st, page) = http_get(ap, &format!("/search?q={word}")).unwrap();
    assert_eq!(st, 200, "{page}");
    let (st, _) = http_get(ap, "/").unwrap();
    assert_eq!(st, 200, "{}", po.log());
}

#[test]
fn crawl_stores_fetched_torrents_in_postgres() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("crawl").unwrap();
    let w = world(120, 3, "pg-crawl-ubuntu.iso", 2 * 1024 * 1024 + 5);
    let boot = w.net.addrs[0].to_string();
    let metrics = free_port();
    let ms = metrics.to_string();
    let p = Proc::spawn(&[
        "crawl",
        "--store",
        &url,
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        &boot,
        "--allow-private",
        "--duration",
        "90",
        "--status-interval",
        "1",
        "--metrics",
        &ms,
    ]);
    let ih = w.seeder.info_hash.0;
    let mut store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let stored = wait_until(Duration::from_secs(60), || {
        store.get(&ih).ok().flatten().is_some()
    });
    assert!(stored, "not stored in PostgreSQL; log:\n{}", p.log());
    let t = store.get(&ih).unwrap().unwrap();
    assert_eq!(t.record.name, w.name);
    assert_eq!(t.record.total_size, w.size);
    assert!(store.info(&ih).unwrap().is_some(), "info dict kept");
    assert_eq!(store.count().unwrap(), 1);
    // /metrics has the PostgreSQL writer's figures: reachable, nothing left buffered.
    let gauge = |body: &str, name: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
    };
    let settled = wait_until(Duration::from_secs(10), || {
        http_get(metrics, "/metrics").is_some_and(|(_, b)| {
            gauge(&b, "magnetar_store_pg_down") == Some(0.0)
                && gauge(&b, "magnetar_store_pg_buffered") == Some(0.0)
                && gauge(&b, "magnetar_storage_torrents_new_total") == Some(1.0)
        })
    });
    assert!(settled, "{:?}\n{}", http_get(metrics, "/metrics"), p.log());
    // And the read commands find it there.
    let (ok, out, err) = run(&["search", "--json", "ubuntu", "--store", &url]);
    assert!(ok, "{err}");
    assert!(out.contains(&hex(&ih)), "{out}");
}

/// The node ids of a crawl on PostgreSQL (schema 5): one identity's id and
/// `reused`, in socket order, from the "DHT identity" log lines.
fn pg_crawl_ids(url: &str, extra: &[&str]) -> Vec<(String, bool)> {
    let mut args = vec![
        "crawl",
        "--store",
        url,
        "--bind",
        "127.0.0.1:0,[::1]:0",
        "--bootstrap",
        "127.0.0.1:9",
        "--allow-private",
        "--duration",
        "1",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(&args);
    assert!(ok, "crawl failed:\n{out}{err}");
    let mut ids = Vec::new();
    for line in err
        .lines()
        .chain(out.lines())
        .filter(|l| l.contains("DHT identity"))
    {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        ids.push((field("node_id="), field("reused=") == "true"));
    }
    assert_eq!(ids.len(), 2, "one line per identity:\n{err}");
    ids
}

/// Node ids persist in PostgreSQL as on LMDB, per `--node-name` (default: the
/// host name): a second run reuses them, another name has its own.
#[test]
fn crawl_keeps_node_ids_per_host_in_postgres() {
    let pg = TempPostgres::start().expect("a PostgreSQL server");
    let url = pg.create_database("ids").unwrap();
    let first = pg_crawl_ids(&url, &[]);
    assert!(first.iter().all(|(_, r)| !r), "a new database has no ids");
    assert_ne!(first[0].0, first[1].0);
    let second = pg_crawl_ids(&url, &[]);
    assert_eq!(
        second,
        vec![(first[0].0.clone(), true), (first[1].0.clone(), true)]
    );
    // Another host's name: ids of its own, kept apart.
    let other = pg_crawl_ids(&url, &["--node-name", "crawler-b"]);
    assert!(other.iter().all(|(_, r)| !r));
    assert_ne!(other[0].0, first[0].0);
    let again = pg_crawl_ids(&url, &["--node-name", "crawler-b"]);
    assert_eq!(
        again,
        vec![(other[0].0.clone(), true), (other[1].0.clone(), true)]
    );
    assert_eq!(pg_crawl_ids(&url, &[])[0], (first[0].0.clone(), true));
    // The rows: under (name, identity key).
    let b = magnetar_storage_pg::PgIdentities::connect(&url, "crawler-b").unwrap();
    let kept = b.get("node_id/127.0.0.1#0").unwrap().expect("kept");
    assert_eq!(hex(&kept), other[0].0);
    let c = magnetar_storage_pg::PgIdentities::connect(&url, "crawler-c").unwrap();
    assert_eq!(c.get("node_id/127.0.0.1#0").unwrap(), None);
    // A bad name is refused before anything runs.
    let (ok, _, err) = run(&[
        "crawl",
        "--store",
        &url,
        "--node-name",
        "",
        "--duration",
        "1",
    ]);
    assert!(!ok && err.contains("--node-name"), "{err}");
}
