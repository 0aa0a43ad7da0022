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
