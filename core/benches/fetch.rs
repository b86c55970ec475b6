//! Criterion benchmarks: fetch. (Placeholder until the fetch work lands.)
use criterion::{criterion_group, criterion_main, Criterion};

fn placeholder(_c: &mut Criterion) {}

criterion_group!(benches, placeholder);
criterion_main!(benches);
