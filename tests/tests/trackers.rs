//! Trackers as a fallback source of peers, against a real tracker: Debian's
//! `opentracker` (apt-get install opentracker), started by this test on 127.0.0.2
//! inside a network namespace that has only `lo`, serving UDP (BEP 15) and HTTP on
//! port 6969. libtorrent seeders with the DHT off announce the torrents to it only;
//! a DHT of libtorrent nodes holds no peers for them, and two queriers look them
//! up with plain get_peers (tests/interop/tracker_swarm.py): two addresses, because
//! an infohash heard in get_peers from one address only is no evidence of a torrent,
//! and a crawler asks trackers only about those with evidence. Crawlers with
//! `--trackers udp://…` and `--trackers http://…` (mio and tokio) must fetch every
//! torrent; one without `--trackers`, in the same swarm at the same time, hears of
//! every infohash but must store none.
//!
//! Needs root (for `ip netns`), `opentracker`, and `python3 -m pip install
//! 'libtorrent>=2.1,<2.2'`. None is optional: without them this test fails and
//! says why.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{export, Netns, Proc};

const TRACKER_IP: &str = "127.0.0.2";
const PORT: u16 = 6881;
const TORRENTS: usize = 3;

fn require_tools() {
    support::require_libtorrent("this test");
    let ok = Command::new("sh")
        .args(["-c", "command -v opentracker"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs a real tracker: apt-get install opentracker"
    );
}

/// One crawler of the run.
struct Crawler {
    label: String,
    trackers: Option<String>,
    db: PathBuf,
    proc: Proc,
}

fn start_crawler(
    ns: &Netns,
    dir: &Path,
    i: usize,
    runtime: &str,
    trackers: Option<String>,
    bootstrap: &str,
) -> Crawler {
    let bind = format!("127.0.0.{}:{PORT}", 3 + i);
    let db = dir.join(format!("db-{i}"));
    let mut cmd = ns.command(support::magnetar_bin());
    cmd.args([
        "--log-format",
        "json",
        "crawl",
        "--runtime",
        runtime,
        "--db",
    ])
    .arg(&db)
    .args(["--bind", &bind, "--bootstrap", bootstrap])
    .args(["--allow-private", "--duration", "200"]);
    if let Some(t) = &trackers {
        cmd.args(["--trackers", t]);
    }
    // The counters tell when the peer searches have given up, and what the
    // tracker clients did.
    cmd.args(["--metrics", &metrics_addr(i)]);
    cmd.env(
        "RUST_LOG",
        std::env::var("MAGNETAR_TEST_LOG")
            .unwrap_or_else(|_| "info,magnetar::timeline=debug".into()),
    )
    .stdin(Stdio::null());
    let label = format!(
        "magnetar crawl --runtime {runtime} {}",
        trackers
            .as_deref()
            .map_or("(no --trackers)".to_string(), |t| format!("--trackers {t}"))
    );
    Crawler {
        proc: Proc::spawn(&label, cmd),
        label,
        trackers,
        db,
    }
}

fn metrics_addr(i: usize) -> String {
    format!("127.0.0.{}:9100", 3 + i)
}

/// A counter of the crawler's `/metrics` (read from inside the namespace).
fn metric(ns: &Netns, addr: &str, name: &str) -> Option<u64> {
    let out = ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request; print(urllib.request.urlopen('http://{addr}/metrics', timeout=5).read().decode())"
            ),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|x| x as u64)
}

/// Whether the crawler's JSON log has an event `message` for `ih`.
fn logged(log: &str, message: &str, ih: &str) -> bool {
    log.lines().any(|l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["fields"]["message"] == message && v["fields"]["info_hash"] == ih)
    })
}

/// The tracker's seeder count for `ih` in the crawler's log, at most.
fn tracker_seeders(log: &str, ih: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "tracker reply" && v["fields"]["info_hash"] == ih)
        .filter_map(|v| v["fields"]["seeders"].as_u64())
        .max()
}

