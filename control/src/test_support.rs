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

/// An Ethernet + IPv4 + TCP SYN frame (MACs derived from the last octet).
pub use microseg_dataplane::frames::tcp_syn_between as tcp_syn;

/// Runs one frame through `pipeline` (port 0) and returns its action.
pub fn send(
    pipeline: &microseg_dataplane::pipeline::Pipeline,
    frame: &[u8],
    now: u64,
) -> microseg_dataplane::pipeline::FrameAction {
    use microseg_dataplane::pipeline::{DropCause, Frame, FrameAction};
    let mut out = [FrameAction::Drop(DropCause::Policy)];
    pipeline.process(
        &[Frame {
            data: frame,
            port: 0,
        }],
        now,
        &mut out,
    );
    out[0]
}

/// An endpoint: a workload with labels `role` and `app=shop`, or (no
/// workload) a bare address.
pub fn endpoint(workload: Option<&str>, address: &str, role: &str) -> crate::flows::Endpoint {
    crate::flows::Endpoint {
        address: address.into(),
        workload: workload.map(str::to_string),
        labels: workload
            .map(|_| {
                [
                    ("role".to_string(), role.to_string()),
                    ("app".into(), "shop".into()),
                ]
                .into_iter()
                .collect()
            })
            .unwrap_or_default(),
    }
}

/// A TCP flow record (source port 40000, 1 s after the epoch).
pub fn record(
    kind: crate::flows::RecordKind,
    src: crate::flows::Endpoint,
    dst: crate::flows::Endpoint,
    dport: u16,
    verdict: crate::flows::Verdict,
) -> std::sync::Arc<crate::flows::FlowRecord> {
    let blank = crate::flows::FlowRecord::blank(
        kind,
        1000,
        src,
        dst,
        microseg_dataplane::packet::proto::TCP,
        verdict,
    );
    std::sync::Arc::new(crate::flows::FlowRecord {
        sport: Some(40000),
        dport: Some(dport),
        generation: 1,
        packets: [3, 2],
        bytes: [300, 200],
        ..blank
    })
}
