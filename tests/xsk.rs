//! Root testbed: frames in and out through AF_XDP. A ping from the
//! namespace to an address nobody has arrives, through the XDP program's
//! redirect, in our AF_XDP socket; userspace builds the echo reply and
//! transmits it through the same socket; ping succeeding proves both
//! directions (with the busy-poll socket options on). UMEM frames all come
//! back afterwards. A port group (one UMEM shared by three ports) bridges
//! two namespaces, floods broadcasts to a third, and is overloaded with
//! too few frames: it loses none.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testbed::{root_or_skip, ChildGuard, Testbed};
use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use microseg_dataplane::xsk::{BusyPoll, Disposition, PortGroup, XskPort, BATCH};

const GHOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const FRAMES: u32 = 64;

/// The echo reply to `frame` if it is an echo request to `ghost`.
fn echo_reply(frame: &[u8], ghost: Ipv4Addr) -> Option<Vec<u8>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return None;
    };
    if ip.header().destination_addr() != ghost {
        return None;
    }
    let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
        return None;
    };
    let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
        return None;
    };
    let eth = packet.link.as_ref()?.to_header()?.ethernet2()?;
    let builder = PacketBuilder::ethernet2(GHOST_MAC, eth.source)
        .ipv4(ghost.octets(), ip.header().source(), 64)
        .icmpv4_echo_reply(echo.id, echo.seq);
    let mut reply = Vec::with_capacity(builder.size(icmp.payload().len()));
    builder.write(&mut reply, icmp.payload()).ok()?;
    Some(reply)
}

#[test]
fn pings_are_answered_through_af_xdp() {
    if !root_or_skip("pings_are_answered_through_af_xdp") {
        return;
    }
    let bed = Testbed::with_ghost("k", 2).expect("testbed");
    let mut port = XskPort::open(&bed.host_if, FRAMES).expect("AF_XDP port opens");
    // Busy polling (the benchmark's experiment) leaves the port working;
    // an empty ring is kicked with a receive call, as the bare forwarder
    // does.
    port.set_busy_poll(BusyPoll {
        usecs: 20,
        budget: 64,
    })
    .expect("busy-poll options are accepted");
    port.kick_rx();
    let free_at_start = port.free_frames();
    let ghost: Ipv4Addr = bed.ghost_addr.parse().expect("address");
    let mut ping = ChildGuard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &bed.namespace,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
            ])
            .arg(&bed.ghost_addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0) // ChildGuard ends the group
            .spawn()
            .expect("ping starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut replies = Vec::new();
    let mut answered = 0;
    let status = loop {
        if let Some(status) = ping.0.try_wait().expect("ping status") {
            break status;
        }
        assert!(Instant::now() < deadline, "ping did not finish");
        port.receive(50, |frame| replies.extend(echo_reply(frame, ghost)))
            .expect("receive");
        for reply in replies.drain(..) {
            assert!(
                port.send(&reply).expect("send"),
                "a free frame to send from"
            );
            answered += 1;
        }
    };
    assert!(status.success(), "ping got its replies through AF_XDP");
    assert!(answered >= 3, "answered {answered}");
    let counters = port
        .xdp()
        .expect("open attached the program")
        .counters()
        .expect("counters");
    assert!(counters.redirect >= 3, "{counters:?}");
    let stats = port.stats();
    assert!(stats.rx >= 3 && stats.tx >= 3, "{stats:?}");
    // Transmitted frames return from the completion ring: nothing leaks.
    let deadline = Instant::now() + Duration::from_secs(2);
    while port.free_frames() < free_at_start && Instant::now() < deadline {
        port.reclaim();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        port.free_frames(),
        free_at_start,
        "every tx frame came back"
    );
    // A frame shorter than an Ethernet header is refused, and counted.
    assert!(!port.send(&[0; 10]).expect("send"));
    assert_eq!(port.stats().tx_dropped, 1);
    assert_eq!(port.free_frames(), free_at_start);
    // The rings agree: every UMEM frame is free, lent to the fill ring,
    // or holds a frame that arrived since (the namespace may still send,
    // e.g. IPv6 router solicitations); none is in flight for tx.
    let census = port.census();
    assert_eq!(census.missing(), 0, "{census:?}");
    assert_eq!((census.tx, census.completed), (0, 0), "{census:?}");
}

