//! Root testbed: the XDP program on a veth port. It counts frames, drops
//! frames to or from quarantined addresses (updated without reloading;
//! the lookups are skipped only while no address is held),
//! fails closed while no AF_XDP socket is bound, and detaches cleanly; a
//! second attach replaces the first, and dropping the replaced one leaves
//! the new one in place.

mod common;

use std::net::IpAddr;

use common::testbed::{root_or_skip, Testbed};
use microseg_dataplane::bpf::{AttachMode, XdpPort};

#[test]
fn xdp_program_counts_quarantines_and_detaches() {
    if !root_or_skip("xdp_program_counts_quarantines_and_detaches") {
        return;
    }
    let bed = Testbed::with_ghost("x", 1).expect("testbed");
    let port = XdpPort::attach(bed.host_ifindex().expect("ifindex")).expect("XDP attaches to veth");
    assert_eq!(port.mode(), AttachMode::Native, "veth supports native XDP");
    assert_ne!(port.program_id(), 0);

    bed.ping_ghost(5);
    let before = port.counters().expect("counters");
    assert!(before.rx >= 5, "{before:?}");
    assert!(
        before.no_socket_drop >= 5,
        "fail closed without a socket: {before:?}"
    );
    assert_eq!(before.quarantine_drop, 0);
    assert_eq!(before.redirect, 0);

    let source: IpAddr = bed.peer_addr.parse().expect("address");
    let bystander: IpAddr = "10.203.99.99".parse().expect("address");
    assert!(
        !port.quarantine_in_use().expect("flag"),
        "nothing quarantined yet"
    );
    port.quarantine(source).expect("quarantine");
    port.quarantine(bystander).expect("quarantine");
    assert!(port.quarantine_in_use().expect("flag"));
    bed.ping_ghost(5);
    let quarantined = port.counters().expect("counters");
    assert!(quarantined.quarantine_drop >= 5, "{quarantined:?}");

    // Releasing one address leaves the other's quarantine in force.
    port.release(bystander).expect("release");
    assert!(port.quarantine_in_use().expect("flag"), "source still held");
    bed.ping_ghost(5);
    let quarantined = port.counters().expect("counters");
    assert!(
        quarantined.quarantine_drop >= 10,
        "still dropped after another address's release: {quarantined:?}"
    );

    port.release(source).expect("release");
    port.release(source).expect("releasing twice is fine");
    assert!(!port.quarantine_in_use().expect("flag"), "map empty again");
    bed.ping_ghost(3);
    let released = port.counters().expect("counters");
    assert_eq!(released.quarantine_drop, quarantined.quarantine_drop);
    assert!(
        released.no_socket_drop >= quarantined.no_socket_drop + 3,
        "{released:?}"
    );

    // A new attach (as after a crash) replaces the program in place.
    let replacement = XdpPort::attach(bed.host_ifindex().expect("ifindex")).expect("re-attach");
    assert_ne!(replacement.program_id(), port.program_id());
    drop(port);
    assert_eq!(
        replacement.attached_program_id(),
        replacement.program_id(),
        "left in place"
    );
    let ifindex = replacement.ifindex();
    drop(replacement);
    let attached = std::fs::read_to_string(format!("/sys/class/net/{}/flags", bed.host_if));
    assert!(attached.is_ok(), "interface still there");
    let shown =
        common::testbed::run("ip", &["link", "show", "dev", &bed.host_if]).expect("ip link");
    assert!(!shown.contains("xdp"), "detached from {ifindex}: {shown}");
}

/// The fast path's tables hold what is installed, every entry of them is
/// read back (a hash map's batches end at bucket boundaries, so a batch can
/// be short without being the last), removals take, and a flow is in one
/// table only: the IPv4 table is made too small for the flows, so most go
/// to the hash map, and some move to the table when it has room again.
#[test]
fn the_fast_path_map_reads_back_every_installed_flow() {
    use microseg_dataplane::bpf::{FastKey, FastRoute};
    use microseg_dataplane::frames::flow_v4;
    use microseg_dataplane::packet::proto;

    if !root_or_skip("the_fast_path_map_reads_back_every_installed_flow") {
        return;
    }
    let bed = Testbed::with_ghost("y", 2).expect("testbed");
    let port = XdpPort::attach_fast(bed.host_ifindex().expect("ifindex"), 50_000, 4096)
        .expect("XDP attaches to veth");
    let maps = port.fast_path().expect("fast path maps");
    let route = FastRoute {
        egress: 1,
        generation: 3,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
    };
    // 20,000 distinct UDP flows: 80 sources x 250 ports.
    let key = |i: u32| {
        let source = [10, 0, 0, (i / 250) as u8];
        FastKey::of(&flow_v4(
            source,
            [10, 0, 1, 1],
            proto::UDP,
            1024 + (i % 250) as u16,
            53,
        ))
    };
    let flows: Vec<_> = (0..20_000).map(|i| (key(i), route)).collect();
    for chunk in flows.chunks(4096) {
        maps.install(chunk).expect("install");
    }
    let mut read = Vec::new();
    maps.read_all(&mut read).expect("read");
    assert_eq!(read.len(), 20_000);
    let mut keys: Vec<_> = read.iter().map(|(k, _)| *k).collect();
    keys.sort_by_key(|k| *k.bytes());
    keys.dedup();
    assert_eq!(keys.len(), 20_000, "each flow once");
    assert!(read.iter().all(|(_, counters)| counters.packets == 0));
    maps.remove(&key(7)).expect("remove");
    maps.remove(&key(7)).expect("removing twice is fine");
    assert_eq!(maps.read(&key(7)).expect("read"), None);
    assert!(maps.read(&key(8)).expect("read").is_some());
    maps.read_all(&mut read).expect("read");
    assert_eq!(read.len(), 19_999);

    // Frees slots of the table, then installs the rest again: a flow that
    // was in the hash map and now finds room in the table leaves the map.
    for i in 0..2_000 {
        maps.remove(&key(i)).expect("remove");
    }
    let again: Vec<_> = (2_000..20_000).map(|i| (key(i), route)).collect();
    for chunk in again.chunks(4096) {
        maps.install(chunk).expect("install again");
    }
    maps.read_all(&mut read).expect("read");
    let mut keys: Vec<_> = read.iter().map(|(k, _)| *k).collect();
    keys.sort_by_key(|k| *k.bytes());
    keys.dedup();
    assert_eq!(keys.len(), 18_000);
    assert_eq!(read.len(), 18_000, "each flow in one table only");
    assert_eq!(maps.len(), 18_000);
}

