use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::frames;
use crate::packet::{AddrFamily, FlowKey};

fn flow_v4(protocol: u8, src_port: u16, dst_port: u16) -> FlowKey {
    frames::flow_v4([10, 0, 0, 1], [10, 0, 0, 2], protocol, src_port, dst_port)
}

fn slots(count: usize) -> Vec<Slot> {
    (0..count).map(|_| Slot::default()).collect()
}

fn key(port: u16) -> Key4 {
    Key4::of(&FastKey::of(&flow_v4(
        proto::UDP,
        port.wrapping_add(10_000),
        53,
    )))
    .expect("IPv4 UDP")
}

fn route(egress: u16) -> FastRoute {
    FastRoute {
        egress,
        generation: 7,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
    }
}

/// Keys whose home slot in a table of `count` slots is `home`.
fn keys_at_home(count: usize, home: usize, wanted: usize) -> Vec<Key4> {
    (0..u16::MAX)
        .map(key)
        .filter(|key| key.hash() as usize & (count - 1) == home)
        .take(wanted)
        .collect()
}

/// The program's read of a slot (bpf/microseg_xdp.bpf.c, `fast4_take`):
/// the sequence count, the fields, the count again; None unless both
/// counts are the same even number.
fn read_as_the_program(slot: &Slot) -> Option<(Key4, u16, u32)> {
    let before = slot.seq.load(Ordering::Acquire);
    if before % 2 == 1 {
        return None;
    }
    let seen = (
        Key4::read(slot),
        slot.egress.load(Ordering::Relaxed),
        slot.generation.load(Ordering::Relaxed),
    );
    fence(Ordering::Acquire);
    (slot.seq.load(Ordering::Relaxed) == before).then_some(seen)
}

#[test]
fn only_ipv4_tcp_and_udp_keys_go_to_the_table_and_they_round_trip() {
    for protocol in [proto::TCP, proto::UDP] {
        let fast = FastKey::of(&flow_v4(protocol, 1234, 80));
        let key4 = Key4::of(&fast).expect("IPv4");
        assert_eq!(key4.fast_key(), fast, "the FastKey comes back whole");
        assert_eq!(key4.proto, protocol);
    }
    assert_eq!(Key4::of(&FastKey::of(&flow_v4(proto::ICMP, 0, 0))), None);
    let v6 = FlowKey {
        family: AddrFamily::V6,
        src: 0xfd00 << 112 | 1,
        dst: 0xfd00 << 112 | 2,
        ..flow_v4(proto::UDP, 1, 2)
    };
    assert_eq!(Key4::of(&FastKey::of(&v6)), None);
    // IPv6 between IPv4-mapped addresses is IPv6: the program looks for
    // IPv6 frames in `fast` only, so in this table it would never be
    // found, and it would let an IPv4 frame with the same addresses and
    // ports through on the IPv6 flow's admission.
    let mapped = FlowKey {
        src: 0xffff_0a00_0001,
        dst: 0xffff_0a00_0002,
        ..v6
    };
    assert_eq!(Key4::of(&FastKey::of(&mapped)), None);
}

/// The Rust hash takes the steps of `ms_hash4` as written in C, one by
/// one. This pins the Rust side only; that the program finds a flow where
/// Rust put it (the two hashes agree) is checked in the kernel by the root
/// test `the_program_forwards_installed_flows_in_their_own_family_only`
/// (tests/xdp.rs), which fails when they differ.
#[test]
fn the_hash_follows_ms_hash4() {
    let key = Key4 {
        src: 1,
        dst: 0,
        src_port: 0,
        dst_port: 0,
        proto: 0,
    };
    let mut h = K1;
    h ^= h >> 29;
    h = h.wrapping_mul(K4);
    assert_eq!(key.hash(), h ^ (h >> 32));
    let ports = Key4 {
        src: 0,
        src_port: 2,
        dst_port: 3,
        ..key
    };
    let mut h = (2u64 | 3 << 16).wrapping_mul(K3);
    h ^= h >> 29;
    h = h.wrapping_mul(K4);
    assert_eq!(ports.hash(), h ^ (h >> 32));
    assert_ne!(key.hash(), ports.hash());
}

