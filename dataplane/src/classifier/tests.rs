//! Tree vs linear reference on random rule sets; ClassBench parsing.

use super::classbench::{self, generate_trace, parse_filters, parse_trace};
use super::*;
use crate::packet::FlowKey;
use proptest::prelude::*;

const PORT_EDGES: [u16; 9] = [0, 1, 22, 79, 80, 443, 1024, 65534, 65535];

/// Addresses drawn from a few bases so that rules nest and overlap.
fn addr_strategy(family: AddrFamily) -> impl Strategy<Value = u128> {
    let bases: Vec<u128> = match family {
        AddrFamily::V4 => vec![
            0,
            0x0a00_0000,
            0x0a00_0001,
            0x0a01_0000,
            0xc0a8_0101,
            0xffff_ffff,
        ],
        AddrFamily::V6 => vec![
            0,
            0xfd00_0000_0000_0000_0000_0000_0000_0001,
            0xfd00_0000_0000_0000_0000_0000_0000_0002,
            0xfd00_0001_0000_0000_0000_0000_0000_0000,
            0x2001_0db8_0000_0000_0000_0000_0000_0000,
            u128::MAX,
        ],
    };
    (proptest::sample::select(bases), any::<u8>()).prop_map(move |(base, low)| {
        // Sometimes perturb the low bits, to get near-miss addresses.
        if low % 3 == 0 {
            base ^ u128::from(low & 0x0f)
        } else {
            base
        }
    })
}

fn prefix_strategy(family: AddrFamily) -> impl Strategy<Value = IpPrefix> {
    let lens: Vec<u8> = match family {
        AddrFamily::V4 => vec![0, 1, 8, 16, 24, 28, 31, 32],
        AddrFamily::V6 => vec![0, 1, 16, 32, 64, 96, 127, 128],
    };
    (addr_strategy(family), proptest::sample::select(lens))
        .prop_map(move |(addr, len)| IpPrefix::new(family, addr, len).expect("valid length"))
}

