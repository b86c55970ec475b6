//! The classifier gives exactly what it gave before it was made faster (issue 20 §1):
//! every name of core/tests/fixtures/classify/corpus.jsonl is classified four ways
//! (with its files, by name only, the name upper-cased, the name with `.` read as
//! spaces) and the result compared with `expected.txt` beside the corpus, written by
//! the classifier as it was before (commit 8ac8d5e's rules, string `match` tables).
//!
//! Each line of `expected.txt` is the with-files classification in a compact form and
//! an FNV-1a hash of all four forms. When the rules change on purpose, write the file
//! again: `MAGNETAR_CLASSIFY_BLESS=1 cargo test -p magnetar-core --test classify_expected`.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use magnetar_core::classify::{classify, Classification};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classify")
}

fn compact(c: &Classification) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:x}|{}",
        c.kind.as_str(),
        c.title.as_deref().unwrap_or("-"),
        c.year,
        c.seasons,
        c.episodes,
        c.date,
        c.resolution.map(|r| r.as_str()),
        c.source.map(|r| r.as_str()),
        c.video_codec.map(|r| r.as_str()),
        c.audio.map(|r| r.as_str()),
        c.languages.0,
        c.torznab()
    );
    s
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The four forms of one row, compacted.
fn forms(row: &Value) -> [String; 4] {
    let name = row["name"].as_str().expect("name");
    let files: Vec<(String, u64)> = row["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f[0].as_str().expect("path").to_owned(),
                f[1].as_u64().expect("size"),
            )
        })
        .collect();
    let none = std::iter::empty::<(&str, u64)>;
    [
        compact(&classify(name, files.iter().map(|(p, s)| (p.as_str(), *s)))),
        compact(&classify(name, none())),
        compact(&classify(&name.to_uppercase(), none())),
        compact(&classify(&name.replace('.', " "), none())),
    ]
}

fn line(f: &[String; 4]) -> String {
    format!("{}\t{:016x}", f[0], fnv(&f.join("\n")))
}

#[test]
fn the_classifier_gives_what_it_gave_before() {
    let corpus = fs::read_to_string(dir().join("corpus.jsonl")).expect("corpus");
    let rows: Vec<Value> = corpus
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let got: Vec<String> = rows.iter().map(|r| line(&forms(r))).collect();
    let path = dir().join("expected.txt");
    if std::env::var_os("MAGNETAR_CLASSIFY_BLESS").is_some() {
        fs::write(&path, got.join("\n") + "\n").expect("write expected.txt");
        return;
    }
    let want = fs::read_to_string(&path).expect("expected.txt");
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want.len(), rows.len(), "one expected line per corpus row");
    let mut bad = 0;
    for ((row, g), w) in rows.iter().zip(&got).zip(&want) {
        if g != w {
            bad += 1;
            if bad <= 20 {
                let f = forms(row);
                eprintln!(
                    "differs: {}\n  want {w}\n  got  {g}\n  forms {f:#?}",
                    row["name"]
                );
            }
        }
    }
    assert_eq!(
        bad,
        0,
        "{bad} of {} names classified differently",
        rows.len()
    );
}
