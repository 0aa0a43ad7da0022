//! Pipeline tests on synthetic frames: two hosts, A on port 1 and B on
//! port 2, and policies published through the same `PolicyCell` the control
//! plane uses.

use super::*;
use crate::classifier::{IpPrefix, PortRange, Rule};
use crate::conntrack::ConntrackConfig;
use crate::frames::{self, ethernet, icmp, ipv4, ipv6, tcp, udp, with_macs};
use crate::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use crate::switch::SwitchConfig;

const S: u64 = 1_000_000_000;
const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const PORT_A: u16 = 1;
const PORT_B: u16 = 2;

fn rule(dst_port: u16, proto: u8, action: Action, mode: Mode, rule_id: u32) -> Rule<RuleVerdict> {
    Rule {
        id: rule_id,
        src: IpPrefix::any(AddrFamily::V4),
        dst: IpPrefix::any(AddrFamily::V4),
        src_ports: PortRange::ANY,
        dst_ports: if proto == proto::ICMP {
            PortRange::new(dst_port << 8, (dst_port << 8) | 0xff).expect("ordered")
        } else {
            PortRange::single(dst_port)
        },
        proto: Some(proto),
        action: RuleVerdict {
            action,
            mode,
            rule_id,
        },
    }
}

fn snapshot(generation: u32, rules: Vec<Rule<RuleVerdict>>, l2: L2Policy) -> PolicySnapshot {
    PolicySnapshot::build(generation, rules, Action::Deny, l2).expect("policy builds")
}

struct Bed {
    policy: Arc<PolicyCell>,
    pipeline: Pipeline,
}

impl Bed {
    fn new(rules: Vec<Rule<RuleVerdict>>) -> Self {
        Self::with_l2(rules, L2Policy::default())
    }

    fn with_l2(rules: Vec<Rule<RuleVerdict>>, l2: L2Policy) -> Self {
        let policy = Arc::new(PolicyCell::from_pointee(snapshot(1, rules, l2)));
        let pipeline = Pipeline::new(
            Arc::clone(&policy),
            Arc::new(ConntrackTable::new(ConntrackConfig::default())),
            Arc::new(MacTable::new(SwitchConfig::default())),
            16,
        );
        Self { policy, pipeline }
    }

    /// With the fast path's requests on.
    fn offloading(rules: Vec<Rule<RuleVerdict>>) -> Self {
        let Self { policy, pipeline } = Self::new(rules);
        let pipeline = pipeline.with_offload(Arc::new(OffloadQueue::new(64)));
        Self { policy, pipeline }
    }

    /// The fast-path requests made so far.
    fn requests(&self) -> Vec<OffloadRequest> {
        let queue = self.pipeline.offload().expect("offloading bed");
        std::iter::from_fn(|| queue.pop()).collect()
    }

    fn publish(&self, generation: u32, rules: Vec<Rule<RuleVerdict>>) {
        self.policy
            .store(Arc::new(snapshot(generation, rules, L2Policy::default())));
    }

    fn send(&self, port: u16, frame: &[u8], now: u64) -> FrameAction {
        let mut out = [FrameAction::Drop(DropCause::Policy)];
        self.pipeline
            .process(&[Frame { data: frame, port }], now, &mut out);
        out[0]
    }

    /// Processes `frames` (port, bytes) as one batch; their actions.
    fn send_batch(&self, frames: &[(u16, Vec<u8>)], now: u64) -> Vec<FrameAction> {
        let batch: Vec<Frame<'_>> = frames
            .iter()
            .map(|(port, data)| Frame { data, port: *port })
            .collect();
        let mut out = vec![FrameAction::Drop(DropCause::Policy); batch.len()];
        self.pipeline.process(&batch, now, &mut out);
        out
    }

    fn events(&self) -> Vec<VerdictKind> {
        std::iter::from_fn(|| self.pipeline.events().pop().map(|e| e.kind)).collect()
    }
}

fn from_a(l4_proto: u8, l4: &[u8]) -> Vec<u8> {
    with_macs(
        ethernet(&[], 0x0800, &ipv4(A, B, l4_proto, l4)),
        MAC_A,
        MAC_B,
    )
}

