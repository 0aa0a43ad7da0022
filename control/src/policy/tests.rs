use super::*;
use crate::test_support::{assert_problems, flow};
use microseg_dataplane::packet::{proto, FlowKey};

const SHOP: &str = r#"
workloads:
  - name: web-1
    addresses: [10.10.1.10, "fd00:10::10"]
    labels: {app: shop, role: web, env: prod}
  - name: web-2
    addresses: [10.10.1.11]
    labels: {app: shop, role: web, env: prod}
  - name: app-1
    addresses: [10.10.2.10, "fd00:10::20"]
    labels: {app: shop, role: app, env: prod}
  - name: db-1
    addresses: [10.10.3.10]
    labels: {app: shop, role: db, env: prod}
  - name: dev-box
    addresses: [10.10.9.9]
    labels: {env: dev}
ip_lists:
  - name: office
    cidrs: [192.0.2.0/24]
policies:
  - name: shop
    priority: 100
    rules:
      - name: web-to-app
        from: "role=web,env=prod"
        to: "role=app"
        services: ["tcp/8080", "icmp/8", "icmpv6/128"]
        action: allow
      - name: app-to-db
        from: role=app
        to: role=db
        services: [tcp/5432]
        action: allow
      - name: office-ssh
        from: ip_list:office
        to: has(role)
        services: [tcp/22]
        action: allow
  - name: quarantine-dev
    priority: 100
    rules:
      - name: no-dev
        from: env=dev
        to: any
        action: deny
      - name: dev-may-ssh-db
        from: env=dev
        to: role=db
        services: [tcp/22]
        action: allow
  - name: audit
    mode: monitor
    priority: 200
    rules:
      - name: watch-db-pings
        from: any
        to: role=db
        services: [icmp/8]
        action: deny
  - name: old
    mode: disabled
    rules:
      - from: any
        to: any
        action: allow
default_action: deny
"#;

fn shop() -> PolicyDocument {
    PolicyDocument::from_yaml(SHOP).expect("parses")
}

#[test]
fn the_sample_is_valid_and_compiles_to_its_meaning() {
    let doc = shop();
    let report = doc.validate();
    assert!(report.is_valid(), "{report:?}");
    let compiled = compile(&doc, 3).expect("compiles");
    assert_eq!(compiled.snapshot.generation, 3);
    let decide = |f: FlowKey| {
        let d = compiled.snapshot.decide(&f);
        let name = compiled
            .rule(d.rule_id)
            .map_or("default".to_string(), |r| r.rule.clone());
        (d.pass, d.would_deny, name)
    };
    assert_eq!(
        decide(flow("10.10.1.11", "10.10.2.10", proto::TCP, 8080)),
        (true, false, "web-to-app".into())
    );
    assert_eq!(
        decide(flow("fd00:10::10", "fd00:10::20", proto::ICMPV6, 128 << 8)),
        (true, false, "web-to-app".into()),
        "IPv6 addresses of the same workloads"
    );
    assert_eq!(
        decide(flow("10.10.1.10", "10.10.3.10", proto::TCP, 5432)),
        (false, false, "default".into()),
        "web may not reach db"
    );
    assert_eq!(
        decide(flow("192.0.2.7", "10.10.3.10", proto::TCP, 22)),
        (true, false, "office-ssh".into())
    );
    // Deny over allow within one priority, even when the allow comes first
    // in another policy of that priority, or later in the same policy.
    assert_eq!(
        decide(flow("10.10.9.9", "10.10.3.10", proto::TCP, 22)),
        (false, false, "no-dev".into())
    );
    // Monitor mode: the deny is reported and the flow passes.
    assert_eq!(
        decide(flow("192.0.2.7", "10.10.3.10", proto::ICMP, 8 << 8)),
        (true, true, "watch-db-pings".into())
    );
    // The disabled allow-everything is gone.
    assert_eq!(
        decide(flow("10.10.2.10", "10.10.1.10", proto::UDP, 53)),
        (false, false, "default".into())
    );
    let no_dev = compiled
        .rules
        .iter()
        .find(|r| r.rule == "no-dev")
        .expect("rule");
    assert_eq!(no_dev.path, "policies[1].rules[0]");
    assert_eq!(no_dev.policy, "quarantine-dev");
}

#[test]
fn problems_are_reported_with_their_paths() {
    let bad = r#"
workloads:
  - name: web 1
    addresses: [10.0.0.1, 10.0.0.300]
    labels: {"role": "we b"}
  - name: twin
    addresses: [10.0.0.1]
  - name: twin
ip_lists:
  - name: office
    cidrs: [192.0.2.1/24]
policies:
  - name: p
    rules:
      - from: ip_list:nowhere
        to: role=
        services: [tcp/443, tcp/70000]
        action: allow
      - from: any
        to: any
        services: []
        action: deny
"#;
    let report = PolicyDocument::from_yaml(bad).expect("parses").validate();
    let text: Vec<String> = report.errors.iter().map(Problem::to_string).collect();
    assert_problems(
        &text,
        &[
            "workloads[0].name: name `web 1` must be",
            "workloads[0].addresses[1]: `10.0.0.300` is not an IP address",
            "workloads[0].labels.role: label value `we b`",
            "workloads[1].addresses[0]: 10.0.0.1 also belongs to workload `web 1`",
            "workloads[2].name: workload `twin` is defined twice",
            "ip_lists[0].cidrs[0]: `192.0.2.1/24` has host bits set",
            "policies[0].rules[0].from: no ip_list named `nowhere`",
            "policies[0].rules[0].to: `role=`",
            "policies[0].rules[0].services[1]: `tcp/70000`: port 70000 out of range",
            "policies[0].rules[1].services: empty",
        ],
    );
}

