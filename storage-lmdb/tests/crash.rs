//! Crash safety: SIGKILL a writing child at seeded random points; after each kill the
//! database opens, passes the integrity walk, and holds every batch the child
//! reported as committed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use magnetar_storage::synth::{Rng, Synth};
use magnetar_storage::{wait_closed, Store, StoreOptions};

const PER_BATCH: u64 = 300; // as in src/bin/storage-crash-child.rs
const KILLS: usize = 24;

#[test]
fn sigkill_loses_no_committed_batch() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_917);
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} replays the kill schedule)");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = Rng::new(seed);
    let mut committed: Vec<u64> = Vec::new();
    let mut next_batch = 0u64;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    while kills < KILLS {
        assert!(
            Instant::now() < deadline,
            "crash test ran out of time after {kills} kills"
        );
        // A small initial map in half of the runs: kills also land during map growth.
        let map = if rng.below(2) == 0 {
            "1048576"
        } else {
            "1073741824"
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage-crash-child"))
            .arg(&path)
            .arg(seed.to_string())
            .arg(next_batch.to_string())
            .arg(map)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(b) = line.trim().parse::<u64>() {
                    let _ = tx.send(b);
                }
            }
        });
        // Wait for at least one commit now and then, so the run makes progress, then
        // kill at a random point.
        let must_commit = rng.below(4) != 0;
        if must_commit {
            let _ = rx.recv_timeout(Duration::from_secs(20));
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "child exited by itself: {status:?}");
        reader.join().unwrap();
        let reported: Vec<u64> = rx.try_iter().collect();
        committed.extend(&reported);
        if let Some(&b) = reported.last() {
            next_batch = b + 1;
        }
        kills += 1;

        // The database opens, is consistent, and has every reported batch.
        let store = Store::open(StoreOptions::new(&path)).expect("open after kill");
        let report = store.integrity_check().unwrap();
        assert!(
            report.is_ok(),
            "integrity after kill {kills}: {:?}",
            report.problems
        );
        for &b in &committed {
            let mut synth = Synth::new(seed ^ b.wrapping_mul(0x9e37_79b9));
            for i in 0..PER_BATCH {
                let t = synth.torrent(1_700_000_000 + b * 1000 + i, i % 3 == 0);
                let got = store.get(&t.infohash).unwrap();
                let got =
                    got.unwrap_or_else(|| panic!("batch {b} torrent {i} lost after kill {kills}"));
                assert_eq!(got.record.name, t.name);
                assert_eq!(got.files, t.files);
            }
        }
        assert!(store.count().unwrap() >= committed.len() as u64 * PER_BATCH);
        drop(store);
        wait_closed(&path);
    }
    eprintln!(
        "{kills} kills, {} batches committed and verified",
        committed.len()
    );
    assert!(
        committed.len() >= 5,
        "too few commits to mean anything: {}",
        committed.len()
    );
}