fn ports_strategy() -> impl Strategy<Value = PortRange> {
    (
        proptest::sample::select(PORT_EDGES.to_vec()),
        proptest::sample::select(PORT_EDGES.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(a, b, any)| {
            if any {
                PortRange::ANY
            } else {
                PortRange::new(a.min(b), a.max(b)).expect("ordered")
            }
        })
}

fn rule_strategy(family: AddrFamily) -> impl Strategy<Value = Rule<()>> {
    (
        prefix_strategy(family),
        prefix_strategy(family),
        ports_strategy(),
        ports_strategy(),
        proptest::sample::select(vec![None, Some(6u8), Some(17), Some(1)]),
    )
        .prop_map(|(src, dst, src_ports, dst_ports, proto)| Rule {
            id: 0,
            src,
            dst,
            src_ports,
            dst_ports,
            proto,
            action: (),
        })
}

fn rules_strategy(family: AddrFamily, max: usize) -> impl Strategy<Value = Vec<Rule<()>>> {
    proptest::collection::vec(rule_strategy(family), 0..max).prop_map(|mut rules| {
        // Duplicates on purpose: repeat a prefix of the list.
        let dup: Vec<_> = rules.iter().take(rules.len() / 4).cloned().collect();
        rules.extend(dup);
        for (i, r) in rules.iter_mut().enumerate() {
            r.id = i as u32;
        }
        rules
    })
}

fn key_strategy(family: AddrFamily) -> impl Strategy<Value = FlowKey> {
    (
        addr_strategy(family),
        addr_strategy(family),
        proptest::sample::select(PORT_EDGES.to_vec()),
        proptest::sample::select(PORT_EDGES.to_vec()),
        proptest::sample::select(vec![6u8, 17, 1, 0, 255]),
    )
        .prop_map(move |(src, dst, src_port, dst_port, proto)| FlowKey {
            family,
            src,
            dst,
            src_port,
            dst_port,
            proto,
            ..FlowKey::default()
        })
}

/// Asserts tree == linear for `keys` plus points generated inside the
/// rules, single and batched, under `config`.
fn assert_agrees(rules: &[Rule<()>], keys: &[FlowKey], config: &BuildConfig) {
    let linear = LinearClassifier::new(rules.to_vec());
    let tree = Classifier::build_with(rules.to_vec(), config).expect("builds");
    let mut all = keys.to_vec();
    all.extend(generate_trace(rules, 64, 7));
    let mut batch = vec![None; all.len()];
    tree.classify_batch(&all, &mut batch);
    for (key, batched) in all.iter().zip(batch) {
        let expected = linear.classify(key);
        assert_eq!(tree.classify(key), expected, "key {key:?}");
        assert_eq!(batched, expected, "batched key {key:?}");
    }
}

/// `tree` gives the linear classifier's verdict for `count` keys of a
/// trace generated from `rules` (seed `seed`).
fn assert_matches_linear(tree: &Classifier<()>, rules: &[Rule<()>], count: usize, seed: u64) {
    let linear = LinearClassifier::new(rules.to_vec());
    for key in generate_trace(rules, count, seed) {
        assert_eq!(tree.classify(&key), linear.classify(&key), "{key:?}");
    }
}

fn tight_config() -> BuildConfig {
    BuildConfig {
        leaf_size: 1,
        max_candidates: 3,
        ..BuildConfig::default()
    }
}

/// Every rule in one class and a budget of one copy per rule (plus the
/// fixed slack, which small sets stay under): forces the halving fallback
/// once sets replicate.
fn fallback_config() -> BuildConfig {
    BuildConfig {
        small_prefix_bits: 0,
        max_copies_per_rule: 0,
        merge_samples: 0,
        ..BuildConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn tree_matches_linear_ipv4(
        rules in rules_strategy(AddrFamily::V4, 60),
        keys in proptest::collection::vec(key_strategy(AddrFamily::V4), 1..40),
    ) {
        assert_agrees(&rules, &keys, &BuildConfig::default());
        assert_agrees(&rules, &keys, &tight_config());
        assert_agrees(&rules, &keys, &fallback_config());
    }

    #[test]
    fn tree_matches_linear_ipv6(
        rules in rules_strategy(AddrFamily::V6, 60),
        keys in proptest::collection::vec(key_strategy(AddrFamily::V6), 1..40),
    ) {
        assert_agrees(&rules, &keys, &BuildConfig::default());
        assert_agrees(&rules, &keys, &tight_config());
    }

    #[test]
    fn mixed_families_never_cross(
        v4 in rules_strategy(AddrFamily::V4, 20),
        v6 in rules_strategy(AddrFamily::V6, 20),
        k4 in proptest::collection::vec(key_strategy(AddrFamily::V4), 1..20),
        k6 in proptest::collection::vec(key_strategy(AddrFamily::V6), 1..20),
    ) {
        let mut rules = Vec::new();
        for (a, b) in v4.into_iter().zip(v6) {
            rules.push(a);
            rules.push(b);
        }
        let keys: Vec<_> = k4.into_iter().chain(k6).collect();
        assert_agrees(&rules, &keys, &BuildConfig::default());
    }
}

/// Rules that cross: wide sources with narrow destinations and the other
/// way round, so any cut replicates.
fn crossing_rules(n: u32) -> Vec<Rule<()>> {
    (0..n)
        .map(|i| {
            let narrow = IpPrefix::new(AddrFamily::V4, u128::from(i) << 12, 20).expect("valid");
            let wide = IpPrefix::new(AddrFamily::V4, 0, (i % 4) as u8).expect("valid");
            let (src, dst) = if i % 2 == 0 {
                (narrow, wide)
            } else {
                (wide, narrow)
            };
            Rule {
                id: i,
                src,
                dst,
                src_ports: PortRange::ANY,
                dst_ports: PortRange::new(i as u16, i as u16 + 100).expect("ordered"),
                proto: None,
                action: (),
            }
        })
        .collect()
}

#[test]
fn over_budget_partitions_are_halved_and_stay_exact() {
    let rules = crossing_rules(20_000);
    let config = BuildConfig {
        small_prefix_bits: 0,
        max_copies_per_rule: 0,
        merge_samples: 0,
        ..BuildConfig::default()
    };
    let tree = Classifier::build_with(rules.clone(), &config).expect("builds");
    let stats = tree.stats();
    assert!(stats.trees > 1, "the budget forced a split: {stats:?}");
    // Each tree stays within its own budget (copies per rule 0 + slack).
    for t in tree.tree_stats() {
        assert!(t.leaf_rules <= 4096, "{t:?}");
    }
    let keys = generate_trace(&rules, 3000, 5);
    let linear = LinearClassifier::new(rules);
    for key in &keys {
        assert_eq!(tree.classify(key), linear.classify(key), "{key:?}");
    }
}

#[test]
fn empty_rule_set_matches_nothing() {
    let tree = Classifier::<()>::build(Vec::new()).expect("builds");
    let key = FlowKey::default();
    assert_eq!(tree.classify(&key), None);
    assert_eq!(tree.stats().trees, 0);
}

#[test]
fn first_match_wins_over_a_later_more_specific_rule() {
    let any = Rule {
        id: 10,
        src: IpPrefix::any(AddrFamily::V4),
        dst: IpPrefix::any(AddrFamily::V4),
        src_ports: PortRange::ANY,
        dst_ports: PortRange::ANY,
        proto: None,
        action: "deny",
    };
    let specific = Rule {
        id: 20,
        dst_ports: PortRange::single(443),
        proto: Some(6),
        action: "allow",
        ..any.clone()
    };
    let key = FlowKey {
        proto: 6,
        dst_port: 443,
        ..FlowKey::default()
    };
    let tree = Classifier::build(vec![any.clone(), specific.clone()]).expect("builds");
    assert_eq!(tree.classify_rule(&key).map(|r| r.action), Some("deny"));
    let tree = Classifier::build(vec![specific, any]).expect("builds");
    assert_eq!(
        tree.classify_rule(&key).map(|r| (r.id, r.action)),
        Some((20, "allow"))
    );
}

#[test]
fn rule_with_mixed_families_is_refused_with_its_position() {
    let rule = Rule {
        id: 9,
        src: IpPrefix::any(AddrFamily::V4),
        dst: IpPrefix::any(AddrFamily::V6),
        src_ports: PortRange::ANY,
        dst_ports: PortRange::ANY,
        proto: None,
        action: (),
    };
    let err = Classifier::build(vec![rule]).expect_err("mixed families");
    assert!(matches!(
        err,
        BuildError::FamilyMismatch {
            position: 0,
            id: 9,
            ..
        }
    ));
}

#[test]
fn rule_fields_reject_bad_values() {
    assert!(IpPrefix::new(AddrFamily::V4, 0, 33).is_err());
    assert!(IpPrefix::new(AddrFamily::V6, 0, 129).is_err());
    assert!(PortRange::new(10, 9).is_err());
    // Host bits are cleared.
    let p = IpPrefix::new(AddrFamily::V4, 0x0a00_00ff, 24).expect("valid");
    assert_eq!(p.bounds(), (0x0a00_0000, 0x0a00_00ff));
    assert_eq!(p.to_string(), "10.0.0.0/24");
}

#[test]
fn classbench_filters_parse() {
    let text =
        "@186.11.101.36/32\t20.69.109.0/24\t0 : 65535\t1521 : 1521\t0x06/0xFF\t0x1000/0x1000\t\n\
                @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n";
    let rules = parse_filters(text).expect("parses");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].src.to_string(), "186.11.101.36/32");
    assert_eq!(rules[0].dst.to_string(), "20.69.109.0/24");
    assert_eq!(
        (rules[0].dst_ports.lo(), rules[0].dst_ports.hi()),
        (1521, 1521)
    );
    assert_eq!(rules[0].proto, Some(6));
    assert_eq!((rules[1].proto, rules[1].id), (None, 1));
}

