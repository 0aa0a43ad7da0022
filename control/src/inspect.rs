//! `microseg explain`, `microseg flows` and `microseg quarantine`: the CLI
//! side of visibility and response, through the API. Text for people by
//! default, the API's JSON with `--json`.

use std::io::Write;

use serde_json::Value;

use crate::client::{percent_encode, query_string, Client, ClientError};
use crate::quarantine::{BreakGlass, QuarantineRequest};

/// What `explain` asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// A recorded flow, by id.
    Flow(u64),
    /// Endpoints (workload names or addresses) and a service.
    Flow5 {
        src: String,
        dst: String,
        /// `tcp/PORT`, `udp/PORT`, `icmp`, `icmp/TYPE`, ...
        service: Option<String>,
        sport: Option<u16>,
    },
}

impl Question {
    /// The API query for this question.
    pub fn query(&self) -> String {
        let pairs: Vec<(&str, String)> = match self {
            Question::Flow(id) => vec![("flow", id.to_string())],
            Question::Flow5 {
                src,
                dst,
                service,
                sport,
            } => {
                let mut pairs = vec![("src", src.clone()), ("dst", dst.clone())];
                if let Some(service) = service {
                    let (proto, port) = match service.split_once('/') {
                        Some((proto, port)) => (proto, Some(port)),
                        None => (service.as_str(), None),
                    };
                    pairs.push(("proto", proto.to_string()));
                    if let Some(port) = port {
                        pairs.push(("dport", port.to_string()));
                    }
                }
                if let Some(sport) = sport {
                    pairs.push(("sport", sport.to_string()));
                }
                pairs
            }
        };
        query_string(&pairs)
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `web-1 (10.1.0.1)`, or the bare address.
fn endpoint(value: &Value) -> String {
    match value["workload"].as_str() {
        Some(name) => format!("{name} ({})", text(&value["address"])),
        None => text(&value["address"]),
    }
}

/// `shop/web-to-app (policies[0].rules[0], allow, enforce)`.
fn rule(value: &Value) -> String {
    format!(
        "{}/{} ({}, {}, {})",
        text(&value["policy"]),
        text(&value["rule"]),
        text(&value["path"]),
        text(&value["action"]),
        text(&value["mode"])
    )
}

/// `microseg explain`.
pub fn explain(
    client: &Client,
    question: &Question,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let (answer, _) = client.json(
        "GET",
        &format!("/v1/explain?{}", question.query()),
        None,
        &[],
    )?;
    if json {
        return Ok(writeln!(out, "{answer}")?);
    }
    write_explanation(&answer, out)
}

fn write_explanation(answer: &Value, out: &mut impl Write) -> Result<(), ClientError> {
    let q = &answer["question"];
    writeln!(
        out,
        "{} -> {}, proto {} port {} (source port {}): {}",
        endpoint(&answer["src"]),
        endpoint(&answer["dst"]),
        text(&q["proto"]),
        text(&q["dport"]),
        text(&q["sport"]),
        text(&answer["verdict"]).to_uppercase()
    )?;
    match answer["decided_by"].is_null() {
        false => writeln!(out, "  decided by   {}", rule(&answer["decided_by"]))?,
        true => writeln!(
            out,
            "  decided by   the default action ({}): no rule matches",
            text(&answer["default_action"])
        )?,
    }
    for shadowed in answer["also_matching"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  also matches {} (never decides this flow)",
            rule(shadowed)
        )?;
    }
    let connection = &answer["connection"];
    if connection.is_null() {
        writeln!(out, "  connection   none tracked")?;
    } else {
        writeln!(
            out,
            "  connection   {}, packets {} / {} (opener / replies), admitted by generation {}{}",
            text(&connection["state"]),
            text(&connection["packets"][0]),
            text(&connection["packets"][1]),
            text(&connection["generation"]),
            if connection["admitted_by"].is_null() {
                String::new()
            } else {
                format!(", {}", rule(&connection["admitted_by"]))
            }
        )?;
    }
    writeln!(out, "  policy generation {}", text(&answer["generation"]))?;
    Ok(())
}

/// `microseg report`: the reachability report (Markdown, or the API's
/// JSON with `json`).
pub fn reachability_report(
    client: &Client,
    from: &str,
    to: &str,
    json: bool,
) -> Result<String, ClientError> {
    let body = serde_json::json!({ "from": from, "to": to }).to_string();
    let path = if json {
        "/v1/reachability"
    } else {
        "/v1/reachability?format=markdown"
    };
    let reply = client.request(
        "POST",
        path,
        Some(("application/json", body.as_bytes())),
        &[],
    )?;
    String::from_utf8(reply.body).map_err(|e| ClientError::Reply(e.to_string()))
}

/// What `flows` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowQuery {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub verdict: Option<String>,
    pub limit: usize,
}

