//! Helpers shared by the crate's unit tests.

use microseg_dataplane::packet::FlowKey;

/// A flow from `src` to `dst` (addresses as text), source port 40000.
pub fn flow(src: &str, dst: &str, proto: u8, dst_port: u16) -> FlowKey {
    let (family, src) = microseg_dataplane::packet::ip_to_u128(src.parse().expect("ip"));
    let (_, dst) = microseg_dataplane::packet::ip_to_u128(dst.parse().expect("ip"));
    FlowKey {
        family,
        src,
        dst,
        src_port: 40000,
        dst_port,
        proto,
        ..FlowKey::default()
    }
}

/// `problems` are exactly the expected ones: each expected text appears
/// in one of them, and there are no others.
pub fn assert_problems(problems: &[String], expected: &[&str]) {
    let all = problems.join("\n");
    for text in expected {
        assert!(all.contains(text), "missing {text:?} in\n{all}");
    }
    assert_eq!(problems.len(), expected.len(), "{all}");
}
