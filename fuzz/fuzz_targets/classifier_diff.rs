//! Differential fuzzing of the classifier: random rule sets (IPv4 or IPv6,
//! with nested, overlapping and duplicate rules) and random keys, plus keys
//! generated inside the rules; the compiled classifier (single and batched)
//! must agree with the linear reference on every key.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use microseg_dataplane::classifier::classbench::generate_trace;
use microseg_dataplane::classifier::{
    BuildConfig, Classifier, IpPrefix, LinearClassifier, PortRange, Rule,
};
use microseg_dataplane::packet::{AddrFamily, FlowKey};

#[derive(Debug, Arbitrary)]
struct FuzzRule {
    src: u32,
    src_len: u8,
    dst: u32,
    dst_len: u8,
    ports: [u16; 4],
    proto: Option<u8>,
}

#[derive(Debug, Arbitrary)]
struct FuzzKey {
    src: u32,
    dst: u32,
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

#[derive(Debug, Arbitrary)]
struct Input {
    ipv6: bool,
    tight: bool,
    rules: Vec<FuzzRule>,
    keys: Vec<FuzzKey>,
}

/// IPv6 addresses put the fuzzed 32 bits on top, so prefixes nest alike.
fn widen(ipv6: bool, addr: u32) -> u128 {
    if ipv6 {
        u128::from(addr) << 96
    } else {
        u128::from(addr)
    }
}

fn prefix(family: AddrFamily, ipv6: bool, addr: u32, len: u8) -> IpPrefix {
    let max = if ipv6 { 129 } else { 33 };
    IpPrefix::new(family, widen(ipv6, addr), len % max).expect("length in range")
}

fn range(a: u16, b: u16) -> PortRange {
    PortRange::new(a.min(b), a.max(b)).expect("ordered")
}

fuzz_target!(|input: Input| {
    let family = if input.ipv6 { AddrFamily::V6 } else { AddrFamily::V4 };
    let rules: Vec<Rule<()>> = input
        .rules
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, r)| Rule {
            id: i as u32,
            src: prefix(family, input.ipv6, r.src, r.src_len),
            dst: prefix(family, input.ipv6, r.dst, r.dst_len),
            src_ports: range(r.ports[0], r.ports[1]),
            dst_ports: range(r.ports[2], r.ports[3]),
            proto: r.proto,
            action: (),
        })
        .collect();
    let config = if input.tight {
        BuildConfig {
            leaf_size: 1,
            small_prefix_bits: 0,
            max_copies_per_rule: 0,
            ..BuildConfig::default()
        }
    } else {
        BuildConfig::default()
    };
    let tree = Classifier::build_with(rules.clone(), &config).expect("valid rules build");
    let linear = LinearClassifier::new(rules.clone());
    let mut keys: Vec<FlowKey> = input
        .keys
        .iter()
        .take(256)
        .map(|k| FlowKey {
            family,
            src: widen(input.ipv6, k.src),
            dst: widen(input.ipv6, k.dst),
            src_port: k.src_port,
            dst_port: k.dst_port,
            proto: k.proto,
            ..FlowKey::default()
        })
        .collect();
    keys.extend(generate_trace(&rules, 64, rules.len() as u64));
    let mut batched = vec![None; keys.len()];
    tree.classify_batch(&keys, &mut batched);
    for (key, batch) in keys.iter().zip(batched) {
        let expected = linear.classify(key);
        assert_eq!(tree.classify(key), expected, "{key:?}");
        assert_eq!(batch, expected, "batched {key:?}");
    }
});