fn from_b(l4_proto: u8, l4: &[u8]) -> Vec<u8> {
    with_macs(
        ethernet(&[], 0x0800, &ipv4(B, A, l4_proto, l4)),
        MAC_B,
        MAC_A,
    )
}

const FLOOD: FrameAction = FrameAction::Forward(Forward::Flood);
const TO_A: FrameAction = FrameAction::Forward(Forward::Port(PORT_A));
const TO_B: FrameAction = FrameAction::Forward(Forward::Port(PORT_B));

fn allow_https() -> Vec<Rule<RuleVerdict>> {
    vec![rule(443, proto::TCP, Action::Allow, Mode::Enforce, 10)]
}

/// Opens A:40000 -> B:`port` and checks each packet's action.
fn handshake(bed: &Bed, port: u16) {
    let syn = from_a(proto::TCP, &tcp(40000, port, SYN, 0));
    let syn_ack = from_b(proto::TCP, &tcp(port, 40000, SYN | ACK, 0));
    let ack = from_a(proto::TCP, &tcp(40000, port, ACK, 0));
    assert_eq!(bed.send(PORT_A, &syn, S), FLOOD);
    assert_eq!(bed.send(PORT_B, &syn_ack, S), TO_A);
    assert_eq!(bed.send(PORT_A, &ack, S), TO_B);
}

fn open_https(bed: &Bed) {
    handshake(bed, 443);
}

#[test]
fn an_allowed_connection_is_switched_both_ways() {
    let bed = Bed::new(allow_https());
    open_https(&bed);
    assert_eq!(
        bed.send(
            PORT_A,
            &from_a(proto::TCP, &tcp(40000, 443, PSH | ACK, 0)),
            S
        ),
        TO_B
    );
    let stats = bed.pipeline.stats();
    assert_eq!(
        (stats.flooded, stats.forwarded, stats.total_dropped()),
        (1, 3, 0)
    );
    assert!(bed.events().is_empty());
}

#[test]
fn default_deny_drops_and_reports_new_flows() {
    let bed = Bed::new(allow_https());
    let ssh = from_a(proto::TCP, &tcp(40001, 22, SYN, 0));
    assert_eq!(
        bed.send(PORT_A, &ssh, S),
        FrameAction::Drop(DropCause::Policy)
    );
    assert_eq!(bed.events(), [VerdictKind::Denied]);
    // A reply-looking packet without a connection is out of state.
    let stray = from_b(proto::TCP, &tcp(22, 40001, ACK, 0));
    assert_eq!(
        bed.send(PORT_B, &stray, S),
        FrameAction::Drop(DropCause::Conntrack(InvalidReason::NoConnection))
    );
    // Denied traffic teaches the switch nothing.
    assert_eq!(
        bed.send(PORT_B, &from_b(proto::TCP, &tcp(443, 1, SYN, 0)), S),
        FrameAction::Drop(DropCause::Policy)
    );
    let stats = bed.pipeline.stats();
    assert_eq!(stats.dropped(DropCause::Policy), 2);
    assert_eq!(
        stats.dropped(DropCause::Conntrack(InvalidReason::NoConnection)),
        1
    );
}

#[test]
fn a_policy_that_no_longer_allows_a_connection_cuts_it() {
    let bed = Bed::new(allow_https());
    open_https(&bed);
    bed.publish(2, vec![]);
    let data = from_b(proto::TCP, &tcp(443, 40000, PSH | ACK, 0));
    assert_eq!(
        bed.send(PORT_B, &data, 2 * S),
        FrameAction::Drop(DropCause::PolicyCut)
    );
    assert_eq!(bed.events(), [VerdictKind::Cut]);
    assert!(
        bed.pipeline.conntrack().is_empty(),
        "the connection is gone"
    );
    // Its next packet is out of state; a new attempt is denied.
    let again = from_a(proto::TCP, &tcp(40000, 443, ACK, 0));
    assert!(matches!(
        bed.send(PORT_A, &again, 2 * S),
        FrameAction::Drop(DropCause::Conntrack(_))
    ));
    let syn = from_a(proto::TCP, &tcp(40002, 443, SYN, 0));
    assert_eq!(
        bed.send(PORT_A, &syn, 2 * S),
        FrameAction::Drop(DropCause::Policy)
    );
}

