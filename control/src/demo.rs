//! `microseg demo`: three workloads (web, app, db) in network namespaces
//! behind the microseg appliance (the same one `microseg run` starts), a
//! sample segmentation policy as a rules file, real traffic between them
//! (ping, TCP), and for each flow whether it was allowed or denied and by
//! which rule. The status API is up meanwhile; the testbed and the switch
//! stay up until Ctrl-C (or end at once with `--once`).
//!
//! The policy is a rules file until the policy engine (issue 6) compiles
//! label-based policy.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use microseg_dataplane::conntrack::{ConntrackConfig, FlowEvent};
use microseg_dataplane::packet::{ip_to_u128, proto};
use microseg_dataplane::pipeline::{VerdictEvent, VerdictKind};
use microseg_dataplane::worker::PollMode;

use crate::appliance::{Appliance, ApplianceError, PolicyFeed};
use crate::config::{Config, PolicySource};
use crate::testbed::{is_root, ping_from, tcp_connect_from, ChildGuard, Testbed, TestbedError};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo builds network namespaces and attaches XDP: run it as root")]
    NotRoot,
    #[error("testbed: {0}")]
    Testbed(#[from] TestbedError),
    #[error("appliance: {0}")]
    Appliance(#[from] ApplianceError),
    #[error("writing the report or the rules file: {0}")]
    Output(#[from] std::io::Error),
}

const SUBNET: u8 = 10;

/// Workloads: (name, host octet).
const WORKLOADS: [(&str, u8); 3] = [("web", 1), ("app", 2), ("db", 3)];
const WEB: usize = 0;
const APP: usize = 1;
const DB: usize = 2;

/// Where the demo's API listens if the port is free (else any free port).
const API_PORT: u16 = 9870;

fn address(host: u8) -> String {
    format!("10.203.{SUBNET}.{host}")
}

/// The sample policy, as the rules file `microseg run` reads.
fn sample_rules() -> String {
    let (web, app, db) = (address(1), address(2), address(3));
    format!(
        "# The demo's segmentation policy (first match wins).
default_action: deny
rules:
  - name: web-to-app
    from: {web}
    to: {app}
    services: [tcp/8080, icmp/8]
    action: allow
  - name: app-to-db
    from: {app}
    to: {db}
    services: [tcp/5432]
    action: allow
  - name: watch-web-pings      # would deny; monitor mode reports and lets pass
    from: {web}
    to: any
    services: [icmp/8]
    action: deny
    mode: monitor
"
    )
}

/// A traffic check: who tries what, and whether policy should let it.
struct Check {
    from: usize,
    to: usize,
    what: Traffic,
    expect_pass: bool,
}

#[derive(Clone, Copy)]
enum Traffic {
    Ping,
    Tcp(u16),
}

impl Traffic {
    fn name(self) -> String {
        match self {
            Traffic::Ping => "ping".into(),
            Traffic::Tcp(port) => format!("tcp/{port}"),
        }
    }
}

fn checks() -> [Check; 7] {
    let check = |from, to, what, expect_pass| Check {
        from,
        to,
        what,
        expect_pass,
    };
    [
        check(WEB, APP, Traffic::Tcp(8080), true),
        check(WEB, APP, Traffic::Ping, true),
        check(APP, DB, Traffic::Tcp(5432), true),
        check(WEB, DB, Traffic::Tcp(5432), false),
        check(DB, WEB, Traffic::Ping, false),
        check(APP, WEB, Traffic::Tcp(8080), false),
        check(WEB, DB, Traffic::Ping, true),
    ]
}

/// What the dataplane reported about one check's traffic.
#[derive(Default)]
struct Observed {
    admitted_by: Option<u32>,
    denied_by: Option<u32>,
    would_deny_by: Option<u32>,
}

impl Observed {
    fn matches(
        check: &Check,
        proto_number: u8,
        originator: u128,
        responder: u128,
        port: u16,
    ) -> bool {
        let ip = |i: usize| ip_to_u128(Ipv4Addr::new(10, 203, SUBNET, WORKLOADS[i].1).into()).1;
        let service = match check.what {
            Traffic::Ping => proto_number == proto::ICMP,
            Traffic::Tcp(p) => proto_number == proto::TCP && port == p,
        };
        service && originator == ip(check.from) && responder == ip(check.to)
    }

    /// Drains the event queues, keeping what concerns `check`.
    fn collect(appliance: &Appliance, check: &Check) -> Self {
        let mut seen = Observed::default();
        let pipeline = appliance.pipeline();
        while let Some(event) = pipeline.conntrack().events().pop() {
            if let FlowEvent::Created { key, entry } = event {
                let originator = entry.originator & 1;
                let (from, to) = (key.addr(originator), key.addr(1 - originator));
                let port = key.ports[usize::from(1 - originator)];
                if Self::matches(check, key.proto, from, to, port) {
                    seen.admitted_by.get_or_insert(entry.rule_id);
                }
            }
        }
        while let Some(VerdictEvent {
            kind,
            flow,
            rule_id,
            ..
        }) = pipeline.events().pop()
        {
            if Self::matches(check, flow.proto, flow.src, flow.dst, flow.dst_port) {
                match kind {
                    VerdictKind::Denied => seen.denied_by.get_or_insert(rule_id),
                    VerdictKind::WouldDeny => seen.would_deny_by.get_or_insert(rule_id),
                    VerdictKind::Cut => continue,
                };
            }
        }
        seen
    }
}

/// Runs the demo, writing its report to `out`; true if every check had
/// the expected outcome. Without `once`, it then waits for Ctrl-C (or
/// SIGTERM) with the testbed, the switch and the API up.
pub fn run(out: &mut impl Write, once: bool) -> Result<bool, DemoError> {
    if !is_root() {
        return Err(DemoError::NotRoot);
    }
    writeln!(
        out,
        "microseg demo: three workloads behind the microseg appliance (AF_XDP)\n"
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
    let _servers: [ChildGuard; 3] = [
        beds[APP].spawn(&["nc", "-lk", "8080"])?,
        beds[DB].spawn(&["nc", "-lk", "5432"])?,
        beds[WEB].spawn(&["nc", "-lk", "8080"])?,
    ];

    let scratch = Scratch::new()?;
    let rules_path = scratch.0.join("rules.yaml");
    std::fs::write(&rules_path, sample_rules())?;
    writeln!(out, "\nsample policy ({}):\n", rules_path.display())?;
    for line in sample_rules().lines().skip(1) {
        writeln!(out, "    {line}")?;
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", API_PORT))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))?;
    let api = listener.local_addr()?;
    let config = Config {
        ports: beds.iter().map(|b| b.host_if.clone()).collect(),
        workers: 1,
        cpus: vec![None],
        poll_mode: PollMode::Adaptive,
        frames_per_port: 1024,
        source: PolicySource::Rules(rules_path.clone()),
        state_dir: scratch.0.clone(),
        api_tokens: None,
        api_body_limit: crate::api::DEFAULT_BODY_LIMIT,
        api_tls: None,
        conntrack: ConntrackConfig {
            max_entries: 65_536,
            ..ConntrackConfig::default()
        },
        api_listen: api,
        flow_records: crate::visibility::DEFAULT_FLOW_CAPACITY,
        learning: crate::visibility::DEFAULT_LEARNING,
        alerts: crate::alerts::AlertConfig::default(),
    };
    let appliance = Arc::new(Appliance::start(config, PolicyFeed::RulesFile(rules_path))?);
    let server = ApiThread::start(listener, Arc::clone(&appliance))?;
    writeln!(
        out,
        "\nthe switch is up; its status API: http://{api}/v1/status\n\ntraffic:"
    )?;

    let mut all_as_expected = true;
    for check in checks() {
        let passed = attempt(&beds[check.from].namespace, &check);
        let seen = Observed::collect(&appliance, &check);
        let ok = passed == check.expect_pass;
        all_as_expected &= ok;
        let Some(rules) = appliance.rules() else {
            break;
        };
        let why = match (passed, &seen) {
            (
                true,
                Observed {
                    would_deny_by: Some(rule),
                    ..
                },
            ) => format!(
                "would be denied by {} (monitor mode: reported, let pass)",
                rules.rule_name(*rule)
            ),
            (
                true,
                Observed {
                    admitted_by: Some(rule),
                    ..
                },
            ) => format!("by rule {}", rules.rule_name(*rule)),
            (
                false,
                Observed {
                    denied_by: Some(rule),
                    ..
                },
            ) if rules.rule_name(*rule) == "default" => {
                "by the default action (no rule matched)".into()
            }
            (
                false,
                Observed {
                    denied_by: Some(rule),
                    ..
                },
            ) => format!("by rule {}", rules.rule_name(*rule)),
            _ => "(no verdict recorded)".into(),
        };
        writeln!(
            out,
            "  {:>3} -> {:<3} {:<9} {}  {why}{}",
            WORKLOADS[check.from].0,
            WORKLOADS[check.to].0,
            check.what.name(),
            if passed { "ALLOWED" } else { "DENIED " },
            if ok { "" } else { "  (UNEXPECTED)" }
        )?;
    }

    let status = appliance.status();
    writeln!(
        out,
        "\nswitch: {} frames forwarded, {} flooded; connections tracked now: {}",
        status.forwarded, status.flooded, status.conntrack_entries
    )?;
    for (cause, count) in &status.drops {
        writeln!(out, "  dropped {count:>4}  {cause}")?;
    }
    writeln!(
        out,
        "\nNot yet in the demo: label-based policy (issue 6), flow records and the \
         dependency map (issue 7)."
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
    if !once {
        let (web, app) = (&beds[WEB], &beds[APP]);
        writeln!(
            out,
            "\nThe testbed, the switch and the API stay up. Try:\n  \
             ip netns exec {} ping {}\n  curl -s http://{api}/v1/status\n\
             Ctrl-C ends the demo and removes everything.",
            web.namespace, app.peer_addr
        )?;
        out.flush()?;
        server.wait_for_signal();
    } else {
        server.stop();
    }
    appliance.stop()?;
    Ok(all_as_expected)
}

/// The API on a thread of its own (its own async runtime), ended by
/// `stop` or by SIGINT/SIGTERM.
struct ApiThread {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ApiThread {
    fn start(listener: std::net::TcpListener, appliance: Arc<Appliance>) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Signal handlers are installed now, so Ctrl-C during the traffic
        // checks also ends the demo cleanly (after the checks).
        let signals = runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let (mut interrupt, mut terminate) = signals;
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let stop = async move {
                    tokio::select! {
                        _ = on_shutdown => {}
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                };
                let state = Arc::new(crate::api::ApiState {
                    engine: None,
                    appliance: Some(appliance),
                    tokens: crate::api::Tokens::default(),
                    // The demo's API is read-only and on loopback.
                    anonymous_reads: true,
                    body_limit: crate::api::DEFAULT_BODY_LIMIT,
                    metrics: Arc::new(crate::metrics::Metrics::new()),
                    visibility: None,
                });
                let _ = crate::api::serve(listener, state, stop).await;
            });
        });
        Ok(Self { shutdown, thread })
    }

    fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.thread.join();
    }

    fn wait_for_signal(self) {
        let _ = self.thread.join();
    }
}

/// A scratch folder for the rules file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("microseg-demo-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one check from namespace `ns`; true if the traffic got through.
fn attempt(ns: &str, check: &Check) -> bool {
    let to = address(WORKLOADS[check.to].1);
    match check.what {
        Traffic::Ping => ping_from(ns, &to, 2, &[]),
        Traffic::Tcp(port) => tcp_connect_from(ns, &to, port),
    }
}
