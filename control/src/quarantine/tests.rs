//! Quarantine against a real engine and connection table, with a fake
//! XDP side: the overlay decides, break-glass passes, XDP blocks and cuts,
//! state survives a reopen, TTLs lift, bad requests change nothing.

use std::collections::BTreeSet;

use microseg_dataplane::conntrack::ConntrackConfig;
use microseg_dataplane::pipeline::Pipeline;
use microseg_dataplane::switch::{MacTable, SwitchConfig};

use super::*;
use crate::flows::Verdict;
use crate::policy::PolicyDocument;
use crate::test_support::{flow, send, tcp_syn};

const POLICY: &str = r#"
workloads:
  - {name: web-1, addresses: [10.1.0.1], labels: {role: web}}
  - {name: app-1, addresses: [10.1.0.2, "fd00::2"], labels: {role: app}}
  - {name: jump-1, addresses: [10.1.0.9], labels: {role: jump}}
policies:
  - name: shop
    rules:
      - {name: web-to-app, from: role=web, to: role=app, services: [tcp/8080], action: allow}
      - {name: admin, from: role=jump, to: any, services: [tcp/22], action: allow}
"#;

/// XDP as a set of blocked addresses, beside a real pipeline.
struct FakeXdp {
    blocked: Mutex<BTreeSet<IpAddr>>,
    pipeline: Arc<Pipeline>,
}

impl Enforcer for FakeXdp {
    // Keyed as the quarantine map is: IPv4-mapped IPv6 is IPv4.
    fn block(&self, address: IpAddr) -> Result<(), String> {
        self.blocked
            .lock()
            .expect("lock")
            .insert(address.to_canonical());
        Ok(())
    }
    fn release(&self, address: IpAddr) -> Result<(), String> {
        self.blocked
            .lock()
            .expect("lock")
            .remove(&address.to_canonical());
        Ok(())
    }
    fn conntrack(&self) -> &ConntrackTable {
        self.pipeline.conntrack()
    }
}