/// What the program does with a frame of an installed flow, run in the
/// kernel on a built frame (`run_once`): it forwards a flow found in
/// either table, in its own family only (an IPv6 frame between IPv4-mapped
/// addresses is not the IPv4 flow with those addresses, and the other way
/// round), and the port hands out the flow tables' writer once.
#[test]
fn the_program_forwards_installed_flows_in_their_own_family_only() {
    use microseg_dataplane::bpf::{BpfError, FastKey, FastRoute};
    use microseg_dataplane::frames::{ethernet, flow_v4, ipv4, ipv6, udp, with_macs};
    use microseg_dataplane::packet::{proto, AddrFamily, FlowKey};

    const XDP_REDIRECT: u32 = 4;
    if !root_or_skip("the_program_forwards_installed_flows_in_their_own_family_only") {
        return;
    }
    let bed = Testbed::with_ghost("q", 4).expect("testbed");
    let ifindex = bed.host_ifindex().expect("ifindex");
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let route = FastRoute {
        egress: 1,
        generation: 3,
        src_mac: mac_a,
        dst_mac: mac_b,
    };
    let (a, b) = ([10, 0, 0, 1], [10, 0, 1, 1]);
    let mapped = |v4: [u8; 4]| std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets();
    let v4_flow = |sport| flow_v4(a, b, proto::UDP, sport, 53);
    let v6_flow = |sport| FlowKey {
        family: AddrFamily::V6,
        src: u128::from_be_bytes(mapped(a)),
        dst: u128::from_be_bytes(mapped(b)),
        ..v4_flow(sport)
    };
    let v4_frame = |sport| {
        let frame = ethernet(&[], 0x0800, &ipv4(a, b, proto::UDP, &udp(sport, 53, 18)));
        with_macs(frame, mac_a, mac_b)
    };
    let v6_frame = |sport| {
        let l3 = ipv6(mapped(a), mapped(b), &[], proto::UDP, &udp(sport, 53, 18));
        with_macs(ethernet(&[], 0x86dd, &l3), mac_a, mac_b)
    };
    // A port whose IPv4 table has `slots` slots, with `flows` installed;
    // then each frame run through its program: its actions, what each
    // flow forwarded, and the fast-path frames counted.
    let run = |slots: u32, flows: &[FlowKey], frames: &[Vec<u8>]| {
        let port = XdpPort::attach_fast(ifindex, 16, slots).expect("XDP attaches to veth");
        let maps = port.fast_path().expect("fast path maps");
        assert!(matches!(
            port.fast_path(),
            Err(BpfError::FastPathTaken { .. })
        ));
        port.generation_switch()
            .expect("switch")
            .set_generation(3)
            .expect("generation");
        maps.set_port(1, ifindex).expect("egress port");
        let installed: Vec<_> = flows.iter().map(|f| (FastKey::of(f), route)).collect();
        maps.install(&installed).expect("install");
        let actions: Vec<u32> = frames
            .iter()
            .map(|frame| port.run_once(frame).expect("test run"))
            .collect();
        let forwarded: Vec<u64> = flows
            .iter()
            .map(|flow| {
                let counters = maps.read(&FastKey::of(flow)).expect("read");
                counters.expect("installed").packets
            })
            .collect();
        let fast_forward = port.counters().expect("counters").fast_forward;
        (actions, forwarded, fast_forward)
    };
    // Not taken by the fast path, and no AF_XDP socket bound: dropped.
    const XDP_DROP: u32 = 1;

    // A roomy IPv4 table: the IPv4 flow is in it where C's hash looks for
    // it, the IPv6 one in the hash map. Each forwards its own frame only.
    let flows = [v4_flow(1024), v6_flow(1026)];
    let both = run(4096, &flows, &[v4_frame(1024), v6_frame(1026)]);
    assert_eq!(both, (vec![XDP_REDIRECT; 2], vec![1, 1], 2));
    let crossed = run(4096, &flows, &[v6_frame(1024), v4_frame(1026)]);
    assert_eq!(crossed, (vec![XDP_DROP; 2], vec![0, 0], 0));

    // One slot: the second IPv4 flow is in the hash map with its IPv4-mapped
    // addresses, which an IPv6 frame's key must not match.
    let flows = [v4_flow(1024), v4_flow(1025)];
    let own = run(1, &flows, &[v4_frame(1025)]);
    assert_eq!(own, (vec![XDP_REDIRECT], vec![0, 1], 1));
    let crossed = run(1, &flows, &[v6_frame(1025)]);
    assert_eq!(crossed, (vec![XDP_DROP], vec![0, 0], 0));
}
