//! Criterion: conntrack lookup hits (hot working set and cold over 1M
//! entries) and new connections (miss + insert). The table in
//! docs/benchmarks.md comes from the `conntrack-report` binary, which also
//! covers two threads, the sweep and memory.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use microseg_benches::conntrack_traffic::{reply, request};
use microseg_dataplane::conntrack::{Admission, ConntrackConfig, ConntrackTable, TrackOutcome};
use std::hint::black_box;

const ALLOW: Admission = Admission::Allow {
    generation: 1,
    rule_id: 1,
};
const ENTRIES: u32 = 1_000_000;

fn config() -> ConntrackConfig {
    ConntrackConfig {
        max_entries: ENTRIES as usize,
        per_source_limit: u32::MAX,
        event_capacity: 1024,
        ..ConntrackConfig::default()
    }
}

fn tracked(table: &ConntrackTable, i: u32) -> bool {
    matches!(
        table.track(black_box(&request(i)), 1, || ALLOW),
        TrackOutcome::Tracked { .. }
    )
}

fn bench(c: &mut Criterion) {
    let table = ConntrackTable::new(config());
    for i in 0..ENTRIES {
        table.track(&request(i), 0, || ALLOW);
        table.track(&reply(i), 0, || ALLOW);
    }
    let mut group = c.benchmark_group("conntrack_1M");
    let batch: Vec<u32> = (0..10_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % ENTRIES)
        .collect();
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("hit_cold", |b| {
        b.iter(|| batch.iter().filter(|&&i| tracked(&table, i)).count())
    });
    let hot: Vec<u32> = batch.iter().map(|i| i % 1024).collect();
    group.bench_function("hit_hot", |b| {
        b.iter(|| hot.iter().filter(|&&i| tracked(&table, i)).count())
    });
    group.sample_size(10);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("insert_100k_new", |b| {
        b.iter_batched(
            || {
                ConntrackTable::new(ConntrackConfig {
                    max_entries: 100_000,
                    ..config()
                })
            },
            |fresh| {
                for i in 0..100_000 {
                    fresh.track(&request(i), 0, || ALLOW);
                }
                fresh
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