#[test]
fn a_policy_that_still_allows_a_connection_readmits_it() {
    let bed = Bed::new(allow_https());
    open_https(&bed);
    bed.publish(
        2,
        vec![rule(443, proto::TCP, Action::Allow, Mode::Enforce, 77)],
    );
    // The re-check runs on a reply: judged in the original direction.
    assert_eq!(
        bed.send(PORT_B, &from_b(proto::TCP, &tcp(443, 40000, ACK, 0)), 2 * S),
        TO_A
    );
    let key = ConnKey::from_flow(&bed_flow(), 0).0;
    let entry = bed.pipeline.conntrack().get(&key).expect("still tracked");
    assert_eq!((entry.generation, entry.rule_id), (2, 77));
    assert!(bed.events().is_empty());
}

fn bed_flow() -> FlowKey {
    frames::flow_v4(A, B, proto::TCP, 40000, 443)
}

#[test]
fn monitor_mode_passes_would_deny_flows_and_reports_them_once() {
    let rules = vec![rule(8080, proto::TCP, Action::Deny, Mode::Monitor, 5)];
    let bed = Bed::new(rules);
    handshake(&bed, 8080);
    let events: Vec<_> = std::iter::from_fn(|| bed.pipeline.events().pop()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].rule_id),
        (VerdictKind::WouldDeny, 5)
    );
}

#[test]
fn icmp_echo_and_related_errors() {
    let bed = Bed::new(vec![
        rule(8, proto::ICMP, Action::Allow, Mode::Enforce, 1),
        rule(53, proto::UDP, Action::Allow, Mode::Enforce, 2),
    ]);
    assert_eq!(
        bed.send(PORT_A, &from_a(proto::ICMP, &icmp(8, 0, 7, 1, &[0; 8])), S),
        FLOOD
    );
    assert_eq!(
        bed.send(PORT_B, &from_b(proto::ICMP, &icmp(0, 0, 7, 1, &[0; 8])), S),
        TO_A
    );
    // After a policy change, the echo reply is re-checked as the request it
    // answers (icmp/8), so it still passes.
    bed.publish(
        2,
        vec![rule(8, proto::ICMP, Action::Allow, Mode::Enforce, 1)],
    );
    assert_eq!(
        bed.send(
            PORT_B,
            &from_b(proto::ICMP, &icmp(0, 0, 7, 2, &[0; 8])),
            2 * S
        ),
        TO_A
    );

    bed.publish(
        3,
        vec![rule(53, proto::UDP, Action::Allow, Mode::Enforce, 2)],
    );
    let query = ipv4(A, B, proto::UDP, &udp(5353, 53, 20));
    assert_eq!(
        bed.send(PORT_A, &from_a(proto::UDP, &udp(5353, 53, 20)), 3 * S),
        TO_B
    );
    let unreachable = from_b(proto::ICMP, &icmp(3, 3, 0, 0, &query[..28]));
    assert_eq!(
        bed.send(PORT_B, &unreachable, 3 * S),
        TO_A,
        "related error passes"
    );
    let unrelated_quote = ipv4(A, B, proto::UDP, &udp(1, 2, 0));
    let unrelated = from_b(proto::ICMP, &icmp(3, 3, 0, 0, &unrelated_quote[..28]));
    assert_eq!(
        bed.send(PORT_B, &unrelated, 3 * S),
        FrameAction::Drop(DropCause::Conntrack(InvalidReason::UnrelatedIcmpError))
    );
}

