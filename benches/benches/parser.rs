//! Frames parsed per second on a realistic mix (TCP/UDP over IPv4/IPv6,
//! VLAN tags, ICMP, ARP, a fragment), the number `docs/benchmarks.md` quotes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use microseg_dataplane::frames::realistic_mix;
use microseg_dataplane::packet::parse_frame;
use std::hint::black_box;

fn parse_mix(c: &mut Criterion) {
    let frames = realistic_mix();
    let mut group = c.benchmark_group("packet_parse");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("realistic_mix", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for frame in &frames {
                ok += u32::from(parse_frame(black_box(frame), 1).is_ok());
            }
            ok
        })
    });
    group.finish();
}

criterion_group!(benches, parse_mix);
criterion_main!(benches);
