//! Recommendations and anomalies from hand-made records.

use super::*;
use crate::test_support::{endpoint, record};

fn with_id(record: Arc<FlowRecord>, id: u64, time_ms: u64) -> FlowRecord {
    FlowRecord {
        id,
        time_ms,
        ..(*record).clone()
    }
}

fn web() -> Endpoint {
    endpoint(Some("web-1"), "10.1.0.1", "web")
}
fn web2() -> Endpoint {
    endpoint(Some("web-2"), "10.1.0.4", "web")
}
fn app() -> Endpoint {
    endpoint(Some("app-1"), "10.1.0.2", "app")
}
fn db() -> Endpoint {
    endpoint(Some("db-1"), "10.1.0.3", "db")
}

#[test]
fn recommendations_are_least_privilege_label_rules() {
    let records = vec![
        record(RecordKind::Start, web(), app(), 8080, Verdict::Allowed),
        record(RecordKind::Start, web2(), app(), 8080, Verdict::Allowed),
        record(RecordKind::Start, web(), app(), 8443, Verdict::WouldDeny),
        record(RecordKind::End, web(), app(), 9999, Verdict::Allowed),
        record(RecordKind::Verdict, app(), db(), 5432, Verdict::Denied),
        record(
            RecordKind::Start,
            endpoint(None, "192.0.2.7", ""),
            web(),
            443,
            Verdict::Allowed,
        ),
    ];
    let workloads = PolicyDocument::default();
    let found = recommend(&records, &Generalize::default(), &workloads, false);
    assert_eq!(found.flows_used, 4, "start and verdict records let through");
    let policy = &found.policy.policies[0];
    assert_eq!(
        (policy.name.as_str(), policy.mode),
        ("recommended", ModeName::Monitor)
    );
    let rules: Vec<(String, String, String, Vec<String>)> = policy
        .rules
        .iter()
        .map(|r| {
            (
                r.name.clone().unwrap_or_default(),
                r.from.clone(),
                r.to.clone(),
                r.services.clone(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                "192.0.2.7_32-to-web".into(),
                "192.0.2.7/32".into(),
                "role=web".into(),
                vec!["tcp/443".into()]
            ),
            (
                "web-to-app".into(),
                "role=web".into(),
                "role=app".into(),
                vec!["tcp/8080".into(), "tcp/8443".into()]
            ),
        ]
    );
    assert_eq!(found.policy.default_action, ActionName::Deny);
    // The recommended document is a valid policy.
    let mut document = found.policy.clone();
    document.workloads = vec![crate::policy::Workload {
        name: "web-1".into(),
        addresses: vec!["10.1.0.1".into()],
        labels: [("role".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
    }];
    assert!(document.check().is_valid(), "{:?}", document.check());
    // Denied traffic only on request; by two keys.
    let with_denied = recommend(
        &records,
        &Generalize {
            by: vec!["app".into(), "role".into()],
        },
        &workloads,
        true,
    );
    assert!(with_denied.policy.policies[0]
        .rules
        .iter()
        .any(|r| r.from == "app=shop,role=app" && r.to == "app=shop,role=db"));
}

#[test]
fn after_learning_new_edges_are_anomalies_once() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heard);
    let detector = AnomalyDetector::new(
        Generalize::default(),
        10_000,
        Some(Box::new(move |a: &Anomaly, _: &FlowRecord| {
            sink.lock().expect("lock").push(a.clone())
        })),
    );
    let learn = record(RecordKind::Start, web(), app(), 8080, Verdict::Allowed);
    detector.observe(&with_id(Arc::clone(&learn), 1, 5_000));
    // Denied during learning is not learned.
    detector.observe(&with_id(
        record(RecordKind::Verdict, app(), db(), 5432, Verdict::Denied),
        2,
        6_000,
    ));
    // After the window: a known edge (another web workload) is fine...
    detector.observe(&with_id(
        record(RecordKind::Start, web2(), app(), 8080, Verdict::Allowed),
        3,
        20_000,
    ));
    // ...a new one is an anomaly, reported once.
    let new_edge = record(RecordKind::Verdict, app(), db(), 5432, Verdict::Denied);
    detector.observe(&with_id(Arc::clone(&new_edge), 4, 21_000));
    detector.observe(&with_id(new_edge, 5, 22_000));
    // Ends and updates are not flows of their own.
    detector.observe(&with_id(
        record(RecordKind::End, web(), db(), 1, Verdict::Allowed),
        6,
        23_000,
    ));
    let status = detector.status();
    assert_eq!(
        status.edges_learned, 2,
        "web->app learned, app->db known after its anomaly"
    );
    assert_eq!(status.anomalies_total, 1);
    assert_eq!(
        (
            status.anomalies[0].from.as_str(),
            status.anomalies[0].to.as_str(),
            status.anomalies[0].service.as_str(),
            status.anomalies[0].flow
        ),
        ("role=app", "role=db", "tcp/5432", 4)
    );
    assert_eq!(heard.lock().expect("lock").len(), 1);
}
