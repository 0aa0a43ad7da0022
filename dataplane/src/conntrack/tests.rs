//! Conntrack tests, all on an explicit clock.

use super::*;
use crate::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use crate::packet::{AddrFamily, FlowKey, TcpSegment};
use entry::{with_workload, WORKLOADS_WORD};

const S: u64 = 1_000_000_000;
const CLIENT: u128 = 0x0a00_0001;
const SERVER: u128 = 0x0a00_0002;
const ALLOW: Admission = Admission::Allow {
    generation: 1,
    rule_id: 7,
};

fn table() -> ConntrackTable {
    ConntrackTable::new(ConntrackConfig::default())
}

fn flow(src: u128, dst: u128, proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
    FlowKey {
        family: AddrFamily::V4,
        src,
        dst,
        proto,
        src_port,
        dst_port,
        ..FlowKey::default()
    }
}

/// A TCP connection under test: client port 40000 to server port 443, with
/// each side's next sequence number.
struct Tcp {
    client_seq: u32,
    server_seq: u32,
}

impl Tcp {
    fn new() -> Self {
        Self {
            client_seq: 1_000,
            server_seq: 90_000,
        }
    }

    fn segment(&mut self, from_client: bool, flags: u8, payload: u16) -> TrackPacket {
        let (src, dst, sp, dp) = if from_client {
            (CLIENT, SERVER, 40000, 443)
        } else {
            (SERVER, CLIENT, 443, 40000)
        };
        let (seq, ack) = if from_client {
            (&mut self.client_seq, self.server_seq)
        } else {
            (&mut self.server_seq, self.client_seq)
        };
        let segment = TcpSegment {
            seq: *seq,
            ack,
            window: 65535,
            window_scale: None,
            payload_len: payload,
        };
        *seq = seq
            .wrapping_add(u32::from(payload))
            .wrapping_add(u32::from(flags & (SYN | FIN) != 0));
        TrackPacket {
            flow: FlowKey {
                tcp_flags: flags,
                ..flow(src, dst, proto::TCP, sp, dp)
            },
            tcp: Some(segment),
            bytes: 60 + u32::from(payload),
            ..TrackPacket::default()
        }
    }
}

fn state_of(outcome: TrackOutcome) -> ConnState {
    match outcome {
        TrackOutcome::Tracked { state, .. } => state,
        other => panic!("expected a tracked packet, got {other:?}"),
    }
}

/// Sends `steps` (from_client, flags, payload) and returns the states.
fn run(table: &ConntrackTable, tcp: &mut Tcp, steps: &[(bool, u8, u16)]) -> Vec<ConnState> {
    steps
        .iter()
        .map(|&(c, flags, len)| state_of(table.track(&tcp.segment(c, flags, len), S, || ALLOW)))
        .collect()
}

fn handshake(table: &ConntrackTable, tcp: &mut Tcp) {
    use ConnState::*;
    let states = run(
        table,
        tcp,
        &[(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0)],
    );
    assert_eq!(states, [TcpSynSent, TcpSynRecv, TcpEstablished]);
}

fn conn_key() -> ConnKey {
    ConnKey::from_flow(&flow(CLIENT, SERVER, proto::TCP, 40000, 443), 0).0
}

#[test]
fn key_normalizes_both_directions() {
    let (a, from_a) = ConnKey::from_flow(&flow(CLIENT, SERVER, proto::UDP, 5000, 53), 3);
    let (b, from_b) = ConnKey::from_flow(&flow(SERVER, CLIENT, proto::UDP, 53, 5000), 3);
    assert_eq!(a, b);
    assert_ne!(from_a, from_b);
    let (other_zone, _) = ConnKey::from_flow(&flow(CLIENT, SERVER, proto::UDP, 5000, 53), 4);
    assert_ne!(a, other_zone);
}

#[test]
fn tcp_handshake_data_and_orderly_close() {
    use ConnState::*;
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let states = run(
        &table,
        &mut tcp,
        &[
            (true, PSH | ACK, 100),
            (false, ACK, 0),
            (true, FIN | ACK, 0),
            (false, ACK, 0),
            (false, FIN | ACK, 0),
            (true, ACK, 0),
        ],
    );
    assert_eq!(
        states,
        [
            TcpEstablished,
            TcpEstablished,
            TcpFinWait,
            TcpCloseWait,
            TcpLastAck,
            TcpTimeWait
        ]
    );
    let entry = table.get(&conn_key()).expect("tracked");
    assert_eq!(entry.packets.iter().sum::<u32>(), 9);
    assert_eq!(entry.generation, 1);
    assert_eq!(entry.rule_id, 7);
    assert!(entry.replied());
    // TIME_WAIT lasts 120 s; then the sweep closes it as FIN-closed.
    assert_eq!(table.sweep(S + 119 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(S + 121 * S, ALL_SHARDS), 1);
    assert_eq!(table.stats().ended(EndReason::Closed), 1);
    assert!(table.is_empty());
}

#[test]
fn simultaneous_open() {
    use ConnState::*;
    let table = table();
    let mut tcp = Tcp::new();
    let states = run(
        &table,
        &mut tcp,
        &[
            (true, SYN, 0),
            (false, SYN, 0),
            (true, SYN | ACK, 0),
            (false, SYN | ACK, 0),
            (true, ACK, 0),
        ],
    );
    assert_eq!(
        states,
        [
            TcpSynSent,
            TcpSynRecv,
            TcpSynRecv,
            TcpSynRecv,
            TcpEstablished
        ]
    );
}

#[test]
fn retransmitted_syn_keeps_one_entry() {
    let table = table();
    let mut tcp = Tcp::new();
    let syn = tcp.segment(true, SYN, 0);
    assert!(matches!(
        table.track(&syn, S, || ALLOW),
        TrackOutcome::Tracked { created: true, .. }
    ));
    let again = table.track(&syn, 2 * S, || {
        panic!("a retransmission is not a new connection")
    });
    assert_eq!(state_of(again), ConnState::TcpSynSent);
    assert_eq!(table.len(), 1);
    assert_eq!(table.stats().created, 1);
}

#[test]
fn rst_in_every_state_ends_the_connection() {
    use ConnState::*;
    let prefixes: [&[(bool, u8, u16)]; 7] = [
        &[(true, SYN, 0)],
        &[(true, SYN, 0), (false, SYN | ACK, 0)],
        &[(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0)],
        &[
            (true, SYN, 0),
            (false, SYN | ACK, 0),
            (true, ACK, 0),
            (true, FIN | ACK, 0),
        ],
        &[
            (true, SYN, 0),
            (false, SYN | ACK, 0),
            (true, ACK, 0),
            (true, FIN | ACK, 0),
            (false, ACK, 0),
        ],
        &[
            (true, SYN, 0),
            (false, SYN | ACK, 0),
            (true, ACK, 0),
            (true, FIN | ACK, 0),
            (false, FIN | ACK, 0),
        ],
        &[
            (true, SYN, 0),
            (false, SYN | ACK, 0),
            (true, ACK, 0),
            (true, FIN | ACK, 0),
            (false, FIN | ACK, 0),
            (true, ACK, 0),
        ],
    ];
    let expected_before = [
        TcpSynSent,
        TcpSynRecv,
        TcpEstablished,
        TcpFinWait,
        TcpCloseWait,
        TcpLastAck,
        TcpTimeWait,
    ];
    for (steps, before) in prefixes.iter().zip(expected_before) {
        for rst_from_client in [true, false] {
            let table = table();
            let mut tcp = Tcp::new();
            let states = run(&table, &mut tcp, steps);
            assert_eq!(*states.last().expect("steps"), before);
            let rst = tcp.segment(rst_from_client, RST | ACK, 0);
            assert_eq!(
                state_of(table.track(&rst, S, || ALLOW)),
                TcpClose,
                "RST in {before:?}"
            );
            assert!(table.is_empty(), "RST in {before:?} removes the entry");
            assert_eq!(table.stats().ended(EndReason::Reset), 1);
            // A stray segment after the reset finds no connection.
            let late = tcp.segment(true, ACK, 10);
            assert_eq!(
                table.track(&late, S, || ALLOW),
                TrackOutcome::Invalid(InvalidReason::NoConnection)
            );
        }
    }
}

#[test]
fn blind_rst_and_out_of_window_data_are_invalid() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let mut blind = tcp.segment(false, RST, 0);
    blind.tcp = blind.tcp.map(|mut s| {
        s.seq = s.seq.wrapping_add(3_000_000_000);
        s
    });
    assert_eq!(
        table.track(&blind, S, || ALLOW),
        TrackOutcome::Invalid(InvalidReason::RstOutOfWindow)
    );
    let mut injected = tcp.segment(true, PSH | ACK, 100);
    injected.tcp = injected.tcp.map(|mut s| {
        s.seq = s.seq.wrapping_add(10_000_000);
        s
    });
    assert_eq!(
        table.track(&injected, S, || ALLOW),
        TrackOutcome::Invalid(InvalidReason::OutOfWindow)
    );
    // The connection survives both, and in-window data still flows.
    assert_eq!(
        state_of(table.track(&tcp.segment(true, ACK, 10), S, || ALLOW)),
        ConnState::TcpEstablished
    );
    let stats = table.stats();
    assert_eq!(stats.invalid(InvalidReason::RstOutOfWindow), 1);
    assert_eq!(stats.invalid(InvalidReason::OutOfWindow), 1);
}

