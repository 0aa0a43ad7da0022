//! Classifier report: for every ClassBench set (and IPv6 sets derived from
//! the 10k ones) builds the compiled classifier and the linear reference and
//! measures, in the same run: build time, memory, shape, and ns per lookup
//! single, batched and linear. Prints a markdown table; `--csv PATH` also
//! writes the raw numbers.
//!
//! Timings are medians of several runs over a trace generated from the
//! rules (`microseg_benches::trace`); single and batched lookups are
//! sampled in turn for `BENCH_SAMPLING_SECONDS`
//! (`microseg_benches::interleaved_medians_ns`).

use std::fmt::Write as _;

use microseg_benches::{
    interleaved_medians_ns, load_rules, median_ns, sampling_seconds, trace, CLASSBENCH_SETS,
};
use microseg_dataplane::classifier::{classbench, Classifier, LinearClassifier, Rule};

const TRACE_KEYS: usize = 100_000;
const BUILD_RUNS: usize = 5;
/// Fewest samples of each lookup timing (more while the sampling time
/// lasts: `microseg_benches::sampling_seconds`).
const LOOKUP_ROUNDS: usize = 7;
/// Linear lookups cost O(rules): keep each run near a few hundred ms.
const LINEAR_WORK: usize = 200_000_000;

struct Row {
    set: String,
    rules: usize,
    trees: usize,
    depth: usize,
    replication: f64,
    memory_bytes: usize,
    build_ms: f64,
    single_ns: f64,
    batch_ns: f64,
    linear_ns: f64,
}

fn measure(set: &str, rules: Vec<Rule<()>>) -> Row {
    let keys = trace(&rules, TRACE_KEYS);
    let build_ms = median_ns(BUILD_RUNS, || {
        std::hint::black_box(Classifier::build(rules.clone()).expect("ClassBench rules build"));
    }) / 1e6;
    let tree = Classifier::build(rules.clone()).expect("ClassBench rules build");
    let stats = tree.stats();

    let mut out = vec![None; keys.len()];
    let lookups = interleaved_medians_ns(
        LOOKUP_ROUNDS,
        sampling_seconds(),
        &mut [
            &mut || {
                let mut acc = 0u64;
                for key in &keys {
                    acc += u64::from(tree.classify(std::hint::black_box(key)).unwrap_or(0));
                }
                std::hint::black_box(acc);
            },
            &mut || {
                tree.classify_batch(std::hint::black_box(&keys), &mut out);
                std::hint::black_box(&out);
            },
        ],
    );
    let (single_ns, batch_ns) = (
        lookups[0] / keys.len() as f64,
        lookups[1] / keys.len() as f64,
    );

    let linear_keys = &keys[..(LINEAR_WORK / rules.len().max(1)).clamp(100, keys.len())];
    let linear = LinearClassifier::new(rules.clone());
    let linear_ns = median_ns(3, || {
        let mut acc = 0u64;
        for key in linear_keys {
            acc += u64::from(linear.classify(std::hint::black_box(key)).unwrap_or(0));
        }
        std::hint::black_box(acc);
    }) / linear_keys.len() as f64;

    Row {
        set: set.to_string(),
        rules: stats.rules,
        trees: stats.trees,
        depth: stats.max_depth,
        replication: stats.leaf_rules as f64 / stats.rules.max(1) as f64,
        memory_bytes: stats.memory_bytes,
        build_ms,
        single_ns,
        batch_ns,
        linear_ns,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut csv_path = None;
    let mut only: Vec<String> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--csv" => csv_path = Some(args.next().expect("--csv needs a path")),
            "--help" | "-h" => {
                println!(
                    "classifier-report [--csv PATH] [SET...]   (default: all nine sets + IPv6)"
                );
                return;
            }
            set => only.push(set.to_string()),
        }
    }
    let mut sets: Vec<(String, Vec<Rule<()>>)> = Vec::new();
    for set in CLASSBENCH_SETS {
        let wanted = only.is_empty() || only.iter().any(|o| o == set);
        let wanted_v6 = only.is_empty() || only.iter().any(|o| *o == format!("{set}-v6"));
        if !(wanted || wanted_v6) {
            continue;
        }
        let rules = load_rules(set);
        if wanted_v6 && set.ends_with("_10k") {
            sets.push((
                format!("{set}-v6"),
                classbench::derive_ipv6_rules(&rules, 6),
            ));
        }
        if wanted {
            sets.push((set.to_string(), rules));
        }
    }

    let mut table = String::from(
        "| set | rules | trees | depth | copies/rule | memory | build | single | batched | linear | speed-up |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "set,rules,trees,depth,replication,memory_bytes,build_ms,single_ns,batch_ns,linear_ns\n",
    );
    for (set, rules) in sets {
        eprintln!("measuring {set} ({} rules)", rules.len());
        let r = measure(&set, rules);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {:.2} | {:.2} MiB | {:.0} ms | {:.0} ns | {:.0} ns | {:.0} ns | {:.0}x |",
            r.set,
            r.rules,
            r.trees,
            r.depth,
            r.replication,
            r.memory_bytes as f64 / (1024.0 * 1024.0),
            r.build_ms,
            r.single_ns,
            r.batch_ns,
            r.linear_ns,
            r.linear_ns / r.single_ns
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.3},{},{:.2},{:.1},{:.1},{:.1}",
            r.set,
            r.rules,
            r.trees,
            r.depth,
            r.replication,
            r.memory_bytes,
            r.build_ms,
            r.single_ns,
            r.batch_ns,
            r.linear_ns
        );
    }
    print!("{table}");
    if let Some(path) = csv_path {
        std::fs::write(&path, csv).unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