#[test]
fn l2_traffic_follows_the_l2_policy() {
    let arp = with_macs(
        ethernet(&[], 0x0806, &frames::arp(1, A, B)),
        MAC_A,
        [0xff; 6],
    );
    let lldp = with_macs(
        ethernet(&[], 0x88cc, &[0; 46]),
        MAC_A,
        [0x01, 0x80, 0xc2, 0, 0, 0x0e],
    );
    let a6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let ns = ethernet(
        &[],
        0x86dd,
        &ipv6(a6, a6, &[], proto::ICMPV6, &icmp(135, 0, 0, 0, &[0; 16])),
    );
    let group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16];
    let mld_report = ethernet(
        &[],
        0x86dd,
        &ipv6(a6, group, &[], proto::ICMPV6, &icmp(143, 0, 0, 0, &[0; 20])),
    );
    // The same type to a unicast address is not link control: judged.
    let unicast_143 = ethernet(
        &[],
        0x86dd,
        &ipv6(a6, a6, &[], proto::ICMPV6, &icmp(143, 0, 0, 0, &[0; 20])),
    );
    let bed = Bed::new(vec![]);
    assert_eq!(bed.send(PORT_A, &mld_report, S), FLOOD);
    assert_eq!(
        bed.send(PORT_A, &unicast_143, S),
        FrameAction::Drop(DropCause::Policy)
    );
    assert_eq!(bed.send(PORT_A, &arp, S), FLOOD);
    assert_eq!(
        bed.send(PORT_A, &lldp, S),
        FrameAction::Drop(DropCause::Ethertype)
    );
    // Switched without policy; its destination MAC is unknown, so it floods.
    assert_eq!(bed.send(PORT_A, &ns, S), FLOOD);

    let strict = Bed::with_l2(
        vec![],
        L2Policy {
            switch_arp: false,
            switch_neighbour_discovery: false,
            switch_other_ethertypes: true,
        },
    );
    assert_eq!(
        strict.send(PORT_A, &arp, S),
        FrameAction::Drop(DropCause::ArpBlocked)
    );
    assert_eq!(strict.send(PORT_A, &lldp, S), FLOOD);
    assert_eq!(
        strict.send(PORT_A, &ns, S),
        FrameAction::Drop(DropCause::Policy)
    );
    assert_eq!(
        strict.send(PORT_A, &mld_report, S),
        FrameAction::Drop(DropCause::Policy)
    );
}

#[test]
fn malformed_frames_and_later_fragments_are_dropped_with_their_cause() {
    let bed = Bed::new(allow_https());
    let mut bad = from_a(proto::TCP, &tcp(1, 443, SYN, 0));
    bad[14 + 10] ^= 0xff; // IPv4 header checksum
    assert_eq!(
        bed.send(PORT_A, &bad, S),
        FrameAction::Drop(DropCause::Parse(crate::packet::DropReason::BadIpv4Checksum))
    );
    let later = ethernet(
        &[],
        0x0800,
        &frames::ipv4_fragment(A, B, proto::UDP, 9, 100, false, &[0; 64]),
    );
    assert_eq!(
        bed.send(PORT_A, &later, S),
        FrameAction::Drop(DropCause::LaterFragment)
    );
    assert_eq!(bed.pipeline.stats().total_dropped(), 2);
}

#[test]
fn a_batch_is_judged_by_one_generation_and_counted_in_full() {
    let bed = Bed::new(allow_https());
    let frames_owned: Vec<Vec<u8>> = (0..10u16)
        .map(|i| {
            from_a(
                proto::TCP,
                &tcp(30000 + i, if i % 2 == 0 { 443 } else { 22 }, SYN, 0),
            )
        })
        .collect();
    let batch: Vec<Frame<'_>> = frames_owned
        .iter()
        .map(|f| Frame {
            data: f,
            port: PORT_A,
        })
        .collect();
    let mut out = vec![FrameAction::Drop(DropCause::Policy); batch.len()];
    bed.pipeline.process(&batch, S, &mut out);
    let passed = out
        .iter()
        .filter(|a| matches!(a, FrameAction::Forward(_)))
        .count();
    assert_eq!(passed, 5);
    let stats = bed.pipeline.stats();
    assert_eq!(stats.forwarded + stats.flooded + stats.total_dropped(), 10);
    // 5 denials, but the event queue holds 16: none lost.
    assert_eq!(bed.events().len(), 5);
}

