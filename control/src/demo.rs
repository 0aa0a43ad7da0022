//! `microseg demo`: three workloads (web, app, db) in network namespaces
//! behind a microseg switch on AF_XDP, a sample segmentation policy, real
//! traffic between them (ping, TCP), and what was allowed and denied.
//!
//! The policy is written here as rules until the policy engine (issue 6)
//! compiles it from labels; the REST API comes with it.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use microseg_dataplane::classifier::{BuildError, IpPrefix, PortRange, Rule};
use microseg_dataplane::packet::proto;
use microseg_dataplane::pipeline::{
    Action, DropCause, L2Policy, Mode, PolicySnapshot, RuleVerdict, VerdictKind,
};
use microseg_dataplane::xsk::XskError;

use crate::testbed::{is_root, Testbed, TestbedError, TestbedSwitch};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo builds network namespaces and attaches XDP: run it as root")]
    NotRoot,
    #[error("testbed: {0}")]
    Testbed(#[from] TestbedError),
    #[error("switch port: {0}")]
    Port(#[from] XskError),
    #[error("sample policy: {0}")]
    Policy(#[from] BuildError),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

const SUBNET: u8 = 10;

/// One line of the sample policy.
struct SampleRule {
    text: &'static str,
    from: usize,
    to: Option<usize>,
    proto: u8,
    ports: (u16, u16),
    action: Action,
    mode: Mode,
}

/// Workloads: (name, host octet).
const WORKLOADS: [(&str, u8); 3] = [("web", 1), ("app", 2), ("db", 3)];
const WEB: usize = 0;
const APP: usize = 1;
const DB: usize = 2;

fn sample_policy() -> Vec<SampleRule> {
    let icmp_echo = (8 << 8, (8 << 8) | 0xff);
    vec![
        SampleRule {
            text: "web -> app  tcp/8080   allow",
            from: WEB,
            to: Some(APP),
            proto: proto::TCP,
            ports: (8080, 8080),
            action: Action::Allow,
            mode: Mode::Enforce,
        },
        SampleRule {
            text: "web -> app  icmp/8     allow",
            from: WEB,
            to: Some(APP),
            proto: proto::ICMP,
            ports: icmp_echo,
            action: Action::Allow,
            mode: Mode::Enforce,
        },
        SampleRule {
            text: "app -> db   tcp/5432   allow",
            from: APP,
            to: Some(DB),
            proto: proto::TCP,
            ports: (5432, 5432),
            action: Action::Allow,
            mode: Mode::Enforce,
        },
        SampleRule {
            text: "web -> any  icmp/8     deny, MONITOR mode (reported, not enforced)",
            from: WEB,
            to: None,
            proto: proto::ICMP,
            ports: icmp_echo,
            action: Action::Deny,
            mode: Mode::Monitor,
        },
    ]
}

fn address(host: u8) -> String {
    format!("10.203.{SUBNET}.{host}")
}

fn prefix(host: Option<u8>) -> IpPrefix {
    match host {
        Some(h) => {
            let ip = Ipv4Addr::new(10, 203, SUBNET, h);
            IpPrefix::from_ip(IpAddr::V4(ip), 32).unwrap_or(IpPrefix::any(ip_family()))
        }
        None => IpPrefix::any(ip_family()),
    }
}

fn ip_family() -> microseg_dataplane::packet::AddrFamily {
    microseg_dataplane::packet::AddrFamily::V4
}

fn compile(policy: &[SampleRule]) -> Result<PolicySnapshot, BuildError> {
    let rules = policy
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Rule {
                id: i as u32 + 1,
                src: prefix(Some(WORKLOADS[r.from].1)),
                dst: prefix(r.to.map(|t| WORKLOADS[t].1)),
                src_ports: PortRange::ANY,
                dst_ports: PortRange::new(r.ports.0, r.ports.1).unwrap_or(PortRange::ANY),
                proto: Some(r.proto),
                action: RuleVerdict {
                    action: r.action,
                    mode: r.mode,
                    rule_id: i as u32 + 1,
                },
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    PolicySnapshot::build(1, rules, Action::Deny, L2Policy::default())
}

/// A traffic check: who tries what, and whether policy should let it.
struct Check {
    from: usize,
    to: usize,
    what: Traffic,
    expect_pass: bool,
}

enum Traffic {
    Ping,
    Tcp(u16),
}

fn checks() -> Vec<Check> {
    vec![
        Check {
            from: WEB,
            to: APP,
            what: Traffic::Tcp(8080),
            expect_pass: true,
        },
        Check {
            from: WEB,
            to: APP,
            what: Traffic::Ping,
            expect_pass: true,
        },
        Check {
            from: APP,
            to: DB,
            what: Traffic::Tcp(5432),
            expect_pass: true,
        },
        Check {
            from: WEB,
            to: DB,
            what: Traffic::Tcp(5432),
            expect_pass: false,
        },
        Check {
            from: DB,
            to: WEB,
            what: Traffic::Ping,
            expect_pass: false,
        },
        Check {
            from: APP,
            to: WEB,
            what: Traffic::Tcp(8080),
            expect_pass: false,
        },
        Check {
            from: WEB,
            to: DB,
            what: Traffic::Ping,
            expect_pass: true,
        },
    ]
}

/// Runs the demo, writing its report to `out`; true if every check had
/// the expected outcome.
pub fn run(out: &mut impl Write) -> Result<bool, DemoError> {
    if !is_root() {
        return Err(DemoError::NotRoot);
    }
    writeln!(
        out,
        "microseg demo: three workloads behind a microseg switch (AF_XDP)\n"
    )?;
    let beds: Vec<Testbed> = WORKLOADS
        .iter()
        .map(|(name, host)| Testbed::host(&name[..1], SUBNET, *host))
        .collect::<Result<_, _>>()?;
    for ((name, _), bed) in WORKLOADS.iter().zip(&beds) {
        writeln!(
            out,
            "  {name:<4} {:<14} namespace {}, switch port {}",
            bed.peer_addr, bed.namespace, bed.host_if
        )?;
    }
    // Servers: app listens on 8080, db on 5432 (and web on 8080, to show
    // that app -> web is refused by policy, not by a closed port).
    let _servers = [
        beds[APP].spawn(&["nc", "-lk", "8080"])?,
        beds[DB].spawn(&["nc", "-lk", "5432"])?,
        beds[WEB].spawn(&["nc", "-lk", "8080"])?,
    ];

    let policy = sample_policy();
    writeln!(out, "\nsample policy (first match wins; default: deny):")?;
    for (i, rule) in policy.iter().enumerate() {
        writeln!(out, "  {}. {}", i + 1, rule.text)?;
    }
    let policy_cell = Arc::new(ArcSwap::from_pointee(compile(&policy)?));
    let bed_refs: Vec<&Testbed> = beds.iter().collect();
    let mut switch = TestbedSwitch::new(policy_cell, &bed_refs, 65_536)?;
    let pipeline = Arc::clone(&switch.pipeline);

    // Traffic runs on its own thread; the switch forwards on this one.
    let namespaces: Vec<String> = beds.iter().map(|b| b.namespace.clone()).collect();
    let traffic = std::thread::spawn(move || {
        checks()
            .iter()
            .map(|check| attempt(&namespaces[check.from], check))
            .collect::<Vec<bool>>()
    });
    switch.forward_while(&traffic, Duration::from_secs(60))?;
    let results = traffic.join().unwrap_or_default();

    writeln!(out, "\ntraffic:")?;
    let mut all_as_expected = results.len() == checks().len();
    for (check, passed) in checks().iter().zip(&results) {
        let (from, to) = (WORKLOADS[check.from].0, WORKLOADS[check.to].0);
        let what = match check.what {
            Traffic::Ping => "ping".to_string(),
            Traffic::Tcp(port) => format!("tcp/{port}"),
        };
        let verdict = if *passed { "ALLOWED" } else { "DENIED " };
        let ok = *passed == check.expect_pass;
        all_as_expected &= ok;
        writeln!(
            out,
            "  {from:>3} -> {to:<3} {what:<9} {verdict}  {}",
            if ok {
                "(as the policy says)"
            } else {
                "(UNEXPECTED)"
            }
        )?;
    }

    let stats = pipeline.stats();
    writeln!(
        out,
        "\nswitch: {} frames forwarded, {} flooded, {} dropped",
        stats.forwarded,
        stats.flooded,
        stats.total_dropped()
    )?;
    for cause in DropCause::all() {
        let n = stats.dropped(cause);
        if n > 0 {
            writeln!(out, "  dropped {n:>4}  {}", cause.name())?;
        }
    }
    let events: Vec<_> = std::iter::from_fn(|| pipeline.events().pop()).collect();
    let count = |kind| events.iter().filter(|e| e.kind == kind).count();
    writeln!(
        out,
        "events: {} new flows denied, {} would-deny flows passed in monitor mode",
        count(VerdictKind::Denied),
        count(VerdictKind::WouldDeny)
    )?;
    writeln!(
        out,
        "connections tracked now: {}",
        pipeline.conntrack().len()
    )?;
    writeln!(
        out,
        "\nNot yet in the demo: the REST API and label-based policy (issue 6), flow \
         records and the dependency map (issue 7)."
    )?;
    writeln!(
        out,
        "{}",
        if all_as_expected {
            "demo: every check as expected"
        } else {
            "demo: SOME CHECKS UNEXPECTED"
        }
    )?;
    Ok(all_as_expected)
}

/// Runs one check from namespace `ns`; true if the traffic got through.
fn attempt(ns: &str, check: &Check) -> bool {
    let to = address(WORKLOADS[check.to].1);
    let args: Vec<String> = match check.what {
        Traffic::Ping => ["ping", "-q", "-c", "2", "-i", "0.2", "-W", "1", &to]
            .map(String::from)
            .to_vec(),
        Traffic::Tcp(port) => ["nc", "-z", "-w", "2", &to, &port.to_string()]
            .map(String::from)
            .to_vec(),
    };
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(&args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