#[test]
fn retransmission_of_old_data_is_in_window() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let first = tcp.segment(true, PSH | ACK, 1000);
    table.track(&first, S, || ALLOW);
    run(&table, &mut tcp, &[(true, PSH | ACK, 1000)]);
    // The first segment again, as a retransmission.
    assert_eq!(
        state_of(table.track(&first, S, || ALLOW)),
        ConnState::TcpEstablished
    );
}

#[test]
fn half_close_lets_the_other_side_keep_sending() {
    use ConnState::*;
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let states = run(
        &table,
        &mut tcp,
        &[
            (false, FIN | ACK, 0), // the server closes first
            (true, ACK, 0),
            (true, PSH | ACK, 500), // the client still sends
            (false, ACK, 0),
            (true, FIN | ACK, 0),
            (false, ACK, 0),
        ],
    );
    assert_eq!(
        states,
        [
            TcpFinWait,
            TcpCloseWait,
            TcpCloseWait,
            TcpCloseWait,
            TcpLastAck,
            TcpTimeWait
        ]
    );
}

#[test]
fn time_wait_reuse_opens_a_new_connection() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    run(
        &table,
        &mut tcp,
        &[(true, FIN | ACK, 0), (false, FIN | ACK, 0), (true, ACK, 0)],
    );
    assert_eq!(
        table.get(&conn_key()).map(|e| e.state),
        Some(ConnState::TcpTimeWait)
    );
    let mut fresh = Tcp {
        client_seq: 5_000_000,
        server_seq: 7_000_000,
    };
    let reopened = table.track(&fresh.segment(true, SYN, 0), 2 * S, || ALLOW);
    assert!(matches!(
        reopened,
        TrackOutcome::Tracked {
            created: true,
            state: ConnState::TcpSynSent,
            ..
        }
    ));
    assert_eq!(table.len(), 1);
    assert_eq!(table.stats().ended(EndReason::Removed), 1);
    assert_eq!(table.stats().created, 2);
}

#[test]
fn packets_out_of_state_are_invalid_and_counted() {
    let table = table();
    let mut tcp = Tcp::new();
    let mid_stream = tcp.segment(true, ACK, 100);
    assert_eq!(
        table.track(&mid_stream, S, || panic!("no admission for a non-SYN")),
        TrackOutcome::Invalid(InvalidReason::NoConnection)
    );
    for flags in [SYN | FIN, SYN | RST, FIN, 0] {
        let bad = tcp.segment(true, flags, 0);
        assert_eq!(
            table.track(&bad, S, || ALLOW),
            TrackOutcome::Invalid(InvalidReason::BadTcpFlags)
        );
    }
    handshake(&table, &mut tcp);
    let mut syn = tcp.segment(true, SYN, 0);
    syn.tcp = syn.tcp.map(|mut s| {
        s.seq = s.seq.wrapping_sub(1);
        s
    });
    assert_eq!(
        table.track(&syn, S, || ALLOW),
        TrackOutcome::Invalid(InvalidReason::SynOnEstablished)
    );
    let stats = table.stats();
    assert_eq!(stats.invalid(InvalidReason::NoConnection), 1);
    assert_eq!(stats.invalid(InvalidReason::BadTcpFlags), 4);
    assert_eq!(stats.invalid(InvalidReason::SynOnEstablished), 1);
    assert_eq!(table.len(), 1);
}

fn udp(from_client: bool) -> TrackPacket {
    let f = if from_client {
        flow(CLIENT, SERVER, proto::UDP, 5353, 53)
    } else {
        flow(SERVER, CLIENT, proto::UDP, 53, 5353)
    };
    TrackPacket {
        flow: f,
        bytes: 80,
        ..TrackPacket::default()
    }
}

