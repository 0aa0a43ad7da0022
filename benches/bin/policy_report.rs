//! Policy engine benchmarks (numbers for docs/benchmarks.md):
//!
//! 1. compile time of 1,000 workloads × 1,000 label rules (target ≤ 1 s),
//!    with the classifier's size and memory;
//! 2. swap latency: from an accepted change to the new policy in force
//!    (`PolicyEngine::apply`: validate, compile, fsync to the store,
//!    publish), for policies of ~1k, ~10k and ~100k classifier rules made
//!    from ClassBench acl1 sets. `--nft DIR` also writes each policy as an
//!    equivalent nftables ruleset (a linear chain) for `nft -f` timing by
//!    `benches/policy/swap.sh`.
//!
//! Each timing is a median of samples spread over `BENCH_SAMPLING_SECONDS`
//! (first pushes and edits taken in turn; `--runs N` is the fewest
//! samples, default 5).
//!
//! Usage: policy-report [--csv FILE] [--nft DIR] [--runs N]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use microseg_benches::{classbench_dir, load_rules, median, sample_in_turn, sampling_seconds};
use microseg_control::engine::PolicyEngine;
use microseg_control::policy::{
    compile, ActionName, ModeName, Policy, PolicyDocument, PolicyRule, Workload,
};
use microseg_control::store::Store;
use microseg_dataplane::classifier::{IpPrefix, Rule};
use microseg_dataplane::packet::{u128_to_ip, AddrFamily};

