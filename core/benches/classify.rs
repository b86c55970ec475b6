//! Criterion benchmark: classification throughput (issue 20 §1) over the names and file
//! lists of the classifier corpus (core/tests/fixtures/classify/corpus.jsonl), to be set
//! against the store writer's per-torrent cost. `parse_only` classifies the names with
//! no files (what a torrent known by name only costs); `with_files` adds every file.
//!
//! Run: `cargo bench -p magnetar-core --bench classify -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use magnetar_core::classify::classify;

type Row = (String, Vec<(String, u64)>);

fn corpus() -> Vec<Row> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/classify/corpus.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("corpus.jsonl");
    text.lines()
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
        .collect()
}

fn bench(c: &mut Criterion) {
    let rows = corpus();
    let files: usize = rows.iter().map(|r| r.1.len()).sum();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function(format!("parse_only_{}_names", rows.len()), |b| {
        b.iter(|| {
            for (name, _) in &rows {
                black_box(classify(black_box(name), std::iter::empty()));
            }
        })
    });
    g.bench_function(
        format!("with_files_{}_names_{files}_files", rows.len()),
        |b| {
            b.iter(|| {
                for (name, fs) in &rows {
                    black_box(classify(
                        black_box(name),
                        fs.iter().map(|(p, s)| (p.as_str(), *s)),
                    ));
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
