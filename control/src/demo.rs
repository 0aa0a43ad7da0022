//! `microseg demo`: three workloads (web, app, db) in network namespaces
//! behind the microseg appliance (the same one `microseg run` starts), a
//! sample label-based policy through the policy engine, real traffic
//! between them (ping, TCP), and for each flow whether it was allowed or
//! denied and by which rule, from the flow records. Then the dependency
//! map, a monitor-mode rule's impact and its enforcement, and a
//! quarantine put in force and lifted. The API (and the web page) is up
//! meanwhile; the testbed and the switch stay up until Ctrl-C (or end at
//! once with `--once`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use microseg_dataplane::conntrack::ConntrackConfig;
use microseg_dataplane::worker::PollMode;

use crate::appliance::{Appliance, ApplianceError, PolicyFeed};
use crate::config::{Config, PolicySource};
use crate::engine::PolicyEngine;
use crate::flows::{CollectorConfig, FlowRecord, Verdict};
use crate::policy::{ModeName, PolicyDocument};
use crate::quarantine::{QuarantineRequest, Quarantines};
use crate::store::Store;
use crate::testbed::{is_root, ping_from, tcp_connect_from, ChildGuard, Testbed, TestbedError};
use crate::visibility::{Attached, Visibility, VisibilityConfig};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo builds network namespaces and attaches XDP: run it as root")]
    NotRoot,
    #[error("testbed: {0}")]
    Testbed(#[from] TestbedError),
    #[error("appliance: {0}")]
    Appliance(#[from] ApplianceError),
    #[error("writing the report or the policy file: {0}")]
    Output(#[from] std::io::Error),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("policy engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("state: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("quarantine: {0}")]
    Quarantine(#[from] crate::quarantine::QuarantineError),
    #[error("API token: {0}")]
    Tokens(#[from] crate::api::TokensError),
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

/// The sample policy, as a document of the policy engine.
fn sample_policy() -> String {
    let workload = |name: &str, host: u8| {
        format!(
            "  - {{name: {name}, addresses: [{}], labels: {{app: shop, role: {name}}}}}\n",
            address(host)
        )
    };
    format!(
        "# The demo's segmentation policy, in labels.
workloads:
{}{}{}policies:
  - name: shop
    rules:
      - {{name: web-to-app, from: role=web, to: role=app, services: [tcp/8080, icmp/8], action: allow}}
      - {{name: app-to-db, from: role=app, to: role=db, services: [tcp/5432], action: allow}}
  - name: watch              # evaluated after shop (priority 200)
    priority: 200
    mode: monitor            # would-deny: reported, let pass
    rules:
      - {{name: watch-web-pings, from: role=web, to: any, services: [icmp/8], action: deny}}
default_action: deny
",
        workload("web", 1),
        workload("app", 2),
        workload("db", 3)
    )
}

/// A traffic check: who tries what, and whether policy should let it.
struct Check {
    from: usize,
    to: usize,
    what: Traffic,
    expect_pass: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
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

/// The flow record of one check's traffic, waited for (the collector
/// drains the dataplane's events a few times a second).
fn record_of(visibility: &Visibility, check: &Check) -> Option<Arc<FlowRecord>> {
    let (src, dst) = (
        address(WORKLOADS[check.from].1),
        address(WORKLOADS[check.to].1),
    );
    let service = match check.what {
        Traffic::Ping => "icmp/8".to_string(),
        Traffic::Tcp(port) => format!("tcp/{port}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let found = visibility.flows().all().into_iter().rev().find(|r| {
            r.opens_flow() && r.src.address == src && r.dst.address == dst && r.service() == service
        });
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Why a check's traffic passed or not, in words.
fn why(passed: bool, record: Option<&FlowRecord>) -> String {
    let Some(record) = record else {
        return "(no flow record)".into();
    };
    let rule = record.rule.clone().unwrap_or_default();
    match (passed, record.verdict, record.default) {
        (true, Verdict::WouldDeny, _) => {
            format!("would be denied by {rule} (monitor mode: reported, let pass)")
        }
        (_, _, true) => "by the default action (no rule matched)".into(),
        _ if !rule.is_empty() => format!("by rule {rule}"),
        _ => "(no verdict recorded)".into(),
    }
}

/// Runs `checks`, writing a line per check; true if all came out as
/// expected.
fn run_checks(
    out: &mut impl Write,
    beds: &[Testbed],
    visibility: &Visibility,
    checks: &[Check],
) -> Result<bool, DemoError> {
    let mut all_as_expected = true;
    for check in checks {
        let passed = attempt(&beds[check.from].namespace, check);
        let record = record_of(visibility, check);
        let ok = passed == check.expect_pass;
        all_as_expected &= ok;
        writeln!(
            out,
            "  {:>3} -> {:<3} {:<9} {}  {}{}",
            WORKLOADS[check.from].0,
            WORKLOADS[check.to].0,
            check.what.name(),
            if passed { "ALLOWED" } else { "DENIED " },
            why(passed, record.as_deref()),
            if ok { "" } else { "  (UNEXPECTED)" }
        )?;
    }
    Ok(all_as_expected)
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
    let policy_path = scratch.0.join("policy.yaml");
    std::fs::write(&policy_path, sample_policy())?;
    writeln!(out, "\nsample policy ({}):\n", policy_path.display())?;
    for line in sample_policy().lines().skip(1) {
        writeln!(out, "    {line}")?;
    }
    let document = PolicyDocument::from_yaml(&sample_policy())?;
    let store = Arc::new(Store::open(&scratch.0.join("state"))?);
    let engine = Arc::new(
        PolicyEngine::restore(Store::open(&scratch.0.join("state"))?, Some(document), None)?.engine,
    );
    let quarantines = Arc::new(Quarantines::open(store, Some(Arc::clone(&engine)))?);
    let listener = std::net::TcpListener::bind(("127.0.0.1", API_PORT))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))?;
    let api = listener.local_addr()?;
    let config = Config {
        ports: beds.iter().map(|b| b.host_if.clone()).collect(),
        workers: 1,
        cpus: vec![None],
        poll_mode: PollMode::Adaptive,
        frames_per_port: 1024,
        fast_path: false,
        source: PolicySource::Policy(Some(policy_path)),
        state_dir: scratch.0.join("state"),
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
    let appliance = Arc::new(Appliance::start(
        config,
        PolicyFeed::Engine(Arc::clone(engine.cell())),
        &quarantines.xdp_addresses(),
    )?);
    quarantines.attach(Arc::clone(&appliance) as Arc<dyn crate::quarantine::Enforcer>);
    let visibility = Arc::new(Visibility::for_appliance(
        &appliance,
        Some(Arc::clone(&engine)),
        Attached {
            quarantines: Some(Arc::clone(&quarantines)),
            alerts: None,
        },
        VisibilityConfig {
            collector: CollectorConfig {
                interval: std::time::Duration::from_millis(20),
                ..CollectorConfig::default()
            },
            ..VisibilityConfig::default()
        },
    )?);
    // An admin token for this run only, so that the web page and curl
    // can change things (quarantine, policy); reads need none.
    let admin = crate::api::random_token()?;
    let tokens = crate::api::Tokens::parse(&format!("admin demo {admin}\n"), "demo")?;
    let server = ApiThread::start(
        listener,
        tokens,
        Arc::clone(&appliance),
        Arc::clone(&engine),
        Arc::clone(&visibility),
    )?;
    writeln!(
        out,
        "\nthe switch is up; its API: http://{api}/v1/status, the web page: http://{api}/#token={admin}\n\ntraffic:"
    )?;
    let mut all_as_expected = run_checks(out, &beds, &visibility, &checks())?;

    // The dependency map of what was seen.
    let records = visibility.flows().all();
    let map = crate::map::build(&records, &crate::map::Grouping::default(), None);
    writeln!(
        out,
        "\ndependency map ({} flow records; SVG: http://{api}/v1/map?format=svg):",
        records.len()
    )?;
    for edge in &map.edges {
        let verdicts: Vec<String> = edge
            .verdicts
            .iter()
            .map(|(verdict, count)| format!("{count} {}", verdict.name()))
            .collect();
        writeln!(
            out,
            "  {:>3} -> {:<3} {:<9} {}",
            edge.from,
            edge.to,
            edge.service,
            verdicts.join(", ")
        )?;
    }

    // Monitor mode, then enforcement: the impact first, then the change.
    let (_, mut enforced) = engine.current();
    for policy in &mut enforced.policies {
        if policy.name == "watch" {
            policy.mode = ModeName::Enforce;
        }
    }
    let candidate = crate::policy::compile(&enforced, 0)?;
    let in_force = engine.cell().load_full();
    let impact = crate::impact::analyse(
        &records,
        crate::impact::Judge {
            snapshot: &in_force,
            book: &engine.rules(),
        },
        crate::impact::Judge {
            snapshot: &candidate.snapshot,
            book: &crate::policy::RuleBook {
                generation: 0,
                rules: candidate.rules,
            },
        },
    );
    writeln!(
        out,
        "\nswitching policy `watch` from monitor to enforce; its impact on the flows seen:"
    )?;
    for change in &impact.changes {
        writeln!(
            out,
            "  {:>3} -> {:<3} {:<9} {} -> {}",
            change
                .src
                .workload
                .as_deref()
                .unwrap_or(&change.src.address),
            change
                .dst
                .workload
                .as_deref()
                .unwrap_or(&change.dst.address),
            change.service,
            change.now.name(),
            change.candidate.name()
        )?;
    }
    let applied = engine.apply(enforced, None, "demo", std::time::Instant::now())?;
    writeln!(
        out,
        "applied: policy version {}, generation {}, in force after {:.1} ms",
        applied.version,
        applied.generation,
        applied.swap_seconds * 1000.0
    )?;
    all_as_expected &= run_checks(
        out,
        &beds,
        &visibility,
        &[Check {
            from: WEB,
            to: DB,
            what: Traffic::Ping,
            expect_pass: false,
        }],
    )?;

    // Quarantine: db is cut off in XDP at once, then released.
    let request = QuarantineRequest {
        target: "db".into(),
        ttl_seconds: Some(600),
        reason: Some("the demo's suspected compromise".into()),
        break_glass: Vec::new(),
    };
    let done = quarantines.add(request, "demo")?;
    writeln!(
        out,
        "\nquarantine of db ({}): policy generation {}, {} connection(s) cut",
        done.quarantine
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        done.generation.unwrap_or_default(),
        done.connections_cut
    )?;
    let app_to_db = Check {
        from: APP,
        to: DB,
        what: Traffic::Tcp(5432),
        expect_pass: false,
    };
    let blocked = !attempt(&beds[APP].namespace, &app_to_db);
    let xdp_drops: u64 = appliance
        .status()
        .ports
        .iter()
        .map(|p| p.xdp_quarantine_drops)
        .sum();
    all_as_expected &= blocked && xdp_drops > 0;
    writeln!(
        out,
        "  app -> db  tcp/5432  {}  ({xdp_drops} frame(s) dropped in XDP by the quarantine){}",
        if blocked { "DENIED " } else { "ALLOWED" },
        if blocked && xdp_drops > 0 {
            ""
        } else {
            "  (UNEXPECTED)"
        }
    )?;
    quarantines.lift("db", "demo")?;
    writeln!(out, "quarantine of db lifted:")?;
    all_as_expected &= run_checks(
        out,
        &beds,
        &visibility,
        &[Check {
            expect_pass: true,
            ..app_to_db
        }],
    )?;

    let status = appliance.status();
    let lost = visibility.lost();
    writeln!(
        out,
        "\nswitch: {} frames forwarded, {} flooded; connections tracked now: {}; flow records: {}; events lost: {}",
        status.forwarded,
        status.flooded,
        status.conntrack_entries,
        visibility.flows().stats().recorded,
        lost.verdict_queue + lost.flow_queue + lost.store_evicted + lost.stream
    )?;
    for (cause, count) in &status.drops {
        writeln!(out, "  dropped {count:>4}  {cause}")?;
    }
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
             ip netns exec {} ping {}\n  curl -s http://{api}/v1/flows\n  \
             curl -s 'http://{api}/v1/explain?src=web&dst=db&dport=5432'\n  \
             open http://{api}/#token={admin} (the web page: map, flows, violations, quarantine)\n\
             Ctrl-C ends the demo and removes everything.",
            web.namespace, app.peer_addr
        )?;
        out.flush()?;
        server.wait_for_signal();
    } else {
        server.stop();
    }
    visibility.stop();
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
    fn start(
        listener: std::net::TcpListener,
        tokens: crate::api::Tokens,
        appliance: Arc<Appliance>,
        engine: Arc<PolicyEngine>,
        visibility: Arc<Visibility>,
    ) -> std::io::Result<Self> {
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
                    engine: Some(engine),
                    appliance: Some(appliance),
                    tokens,
                    // The demo's API is on loopback and readable without a
                    // token; changes need the run's admin token.
                    anonymous_reads: true,
                    body_limit: crate::api::DEFAULT_BODY_LIMIT,
                    metrics: Arc::new(crate::metrics::Metrics::new()),
                    visibility: Some(visibility),
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