#[test]
fn a_flow_is_inserted_found_replaced_and_removed() {
    let memory = slots(16);
    let table = Table::new(&memory).expect("power of two");
    let flow = key(1);
    assert_eq!(table.find(&flow), None);
    let Inserted::New(index) = table.insert(&flow, &route(1)) else {
        panic!("a new flow");
    };
    assert_eq!(table.find(&flow), Some(index));
    assert_eq!(table.scan().len(), 1);

    // The program counts; a replacement starts the counters over.
    memory[index].packets.store(5, Ordering::Relaxed);
    memory[index].bytes.store(300, Ordering::Relaxed);
    assert_eq!(table.counters(index).packets, 5);
    assert_eq!(table.insert(&flow, &route(2)), Inserted::Replaced(index));
    assert_eq!(table.find(&flow), Some(index), "replaced in place");
    assert_eq!(table.counters(index), FastCounters::default());
    assert_eq!(memory[index].egress.load(Ordering::Relaxed), 2);
    assert_eq!(table.scan().len(), 1);

    assert_eq!(table.remove(&flow), Some(index));
    assert_eq!(table.find(&flow), None);
    assert_eq!(table.remove(&flow), None, "removing twice finds nothing");
    assert!(table.scan().is_empty());
    assert_eq!(memory[index].proto.load(Ordering::Relaxed), REMOVED);
}

/// A removed flow's slot does not end a probe (flows placed after it stay
/// found) and is taken again by the next insert that needs it.
#[test]
fn removed_slots_are_passed_over_and_reused() {
    let memory = slots(64);
    let table = Table::new(&memory).expect("power of two");
    let crowd = keys_at_home(64, 5, 3);
    assert_eq!(crowd.len(), 3);
    for (n, flow) in crowd.iter().enumerate() {
        assert_eq!(
            table.insert(flow, &route(n as u16)),
            Inserted::New(5 + n),
            "linear probing from home"
        );
        assert_eq!(table.find(flow), Some(5 + n));
    }
    assert_eq!(table.remove(&crowd[0]), Some(5));
    assert_eq!(
        table.find(&crowd[1]),
        Some(6),
        "found past the removed slot"
    );
    assert_eq!(table.find(&crowd[2]), Some(7));
    let late = keys_at_home(64, 5, 4)[3];
    assert_eq!(
        table.insert(&late, &route(9)),
        Inserted::New(5),
        "the removed slot taken again"
    );
    assert_eq!(table.find(&late), Some(5));
}

/// Only `PROBES` slots from its home may hold a flow: one more finds no
/// room (it goes to the hash map), until one of them is removed.
#[test]
fn a_crowded_neighbourhood_has_no_room_until_a_flow_leaves() {
    let memory = slots(64);
    let table = Table::new(&memory).expect("power of two");
    let crowd = keys_at_home(64, 60, PROBES + 1);
    for flow in &crowd[..PROBES] {
        assert!(matches!(table.insert(flow, &route(1)), Inserted::New(_)));
    }
    // The probe wraps around the end of the table.
    assert_eq!(table.find(&crowd[PROBES - 1]), Some((60 + PROBES - 1) % 64));
    let extra = crowd[PROBES];
    assert_eq!(table.insert(&extra, &route(1)), Inserted::NoRoom);
    assert_eq!(table.find(&extra), None);
    assert_eq!(table.remove(&crowd[3]), Some(63));
    assert_eq!(table.insert(&extra, &route(1)), Inserted::New(63));
    assert_eq!(table.find(&extra), Some(63));
    assert_eq!(table.scan().len(), PROBES);
}

