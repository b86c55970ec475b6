//! Classifies every torrent of the classifier corpus (name and files) `ROUNDS` times
//! (first argument, default 1): a fixed workload for instruction counts, e.g.
//!
//!     cargo build --release -p magnetar-core --example classify_corpus
//!     valgrind --tool=callgrind --toggle-collect='*classify*classify*' \
//!       target/release/examples/classify_corpus 1
//!
//! Prints the number of classifications and a checksum of the results.
use magnetar_core::classify::classify;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/classify/corpus.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("corpus.jsonl");
    let rows: Vec<(String, Vec<(String, u64)>)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let files = v["files"]
                .as_array()
                .expect("files")
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap_or("").to_owned(),
                        f[1].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            (v["name"].as_str().unwrap_or("").to_owned(), files)
        })
        .collect();
    let mut n = 0u64;
    let mut sum = 0u64;
    for _ in 0..rounds {
        for (name, files) in &rows {
            let c = classify(name, files.iter().map(|(p, s)| (p.as_str(), *s)));
            n += 1;
            sum = sum
                .wrapping_mul(31)
                .wrapping_add(u64::from(c.torznab()))
                .wrapping_add(c.title.map_or(0, |t| t.len() as u64));
        }
    }
    println!(
        "{n} classifications over {} torrents, checksum {sum:x}",
        rows.len()
    );
}
