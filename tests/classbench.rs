//! The compiled classifier against the linear reference on all nine shared
//! ClassBench sets (and IPv6 sets derived from the 10k ones), and the
//! `microseg classify` / `microseg trace` commands.

mod common;

use common::{classbench_path, run_microseg, ScratchDir};
use microseg_dataplane::classifier::classbench::{
    derive_ipv6_rules, generate_trace, parse_filters, STANDARD_SETS,
};
use microseg_dataplane::classifier::{Classifier, LinearClassifier, Rule};

fn load(set: &str) -> Vec<Rule<()>> {
    let text = std::fs::read_to_string(classbench_path(set)).expect("read set");
    parse_filters(&text).unwrap_or_else(|e| panic!("{set}: {e}"))
}

/// Tree vs linear, single and batched, on a generated trace; returns how
/// many distinct rules the trace hit (to show the trace is not trivial).
fn assert_tree_matches_linear(name: &str, rules: Vec<Rule<()>>, keys: usize) -> usize {
    let trace = generate_trace(&rules, keys, 2024);
    let linear = LinearClassifier::new(rules.clone());
    let tree = Classifier::build(rules).expect("ClassBench rules build");
    let mut batched = vec![None; trace.len()];
    tree.classify_batch(&trace, &mut batched);
    let mut hit = std::collections::HashSet::new();
    for (i, key) in trace.iter().enumerate() {
        let expected = linear.classify(key);
        assert_eq!(
            tree.classify(key),
            expected,
            "{name}: trace line {i}: {key:?}"
        );
        assert_eq!(batched[i], expected, "{name}: batched line {i}: {key:?}");
        hit.extend(expected);
    }
    hit.len()
}

#[test]
fn compiled_classifier_matches_linear_on_all_nine_sets() {
    for set in STANDARD_SETS {
        let rules = load(set);
        let n = rules.len();
        let keys = if n > 50_000 { 4_000 } else { 20_000 };
        let distinct = assert_tree_matches_linear(set, rules, keys);
        assert!(
            distinct > keys.min(n) / 10,
            "{set}: trace hit only {distinct} rules"
        );
    }
}

#[test]
fn compiled_classifier_matches_linear_on_derived_ipv6_sets() {
    for set in ["acl1_10k", "fw1_10k", "ipc1_10k"] {
        let v6 = derive_ipv6_rules(&load(set), 6);
        assert_tree_matches_linear(&format!("{set}-v6"), v6, 10_000);
    }
}

#[test]
fn cli_output_equals_the_reference_on_a_generated_trace() {
    let scratch = ScratchDir::new("classify");
    for set in ["fw1_1k", "ipc1_10k"] {
        let rules = classbench_path(set);
        let rules = rules.to_str().expect("utf-8 path");
        let made = run_microseg(&["trace", "--rules", rules, "--count", "3000", "--seed", "9"]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let trace_path = scratch.file(&format!("{set}.trace"));
        std::fs::write(&trace_path, &made.stdout).expect("write trace");
        let trace = trace_path.to_str().expect("utf-8 path");

        let compiled = run_microseg(&["classify", "--rules", rules, "--trace", trace]);
        let reference = run_microseg(&[
            "classify",
            "--rules",
            rules,
            "--trace",
            trace,
            "--reference",
        ]);
        assert!(
            compiled.status.success(),
            "{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        assert!(reference.status.success());
        assert_eq!(compiled.stdout, reference.stdout, "{set}");

        // One answer per line, agreeing with the trace's 1-based filter column.
        let answers: Vec<i64> = String::from_utf8_lossy(&compiled.stdout)
            .lines()
            .map(|l| l.parse().expect("an integer per line"))
            .collect();
        let filters: Vec<i64> = String::from_utf8_lossy(&made.stdout)
            .lines()
            .map(|l| {
                l.split('\t')
                    .nth(5)
                    .expect("filter column")
                    .parse()
                    .expect("int")
            })
            .collect();
        assert_eq!(answers.len(), 3000);
        for (answer, filter) in answers.iter().zip(&filters) {
            assert_eq!(*answer, filter - 1);
        }
    }
}

#[test]
fn cli_names_the_bad_line_and_prints_nothing() {
    let scratch = ScratchDir::new("classify-bad");
    let rules = scratch.file("rules");
    std::fs::write(
        &rules,
        "@1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\n\
         @1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\n\
         @1.2.3.4/40\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\n",
    )
    .expect("write rules");
    let trace = scratch.file("trace");
    std::fs::write(&trace, "1 2 3 80 6\n").expect("write trace");
    let out = run_microseg(&[
        "classify",
        "--rules",
        rules.to_str().expect("utf-8"),
        "--trace",
        trace.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules file: line 3: source"), "{err}");
    assert!(out.stdout.is_empty());

    let missing = run_microseg(&["classify", "--rules", "/nonexistent/rules", "--trace", "x"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/rules"));
}