#[test]
fn classbench_errors_name_the_line_and_the_field() {
    let cases = [
        (
            "@1.2.3.4/32\t1.2.3.4/33\t0 : 1\t0 : 1\t0x06/0xFF",
            "line 2: destination",
        ),
        (
            "@1.2.3.4/32\t1.2.3.4/32\t5 : 1\t0 : 1\t0x06/0xFF",
            "line 2: source ports",
        ),
        (
            "@1.2.3.4/32\t1.2.3.4/32\t0 : 1\t0 : 70000\t0x06/0xFF",
            "line 2: destination ports",
        ),
        (
            "@1.2.3.4/32\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0x0F",
            "line 2: protocol: mask 0x0F",
        ),
        (
            "1.2.3.4/32\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF",
            "line 2: a filter starts with '@'",
        ),
        (
            "@1.2.3/32\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF",
            "line 2: source",
        ),
        ("@1.2.3.4/32\t1.2.3.4/32\t0 : 1", "line 2: expected"),
    ];
    let good = "@1.2.3.4/32\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF";
    for (line, expected) in cases {
        let err = parse_filters(&format!("{good}\n{line}\n")).expect_err(line);
        assert!(err.to_string().starts_with(expected), "{err} for {line}");
    }
}

#[test]
fn classbench_traces_parse_and_round_trip() {
    let entries =
        parse_trace("3120456996\t343234859\t1024\t1521\t6\t1\n1 2 3 4 17\n").expect("parses");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].key.src, 3120456996);
    assert_eq!((entries[0].key.dst_port, entries[0].key.proto), (1521, 6));
    assert_eq!(entries[0].filter, Some(1));
    assert_eq!(entries[1].filter, None);
    let line = classbench::format_trace_line(&entries[0].key, Some(1));
    assert_eq!(parse_trace(&line).expect("round trip")[0], entries[0]);

    let err = parse_trace("1 2 3 70000 6\n").expect_err("port out of range");
    assert_eq!(err.line, 1);
    assert!(err.message.contains("destination port"), "{err}");
    assert!(parse_trace("1 2 3\n").is_err());
}

