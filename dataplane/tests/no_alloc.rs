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

#[test]
fn the_pipeline_does_not_allocate_on_established_flows() {
    use std::sync::Arc;

    use microseg_dataplane::classifier::{IpPrefix, PortRange, Rule};
    use microseg_dataplane::conntrack::{ConntrackConfig, ConntrackTable};
    use microseg_dataplane::frames::{ethernet, ipv4, tcp, with_macs};
    use microseg_dataplane::packet::{tcp_flags, AddrFamily};
    use microseg_dataplane::pipeline::{
        Action, Frame, FrameAction, L2Policy, Mode, Pipeline, PolicyCell, PolicySnapshot,
        RuleVerdict,
    };
    use microseg_dataplane::switch::{MacTable, SwitchConfig};

    let allow = Rule {
        id: 1,
        src: IpPrefix::any(AddrFamily::V4),
        dst: IpPrefix::any(AddrFamily::V4),
        src_ports: PortRange::ANY,
        dst_ports: PortRange::single(443),
        proto: Some(6),
        action: RuleVerdict {
            action: Action::Allow,
            mode: Mode::Enforce,
            rule_id: 1,
        },
    };
    let policy = PolicySnapshot::build(1, vec![allow], Action::Deny, L2Policy::default())
        .expect("policy builds");
    let pipeline = Pipeline::new(
        Arc::new(PolicyCell::from_pointee(policy)),
        Arc::new(ConntrackTable::new(ConntrackConfig::default())),
        Arc::new(MacTable::new(SwitchConfig::default())),
        64,
    );
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    let segment = |from_a: bool, port: u16, flags: u8| {
        let (src, dst, sp, dp, ms, md) = if from_a {
            ([10, 0, 0, 1], [10, 0, 0, 2], port, 443, mac_a, mac_b)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 443, port, mac_b, mac_a)
        };
        with_macs(
            ethernet(&[], 0x0800, &ipv4(src, dst, 6, &tcp(sp, dp, flags, 0))),
            ms,
            md,
        )
    };
    let mut handshake = Vec::new();
    for port in 40000..40064u16 {
        handshake.push((1, segment(true, port, tcp_flags::SYN)));
        handshake.push((2, segment(false, port, tcp_flags::SYN | tcp_flags::ACK)));
        handshake.push((1, segment(true, port, tcp_flags::ACK)));
    }
    let frames: Vec<Frame<'_>> = handshake
        .iter()
        .map(|(p, f)| Frame { data: f, port: *p })
        .collect();
    let mut out =
        vec![FrameAction::Drop(microseg_dataplane::pipeline::DropCause::Policy); frames.len()];
    pipeline.process(&frames, 1, &mut out);
    assert!(
        out.iter().all(|a| matches!(a, FrameAction::Forward(_))),
        "{out:?}"
    );

    let data: Vec<Vec<u8>> = (40000..40064u16)
        .map(|port| segment(true, port, tcp_flags::ACK | tcp_flags::PSH))
        .collect();
    let batch: Vec<Frame<'_>> = data.iter().map(|f| Frame { data: f, port: 1 }).collect();
    let mut out =
        vec![FrameAction::Drop(microseg_dataplane::pipeline::DropCause::Policy); batch.len()];
    let info = allocation_counter::measure(|| {
        for round in 0..10 {
            pipeline.process(&batch, 2 + round, &mut out);
        }
    });
    assert!(
        out.iter().all(|a| matches!(a, FrameAction::Forward(_))),
        "{out:?}"
    );
    assert_eq!(info.count_total, 0, "the pipeline allocated: {info:?}");
}