/// Batches longer than the prefetch batch, mixing allowed, denied and
/// malformed frames with a reply to a connection opened earlier in the
/// same batch: every frame gets its own action, in order.
#[test]
fn long_batches_get_one_action_per_frame_in_order() {
    let bed = Bed::new(allow_https());
    let mut frames_owned: Vec<Vec<u8>> = (0..150u16)
        .map(|i| match i % 3 {
            0 => from_a(proto::TCP, &tcp(20000 + i, 443, SYN, 0)),
            1 => from_a(proto::TCP, &tcp(20000 + i, 22, SYN, 0)),
            _ => vec![0u8; 7],
        })
        .collect();
    frames_owned.push(from_b(proto::TCP, &tcp(443, 20000, SYN | ACK, 0)));
    let reply = frames_owned.len() - 1;
    let batch: Vec<Frame<'_>> = frames_owned
        .iter()
        .enumerate()
        .map(|(i, data)| Frame {
            data,
            port: if i == reply { PORT_B } else { PORT_A },
        })
        .collect();
    let mut out = vec![FrameAction::Drop(DropCause::LaterFragment); batch.len()];
    bed.pipeline.process(&batch, S, &mut out);
    for (i, action) in out[..150].iter().enumerate() {
        let expected = match i % 3 {
            0 => FLOOD,
            1 => FrameAction::Drop(DropCause::Policy),
            _ => FrameAction::Drop(DropCause::Parse(DropReason::TruncatedEthernet)),
        };
        assert_eq!(*action, expected, "frame {i}");
    }
    // The reply, from B, goes to the port A was learned on.
    assert_eq!(out[reply], TO_A);
    assert_eq!(bed.pipeline.conntrack().len(), 50);
}

/// A handshake and data in one batch: the reply teaches the switch where
/// A is, and the frames from A after it go straight to B, whom the reply
/// came from. Repeats of one station pair reuse the batch's switching
/// decision (`switch::SwitchMemo`); a frame between them must not be hidden.
#[test]
fn stations_learned_within_a_batch_steer_its_later_frames() {
    let bed = Bed::new(allow_https());
    let frames = [
        (PORT_A, from_a(proto::TCP, &tcp(40000, 443, SYN, 0))),
        (PORT_A, from_a(proto::TCP, &tcp(40001, 443, SYN, 0))),
        (PORT_B, from_b(proto::TCP, &tcp(443, 40000, SYN | ACK, 0))),
        (PORT_A, from_a(proto::TCP, &tcp(40000, 443, ACK, 0))),
        (PORT_A, from_a(proto::TCP, &tcp(40000, 443, ACK | PSH, 0))),
        (PORT_B, from_b(proto::TCP, &tcp(443, 40001, SYN | ACK, 0))),
    ];
    let out = bed.send_batch(&frames, S);
    assert_eq!(out, [FLOOD, FLOOD, TO_A, TO_B, TO_B, TO_A]);
    assert_eq!(bed.pipeline.mac_table().len(), 2);
}

#[test]
fn a_full_event_queue_counts_its_losses() {
    let bed = Bed::new(vec![]);
    for i in 0..20u16 {
        bed.send(PORT_A, &from_a(proto::TCP, &tcp(20000 + i, 22, SYN, 0)), S);
    }
    assert_eq!(bed.pipeline.events().len(), 16);
    assert_eq!(bed.pipeline.stats().events_dropped, 4);
}

#[test]
fn drop_causes_have_unique_indexes_and_names() {
    let causes: Vec<DropCause> = DropCause::all().collect();
    assert_eq!(causes.len(), DropCause::COUNT);
    for (i, cause) in causes.iter().enumerate() {
        assert_eq!(cause.index(), i, "{cause:?}");
    }
    let mut names: Vec<String> = causes.iter().map(|c| c.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DropCause::COUNT);
}

