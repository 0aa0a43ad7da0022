//! ClassBench support: the filter format, the trace format, a deterministic
//! trace generator, and IPv6 rule sets derived from IPv4 ones.
//!
//! Filter lines (first line = highest priority):
//! `@src/len  dst/len  sp_lo : sp_hi  dp_lo : dp_hi  0xPP/0xMM  [0xFLAGS/0xMASK]`.
//! Protocol mask 0xFF is an exact protocol, 0x00 any; flags are ignored.
//! Trace lines: `sip dip sp dp proto [filter#]`, integers (addresses as
//! unsigned 32-bit integers).

use std::net::Ipv4Addr;

pub use super::rng::SplitMix64;
use super::{IpPrefix, PortRange, Rule};
use crate::packet::{AddrFamily, FlowKey};

/// The nine shared ClassBench sets (`../shared/classbench`): three seed
/// families at 1k, 10k and 100k rules, smallest first.
pub const STANDARD_SETS: [&str; 9] = [
    "acl1_1k",
    "fw1_1k",
    "ipc1_1k",
    "acl1_10k",
    "fw1_10k",
    "ipc1_10k",
    "acl1_100k",
    "fw1_100k",
    "ipc1_100k",
];

/// A bad line in a ClassBench file, named by its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ClassBenchError {
    pub line: usize,
    pub message: String,
}

fn bad(line: usize, message: impl Into<String>) -> ClassBenchError {
    ClassBenchError {
        line,
        message: message.into(),
    }
}

/// Parses a ClassBench filter file into rules; `id` is the 0-based rule
/// index, the action is `()`. Blank lines are skipped (and not counted as
/// rules), every other line must be a filter.
pub fn parse_filters(text: &str) -> Result<Vec<Rule<()>>, ClassBenchError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let id = rules.len() as u32;
        rules.push(parse_filter_line(line, id).map_err(|m| bad(i + 1, m))?);
    }
    Ok(rules)
}

fn parse_filter_line(line: &str, id: u32) -> Result<Rule<()>, String> {
    let body = line
        .trim_start()
        .strip_prefix('@')
        .ok_or("a filter starts with '@'")?;
    let tokens: Vec<&str> = body.split_whitespace().collect();
    if tokens.len() < 9 {
        return Err(format!(
            "expected `@src/len dst/len lo : hi lo : hi 0xPP/0xMM`, found {} fields",
            tokens.len()
        ));
    }
    let src = parse_prefix(tokens[0]).map_err(|e| format!("source: {e}"))?;
    let dst = parse_prefix(tokens[1]).map_err(|e| format!("destination: {e}"))?;
    let src_ports = parse_range(&tokens[2..5]).map_err(|e| format!("source ports: {e}"))?;
    let dst_ports = parse_range(&tokens[5..8]).map_err(|e| format!("destination ports: {e}"))?;
    let proto = parse_proto(tokens[8]).map_err(|e| format!("protocol: {e}"))?;
    Ok(Rule {
        id,
        src,
        dst,
        src_ports,
        dst_ports,
        proto,
        action: (),
    })
}

fn parse_prefix(token: &str) -> Result<IpPrefix, String> {
    let (addr, len) = token
        .split_once('/')
        .ok_or_else(|| format!("`{token}` is not addr/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("`{len}` is not a prefix length"))?;
    IpPrefix::new(AddrFamily::V4, u32::from(addr).into(), len).map_err(|e| e.to_string())
}

fn parse_range(tokens: &[&str]) -> Result<PortRange, String> {
    let [lo, colon, hi] = tokens else {
        return Err("expected `lo : hi`".into());
    };
    if *colon != ":" {
        return Err(format!("expected `:` between the bounds, found `{colon}`"));
    }
    let port = |t: &str| {
        t.parse::<u16>()
            .map_err(|_| format!("`{t}` is not a port (0-65535)"))
    };
    PortRange::new(port(lo)?, port(hi)?).map_err(|e| e.to_string())
}

fn parse_proto(token: &str) -> Result<Option<u8>, String> {
    let (value, mask) = token
        .split_once('/')
        .ok_or_else(|| format!("`{token}` is not 0xPP/0xMM"))?;
    let hex = |t: &str| {
        t.strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("`{t}` is not a hex byte like 0x06"))
    };
    match (hex(value)?, hex(mask)?) {
        (p, 0xff) => Ok(Some(p)),
        (_, 0x00) => Ok(None),
        (_, m) => Err(format!(
            "mask 0x{m:02X} unsupported (0xFF exact or 0x00 any)"
        )),
    }
}

/// One trace line: a key and, when the file has it, the expected filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    pub key: FlowKey,
    pub filter: Option<u64>,
}

