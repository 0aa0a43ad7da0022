//! Records from real frames: frames go through the pipeline under a
//! compiled policy, the collector turns its events into named records,
//! and queries filter them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use microseg_dataplane::conntrack::{ConnKey, ConntrackConfig, ConntrackTable, EndReason};
use microseg_dataplane::pipeline::{FrameAction, Pipeline};
use microseg_dataplane::switch::{MacTable, SwitchConfig};

use super::*;
use crate::engine::PolicyEngine;
use crate::policy::{ModeName, PolicyDocument};
use crate::store::Store;
use crate::test_support::{flow, send, tcp_syn};

const POLICY: &str = r#"
workloads:
  - {name: web-1, addresses: [10.1.0.1], labels: {role: web}}
  - {name: app-1, addresses: [10.1.0.2], labels: {role: app}}
  - {name: db-1, addresses: [10.1.0.3], labels: {role: db}}
policies:
  - name: shop
    rules:
      - {name: web-to-app, from: role=web, to: role=app, services: [tcp/8080], action: allow}
  - name: tighten
    mode: monitor
    priority: 50
    rules:
      - {name: no-app-to-db, from: role=app, to: role=db, services: [tcp/5432], action: deny}
default_action: deny
"#;

/// Deny before allow means the monitor deny decides app -> db; with
/// nothing allowing it otherwise the flow passes as would-deny.
struct Bed {
    pipeline: Arc<Pipeline>,
    collector: Collector,
    store: Arc<FlowStore>,
    clock: Clock,
    dir: std::path::PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bed(name: &str, capacity: usize) -> Bed {
    let dir = std::env::temp_dir().join(format!("microseg-flows-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let document: PolicyDocument = serde_yaml::from_str(POLICY).expect("policy");
    let engine = Arc::new(
        PolicyEngine::restore(Store::open(&dir).expect("store"), Some(document), None)
            .expect("restore")
            .engine,
    );
    let pipeline = Arc::new(Pipeline::new(
        Arc::clone(engine.cell()),
        Arc::new(ConntrackTable::new(ConntrackConfig::default())),
        Arc::new(MacTable::new(SwitchConfig::default())),
        1024,
    ));
    let store = Arc::new(FlowStore::new(capacity));
    let clock = Clock::new(Instant::now());
    let collector = Collector::new(
        Arc::clone(&pipeline),
        clock,
        Names::Engine(engine),
        Arc::clone(&store),
        CollectorConfig::default(),
    );
    Bed {
        pipeline,
        collector,
        store,
        clock,
        dir,
    }
}

const WEB: [u8; 4] = [10, 1, 0, 1];
const APP: [u8; 4] = [10, 1, 0, 2];
const DB: [u8; 4] = [10, 1, 0, 3];
const SECOND: u64 = 1_000_000_000;

#[test]
fn events_become_named_records() {
    let mut bed = bed("named", 100);
    send(&bed.pipeline, &tcp_syn(WEB, APP, 40000, 8080), SECOND);
    assert!(matches!(
        send(&bed.pipeline, &tcp_syn(APP, WEB, 40001, 22), SECOND),
        FrameAction::Drop(_)
    ));
    send(&bed.pipeline, &tcp_syn(APP, DB, 40002, 5432), SECOND);
    assert_eq!(bed.collector.tick(2 * SECOND), 4);
    let records = bed.store.query(&FlowFilter {
        limit: 10,
        ..FlowFilter::default()
    });
    let summary: Vec<(RecordKind, Verdict, String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.kind,
                r.verdict,
                r.src.workload.clone().unwrap_or_default(),
                r.dst.workload.clone().unwrap_or_default(),
                r.service(),
            )
        })
        .collect();
    let expect = |kind, verdict, src: &str, dst: &str, service: &str| {
        (kind, verdict, src.into(), dst.into(), service.into())
    };
    // Verdict events are drained before connection events.
    assert_eq!(
        summary,
        vec![
            expect(
                RecordKind::Verdict,
                Verdict::Denied,
                "app-1",
                "web-1",
                "tcp/22"
            ),
            expect(
                RecordKind::Verdict,
                Verdict::WouldDeny,
                "app-1",
                "db-1",
                "tcp/5432"
            ),
            expect(
                RecordKind::Start,
                Verdict::Allowed,
                "web-1",
                "app-1",
                "tcp/8080"
            ),
            expect(
                RecordKind::Start,
                Verdict::WouldDeny,
                "app-1",
                "db-1",
                "tcp/5432"
            ),
        ]
    );
    let denied = &records[0];
    assert!(denied.default, "the default action denied it: {denied:?}");
    assert_eq!(denied.rule, None);
    let allowed = &records[2];
    assert_eq!(allowed.policy.as_deref(), Some("shop"));
    assert_eq!(allowed.rule.as_deref(), Some("web-to-app"));
    assert_eq!(allowed.mode, Some(ModeName::Enforce));
    assert_eq!(
        allowed.src.labels.get("role").map(String::as_str),
        Some("web")
    );
    assert_eq!((allowed.sport, allowed.dport), (Some(40000), Some(8080)));
    assert_eq!(allowed.packets, [1, 0]);
    assert_eq!(allowed.state, Some("SYN_SENT"));
    assert_eq!(allowed.time_ms, bed.clock.unix_ms(SECOND));
    let would = &records[3];
    assert_eq!(
        (would.policy.as_deref(), would.rule.as_deref(), would.mode),
        (
            Some("tighten"),
            Some("no-app-to-db"),
            Some(ModeName::Monitor)
        )
    );
    // Ids increase in order.
    assert!(records.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn ends_and_long_connections_are_reported() {
    let mut bed = bed("ends", 100);
    send(&bed.pipeline, &tcp_syn(WEB, APP, 40000, 8080), SECOND);
    send(&bed.pipeline, &tcp_syn(WEB, APP, 40003, 8080), SECOND);
    bed.collector.tick(SECOND);
    // One connection removed (as a policy cut would): an end record.
    let (key, _) = ConnKey::from_flow(&flow("10.1.0.1", "10.1.0.2", 6, 8080), 0);
    assert!(bed
        .pipeline
        .conntrack()
        .remove(&key, EndReason::Removed)
        .is_some());
    bed.collector.tick(2 * SECOND);
    let ends = bed.store.query(&FlowFilter {
        limit: 10,
        ..FlowFilter::default()
    });
    let end = ends
        .iter()
        .find(|r| r.kind == RecordKind::End)
        .expect("an end");
    assert_eq!(end.end_reason, Some("removed"));
    assert_eq!(end.dport, Some(8080));
    // A minute on, the other one is a long connection: an update record.
    let later = SECOND + Duration::from_secs(61).as_nanos() as u64;
    assert_eq!(bed.collector.tick(later), 1);
    let last = bed.store.all().pop().expect("records");
    assert_eq!(last.kind, RecordKind::Update);
    assert_eq!(last.sport, Some(40003));
}

#[test]
fn queries_filter_and_name_bad_parameters() {
    let mut bed = bed("query", 100);
    send(&bed.pipeline, &tcp_syn(WEB, APP, 40000, 8080), SECOND);
    send(&bed.pipeline, &tcp_syn(APP, WEB, 40001, 22), 2 * SECOND);
    send(&bed.pipeline, &tcp_syn(DB, WEB, 40002, 22), 3 * SECOND);
    bed.collector.tick(4 * SECOND);
    let query = |pairs: &[(&str, &str)]| {
        let params: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FlowFilter::from_query(&params).map(|f| {
            bed.store
                .query(&f)
                .iter()
                .map(|r| r.src.address.clone())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        query(&[("verdict", "denied")]),
        Ok(vec!["10.1.0.2".into(), "10.1.0.3".into()])
    );
    assert_eq!(query(&[("src", "web-1")]), Ok(vec!["10.1.0.1".into()]));
    assert_eq!(
        query(&[("src", "10.1.0.2/31"), ("dst", "web-1")]),
        Ok(vec!["10.1.0.2".into(), "10.1.0.3".into()])
    );
    assert_eq!(query(&[("dst", "10.1.0.2")]), Ok(vec!["10.1.0.1".into()]));
    assert_eq!(query(&[("limit", "1")]), Ok(vec!["10.1.0.1".into()]));
    let since = (bed.clock.unix_ms(2 * SECOND) / 1000 + 1).to_string();
    let late = query(&[("since", since.as_str())]).expect("valid");
    assert!(late.len() <= 1, "{late:?}");
    for (name, value, message) in [
        ("verdict", "maybe", "not one of"),
        ("limit", "0", "from 1 to 10000"),
        ("limit", "x", "from 1 to 10000"),
        ("since", "-3", "Unix time"),
        ("color", "red", "unknown parameter"),
    ] {
        let error = query(&[(name, value)]).expect_err(name);
        assert_eq!(error.parameter, name);
        assert!(error.message.contains(message), "{error}");
    }
}

#[test]
fn a_full_store_evicts_the_oldest_and_counts_it() {
    let mut bed = bed("evict", 2);
    for port in 0..5 {
        send(&bed.pipeline, &tcp_syn(APP, WEB, 41000 + port, 22), SECOND);
    }
    bed.collector.tick(SECOND);
    let stats = bed.store.stats();
    assert_eq!((stats.recorded, stats.held, stats.evicted), (5, 2, 3));
    let kept: Vec<Option<u16>> = bed.store.all().iter().map(|r| r.sport).collect();
    assert_eq!(kept, vec![Some(41003), Some(41004)]);
}

#[test]
fn live_subscribers_get_new_records() {
    let mut bed = bed("live", 10);
    let mut live = bed.store.subscribe();
    send(&bed.pipeline, &tcp_syn(APP, WEB, 40001, 22), SECOND);
    bed.collector.tick(SECOND);
    let record = live.try_recv().expect("a live record");
    assert_eq!(record.verdict, Verdict::Denied);
    assert!(live.try_recv().is_err(), "one record only");
}
