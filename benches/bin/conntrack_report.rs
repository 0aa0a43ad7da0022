//! Conntrack report: at 10K, 100K and 1M entries, one and two threads:
//! new connections per second (miss + insert), lookup hits (a hot working
//! set of 1,024 connections, and cold: uniformly over all), the expiry
//! sweep, and allocated bytes per entry. Packets go through `track_batch`
//! in batches of 64, as the dataplane's pipeline tracks an rx batch (each
//! batch prefetched before it is tracked); hits are also measured one
//! `track` at a time. Prints a markdown table; `--csv PATH` writes the raw
//! numbers. `CONNTRACK_REPORT_SIZES` (comma-separated entry counts, for
//! example `1000000`) measures only those sizes, for quick A/B runs.
//!
//! Table fills (new connections per second), hits and the sweep are
//! medians of samples taken in turn over `BENCH_SAMPLING_SECONDS`
//! (`microseg_benches::interleaved_medians_ns`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use microseg_benches::conntrack_traffic::{reply, request};
use microseg_benches::{interleaved_medians_ns, median, sampling_seconds};
use microseg_dataplane::classifier::classbench::SplitMix64;
use microseg_dataplane::conntrack::{
    Admission, ConntrackConfig, ConntrackTable, EndReason, TrackOutcome, TrackPacket, ALL_SHARDS,
    BATCH,
};

const ALLOW: Admission = Admission::Allow {
    generation: 1,
    rule_id: 1,
};
const SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];
const HOT_SET: u32 = 1024;
/// Hits per timed sample.
const LOOKUPS: usize = 200_000;
/// Fewest samples of each measurement (more while the sampling time lasts).
const MIN_ROUNDS: usize = 5;

/// `SIZES`, or the sizes `CONNTRACK_REPORT_SIZES` names.
fn sizes() -> Vec<u32> {
    match std::env::var("CONNTRACK_REPORT_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|size| {
                size.trim().parse().unwrap_or_else(|_| {
                    panic!("CONNTRACK_REPORT_SIZES: {size:?} is not an entry count")
                })
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn config(entries: u32) -> ConntrackConfig {
    ConntrackConfig {
        max_entries: entries as usize,
        per_source_limit: u32::MAX,
        event_capacity: 1024,
        ..ConntrackConfig::default()
    }
}

/// Tracks the packets `packet(i)` for every `i` of `keys`, built and
/// tracked one batch at a time (as an rx batch is parsed, then tracked);
/// panics unless every outcome passes `expect`.
fn track_keys(
    table: &ConntrackTable,
    keys: impl Iterator<Item = u32>,
    packet: impl Fn(u32) -> TrackPacket,
    now: u64,
    expect: fn(&TrackOutcome) -> bool,
) {
    let mut batch = [TrackPacket::default(); BATCH];
    let mut outcomes = [TrackOutcome::Denied; BATCH];
    let mut keys = keys.peekable();
    while keys.peek().is_some() {
        let mut filled = 0;
        for (slot, i) in batch.iter_mut().zip(keys.by_ref()) {
            *slot = packet(i);
            filled += 1;
        }
        let outcomes = &mut outcomes[..filled];
        table.track_batch(
            std::hint::black_box(&batch[..filled]),
            now,
            |_| ALLOW,
            outcomes,
        );
        assert!(outcomes.iter().all(expect), "unexpected outcome");
    }
}

fn created(outcome: &TrackOutcome) -> bool {
    matches!(outcome, TrackOutcome::Tracked { created: true, .. })
}

fn hit(outcome: &TrackOutcome) -> bool {
    matches!(outcome, TrackOutcome::Tracked { created: false, .. })
}

/// A table of capacity `entries` filled with as many unreplied
/// connections by `threads`, and the inserts per second it took.
fn filled(entries: u32, threads: u32) -> (Arc<ConntrackTable>, f64) {
    let table = Arc::new(ConntrackTable::new(config(entries)));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let table = Arc::clone(&table);
            scope.spawn(move || {
                let keys = (t..entries).step_by(threads as usize);
                track_keys(&table, keys, request, 0, created);
            });
        }
    });
    let per_second = f64::from(entries) / start.elapsed().as_secs_f64();
    (table, per_second)
}

/// A table holding `entries` replied connections, filled by `threads`.
/// A fill where a shard met its cap before the table did (4σ of headroom:
/// about one 1M-entry fill in 300) early-dropped one of its connections
/// to make room; such a table is filled again, with fresh hash seeds, so
/// that every hit key is there.
fn replied(entries: u32, threads: u32) -> Arc<ConntrackTable> {
    for _ in 0..5 {
        let (table, _) = filled(entries, threads);
        if table.stats().ended(EndReason::EarlyDrop) == 0 {
            track_keys(&table, 0..entries, reply, 1, hit);
            return table;
        }
        eprintln!("a shard filled before the table: filling again");
    }
    panic!("five fills of {entries} entries each filled a shard before the table");
}

