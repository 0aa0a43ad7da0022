//! Criterion: conntrack lookup hits (hot working set and cold over 1M
//! entries; cold hits also in batches as the pipeline makes them, UDP and
//! TCP) and new connections (miss + insert). The table in
//! docs/benchmarks.md comes from the `conntrack-report` binary, which also
//! covers two threads, the sweep and memory.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use microseg_benches::conntrack_traffic::{reply, request, tcp_ack, tcp_handshake};
use microseg_dataplane::conntrack::{
    Admission, ConntrackConfig, ConntrackTable, TrackOutcome, TrackPacket,
};
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

/// Tracks `packets` through `track_batch`, as the pipeline does, into
/// `out` (one outcome per packet), and counts those tracked.
fn tracked_in_batches(
    table: &ConntrackTable,
    packets: &[TrackPacket],
    out: &mut [TrackOutcome],
) -> usize {
    table.track_batch(black_box(packets), 1, |_| ALLOW, out);
    out.iter()
        .filter(|outcome| matches!(outcome, TrackOutcome::Tracked { .. }))
        .count()
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
    let udp: Vec<TrackPacket> = batch.iter().map(|&i| request(i)).collect();
    let mut outcomes = vec![TrackOutcome::Denied; batch.len()];
    group.bench_function("hit_cold_batched_udp", |b| {
        b.iter(|| tracked_in_batches(&table, &udp, &mut outcomes))
    });
    drop(table);
    // The same over a million established TCP connections: a TCP hit also
    // reads the windows, in the slot's second part.
    let table = ConntrackTable::new(config());
    for i in 0..ENTRIES {
        for segment in tcp_handshake(i) {
            table.track(&segment, 0, || ALLOW);
        }
    }
    let tcp: Vec<TrackPacket> = batch.iter().map(|&i| tcp_ack(i)).collect();
    assert_eq!(
        tracked_in_batches(&table, &tcp, &mut outcomes),
        tcp.len(),
        "every ACK is in window"
    );
    group.bench_function("hit_cold_batched_tcp", |b| {
        b.iter(|| tracked_in_batches(&table, &tcp, &mut outcomes))
    });
    drop(table);
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