fn workloads_and_rules(workloads: usize, rules: usize) -> PolicyDocument {
    let workloads = (0..workloads)
        .map(|i| Workload {
            name: format!("w{i}"),
            addresses: vec![format!(
                "10.{}.{}.{}",
                100 + i / 65_536,
                (i / 256) % 256,
                i % 256
            )],
            labels: [
                ("app".to_string(), format!("app{}", i % 100)),
                ("role".to_string(), format!("role{}", i % 10)),
                (
                    "env".to_string(),
                    if i % 2 == 0 { "prod" } else { "dev" }.to_string(),
                ),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    let rules = (0..rules)
        .map(|r| PolicyRule {
            name: Some(format!("r{r}")),
            // Each selector picks the 10 workloads of one app (of 100).
            from: format!(
                "app=app{},env={}",
                r % 100,
                if r % 2 == 0 { "prod" } else { "dev" }
            ),
            to: format!("app=app{}", (r * 7 + 3) % 100),
            services: vec![format!("tcp/{}", 1000 + r % 5000)],
            action: if r % 10 == 0 {
                ActionName::Deny
            } else {
                ActionName::Allow
            },
            mode: None,
        })
        .collect();
    PolicyDocument {
        workloads,
        ip_lists: Vec::new(),
        policies: vec![Policy {
            name: "bench".into(),
            mode: ModeName::Enforce,
            priority: 100,
            rules,
        }],
        default_action: ActionName::Deny,
    }
}

fn cidr(prefix: &IpPrefix) -> String {
    let (lo, _) = prefix.bounds();
    format!("{}/{}", u128_to_ip(prefix.family(), lo), prefix.len())
}

/// A ClassBench set as a policy: one CIDR rule per filter (protocols
/// other than TCP and UDP, and source-port constraints, are dropped).
fn classbench_policy(set: &str) -> (PolicyDocument, Vec<Rule<()>>) {
    let filters: Vec<Rule<()>> = load_rules(set)
        .into_iter()
        .filter(|r| r.family() == AddrFamily::V4 && matches!(r.proto, Some(6) | Some(17)))
        .collect();
    let rules = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let proto = if f.proto == Some(6) { "tcp" } else { "udp" };
            let ports = if f.dst_ports.lo() == f.dst_ports.hi() {
                format!("{}", f.dst_ports.lo())
            } else {
                format!("{}-{}", f.dst_ports.lo(), f.dst_ports.hi())
            };
            PolicyRule {
                name: Some(format!("f{i}")),
                from: cidr(&f.src),
                to: cidr(&f.dst),
                services: vec![format!("{proto}/{ports}")],
                action: ActionName::Allow,
                mode: None,
            }
        })
        .collect();
    let document = PolicyDocument {
        policies: vec![Policy {
            name: set.replace('.', "-"),
            mode: ModeName::Enforce,
            priority: 100,
            rules,
        }],
        ..PolicyDocument::default()
    };
    (document, filters)
}

/// The same filters as an nftables ruleset: a linear chain in a table of
/// its own.
fn nft_ruleset(filters: &[Rule<()>]) -> String {
    let mut text = String::from("table inet microseg_bench {\n  chain forward {\n    type filter hook forward priority 0; policy drop;\n");
    for f in filters {
        let proto = if f.proto == Some(6) { "tcp" } else { "udp" };
        let _ = writeln!(
            text,
            "    ip saddr {} ip daddr {} {proto} dport {}-{} accept",
            cidr(&f.src),
            cidr(&f.dst),
            f.dst_ports.lo(),
            f.dst_ports.hi()
        );
    }
    text.push_str("  }\n}\n");
    text
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = value("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let csv_path = value("--csv").map(PathBuf::from);
    let nft_dir = value("--nft").map(PathBuf::from);
    let mut csv = String::from("benchmark,size,classifier_rules,median_ms,memory_bytes\n");

    // 1. Compile 1,000 workloads x 1,000 rules.
    let document = workloads_and_rules(1000, 1000);
    assert!(
        document.validate().is_valid(),
        "the generated policy is valid"
    );
    let (mut last, mut times) = (None, Vec::new());
    sample_in_turn(
        runs,
        sampling_seconds(),
        &mut [&mut || {
            let start = Instant::now();
            let compiled = compile(&document, 1).expect("compiles");
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            // The previous compilation is freed here, outside the timing.
            last = Some(compiled);
        }],
    );
    let compile_ms = median(&mut times);
    let compiled = last.expect("at least one run");
    let stats = compiled.snapshot.classifier.stats();
    println!(
        "compile 1000 workloads x 1000 rules: {compile_ms:.0} ms (median); {} classifier rules, {:.1} MiB",
        compiled.classifier_rules,
        stats.memory_bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        csv,
        "compile,1000x1000,{},{compile_ms:.1},{}",
        compiled.classifier_rules, stats.memory_bytes
    );

    // 2. Swap latency for ClassBench-sized policies.
    let state = std::env::temp_dir().join(format!("microseg-policy-bench-{}", std::process::id()));
    let (first_state, edit_state) = (state.join("first"), state.join("edit"));
    for set in ["acl1_1k", "acl1_10k", "acl1_100k"] {
        if !classbench_dir().join(set).exists() {
            println!("{set}: not found, skipped");
            continue;
        }
        let (document, filters) = classbench_policy(set);
        let fresh_engine = |dir: &PathBuf| {
            let _ = std::fs::remove_dir_all(dir);
            PolicyEngine::restore(Store::open(dir).expect("store"), None, None)
                .expect("engine")
                .engine
        };
        let swap_ms = |engine: &PolicyEngine, document: &PolicyDocument| {
            let start = Instant::now();
            let applied = engine
                .apply(document.clone(), None, "bench", start)
                .expect("applies");
            (applied.swap_seconds * 1000.0, applied.classifier_rules)
        };
        // First push: an engine holding the empty policy takes the whole
        // document (the classifier searches its grouping from scratch).
        // Edits: with the document in force, push it with one rule taken
        // out (a different one each time), the everyday change. The two
        // are sampled in turn (`sample_in_turn`); each sample is `apply`'s
        // own swap time.
        let (mut firsts, mut edits) = (Vec::new(), Vec::new());
        let mut rules = 0;
        let engine = fresh_engine(&edit_state);
        swap_ms(&engine, &document);
        let policy_rules = document.policies[0].rules.len();
        sample_in_turn(
            runs,
            sampling_seconds(),
            &mut [
                &mut || {
                    let (ms, count) = swap_ms(&fresh_engine(&first_state), &document);
                    firsts.push(ms);
                    rules = count;
                },
                &mut || {
                    let mut edited = document.clone();
                    edited.policies[0]
                        .rules
                        .remove((edits.len() * 7919 + 13) % policy_rules);
                    edits.push(swap_ms(&engine, &edited).0);
                },
            ],
        );
        let (first_ms, edit_ms) = (median(&mut firsts), median(&mut edits));
        println!(
            "swap {set}: {rules} classifier rules, first push {first_ms:.0} ms, an edit {edit_ms:.0} ms (medians of {} and {}, accepted -> in force)",
            firsts.len(),
            edits.len()
        );
        let _ = writeln!(csv, "swap-first,{set},{rules},{first_ms:.1},");
        let _ = writeln!(csv, "swap-edit,{set},{rules},{edit_ms:.1},");
        if let Some(dir) = &nft_dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(format!("{set}.nft")), nft_ruleset(&filters));
        }
    }
    let _ = std::fs::remove_dir_all(&state);
    if let Some(path) = csv_path {
        std::fs::write(&path, csv).expect("write the CSV");
        println!("wrote {}", path.display());
    }
}
