//! The classifier against an independent oracle (issue 20 §1): Python's guessit.
//!
//! core/tests/fixtures/classify/corpus.jsonl holds the names (made by gen.py there, plus
//! every torrent name of the repository's fixtures); guessit.jsonl holds what guessit
//! made of each (made by `compare.py oracle`, so CI needs no guessit). This test
//! classifies every name and asserts that title, year, season, episode, resolution,
//! source and codec agree with guessit on at least 95 % of the names, field by field,
//! and that the content kind matches the kind the generator meant on at least 95 %.
//!
//! `MAGNETAR_CLASSIFY_DUMP=FILE` also writes magnetar's fields as JSON lines for
//! `compare.py compare FILE` (which lists the disagreements).

use std::fs;
use std::path::PathBuf;

use magnetar_core::classify::{classify, Classification};
use serde_json::{json, Value};

const FIELDS: [&str; 7] = [
    "title",
    "year",
    "season",
    "episode",
    "resolution",
    "source",
    "codec",
];
const MIN_AGREEMENT: f64 = 0.95;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classify")
}

fn lines(file: &str) -> Vec<Value> {
    let text = fs::read_to_string(dir().join(file)).expect("fixture file");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn range_list<T: Into<u64> + Copy>(r: Option<(T, T)>) -> Value {
    match r {
        None => Value::Null,
        Some((a, b)) => {
            let (a, b) = (a.into(), b.into());
            Value::from((a..=b.min(a + 2000)).collect::<Vec<u64>>())
        }
    }
}

/// Magnetar's answer in guessit's vocabulary (the fields compare.py writes).
fn fields(name: &str, c: &Classification) -> Value {
    json!({
        "name": name,
        "title": c.title,
        "year": c.year,
        "season": range_list(c.seasons),
        "episode": range_list(c.episodes),
        "resolution": c.resolution.map(|r| r.as_str()),
        "source": c.source.map(|s| s.as_str()),
        "codec": c.video_codec.map(|v| v.as_str()),
    })
}

fn classify_row(row: &Value) -> Classification {
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
    classify(name, files.iter().map(|(p, s)| (p.as_str(), *s)))
}

#[test]
fn agrees_with_guessit_on_every_field() {
    let corpus = lines("corpus.jsonl");
    let oracle = lines("guessit.jsonl");
    assert_eq!(
        corpus.len(),
        oracle.len(),
        "rerun compare.py oracle after gen.py"
    );
    assert!(
        corpus.len() >= 2000,
        "the corpus has {} names",
        corpus.len()
    );
    let mut agree = [0usize; FIELDS.len()];
    let mut dump = String::new();
    for (row, g) in corpus.iter().zip(&oracle) {
        let name = row["name"].as_str().expect("name");
        assert_eq!(
            g["name"].as_str(),
            Some(name),
            "corpus and guessit.jsonl out of step"
        );
        let m = fields(name, &classify_row(row));
        for (a, f) in agree.iter_mut().zip(FIELDS) {
            if m[f] == g[f] {
                *a += 1;
            }
        }
        dump.push_str(&m.to_string());
        dump.push('\n');
    }
    if let Ok(path) = std::env::var("MAGNETAR_CLASSIFY_DUMP") {
        fs::write(path, dump).expect("write the dump");
    }
    let n = corpus.len();
    let mut low = Vec::new();
    println!("agreement with guessit over {n} names:");
    for (a, f) in agree.iter().zip(FIELDS) {
        let share = *a as f64 / n as f64;
        println!("  {f:11} {:6.2} %  ({a}/{n})", share * 100.0);
        if share < MIN_AGREEMENT {
            low.push(f);
        }
    }
    assert!(
        low.is_empty(),
        "fields under {} %: {low:?}",
        MIN_AGREEMENT * 100.0
    );
}

#[test]
fn content_kinds_match_what_the_generator_meant() {
    let corpus = lines("corpus.jsonl");
    let mut right = 0;
    let mut wrong = Vec::new();
    for row in &corpus {
        let meant = row["kind"].as_str().expect("kind");
        let got = classify_row(row).kind.as_str();
        if got == meant {
            right += 1;
        } else {
            wrong.push(format!(
                "{:?}: meant {meant}, got {got}",
                row["name"].as_str()
            ));
        }
    }
    let share = right as f64 / corpus.len() as f64;
    println!(
        "content kind right for {right}/{} ({:.2} %)",
        corpus.len(),
        share * 100.0
    );
    for w in wrong.iter().take(40) {
        println!("  {w}");
    }
    assert!(
        share >= MIN_AGREEMENT,
        "content kind right for only {:.2} %",
        share * 100.0
    );
}
