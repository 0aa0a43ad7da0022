//! The small grammars shared by the rules file and (later) the policy
//! language: CIDRs (`10.0.0.0/8`, `fd00::1`, `any`) and services
//! (`tcp/443`, `udp/5000-5100`, `icmp/8`, `icmpv6/128`, `icmp/3/4`, `any`).
//! Errors say what was wrong with the text, so callers only add the path.

use std::net::IpAddr;

use microseg_dataplane::classifier::{IpPrefix, PortRange};
use microseg_dataplane::packet::{proto, AddrFamily};

/// An address match: everything, or one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressMatch {
    Any,
    Prefix(IpPrefix),
}

/// Parses `any`, an address (a host prefix) or `address/len`. Host bits
/// past the length are an error: `10.0.0.1/24` is more likely a typo than
/// a wish for the whole /24.
pub fn parse_cidr(text: &str) -> Result<AddressMatch, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("any") {
        return Ok(AddressMatch::Any);
    }
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}`: prefix length must be 0..={max}"))?,
    };
    let prefix = IpPrefix::from_ip(ip, len).map_err(|e| format!("`{text}`: {e}"))?;
    let (_, exact) = microseg_dataplane::packet::ip_to_u128(ip);
    if prefix.bounds().0 != exact {
        return Err(format!(
            "`{text}` has host bits set past /{len} (the network is {})",
            prefix_text(&prefix)
        ));
    }
    Ok(AddressMatch::Prefix(prefix))
}

/// A prefix as text (`10.0.0.0/8`).
pub fn prefix_text(prefix: &IpPrefix) -> String {
    let (lo, _) = prefix.bounds();
    let ip = microseg_dataplane::packet::u128_to_ip(prefix.family(), lo);
    format!("{ip}/{}", prefix.len())
}

/// A service: protocol and the destination ports (for ICMP: the
/// type/code range the classifier keys on, `type << 8 | code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// None: every protocol.
    pub proto: Option<u8>,
    pub ports: PortRange,
    /// The family an ICMP flavour implies (icmp: IPv4, icmpv6: IPv6).
    pub family: Option<AddrFamily>,
}

impl Service {
    pub const ANY: Service = Service {
        proto: None,
        ports: PortRange::ANY,
        family: None,
    };
}

/// Parses a service (see the module header).
pub fn parse_service(text: &str) -> Result<Service, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("any") {
        return Ok(Service::ANY);
    }
    let (name, rest) = text.split_once('/').unwrap_or((text, ""));
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "tcp" | "udp" | "sctp" => {
            let number = match name.as_str() {
                "tcp" => proto::TCP,
                "udp" => proto::UDP,
                _ => proto::SCTP,
            };
            let ports = if rest.is_empty() || rest == "any" {
                PortRange::ANY
            } else {
                parse_port_range(rest).map_err(|e| format!("`{text}`: {e}"))?
            };
            Ok(Service {
                proto: Some(number),
                ports,
                family: None,
            })
        }
        "icmp" | "icmpv6" => {
            let (number, family) = if name == "icmp" {
                (proto::ICMP, AddrFamily::V4)
            } else {
                (proto::ICMPV6, AddrFamily::V6)
            };
            let ports = parse_icmp(rest).map_err(|e| format!("`{text}`: {e}"))?;
            Ok(Service {
                proto: Some(number),
                ports,
                family: Some(family),
            })
        }
        _ => Err(format!(
            "`{text}`: unknown protocol `{name}` (use tcp, udp, sctp, icmp, icmpv6 or any)"
        )),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a port number"))?;
    u16::try_from(value).map_err(|_| format!("port {value} out of range (0-65535)"))
}

/// `80` or `5000-5100`.
pub fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let port = parse_port(text)?;
            (port, port)
        }
    };
    PortRange::new(lo, hi).map_err(|e| e.to_string())
}

/// `` (any), `8` (a type, any code) or `3/4` (type and code).
fn parse_icmp(text: &str) -> Result<PortRange, String> {
    let byte = |t: &str, what: &str| -> Result<u16, String> {
        t.trim()
            .parse::<u8>()
            .map(u16::from)
            .map_err(|_| format!("ICMP {what} `{t}` must be 0-255"))
    };
    if text.is_empty() || text == "any" {
        return Ok(PortRange::ANY);
    }
    let range = match text.split_once('/') {
        Some((kind, code)) => {
            let value = (byte(kind, "type")? << 8) | byte(code, "code")?;
            PortRange::single(value)
        }
        None => {
            let kind = byte(text, "type")?;
            PortRange::new(kind << 8, (kind << 8) | 0xff).map_err(|e| e.to_string())?
        }
    };
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_bad_ones_say_why() {
        assert_eq!(parse_cidr("any"), Ok(AddressMatch::Any));
        let AddressMatch::Prefix(p) = parse_cidr("10.1.0.0/16").expect("valid") else {
            panic!("a prefix")
        };
        assert_eq!((p.family(), p.len()), (AddrFamily::V4, 16));
        let AddressMatch::Prefix(host) = parse_cidr("fd00::1").expect("valid") else {
            panic!("a prefix")
        };
        assert_eq!((host.family(), host.len()), (AddrFamily::V6, 128));
        assert_eq!(prefix_text(&p), "10.1.0.0/16");
        let err = parse_cidr("10.1.2.3/16").expect_err("host bits");
        assert!(err.contains("10.1.0.0/16"), "{err}");
        assert!(parse_cidr("10.1.0.0/33")
            .expect_err("len")
            .contains("0..=32"));
        assert!(parse_cidr("web").expect_err("name").contains("not an IP"));
    }

    #[test]
    fn services_parse_and_bad_ones_say_why() {
        let tcp = parse_service("tcp/443").expect("valid");
        assert_eq!(
            (tcp.proto, tcp.ports),
            (Some(proto::TCP), PortRange::single(443))
        );
        let udp = parse_service("UDP/5000-5100").expect("valid");
        assert_eq!(udp.ports, PortRange::new(5000, 5100).expect("range"));
        let echo = parse_service("icmp/8").expect("valid");
        assert_eq!(echo.ports, PortRange::new(0x800, 0x8ff).expect("range"));
        assert_eq!(echo.family, Some(AddrFamily::V4));
        let unreachable = parse_service("icmpv6/1/4").expect("valid");
        assert_eq!(unreachable.ports, PortRange::single(0x104));
        assert_eq!(parse_service("any"), Ok(Service::ANY));
        let all_tcp = parse_service("tcp").expect("valid");
        assert_eq!(all_tcp.ports, PortRange::ANY);
        assert!(parse_service("tcp/70000")
            .expect_err("range")
            .contains("port 70000 out of range"));
        assert!(parse_service("tcp/90-80")
            .expect_err("empty")
            .contains("empty"));
        assert!(parse_service("gre/1")
            .expect_err("proto")
            .contains("unknown protocol"));
        assert!(parse_service("icmp/300")
            .expect_err("type")
            .contains("0-255"));
    }
}
