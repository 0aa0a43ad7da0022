//! The application dependency map: which workloads (or label groups) talk
//! to which, over which services, and what the policy said, drawn from the
//! recorded flows. Served as JSON, Graphviz DOT and SVG (drawn here, so
//! the appliance needs no graphing tool).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::flows::{Endpoint, FlowRecord, RecordKind, Verdict};

/// How nodes are formed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    /// Label keys: nodes are the groups of workloads with equal values
    /// (`app=shop,role=web`). Empty: one node per workload.
    pub by: Vec<String>,
}

impl Grouping {
    /// `app,role` (keys separated by commas).
    pub fn parse(text: &str) -> Result<Self, String> {
        let by: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        if by.iter().any(|k| {
            !k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        }) {
            return Err(format!(
                "`{text}` is not a comma-separated list of label keys"
            ));
        }
        Ok(Self { by })
    }

    /// The node an endpoint belongs to: (id, kind).
    fn node_of(&self, endpoint: &Endpoint) -> (String, NodeKind) {
        match &endpoint.workload {
            None => (endpoint.address.clone(), NodeKind::External),
            Some(name) if self.by.is_empty() => (name.clone(), NodeKind::Workload),
            Some(_) => {
                let id = self
                    .by
                    .iter()
                    .map(|key| {
                        format!(
                            "{key}={}",
                            endpoint.labels.get(key).map_or("?", String::as_str)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                (id, NodeKind::Group)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Workload,
    Group,
    /// An address no workload has.
    External,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    /// Workloads in the node (one for a workload node).
    pub workloads: BTreeSet<String>,
    pub addresses: BTreeSet<String>,
}

/// Observed traffic from one node to another on one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub service: String,
    /// Flows seen (connections started, and verdicts on flows that made
    /// no connection).
    pub flows: u64,
    /// Flows by verdict.
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Packets and bytes of ended and long connections.
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ms: u64,
    /// Some flows here were denied or cut.
    pub denied: bool,
    /// Some flows here passed only because of monitor mode.
    pub would_deny: bool,
    /// What the policy in force says about this edge now (a flow of it
    /// judged again); None when no policy was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_now: Option<Verdict>,
}

/// The map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DependencyMap {
    pub group_by: Vec<String>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Flow records the map was drawn from.
    pub records: usize,
}

/// Draws the map from `records`; `judge` (if given) says what the policy
/// in force would do with a flow now.
pub fn build(
    records: &[Arc<FlowRecord>],
    grouping: &Grouping,
    judge: Option<&dyn Fn(&FlowRecord) -> Verdict>,
) -> DependencyMap {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, String), (Edge, Arc<FlowRecord>)> = BTreeMap::new();
    for record in records {
        let mut ids = Vec::with_capacity(2);
        for endpoint in [&record.src, &record.dst] {
            let (id, kind) = grouping.node_of(endpoint);
            let node = nodes.entry(id.clone()).or_insert_with(|| Node {
                id: id.clone(),
                kind,
                workloads: BTreeSet::new(),
                addresses: BTreeSet::new(),
            });
            node.workloads.extend(endpoint.workload.clone());
            node.addresses.insert(endpoint.address.clone());
            ids.push(id);
        }
        let service = record.service();
        let key = (ids[0].clone(), ids[1].clone(), service.clone());
        let (edge, _) = edges.entry(key).or_insert_with(|| {
            (
                Edge {
                    from: ids[0].clone(),
                    to: ids[1].clone(),
                    service,
                    flows: 0,
                    verdicts: BTreeMap::new(),
                    packets: 0,
                    bytes: 0,
                    last_seen_ms: 0,
                    denied: false,
                    would_deny: false,
                    policy_now: None,
                },
                Arc::clone(record),
            )
        });
        if record.opens_flow() {
            edge.flows += 1;
            *edge.verdicts.entry(record.verdict).or_default() += 1;
        }
        if record.kind == RecordKind::End {
            edge.packets += record.packets.iter().sum::<u64>();
            edge.bytes += record.bytes.iter().sum::<u64>();
        }
        edge.last_seen_ms = edge.last_seen_ms.max(record.time_ms);
        edge.denied |= matches!(record.verdict, Verdict::Denied | Verdict::Cut);
        edge.would_deny |= record.verdict == Verdict::WouldDeny;
    }
    let edges = edges
        .into_values()
        .map(|(mut edge, sample)| {
            edge.policy_now = judge.map(|judge| judge(&sample));
            edge
        })
        .collect();
    DependencyMap {
        group_by: grouping.by.clone(),
        nodes: nodes.into_values().collect(),
        edges,
        records: records.len(),
    }
}

/// How an edge is drawn: its color and line style.
fn edge_style(edge: &Edge) -> (&'static str, &'static str, &'static str) {
    // (color, DOT style, SVG dash pattern)
    match edge.policy_now {
        Some(Verdict::Denied | Verdict::Cut) => ("#c62828", "bold", ""),
        Some(Verdict::WouldDeny) => ("#ef6c00", "dashed", "6 4"),
        _ if edge.denied => ("#c62828", "bold", ""),
        _ if edge.would_deny => ("#ef6c00", "dashed", "6 4"),
        _ => ("#2e7d32", "solid", ""),
    }
}

fn edge_verdict(edge: &Edge) -> &'static str {
    match edge.policy_now {
        Some(verdict) => verdict.name(),
        None if edge.denied => "denied",
        None if edge.would_deny => "would_deny",
        None => "allowed",
    }
}

/// `"` and `\` escaped for a DOT string.
fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT.
pub fn to_dot(map: &DependencyMap) -> String {
    let mut dot =
        String::from("digraph microseg {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for node in &map.nodes {
        let shape = if node.kind == NodeKind::External {
            ", shape=ellipse"
        } else {
            ""
        };
        let _ = writeln!(
            dot,
            "  {} [label={}{shape}];",
            dot_quote(&node.id),
            dot_quote(&node.id)
        );
    }
    for edge in &map.edges {
        let (color, style, _) = edge_style(edge);
        let label = format!(
            "{} ({}, {} flows)",
            edge.service,
            edge_verdict(edge),
            edge.flows
        );
        let _ = writeln!(
            dot,
            "  {} -> {} [label={}, color=\"{color}\", style={style}];",
            dot_quote(&edge.from),
            dot_quote(&edge.to),
            dot_quote(&label)
        );
    }
    dot.push_str("}\n");
    dot
}

/// `&`, `<`, `>`, `"` escaped for SVG text and attributes.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// SVG: nodes on a circle, edges as arrows colored by verdict (green
/// allowed, red denied, dashed orange would-deny), labelled with their
/// service.
pub fn to_svg(map: &DependencyMap) -> String {
    let n = map.nodes.len().max(1);
    let radius = 60.0 + 40.0 * n as f64;
    let (width, height) = (2.0 * radius + 320.0, 2.0 * radius + 160.0);
    let (cx, cy) = (width / 2.0, height / 2.0);
    let position = |i: usize| {
        let angle = std::f64::consts::TAU * i as f64 / n as f64 - std::f64::consts::FRAC_PI_2;
        (cx + radius * angle.cos(), cy + radius * angle.sin())
    };
    let index: BTreeMap<&str, usize> = map
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.as_str(), i))
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"microseg-map\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"13\">\n"
    );
    svg.push_str("  <defs>\n");
    for (name, color) in [
        ("allowed", "#2e7d32"),
        ("denied", "#c62828"),
        ("would_deny", "#ef6c00"),
    ] {
        let _ = writeln!(
            svg,
            "    <marker id=\"arrow-{name}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker>"
        );
    }
    svg.push_str("  </defs>\n");
    // Parallel edges between one pair are fanned out by their rank.
    let mut rank: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for edge in &map.edges {
        let (Some(&a), Some(&b)) = (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        else {
            continue;
        };
        let (color, _, dash) = edge_style(edge);
        let verdict = match color {
            "#c62828" => "denied",
            "#ef6c00" => "would_deny",
            _ => "allowed",
        };
        let k = {
            let slot = rank.entry((a.min(b), a.max(b))).or_default();
            *slot += 1;
            *slot as f64
        };
        let ((x1, y1), (x2, y2)) = (position(a), position(b));
        let (dx, dy) = (x2 - x1, y2 - y1);
        let length = (dx * dx + dy * dy).sqrt().max(1.0);
        // Stop short of the node boxes; bend by rank (and direction).
        let (ux, uy) = (dx / length, dy / length);
        let (sx, sy, ex, ey) = (
            x1 + ux * 36.0,
            y1 + uy * 22.0,
            x2 - ux * 36.0,
            y2 - uy * 22.0,
        );
        let bend = 25.0 * k * if a < b { 1.0 } else { -1.0 };
        let (mx, my) = ((sx + ex) / 2.0 - uy * bend, (sy + ey) / 2.0 + ux * bend);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let _ = writeln!(
            svg,
            "  <g class=\"edge {verdict}\" data-from=\"{}\" data-to=\"{}\" data-service=\"{}\" data-verdict=\"{verdict}\"><path d=\"M{sx:.1},{sy:.1} Q{mx:.1},{my:.1} {ex:.1},{ey:.1}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash_attr} marker-end=\"url(#arrow-{verdict})\"/><text x=\"{mx:.1}\" y=\"{my:.1}\" fill=\"{color}\" text-anchor=\"middle\">{} ({})</text></g>",
            xml_escape(&edge.from),
            xml_escape(&edge.to),
            xml_escape(&edge.service),
            xml_escape(&edge.service),
            edge.flows
        );
    }
    for (i, node) in map.nodes.iter().enumerate() {
        let (x, y) = position(i);
        let fill = if node.kind == NodeKind::External {
            "#eeeeee"
        } else {
            "#e3f2fd"
        };
        let label = xml_escape(&node.id);
        let width = 16.0 + 7.5 * node.id.chars().count() as f64;
        let _ = writeln!(
            svg,
            "  <g class=\"node\" data-id=\"{label}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"28\" rx=\"8\" fill=\"{fill}\" stroke=\"#1565c0\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text></g>",
            x - width / 2.0,
            y - 14.0,
            y + 5.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests;
