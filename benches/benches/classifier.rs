//! Criterion: ns per lookup of the compiled classifier (single and batched)
//! and the linear reference, and build time, on ClassBench sets. The
//! markdown table in docs/benchmarks.md comes from the `classifier-report`
//! binary; this bench gives criterion's statistics for the same cases.
//! `cargo bench -p microseg-benches --bench classifier -- 10k` picks sets.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use microseg_benches::{load_rules, trace, CLASSBENCH_SETS};
use microseg_dataplane::classifier::{Classifier, LinearClassifier};
use std::hint::black_box;

const TRACE_KEYS: usize = 10_000;

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for set in CLASSBENCH_SETS {
        let rules = load_rules(set);
        let keys = trace(&rules, TRACE_KEYS);
        let tree = Classifier::build(rules.clone()).expect("builds");
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_with_input(BenchmarkId::new("single", set), &keys, |b, keys| {
            b.iter(|| {
                keys.iter()
                    .filter_map(|k| tree.classify(black_box(k)))
                    .count()
            })
        });
        let mut out = vec![None; keys.len()];
        group.bench_with_input(BenchmarkId::new("batched", set), &keys, |b, keys| {
            b.iter(|| tree.classify_batch(black_box(keys), &mut out))
        });
        let linear = LinearClassifier::new(rules.clone());
        let few = &keys[..(2_000_000 / rules.len()).clamp(50, keys.len())];
        group.throughput(Throughput::Elements(few.len() as u64));
        group.bench_with_input(BenchmarkId::new("linear", set), few, |b, keys| {
            b.iter(|| {
                keys.iter()
                    .filter_map(|k| linear.classify(black_box(k)))
                    .count()
            })
        });
    }
    group.finish();
}

fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for set in CLASSBENCH_SETS {
        let rules = load_rules(set);
        group.bench_with_input(BenchmarkId::from_parameter(set), &rules, |b, rules| {
            b.iter(|| Classifier::build(rules.clone()).expect("builds"))
        });
    }
    group.finish();
}

criterion_group!(benches, lookups, builds);
criterion_main!(benches);
