//! A batch's packets grouped by connection (`pipeline::group`): counted in
//! full by their first packet's hit, and judged exactly as they would be
//! one batch each.

use proptest::prelude::*;

use super::*;
use crate::conntrack::ConnEntry;

/// UDP to port 53 from A (source port `5000 + flow`), with `payload`
/// bytes.
fn dns_query(flow: u16, payload: usize) -> Vec<u8> {
    from_a(proto::UDP, &udp(5000 + flow, 53, payload))
}

fn dns_answer(flow: u16, payload: usize) -> Vec<u8> {
    from_b(proto::UDP, &udp(53, 5000 + flow, payload))
}

fn allow_dns_and_ping() -> Vec<Rule<RuleVerdict>> {
    vec![
        rule(53, proto::UDP, Action::Allow, Mode::Enforce, 1),
        rule(8, proto::ICMP, Action::Allow, Mode::Enforce, 2),
        rule(443, proto::TCP, Action::Allow, Mode::Enforce, 3),
    ]
}

/// Every connection in the table with its entry, in a stable order.
fn table(bed: &Bed) -> Vec<String> {
    let mut entries = Vec::new();
    bed.pipeline
        .conntrack()
        .for_each(|key, entry| entries.push(format!("{key:?} {entry:?}")));
    entries.sort();
    entries
}

fn entry_of(bed: &Bed, frame: &[u8], port: u16) -> ConnEntry {
    let Ok(ParsedFrame {
        kind: FrameKind::Ip(flow),
        ..
    }) = parse_frame(frame, port)
    else {
        panic!("an IP frame");
    };
    let (key, _) = ConnKey::from_flow(&flow, 0);
    bed.pipeline.conntrack().get(&key).expect("tracked")
}

/// A UDP connection's packets in one batch, both ways and interleaved with
/// another connection's: every packet and byte is in its entry, and each
/// is switched to its destination.
#[test]
fn a_run_of_one_connection_is_counted_in_full() {
    let bed = Bed::new(allow_dns_and_ping());
    assert_eq!(bed.send(PORT_A, &dns_query(1, 10), S), FLOOD);
    assert_eq!(bed.send(PORT_B, &dns_answer(1, 10), S), TO_A);
    let frames = vec![
        (PORT_A, dns_query(1, 20)),
        (PORT_A, dns_query(2, 0)),
        (PORT_A, dns_query(1, 30)),
        (PORT_B, dns_answer(1, 40)),
        (PORT_A, dns_query(1, 50)),
        (PORT_B, dns_answer(1, 60)),
        (PORT_A, dns_query(1, 70)),
    ];
    let actions = bed.send_batch(&frames, 2 * S);
    assert_eq!(actions, [TO_B, TO_B, TO_B, TO_A, TO_B, TO_A, TO_B]);
    let entry = entry_of(&bed, &frames[0].1, PORT_A);
    let bytes = |frames: Vec<Vec<u8>>| frames.iter().map(|f| f.len() as u64).sum::<u64>();
    let from_a = [10, 20, 30, 50, 70].map(|payload| dns_query(1, payload));
    let from_b = [10, 40, 60].map(|payload| dns_answer(1, payload));
    // From A: the opener and four in the batch; from B: three.
    assert_eq!(entry.packets, [5, 3]);
    assert_eq!(
        entry.bytes,
        [bytes(from_a.to_vec()), bytes(from_b.to_vec())]
    );
    assert_eq!(entry.last_seen, 2 * S);
    let other = entry_of(&bed, &frames[1].1, PORT_A);
    assert_eq!(other.packets, [1, 0]);
}

/// One frame of a batch: what it is and who sends it.
#[derive(Clone, Copy, Debug)]
enum Packet {
    Query {
        flow: u16,
        payload: usize,
    },
    Answer {
        flow: u16,
        payload: usize,
    },
    /// UDP to a port no rule allows.
    Denied {
        flow: u16,
    },
    EchoRequest {
        id: u16,
    },
    EchoReply {
        id: u16,
    },
    Syn {
        flow: u16,
    },
}

impl Packet {
    fn frame(self) -> (u16, Vec<u8>) {
        match self {
            Packet::Query { flow, payload } => (PORT_A, dns_query(flow, payload)),
            Packet::Answer { flow, payload } => (PORT_B, dns_answer(flow, payload)),
            Packet::Denied { flow } => (PORT_A, from_a(proto::UDP, &udp(6000 + flow, 54, 0))),
            Packet::EchoRequest { id } => (PORT_A, from_a(proto::ICMP, &icmp(8, 0, id, 1, &[]))),
            Packet::EchoReply { id } => (PORT_B, from_b(proto::ICMP, &icmp(0, 0, id, 1, &[]))),
            Packet::Syn { flow } => (PORT_A, from_a(proto::TCP, &tcp(7000 + flow, 443, SYN, 0))),
        }
    }
}

fn packet() -> impl Strategy<Value = Packet> {
    let flow = 0..3u16;
    prop_oneof![
        4 => (flow.clone(), 0..200usize).prop_map(|(flow, payload)| Packet::Query { flow, payload }),
        3 => (flow.clone(), 0..200usize).prop_map(|(flow, payload)| Packet::Answer { flow, payload }),
        1 => flow.clone().prop_map(|flow| Packet::Denied { flow }),
        2 => flow.clone().prop_map(|id| Packet::EchoRequest { id }),
        2 => flow.clone().prop_map(|id| Packet::EchoReply { id }),
        1 => flow.prop_map(|flow| Packet::Syn { flow }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batches of a few connections' packets, judged as batches and one
    /// packet at a time, give the same actions, events, counters and
    /// table; between batches the policy may change (cutting what it no
    /// longer allows) and time may jump past the entries' expiry.
    #[test]
    fn grouped_batches_judge_and_count_as_single_packets_do(
        batches in proptest::collection::vec(proptest::collection::vec(packet(), 1..80), 1..5),
        change_at in 0..5usize,
        keep_dns in any::<bool>(),
        expire_at in 0..6usize,
    ) {
        let grouped = Bed::new(allow_dns_and_ping());
        let single = Bed::new(allow_dns_and_ping());
        let mut now = S;
        for (index, packets) in batches.iter().enumerate() {
            if index == change_at {
                let kept = if keep_dns { (53, proto::UDP, 1) } else { (8, proto::ICMP, 2) };
                let rules = vec![rule(kept.0, kept.1, Action::Allow, Mode::Enforce, kept.2)];
                grouped.publish(2, rules.clone());
                single.publish(2, rules);
            }
            now += if index == expire_at { 1_000 * S } else { S };
            let frames: Vec<(u16, Vec<u8>)> = packets.iter().map(|p| p.frame()).collect();
            let batched = grouped.send_batch(&frames, now);
            let alone: Vec<FrameAction> = frames
                .iter()
                .map(|(port, frame)| single.send(*port, frame, now))
                .collect();
            prop_assert_eq!(batched, alone, "batch {}", index);
        }
        prop_assert_eq!(grouped.pipeline.stats(), single.pipeline.stats());
        let events = |bed: &Bed| Vec::from_iter(std::iter::from_fn(|| bed.pipeline.events().pop()));
        prop_assert_eq!(events(&grouped), events(&single));
        prop_assert_eq!(table(&grouped), table(&single));
    }
}