/// Parses a ClassBench trace (IPv4). Blank lines are skipped.
pub fn parse_trace(text: &str) -> Result<Vec<TraceEntry>, ClassBenchError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        entries.push(parse_trace_line(line).map_err(|m| bad(i + 1, m))?);
    }
    Ok(entries)
}

fn parse_trace_line(line: &str) -> Result<TraceEntry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(format!(
            "expected `sip dip sp dp proto [filter#]`, found {} fields",
            fields.len()
        ));
    }
    fn int<T: std::str::FromStr>(name: &str, t: &str) -> Result<T, String> {
        t.parse()
            .map_err(|_| format!("{name} `{t}` is not an integer in range"))
    }
    let key = FlowKey {
        family: AddrFamily::V4,
        src: u128::from(int::<u32>("source address", fields[0])?),
        dst: u128::from(int::<u32>("destination address", fields[1])?),
        src_port: int("source port", fields[2])?,
        dst_port: int("destination port", fields[3])?,
        proto: int("protocol", fields[4])?,
        ..FlowKey::default()
    };
    let filter = fields.get(5).map(|f| int("filter", f)).transpose()?;
    Ok(TraceEntry { key, filter })
}

/// Formats one trace line (`filter` is written when given).
pub fn format_trace_line(key: &FlowKey, filter: Option<u64>) -> String {
    let mut line = format!(
        "{}\t{}\t{}\t{}\t{}",
        key.src, key.dst, key.src_port, key.dst_port, key.proto
    );
    if let Some(f) = filter {
        line.push_str(&format!("\t{f}"));
    }
    line
}

/// Generates `count` keys: each picks a rule uniformly and a point inside
/// it (corners included); a rule with any protocol gets TCP, UDP, ICMP or a
/// random one. Deterministic for a given seed.
pub fn generate_trace<T>(rules: &[Rule<T>], count: usize, seed: u64) -> Vec<FlowKey> {
    let mut rng = SplitMix64::new(seed);
    if rules.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let rule = &rules[(rng.next_u64() % rules.len() as u64) as usize];
            let (s_lo, s_hi) = rule.src.bounds();
            let (d_lo, d_hi) = rule.dst.bounds();
            let proto = rule.proto.unwrap_or_else(|| match rng.next_u64() % 4 {
                0 => 6,
                1 => 17,
                2 => 1,
                _ => rng.next_u64() as u8,
            });
            FlowKey {
                family: rule.family(),
                src: rng.point(s_lo, s_hi),
                dst: rng.point(d_lo, d_hi),
                src_port: rng.point(rule.src_ports.lo().into(), rule.src_ports.hi().into()) as u16,
                dst_port: rng.point(rule.dst_ports.lo().into(), rule.dst_ports.hi().into()) as u16,
                proto,
                ..FlowKey::default()
            }
        })
        .collect()
}

/// Derives an IPv6 rule set from an IPv4 one, keeping its structure: the
/// IPv4 prefix becomes the top 32 bits of the IPv6 address under the same
/// length, and a /32 is lengthened to a random /33–/128 with random bits
/// below, so IPv6 sets have the long, sparse prefixes real ones have.
pub fn derive_ipv6_rules<T: Clone>(rules: &[Rule<T>], seed: u64) -> Vec<Rule<T>> {
    let mut rng = SplitMix64::new(seed);
    let mut widen = |p: &IpPrefix| -> IpPrefix {
        let (lo, _) = p.bounds();
        let top = lo << 96;
        let (addr, len) = if p.len() == 32 {
            (
                top | (rng.next_u128() >> 32),
                33 + (rng.next_u64() % 96) as u8,
            )
        } else {
            (top, p.len())
        };
        IpPrefix::new(AddrFamily::V6, addr, len).unwrap_or(IpPrefix::any(AddrFamily::V6))
    };
    rules
        .iter()
        .map(|r| Rule {
            src: widen(&r.src),
            dst: widen(&r.dst),
            ..r.clone()
        })
        .collect()
}
