//! The parser must not allocate: allocation-counter installs a counting
//! global allocator in this test binary, and we count while frames parse.

use microseg_dataplane::frames::realistic_mix;
use microseg_dataplane::packet::parse_frame;

#[test]
fn parsing_does_not_allocate() {
    let frames = realistic_mix();
    // Every truncation too, so the error paths are covered.
    let cuts: Vec<&[u8]> = frames
        .iter()
        .flat_map(|f| (0..=f.len()).map(move |cut| &f[..cut]))
        .collect();
    let mut parsed = 0usize;
    let info = allocation_counter::measure(|| {
        for frame in &cuts {
            parsed += usize::from(parse_frame(std::hint::black_box(frame), 0).is_ok());
        }
    });
    assert!(parsed >= frames.len(), "whole frames must parse");
    assert_eq!(info.count_total, 0, "parse_frame allocated: {info:?}");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert!(info.count_total >= 1);
}

#[test]
fn classifying_does_not_allocate() {
    use microseg_dataplane::classifier::classbench::{generate_trace, parse_filters};
    use microseg_dataplane::classifier::Classifier;

    let rules = parse_filters(
        "@10.0.0.0/8\t192.168.1.0/24\t1000 : 2000\t80 : 80\t0x06/0xFF\n\
         @10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t53 : 53\t0x11/0xFF\n\
         @0.0.0.0/0\t10.2.3.4/32\t0 : 65535\t0 : 65535\t0x00/0x00\n",
    )
    .expect("rules parse");
    let keys = generate_trace(&rules, 256, 3);
    let tree = Classifier::build(rules).expect("builds");
    let mut out = vec![None; keys.len()];
    let mut matched = 0usize;
    let info = allocation_counter::measure(|| {
        for key in &keys {
            matched += usize::from(tree.classify(std::hint::black_box(key)).is_some());
        }
        tree.classify_batch(&keys, &mut out);
    });
    assert_eq!(matched, keys.len(), "every generated key lies in a rule");
    assert_eq!(info.count_total, 0, "classify allocated: {info:?}");
}