struct Bed {
    dir: std::path::PathBuf,
    engine: Arc<PolicyEngine>,
    store: Arc<Store>,
    xdp: Arc<FakeXdp>,
    quarantines: Quarantines,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn engine_on(dir: &std::path::Path) -> (Arc<Store>, Arc<PolicyEngine>) {
    let document: PolicyDocument = serde_yaml::from_str(POLICY).expect("policy");
    let engine = PolicyEngine::restore(Store::open(dir).expect("store"), Some(document), None)
        .expect("restore")
        .engine;
    (Arc::new(Store::open(dir).expect("store")), Arc::new(engine))
}

fn bed(name: &str) -> Bed {
    let dir =
        std::env::temp_dir().join(format!("microseg-quarantine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, engine) = engine_on(&dir);
    let pipeline = Arc::new(Pipeline::new(
        Arc::clone(engine.cell()),
        Arc::new(ConntrackTable::new(ConntrackConfig::default())),
        Arc::new(MacTable::new(SwitchConfig::default())),
        64,
    ));
    let xdp = Arc::new(FakeXdp {
        blocked: Mutex::new(BTreeSet::new()),
        pipeline,
    });
    let quarantines =
        Quarantines::open(Arc::clone(&store), Some(Arc::clone(&engine))).expect("open");
    assert!(quarantines
        .attach(Arc::clone(&xdp) as Arc<dyn Enforcer>)
        .is_empty());
    Bed {
        dir,
        engine,
        store,
        xdp,
        quarantines,
    }
}

/// The verdict of the policy in force on a TCP flow.
fn verdict(engine: &PolicyEngine, src: &str, dst: &str, port: u16) -> Verdict {
    Verdict::of(&engine.cell().load().judge(&flow(src, dst, 6, port)))
}

fn request(target: &str) -> QuarantineRequest {
    QuarantineRequest {
        target: target.into(),
        ttl_seconds: None,
        reason: Some("beaconing".into()),
        break_glass: Vec::new(),
    }
}

fn blocked(bed: &Bed) -> Vec<String> {
    bed.xdp
        .blocked
        .lock()
        .expect("lock")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_quarantined_workload_is_isolated_cut_and_released() {
    let bed = bed("isolate");
    const WEB: [u8; 4] = [10, 1, 0, 1];
    const APP: [u8; 4] = [10, 1, 0, 2];
    send(&bed.xdp.pipeline, &tcp_syn(WEB, APP, 40000, 8080), 1);
    assert_eq!(bed.xdp.pipeline.conntrack().len(), 1);
    assert_eq!(
        verdict(&bed.engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Allowed
    );

    let done = bed
        .quarantines
        .add(request("app-1"), "alice")
        .expect("quarantined");
    assert_eq!(
        done.quarantine.addresses.len(),
        2,
        "both of app-1's addresses"
    );
    assert_eq!(done.connections_cut, 1);
    assert_eq!(bed.xdp.pipeline.conntrack().len(), 0);
    assert_eq!(blocked(&bed), vec!["10.1.0.2", "fd00::2"]);
    assert_eq!(Some(bed.engine.generation()), done.generation);
    assert_eq!(
        verdict(&bed.engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Denied
    );
    assert_eq!(
        verdict(&bed.engine, "10.1.0.2", "10.1.0.1", 443),
        Verdict::Denied,
        "outbound too"
    );
    assert_eq!(
        verdict(&bed.engine, "10.1.0.9", "10.1.0.1", 22),
        Verdict::Allowed,
        "others untouched"
    );
    let book = bed.engine.rules();
    let decided = bed
        .engine
        .cell()
        .load()
        .judge(&flow("10.1.0.1", "10.1.0.2", 6, 8080));
    let rule = book.rule(decided.rule_id).expect("a rule decides");
    assert_eq!(
        (rule.policy.as_str(), rule.rule.as_str()),
        ("quarantine:app-1", "isolate-in")
    );
    assert!(bed
        .store
        .audit_trail()
        .expect("audit")
        .iter()
        .any(|e| e.action == "quarantine app-1"));

    let lifted = bed.quarantines.lift("app-1", "alice").expect("lifted");
    assert_eq!(lifted.quarantine.target, "app-1");
    assert!(blocked(&bed).is_empty());
    assert_eq!(
        verdict(&bed.engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Allowed
    );
    assert!(bed.quarantines.list().is_empty());
}

#[test]
fn break_glass_services_stay_open_and_keep_xdp_out_of_it() {
    let bed = bed("glass");
    let mut ask = request("10.1.0.2");
    ask.break_glass = vec![BreakGlass {
        from: "role=jump".into(),
        services: vec!["tcp/22".into()],
    }];
    let done = bed.quarantines.add(ask, "alice").expect("quarantined");
    assert!(blocked(&bed).is_empty(), "the policy enforces, not XDP");
    assert_eq!(done.connections_cut, 0);
    assert_eq!(
        verdict(&bed.engine, "10.1.0.9", "10.1.0.2", 22),
        Verdict::Allowed
    );
    assert_eq!(
        verdict(&bed.engine, "10.1.0.9", "10.1.0.2", 8080),
        Verdict::Denied
    );
    assert_eq!(
        verdict(&bed.engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Denied
    );
}

#[test]
fn quarantines_survive_a_restart_and_expired_ones_do_not() {
    let bed = bed("restart");
    bed.quarantines
        .add(request("web-1"), "alice")
        .expect("quarantined");
    let mut short = request("10.1.0.9");
    short.ttl_seconds = Some(60);
    bed.quarantines.add(short, "alice").expect("quarantined");
    // TTLs lift by themselves.
    let lifted = bed.quarantines.expire(unix_now() + 61);
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].quarantine.target, "10.1.0.9");

    // A restart: a new engine from the same state, then the quarantines.
    let (store, engine) = engine_on(&bed.dir);
    assert_eq!(
        verdict(&engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Allowed,
        "the document alone"
    );
    let reopened = Quarantines::open(store, Some(Arc::clone(&engine))).expect("reopen");
    assert_eq!(
        reopened
            .list()
            .iter()
            .map(|q| q.target.as_str())
            .collect::<Vec<_>>(),
        vec!["web-1"]
    );
    assert_eq!(
        verdict(&engine, "10.1.0.1", "10.1.0.2", 8080),
        Verdict::Denied,
        "in force before any frame"
    );
    assert_eq!(engine.overlay().len(), 1);
}

#[test]
fn bad_requests_are_named_and_change_nothing() {
    let bed = bed("bad");
    bed.quarantines
        .add(request("app-1"), "alice")
        .expect("quarantined");
    let generation = bed.engine.generation();
    let file = bed.store.read_file(STATE_FILE).expect("read");
    let glass = |from: &str, services: &[&str]| {
        let mut ask = request("web-1");
        ask.break_glass = vec![BreakGlass {
            from: from.into(),
            services: services.iter().map(|s| s.to_string()).collect(),
        }];
        ask
    };
    let mut zero_ttl = request("web-1");
    zero_ttl.ttl_seconds = Some(0);
    for (ask, expected) in [
        (
            request("nobody"),
            "target: `nobody` is neither an address nor a workload",
        ),
        (request("app-1"), "app-1 is already quarantined"),
        (zero_ttl, "ttl_seconds: must be at least 1"),
        (glass("role=", &["tcp/22"]), "break_glass[0].from"),
        (
            glass("role=jump", &[]),
            "break_glass[0].services: name at least one service",
        ),
        (
            glass("role=jump", &["tcp/99999"]),
            "break_glass[0].services[0]",
        ),
    ] {
        let error = bed
            .quarantines
            .add(ask, "alice")
            .expect_err(expected)
            .to_string();
        assert!(error.contains(expected), "{error} lacks {expected}");
    }
    let error = bed
        .quarantines
        .lift("web-1", "alice")
        .expect_err("not quarantined");
    assert_eq!(error.to_string(), "web-1 is not quarantined");
    assert_eq!(bed.engine.generation(), generation);
    assert_eq!(bed.store.read_file(STATE_FILE).expect("read"), file);
    assert_eq!(bed.quarantines.list().len(), 1);
}

#[test]
fn without_the_engine_only_complete_isolation_by_address() {
    let bed = bed("rules-file");
    let quarantines = Quarantines::open(Arc::clone(&bed.store), None).expect("open");
    quarantines.attach(Arc::clone(&bed.xdp) as Arc<dyn Enforcer>);
    let error = quarantines
        .add(request("web-1"), "alice")
        .expect_err("a name");
    assert!(
        error
            .to_string()
            .contains("workloads need the policy engine"),
        "{error}"
    );
    let mut ask = request("10.1.0.1");
    ask.break_glass = vec![BreakGlass {
        from: "any".into(),
        services: vec!["tcp/22".into()],
    }];
    assert!(quarantines.add(ask, "alice").is_err());
    let done = quarantines
        .add(request("10.1.0.1"), "alice")
        .expect("by address");
    assert_eq!(done.generation, None);
    assert_eq!(blocked(&bed), vec!["10.1.0.1"]);
}

/// XDP holds a set of addresses: lifting one quarantine releases only the
/// addresses no other quarantine still holds (a workload and one of its
/// addresses; an address and its IPv4-mapped spelling, one map key).
#[test]
fn lifting_one_quarantine_keeps_what_another_still_holds() {
    let bed = bed("overlap");
    for target in ["app-1", "10.1.0.2", "::ffff:10.1.0.2"] {
        bed.quarantines
            .add(request(target), "alice")
            .expect("quarantined");
    }
    bed.quarantines.lift("10.1.0.2", "alice").expect("lifted");
    bed.quarantines
        .lift("::ffff:10.1.0.2", "alice")
        .expect("lifted");
    assert!(
        blocked(&bed).contains(&"10.1.0.2".to_string()),
        "app-1 still holds it: {:?}",
        blocked(&bed)
    );
    bed.quarantines.lift("app-1", "alice").expect("lifted");
    assert!(blocked(&bed).is_empty(), "{:?}", blocked(&bed));
}