/// `microseg flows`.
pub fn flows(
    client: &Client,
    query: &FlowQuery,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut pairs = vec![("limit", query.limit.to_string())];
    for (name, value) in [
        ("src", &query.src),
        ("dst", &query.dst),
        ("verdict", &query.verdict),
    ] {
        if let Some(value) = value {
            pairs.push((name, value.clone()));
        }
    }
    let (reply, _) = client.json(
        "GET",
        &format!("/v1/flows?{}", query_string(&pairs)),
        None,
        &[],
    )?;
    if json {
        return Ok(writeln!(out, "{reply}")?);
    }
    writeln!(
        out,
        "{:>6}  {:<6}  {:<10}  {:<28}  {:<28}  {:<10}  rule",
        "id", "kind", "verdict", "from", "to", "service"
    )?;
    for flow in reply["flows"].as_array().into_iter().flatten() {
        let service = match (&flow["dport"], &flow["icmp_type"]) {
            (Value::Number(port), _) => format!("{}/{port}", text(&flow["proto"])),
            (_, Value::Number(kind)) => format!("{}/{kind}", text(&flow["proto"])),
            _ => text(&flow["proto"]),
        };
        let decided = if flow["default"] == true {
            "(default)".to_string()
        } else {
            format!("{}/{}", text(&flow["policy"]), text(&flow["rule"]))
        };
        writeln!(
            out,
            "{:>6}  {:<6}  {:<10}  {:<28}  {:<28}  {:<10}  {decided}",
            text(&flow["id"]),
            text(&flow["kind"]),
            text(&flow["verdict"]),
            endpoint(&flow["src"]),
            endpoint(&flow["dst"]),
            service
        )?;
    }
    let lost = &reply["lost"];
    let lost_total: u64 = ["verdict_queue", "flow_queue", "store_evicted", "stream"]
        .iter()
        .filter_map(|k| lost[k].as_u64())
        .sum();
    if lost_total > 0 {
        writeln!(out, "events lost: {lost}")?;
    }
    Ok(())
}