/// How hits are measured.
#[derive(Clone, Copy)]
enum Mode {
    /// `track_batch`, 64 packets at a time.
    Batched,
    /// `track`, one packet at a time.
    Single,
}

/// `LOOKUPS` keys of hits drawn uniformly from `0..span`.
fn hit_keys(span: u32) -> Vec<u32> {
    let mut rng = SplitMix64::new(u64::from(span));
    (0..LOOKUPS)
        .map(|_| (rng.next_u64() % u64::from(span)) as u32)
        .collect()
}

/// Tracks the client packets of `keys` (all hits), split over `threads`.
fn track_hits(table: &ConntrackTable, keys: &[u32], threads: u32, mode: Mode) {
    std::thread::scope(|scope| {
        for part in keys.chunks(keys.len().div_ceil(threads as usize)) {
            scope.spawn(move || match mode {
                Mode::Batched => track_keys(table, part.iter().copied(), request, 2, hit),
                Mode::Single => {
                    for &i in part {
                        let outcome = table.track(std::hint::black_box(&request(i)), 2, || ALLOW);
                        assert!(hit(&outcome), "unexpected outcome");
                    }
                }
            });
        }
    });
}

/// New connections per second (filling fresh tables of `entries`), hits
/// on `table` (hot batched, cold batched, hot single, cold single; ns per
/// hit: wall time divided by all the threads' lookups) and a full sweep
/// of it (ns per entry), measured in turn (`interleaved_medians_ns`),
/// each the median of its samples.
fn measure(table: &ConntrackTable, entries: u32, threads: u32) -> [f64; 6] {
    let hot_keys = hit_keys(HOT_SET.min(entries));
    let cold_keys = hit_keys(entries);
    let mut fill_rates = Vec::new();
    let medians = interleaved_medians_ns(
        MIN_ROUNDS,
        sampling_seconds(),
        &mut [
            // Timed inside (the inserts only): the wall time is not used.
            &mut || fill_rates.push(filled(entries, threads).1),
            &mut || track_hits(table, &hot_keys, threads, Mode::Batched),
            &mut || track_hits(table, &cold_keys, threads, Mode::Batched),
            &mut || track_hits(table, &hot_keys, threads, Mode::Single),
            &mut || track_hits(table, &cold_keys, threads, Mode::Single),
            // A full sweep pass where nothing has expired: the scan cost.
            &mut || {
                std::hint::black_box(table.sweep(3, ALL_SHARDS));
            },
        ],
    );
    let per_hit = |ns: f64| ns / LOOKUPS as f64;
    [
        median(&mut fill_rates),
        per_hit(medians[1]),
        per_hit(medians[2]),
        per_hit(medians[3]),
        per_hit(medians[4]),
        medians[5] / f64::from(entries),
    ]
}

fn main() {
    let csv_path = microseg_benches::csv_path_arg("conntrack-report");
    let mut table_md = String::from(
        "| entries | threads | new conn/s | hit, hot (ns) | hit, cold (ns) | single hit, hot (ns) | single hit, cold (ns) | sweep (ns/entry) | bytes/entry |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "entries,threads,new_per_s,hit_hot_ns,hit_cold_ns,single_hot_ns,single_cold_ns,sweep_ns_per_entry,bytes_per_entry\n",
    );
    for entries in sizes() {
        // Memory: everything the table allocates, filled, per entry.
        let mut held = None;
        let memory = allocation_counter::measure(|| held = Some(replied(entries, 1)));
        drop(held);
        let bytes_per_entry = memory.bytes_max as f64 / f64::from(entries);
        for threads in [1u32, 2] {
            eprintln!("measuring {entries} entries, {threads} thread(s)");
            let table = replied(entries, threads);
            let [new_per_s, hot, cold, single_hot, single_cold, sweep] =
                measure(&table, entries, threads);
            let row = format!(
                "| {entries} | {threads} | {:.2} M | {hot:.0} | {cold:.0} | {single_hot:.0} | {single_cold:.0} | {sweep:.1} | {bytes_per_entry:.0} |",
                new_per_s / 1e6
            );
            eprintln!("{row}");
            let _ = writeln!(table_md, "{row}");
            let _ = writeln!(
                csv,
                "{entries},{threads},{new_per_s:.0},{hot:.1},{cold:.1},{single_hot:.1},{single_cold:.1},{sweep:.2},{bytes_per_entry:.1}"
            );
        }
    }
    print!("{table_md}");
    if let Some(path) = csv_path {
        std::fs::write(&path, csv).unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