#[test]
fn generated_traces_are_deterministic_and_inside_their_rules() {
    let rules = parse_filters(
        "@10.0.0.0/8\t192.168.1.0/24\t1000 : 2000\t80 : 80\t0x06/0xFF\n\
         @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\n",
    )
    .expect("parses");
    let a = generate_trace(&rules, 500, 42);
    assert_eq!(a, generate_trace(&rules, 500, 42));
    assert_ne!(a, generate_trace(&rules, 500, 43));
    let linear = LinearClassifier::new(rules.clone());
    let hits_first = a.iter().filter(|k| linear.classify(k) == Some(0)).count();
    assert!(hits_first > 100, "about half the points come from rule 0");
    // Corners appear: port 1000 and 2000 both drawn for rule 0.
    assert!(a.iter().any(|k| k.src_port == 1000) && a.iter().any(|k| k.src_port == 2000));
}

#[test]
fn derived_ipv6_rules_keep_structure() {
    let v4 = parse_filters("@10.1.0.0/16\t10.2.3.4/32\t0 : 65535\t80 : 80\t0x06/0xFF\n")
        .expect("parses");
    let v6 = classbench::derive_ipv6_rules(&v4, 1);
    assert_eq!(v6[0].family(), AddrFamily::V6);
    assert_eq!(v6[0].src.len(), 16);
    assert!(v6[0].dst.len() > 32);
    assert_eq!(v6[0].dst.bounds().0 >> 96, 0x0a02_0304);
    assert_eq!(v6[0].dst_ports, v4[0].dst_ports);
}

/// Rules of all four shape classes (narrow or wide source and destination)
/// in both families, so a build searches how to group them.
fn every_shape_rules(n: u32) -> Vec<Rule<()>> {
    (0..n)
        .map(|i| {
            let family = if i % 5 == 4 {
                AddrFamily::V6
            } else {
                AddrFamily::V4
            };
            let bits = family_bits(family);
            let prefix = |narrow: bool, salt: u32| {
                let len = if narrow { bits - 8 } else { (i % 6) as u8 };
                let addr = u128::from(i.wrapping_mul(2_654_435_761) ^ salt) << (bits - 32);
                IpPrefix::new(family, addr, len).expect("valid length")
            };
            Rule {
                id: i,
                src: prefix(i % 4 >= 2, 0x5a5a),
                dst: prefix(i % 2 == 1, 0xa5a5),
                src_ports: PortRange::ANY,
                dst_ports: PortRange::new((i % 900) as u16, (i % 900) as u16 + 50)
                    .expect("ordered"),
                proto: Some(if i % 3 == 0 { 17 } else { 6 }),
                action: (),
            }
        })
        .collect()
}

#[test]
fn threads_build_the_same_trees() {
    let rules = every_shape_rules(3000);
    let one = Classifier::build_with(rules.clone(), &BuildConfig::default()).expect("builds");
    let config = BuildConfig {
        threads: 4,
        ..BuildConfig::default()
    };
    let four = Classifier::build_with(rules.clone(), &config).expect("builds");
    assert_eq!(one.tree_stats(), four.tree_stats());
    assert_eq!(one.plan(), four.plan());
    assert!(one.stats().trees > 1, "{:?}", one.stats());
    assert_agrees(&rules, &[], &config);
}

