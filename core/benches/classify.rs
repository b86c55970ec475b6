//! Criterion benchmark: classification throughput (issue 20 §1) over the names and file
//! lists of the classifier corpus (core/tests/fixtures/classify/corpus.jsonl), to be set
//! against the store writer's per-torrent cost. `parse_only` classifies the names with
//! no files (what a torrent known by name only costs); `with_files` adds every file.
//!
//! `filter/*`: the operator rules (issue 20 §2) checked against every torrent of the
//! corpus (name and paths), with 10 and with 10,000 keyword rules (none of which
//! matches, the common case: every word of every name and path is looked up).
//!
//! Run: `cargo bench -p magnetar-core --bench classify -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use magnetar_core::classify::{classify, ContentKind};
use magnetar_core::filter::Rules;

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

/// `n` keyword rules of made-up words (one and two words) that no corpus name holds.
fn rules(n: usize) -> Rules {
    let mut text = String::new();
    for i in 0..n {
        if i % 2 == 0 {
            text.push_str(&format!("r{i}: drop words zq{i}x\n"));
        } else {
            text.push_str(&format!("r{i}: hide words \"zq{i} zr{i}\"\n"));
        }
    }
    Rules::parse(&text).expect("valid rules")
}

fn bench_filter(c: &mut Criterion) {
    let rows = corpus();
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(rows.len() as u64));
    for n in [10, 10_000] {
        let r = rules(n);
        g.bench_function(format!("check_{}_names_{n}_rules", rows.len()), |b| {
            b.iter(|| {
                for (name, fs) in &rows {
                    let paths = fs.iter().map(|(p, _)| p.as_str());
                    black_box(r.check(&[0; 20], ContentKind::Other, black_box(name), paths));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_filter);
criterion_main!(benches);
