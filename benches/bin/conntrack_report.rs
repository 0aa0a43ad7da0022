//! Conntrack report: at 10K, 100K and 1M entries, one and two threads:
//! new connections per second (miss + insert), lookup hits (a hot working
//! set of 1,024 connections, and cold: uniformly over all), the expiry
//! sweep, and allocated bytes per entry. Prints a markdown table; `--csv
//! PATH` writes the raw numbers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use microseg_benches::conntrack_traffic::{reply, request};
use microseg_benches::median_ns;
use microseg_dataplane::classifier::classbench::SplitMix64;
use microseg_dataplane::conntrack::{
    Admission, ConntrackConfig, ConntrackTable, TrackOutcome, ALL_SHARDS,
};

const ALLOW: Admission = Admission::Allow {
    generation: 1,
    rule_id: 1,
};
const SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];
const HOT_SET: u32 = 1024;
const LOOKUPS: usize = 1_000_000;
const RUNS: usize = 5;

fn config(entries: u32) -> ConntrackConfig {
    ConntrackConfig {
        max_entries: entries as usize,
        per_source_limit: u32::MAX,
        event_capacity: 1024,
        ..ConntrackConfig::default()
    }
}

/// A table holding `entries` replied connections, built by `threads`.
fn filled(entries: u32, threads: u32) -> (Arc<ConntrackTable>, f64) {
    let table = Arc::new(ConntrackTable::new(config(entries)));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let table = Arc::clone(&table);
            scope.spawn(move || {
                for i in (t..entries).step_by(threads as usize) {
                    let created = table.track(&request(i), 0, || ALLOW);
                    assert!(matches!(
                        created,
                        TrackOutcome::Tracked { created: true, .. }
                    ));
                }
            });
        }
    });
    let per_second = f64::from(entries) / start.elapsed().as_secs_f64();
    for i in 0..entries {
        table.track(&reply(i), 1, || ALLOW);
    }
    (table, per_second)
}

/// ns per hit over `LOOKUPS` lookups of keys drawn from `0..span`, split
/// over `threads` (wall time ÷ all lookups).
fn hits(table: &ConntrackTable, span: u32, threads: u32) -> f64 {
    let keys: Vec<u32> = {
        let mut rng = SplitMix64::new(u64::from(span));
        (0..LOOKUPS)
            .map(|_| (rng.next_u64() % u64::from(span)) as u32)
            .collect()
    };
    let chunk = LOOKUPS / threads as usize;
    median_ns(RUNS, || {
        std::thread::scope(|scope| {
            for part in keys.chunks(chunk) {
                scope.spawn(move || {
                    for &i in part {
                        let outcome = table.track(std::hint::black_box(&request(i)), 2, || ALLOW);
                        assert!(matches!(
                            outcome,
                            TrackOutcome::Tracked { created: false, .. }
                        ));
                    }
                });
            }
        });
    }) / LOOKUPS as f64
}

fn main() {
    let csv_path = microseg_benches::csv_path_arg("conntrack-report");
    let mut table_md = String::from(
        "| entries | threads | new conn/s | hit, hot (ns) | hit, cold (ns) | sweep (ns/entry) | bytes/entry |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "entries,threads,new_per_s,hit_hot_ns,hit_cold_ns,sweep_ns_per_entry,bytes_per_entry\n",
    );
    for entries in SIZES {
        // Memory: everything the table allocates, filled, per entry.
        let mut held = None;
        let memory = allocation_counter::measure(|| held = Some(filled(entries, 1)));
        drop(held);
        let bytes_per_entry = memory.bytes_max as f64 / f64::from(entries);
        for threads in [1u32, 2] {
            eprintln!("measuring {entries} entries, {threads} thread(s)");
            let inserts: Vec<f64> = (0..3).map(|_| filled(entries, threads).1).collect();
            let mut sorted = inserts.clone();
            sorted.sort_by(f64::total_cmp);
            let new_per_s = sorted[1];
            let (table, _) = filled(entries, threads);
            let hot = hits(&table, HOT_SET.min(entries), threads);
            let cold = hits(&table, entries, threads);
            // A full sweep pass where nothing has expired: the scan cost.
            let sweep = median_ns(RUNS, || {
                std::hint::black_box(table.sweep(3, ALL_SHARDS));
            }) / f64::from(entries);
            let _ = writeln!(
                table_md,
                "| {entries} | {threads} | {:.2} M | {hot:.0} | {cold:.0} | {sweep:.1} | {bytes_per_entry:.0} |",
                new_per_s / 1e6
            );
            let _ = writeln!(
                csv,
                "{entries},{threads},{new_per_s:.0},{hot:.1},{cold:.1},{sweep:.2},{bytes_per_entry:.1}"
            );
        }
    }
    print!("{table_md}");
    if let Some(path) = csv_path {
        std::fs::write(&path, csv).unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