/// A quarantine request from the command line; `allow` holds
/// `FROM=SERVICE[,SERVICE]` break-glass entries.
pub fn quarantine_request(
    target: String,
    ttl_seconds: Option<u64>,
    reason: Option<String>,
    allow: &[String],
) -> Result<QuarantineRequest, ClientError> {
    let break_glass = allow
        .iter()
        .map(|entry| {
            let (from, services) = entry
                .rsplit_once('=')
                .ok_or_else(|| ClientError::Document {
                    path: format!("--allow {entry}"),
                    message: "write FROM=SERVICE[,SERVICE], e.g. role=jump=tcp/22".into(),
                })?;
            Ok(BreakGlass {
                from: from.to_string(),
                services: services.split(',').map(|s| s.trim().to_string()).collect(),
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    Ok(QuarantineRequest {
        target,
        ttl_seconds,
        reason,
        break_glass,
    })
}

fn write_quarantine(out: &mut impl Write, q: &Value) -> Result<(), ClientError> {
    let addresses: Vec<String> = q["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    write!(
        out,
        "{} ({}) since {} by {}",
        text(&q["target"]),
        addresses.join(", "),
        text(&q["since"]),
        text(&q["who"])
    )?;
    if !q["expires"].is_null() {
        write!(out, ", expires {}", text(&q["expires"]))?;
    }
    if !q["reason"].is_null() {
        write!(out, ": {}", text(&q["reason"]))?;
    }
    for glass in q["break_glass"].as_array().into_iter().flatten() {
        write!(
            out,
            "; still allowed from {} to {}",
            text(&glass["from"]),
            glass["services"]
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// `microseg quarantine add`.
pub fn quarantine_add(
    client: &Client,
    request: &QuarantineRequest,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let body = serde_json::to_vec(request).map_err(|e| ClientError::Reply(e.to_string()))?;
    let (done, _) = client.json(
        "POST",
        "/v1/quarantine",
        Some(("application/json", &body)),
        &[],
    )?;
    if json {
        return Ok(writeln!(out, "{done}")?);
    }
    write!(out, "quarantined: ")?;
    write_quarantine(out, &done["quarantine"])?;
    writeln!(
        out,
        "in force: policy generation {}, {} connection(s) cut",
        text(&done["generation"]),
        text(&done["connections_cut"])
    )?;
    Ok(())
}

/// `microseg quarantine list`.
pub fn quarantine_list(
    client: &Client,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let (list, _) = client.json("GET", "/v1/quarantine", None, &[])?;
    if json {
        return Ok(writeln!(out, "{list}")?);
    }
    let entries = list.as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        writeln!(out, "nothing is quarantined")?;
    }
    for q in &entries {
        write_quarantine(out, q)?;
    }
    Ok(())
}

/// `microseg quarantine lift`.
pub fn quarantine_lift(
    client: &Client,
    target: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let path = format!("/v1/quarantine/{}", percent_encode(target));
    let (done, _) = client.json("DELETE", &path, None, &[])?;
    if json {
        return Ok(writeln!(out, "{done}")?);
    }
    writeln!(
        out,
        "lifted: {} (policy generation {})",
        text(&done["quarantine"]["target"]),
        text(&done["generation"])
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_become_encoded_queries() {
        let q = Question::Flow5 {
            src: "web-1".into(),
            dst: "fd00::2".into(),
            service: Some("tcp/8080".into()),
            sport: Some(40000),
        };
        assert_eq!(
            q.query(),
            "src=web-1&dst=fd00%3A%3A2&proto=tcp&dport=8080&sport=40000"
        );
        let icmp = Question::Flow5 {
            src: "a".into(),
            dst: "b".into(),
            service: Some("icmp".into()),
            sport: None,
        };
        assert_eq!(icmp.query(), "src=a&dst=b&proto=icmp");
        assert_eq!(Question::Flow(7).query(), "flow=7");
    }

    #[test]
    fn break_glass_flags_are_parsed_and_bad_ones_named() {
        let request = quarantine_request(
            "app-1".into(),
            Some(60),
            None,
            &[
                "role=jump=tcp/22,tcp/2222".into(),
                "10.0.0.9/32=icmp".into(),
            ],
        )
        .expect("valid");
        assert_eq!(request.break_glass[0].from, "role=jump");
        assert_eq!(request.break_glass[0].services, vec!["tcp/22", "tcp/2222"]);
        assert_eq!(request.break_glass[1].from, "10.0.0.9/32");
        let error =
            quarantine_request("x".into(), None, None, &["tcp/22".into()]).expect_err("no FROM");
        assert!(error.to_string().contains("--allow tcp/22"), "{error}");
    }

    #[test]
    fn an_explanation_reads_as_text() {
        let answer: Value = serde_json::json!({
            "question": {"src": "10.1.0.1", "dst": "10.1.0.2", "proto": 6, "sport": 49152, "dport": 8080},
            "src": {"address": "10.1.0.1", "workload": "web-1"},
            "dst": {"address": "10.1.0.2"},
            "verdict": "allowed",
            "generation": 3,
            "decided_by": {"policy": "shop", "rule": "web-to-app", "path": "policies[0].rules[0]", "action": "allow", "mode": "enforce"},
            "also_matching": [{"policy": "lockdown", "rule": "app-ports", "path": "policies[1].rules[0]", "action": "deny", "mode": "enforce"}],
            "connection": null
        });
        let mut out = Vec::new();
        write_explanation(&answer, &mut out).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with(
                "web-1 (10.1.0.1) -> 10.1.0.2, proto 6 port 8080 (source port 49152): ALLOWED\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("decided by   shop/web-to-app (policies[0].rules[0], allow, enforce)"),
            "{text}"
        );
        assert!(text.contains("also matches lockdown/app-ports"), "{text}");
        assert!(text.contains("connection   none tracked"), "{text}");
    }
}
