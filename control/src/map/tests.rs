//! The map from hand-made records: nodes, grouping, edge counts and
//! marks, and the DOT and SVG renderings.

use super::*;
use crate::test_support::{endpoint, record};

fn sample() -> Vec<Arc<FlowRecord>> {
    let web1 = || endpoint(Some("web-1"), "10.1.0.1", "web");
    let web2 = || endpoint(Some("web-2"), "10.1.0.4", "web");
    let app = || endpoint(Some("app-1"), "10.1.0.2", "app");
    let outsider = || endpoint(None, "10.9.9.9", "");
    vec![
        record(RecordKind::Start, web1(), app(), 8080, Verdict::Allowed),
        record(RecordKind::End, web1(), app(), 8080, Verdict::Allowed),
        record(RecordKind::Start, web2(), app(), 8080, Verdict::Allowed),
        record(RecordKind::Verdict, outsider(), app(), 22, Verdict::Denied),
        record(RecordKind::Verdict, app(), web1(), 9000, Verdict::WouldDeny),
    ]
}

#[test]
fn one_node_per_workload_and_one_edge_per_service() {
    let map = build(&sample(), &Grouping::default(), None);
    let ids: Vec<&str> = map.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, vec!["10.9.9.9", "app-1", "web-1", "web-2"]);
    assert_eq!(map.nodes[0].kind, NodeKind::External);
    let web_app = map
        .edges
        .iter()
        .find(|e| e.from == "web-1" && e.to == "app-1")
        .expect("web-1 -> app-1");
    // The start counts the flow; the end adds its counters.
    assert_eq!((web_app.flows, web_app.packets, web_app.bytes), (1, 5, 500));
    assert_eq!(web_app.service, "tcp/8080");
    assert!(!web_app.denied && !web_app.would_deny);
    let ssh = map
        .edges
        .iter()
        .find(|e| e.service == "tcp/22")
        .expect("ssh");
    assert!(ssh.denied);
    assert_eq!(ssh.verdicts.get(&Verdict::Denied), Some(&1));
    let monitored = map
        .edges
        .iter()
        .find(|e| e.service == "tcp/9000")
        .expect("9000");
    assert!(monitored.would_deny && !monitored.denied);
    assert_eq!(map.edges.len(), 4);
    assert_eq!(map.records, 5);
}

#[test]
fn grouping_by_labels_merges_workloads() {
    let grouping = Grouping::parse("app, role").expect("keys");
    let map = build(&sample(), &grouping, None);
    let web = map
        .nodes
        .iter()
        .find(|n| n.id == "app=shop,role=web")
        .expect("the web group");
    assert_eq!(web.kind, NodeKind::Group);
    assert_eq!(
        web.workloads.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["web-1", "web-2"]
    );
    let edge = map
        .edges
        .iter()
        .find(|e| e.from == "app=shop,role=web" && e.service == "tcp/8080")
        .expect("web group -> app group");
    assert_eq!(edge.flows, 2, "both web workloads' flows");
    assert!(Grouping::parse("role;drop").is_err());
}

#[test]
fn the_policy_in_force_marks_edges() {
    let judge = |r: &FlowRecord| {
        if r.dport == Some(8080) {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    };
    let map = build(&sample(), &Grouping::default(), Some(&judge));
    for edge in &map.edges {
        let expected = if edge.service == "tcp/8080" {
            Verdict::Allowed
        } else {
            Verdict::Denied
        };
        assert_eq!(edge.policy_now, Some(expected), "{edge:?}");
    }
}

#[test]
fn dot_and_svg_draw_every_node_and_edge_with_its_verdict() {
    let map = build(&sample(), &Grouping::default(), None);
    let dot = to_dot(&map);
    assert!(dot.starts_with("digraph microseg {"), "{dot}");
    assert!(dot.contains("\"web-1\" -> \"app-1\" [label=\"tcp/8080 (allowed, 1 flows)\", color=\"#2e7d32\", style=solid];"), "{dot}");
    assert!(dot.contains("\"10.9.9.9\" -> \"app-1\" [label=\"tcp/22 (denied, 1 flows)\", color=\"#c62828\", style=bold];"), "{dot}");
    assert!(
        dot.contains("\"10.9.9.9\" [label=\"10.9.9.9\", shape=ellipse];"),
        "{dot}"
    );
    let svg = to_svg(&map);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<g class=\"node\"").count(), 4);
    assert_eq!(svg.matches("<g class=\"edge ").count(), 4);
    assert!(svg.contains("data-from=\"10.9.9.9\" data-to=\"app-1\" data-service=\"tcp/22\" data-verdict=\"denied\""), "{svg}");
    assert!(svg.contains("data-verdict=\"would_deny\""), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn names_are_escaped_in_dot_and_svg() {
    let odd = endpoint(Some("a\"<b>&c"), "10.0.0.1", "x");
    let records = vec![record(
        RecordKind::Start,
        odd,
        endpoint(None, "10.0.0.2", ""),
        1,
        Verdict::Allowed,
    )];
    let map = build(&records, &Grouping::default(), None);
    assert!(to_dot(&map).contains("\"a\\\"<b>&c\""));
    let svg = to_svg(&map);
    assert!(svg.contains("a&quot;&lt;b&gt;&amp;c"), "{svg}");
    assert!(!svg.contains("<b>"));
}

#[test]
fn an_empty_map_is_still_a_document() {
    let map = build(&[], &Grouping::default(), None);
    assert!(map.nodes.is_empty() && map.edges.is_empty());
    assert!(to_svg(&map).contains("</svg>"));
    assert_eq!(
        to_dot(&map),
        "digraph microseg {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n}\n"
    );
}