#[test]
fn udp_new_then_replied_with_their_timeouts() {
    let table = table();
    assert!(matches!(
        table.track(&udp(true), 0, || ALLOW),
        TrackOutcome::Tracked {
            state: ConnState::New,
            created: true,
            ..
        }
    ));
    // Unreplied UDP lives 30 s.
    assert_eq!(table.sweep(29 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(31 * S, ALL_SHARDS), 1);
    assert_eq!(table.stats().ended(EndReason::Expired), 1);

    table.track(&udp(true), 100 * S, || ALLOW);
    let reply = table.track(&udp(false), 101 * S, || panic!("replies are tracked"));
    assert!(matches!(
        reply,
        TrackOutcome::Tracked {
            state: ConnState::Established,
            direction: Direction::Reply,
            ..
        }
    ));
    // Replied UDP lives 120 s from the last packet.
    assert_eq!(table.sweep(101 * S + 119 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(101 * S + 121 * S, ALL_SHARDS), 1);
}

#[test]
fn expired_entry_is_replaced_on_its_next_packet_even_without_a_sweep() {
    let table = table();
    table.track(&udp(true), 0, || ALLOW);
    let again = table.track(&udp(true), 31 * S, || ALLOW);
    assert!(matches!(again, TrackOutcome::Tracked { created: true, .. }));
    assert_eq!(table.stats().ended(EndReason::Expired), 1);
    assert_eq!(table.len(), 1);
}

fn icmp_echo(request: bool, id: u16) -> TrackPacket {
    let (src, dst, icmp_type) = if request {
        (CLIENT, SERVER, 8u8)
    } else {
        (SERVER, CLIENT, 0u8)
    };
    TrackPacket {
        flow: flow(src, dst, proto::ICMP, id, u16::from(icmp_type) << 8),
        bytes: 98,
        ..TrackPacket::default()
    }
}

#[test]
fn icmp_echo_request_opens_and_reply_answers() {
    let table = table();
    assert_eq!(
        table.track(&icmp_echo(false, 9), 0, || ALLOW),
        TrackOutcome::Invalid(InvalidReason::NoConnection),
        "an echo reply opens nothing"
    );
    table.track(&icmp_echo(true, 9), 0, || ALLOW);
    let reply = table.track(&icmp_echo(false, 9), S, || panic!("tracked"));
    assert!(matches!(
        reply,
        TrackOutcome::Tracked {
            state: ConnState::Established,
            ..
        }
    ));
    // A different identifier is a different "connection".
    assert!(matches!(
        table.track(&icmp_echo(true, 10), S, || ALLOW),
        TrackOutcome::Tracked { created: true, .. }
    ));
    assert_eq!(table.len(), 2);
    // ICMP lives 30 s.
    assert_eq!(table.sweep(32 * S, ALL_SHARDS), 2);
}

#[test]
fn icmp_errors_are_related_to_the_connection_they_quote() {
    let table = table();
    table.track(&udp(true), 0, || ALLOW);
    // The server's host says port unreachable, quoting the client's packet.
    let error = TrackPacket {
        flow: flow(SERVER, CLIENT, proto::ICMP, 0, 3 << 8 | 3),
        quoted: Some(flow(CLIENT, SERVER, proto::UDP, 5353, 53)),
        ..TrackPacket::default()
    };
    assert_eq!(
        table.track(&error, S, || panic!("errors never open connections")),
        TrackOutcome::Related {
            generation: 1,
            rule_id: 7
        }
    );
    let unrelated = TrackPacket {
        quoted: Some(flow(CLIENT, SERVER, proto::UDP, 1, 2)),
        ..error
    };
    assert_eq!(
        table.track(&unrelated, S, || ALLOW),
        TrackOutcome::Invalid(InvalidReason::UnrelatedIcmpError)
    );
    assert_eq!(table.stats().related, 1);
}

#[test]
fn denied_connections_leave_no_entry() {
    let table = table();
    assert_eq!(
        table.track(&udp(true), 0, || Admission::Deny),
        TrackOutcome::Denied
    );
    assert!(table.is_empty());
    assert_eq!(table.stats().denied, 1);
}

#[test]
fn established_tcp_times_out_after_five_days() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    assert_eq!(table.sweep(S + 431_999 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(S + 432_001 * S, ALL_SHARDS), 1);
}

#[test]
fn timeouts_are_configurable() {
    let table = ConntrackTable::new(ConntrackConfig {
        timeouts: Timeouts {
            udp_unreplied: 2 * S,
            ..Timeouts::default()
        },
        ..ConntrackConfig::default()
    });
    table.track(&udp(true), 0, || ALLOW);
    assert_eq!(table.sweep(3 * S, ALL_SHARDS), 1);
}

fn udp_from(src: u128, port: u16) -> TrackPacket {
    TrackPacket {
        flow: flow(src, SERVER, proto::UDP, port, 53),
        ..TrackPacket::default()
    }
}

#[test]
fn full_table_reclaims_expired_then_early_drops_unreplied() {
    let table = ConntrackTable::new(ConntrackConfig {
        max_entries: 64,
        pressure_sweep_shards: ALL_SHARDS,
        early_drop_scan: 64,
        ..ConntrackConfig::default()
    });
    for port in 0..64 {
        assert!(matches!(
            table.track(&udp_from(CLIENT, port), 0, || ALLOW),
            TrackOutcome::Tracked { .. }
        ));
    }
    assert_eq!(table.len(), 64);
    // At 31 s every unreplied UDP entry is expired: reclaimed first.
    assert!(matches!(
        table.track(&udp_from(CLIENT, 1000), 31 * S, || ALLOW),
        TrackOutcome::Tracked { created: true, .. }
    ));
    assert_eq!(table.stats().ended(EndReason::Expired), 64);
    assert_eq!(table.len(), 1);

    // Fill again with live entries; a new one early-drops an unreplied one.
    for port in 2000..2063 {
        table.track(&udp_from(CLIENT, port), 40 * S, || ALLOW);
    }
    assert_eq!(table.len(), 64);
    assert!(matches!(
        table.track(&udp_from(CLIENT, 9999), 41 * S, || ALLOW),
        TrackOutcome::Tracked { created: true, .. }
    ));
    assert_eq!(table.stats().ended(EndReason::EarlyDrop), 1);
    assert_eq!(table.len(), 64);
}

#[test]
fn full_table_of_answered_connections_refuses_new_ones() {
    let table = ConntrackTable::new(ConntrackConfig {
        max_entries: 8,
        ..ConntrackConfig::default()
    });
    for port in 0..8 {
        table.track(&udp_from(CLIENT, port), 0, || ALLOW);
        let reply = TrackPacket {
            flow: flow(SERVER, CLIENT, proto::UDP, 53, port),
            ..TrackPacket::default()
        };
        table.track(&reply, 0, || ALLOW);
    }
    assert_eq!(
        table.track(&udp_from(CLIENT, 100), S, || ALLOW),
        TrackOutcome::Refused(RefuseReason::TableFull)
    );
    assert_eq!(table.len(), 8);
    assert_eq!(table.stats().refused(RefuseReason::TableFull), 1);
}

/// Client packets of UDP connections (source ports from `first` up) that
/// hash into shard `shard` of `table`.
fn udp_into_shard(
    table: &ConntrackTable,
    shard: usize,
    first: u16,
) -> impl Iterator<Item = TrackPacket> + '_ {
    (first..=u16::MAX)
        .map(|port| udp_from(CLIENT, port))
        .filter(move |packet| table.prepare(&packet.flow, packet.zone).place.shard == shard)
}

/// A table of 6,400 with one shard filled to its cap: far below the
/// table's capacity. Returns the table and the shard's first (oldest)
/// connection's client packet, opened at 0; the others at 1 s, answered
/// if `answered`.
fn table_with_a_full_shard(answered: bool) -> (ConntrackTable, TrackPacket) {
    let table = ConntrackTable::new(ConntrackConfig {
        max_entries: 6_400,
        early_drop_scan: 1_024,
        ..ConntrackConfig::default()
    });
    assert_eq!(table.table.shard_count(), MIN_SHARDS);
    let mut into_shard = udp_into_shard(&table, 0, 0);
    let oldest = into_shard.next().expect("a port hashing into shard 0");
    let open = |packet: &TrackPacket, now: u64| {
        let outcome = table.track(packet, now, || ALLOW);
        assert!(matches!(
            outcome,
            TrackOutcome::Tracked { created: true, .. }
        ));
        if answered {
            let reply = TrackPacket {
                flow: flow(SERVER, CLIENT, proto::UDP, 53, packet.flow.src_port),
                ..TrackPacket::default()
            };
            table.track(&reply, now, || ALLOW);
        }
    };
    open(&oldest, 0);
    while !table.table.lock(0).is_full() {
        open(&into_shard.next().expect("ports left"), S);
    }
    drop(into_shard);
    // The table has plenty of room: only the shard is full.
    assert!(
        table.len() < table.config().max_entries / 10,
        "{} entries",
        table.len()
    );
    (table, oldest)
}

/// The next connection hashing into shard 0 after those of
/// `table_with_a_full_shard`.
fn newcomer(table: &ConntrackTable) -> TrackPacket {
    let mut into_shard = udp_into_shard(table, 0, 0);
    into_shard
        .find(|packet| table.get(&ConnKey::from_flow(&packet.flow, 0).0).is_none())
        .expect("a port hashing into shard 0")
}

#[test]
fn a_shard_full_before_the_table_early_drops_within_itself() {
    let (table, oldest) = table_with_a_full_shard(false);
    let filled = table.len();
    let newcomer = newcomer(&table);
    assert!(matches!(
        table.track(&newcomer, 2 * S, || ALLOW),
        TrackOutcome::Tracked { created: true, .. }
    ));
    assert_eq!(table.stats().ended(EndReason::EarlyDrop), 1);
    assert_eq!(table.stats().refused(RefuseReason::TableFull), 0);
    assert_eq!(table.len(), filled);
    // The one dropped is the shard's oldest unreplied connection.
    assert_eq!(table.get(&ConnKey::from_flow(&oldest.flow, 0).0), None);
    assert!(table
        .get(&ConnKey::from_flow(&newcomer.flow, 0).0)
        .is_some());
}

/// A worker that reserved room for a connection another worker opened
/// meanwhile joins it, and evicts nothing for it.
#[test]
fn a_connection_found_on_relocking_a_full_shard_evicts_nothing() {
    let (table, oldest) = table_with_a_full_shard(false);
    let prepared = table.prepare(&oldest.flow, oldest.zone);
    let relocked = table.relock_for_insert(&prepared, &oldest, 2 * S);
    assert!(matches!(
        relocked,
        Err(Some(TrackOutcome::Tracked { created: false, .. }))
    ));
    drop(relocked);
    assert_eq!(table.stats().ended(EndReason::EarlyDrop), 0);
    assert!(table.get(&ConnKey::from_flow(&oldest.flow, 0).0).is_some());
}

#[test]
fn a_shard_full_of_answered_connections_refuses_while_the_table_has_room() {
    let (table, oldest) = table_with_a_full_shard(true);
    let filled = table.len();
    assert_eq!(
        table.track(&newcomer(&table), 2 * S, || ALLOW),
        TrackOutcome::Refused(RefuseReason::TableFull)
    );
    assert_eq!(table.stats().ended(EndReason::EarlyDrop), 0);
    assert_eq!(table.len(), filled);
    assert!(table.get(&ConnKey::from_flow(&oldest.flow, 0).0).is_some());
}

#[test]
fn a_flooding_source_hits_its_quota_while_others_still_connect() {
    let table = ConntrackTable::new(ConntrackConfig {
        max_entries: 1000,
        per_source_limit: 100,
        ..ConntrackConfig::default()
    });
    let attacker = 0x0a00_0066;
    let mut refused = 0;
    for port in 0..500u16 {
        let syn = TrackPacket {
            flow: FlowKey {
                tcp_flags: SYN,
                ..flow(attacker, SERVER, proto::TCP, port, 80)
            },
            tcp: Some(TcpSegment::default()),
            ..TrackPacket::default()
        };
        if table.track(&syn, S, || ALLOW) == TrackOutcome::Refused(RefuseReason::SourceQuota) {
            refused += 1;
        }
    }
    assert_eq!(refused, 400);
    assert_eq!(table.source_count(0, AddrFamily::V4, attacker), 100);
    for port in 0..50 {
        assert!(matches!(
            table.track(&udp_from(CLIENT, port), S, || ALLOW),
            TrackOutcome::Tracked { created: true, .. }
        ));
    }
    assert_eq!(table.len(), 150);
    // Quotas are released as entries end.
    table.sweep(1000 * S, ALL_SHARDS);
    assert_eq!(table.source_count(0, AddrFamily::V4, attacker), 0);
}

#[test]
fn events_report_creation_and_end_and_count_losses() {
    let table = ConntrackTable::new(ConntrackConfig {
        event_capacity: 2,
        ..ConntrackConfig::default()
    });
    table.track(&udp(true), 0, || ALLOW);
    match table.events().pop() {
        Some(FlowEvent::Created { key, entry }) => {
            assert_eq!(key.proto, proto::UDP);
            assert_eq!(
                entry.packets,
                [1, 0].map(|p| if entry.originator == 0 { p } else { 1 - p })
            );
        }
        other => panic!("expected Created, got {other:?}"),
    }
    table.sweep(60 * S, ALL_SHARDS);
    assert!(matches!(
        table.events().pop(),
        Some(FlowEvent::Ended {
            reason: EndReason::Expired,
            ..
        })
    ));
    for port in 0..5 {
        table.track(&udp_from(CLIENT, port), 100 * S, || ALLOW);
    }
    assert_eq!(table.events().len(), 2);
    assert_eq!(table.stats().events_dropped, 3);
}

#[test]
fn readmit_and_remove_serve_policy_rechecks() {
    let table = table();
    table.track(&udp(true), 0, || ALLOW);
    let (key, _) = ConnKey::from_flow(&udp(true).flow, 0);
    assert!(table.readmit(&key, 2, 9));
    let tracked = table.track(&udp(false), S, || ALLOW);
    assert!(matches!(
        tracked,
        TrackOutcome::Tracked {
            generation: 2,
            rule_id: 9,
            ..
        }
    ));
    assert!(table.remove(&key, EndReason::Removed).is_some());
    assert!(table.get(&key).is_none());
    assert!(!table.readmit(&key, 3, 9));
}

#[test]
fn concurrent_workers_keep_counts_consistent() {
    use std::sync::Arc;
    let table = Arc::new(ConntrackTable::new(ConntrackConfig {
        max_entries: 50_000,
        per_source_limit: 50_000,
        event_capacity: 1 << 20,
        ..ConntrackConfig::default()
    }));
    let threads: Vec<_> = (0..4u128)
        .map(|t| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for round in 0..3u64 {
                    let now = round * 40 * S;
                    for i in 0..10_000u16 {
                        // Half the flows are shared by all threads (races on
                        // the same key), half are this thread's own.
                        let src = if i % 2 == 0 {
                            0x0a01_0000
                        } else {
                            0x0a02_0000 + t
                        };
                        table.track(&udp_from(src, i), now, || ALLOW);
                        if i % 1000 == 0 {
                            table.sweep(now, 8);
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("worker thread");
    }
    let mut seen = std::collections::HashSet::new();
    table.for_each(|key, _| assert!(seen.insert(*key), "duplicate entry {key:?}"));
    assert_eq!(seen.len(), table.len(), "entry counter matches the entries");
    let stats = table.stats();
    let ended: u64 = stats.ended.iter().sum();
    assert_eq!(
        stats.created - ended,
        table.len() as u64,
        "created - ended = live"
    );
    // Shared flows: 5,000 keys; own flows: 5,000 per thread.
    assert_eq!(table.len(), 5_000 + 4 * 5_000);
    // Every live entry is counted against exactly its source's quota.
    let shared = table.source_count(0, AddrFamily::V4, 0x0a01_0000);
    assert_eq!(shared, 5_000);
    for t in 0..4 {
        assert_eq!(
            table.source_count(0, AddrFamily::V4, 0x0a02_0000 + t),
            5_000
        );
    }
}

fn round_trip(entry: &ConnEntry) -> ConnEntry {
    ConnEntry::decode(&entry.encode())
}

#[test]
fn entries_round_trip_through_their_stored_words() {
    let entry = ConnEntry {
        state: ConnState::TcpCloseWait,
        originator: 1,
        closer: 0,
        flags_seen: [0x12, 0xff],
        generation: u32::MAX,
        rule_id: 0xdead_beef,
        packets: [7, u32::MAX],
        bytes: [u64::MAX, 3],
        first_seen: 5_000 * S,
        last_seen: 9_000 * S + 123,
        tcp: [
            TcpDirection {
                max_end: 1,
                max_window: u32::MAX,
                scale: 14,
                seen: true,
            },
            TcpDirection {
                max_end: u32::MAX,
                max_window: 2,
                scale: 0,
                seen: false,
            },
        ],
        workloads: [42, u32::MAX],
    };
    assert_eq!(round_trip(&entry), entry);
    for state in [
        ConnState::TcpSynSent,
        ConnState::TcpSynRecv,
        ConnState::TcpEstablished,
        ConnState::TcpFinWait,
        ConnState::TcpCloseWait,
        ConnState::TcpLastAck,
        ConnState::TcpTimeWait,
        ConnState::TcpClose,
        ConnState::New,
        ConnState::Established,
    ] {
        let entry = ConnEntry {
            state,
            closer: 1,
            ..entry
        };
        assert_eq!(round_trip(&entry), entry);
    }
}

#[test]
fn first_seen_is_kept_to_the_millisecond_then_to_the_second() {
    const MS: u64 = 1_000_000;
    const DAY: u64 = 86_400 * S;
    let young = ConnEntry {
        first_seen: 1_000 * DAY + 7 * MS + 999,
        last_seen: 1_003 * DAY,
        ..ConnEntry::default()
    };
    assert_eq!(round_trip(&young).first_seen, 1_000 * DAY + 7 * MS);
    // Older than 2^31 ms (24.8 days): seconds.
    let old = ConnEntry {
        first_seen: 1_000 * DAY + 7 * S + 5 * MS,
        last_seen: 1_030 * DAY,
        ..ConnEntry::default()
    };
    assert_eq!(round_trip(&old).first_seen, 1_000 * DAY + 7 * S);
    // A year-old connection keeps its start.
    let ancient = ConnEntry {
        last_seen: 1_365 * DAY,
        ..old
    };
    assert_eq!(round_trip(&ancient).first_seen, 1_000 * DAY + 7 * S);
}

/// Every packet re-encodes the entry with a later `last_seen`: the start
/// must not creep.
#[test]
fn first_seen_does_not_drift_as_packets_arrive() {
    let mut entry = ConnEntry {
        first_seen: 3 * S + 250_000_000,
        last_seen: 3 * S + 250_000_000,
        ..ConnEntry::default()
    };
    let mut now = entry.last_seen;
    for step in 0..10_000u64 {
        now += 1_234_567 + step * 977_777_777;
        entry.last_seen = now;
        entry = round_trip(&entry);
    }
    assert!(
        now - entry.first_seen > 30 * 86_400 * S,
        "crossed to seconds"
    );
    assert_eq!(entry.first_seen, 3 * S);
}

#[test]
fn keys_round_trip_through_their_stored_words() {
    for family in [AddrFamily::V4, AddrFamily::V6] {
        let flow = FlowKey {
            family,
            src: 0xfd00_0000_0000_0000_0000_0000_0000_00aa,
            dst: 0x2001_0db8_0000_0000_0000_0000_0000_0001,
            proto: proto::TCP,
            src_port: 65535,
            dst_port: 1,
            ..FlowKey::default()
        };
        let (key, _) = ConnKey::from_flow(&flow, 4094);
        assert_eq!(ConnKey::decode(&key.encode()), key);
    }
}

#[test]
fn key_addresses_round_trip_for_both_families() {
    let v6 = FlowKey {
        family: AddrFamily::V6,
        src: 0xfd00_0000_0000_0000_0000_0000_0000_00aa,
        dst: 0x2001_0db8_0000_0000_0000_0000_0000_0001,
        proto: proto::TCP,
        ..FlowKey::default()
    };
    let (key, sender) = ConnKey::from_flow(&v6, 0);
    assert_eq!(key.addr(sender), v6.src);
    assert_eq!(key.addr(1 - sender), v6.dst);
}

/// The word-level hit of UDP, ICMP and other protocols, on the counted
/// words plus the workloads word when the packet names one (as
/// `update_stateless` does), must store exactly what decoding, `apply` and
/// encoding store: random entries (counters near saturation, both
/// time-code forms) and packets (either end, with and without a workload,
/// times that cross the code's 24.8-day switch).
#[test]
fn stateless_hits_on_stored_words_match_decoding_and_applying() {
    use crate::classifier::classbench::SplitMix64;
    const DAY: u64 = 86_400 * S;
    let table = table();
    let mut rng = SplitMix64::new(0x5eed);
    let mut pick = |n: u64| rng.next_u64() % n;
    for case in 0..20_000 {
        let last_seen = pick(400 * DAY);
        let near_max = |value: u64, max: u64| {
            if value % 3 == 0 {
                max - value % 3
            } else {
                value
            }
        };
        let entry = ConnEntry {
            state: if pick(2) == 0 {
                ConnState::New
            } else {
                ConnState::Established
            },
            originator: pick(2) as u8,
            generation: pick(1 << 32) as u32,
            rule_id: pick(1 << 32) as u32,
            packets: [
                near_max(pick(1 << 32), u64::from(u32::MAX)) as u32,
                near_max(pick(1 << 32), u64::from(u32::MAX)) as u32,
            ],
            bytes: [near_max(pick(u64::MAX), u64::MAX), pick(1 << 40)],
            first_seen: last_seen - last_seen.min(pick(60 * DAY)),
            last_seen,
            workloads: [pick(5) as u32, pick(5) as u32],
            ..ConnEntry::default()
        };
        let words = entry.encode();
        let sender = pick(2) as u8;
        let packet = TrackPacket {
            flow: flow(CLIENT, SERVER, proto::UDP, 1000, 53),
            bytes: pick(1 << 16) as u32,
            workload: pick(3) as u32,
            ..TrackPacket::default()
        };
        let now = last_seen + pick(30 * DAY);

        let counted: [u64; COUNTED_WORDS] = std::array::from_fn(|index| words[index]);
        let mut stored = StoredEntry::new(counted);
        stored.count_stateless(sender, packet.bytes, now);
        let mut after = words;
        after[..COUNTED_WORDS].copy_from_slice(&stored.0);
        after[WORKLOADS_WORD] = with_workload(words[WORKLOADS_WORD], sender, packet.workload);
        let mut decoded = ConnEntry::decode(&words);
        table.apply(&mut decoded, sender, &packet, now);
        assert_eq!(after, decoded.encode(), "case {case}: {entry:?}");
        assert_eq!(stored.state(), decoded.state);
        assert_eq!(stored.originator(), decoded.originator);
        assert_eq!(
            (stored.generation(), stored.rule_id(), stored.last_seen()),
            (decoded.generation, decoded.rule_id, decoded.last_seen)
        );
    }
}

/// The XDP fast path forwards data conntrack never sees: its counts come
/// back through `refresh_offloaded`, and the sequence numbers that moved
/// on meanwhile must not make the connection's FIN out of window.
#[test]
fn frames_forwarded_by_the_fast_path_are_counted_and_restart_the_window() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let before = table.get(&conn_key()).expect("tracked");
    // 10 MB from the client in XDP.
    tcp.client_seq = tcp.client_seq.wrapping_add(10_000_000);
    let data = tcp.segment(true, ACK, 0).flow;
    assert!(table.refresh_offloaded(&data, 0, 7_000, 10_000_000, 9 * S));
    let after = table.get(&conn_key()).expect("tracked");
    let (_, client) = ConnKey::from_flow(&data, 0);
    let client = usize::from(client);
    assert_eq!(after.packets[client], before.packets[client] + 7_000);
    assert_eq!(after.bytes[client], before.bytes[client] + 10_000_000);
    assert_eq!(after.last_seen, 9 * S);
    // Without the restart this FIN would be 10 MB beyond the window.
    assert_eq!(
        state_of(table.track(&tcp.segment(true, FIN | ACK, 0), 10 * S, || ALLOW)),
        ConnState::TcpFinWait
    );
    // A connection no longer tracked is reported gone.
    let other = flow(CLIENT, SERVER, proto::UDP, 1, 2);
    assert!(!table.refresh_offloaded(&other, 0, 1, 1, S));
}

/// The word-level hit of a plain ACK on an ESTABLISHED connection must
/// store exactly what decoding, `tcp_step`, `apply` and encoding store,
/// and must leave every other case to that path untouched: random
/// entries (states, ends seen or not, window scales, counters near
/// saturation) and segments (either end, flags from plain ACK to SYN, FIN
/// and RST, sequence numbers inside and outside the window).
#[test]
fn established_acks_on_stored_words_match_decoding_and_applying() {
    use crate::classifier::classbench::SplitMix64;
    use crate::packet::tcp_flags::{ECE, URG};
    let table = table();
    let mut rng = SplitMix64::new(0xac4);
    let mut pick = |n: u64| rng.next_u64() % n;
    let flag_sets = [
        ACK,
        ACK | PSH,
        ACK | URG | ECE,
        FIN | ACK,
        SYN,
        RST | ACK,
        PSH,
        0,
    ];
    let mut taken = 0;
    for case in 0..20_000 {
        let direction = |pick: &mut dyn FnMut(u64) -> u64| TcpDirection {
            max_end: pick(1 << 32) as u32,
            max_window: pick(1 << 20) as u32,
            scale: if pick(3) == 0 { 0 } else { pick(15) as u8 },
            seen: pick(8) != 0,
        };
        let tcp = [direction(&mut pick), direction(&mut pick)];
        let last_seen = pick(1 << 50);
        let entry = ConnEntry {
            state: if pick(4) == 0 {
                ConnState::TcpFinWait
            } else {
                ConnState::TcpEstablished
            },
            originator: pick(2) as u8,
            closer: pick(2) as u8,
            flags_seen: [pick(256) as u8, pick(256) as u8],
            generation: pick(1 << 32) as u32,
            rule_id: pick(1 << 32) as u32,
            packets: [pick(1 << 32) as u32, u32::MAX - pick(2) as u32],
            bytes: [pick(u64::MAX), u64::MAX - pick(3000)],
            first_seen: last_seen - pick(last_seen.min(1 << 45)),
            last_seen,
            tcp,
            workloads: [pick(5) as u32, pick(5) as u32],
        };
        let words = entry.encode();
        let sender = pick(2) as u8;
        let sent = tcp[usize::from(sender)].max_end;
        let reach = i64::from(tcp[usize::from(1 - sender)].max_window.max(1)) * 2;
        let offset = pick(2 * reach as u64 + 1) as i64 - reach;
        let flags = flag_sets[pick(flag_sets.len() as u64) as usize];
        let packet = TrackPacket {
            flow: FlowKey {
                tcp_flags: flags,
                ..flow(CLIENT, SERVER, proto::TCP, 40_000, 80)
            },
            tcp: Some(TcpSegment {
                seq: sent.wrapping_add(offset as u32),
                window: pick(1 << 16) as u16,
                payload_len: pick(1500) as u16,
                ..TcpSegment::default()
            }),
            bytes: pick(1 << 16) as u32,
            workload: pick(3) as u32,
            ..TrackPacket::default()
        };
        let now = last_seen + pick(1 << 40);

        let mut stored = StoredEntry::new(words);
        let segment = packet.tcp.unwrap_or_default();
        let applied =
            stored.established_ack(sender, &segment, flags, packet.bytes, packet.workload, now);
        let mut decoded = ConnEntry::decode(&words);
        let step = table.tcp_step(&decoded, sender, &packet);
        if applied {
            taken += 1;
            assert_eq!(
                step,
                Ok(Transition::To(ConnState::TcpEstablished)),
                "case {case}"
            );
            table.apply(&mut decoded, sender, &packet, now);
            assert_eq!(
                stored.0,
                decoded.encode(),
                "case {case}: {entry:?}, {packet:?}"
            );
        } else {
            assert_eq!(stored.0, words, "case {case}: refused, yet changed");
        }
    }
    assert!(
        taken > 2_000,
        "only {taken} of 20,000 cases took the word-level path"
    );
}

/// A sweep decides expiry from a slot's hot line alone: the protocol and
/// family in the key's first word, whatever the key's form (an IPv6 key
/// is stored whole, or packed when both addresses fit 32 bits), and the
/// state and last-seen time in the entry's. ICMPv6 is ICMP (30 s) only as
/// IPv6; read as IPv4 it would be "other" (600 s).
#[test]
fn a_sweep_expires_ipv6_entries_by_their_own_protocol_and_state() {
    let table = table();
    let wide = 0xfd00_u128 << 112;
    let v6 = |addrs: (u128, u128), proto, src_port, tcp_flags| TrackPacket {
        flow: FlowKey {
            family: AddrFamily::V6,
            tcp_flags,
            ..flow(addrs.0, addrs.1, proto, src_port, 128 << 8)
        },
        tcp: (proto == proto::TCP).then(TcpSegment::default),
        ..TrackPacket::default()
    };
    let opened = [
        v6((wide | 1, wide | 2), proto::UDP, 5000, 0),
        v6((wide | 1, wide | 2), proto::ICMPV6, 7, 0),
        v6((1, 2), proto::ICMPV6, 7, 0),
        v6((wide | 1, wide | 2), proto::TCP, 5001, SYN),
    ];
    for packet in &opened {
        let outcome = table.track(packet, 0, || ALLOW);
        assert!(matches!(
            outcome,
            TrackOutcome::Tracked { created: true, .. }
        ));
    }
    // Unreplied UDP and ICMPv6 live 30 s, a connection in SYN_SENT 120 s.
    assert_eq!(table.sweep(29 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(31 * S, ALL_SHARDS), 3);
    assert_eq!(table.sweep(119 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(121 * S, ALL_SHARDS), 1);
    assert!(table.is_empty());
}

/// A table with `per_shard` unreplied UDP entries (last seen at 0, so
/// expired from 30 s) in each of its 64 shards, and a sweep pass of
/// `pass` ns.
fn expired_in_every_shard(pass: u64, per_shard: usize) -> ConntrackTable {
    let table = ConntrackTable::new(ConntrackConfig {
        max_entries: 64 * 1024,
        per_source_limit: u32::MAX,
        sweep_pass: pass,
        ..ConntrackConfig::default()
    });
    assert_eq!(table.table.shard_count(), 64);
    for shard in 0..64 {
        for packet in udp_into_shard(&table, shard, 0).take(per_shard) {
            table.track(&packet, 0, || ALLOW);
        }
    }
    assert_eq!(table.len(), 64 * per_shard);
    table
}

#[test]
fn paced_sweeps_visit_one_pass_of_shards_per_sweep_pass() {
    // One shard per second.
    let table = expired_in_every_shard(64 * S, 3);
    // Up to 40 s (all expired from 30 s) 40 shards are due; a call visits
    // at most 16 of them.
    assert_eq!(table.sweep_paced(40 * S), 16 * 3);
    assert_eq!(table.sweep_paced(40 * S), 16 * 3);
    assert_eq!(table.sweep_paced(40 * S), 8 * 3);
    assert_eq!(table.sweep_paced(40 * S), 0, "nothing more is due at 40 s");
    assert_eq!(table.sweep_paced(40 * S + S / 2), 0);
    // Then one shard a second, until the pass is done.
    for second in 41..=64 {
        assert_eq!(table.sweep_paced(second * S), 3, "at {second} s");
    }
    assert!(table.is_empty());
    let claimed = table.paced_shards.load(Ordering::Relaxed);
    table.sweep_paced(64 * S + S / 2);
    assert_eq!(table.paced_shards.load(Ordering::Relaxed), claimed);
}

#[test]
fn a_paced_sweep_far_behind_catches_up_one_pass_only() {
    // A 5 s pass, first called at 1,000 s: 12,800 shards are due, one pass
    // (64) is visited, 16 per call, then the sweep keeps pace.
    let table = expired_in_every_shard(5 * S, 2);
    let removed: usize = (0..4).map(|_| table.sweep_paced(1_000 * S)).sum();
    assert_eq!(removed, 64 * 2);
    assert!(table.is_empty());
    let claimed = table.paced_shards.load(Ordering::Relaxed);
    assert_eq!(claimed, 12_800, "the shards due by 1,000 s");
    table.sweep_paced(1_000 * S);
    assert_eq!(table.paced_shards.load(Ordering::Relaxed), claimed);
    // 64 shards per 5 s: 12.8 per second, so 12 more are due by 1,001 s.
    table.sweep_paced(1_001 * S);
    assert_eq!(table.paced_shards.load(Ordering::Relaxed), claimed + 12);
}

/// Sweeps read a shard only when one of its entries may have expired (the
/// shard's expiry bound), and a skipped shard costs no entry read.
#[test]
fn sweeps_skip_shards_until_an_entry_may_have_expired() {
    let table = table();
    for port in 0..2_000 {
        table.track(&udp_from(CLIENT, 1_024 + port), S, || ALLOW);
    }
    let shards = table.table.shard_count() as u64;
    // The first sweep reads every shard: their bounds start unknown.
    assert_eq!(table.sweep(2 * S, ALL_SHARDS), 0);
    assert_eq!(table.stats().sweep_scanned, shards);
    // Unreplied UDP seen at 1 s expires at 31 s: until then no shard is
    // read again, empty ones never.
    assert_eq!(table.sweep(30 * S, ALL_SHARDS), 0);
    let stats = table.stats();
    assert_eq!((stats.sweep_scanned, stats.sweep_skipped), (shards, shards));
    assert_eq!(table.sweep(31 * S, ALL_SHARDS), 2_000);
    assert!(table.is_empty());
    assert_eq!(table.sweep(32 * S, ALL_SHARDS), 0);
    let after = table.stats();
    assert_eq!(
        after.sweep_scanned,
        stats.sweep_scanned + stats.sweep_skipped
    );
    assert_eq!(after.sweep_skipped, 2 * shards);
}

/// A close shortens a connection's timeout from five days to TIME_WAIT's
/// 120 s: its shard's bound comes forward with it.
#[test]
fn a_close_brings_its_shards_next_sweep_forward() {
    let table = table();
    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    // The sweep learns the bound of an established connection.
    assert_eq!(table.sweep(2 * S, ALL_SHARDS), 0);
    for (from_client, flags) in [
        (true, FIN | ACK),
        (false, ACK),
        (false, FIN | ACK),
        (true, ACK),
    ] {
        table.track(&tcp.segment(from_client, flags, 0), 10 * S, || ALLOW);
    }
    assert_eq!(table.sweep(129 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(130 * S, ALL_SHARDS), 1);
    assert_eq!(table.stats().ended(EndReason::Closed), 1);
}

/// The writes that can bring an entry's expiry forward on a hit: a reply
/// when replied UDP is configured shorter than unreplied, and an
/// established ACK stamped with an earlier time than the last (workers
/// read the clock at the start of their rounds, so one may stamp a
/// connection with a time before another's).
#[test]
fn hits_that_bring_an_expiry_forward_lower_the_bound() {
    let table = ConntrackTable::new(ConntrackConfig {
        timeouts: Timeouts {
            udp_unreplied: 60 * S,
            udp_replied: 10 * S,
            ..Timeouts::default()
        },
        ..ConntrackConfig::default()
    });
    table.track(&udp(true), 0, || ALLOW);
    assert_eq!(table.sweep(S, ALL_SHARDS), 0);
    table.track(&udp(false), 2 * S, || ALLOW);
    assert_eq!(table.sweep(11 * S, ALL_SHARDS), 0);
    assert_eq!(table.sweep(12 * S, ALL_SHARDS), 1);

    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    table.track(&tcp.segment(true, PSH | ACK, 10), 200 * S, || ALLOW);
    // Past the handshake's bound (SYN_SENT, 120 s): the sweep reads the
    // shard and learns the established connection's.
    assert_eq!(table.sweep(201 * S, ALL_SHARDS), 0);
    let ack = table.track(&tcp.segment(false, ACK, 0), 150 * S, || ALLOW);
    assert_eq!(state_of(ack), ConnState::TcpEstablished);
    let established = table.config().timeouts.tcp_established;
    assert_eq!(table.sweep(150 * S + established - 1, ALL_SHARDS), 0);
    assert_eq!(table.sweep(150 * S + established, ALL_SHARDS), 1);
}

/// Whatever the writes, a full sweep at `now` leaves no entry that has
/// expired by `now`: random UDP exchanges and TCP connections (opened,
/// carrying data, closed or reset) on short timeouts, with times that go
/// back by up to a second (workers' clocks), counts from the fast path,
/// and sweeps in between.
#[test]
fn a_full_sweep_leaves_no_expired_entry() {
    use crate::classifier::classbench::SplitMix64;
    let timeouts = Timeouts {
        tcp_syn_sent: 9 * S,
        tcp_syn_recv: 6 * S,
        tcp_established: 4 * S,
        tcp_fin_wait: 8 * S,
        tcp_close_wait: 6 * S,
        tcp_last_ack: 4 * S,
        tcp_time_wait: 7 * S,
        tcp_close: 3 * S,
        udp_unreplied: 20 * S,
        udp_replied: 5 * S,
        ..Timeouts::default()
    };
    let table = ConntrackTable::new(ConntrackConfig {
        timeouts,
        ..ConntrackConfig::default()
    });
    let mut rng = SplitMix64::new(0x5eed);
    let mut clock = 10 * S;
    // One TCP connection at a time, segment by segment: a handshake,
    // data both ways, then a close or a reset; then the next.
    let lifecycle = |rng: &mut SplitMix64| {
        let mut steps = vec![(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0)];
        for _ in 0..rng.next_u64() % 20 {
            steps.extend([(true, PSH | ACK, 10), (false, ACK, 0)]);
        }
        if rng.next_u64() % 2 == 0 {
            steps.push((rng.next_u64() % 2 == 0, RST, 0));
        } else {
            steps.extend([
                (true, FIN | ACK, 0),
                (false, ACK, 0),
                (false, FIN | ACK, 0),
                (true, ACK, 0),
            ]);
        }
        steps.into_iter()
    };
    let mut tcp = Tcp::new();
    let mut steps = lifecycle(&mut rng);
    let mut swept = 0;
    for _ in 0..20_000 {
        clock += rng.next_u64() % (S / 2);
        let now = clock - rng.next_u64() % S;
        let port = 1_024 + (rng.next_u64() % 300) as u16;
        match rng.next_u64() % 8 {
            0..=2 => {
                table.track(&udp_from(CLIENT, port), now, || ALLOW);
            }
            3 => {
                let reply = flow(SERVER, CLIENT, proto::UDP, 53, port);
                table.track(
                    &TrackPacket {
                        flow: reply,
                        ..TrackPacket::default()
                    },
                    now,
                    || ALLOW,
                );
            }
            4 => {
                let flow = flow(CLIENT, SERVER, proto::UDP, port, 53);
                table.refresh_offloaded(&flow, 0, 3, 180, now);
            }
            5 => {
                let (from_client, flags, payload) = steps.next().unwrap_or_else(|| {
                    tcp = Tcp::new();
                    steps = lifecycle(&mut rng);
                    steps.next().expect("a lifecycle starts with a SYN")
                });
                table.track(&tcp.segment(from_client, flags, payload), now, || ALLOW);
            }
            _ => {
                table.sweep(clock, ALL_SHARDS);
                swept += 1;
                table.for_each(|key, entry| {
                    let expiry = table.expiry(key, entry.state, entry.last_seen);
                    assert!(
                        clock < expiry,
                        "{key:?} expired at {expiry}, swept at {clock}"
                    );
                });
            }
        }
    }
    assert!(swept > 1_000);
    assert!(
        table.stats().sweep_skipped > 0,
        "some sweeps found nothing due"
    );
    assert!(table.stats().ended(EndReason::Expired) > 100);
}

/// A batch's followers (`Followers`) are counted by their first packet's
/// hit on a live entry their generation admitted, and by nothing else: not
/// by the packet that opens the connection, not on an entry another
/// generation admitted, not on TCP, not on an entry that had expired.
#[test]
fn followers_are_counted_only_by_a_stateless_hit_of_their_generation() {
    let table = table();
    let followers = Followers {
        packets: 3,
        bytes: 300,
        generation: 1,
    };
    let track = |packet: &TrackPacket, now: u64, followers: &Followers| {
        let prepared = table.prepare(&packet.flow, packet.zone);
        let mut outcome = TrackOutcome::Denied;
        let counted =
            table.track_prepared_into(packet, &prepared, now, || ALLOW, followers, &mut outcome);
        (outcome, counted)
    };
    let key = ConnKey::from_flow(&udp(true).flow, 0).0;
    let (opened, counted) = track(&udp(true), S, &followers);
    assert!(matches!(opened, TrackOutcome::Tracked { created: true, .. }) && !counted);
    assert_eq!(table.get(&key).expect("opened").packets, [1, 0]);

    let (_, counted) = track(&udp(false), 2 * S, &followers);
    assert!(counted);
    let entry = table.get(&key).expect("live");
    assert_eq!((entry.packets, entry.bytes), ([1, 4], [80, 380]));
    assert_eq!(entry.state, ConnState::Established);

    let newer = Followers {
        generation: 2,
        ..followers
    };
    let (_, counted) = track(&udp(true), 3 * S, &newer);
    assert!(!counted);
    assert_eq!(table.get(&key).expect("live").packets, [2, 4]);

    // Past the UDP timeout the entry ends, and the packet opens it again.
    let (reopened, counted) = track(&udp(true), 1_000 * S, &followers);
    assert!(matches!(reopened, TrackOutcome::Tracked { created: true, .. }) && !counted);
    assert_eq!(table.get(&key).expect("reopened").packets, [1, 0]);

    let mut tcp = Tcp::new();
    handshake(&table, &mut tcp);
    let (_, counted) = track(&tcp.segment(true, ACK, 100), S, &followers);
    assert!(!counted);
    assert_eq!(table.get(&conn_key()).expect("tcp").packets, [3, 1]);
}