#[test]
fn unknown_keys_and_bad_enums_are_syntax_errors_that_name_the_place() {
    for (text, expected) in [
        ("policies:\n  - name: p\n    prority: 1\n", "prority"),
        ("policies:\n  - name: p\n    mode: audit\n", "mode"),
        ("default_action: permit\n", "permit"),
        ("workloads:\n  - name: w\n    labels: [a]\n", "labels"),
    ] {
        let err = PolicyDocument::from_yaml(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let json = br#"{"policies": [{"name": "p", "rules": [{"from": "any"}]}]}"#;
    let err = PolicyDocument::from_json(json)
        .expect_err("missing to")
        .to_string();
    assert!(err.contains("to"), "{err}");
}

#[test]
fn warnings_for_empty_selectors_and_shadowed_rules() {
    let text = r#"
workloads:
  - name: a
    addresses: [10.0.0.1]
    labels: {role: web}
policies:
  - name: p
    rules:
      - name: all-tcp
        from: any
        to: any
        services: [tcp]
        action: allow
      - name: web-https
        from: role=web
        to: any
        services: [tcp/443]
        action: allow
      - name: ghosts
        from: role=ghost
        to: any
        action: allow
"#;
    let report = PolicyDocument::from_yaml(text).expect("parses").validate();
    assert!(report.is_valid(), "{report:?}");
    let warnings: Vec<String> = report.warnings.iter().map(Problem::to_string).collect();
    let all = warnings.join("\n");
    assert!(
        all.contains("policies[0].rules[2].from: `role=ghost` matches no workload"),
        "{all}"
    );
    assert!(
        all.contains("policies[0].rules[1]: rule `web-https` of policy `p` never matches first"),
        "{all}"
    );
    assert!(all.contains("`all-tcp`"), "{all}");
    assert_eq!(warnings.len(), 2, "{all}");
}

#[test]
fn workloads_added_later_are_bound_by_the_next_compilation() {
    let mut doc = shop();
    let before = compile(&doc, 1).expect("compiles");
    let newcomer = flow("10.10.1.50", "10.10.2.10", proto::TCP, 8080);
    assert!(!before.snapshot.decide(&newcomer).pass);
    doc.workloads.push(Workload {
        name: "web-3".into(),
        addresses: vec!["10.10.1.50".into()],
        labels: [("role", "web"), ("env", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let after = compile(&doc, 2).expect("compiles");
    assert!(after.snapshot.decide(&newcomer).pass);
}

#[test]
fn json_and_yaml_read_the_same_document() {
    let doc = shop();
    let json = serde_json::to_vec(&doc).expect("serializes");
    assert_eq!(PolicyDocument::from_json(&json).expect("parses"), doc);
}

#[test]
fn a_rule_may_override_its_policys_mode() {
    let doc = PolicyDocument::from_yaml(
        r#"
workloads:
  - {name: a, addresses: [10.0.0.1], labels: {role: a}}
  - {name: b, addresses: [10.0.0.2], labels: {role: b}}
policies:
  - name: p
    rules:
      - {name: try-deny, from: role=a, to: role=b, services: [tcp/22], action: deny, mode: monitor}
      - {name: parked, from: role=a, to: role=b, services: [tcp/23], action: deny, mode: disabled}
      - {name: open, from: role=a, to: role=b, services: [tcp/1-1000], action: allow}
"#,
    )
    .expect("document");
    assert!(doc.validate().is_valid(), "{:?}", doc.validate());
    let compiled = compile(&doc, 1).expect("compiles");
    let decide = |port| {
        let d = compiled
            .snapshot
            .judge(&flow("10.0.0.1", "10.0.0.2", proto::TCP, port));
        (
            d.pass,
            d.would_deny,
            compiled.rule(d.rule_id).map(|r| (r.rule.clone(), r.mode)),
        )
    };
    assert_eq!(
        decide(22),
        (true, true, Some(("try-deny".into(), ModeName::Monitor)))
    );
    assert_eq!(
        decide(23),
        (true, false, Some(("open".into(), ModeName::Enforce))),
        "parked rule left out"
    );
    let bad = PolicyDocument::from_yaml(
        "policies:\n  - name: p\n    rules:\n      - {from: any, to: any, action: deny, mode: sometimes}\n",
    );
    let error = bad.expect_err("bad mode").to_string();
    assert!(
        error.contains("mode") || error.contains("sometimes"),
        "{error}"
    );
}