/// One round of a bridge between ports 0 and 1 of `group`: broadcasts are
/// flooded (port 2 gets them too), port 2's own frames are dropped.
fn bridge_round(group: &mut PortGroup) -> usize {
    let received = group.receive();
    let mut dispositions = [Disposition::Drop; BATCH];
    for start in (0..received).step_by(BATCH) {
        let count = BATCH.min(received - start);
        for (index, disposition) in (start..start + count).zip(dispositions.iter_mut()) {
            let (port, frame) = group.frame(index).expect("an undisposed frame");
            *disposition = match port {
                _ if frame.starts_with(&[0xff; 6]) => Disposition::Flood,
                0 => Disposition::To(1),
                1 => Disposition::To(0),
                _ => Disposition::Drop,
            };
        }
        group.dispose(&dispositions[..count]);
        assert!(group.frame(start).is_none(), "a disposed frame is gone");
    }
    group.end_round().expect("transmit");
    received
}

/// Bridges until `child` exits; its exit status.
fn bridge_while(group: &mut PortGroup, child: &mut ChildGuard) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().expect("child status") {
            return status;
        }
        assert!(Instant::now() < deadline, "traffic did not finish");
        if bridge_round(group) == 0 {
            group.wait_readable(10).expect("poll");
        }
    }
}

#[test]
fn a_port_group_forwards_floods_and_overloads_without_losing_a_frame() {
    if !root_or_skip("a_port_group_forwards_floods_and_overloads_without_losing_a_frame") {
        return;
    }
    let a = Testbed::host("ga", 31, 1).expect("testbed a");
    let b = Testbed::host("gb", 31, 2).expect("testbed b");
    let c = Testbed::host("gc", 31, 3).expect("testbed c");
    // 32 frames per port: a flood ping of large frames exhausts them.
    let mut group =
        PortGroup::open(&[&a.host_if, &b.host_if, &c.host_if], 32).expect("a port group opens");
    let total = group.census().total;
    assert_eq!(
        total,
        96 + 96,
        "one UMEM for the three ports, and 32 frames each in the transmit pool"
    );
    assert!(!group.zero_copy(), "veth binds in copy mode");
    assert_eq!(group.tx_pool_frames(), 96);

    // Pings need the broadcast ARP request flooded and the rest passed.
    let mut ping = a
        .spawn(&["ping", "-c", "5", "-i", "0.2", "-W", "2", &b.peer_addr])
        .expect("ping starts");
    assert!(bridge_while(&mut group, &mut ping).success(), "a reaches b");
    let (to_b, to_c) = (group.stats(1).expect("b"), group.stats(2).expect("c"));
    assert!(to_b.tx >= 5, "b got the requests: {to_b:?}");
    assert!(to_c.tx >= 1, "c got the flooded ARP request: {to_c:?}");

    // Overload: a flood ping of 1,400-byte frames with 96 frames in all.
    let mut flood = a
        .spawn(&[
            "ping",
            "-f",
            "-c",
            "2000",
            "-s",
            "1400",
            "-W",
            "1",
            &b.peer_addr,
        ])
        .expect("flood ping starts");
    bridge_while(&mut group, &mut flood);
    let from_a = group.stats(0).expect("a");
    assert!(
        from_a.rx >= 1000,
        "the flood went through the group: {from_a:?}"
    );

    // Quiet again: every frame is free, lent to a fill ring or just
    // received (stray frames from the namespaces); none is lost.
    let deadline = Instant::now() + Duration::from_secs(2);
    let census = loop {
        bridge_round(&mut group);
        group.reclaim();
        let census = group.census();
        if census.tx + census.completed == 0 || Instant::now() >= deadline {
            break census;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(census.missing(), 0, "{census:?}");
    assert_eq!((census.tx, census.completed), (0, 0), "{census:?}");
    // Pool frames went out with copies and came back to the pool, never
    // to a fill ring.
    assert_eq!(group.tx_pool_frames(), 96, "{census:?}");
}