#[test]
fn rule_hits_count_decisions_per_rule_and_for_the_default() {
    let policy = snapshot(
        1,
        vec![
            rule(443, proto::TCP, Action::Allow, Mode::Enforce, 7),
            rule(22, proto::TCP, Action::Deny, Mode::Enforce, 9),
        ],
        L2Policy::default(),
    );
    let flow = |port| FlowKey {
        family: AddrFamily::V4,
        src: 0x0a00_0001,
        dst: 0x0a00_0002,
        proto: proto::TCP,
        src_port: 40000,
        dst_port: port,
        ..FlowKey::default()
    };
    assert!(policy.rule_hits().is_empty());
    for port in [443, 443, 22, 80] {
        policy.decide(&flow(port));
    }
    assert_eq!(policy.rule_hits(), [(7, 2), (9, 1), (DEFAULT_RULE_ID, 1)]);
    // Huge caller-chosen ids are not counted (and allocate nothing).
    let odd = snapshot(
        1,
        vec![rule(
            443,
            proto::TCP,
            Action::Allow,
            Mode::Enforce,
            u32::MAX - 1,
        )],
        L2Policy::default(),
    );
    odd.decide(&flow(443));
    odd.decide(&flow(80));
    assert_eq!(odd.rule_hits(), [(DEFAULT_RULE_ID, 1)]);
}

fn installs(requests: &[OffloadRequest]) -> Vec<(u16, u16, u32, u8)> {
    requests
        .iter()
        .filter_map(|request| match request {
            OffloadRequest::Install(offer) => Some((
                offer.ingress,
                offer.egress,
                offer.generation,
                offer.flow.tcp_flags,
            )),
            OffloadRequest::Revoke { .. } => None,
        })
        .collect()
}

#[test]
fn established_tcp_directions_are_offered_to_the_fast_path_not_the_handshake() {
    let bed = Bed::offloading(allow_https());
    open_https(&bed);
    // SYN (flooded), SYN-ACK (not ESTABLISHED yet): no offer; the ACK
    // that establishes it: offered, A's direction.
    assert_eq!(installs(&bed.requests()), vec![(PORT_A, PORT_B, 1, ACK)]);
    let data_b = from_b(proto::TCP, &tcp(443, 40000, PSH | ACK, 1));
    assert_eq!(bed.send(PORT_B, &data_b, S), TO_A);
    let offers = bed.requests();
    assert_eq!(installs(&offers), vec![(PORT_B, PORT_A, 1, PSH | ACK)]);
    let OffloadRequest::Install(offer) = offers[0] else {
        panic!("an install")
    };
    assert_eq!((offer.src_mac, offer.dst_mac), (MAC_B, MAC_A));
    assert_eq!((offer.flow.src_port, offer.flow.dst_port), (443, 40000));
}

#[test]
fn fin_and_rst_revoke_the_fast_path() {
    let bed = Bed::offloading(allow_https());
    open_https(&bed);
    bed.requests();
    let fin = from_a(proto::TCP, &tcp(40000, 443, FIN | ACK, 1));
    assert_eq!(bed.send(PORT_A, &fin, S), TO_B);
    assert!(matches!(
        bed.requests()[..],
        [OffloadRequest::Revoke { flow }] if flow.src_port == 40000
    ));
    // After the FIN the connection is not ESTABLISHED: no new offers.
    let ack = from_b(proto::TCP, &tcp(443, 40000, ACK, 1));
    assert_eq!(bed.send(PORT_B, &ack, S), TO_A);
    assert!(bed.requests().is_empty());
    let rst = from_b(proto::TCP, &tcp(443, 40000, RST, 1));
    assert_eq!(bed.send(PORT_B, &rst, S), TO_A);
    assert!(matches!(
        bed.requests()[..],
        [OffloadRequest::Revoke { .. }]
    ));
}

#[test]
fn udp_is_offered_from_its_first_known_unicast_frame_floods_are_not() {
    let bed = Bed::offloading(vec![rule(53, proto::UDP, Action::Allow, Mode::Enforce, 5)]);
    let query = from_a(proto::UDP, &udp(5000, 53, 1));
    // B's MAC is unknown yet: flooded, nothing to offer.
    assert_eq!(bed.send(PORT_A, &query, S), FLOOD);
    assert!(bed.requests().is_empty());
    let answer = from_b(proto::UDP, &udp(53, 5000, 1));
    assert_eq!(bed.send(PORT_B, &answer, S), TO_A);
    assert_eq!(installs(&bed.requests()), vec![(PORT_B, PORT_A, 1, 0)]);
    assert_eq!(bed.send(PORT_A, &query, S), TO_B);
    assert_eq!(installs(&bed.requests()), vec![(PORT_A, PORT_B, 1, 0)]);
}

