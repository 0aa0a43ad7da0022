//! Root testbed, end to end: two namespaces, each behind a switch port;
//! frames cross through AF_XDP and the pipeline. The policy allows ICMP
//! echo from A to B only: A's pings to B are answered (requests allowed,
//! replies through conntrack), B's pings to A are denied and reported.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::testbed::{root_or_skip, Testbed, TestbedSwitch};
use microseg_dataplane::classifier::{IpPrefix, PortRange, Rule};
use microseg_dataplane::packet::proto;
use microseg_dataplane::pipeline::{
    Action, DropCause, L2Policy, Mode, PolicyCell, PolicySnapshot, RuleVerdict, VerdictKind,
};

fn host(addr: &str) -> IpPrefix {
    let ip: Ipv4Addr = addr.parse().expect("address");
    IpPrefix::from_ip(IpAddr::V4(ip), 32).expect("/32")
}

#[test]
fn the_switch_enforces_policy_between_two_namespaces() {
    if !root_or_skip("the_switch_enforces_policy_between_two_namespaces") {
        return;
    }
    let a = Testbed::host("a", 4, 1).expect("testbed A");
    let b = Testbed::host("b", 4, 2).expect("testbed B");
    let echo_icmp = PortRange::new(8 << 8, (8 << 8) | 0xff).expect("icmp/8");
    let echo_a_to_b = allow(
        host(&a.peer_addr),
        host(&b.peer_addr),
        proto::ICMP,
        echo_icmp,
        1,
    );
    let policy = PolicySnapshot::build(1, vec![echo_a_to_b], Action::Deny, L2Policy::default())
        .expect("policy builds");
    let mut switch =
        TestbedSwitch::new(Arc::new(PolicyCell::from_pointee(policy)), &[&a, &b], 1024)
            .expect("switch");
    let pipeline = Arc::clone(&switch.pipeline);

    let (a_ns, b_ns) = (a.namespace.clone(), b.namespace.clone());
    let (a_addr, b_addr) = (a.peer_addr.clone(), b.peer_addr.clone());
    let pings = std::thread::spawn(move || {
        let ping = |ns: &str, to: &str, count: &str| {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", ns, "ping", "-q", "-c", count, "-i", "0.2", "-W", "1", to,
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        (ping(&a_ns, &b_addr, "3"), ping(&b_ns, &a_addr, "2"))
    });
    let finished = switch
        .forward_while(&pings, Duration::from_secs(20))
        .expect("forwarding");
    assert!(finished, "pings did not finish");
    let (a_to_b, b_to_a) = pings.join().expect("ping thread");
    assert!(
        a_to_b,
        "A may ping B: {:?} {:?}",
        switch.forwarder.stats(),
        pipeline.stats()
    );
    assert!(!b_to_a, "B may not ping A");

    let stats = pipeline.stats();
    assert!(
        stats.dropped(DropCause::Policy) >= 2,
        "B's requests denied: {stats:?}"
    );
    let events: Vec<_> = std::iter::from_fn(|| pipeline.events().pop()).collect();
    assert!(
        events.iter().any(|e| e.kind == VerdictKind::Denied),
        "{events:?}"
    );
    assert!(
        switch.forwarder.stats().transmitted >= 6,
        "{:?}",
        switch.forwarder.stats()
    );
}

/// Lines received so far by the server (it appends what it reads).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[test]
fn an_established_connection_survives_a_republish_and_is_cut_by_a_denying_policy() {
    if !root_or_skip(
        "an_established_connection_survives_a_republish_and_is_cut_by_a_denying_policy",
    ) {
        return;
    }
    let a = Testbed::host("c", 5, 1).expect("testbed A");
    let b = Testbed::host("d", 5, 2).expect("testbed B");
    let scratch = common::ScratchDir::new("cut");
    let received = scratch.file("received");
    let tcp_a_to_b = |rule_id| {
        let service = PortRange::single(9000);
        allow(
            host(&a.peer_addr),
            host(&b.peer_addr),
            proto::TCP,
            service,
            rule_id,
        )
    };
    let snapshot = |generation, rules| {
        Arc::new(
            PolicySnapshot::build(generation, rules, Action::Deny, L2Policy::default())
                .expect("policy builds"),
        )
    };
    let policy = Arc::new(PolicyCell::new(snapshot(1, vec![tcp_a_to_b(1)])));
    let mut switch = TestbedSwitch::new(Arc::clone(&policy), &[&a, &b], 1024).expect("switch");
    let pipeline = Arc::clone(&switch.pipeline);
    let server_cmd = format!("nc -lk 9000 > {}", received.display());
    let _server = b.spawn(&["sh", "-c", &server_cmd]).expect("server");
    // A line every 100 ms for 12 s over one TCP connection.
    let client_cmd = format!(
        "sleep 0.5; for i in $(seq 1 120); do echo line$i; sleep 0.1; done | nc {} 9000",
        b.peer_addr
    );
    let _client = a.spawn(&["sh", "-c", &client_cmd]).expect("client");

    switch
        .forward_until(Duration::from_secs(3))
        .expect("forwarding");
    let before_republish = lines_in(&received);
    assert!(
        before_republish >= 10,
        "data flows under generation 1: {before_republish} lines"
    );

    // Same rules, new generation: the connection is re-checked and kept.
    policy.store(snapshot(2, vec![tcp_a_to_b(2)]));
    switch
        .forward_until(Duration::from_secs(5))
        .expect("forwarding");
    let after_republish = lines_in(&received);
    assert!(
        after_republish >= before_republish + 10,
        "data still flows under generation 2: {before_republish} -> {after_republish}"
    );
    assert_eq!(pipeline.stats().dropped(DropCause::PolicyCut), 0);

    // A policy without the rule: the next segment cuts the connection.
    policy.store(snapshot(3, vec![]));
    switch
        .forward_until(Duration::from_secs(7))
        .expect("forwarding");
    let at_cut = lines_in(&received);
    switch
        .forward_until(Duration::from_secs(9))
        .expect("forwarding");
    let later = lines_in(&received);
    assert_eq!(later, at_cut, "nothing gets through after the cut");
    let stats = pipeline.stats();
    assert!(stats.dropped(DropCause::PolicyCut) >= 1, "{stats:?}");
    let events: Vec<_> = std::iter::from_fn(|| pipeline.events().pop()).collect();
    assert!(
        events.iter().any(|e| e.kind == VerdictKind::Cut),
        "{events:?}"
    );
}

fn allow(
    src: IpPrefix,
    dst: IpPrefix,
    proto_: u8,
    dst_ports: PortRange,
    rule_id: u32,
) -> Rule<RuleVerdict> {
    Rule {
        id: rule_id,
        src,
        dst,
        src_ports: PortRange::ANY,
        dst_ports,
        proto: Some(proto_),
        action: RuleVerdict {
            action: Action::Allow,
            mode: Mode::Enforce,
            rule_id,
        },
    }
}

fn v6_host(addr: &str) -> IpPrefix {
    let ip: std::net::Ipv6Addr = addr.parse().expect("IPv6 address");
    IpPrefix::from_ip(IpAddr::V6(ip), 128).expect("/128")
}

#[test]
fn ipv6_and_udp_are_judged_by_policy_through_the_switch() {
    if !root_or_skip("ipv6_and_udp_are_judged_by_policy_through_the_switch") {
        return;
    }
    let e = Testbed::host("e", 6, 1).expect("testbed E");
    let f = Testbed::host("f", 6, 2).expect("testbed F");
    let (e6, f6) = (
        e.add_ipv6(6, 1).expect("E v6"),
        f.add_ipv6(6, 2).expect("F v6"),
    );
    let scratch = common::ScratchDir::new("udp");
    let (at_f, at_e) = (scratch.file("at_f"), scratch.file("at_e"));
    let rules = vec![
        allow(
            v6_host(&e6),
            v6_host(&f6),
            proto::ICMPV6,
            PortRange::new(128 << 8, (128 << 8) | 0xff).expect("icmpv6/128"),
            1,
        ),
        allow(
            host(&e.peer_addr),
            host(&f.peer_addr),
            proto::UDP,
            PortRange::single(5353),
            2,
        ),
    ];
    let policy =
        PolicySnapshot::build(1, rules, Action::Deny, L2Policy::default()).expect("policy builds");
    let mut switch =
        TestbedSwitch::new(Arc::new(PolicyCell::from_pointee(policy)), &[&e, &f], 1024)
            .expect("switch");
    let pipeline = Arc::clone(&switch.pipeline);
    let _f_server = f
        .spawn(&[
            "sh",
            "-c",
            &format!("exec nc -klu 5353 > {}", at_f.display()),
        ])
        .expect("UDP server on F");
    let _e_server = e
        .spawn(&[
            "sh",
            "-c",
            &format!("exec nc -klu 5353 > {}", at_e.display()),
        ])
        .expect("UDP server on E");

    let (e_ns, f_ns) = (e.namespace.clone(), f.namespace.clone());
    let (e4, f4) = (e.peer_addr.clone(), f.peer_addr.clone());
    let (e6c, f6c) = (e6.clone(), f6.clone());
    let traffic = std::thread::spawn(move || {
        let in_ns = |ns: &str, script: &str| {
            std::process::Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c", script])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        std::thread::sleep(Duration::from_millis(300)); // servers listening
        let ping6_e_to_f = in_ns(&e_ns, &format!("ping -6 -q -c 3 -i 0.2 -W 1 {f6c}"));
        let ping6_f_to_e = in_ns(&f_ns, &format!("ping -6 -q -c 2 -i 0.2 -W 1 {e6c}"));
        in_ns(&e_ns, &format!("echo from-e | nc -u -w 1 {f4} 5353"));
        in_ns(&f_ns, &format!("echo from-f | nc -u -w 1 {e4} 5353"));
        std::thread::sleep(Duration::from_millis(300));
        (ping6_e_to_f, ping6_f_to_e)
    });
    let finished = switch
        .forward_while(&traffic, Duration::from_secs(30))
        .expect("forwarding");
    assert!(finished, "traffic did not finish");
    let (ping6_e_to_f, ping6_f_to_e) = traffic.join().expect("traffic thread");
    assert!(
        ping6_e_to_f,
        "E may ping F over IPv6: {:?}",
        pipeline.stats()
    );
    assert!(!ping6_f_to_e, "F may not ping E over IPv6");
    let got_f = std::fs::read_to_string(&at_f).unwrap_or_default();
    let got_e = std::fs::read_to_string(&at_e).unwrap_or_default();
    assert!(
        got_f.contains("from-e"),
        "UDP E -> F:5353 allowed: {got_f:?}"
    );
    assert!(
        !got_e.contains("from-f"),
        "UDP F -> E:5353 denied: {got_e:?}"
    );
    assert!(
        pipeline.stats().dropped(DropCause::Policy) >= 3,
        "{:?}",
        pipeline.stats()
    );
}
