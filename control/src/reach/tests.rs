//! Reachability over a compiled policy: partial overlaps, isolation, the
//! default action, monitor mode, observed flows, the report.

use super::*;
use crate::flows::RecordKind;
use crate::policy::compile;
use crate::test_support::{endpoint, record};

const ZONES: &str = r#"
workloads:
  - {name: dev-1, addresses: [10.2.0.1], labels: {env: dev}}
  - {name: pci-1, addresses: [10.3.0.1], labels: {zone: pci}}
  - {name: shop-1, addresses: [10.4.0.1], labels: {env: prod}}
policies:
  - name: pci-guard
    priority: 10
    rules:
      - {name: no-dev-tls, from: env=dev, to: zone=pci, services: [tcp/8443], action: deny}
      - {name: watch-dev-ping, from: env=dev, to: zone=pci, services: [icmp/8], action: deny, mode: monitor}
  - name: dev-tools
    priority: 20
    rules:
      - {name: dev-ports, from: env=dev, to: any, services: [tcp/8000-9000], action: allow}
      - {name: shop-tls, from: env=prod, to: zone=pci, services: [tcp/443], action: allow}
"#;

fn ask(yaml: &str, from: &str, to: &str, records: &[Arc<FlowRecord>]) -> Reachability {
    let document = PolicyDocument::from_yaml(yaml).expect("document");
    let compiled = compile(&document, 4).expect("compiles");
    let book = RuleBook {
        generation: 4,
        rules: compiled.rules.clone(),
    };
    reachability(from, to, &document, &compiled.snapshot, &book, records).expect("answer")
}

#[test]
fn a_partly_shadowed_allow_is_a_path_with_what_it_leaves() {
    let answer = ask(ZONES, "env=dev", "zone=pci", &[]);
    assert!(answer.reachable);
    assert_eq!(answer.pairs_checked, 1);
    let by_rule: Vec<(String, Verdict, Vec<String>)> = answer
        .paths
        .iter()
        .map(|p| {
            (
                p.rule.as_ref().map(|r| r.rule.clone()).unwrap_or_default(),
                p.verdict,
                p.services.clone(),
            )
        })
        .collect();
    assert_eq!(
        by_rule,
        vec![
            (
                "watch-dev-ping".into(),
                Verdict::WouldDeny,
                vec!["icmp/8".to_string()]
            ),
            (
                "dev-ports".into(),
                Verdict::Allowed,
                vec!["tcp/8000-8442".to_string(), "tcp/8444-9000".to_string()]
            ),
        ]
    );
}

#[test]
fn isolation_is_stated_and_the_default_allow_is_a_path() {
    let answer = ask(ZONES, "zone=pci", "env=dev", &[]);
    assert!(!answer.reachable, "{answer:?}");
    assert!(answer.paths.is_empty());
    let open = format!("{ZONES}default_action: allow\n");
    let answer = ask(&open, "zone=pci", "env=dev", &[]);
    assert_eq!(answer.paths.len(), 1);
    assert_eq!(answer.paths[0].rule, None, "the default action");
    assert_eq!(answer.paths[0].services, vec!["any".to_string()]);
    // Workload names and addresses work as ends too.
    let answer = ask(ZONES, "shop-1", "10.3.0.1/32", &[]);
    assert_eq!(answer.paths[0].services, vec!["tcp/443".to_string()]);
}

#[test]
fn observed_flows_are_reported_by_verdict() {
    let dev = endpoint(Some("dev-1"), "10.2.0.1", "x");
    let pci = endpoint(Some("pci-1"), "10.3.0.1", "y");
    let records = vec![
        record(
            RecordKind::Start,
            dev.clone(),
            pci.clone(),
            8080,
            Verdict::Allowed,
        ),
        record(
            RecordKind::Start,
            dev.clone(),
            pci.clone(),
            8080,
            Verdict::Allowed,
        ),
        record(
            RecordKind::End,
            dev.clone(),
            pci.clone(),
            8080,
            Verdict::Allowed,
        ),
        record(
            RecordKind::Verdict,
            dev.clone(),
            pci.clone(),
            8443,
            Verdict::Denied,
        ),
        record(RecordKind::Start, pci, dev, 8080, Verdict::Allowed),
    ];
    let answer = ask(ZONES, "env=dev", "zone=pci", &records);
    assert_eq!(answer.observed.len(), 1);
    assert_eq!(
        (
            answer.observed[0].service.as_str(),
            answer.observed[0].flows
        ),
        ("tcp/8080", 2)
    );
    assert_eq!(answer.observed_denied.len(), 1);
    assert_eq!(answer.observed_denied[0].verdict, Verdict::Denied);
    let text = report(&answer, "2026-11-24T08:00:00Z", Some(7));
    assert!(
        text.starts_with("# Reachability report: `env=dev` → `zone=pci`"),
        "{text}"
    );
    assert!(text.contains("## Verdict: REACHABLE"), "{text}");
    assert!(text.contains("| dev-1 (10.2.0.1) | pci-1 (10.3.0.1) | dev-tools/dev-ports (policies[1].rules[0]) | allowed | tcp/8000-8442, tcp/8444-9000 |"), "{text}");
    assert!(
        text.contains("| dev-1 | pci-1 | tcp/8443 | denied | 1 |"),
        "{text}"
    );
    assert!(text.contains("policy version 7, generation 4"), "{text}");
    let isolated = report(&ask(ZONES, "zone=pci", "env=dev", &[]), "now", None);
    assert!(isolated.contains("## Verdict: ISOLATED"), "{isolated}");
}

#[test]
fn ends_that_are_not_workloads_are_refused_by_name() {
    let document = PolicyDocument::from_yaml(ZONES).expect("document");
    for (text, message) in [
        ("any", "give workloads"),
        ("ip_list:office", "give workloads"),
        ("role=nothing", "matches no workload"),
        ("role=", "role="),
    ] {
        let error = members(&document, text, "from").expect_err(text);
        assert_eq!(error.parameter, "from");
        assert!(error.message.contains(message), "{text}: {error}");
    }
}
