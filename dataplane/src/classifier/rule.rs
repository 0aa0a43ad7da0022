//! Classifier rules: the 5-tuple match (prefixes, port ranges, protocol) and
//! the payload returned on a match. Invalid ranges cannot be constructed.

use std::fmt;
use std::net::IpAddr;

use crate::packet::{AddrFamily, FlowKey};

/// Errors constructing a rule field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("prefix length {len} exceeds {max} for {family:?}")]
    PrefixTooLong {
        family: AddrFamily,
        len: u8,
        max: u8,
    },
    #[error("port range {lo}-{hi} is empty (lo > hi)")]
    EmptyPortRange { lo: u16, hi: u16 },
}

/// An IPv4 or IPv6 prefix. Host bits beyond the length are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    family: AddrFamily,
    addr: u128,
    len: u8,
}

impl IpPrefix {
    /// A prefix of `addr` (IPv4 in the low 32 bits) and `len` bits.
    pub fn new(family: AddrFamily, addr: u128, len: u8) -> Result<Self, RuleError> {
        let max = family_bits(family);
        if len > max {
            return Err(RuleError::PrefixTooLong { family, len, max });
        }
        let (lo, _) = prefix_bounds(family, addr, len);
        Ok(Self {
            family,
            addr: lo,
            len,
        })
    }

    /// A prefix from a std address.
    pub fn from_ip(ip: IpAddr, len: u8) -> Result<Self, RuleError> {
        let (family, addr) = crate::packet::ip_to_u128(ip);
        Self::new(family, addr, len)
    }

    /// The whole address space of `family` (/0).
    pub fn any(family: AddrFamily) -> Self {
        Self {
            family,
            addr: 0,
            len: 0,
        }
    }

    pub fn family(&self) -> AddrFamily {
        self.family
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// Is this the /0 prefix?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// First and last address covered, in the key's `u128` form.
    pub fn bounds(&self) -> (u128, u128) {
        prefix_bounds(self.family, self.addr, self.len)
    }

    /// Does the prefix contain `addr`?
    pub fn contains(&self, addr: u128) -> bool {
        let (lo, hi) = self.bounds();
        lo <= addr && addr <= hi
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = match self.family {
            AddrFamily::V4 => IpAddr::V4((self.addr as u32).into()),
            AddrFamily::V6 => IpAddr::V6(self.addr.into()),
        };
        write!(f, "{ip}/{}", self.len)
    }
}

/// Bits in an address of `family`.
pub fn family_bits(family: AddrFamily) -> u8 {
    match family {
        AddrFamily::V4 => 32,
        AddrFamily::V6 => 128,
    }
}

fn prefix_bounds(family: AddrFamily, addr: u128, len: u8) -> (u128, u128) {
    let bits = u32::from(family_bits(family));
    let host_bits = bits - u32::from(len.min(family_bits(family)));
    let space_mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let lo = addr & space_mask & !host_mask;
    (lo, lo | host_mask)
}

/// An inclusive port range (also used for ICMP `type << 8 | code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn new(lo: u16, hi: u16) -> Result<Self, RuleError> {
        if lo > hi {
            return Err(RuleError::EmptyPortRange { lo, hi });
        }
        Ok(Self { lo, hi })
    }

    /// One port.
    pub fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    pub fn lo(&self) -> u16 {
        self.lo
    }

    pub fn hi(&self) -> u16 {
        self.hi
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// One classifier rule. Position in the rule list is its priority: the
/// first matching rule wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<T> {
    /// Caller's identifier, returned with matches (e.g. the policy rule id).
    pub id: u32,
    pub src: IpPrefix,
    pub dst: IpPrefix,
    pub src_ports: PortRange,
    pub dst_ports: PortRange,
    /// `None` matches every protocol.
    pub proto: Option<u8>,
    pub action: T,
}

impl<T> Rule<T> {
    /// Does the rule match the key? (The linear reference's definition of a
    /// match, which the compiled classifier must reproduce.)
    pub fn matches(&self, key: &FlowKey) -> bool {
        self.src.family == key.family
            && self.src.contains(key.src)
            && self.dst.contains(key.dst)
            && self.src_ports.contains(key.src_port)
            && self.dst_ports.contains(key.dst_port)
            && self.proto.is_none_or(|p| p == key.proto)
    }

    /// The family the rule applies to (its prefixes agree; `build` checks).
    pub fn family(&self) -> AddrFamily {
        self.src.family
    }
}