#[test]
fn trackers_supply_peers_the_dht_does_not_have() {
    require_tools();
    // Built before the swarm starts its clock.
    support::magnetar_bin();
    let ns = Netns::new("trk");
    let dir = tempfile::tempdir().unwrap();
    let script = support::workspace().join("tests/interop/tracker_swarm.py");
    let crawlers_at: Vec<String> = (0..5)
        .map(|i| format!("127.0.0.{}:{PORT}", 3 + i))
        .collect();
    let mut cmd = ns.command("python3");
    cmd.arg(&script).arg("--workdir").arg(dir.path()).args([
        "--tracker",
        &format!("http://{TRACKER_IP}:6969/announce"),
        "--torrents",
        &TORRENTS.to_string(),
        "--max-secs",
        "260",
        // With the five crawlers and the other querier, eight nodes besides a
        // querier: its every get_peers lookup (k = 8) reaches every crawler.
        "--dht-nodes",
        "2",
    ]);
    for c in &crawlers_at {
        cmd.args(["--crawler", c]);
    }
    let (mut swarm, mut stdin, events) = Proc::spawn_json("tracker swarm", cmd);
    let next = |what: &str, swarm: &mut Proc| loop {
        match events.recv_timeout(Duration::from_secs(120)) {
            Ok(v) if v["event"] == what => break v,
            Ok(_) => {}
            Err(e) => panic!(
                "the swarm never sent {what:?} ({e}; alive: {}):\n{}",
                swarm.alive(),
                swarm.tail(40)
            ),
        }
    };
    let torrents: Vec<(String, String, u64)> = next("torrents", &mut swarm)["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["infohash"].as_str().unwrap().to_string(),
                t["name"].as_str().unwrap().to_string(),
                t["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(torrents.len(), TORRENTS);

    // The tracker: Debian builds opentracker with a whitelist (only listed
    // infohashes are tracked). It chroots into `-d` when run as root, so the
    // whitelist's path is given inside that directory.
    let otdir = dir.path().join("opentracker");
    std::fs::create_dir_all(&otdir).unwrap();
    let list: String = torrents
        .iter()
        .map(|(ih, _, _)| format!("{ih}\n"))
        .collect();
    std::fs::write(otdir.join("whitelist.txt"), list).unwrap();
    std::fs::write(
        otdir.join("opentracker.conf"),
        "access.whitelist /whitelist.txt\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.path().to_path_buf(), otdir.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let mut ot = ns.command("opentracker");
    ot.args(["-i", TRACKER_IP, "-p", "6969", "-P", "6969", "-f"])
        .arg(otdir.join("opentracker.conf"))
        .arg("-d")
        .arg(&otdir)
        .stdin(Stdio::null());
    let mut tracker = Proc::spawn("opentracker", ot);
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    let ready = next("ready", &mut swarm);
    eprintln!("swarm ready: {ready}");
    assert!(tracker.alive(), "opentracker exited:\n{}", tracker.tail(20));
    let bootstrap = ready["nodes"][0].as_str().unwrap().to_string();

    let udp = format!("udp://{TRACKER_IP}:6969");
    let http = format!("http://{TRACKER_IP}:6969/announce");
    let plan = [
        ("mio", Some(udp.clone())),
        ("tokio", Some(http.clone())),
        ("tokio", Some(udp)),
        ("mio", Some(http)),
        ("mio", None),
    ];
    let mut crawlers: Vec<Crawler> = plan
        .into_iter()
        .enumerate()
        .map(|(i, (rt, t))| start_crawler(&ns, dir.path(), i, rt, t, &bootstrap))
        .collect();

    // Until every crawler with a tracker fetched every torrent, and the one without
    // has heard of every infohash and its peer searches found nobody (counted in
    // its /metrics) — bounded.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        for c in &mut crawlers {
            assert!(
                c.proc.alive(),
                "{} exited early:\n{}",
                c.label,
                c.proc.tail(40)
            );
        }
        assert!(swarm.alive(), "the swarm exited:\n{}", swarm.tail(40));
        let done = crawlers.iter().enumerate().all(|(i, c)| {
            let log = c.proc.log();
            match c.trackers {
                Some(_) => torrents
                    .iter()
                    .all(|(ih, _, _)| logged(&log, "metadata fetched", ih)),
                None => metric(
                    &ns,
                    &metrics_addr(i),
                    "magnetar_crawl_acquire_no_peers_total",
                )
                .is_some_and(|n| n >= TORRENTS as u64),
            }
        });
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stdin);
    let counters = [
        "magnetar_crawl_acquire_no_peers_total",
        "magnetar_tracker_asked_total",
        "magnetar_tracker_unconfirmed_total",
        "magnetar_tracker_requests_total",
        "magnetar_tracker_announces_total",
        "magnetar_tracker_peers_total",
        "magnetar_tracker_failed_total",
        "magnetar_tracker_refused_total",
        "magnetar_tracker_malformed_total",
        "magnetar_crawl_fetched_total",
    ];
    for (i, c) in crawlers.iter().enumerate() {
        let v: Vec<String> = counters
            .iter()
            .map(|n| format!("{}={:?}", &n[9..], metric(&ns, &metrics_addr(i), n)))
            .collect();
        eprintln!("{}: {}", c.label, v.join(" "));
        // Only the torrents were asked about: the infohashes of libtorrent's
        // table refreshes (get_peers from one address each) found nobody too,
        // and were counted instead.
        if c.trackers.is_some() {
            let asked = metric(&ns, &metrics_addr(i), "magnetar_tracker_asked_total");
            assert_eq!(asked, Some(TORRENTS as u64), "{}", c.label);
        }
    }
    for c in &mut crawlers {
        let st = c.proc.terminate(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({st:?}):\n{}",
            c.label,
            c.proc.tail(40)
        );
    }
    let _ = swarm.terminate(Duration::from_secs(10));
    let _ = tracker.terminate(Duration::from_secs(5));
    if let Some(d) = std::env::var_os("MAGNETAR_INTEROP_LOG_DIR") {
        for (i, c) in crawlers.iter().enumerate() {
            let path = Path::new(&d).join(format!("trackers-crawler-{i}.jsonl"));
            std::fs::write(&path, c.proc.log()).unwrap();
            eprintln!("{} log: {}", c.label, path.display());
        }
        std::fs::write(
            Path::new(&d).join("trackers-opentracker.log"),
            tracker.log(),
        )
        .unwrap();
    }
    for c in &crawlers {
        let log = c.proc.log();
        let m = export(&c.db).unwrap_or_else(|e| panic!("export of {}: {e}", c.label));
        for (ih, name, size) in &torrents {
            assert!(
                logged(&log, "infohash discovered", ih),
                "{} never heard of {name} ({ih}) from the queriers:\n{}",
                c.label,
                c.proc.tail(40)
            );
            match &c.trackers {
                Some(t) => {
                    let e = m.get(ih).unwrap_or_else(|| {
                        panic!(
                            "{} did not store {name} ({ih}) though {t} tracks it; stored {:?}\n{}",
                            c.label,
                            m.keys().collect::<Vec<_>>(),
                            c.proc.tail(60)
                        )
                    });
                    assert_eq!((&e.name, e.size), (name, *size));
                    // The tracker's counts came out as an event, with it as source.
                    let seeders = tracker_seeders(&log, ih);
                    assert!(
                        seeders.is_some_and(|s| s >= 2),
                        "{}: tracker counts for {ih}: {seeders:?}",
                        c.label
                    );
                }
                None => assert!(
                    !m.contains_key(ih),
                    "{} stored {name} without a tracker: the DHT is supposed to have no \
                     peers for it, so the test proves nothing",
                    c.label
                ),
            }
        }
        eprintln!("{}: stored {} torrents", c.label, m.len());
    }
}
