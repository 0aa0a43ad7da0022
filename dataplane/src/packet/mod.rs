//! Frame parsing: an Ethernet frame in, a [`ParsedFrame`] (flow key plus the
//! offsets the pipeline needs) or a typed [`DropReason`] out.
//!
//! This is the first code that touches untrusted bytes, so it must never
//! panic, never allocate and never read past the frame. It is built on
//! etherparse's zero-copy header slices, one layer at a time, so that every
//! way a frame can be malformed maps to its own counted drop reason.
//!
//! What it decides (documented in `docs/architecture.md`):
//! - Up to two VLAN tags (802.1Q, 802.1ad/QinQ); a third is dropped.
//! - IPv4 header checksums are verified (the kernel never offloads them);
//!   L4 checksums are not (veth hands us CHECKSUM_PARTIAL frames).
//! - Fragments: the first fragment must hold the whole L4 header (RFC 1858,
//!   RFC 7112), and a later fragment may not start inside the L4 header of the
//!   first; both are dropped here. A well-formed non-first fragment parses to
//!   a key with [`FragmentKind::Later`] and ports zero; what to do with it is
//!   the pipeline's decision (drop by default).
//! - IPv6 extension headers: hop-by-hop first only, each kind at most once
//!   (destination options twice), so at most [`MAX_IPV6_EXT_HEADERS`].
//! - ICMP keys carry `type << 8 | code` in `dst_port` and the echo identifier
//!   in `src_port`, so that policy and conntrack treat ICMP like ports.

mod key;
mod parse;
mod reason;

#[cfg(test)]
mod tests;

pub use key::{ip_to_u128, u128_to_ip, AddrFamily, FlowKey, FragmentInfo, FragmentKind, VlanTags};
pub use parse::{
    parse_frame, parse_quoted, ArpInfo, FrameKind, ParsedFrame, TcpSegment, MAX_IPV6_EXT_HEADERS,
};
pub use reason::DropReason;

/// IP protocol numbers used across the dataplane.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NO_NEXT: u8 = 59;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}