#[test]
fn a_plan_that_still_fits_is_reused_and_stays_exact() {
    let rules = every_shape_rules(3000);
    // A plan the search would not make: every class a tree of its own.
    let unmerged = BuildConfig {
        merge_samples: 0,
        ..BuildConfig::default()
    };
    let before = Classifier::build_with(rules.clone(), &unmerged).expect("builds");
    // An edit: a few rules out, one changed.
    let mut edited: Vec<Rule<()>> = rules.iter().filter(|r| r.id % 97 != 5).cloned().collect();
    edited[10].dst_ports = PortRange::new(7000, 7001).expect("ordered");
    let searched = Classifier::build(edited.clone()).expect("builds");
    assert_ne!(searched.plan().v4.groups, before.plan().v4.groups);
    let after =
        Classifier::build_from(edited.clone(), &BuildConfig::default(), Some(before.plan()))
            .expect("builds");
    assert_eq!(after.plan().v4.groups, before.plan().v4.groups);
    assert_eq!(after.plan().v6.groups, before.plan().v6.groups);
    assert_ne!(after.plan().v4.class_sizes, before.plan().v4.class_sizes);
    assert_matches_linear(&after, &edited, 4000, 3);
}

#[test]
fn a_plan_that_no_longer_fits_is_searched_anew() {
    let rules = every_shape_rules(3000);
    let before = Classifier::build(rules.clone()).expect("builds");
    // Only rules with a narrow destination are left: other classes emptied.
    let narrow_only: Vec<Rule<()>> = rules.into_iter().filter(|r| r.id % 2 == 1).collect();
    let fresh = Classifier::build(narrow_only.clone()).expect("builds");
    let from_plan =
        Classifier::build_from(narrow_only, &BuildConfig::default(), Some(before.plan()))
            .expect("builds");
    assert_ne!(before.plan(), fresh.plan());
    assert_eq!(from_plan.plan(), fresh.plan());
    assert_eq!(from_plan.tree_stats(), fresh.tree_stats());
}

#[test]
fn a_planned_tree_over_its_budget_falls_back_to_the_search() {
    let rules = crossing_rules(20_000);
    let config = BuildConfig {
        small_prefix_bits: 0,
        max_copies_per_rule: 0,
        merge_samples: 0,
        ..BuildConfig::default()
    };
    // Every rule is in class 3 ("both small"); the plan says: one tree.
    let plan = BuildPlan {
        v4: ForestPlan {
            class_sizes: [0, 0, 0, 20_000],
            groups: vec![0b1000],
        },
        v6: ForestPlan::default(),
    };
    let tree = Classifier::build_from(rules.clone(), &config, Some(&plan)).expect("builds");
    assert!(tree.stats().trees > 1, "{:?}", tree.stats());
    assert!(tree.plan().v4.groups.is_empty(), "{:?}", tree.plan());
    assert_matches_linear(&tree, &rules, 3000, 5);
}

#[test]
fn a_family_searched_on_a_subset_is_built_in_full_and_exact() {
    let rules = every_shape_rules(3000);
    let config = BuildConfig {
        search_rules: 300,
        ..BuildConfig::default()
    };
    let subset = Classifier::build_with(rules.clone(), &config).expect("builds");
    // Every rule is in the trees, each class in exactly one group or built
    // alone, and the verdicts are the linear classifier's.
    assert_eq!(subset.stats().rules, rules.len());
    let grouped = subset.plan().v4.groups.iter().fold(0u8, |all, g| {
        assert_eq!(all & g, 0, "a class in two groups: {:?}", subset.plan());
        all | g
    });
    assert!(grouped != 0, "{:?}", subset.plan());
    assert_matches_linear(&subset, &rules, 4000, 11);
}

#[test]
fn a_subset_grouping_over_its_budget_at_full_size_is_searched_in_full() {
    // On 200 rules one tree fits the budget's fixed slack; at 20,000 the
    // crossing rules replicate past it, so the planned tree is abandoned.
    let rules = crossing_rules(20_000);
    let config = BuildConfig {
        small_prefix_bits: 0,
        max_copies_per_rule: 0,
        merge_samples: 0,
        search_rules: 200,
        ..BuildConfig::default()
    };
    let tree = Classifier::build_with(rules.clone(), &config).expect("builds");
    assert!(tree.stats().trees > 1, "{:?}", tree.stats());
    assert!(tree.plan().v4.groups.is_empty(), "{:?}", tree.plan());
    assert_matches_linear(&tree, &rules, 3000, 5);
}