#[test]
fn vlan_tagged_frames_and_denied_flows_are_never_offered() {
    let bed = Bed::offloading(vec![rule(53, proto::UDP, Action::Allow, Mode::Enforce, 5)]);
    let tagged = |src: [u8; 4], dst: [u8; 4], macs: ([u8; 6], [u8; 6]), ports: (u16, u16)| {
        let l4 = udp(ports.0, ports.1, 1);
        with_macs(
            ethernet(&[7], 0x0800, &ipv4(src, dst, proto::UDP, &l4)),
            macs.0,
            macs.1,
        )
    };
    let query = tagged(A, B, (MAC_A, MAC_B), (5000, 53));
    assert_eq!(bed.send(PORT_A, &query, S), FLOOD);
    assert_eq!(
        bed.send(PORT_B, &tagged(B, A, (MAC_B, MAC_A), (53, 5000)), S),
        TO_A
    );
    assert_eq!(bed.send(PORT_A, &query, S), TO_B);
    assert!(bed.requests().is_empty());
    let denied = from_a(proto::UDP, &udp(5000, 54, 1));
    assert_eq!(
        bed.send(PORT_A, &denied, S),
        FrameAction::Drop(DropCause::Policy)
    );
    assert!(bed.requests().is_empty());
}

#[test]
fn a_policy_change_reoffers_what_it_keeps_and_revokes_what_it_cuts() {
    let bed = Bed::offloading(allow_https());
    open_https(&bed);
    bed.requests();
    let data = from_a(proto::TCP, &tcp(40000, 443, PSH | ACK, 1));
    bed.publish(2, allow_https());
    assert_eq!(bed.send(PORT_A, &data, S), TO_B);
    assert_eq!(
        installs(&bed.requests()),
        vec![(PORT_A, PORT_B, 2, PSH | ACK)]
    );
    bed.publish(3, vec![]);
    assert_eq!(
        bed.send(PORT_A, &data, S),
        FrameAction::Drop(DropCause::PolicyCut)
    );
    assert!(matches!(
        bed.requests()[..],
        [OffloadRequest::Revoke { .. }]
    ));
}

#[test]
fn a_full_request_queue_drops_and_counts() {
    let bed = Bed::offloading(vec![rule(53, proto::UDP, Action::Allow, Mode::Enforce, 5)]);
    let query = from_a(proto::UDP, &udp(5000, 53, 1));
    assert_eq!(bed.send(PORT_A, &query, S), FLOOD);
    let answer = from_b(proto::UDP, &udp(53, 5000, 1));
    assert_eq!(bed.send(PORT_B, &answer, S), TO_A);
    for _ in 0..100 {
        assert_eq!(bed.send(PORT_A, &query, S), TO_B);
    }
    let queue = bed.pipeline.offload().expect("offloading bed");
    assert_eq!(bed.requests().len(), 64);
    assert_eq!(queue.dropped(), 101 - 64);
}

#[test]
fn a_fin_after_data_forwarded_in_xdp_is_in_window() {
    let bed = Bed::offloading(allow_https());
    open_https(&bed);
    // The ACK that established it was offered: the fast path may now
    // carry 50 MB that conntrack never sees.
    assert_eq!(installs(&bed.requests()).len(), 1);
    let mut fin = tcp(40000, 443, FIN | ACK, 0);
    fin[4..8].copy_from_slice(&(1_000u32 + 50_000_000).to_be_bytes());
    assert_eq!(bed.send(PORT_A, &from_a(proto::TCP, &fin), S), TO_B);
    assert!(matches!(
        bed.requests()[..],
        [OffloadRequest::Revoke { .. }]
    ));

    // Without the fast path the same FIN is out of window.
    let bed = Bed::new(allow_https());
    open_https(&bed);
    assert_eq!(
        bed.send(PORT_A, &from_a(proto::TCP, &fin), S),
        FrameAction::Drop(DropCause::Conntrack(InvalidReason::OutOfWindow))
    );
}

mod grouping;
