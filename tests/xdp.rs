//! Root testbed: the XDP program on a veth port. It counts frames, drops
//! frames to or from quarantined addresses (updated without reloading),
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
    port.quarantine(source).expect("quarantine");
    bed.ping_ghost(5);
    let quarantined = port.counters().expect("counters");
    assert!(quarantined.quarantine_drop >= 5, "{quarantined:?}");

    port.release(source).expect("release");
    port.release(source).expect("releasing twice is fine");
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
