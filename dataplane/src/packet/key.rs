//! The flow key: the compact, hashable summary of one IP packet that the
//! classifier and conntrack work on.
//!
//! Addresses are stored as `u128` for both families (IPv4 in the low 32
//! bits, tagged by [`AddrFamily`]) so that lookups compare integers, never
//! byte slices, and one key type serves IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum AddrFamily {
    #[default]
    V4 = 4,
    V6 = 6,
}

/// VLAN tags of a frame; 0 means absent (VID 0 is a priority tag, which is
/// untagged for switching purposes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VlanTags {
    /// The outer (service, 802.1ad) tag in a QinQ frame, else 0.
    pub outer: u16,
    /// The customer tag: the only tag of an 802.1Q frame, the inner of QinQ.
    pub inner: u16,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FragmentKind {
    /// Not fragmented (includes IPv6 atomic fragments).
    #[default]
    Whole,
    /// Offset 0 with more fragments to come: carries the L4 header.
    First,
    /// Offset > 0: no L4 header, ports are zero.
    Later,
}

/// Fragment details, enough to match later fragments to their first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentInfo {
    pub kind: FragmentKind,
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset_bytes: u16,
    /// The More Fragments flag.
    pub more: bool,
}

/// The 5-tuple plus context of one IP packet.
///
/// ICMP and ICMPv6 reuse the port fields: `src_port` is the echo identifier
/// (0 for non-echo messages) and `dst_port` is `type << 8 | code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub ingress_port: u16,
    pub vlan: VlanTags,
    pub family: AddrFamily,
    /// Source address; IPv4 in the low 32 bits.
    pub src: u128,
    /// Destination address; IPv4 in the low 32 bits.
    pub dst: u128,
    /// IP protocol (the upper-layer protocol after IPv6 extension headers).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    pub fragment: FragmentInfo,
}

impl FlowKey {
    /// The source address as a std address.
    pub fn src_ip(&self) -> IpAddr {
        u128_to_ip(self.family, self.src)
    }

    /// The destination address as a std address.
    pub fn dst_ip(&self) -> IpAddr {
        u128_to_ip(self.family, self.dst)
    }

    /// ICMP/ICMPv6 type, when the key is an ICMP key.
    pub fn icmp_type(&self) -> Option<u8> {
        self.is_icmp().then_some((self.dst_port >> 8) as u8)
    }

    /// ICMP/ICMPv6 code, when the key is an ICMP key.
    pub fn icmp_code(&self) -> Option<u8> {
        self.is_icmp().then_some((self.dst_port & 0xff) as u8)
    }

    fn is_icmp(&self) -> bool {
        matches!(
            (self.family, self.proto),
            (AddrFamily::V4, super::proto::ICMP) | (AddrFamily::V6, super::proto::ICMPV6)
        )
    }
}

/// Encodes an address as the key's `u128` form.
pub fn ip_to_u128(ip: IpAddr) -> (AddrFamily, u128) {
    match ip {
        IpAddr::V4(v4) => (AddrFamily::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (AddrFamily::V6, u128::from(v6)),
    }
}

/// Decodes the key's `u128` form of an address.
pub fn u128_to_ip(family: AddrFamily, value: u128) -> IpAddr {
    match family {
        // Truncation keeps the low 32 bits, where IPv4 lives by construction.
        AddrFamily::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        AddrFamily::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}
