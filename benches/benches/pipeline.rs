//! Criterion: the I/O-free pipeline's cost per frame, in 64-frame batches
//! (an AF_XDP rx batch): established TCP flows (parse + conntrack hit +
//! switch), established UDP flows with 16 of them in each batch (each four
//! times: the later ones counted by the first's hit, `pipeline::group`)
//! and with 64 (none repeats), and new flows (parse + conntrack miss +
//! classification against fw1_10k + insert + switch). This is the
//! per-packet budget the AF_XDP workers add their I/O to.

use std::collections::HashSet;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use microseg_benches::{load_rules, trace};
use microseg_dataplane::classifier::Rule;
use microseg_dataplane::conntrack::{ConntrackConfig, ConntrackTable};
use microseg_dataplane::frames::{ethernet, ipv4, tcp, udp, with_macs};
use microseg_dataplane::packet::{proto, tcp_flags, FlowKey};
use microseg_dataplane::pipeline::{
    Action, DropCause, Frame, FrameAction, L2Policy, Mode, Pipeline, PolicyCell, PolicySnapshot,
    RuleVerdict,
};
use microseg_dataplane::switch::{MacTable, SwitchConfig};

const BATCH: usize = 64;

/// Flows in each batch of the UDP case whose flows repeat.
const RUN_FLOWS: usize = 16;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// fw1_10k as an allow policy (default deny).
fn policy() -> PolicySnapshot {
    let rules: Vec<Rule<RuleVerdict>> = load_rules("fw1_10k")
        .into_iter()
        .enumerate()
        .map(|(i, r)| Rule {
            id: r.id,
            src: r.src,
            dst: r.dst,
            src_ports: r.src_ports,
            dst_ports: r.dst_ports,
            proto: r.proto,
            action: RuleVerdict {
                action: Action::Allow,
                mode: Mode::Enforce,
                rule_id: i as u32,
            },
        })
        .collect();
    PolicySnapshot::build(1, rules, Action::Deny, L2Policy::default()).expect("builds")
}

fn pipeline(policy: &Arc<PolicySnapshot>, max_entries: usize) -> Pipeline {
    Pipeline::new(
        Arc::new(PolicyCell::new(Arc::clone(policy))),
        Arc::new(ConntrackTable::new(ConntrackConfig {
            max_entries,
            ..ConntrackConfig::default()
        })),
        Arc::new(MacTable::new(SwitchConfig::default())),
        1 << 16,
    )
}

/// A frame of `key` (TCP with `flags`, or UDP) with a 64-byte payload,
/// from host A or, swapped, from host B.
fn frame_for(key: &FlowKey, flags: u8, from_a: bool) -> Vec<u8> {
    let (src, dst) = (key.src as u32, key.dst as u32);
    let (s, d, sp, dp, ms, md) = if from_a {
        (src, dst, key.src_port, key.dst_port, MAC_A, MAC_B)
    } else {
        (dst, src, key.dst_port, key.src_port, MAC_B, MAC_A)
    };
    let l4 = if key.proto == proto::UDP {
        udp(sp, dp, 64)
    } else {
        tcp(sp, dp, flags, 64)
    };
    let l3 = ipv4(s.to_be_bytes(), d.to_be_bytes(), key.proto, &l4);
    with_macs(ethernet(&[], 0x0800, &l3), ms, md)
}

fn bench(c: &mut Criterion) {
    let rules = load_rules("fw1_10k");
    let traced = trace(&rules, 20_000);
    // `n` distinct flows of protocol `wanted` from the trace.
    let of_proto = |wanted: u8, n: usize| -> Vec<FlowKey> {
        let mut seen = HashSet::new();
        let keys: Vec<FlowKey> = traced
            .iter()
            .filter(|k| k.proto == wanted && seen.insert(**k))
            .take(n)
            .copied()
            .collect();
        assert_eq!(
            keys.len(),
            n,
            "the trace has {n} flows of protocol {wanted}"
        );
        keys
    };
    let keys = of_proto(proto::TCP, BATCH * 8);
    let policy = Arc::new(policy());
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));

    // Established flows: handshake first, then batches of data segments.
    let established = pipeline(&policy, 1 << 20);
    let mut out = vec![FrameAction::Drop(DropCause::Policy); BATCH];
    for key in &keys {
        for (flags, from_a) in [
            (tcp_flags::SYN, true),
            (tcp_flags::SYN | tcp_flags::ACK, false),
            (tcp_flags::ACK, true),
        ] {
            let f = frame_for(key, flags, from_a);
            established.process(
                &[Frame {
                    data: &f,
                    port: if from_a { 1 } else { 2 },
                }],
                0,
                &mut out[..1],
            );
        }
    }
    let data: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| frame_for(k, tcp_flags::ACK | tcp_flags::PSH, true))
        .collect();
    let batches: Vec<Vec<Frame<'_>>> = data
        .chunks(BATCH)
        .map(|chunk| chunk.iter().map(|f| Frame { data: f, port: 1 }).collect())
        .collect();
    let mut next = 0;
    group.bench_function("established_tcp", |b| {
        b.iter(|| {
            established.process(&batches[next % batches.len()], 1, &mut out);
            next += 1;
        })
    });

    // Established UDP: every flow opened first, then batches in which 16
    // flows come round robin (as the testbed's generator sends them), or
    // 64 distinct ones.
    let udp_keys = of_proto(proto::UDP, BATCH);
    let udp_pipeline = pipeline(&policy, 1 << 20);
    for key in &udp_keys {
        let f = frame_for(key, 0, true);
        udp_pipeline.process(&[Frame { data: &f, port: 1 }], 0, &mut out[..1]);
    }
    let in_runs: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| frame_for(&udp_keys[i % RUN_FLOWS], 0, true))
        .collect();
    let distinct: Vec<Vec<u8>> = udp_keys.iter().map(|k| frame_for(k, 0, true)).collect();
    for (name, frames) in [
        ("established_udp_16_flows", &in_runs),
        ("established_udp_64_flows", &distinct),
    ] {
        let batch: Vec<Frame<'_>> = frames.iter().map(|f| Frame { data: f, port: 1 }).collect();
        group.bench_function(name, |b| {
            b.iter(|| udp_pipeline.process(&batch, 1, &mut out))
        });
    }

    // New flows: every frame is a SYN of a connection not seen before.
    let syns: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| frame_for(k, tcp_flags::SYN, true))
        .collect();
    let syn_batch: Vec<Frame<'_>> = syns
        .iter()
        .take(BATCH)
        .map(|f| Frame { data: f, port: 1 })
        .collect();
    group.sample_size(10);
    group.bench_function("new_tcp_flows", |b| {
        b.iter_batched(
            || pipeline(&policy, 1 << 16),
            |fresh| {
                let mut out = [FrameAction::Drop(DropCause::Policy); BATCH];
                fresh.process(&syn_batch, 0, &mut out);
                (fresh, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