/// The slots an insert and a remove report, kept in an `Occupied`, are
/// exactly the slots a scan of the whole table finds flows in.
#[test]
fn the_occupied_slots_are_those_holding_flows() {
    let memory = slots(256);
    let table = Table::new(&memory).expect("power of two");
    let mut occupied = Occupied::new(256);
    let flows: Vec<Key4> = (0..100).map(key).collect();
    for flow in &flows {
        match table.insert(flow, &route(1)) {
            Inserted::New(index) => occupied.set(index),
            other => panic!("{other:?}"),
        }
    }
    for flow in &flows[..10] {
        occupied.clear(table.remove(flow).expect("installed"));
    }
    let counted = table.find(&flows[50]).expect("installed");
    memory[counted].packets.store(3, Ordering::Relaxed);
    let listed: Vec<_> = occupied
        .iter()
        .filter_map(|index| table.read_slot(index))
        .collect();
    assert_eq!(listed, table.scan(), "the same flows, in slot order");
    assert_eq!(occupied.count(), 90);
    for flow in &flows[10..] {
        let found = listed.iter().filter(|(k, _)| *k == flow.fast_key()).count();
        assert_eq!(found, 1, "{flow:?}");
    }
    let (_, counters) = listed
        .iter()
        .find(|(k, _)| *k == flows[50].fast_key())
        .expect("listed");
    assert_eq!(counters.packets, 3);
    assert_eq!(table.read_slot(256), None, "past the end");
}

#[test]
fn occupied_bits_set_clear_and_list_in_order() {
    let mut occupied = Occupied::new(130);
    for index in [129, 0, 64, 63] {
        occupied.set(index);
    }
    occupied.set(500); // past the end: ignored
    assert_eq!(occupied.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
    occupied.clear(63);
    occupied.clear(63);
    assert_eq!(occupied.iter().collect::<Vec<_>>(), [0, 64, 129]);
    assert_eq!(occupied.count(), 3);
}

#[test]
fn every_write_moves_the_sequence_count_by_two() {
    let memory = slots(16);
    let table = Table::new(&memory).expect("power of two");
    let flow = key(3);
    let Inserted::New(index) = table.insert(&flow, &route(1)) else {
        panic!("a new flow");
    };
    assert_eq!(memory[index].seq.load(Ordering::Relaxed), 2);
    table.insert(&flow, &route(2));
    table.remove(&flow);
    assert_eq!(memory[index].seq.load(Ordering::Relaxed), 6);
}

/// While one thread rewrites a slot between two flows with different
/// routes, a reader following the program's protocol only ever sees a
/// flow with its own route, never one flow's key with the other's route.
#[test]
fn a_reader_never_sees_one_flows_key_with_anothers_route() {
    let memory: Arc<Vec<Slot>> = Arc::new(slots(1));
    let done = Arc::new(AtomicBool::new(false));
    let (first, second) = (key(1), key(2));
    let writer = {
        let memory = Arc::clone(&memory);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for _ in 0..200_000 {
                write_flow(&memory[0], &first, &route(1));
                write_flow(&memory[0], &second, &route(2));
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut reads = 0u64;
    while !done.load(Ordering::Acquire) {
        reads += 1;
        let Some((flow, egress, generation)) = read_as_the_program(&memory[0]) else {
            continue;
        };
        if flow.proto == EMPTY {
            continue; // before the writer's first write
        }
        assert_eq!(generation, 7);
        if flow == first {
            assert_eq!(egress, 1, "the first flow's key with another route");
        } else if flow == second {
            assert_eq!(egress, 2, "the second flow's key with another route");
        } else {
            panic!("a torn key: {flow:?}");
        }
    }
    writer.join().expect("writer");
    assert!(reads > 0, "the reader ran while the writer wrote");
    let last = read_as_the_program(&memory[0]).expect("settled");
    assert_eq!((last.0, last.1), (second, 2));
}

#[test]
fn a_table_is_a_power_of_two_of_slots_and_sized_from_the_flows() {
    assert!(Table::new(&slots(12)).is_none());
    assert!(Table::new(&slots(0)).is_none());
    assert!(Table::new(&slots(1)).is_some());
    assert_eq!(slots_for(0), 1);
    assert_eq!(slots_for(1000), 1024);
    assert_eq!(slots_for(1 << 20), 1 << 20);
    assert_eq!(slots_for(u32::MAX), SLOTS_MAX);
    assert_eq!(SLOT_BYTES, 64);
}
